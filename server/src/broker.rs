//! The server's core: what happens when a host opens or closes a request and when an approver
//! votes, independent of the transport.
//!
//! ```text
//!  host link ── opened ──▶ route (config) ─▶ store.upsert_opened ─▶ watchers (CLI, channels)
//!  approver ── vote ──▶ check_vote (route rules) ─▶ store.vote (one transaction, tally)
//!                                                     └─ decided ─▶ hub ─▶ the host's stream
//!  host link ── outcome ──▶ store.close ─▶ watchers
//! ```
//!
//! The [`Hub`] delivers a decision at once to the host's stream when that stream is on this
//! replica; on another replica, that replica's store watch finds it (see `link.rs`).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use airlock_approval::{Decision, Release, RequestState, Vote};
use airlock_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};

use crate::config::ServerConfig;
use crate::error::{Fault, code_name};
use crate::route::{self, Subject};
use crate::store::{Attempt, RequestFilter, Store, StoredRequest, Upserted};
use crate::wire::{self, Parsed};

/// Request changes watchers see (the approvals API's Watch; channels later).
#[derive(Clone, Debug)]
pub enum Change {
    /// A new request (or one a host re-sent that this server had not seen), with its body
    /// parsed once for every watcher (shared, as the broker keeps it).
    Opened(Arc<Parsed>),
    /// A vote was cast, or the server decided (the host has not applied it yet).
    Voted(StoredRequest),
    /// The host reported the outcome.
    Closed(StoredRequest),
    /// The route's `reminder` came due and the request is still undecided: channels remind
    /// the approvers (see `crate::remind`).
    Reminder(StoredRequest),
    /// The route's `escalation.after` passed undecided: the escalation groups (`to`) may vote
    /// now and channels notify them.
    Escalated {
        request: StoredRequest,
        /// The route's escalation groups.
        to: Vec<String>,
    },
}

impl Change {
    /// The request as of this change.
    pub fn request(&self) -> &StoredRequest {
        match self {
            Change::Opened(p) => &p.request,
            Change::Voted(r) | Change::Closed(r) | Change::Reminder(r) => r,
            Change::Escalated { request, .. } => request,
        }
    }
}

/// What the hub hands a host's session.
#[derive(Debug)]
pub enum Delivery {
    /// A message for the host (a decision, new settings). Decisions can arrive twice (the
    /// hub's push and the store watch race); the session sends each once.
    Message(pb::ServerMessage),
    /// End the stream with this status (the host was revoked or re-enrolled).
    Cut(tonic::Status),
}

/// One host's stream on this replica.
struct LinkEntry {
    session: u64,
    /// SHA-256 of the certificate the stream authenticated with.
    fp: String,
    tx: mpsc::UnboundedSender<Delivery>,
}

/// Connected host streams on this replica, and watchers.
pub struct Hub {
    links: Mutex<HashMap<String, LinkEntry>>,
    next_session: std::sync::atomic::AtomicU64,
    changes: broadcast::Sender<Change>,
    /// `airlock_server_hosts_connected`: the number of `links`, set as they change.
    connected: prometheus_client::metrics::gauge::Gauge,
}

