//! The server's side of the host link: `airlock.v1.HostLink/Link`, one stream per host.
//!
//! The host is who its client certificate says (SHA-256 of the certificate → the enrolled
//! host in the store); nothing it writes in a message can change that. A revoked host is
//! refused at connect and its open stream is cut within a second of the revocation.
//!
//! A decision reaches the stream at once when it is made on this replica (the hub). One made
//! on another replica, and a revocation made by another replica or by `airlock-server hosts
//! revoke` in another process, are found by the replica's one store watch
//! ([`watch_store`]): a query every [`POLL`] and every [`HOST_CHECK`] for all the streams of
//! this replica together, so an idle fleet costs the server next to nothing.
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::v1 as pb;
use pb::host_message::Body as Up;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::broker::{Broker, Delivery, now_ms};
use crate::collector::{AuditInput, AuditPipe};
use crate::error::Fault;
use crate::store::RequestFilter;

/// How often the store watch looks for decisions made on other replicas.
pub const POLL: Duration = Duration::from_millis(250);
/// How often the store watch re-reads the hosts (revocation, re-enrolment).
pub const HOST_CHECK: Duration = Duration::from_secs(1);

/// The HostLink service.
pub struct LinkService {
    pub broker: Arc<Broker>,
    /// `airlock-server collector`: the link carries audit batches only (no requests,
    /// outcomes, decisions or settings).
    pub collector_only: bool,
}

type Out = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

fn rejected(id: &str, f: &Fault) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::Rejected(pb::Rejected {
            id: id.to_string(),
            code: f.code() as i32,
            message: f.to_string(),
        })),
    }
}

#[tonic::async_trait]
impl airlock_proto::HostLink for LinkService {
    type LinkStream = Out;

    async fn link(
        &self,
        req: Request<Streaming<pb::HostMessage>>,
    ) -> Result<Response<Out>, Status> {
        let b = self.broker.clone();
        let Some(fp) = crate::pki::peer_fingerprint(&req) else {
            let f = Fault::Unauthenticated(
                "the host link needs the host's client certificate (airlock enroll)".into(),
            );
            b.record("unknown", "link", "link", None, f.code(), &f.to_string())
                .await;
            return Err(f.into());
        };
        let host = match b.store.host_by_cert(&fp).await.map_err(Fault::from)? {
            None => {
                let f = Fault::Unauthenticated(format!(
                    "client certificate {} is not an enrolled host's",
                    &fp[..16.min(fp.len())]
                ));
                b.record("unknown", "link", "link", None, f.code(), &f.to_string())
                    .await;
                return Err(f.into());
            }
            Some(h) if h.revoked_unix_ms.is_some() => {
                let f = Fault::Forbidden(format!("host {} was revoked", h.name));
                b.record(
                    &format!("host:{}", h.name),
                    "link",
                    "link",
                    None,
                    f.code(),
                    &f.to_string(),
                )
                .await;
                return Err(f.into());
            }
            Some(h) => h,
        };
        let name = host.name.clone();
        let _ = b.store.touch_host(&name, now_ms()).await;
        let (tx, rx) = mpsc::unbounded_channel::<pb::ServerMessage>();
        let (end_tx, end_rx) = mpsc::unbounded_channel::<Status>();
        let (deliver_tx, deliver_rx) = mpsc::unbounded_channel::<Delivery>();
        let session = b.hub.attach(&name, &fp, deliver_tx);
        // Settings first: the host applies the server's break-glass policy from now on. Read
        // after attaching, so a reload in between is in this message or queued behind it.
        // A collector has no say in approvals.
        if !self.collector_only {
            let _ = tx.send(crate::wire::settings_message(b.config().break_glass));
        }
        tracing::info!(host = %name, "host link up");
        let inbound = req.into_inner();
        tokio::spawn(run(
            Session {
                b,
                host: name,
                id: session,
                tx,
                end: end_tx,
                collector_only: self.collector_only,
            },
            inbound,
            deliver_rx,
        ));
        // The outbound stream: messages from the session, then (if it ends with one) a status.
        let out = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(Ok)
            .merge(tokio_stream::wrappers::UnboundedReceiverStream::new(end_rx).map(Err));
        Ok(Response::new(Box::pin(out)))
    }
}

