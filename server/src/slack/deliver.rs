//! Outbound: the request's message, its thread replies and its final update.
//!
//! Each request of a `slack` route gets a worker task on this replica that handles its
//! changes in order: post the message (retried with backoff for as long as the request is
//! pending), reply in its thread for each vote, reminder and escalation, and on close update
//! it to show the outcome without buttons. Workers read the message's channel and ts from the
//! store, so a worker on another replica, or after a restart, replies to and updates the
//! message the first one posted. A sweep at start and every [`SWEEP`] posts pending requests
//! that have no message (the server was down or Slack unreachable) and finishes messages
//! whose request closed meanwhile.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use airlock_approval::RequestState;
use tokio::sync::mpsc;

use super::api::{Api, ApiError};
use super::{CHANNEL, blocks, read_token};
use crate::broker::{Broker, Change, now_ms};
use crate::config::{Channel, Route, ServerConfig};
use crate::store::StoredRequest;
use crate::wire;

/// Delay before the first retry; doubled each time up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// Attempts for a thread reply or the final update (the sweep finishes an update later).
const ATTEMPTS: u32 = 8;
/// A claim on posting older than this is taken to be of a replica that died mid-post.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often the backlog is looked for.
pub const SWEEP: Duration = Duration::from_secs(300);
/// A worker with nothing to do for this long ends (a request whose host never reported an
/// outcome); a later change starts a new one.
const IDLE: Duration = Duration::from_secs(3600);
/// Most requests one sweep takes up.
const SWEEP_LIMIT: u32 = 500;

/// What a worker does next for its request.
#[derive(Debug)]
enum Job {
    Post,
    Voted(StoredRequest),
    Reminder(StoredRequest),
    Escalated(Vec<String>),
    Closed(StoredRequest),
}

/// The channel's outbound side on this replica.
pub(super) struct Outbound {
    broker: Weak<Broker>,
    dir: PathBuf,
    workers: HashMap<String, mpsc::UnboundedSender<Job>>,
}

/// The route of `r` in `cfg` when it lists Slack.
fn slack_route<'c>(cfg: &'c ServerConfig, route: Option<&str>) -> Option<&'c Route> {
    let name = route?;
    cfg.routes
        .iter()
        .find(|rt| rt.name == name && rt.channels.contains(&Channel::Slack))
}

impl Outbound {
    pub(super) fn new(broker: Weak<Broker>, dir: PathBuf) -> Outbound {
        Outbound {
            broker,
            dir,
            workers: HashMap::new(),
        }
    }

    /// Hands a hub change to its request's worker.
    pub(super) fn change(&mut self, c: Change) {
        let Some(b) = self.broker.upgrade() else {
            return;
        };
        let cfg = b.config();
        if cfg.slack.is_none() || slack_route(&cfg, c.request().route.as_deref()).is_none() {
            return;
        }
        let id = c.request().id.clone();
        let job = match c {
            Change::Opened(_) => Job::Post,
            Change::Voted(r) => Job::Voted(r),
            Change::Reminder(r) => Job::Reminder(r),
            Change::Escalated { to, .. } => Job::Escalated(to),
            Change::Closed(r) => Job::Closed(r),
        };
        self.send(id, job);
    }

    fn send(&mut self, id: String, job: Job) {
        if let Some(tx) = self.workers.get(&id) {
            match tx.send(job) {
                Ok(()) => return,
                // The worker ended (idle, or done with a close): a new one takes over.
                Err(mpsc::error::SendError(job)) => return self.spawn(id, job),
            }
        }
        self.spawn(id, job);
    }

    fn spawn(&mut self, id: String, job: Job) {
        if self.workers.len() >= 1024 {
            self.workers.retain(|_, tx| !tx.is_closed());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(job);
        self.workers.insert(id.clone(), tx);
        let w = Worker {
            broker: self.broker.clone(),
            dir: self.dir.clone(),
            id,
        };
        tokio::spawn(w.run(rx));
    }

    /// Posts pending requests that have no message and finishes messages of closed requests.
    pub(super) async fn sweep(&mut self) {
        let Some(b) = self.broker.upgrade() else {
            return;
        };
        let cfg = b.config();
        if cfg.slack.is_none() {
            return;
        }
        let now = now_ms();
        let stale = now.saturating_sub(CLAIM_TTL.as_millis() as u64);
        let (unposted, unfinished) = match b.store.slack_backlog(stale, SWEEP_LIMIT).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "slack: cannot read the backlog");
                return;
            }
        };
        for (id, route) in unposted {
            let busy = self.workers.get(&id).is_some_and(|tx| !tx.is_closed());
            if !busy && slack_route(&cfg, route.as_deref()).is_some() {
                self.send(id, Job::Post);
            }
        }
        for id in unfinished {
            match b.store.request(&id).await {
                Ok(Some(r)) => self.send(id, Job::Closed(r)),
                Ok(None) => {}
                Err(e) => tracing::warn!(id, error = %e, "slack: cannot read a request"),
            }
        }
    }
}

