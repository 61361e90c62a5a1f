//! airlockd's side of the host link: one long-lived gRPC stream to airlock-server.
//!
//! Up: `Hello` (the ids this host holds pending), then every pending request (`Opened`, with
//! its whole context but without backend internals), then outcomes as requests close.
//! Down: decisions, applied through the same [`Approvals`] handle as local ones.
//!
//! Rules this module keeps:
//! - the host stays the authority for deadlines and `onTimeout` (the hold table's tick does
//!   that whether the link is up or not);
//! - a decision is applied only to a request this host sent on the link, and only from the
//!   authenticated stream (the server's identity is checked by TLS against the CA from
//!   enrolment; the host presents its own certificate);
//! - after any reconnect, pending requests are sent again with the same ids (the server
//!   treats a repeat as the same request), and outcomes the server may have missed are sent
//!   again (closing twice is a no-op there);
//! - reconnects back off exponentially with jitter, so a fleet does not stampede a server
//!   that comes back.
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_proto::HostLinkClient;
use airlock_proto::v1 as pb;
use pb::host_message::Body as Up;
use pb::server_message::Body as Down;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};

use crate::api::convert::request_to_link;
use crate::api::remote::error_chain;
use crate::daemon::records::LinkChange;
use crate::hold::{Approvals, Approver, HoldError, Request, Update};

/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Outcomes sent this shortly before a stream broke are sent again after the reconnect: they
/// may have been in flight (closing twice is harmless on the server).
const RESEND_WINDOW: Duration = Duration::from_secs(30);
/// Outbound messages buffered per stream.
const OUT_BUFFER: usize = 1024;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// `https://HOST:PORT` of airlock-server.
    pub server: String,
    /// The enrolment identity (`airlock enroll`).
    pub identity_dir: PathBuf,
}

/// Errors setting the link up (before the first connection attempt).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("server URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("host identity: {0}")]
    Identity(#[from] super::identity::IdentityError),
    #[error("TLS settings for {url}: {source}")]
    Tls {
        url: String,
        source: tonic::transport::Error,
    },
}