/// What one host's session works with.
struct Session {
    b: Arc<Broker>,
    /// The host's name, from its certificate.
    host: String,
    /// The hub's session number.
    id: u64,
    /// Messages to the host.
    tx: mpsc::UnboundedSender<pb::ServerMessage>,
    /// The status that ends the stream, when it ends with one.
    end: mpsc::UnboundedSender<Status>,
    /// See [`LinkService::collector_only`].
    collector_only: bool,
}

/// Closed requests [`Sent`] keeps per generation.
const CLOSED_KEPT: usize = 1024;

/// The decisions already sent on one stream, by request id. The store watch offers each
/// decision again every [`POLL`] until the host closes the request; a repeat would be
/// harmless (the host ignores decisions for closed requests) but it is noise.
///
/// An id leaves `open` when its host's outcome arrives, so the set holds only requests that
/// are still open. It is kept a while longer in `closed`: a poll that read the request just
/// before the outcome committed may still be delivering it. `closed` is two generations of
/// at most [`CLOSED_KEPT`] ids; the older is dropped when the newer fills, long after any
/// such poll delivered.
#[derive(Default)]
struct Sent {
    open: HashSet<String>,
    closed: [HashSet<String>; 2],
}

impl Sent {
    /// Whether the decision for `id` was not sent yet; it counts as sent from now on.
    fn first_time(&mut self, id: &str) -> bool {
        if self.open.contains(id) || self.closed.iter().any(|g| g.contains(id)) {
            return false;
        }
        self.open.insert(id.to_string());
        true
    }

    /// The host closed `id`.
    fn host_closed(&mut self, id: String) {
        if !self.open.remove(&id) {
            return;
        }
        if self.closed[0].len() >= CLOSED_KEPT {
            self.closed[1] = std::mem::take(&mut self.closed[0]);
        }
        self.closed[0].insert(id);
    }
}