/// One request's worker.
struct Worker {
    broker: Weak<Broker>,
    dir: PathBuf,
    id: String,
}

/// What a worker needs for one call: the broker, the API, the bot token, the config.
struct Call {
    broker: Arc<Broker>,
    api: Api,
    token: String,
    cfg: Arc<ServerConfig>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Ok(Some(job)) = tokio::time::timeout(IDLE, rx.recv()).await {
            let closed = matches!(job, Job::Closed(_));
            match job {
                Job::Post => self.post().await,
                Job::Voted(r) => {
                    if let Some(v) = r.votes.last() {
                        let line = blocks::vote_line(v, &r);
                        self.reply(&line).await;
                    }
                }
                Job::Reminder(r) => {
                    let line = format!(
                        ":alarm_clock: Reminder: this request still waits for a decision; \
                         the host decides on its own at {}",
                        blocks::date(r.deadline_unix_ms)
                    );
                    self.reply(&line).await;
                }
                Job::Escalated(to) => {
                    let line = self.escalation_line(&to);
                    self.reply(&line).await;
                }
                Job::Closed(r) => self.close(&r).await,
            }
            if closed {
                return;
            }
        }
    }

    /// The broker, the config, an API client and the bot token; `None` (logged and recorded)
    /// when the channel cannot call Slack now.
    async fn call(&self) -> Option<Call> {
        let broker = self.broker.upgrade()?;
        let cfg = broker.config();
        let slack = cfg.slack.as_ref()?;
        let api = match Api::new(&slack.api_url) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "slack: no HTTP client");
                return None;
            }
        };
        match read_token(&self.dir, &slack.bot_token_file) {
            Ok(token) => Some(Call {
                api,
                token,
                cfg: cfg.clone(),
                broker,
            }),
            Err(e) => {
                tracing::error!(error = %e, "slack: bot token unreadable");
                broker
                    .record(
                        "server",
                        CHANNEL,
                        "configure",
                        Some(&self.id),
                        tonic::Code::FailedPrecondition,
                        &e.to_string(),
                    )
                    .await;
                None
            }
        }
    }

    /// Posts the request's message, retrying for as long as it is pending and unposted.
    async fn post(&self) {
        let mut delay = FIRST_RETRY;
        let mut recorded = false;
        loop {
            let Some(c) = self.call().await else { return };
            let outcome = self.post_once(&c).await;
            let err = match outcome {
                Ok(true) => return,
                Ok(false) => None,
                Err(e) => Some(e),
            };
            if let Some(e) = &err {
                tracing::warn!(id = %self.id, error = %e, "slack: message not posted; retrying");
                c.broker.metrics.delivery_error(CHANNEL);
                if !recorded {
                    recorded = true;
                    let msg = format!("message not posted, retrying: {e}");
                    c.broker
                        .record(
                            "server",
                            CHANNEL,
                            "deliver",
                            Some(&self.id),
                            tonic::Code::Unavailable,
                            &msg,
                        )
                        .await;
                }
                if !e.retryable() {
                    // A mistake a retry repeats (bad token, unknown channel): the sweep
                    // tries again later, after the operator fixed it.
                    c.broker.metrics.delivery_failed(CHANNEL);
                    return;
                }
            }
            let wait = err
                .as_ref()
                .and_then(ApiError::retry_after)
                .map_or(delay, |ra| ra.max(delay));
            drop(c);
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(LAST_RETRY);
        }
    }

    /// One attempt: `Ok(true)` when done (posted now or by someone else, or no longer worth
    /// posting), `Ok(false)` when another poster holds the claim (try again later).
    async fn post_once(&self, c: &Call) -> Result<bool, ApiError> {
        let store = &c.broker.store;
        let r = match store.request(&self.id).await {
            Ok(Some(r)) if r.state == RequestState::Pending => r,
            Ok(_) => return Ok(true),
            Err(e) => {
                tracing::warn!(id = %self.id, error = %e, "slack: cannot read the request");
                return Ok(false);
            }
        };
        let now = now_ms();
        let stale = now.saturating_sub(CLAIM_TTL.as_millis() as u64);
        match store.slack_claim(&self.id, now, stale).await {
            Ok(true) => {}
            Ok(false) => return Ok(matches!(store.slack_message(&self.id).await, Ok(Some(_)))),
            Err(e) => {
                tracing::warn!(id = %self.id, error = %e, "slack: cannot claim the post");
                return Ok(false);
            }
        }
        let Some(slack) = c.cfg.slack.as_ref() else {
            return Ok(true);
        };
        let body = match wire::body(&r) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(id = %self.id, error = %e, "slack: request unreadable");
                return Ok(true);
            }
        };
        let route = c
            .cfg
            .routes
            .iter()
            .find(|rt| Some(&rt.name) == r.route.as_ref());
        let link = match route {
            Some(rt) if rt.web_only => c.cfg.web.as_ref().map(|w| w.request_url(&r.id)),
            _ => None,
        };
        let msg = blocks::request_message(&slack.channel, &r, &body, route, link.as_deref());
        match c.api.post_message(&c.token, &msg).await {
            Ok((channel, ts)) => {
                if let Err(e) = store.slack_posted(&self.id, &channel, &ts, now_ms()).await {
                    // The message is up but unknown to the store: replies and the final
                    // update will be missing; say so rather than post it again.
                    tracing::error!(id = %self.id, error = %e, "slack: message posted but not stored");
                }
                tracing::info!(id = %self.id, channel, ts, "slack: message posted");
                Ok(true)
            }
            Err(e) => {
                if let Err(se) = store.slack_release(&self.id).await {
                    tracing::warn!(id = %self.id, error = %se, "slack: cannot release the claim");
                }
                Err(e)
            }
        }
    }

    /// Posts `mrkdwn` in the message's thread (skipped when the request has no message yet:
    /// the message shows the votes so far once it is posted).
    async fn reply(&self, mrkdwn: &str) {
        self.retry("reply", |c, m| {
            let body = blocks::reply(&m.channel, &m.ts, mrkdwn);
            async move { c.api.post_message(&c.token, &body).await.map(drop) }
        })
        .await;
    }

    /// Updates the message to show the outcome, without buttons.
    async fn close(&self, r: &StoredRequest) {
        let Ok(body) = wire::body(r) else { return };
        let done = self
            .retry("update", |c, m| {
                let route = c
                    .cfg
                    .routes
                    .iter()
                    .find(|rt| Some(&rt.name) == r.route.as_ref());
                let msg = blocks::closed_message(&m.channel, &m.ts, r, &body, route);
                async move { c.api.update(&c.token, &msg).await }
            })
            .await;
        if done
            && let Some(b) = self.broker.upgrade()
            && let Err(e) = b.store.slack_closed(&self.id, now_ms()).await
        {
            tracing::warn!(id = %self.id, error = %e, "slack: update not recorded");
        }
    }

    /// Calls `f` on the request's message with up to [`ATTEMPTS`] tries; true when it went
    /// through. A final failure is recorded.
    async fn retry<F, Fut>(&self, what: &'static str, f: F) -> bool
    where
        F: Fn(Arc<Call>, crate::store::SlackMessage) -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        let mut delay = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let Some(c) = self.call().await else {
                return false;
            };
            let m = match c.broker.store.slack_message(&self.id).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    tracing::debug!(id = %self.id, what, "slack: no message to {what}");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(id = %self.id, error = %e, "slack: cannot read the message");
                    return false;
                }
            };
            let c = Arc::new(c);
            match f(c.clone(), m).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(id = %self.id, what, attempt, error = %e, "slack: call failed");
                    c.broker.metrics.delivery_error(CHANNEL);
                    let retry = e.retryable();
                    let wait = e.retry_after().map_or(delay, |ra| ra.max(delay));
                    last = e.to_string();
                    if !retry {
                        break;
                    }
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(wait).await;
                        delay = (delay * 2).min(LAST_RETRY);
                    }
                }
            }
        }
        if let Some(b) = self.broker.upgrade() {
            b.metrics.delivery_failed(CHANNEL);
            let msg = format!("{what} not delivered: {last}");
            b.record(
                "server",
                CHANNEL,
                "deliver",
                Some(&self.id),
                tonic::Code::Unavailable,
                &msg,
            )
            .await;
        }
        false
    }

    /// The escalation's thread line, mentioning the Slack users of the groups' principals.
    fn escalation_line(&self, to: &[String]) -> String {
        let groups = to.join(", ");
        let Some(b) = self.broker.upgrade() else {
            return format!(":rotating_light: Escalated to {groups}");
        };
        let cfg = b.config();
        let mentions: Vec<String> = cfg
            .slack
            .iter()
            .flat_map(|s| s.users.iter())
            .filter(|(_, p)| {
                cfg.principals
                    .get(*p)
                    .is_some_and(|p| p.groups.iter().any(|g| to.contains(g)))
            })
            .map(|(u, _)| format!("<@{u}>"))
            .collect();
        let who = if mentions.is_empty() {
            String::new()
        } else {
            format!(": {}", mentions.join(" "))
        };
        format!(":rotating_light: Escalated: members of {groups} may decide now{who}")
    }
}