/// The running link, as the daemon holds it.
pub struct LinkHandle {
    /// Request updates from the hold table's journal, forwarded by the daemon.
    pub updates: mpsc::UnboundedSender<Update>,
    /// State changes and refusals, for the daemon's record writer.
    pub changes: mpsc::UnboundedReceiver<LinkChange>,
    /// Whether the stream is up right now.
    pub connected: watch::Receiver<bool>,
    /// The local socket's policy (the server's break-glass setting applied).
    pub local: crate::api::LocalPolicy,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads the identity, then keeps the link up in a task until the handle is dropped.
/// `local` is the local socket's policy: the server's break-glass setting is applied to it,
/// unless `host_allows_break_glass` is false (then it stays forbidden).
pub fn spawn(
    cfg: LinkConfig,
    approvals: Approvals,
    local: crate::api::LocalPolicy,
    host_allows_break_glass: bool,
    audit: Option<crate::daemon::audit::Shipper>,
) -> Result<LinkHandle, LinkError> {
    start(cfg, approvals, local, host_allows_break_glass, audit, false)
}

/// A link that ships the audit spool and nothing else, to a separate collector
/// (`airlock-server collector`, `airlockd --collector`): no requests or outcomes go up, and
/// decisions and settings coming down are not applied.
pub fn spawn_collector(
    cfg: LinkConfig,
    approvals: Approvals,
    audit: crate::daemon::audit::Shipper,
) -> Result<LinkHandle, LinkError> {
    let local = crate::api::LocalPolicy::new(crate::api::LocalDecisions::Forbidden);
    start(cfg, approvals, local, false, Some(audit), true)
}

fn start(
    cfg: LinkConfig,
    approvals: Approvals,
    local: crate::api::LocalPolicy,
    host_allows_break_glass: bool,
    audit: Option<crate::daemon::audit::Shipper>,
    audit_only: bool,
) -> Result<LinkHandle, LinkError> {
    let endpoint = endpoint(&cfg)?;
    let (updates, updates_rx) = mpsc::unbounded_channel();
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let (connected_tx, connected) = watch::channel(false);
    let link = Link {
        audit,
        server: cfg.server.clone(),
        endpoint,
        approvals,
        updates: updates_rx,
        changes: changes_tx,
        connected: connected_tx,
        sent: HashSet::new(),
        outbox: VecDeque::new(),
        recent: VecDeque::new(),
        local: local.clone(),
        host_allows_break_glass,
        audit_only,
    };
    let task = tokio::spawn(link.run());
    Ok(LinkHandle {
        updates,
        changes,
        connected,
        local,
        task,
    })
}

fn endpoint(cfg: &LinkConfig) -> Result<Endpoint, LinkError> {
    let bad = |why: &str| LinkError::BadUrl {
        url: cfg.server.clone(),
        why: why.to_string(),
    };
    let uri: tonic::transport::Uri = cfg.server.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https:// (the link is always TLS)"));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("no host name"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let identity = super::identity::Identity::load(&cfg.identity_dir)?;
    let tls = identity.client_tls(&host);
    let e = Endpoint::from_shared(cfg.server.clone())
        .map_err(|_| bad("not a URL"))?
        .tls_config(tls)
        .map_err(|source| LinkError::Tls {
            url: cfg.server.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        // A server that vanished without closing (power loss, partition) is noticed within
        // ~15 s instead of when TCP gives up.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    Ok(e)
}

struct Link {
    /// The audit spool to ship, if this daemon writes one.
    audit: Option<crate::daemon::audit::Shipper>,
    server: String,
    endpoint: Endpoint,
    approvals: Approvals,
    updates: mpsc::UnboundedReceiver<Update>,
    changes: mpsc::UnboundedSender<LinkChange>,
    connected: watch::Sender<bool>,
    /// Ids sent as `Opened`: the only requests a decision from the server may apply to.
    sent: HashSet<String>,
    /// Outcomes not sent yet (the link was down when they closed).
    outbox: VecDeque<Request>,
    /// Outcomes sent recently, with when: re-sent after a reconnect (see RESEND_WINDOW).
    recent: VecDeque<(Instant, Request)>,
    local: crate::api::LocalPolicy,
    host_allows_break_glass: bool,
    /// A collector's link: audit batches only (see [`spawn_collector`]).
    audit_only: bool,
}

/// Why a session ended.
enum End {
    /// The daemon dropped the handle.
    Stop,
    /// The stream broke or could not be opened.
    Broken(String),
}

impl Link {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            match self.session().await {
                End::Stop => return,
                End::Broken(error) => {
                    let _ = self.connected.send(false);
                    // A session that stayed up a while resets the backoff: this is a new outage.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = MIN_BACKOFF;
                    }
                    let wait = jitter(backoff);
                    let _ = self.changes.send(LinkChange::Down {
                        server: self.server.clone(),
                        error,
                        retry_in_ms: wait.as_millis() as u64,
                    });
                    if !self.idle(wait).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits `d` while the link is down, keeping outcomes for later. False: stop.
    async fn idle(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                u = self.updates.recv() => match u {
                    None => return false,
                    Some(Update::Closed(r)) => self.outbox.push_back(r),
                    // Pending requests are all sent after the reconnect.
                    Some(Update::Opened(_)) => {}
                },
            }
        }
    }

    fn opened(&mut self, r: &Request) -> pb::HostMessage {
        self.sent.insert(r.id.clone());
        pb::HostMessage {
            body: Some(Up::Opened(pb::Opened {
                request: Some(request_to_link(r)),
            })),
        }
    }

    fn outcome(&mut self, r: Request) -> pb::HostMessage {
        let m = pb::HostMessage {
            body: Some(Up::Outcome(pb::Outcome {
                request: Some(request_to_link(&r)),
            })),
        };
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RESEND_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, r));
        m
    }