/// One host's session: reads its messages and passes on what the hub delivers (decisions,
/// settings, a cut). Ends when the host goes away, is cut, or breaks the protocol.
async fn run(
    s: Session,
    mut inbound: Streaming<pb::HostMessage>,
    mut deliveries: mpsc::UnboundedReceiver<Delivery>,
) {
    let Session {
        b,
        host,
        id: session,
        tx,
        end,
        collector_only,
    } = s;
    let who = format!("host:{host}");
    let mut hello = false;
    let mut sent = Sent::default();
    let audit = AuditPipe::start(b.clone(), &host, &tx);
    let reason = loop {
        tokio::select! {
            m = inbound.next() => match m {
                None => break None,
                Some(Err(s)) => {
                    // Malformed or oversized frames end the stream with tonic's status
                    // (OUT_OF_RANGE for an oversized message); nothing was decoded or changed.
                    b.record(&who, "link", "message", None, s.code(), s.message()).await;
                    break Some(s);
                }
                // The link admits messages up to an audit batch's bound; every other message
                // keeps the server's general bound, as if the transport had refused it.
                Some(Ok(m)) if !matches!(m.body, Some(Up::Audit(_)))
                    && prost::Message::encoded_len(&m) > crate::cli::serve::MAX_MESSAGE =>
                {
                    let s = Status::out_of_range(format!(
                        "message of {} bytes: at most {} (audit batches excepted)",
                        prost::Message::encoded_len(&m),
                        crate::cli::serve::MAX_MESSAGE
                    ));
                    b.record(&who, "link", "message", None, s.code(), s.message()).await;
                    break Some(s);
                }
                Some(Ok(pb::HostMessage { body: None })) => {
                    let f = Fault::invalid("body", "empty message (from a newer host?)");
                    b.record(&who, "link", "message", None, f.code(), &f.to_string()).await;
                    let _ = tx.send(rejected("", &f));
                }
                Some(Ok(pb::HostMessage { body: Some(Up::Hello(h)) })) => {
                    if hello {
                        let f = Fault::OutOfOrder("a second Hello on the same stream".into());
                        b.record(&who, "link", "hello", None, f.code(), &f.to_string()).await;
                        let _ = tx.send(rejected("", &f));
                        continue;
                    }
                    hello = true;
                    tracing::debug!(host = %host, version = %h.version, pending = h.pending.len(), "hello");
                    audit.send(AuditInput::Hello(h.audit_key)).await;
                }
                Some(Ok(pb::HostMessage { body: Some(body) })) if !hello => {
                    let _ = body;
                    let f = Fault::invalid("body", "the first message on the host link must be Hello");
                    b.record(&who, "link", "message", None, f.code(), &f.to_string()).await;
                    break Some(Status::from(f));
                }
                Some(Ok(pb::HostMessage { body: Some(Up::Opened(_) | Up::Outcome(_)) })) if collector_only => {
                    let f = Fault::NotServed(crate::collector::COLLECTOR_ONLY.into());
                    b.record(&who, "link", "message", None, f.code(), &f.to_string()).await;
                    let _ = tx.send(rejected("", &f));
                }
                Some(Ok(pb::HostMessage { body: Some(Up::Opened(o)) })) => {
                    let Some(r) = o.request else {
                        let f = Fault::invalid("opened.request", "required");
                        b.record(&who, "link", "opened", None, f.code(), &f.to_string()).await;
                        let _ = tx.send(rejected("", &f));
                        continue;
                    };
                    let id = r.id.clone();
                    match b.opened(&host, r).await {
                        // Decided while the host was away; the poll may have sent it already.
                        Ok(Some(decision)) => {
                            if sent.first_time(&id) {
                                let _ = tx.send(decision);
                            }
                        }
                        Ok(None) => {}
                        Err(f) => {
                            b.record(&who, "link", "opened", Some(&id), f.code(), &f.to_string()).await;
                            let _ = tx.send(rejected(&id, &f));
                        }
                    }
                }
                Some(Ok(pb::HostMessage { body: Some(Up::Outcome(o)) })) => {
                    let Some(r) = o.request else {
                        let f = Fault::invalid("outcome.request", "required");
                        b.record(&who, "link", "outcome", None, f.code(), &f.to_string()).await;
                        let _ = tx.send(rejected("", &f));
                        continue;
                    };
                    let id = r.id.clone();
                    match b.outcome(&host, r).await {
                        Ok(()) => sent.host_closed(id),
                        Err(f) => {
                            b.record(&who, "link", "outcome", Some(&id), f.code(), &f.to_string()).await;
                            let _ = tx.send(rejected(&id, &f));
                        }
                    }
                }
                // Verified, stored and acknowledged by the link's audit task (`collector/pipe.rs`).
                Some(Ok(pb::HostMessage { body: Some(Up::Audit(batch)) })) => {
                    audit.send(AuditInput::Batch(batch)).await;
                }
            },
            Some(d) = deliveries.recv() => match d {
                // Decisions and settings are the approval server's to send.
                Delivery::Message(_) if collector_only => {}
                Delivery::Message(m) => {
                    // The store watch may have found this decision first (its commit is visible
                    // before the hub's push is handled here): each decision goes to the host once.
                    let fresh = match &m.body {
                        Some(pb::server_message::Body::Decision(pb::Decision { decide: Some(d), .. })) => sent.first_time(&d.id),
                        _ => true,
                    };
                    if fresh {
                        let _ = tx.send(m);
                    }
                }
                Delivery::Cut(status) => {
                    b.record(&who, "link", "link", None, status.code(), &format!("stream cut: {}", status.message())).await;
                    break Some(status);
                }
            },
            _ = tx.closed() => break None,
        }
    };
    b.hub.detach(&host, session);
    if let Some(s) = reason {
        let _ = end.send(s);
    }
    tracing::info!(host = %host, "host link down");
}