impl Hub {
    fn new(connected: prometheus_client::metrics::gauge::Gauge) -> Hub {
        Hub {
            links: Mutex::new(HashMap::new()),
            next_session: 0.into(),
            changes: broadcast::channel(4096).0,
            connected,
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, LinkEntry>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a host's stream (authenticated with the certificate whose SHA-256 is `fp`);
    /// a newer stream of the same host replaces an older one (the host reconnected; the old
    /// stream's sender is dropped, which ends it). Returns the session number for
    /// [`Hub::detach`].
    pub fn attach(&self, host: &str, fp: &str, tx: mpsc::UnboundedSender<Delivery>) -> u64 {
        let n = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut l = self.links();
        l.insert(
            host.to_string(),
            LinkEntry {
                session: n,
                fp: fp.to_string(),
                tx,
            },
        );
        self.connected.set(l.len() as i64);
        n
    }

    /// Removes a host's stream if it is still session `n`.
    pub fn detach(&self, host: &str, n: u64) {
        let mut l = self.links();
        if l.get(host).is_some_and(|e| e.session == n) {
            l.remove(host);
            self.connected.set(l.len() as i64);
        }
    }

    /// Sends to a host's stream on this replica; false when it has none here.
    pub fn send(&self, host: &str, m: pb::ServerMessage) -> bool {
        self.deliver(host, Delivery::Message(m))
    }

    /// Hands `d` to a host's session on this replica; false when it has none here.
    pub fn deliver(&self, host: &str, d: Delivery) -> bool {
        self.links().get(host).is_some_and(|e| e.tx.send(d).is_ok())
    }

    /// Sends `m` to every host stream on this replica.
    pub fn send_all(&self, m: &pb::ServerMessage) {
        for e in self.links().values() {
            let _ = e.tx.send(Delivery::Message(m.clone()));
        }
    }

    /// Whether `host` has a stream on this replica.
    pub fn is_linked(&self, host: &str) -> bool {
        self.links().contains_key(host)
    }

    /// Hosts with a stream on this replica.
    pub fn connected(&self) -> Vec<String> {
        self.links().keys().cloned().collect()
    }

    /// Hosts with a stream on this replica and the certificate fingerprint of each.
    pub fn connected_with_cert(&self) -> Vec<(String, String)> {
        self.links()
            .iter()
            .map(|(h, e)| (h.clone(), e.fp.clone()))
            .collect()
    }

    /// Watches request changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Announces `c` to every watcher on this replica.
    pub fn publish(&self, c: Change) {
        let _ = self.changes.send(c);
    }
}

/// The server's state shared by every service.
pub struct Broker {
    pub store: Store,
    config: RwLock<Arc<ServerConfig>>,
    pub hub: Hub,
    /// This process's metrics (see `crate::metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Hosts' labels, read when a host links and every [`crate::link::HOST_CHECK`] by the
    /// store watch while any host is linked here; a host missing here is read from the store.
    labels: Mutex<HashMap<String, Arc<BTreeMap<String, String>>>>,
    /// Requests opened through this replica and not closed yet, with their bodies parsed.
    /// Only the fields a request never changes after it opened are used from here (host,
    /// context, route, threshold, times): what a vote may change is read and checked in the
    /// vote's transaction.
    opened: Mutex<HashMap<String, Arc<Parsed>>>,
    /// The reminder task's inbox (`crate::remind`), when one runs: each request opened
    /// through this replica, and each re-sent one it did not have in memory.
    reminders: std::sync::OnceLock<mpsc::UnboundedSender<crate::remind::Opened>>,
}

/// Most requests [`Broker`] keeps in memory; past it, the map is emptied and votes read the
/// store (a fleet never has that many open at once unless hosts vanish without outcomes).
const OPENED_CACHE: usize = 100_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// At most `max` characters of `s`, marked when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// `2026-12-01 16:04:05 UTC` for a Unix time in milliseconds (what channels show people).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl Broker {
    /// A broker over `store` with `config`.
    ///
    /// Starts the store watch (decisions made on other replicas, revocations; see
    /// `link::watch_store`) in the current Tokio runtime; it ends when the broker is dropped.
    pub fn new(store: Store, config: ServerConfig) -> Arc<Broker> {
        let metrics = crate::metrics::Metrics::new();
        let b = Arc::new(Broker {
            store,
            config: RwLock::new(Arc::new(config)),
            hub: Hub::new(metrics.hosts_connected.clone()),
            metrics,
            labels: Mutex::default(),
            opened: Mutex::default(),
            reminders: std::sync::OnceLock::new(),
        });
        tokio::spawn(crate::link::watch_store(Arc::downgrade(&b)));
        b
    }

    /// The config in force.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the config (only with one that loaded cleanly; see `cli/serve.rs`). When the
    /// break-glass setting changed, every host linked to this replica is told at once.
    pub fn set_config(&self, c: ServerConfig) {
        let break_glass = c.break_glass;
        let old = std::mem::replace(
            &mut *self.config.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(c),
        );
        if old.break_glass != break_glass {
            self.hub.send_all(&wire::settings_message(break_glass));
        }
    }

    /// Records an attempt (refused or notable). A failure to record is logged, never hidden.
    pub async fn record(
        &self,
        who: &str,
        channel: &str,
        action: &str,
        id: Option<&str>,
        result: tonic::Code,
        message: &str,
    ) {
        // Refusals of unauthenticated callers carry text they chose: records keep a bounded
        // amount of it.
        let (who, message) = (clip(who, 200), clip(message, 1000));
        let (who, message) = (who.as_str(), message.as_str());
        let a = Attempt {
            at_unix_ms: now_ms(),
            who: who.to_string(),
            channel: channel.to_string(),
            request_id: id.map(str::to_string),
            action: action.to_string(),
            result: code_name(result).to_string(),
            message: message.to_string(),
        };
        if result != tonic::Code::Ok {
            tracing::warn!(
                who,
                channel,
                action,
                id = id.unwrap_or(""),
                result = a.result,
                message,
                "refused"
            );
        }
        if let Err(e) = self.store.record_attempt(&a).await {
            tracing::error!(error = %e, who, action, "cannot record an attempt");
        }
    }

    /// A host opened a request (or re-sent it after a reconnect). Returns the decision to
    /// send back when the server already decided it (a decision made while the host was away).
    pub async fn opened(
        &self,
        host: &str,
        r: pb::HoldRequest,
    ) -> Result<Option<pb::ServerMessage>, Fault> {
        let now = now_ms();
        let mut p = wire::stored_from_opened(host, r, now)?;
        let cfg = self.config();
        let labels = self.labels_of(host).await?;
        let s = &mut p.request;
        let route = cfg.route_for(&Subject {
            host,
            labels: &labels,
            context: &p.body.context,
        });
        if let Some(route) = route {
            s.route = Some(route.name.clone());
            s.threshold = route.threshold;
        } else {
            s.route = None;
            s.threshold = 0;
        }
        match self.store.upsert_opened(s).await? {
            Upserted::New => {
                tracing::info!(id = %s.id, host, route = s.route.as_deref().unwrap_or("-"), "request opened");
                self.metrics.opened(route);
                let p = Arc::new(p);
                self.remember(p.clone());
                self.remind(p.clone(), false);
                self.hub.publish(Change::Opened(p));
                Ok(None)
            }
            Upserted::Existing(cur) => {
                // Re-sent after a reconnect (to this or another replica) or a server restart:
                // this replica takes it over unless it has it already (see `crate::remind`).
                if cur.state == RequestState::Pending
                    && cur.decision.is_none()
                    && !self.is_open_here(&cur.id)
                    && let Ok(p) = Parsed::new(cur.clone())
                {
                    let p = Arc::new(p);
                    self.remember(p.clone());
                    self.remind(p, true);
                }
                Ok(if cur.state == RequestState::Pending {
                    wire::decision_message(&cur)
                } else {
                    None
                })
            }
        }
    }

    /// A host closed a request: resumed, denied, timed out, abandoned, or break-glass.
    pub async fn outcome(&self, host: &str, r: pb::HoldRequest) -> Result<(), Fault> {
        let (id, state, decision) = wire::outcome_from_proto(r)?;
        let closed = match self
            .store
            .close(&id, host, state, decision.as_ref(), now_ms())
            .await
        {
            Err(crate::store::StoreError::NotFound { .. }) => {
                return Err(Fault::OutOfOrder(format!(
                    "outcome for request {id}, which this host never opened on the link"
                )));
            }
            r => r?,
        };
        self.forget(&id);
        // A re-sent outcome changed nothing and was announced already.
        if closed.changed {
            if let Some(by) = decision.as_ref().and_then(|d| d.by.as_ref())
                && by.via == "cli-break-glass"
            {
                tracing::warn!(id = %id, host, user = ?by.user, "request decided by break-glass on the host");
            }
            self.metrics.closed(closed.request.state);
            // `close` committed durably before returning (see `Store::close`).
            self.hub.publish(Change::Closed(closed.request));
        }
        Ok(())
    }

    /// An approver's vote. Checks the route's rules, then votes in one transaction; when the
    /// vote completes a decision, sends it to the host's stream if that is on this replica.
    /// `token`: the id of the API token the vote came with, which must still be unrevoked
    /// and unexpired when the vote is stored (see [`Store::vote`]).
    pub async fn vote(
        &self,
        principal: &str,
        token: Option<&str>,
        via: &str,
        id: &str,
        decision: Decision,
    ) -> Result<StoredRequest, Fault> {
        self.vote_with(principal, &[], token, via, id, decision)
            .await
    }

    /// [`Broker::vote`] by a principal whose identity provider vouched for `idp_groups` (the
    /// web page's OIDC sign-in; see `route::effective_principal`).
    pub async fn vote_with(
        &self,
        principal: &str,
        idp_groups: &[String],
        token: Option<&str>,
        via: &str,
        id: &str,
        decision: Decision,
    ) -> Result<StoredRequest, Fault> {
        let r = self
            .cast(principal, idp_groups, token, via, id, decision)
            .await;
        self.metrics.vote(via, r.is_ok());
        r
    }

    /// [`Broker::vote_with`] without counting it.
    async fn cast(
        &self,
        principal: &str,
        idp_groups: &[String],
        token: Option<&str>,
        via: &str,
        id: &str,
        decision: Decision,
    ) -> Result<StoredRequest, Fault> {
        let now = now_ms();
        let parsed = match self.remembered(id) {
            Some(p) => p,
            None => Arc::new(Parsed::new(self.store.request(id).await?.ok_or_else(
                || crate::store::StoreError::NotFound { id: id.to_string() },
            )?)?),
        };
        let (cur, b) = (&parsed.request, &parsed.body);
        let cfg = self.config();
        let labels = self.labels_of(&cur.host).await?;
        let subject = Subject {
            host: &cur.host,
            labels: &labels,
            context: &b.context,
        };
        // The route chosen when the request arrived decides, as long as the config still has
        // it; after a reload that removed it, the current config routes the request afresh.
        let route = cur
            .route
            .as_deref()
            .and_then(|n| cfg.routes.iter().find(|r| r.name == n))
            .or_else(|| cfg.route_for(&subject))
            .ok_or(route::Refusal::NoRoute)?;
        let threshold = if cur.threshold > 0 {
            cur.threshold
        } else {
            route.threshold
        };
        let vote = match decision {
            Decision::Approve { for_ } => Vote {
                principal: principal.to_string(),
                release: Release::Allow,
                for_ms: for_.map(|d| d.as_millis() as u64),
                always: false,
                reason: None,
                via: via.to_string(),
                at_unix_ms: now,
            },
            Decision::Deny { always, reason } => Vote {
                principal: principal.to_string(),
                release: Release::Deny,
                for_ms: None,
                always,
                reason,
                via: via.to_string(),
                at_unix_ms: now,
            },
        };
        route::check_vote_with(
            &cfg,
            route,
            principal,
            idp_groups,
            &vote,
            &subject,
            cur.created_unix_ms,
            now,
        )?;
        let res = self
            .store
            .vote(id, &vote, token, now, |votes| {
                route::tally(threshold, votes, now)
            })
            .await?;
        if let Some(d) = &res.decided {
            self.metrics.decided(&route.name, d.release);
            tracing::info!(id, host = %cur.host, principal, "request decided");
            if let Some(m) = wire::decision_message(&res.request) {
                self.hub.send(&cur.host, m);
            }
        }
        // The vote's transaction recorded the accepted attempt.
        self.hub.publish(Change::Voted(res.request.clone()));
        Ok(res.request)
    }

    /// Labels of `host`: from memory, else from the store (then kept).
    pub async fn labels_of(&self, host: &str) -> Result<Arc<BTreeMap<String, String>>, Fault> {
        if let Some(l) = self.lock_labels().get(host) {
            return Ok(l.clone());
        }
        let labels = Arc::new(
            self.store
                .host(host)
                .await?
                .map(|h| h.labels)
                .unwrap_or_default(),
        );
        self.lock_labels().insert(host.to_string(), labels.clone());
        Ok(labels)
    }

    /// Replaces the labels kept for the hosts in `hosts` (the store watch's read of them).
    pub fn refresh_labels(&self, hosts: &[crate::store::HostRow]) {
        let mut l = self.lock_labels();
        l.clear();
        for h in hosts {
            l.insert(h.name.clone(), Arc::new(h.labels.clone()));
        }
    }

    /// Whether any host's labels are kept (the store watch refreshes them).
    pub fn has_labels(&self) -> bool {
        !self.lock_labels().is_empty()
    }

    fn lock_labels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<BTreeMap<String, String>>>> {
        self.labels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_opened(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Parsed>>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, p: Arc<Parsed>) {
        let mut m = self.lock_opened();
        if m.len() >= OPENED_CACHE {
            m.clear();
        }
        m.insert(p.request.id.clone(), p);
    }

    /// Whether request `id` opened (or was re-sent) through this replica and is not closed.
    pub fn is_open_here(&self, id: &str) -> bool {
        self.lock_opened().contains_key(id)
    }

    /// Hands this broker's requests to the reminder task listening on `tx`; false when one
    /// was set already.
    pub fn set_reminders(&self, tx: mpsc::UnboundedSender<crate::remind::Opened>) -> bool {
        self.reminders.set(tx).is_ok()
    }

    fn remind(&self, request: Arc<Parsed>, resent: bool) {
        if let Some(tx) = self.reminders.get() {
            let _ = tx.send(crate::remind::Opened { request, resent });
        }
    }

    fn remembered(&self, id: &str) -> Option<Arc<Parsed>> {
        self.lock_opened().get(id).cloned()
    }

    fn forget(&self, id: &str) {
        self.lock_opened().remove(id);
    }

    /// Pending requests (filters ANDed), oldest first.
    pub async fn pending(
        &self,
        host: Option<String>,
        agent: Option<String>,
    ) -> Result<Vec<StoredRequest>, Fault> {
        Ok(self
            .store
            .list_requests(&RequestFilter {
                host,
                agent,
                state: Some(RequestState::Pending),
                ..Default::default()
            })
            .await?)
    }
}