    async fn session(&mut self) -> End {
        let channel: Channel = match self.endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return End::Broken(error_chain(&e)),
        };
        let mut client = HostLinkClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::HostMessage>(OUT_BUFFER);
        // Everything the server must learn first is queued before the call starts, so it goes
        // out in this order: Hello, every pending request, the outcomes it may have missed.
        let pending = if self.audit_only {
            Vec::new()
        } else {
            self.approvals.pending()
        };
        let hello = pb::Hello {
            audit_key: self
                .audit
                .as_ref()
                .map(|a| a.key.clone())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pending: pending.iter().map(|r| r.id.clone()).collect(),
        };
        let mut first = vec![pb::HostMessage {
            body: Some(Up::Hello(hello)),
        }];
        for r in &pending {
            first.push(self.opened(r));
        }
        let again: Vec<Request> = self
            .recent
            .drain(..)
            .map(|(_, r)| r)
            .chain(self.outbox.drain(..))
            .collect();
        for r in again {
            first.push(self.outcome(r));
        }
        let resent = first.len() - 1;
        let outbound =
            tokio_stream::iter(first).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut inbound = match client.link(outbound).await {
            Ok(r) => r.into_inner(),
            Err(s) => return End::Broken(format!("{}: {}", code_name(s.code()), s.message())),
        };
        let _ = self.connected.send(true);
        let _ = self.changes.send(LinkChange::Up {
            server: self.server.clone(),
            resent,
        });
        let mut ship = self.audit.clone().map(super::ship::Ship::new);
        loop {
            // Fills the shipping window (the collector acknowledges batches in order).
            while let Some(s) = ship.as_mut()
                && s.idle()
                && let Some(m) = s.next()
            {
                if tx.send(m).await.is_err() {
                    return End::Broken("the stream closed".into());
                }
            }
            let appended = async {
                match ship.as_ref() {
                    Some(s) if s.idle() => s.shipper.appended.notified().await,
                    _ => std::future::pending().await,
                }
            };
            let retry = async {
                match ship.as_ref() {
                    Some(s) => s.retry_due().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // New audit records, or a retry after a refusal: the loop's top sends.
                () = appended => {}
                () = retry => {
                    if let Some(s) = ship.as_mut() {
                        s.clear_retry();
                    }
                }
                u = self.updates.recv() => {
                    let m = match u {
                        None => return End::Stop,
                        Some(Update::Opened(r)) => self.opened(&r),
                        Some(Update::Closed(r)) => self.outcome(r),
                    };
                    if tx.send(m).await.is_err() {
                        return End::Broken("the stream closed".into());
                    }
                }
                m = inbound.next() => match m {
                    None => return End::Broken("the server ended the stream".into()),
                    Some(Err(s)) => return End::Broken(format!("{}: {}", code_name(s.code()), s.message())),
                    Some(Ok(pb::ServerMessage { body: Some(Down::Decision(_) | Down::Settings(_)) })) if self.audit_only => {
                        tracing::warn!(server = %self.server, "the collector sent a decision or settings; ignored");
                    }
                    Some(Ok(pb::ServerMessage { body: Some(Down::Decision(d)) })) => {
                        if let Some(m) = self.apply(d)
                            && tx.send(m).await.is_err()
                        {
                            return End::Broken("the stream closed".into());
                        }
                    }
                    Some(Ok(pb::ServerMessage { body: Some(Down::Rejected(r)) })) => {
                        tracing::warn!(id = %r.id, code = r.code, message = %r.message, "airlock-server refused a message");
                        let _ = self.changes.send(LinkChange::Rejected { id: r.id, code: r.code, message: r.message });
                    }
                    Some(Ok(pb::ServerMessage { body: Some(Down::Settings(s)) })) => {
                        use crate::api::LocalDecisions::{BreakGlass, Forbidden};
                        let want = if s.break_glass && self.host_allows_break_glass { BreakGlass } else { Forbidden };
                        if self.local.get() != want {
                            tracing::info!(break_glass = want == BreakGlass, "local decisions set by airlock-server");
                            self.local.set(want);
                        }
                    }
                    Some(Ok(pb::ServerMessage { body: Some(Down::AuditAck(a)) })) => {
                        if let Some(s) = ship.as_mut() {
                            s.on_ack(a);
                        }
                    }
                    // A message kind from a newer server: nothing to apply.
                    Some(Ok(pb::ServerMessage { body: None })) => {}
                },
            }
        }
    }

    /// Applies a decision from the server. Returns a message to send back when the request is
    /// already closed here (so the server learns its outcome).
    fn apply(&mut self, d: pb::Decision) -> Option<pb::HostMessage> {
        let refuse = |s: &Self, id: String, why: String| {
            tracing::warn!(id = %id, why = %why, "decision from airlock-server not applied");
            let _ = s.changes.send(LinkChange::DecisionRefused { id, why });
        };
        let Some(decide) = d.decide else {
            refuse(
                self,
                String::new(),
                "decision without a decide field".into(),
            );
            return None;
        };
        let (id, decision) = match airlock_approval::convert::decide_from_proto(decide) {
            Ok(x) => x,
            Err(e) => {
                refuse(self, String::new(), e.to_string());
                return None;
            }
        };
        if !self.sent.contains(&id) {
            refuse(
                self,
                id,
                "not a request this host sent to the server".into(),
            );
            return None;
        }
        let by = d.by.map(airlock_approval::convert::approver_from_proto);
        let by = Approver {
            uid: 0,
            pid: 0,
            user: None,
            // Whatever the server says about channels, on the host this came from the server.
            via: "server".into(),
            principal: by.and_then(|b| b.principal),
        };
        let votes = d
            .votes
            .into_iter()
            .filter_map(|v| airlock_approval::convert::vote_from_proto(v).ok())
            .collect();
        match self.approvals.decide_voted(&id, decision, by, votes) {
            // The journal carries the closed request to the server as an outcome.
            Ok(_) => None,
            Err(HoldError::Closed { .. }) => match self.approvals.get(&id) {
                Ok(r) => Some(self.outcome(r)),
                Err(_) => None,
            },
            Err(e) => {
                refuse(self, id, e.to_string());
                None
            }
        }
    }
}

/// A delay between `d/2` and `d`, so that hosts cut off together do not reconnect together.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let f = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
    d.mul_f64(0.5 + 0.5 * f)
}

fn code_name(c: tonic::Code) -> String {
    format!("{c:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(2));
            assert!(
                j >= Duration::from_secs(1) && j <= Duration::from_secs(2),
                "{j:?}"
            );
        }
    }
}