/// The replica's store watch, one task per [`Broker`] (started by `Broker::new`; ends when the
/// broker is dropped):
/// - every [`POLL`], one query for decided requests not yet closed by their hosts; those of
///   hosts linked here go to their sessions (decisions made on other replicas, or made while
///   a host's stream was being replaced). Skipped while no host is linked here.
/// - every [`HOST_CHECK`], one read of the hosts; a linked host that is revoked, unknown, or
///   enrolled again with another certificate has its stream cut, and the labels the broker
///   keeps are replaced with what is stored. Then one read of the revoked API tokens, which
///   the store forgets it found valid (skipped while it keeps none; see
///   `Store::refresh_revoked_tokens`).
pub async fn watch_store(b: std::sync::Weak<Broker>) {
    let mut poll = tokio::time::interval(POLL);
    let mut check = tokio::time::interval(HOST_CHECK);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let Some(b) = b.upgrade() else { return };
                deliver_decided(&b).await;
            }
            _ = check.tick() => {
                let Some(b) = b.upgrade() else { return };
                check_hosts(&b).await;
                if let Err(e) = b.store.refresh_revoked_tokens(now_ms()).await {
                    tracing::warn!(error = %e, "re-reading revoked API tokens failed");
                }
            }
        }
    }
}

async fn deliver_decided(b: &Broker) {
    if b.hub.connected().is_empty() {
        return;
    }
    let f = RequestFilter {
        decided_undelivered: true,
        ..Default::default()
    };
    match b.store.list_requests(&f).await {
        Ok(rs) => {
            for r in rs {
                if let Some(m) = crate::wire::decision_message(&r) {
                    b.hub.send(&r.host, m);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "polling for decisions failed"),
    }
}

async fn check_hosts(b: &Broker) {
    let linked = b.hub.connected_with_cert();
    if linked.is_empty() && !b.has_labels() {
        return;
    }
    let hosts = match b.store.hosts().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "re-reading the hosts failed");
            return;
        }
    };
    b.refresh_labels(&hosts);
    let by_name: std::collections::HashMap<&str, _> =
        hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    for (host, fp) in linked {
        let why = match by_name.get(host.as_str()) {
            None => "host removed",
            Some(h) if h.revoked_unix_ms.is_some() => "host revoked",
            Some(h) if h.cert_sha256.as_deref() != Some(fp.as_str()) => {
                "host enrolled again with another certificate"
            }
            Some(_) => continue,
        };
        let f = Fault::Forbidden(format!("host {host}: {why}"));
        b.hub.deliver(&host, Delivery::Cut(Status::from(f)));
    }
}

#[cfg(test)]
mod tests {
    use super::{CLOSED_KEPT, Sent};

    #[test]
    fn a_decision_is_sent_once_and_forgotten_some_time_after_its_outcome() {
        let mut s = Sent::default();
        assert!(s.first_time("a"));
        assert!(
            !s.first_time("a"),
            "the hub's push and the poll both offer it"
        );
        s.host_closed("a".to_string());
        assert!(s.open.is_empty(), "an open set that only grows");
        assert!(
            !s.first_time("a"),
            "a poll that read it before the outcome is still refused"
        );
        // An outcome for a request never decided here leaves no trace.
        s.host_closed("b".to_string());
        assert!(s.closed.iter().all(|g| !g.contains("b")));
        // Two generations of closed ids: "a" is dropped once newer outcomes fill both.
        for i in 0..2 * CLOSED_KEPT {
            let id = format!("r{i}");
            assert!(s.first_time(&id));
            s.host_closed(id);
        }
        assert!(s.closed.iter().all(|g| g.len() <= CLOSED_KEPT));
        assert!(s.first_time("a"));
    }
}
