//! The server's side of the host link: `airlock.v1.HostLink/Link`, one stream per host.
//!
//! The host is who its client certificate says (SHA-256 of the certificate → the enrolled
//! host in the store); nothing it writes in a message can change that. A revoked host is
//! refused at connect and its open stream is cut within a second of the revocation (the
//! session re-reads its host row every second, which also notices a revocation made by
//! another replica or by `airlock-server hosts revoke` in another process).
//!
//! A decision reaches the stream at once when it is made on this replica (the hub); one made
//! on another replica is found by polling the store every [`POLL`].
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::v1 as pb;
use pb::host_message::Body as Up;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::broker::{Broker, now_ms};
use crate::error::Fault;
use crate::store::RequestFilter;

/// How often a session looks for decisions made on other replicas.
pub const POLL: Duration = Duration::from_millis(250);
/// How often a session re-reads its host (revocation).
const HOST_CHECK: Duration = Duration::from_secs(1);

/// The HostLink service.
pub struct LinkService {
    pub broker: Arc<Broker>,
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
        let (deliver_tx, deliver_rx) = mpsc::unbounded_channel::<pb::ServerMessage>();
        let session = b.hub.attach(&name, deliver_tx);
        // Settings first: the host applies the server's break-glass policy from now on.
        let _ = tx.send(pb::ServerMessage {
            body: Some(pb::server_message::Body::Settings(pb::Settings {
                break_glass: b.config().break_glass,
            })),
        });
        tracing::info!(host = %name, "host link up");
        let inbound = req.into_inner();
        tokio::spawn(run(
            Session {
                b,
                host: name,
                fp,
                id: session,
                tx,
                end: end_tx,
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
    /// SHA-256 of its certificate (re-checked every second: revocation).
    fp: String,
    /// The hub's session number.
    id: u64,
    /// Messages to the host.
    tx: mpsc::UnboundedSender<pb::ServerMessage>,
    /// The status that ends the stream, when it ends with one.
    end: mpsc::UnboundedSender<Status>,
}

/// One host's session: reads its messages, delivers decisions made elsewhere, watches for
/// revocation. Ends when the host goes away, is revoked, or breaks the protocol.
async fn run(
    s: Session,
    mut inbound: Streaming<pb::HostMessage>,
    mut deliveries: mpsc::UnboundedReceiver<pb::ServerMessage>,
) {
    let Session {
        b,
        host,
        fp,
        id: session,
        tx,
        end,
    } = s;
    let who = format!("host:{host}");
    let mut hello = false;
    // Decisions already sent on this stream (the poll must not repeat them every 250 ms; a
    // repeat would be harmless, the host ignores decisions for closed requests).
    let mut sent: HashSet<String> = HashSet::new();
    let mut poll = tokio::time::interval(POLL);
    let mut check = tokio::time::interval(HOST_CHECK);
    // The break-glass setting the host last got (sent again when a reload changes it).
    let mut break_glass = b.config().break_glass;
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
                }
                Some(Ok(pb::HostMessage { body: Some(body) })) if !hello => {
                    let _ = body;
                    let f = Fault::invalid("body", "the first message on the host link must be Hello");
                    b.record(&who, "link", "message", None, f.code(), &f.to_string()).await;
                    break Some(Status::from(f));
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
                            if sent.insert(id) {
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
                    if let Err(f) = b.outcome(&host, r).await {
                        b.record(&who, "link", "outcome", Some(&id), f.code(), &f.to_string()).await;
                        let _ = tx.send(rejected(&id, &f));
                    }
                }
            },
            Some(m) = deliveries.recv() => {
                // The poll may have found this decision first (its commit is visible before
                // the hub's push is handled here): each decision goes to the host once.
                let fresh = match &m.body {
                    Some(pb::server_message::Body::Decision(pb::Decision { decide: Some(d), .. })) => sent.insert(d.id.clone()),
                    _ => true,
                };
                if fresh {
                    let _ = tx.send(m);
                }
            }
            _ = poll.tick() => {
                let f = RequestFilter { host: Some(host.clone()), decided_undelivered: true, ..Default::default() };
                match b.store.list_requests(&f).await {
                    Ok(rs) => {
                        for r in rs {
                            if sent.insert(r.id.clone())
                                && let Some(m) = crate::wire::decision_message(&r)
                            {
                                let _ = tx.send(m);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(host = %host, error = %e, "polling for decisions failed"),
                }
            }
            _ = check.tick() => match b.store.host_by_cert(&fp).await {
                Ok(Some(h)) if h.revoked_unix_ms.is_none() => {
                    let now = b.config().break_glass;
                    if now != break_glass {
                        break_glass = now;
                        let _ = tx.send(pb::ServerMessage {
                            body: Some(pb::server_message::Body::Settings(pb::Settings { break_glass })),
                        });
                    }
                }
                Ok(_) => {
                    let f = Fault::Forbidden(format!("host {host} was revoked"));
                    b.record(&who, "link", "link", None, f.code(), "stream cut: host revoked").await;
                    break Some(Status::from(f));
                }
                Err(e) => tracing::warn!(host = %host, error = %e, "re-reading the host failed"),
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
