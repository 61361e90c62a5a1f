//! The generic webhook channel, outbound: for each request whose route names `webhook`, one
//! signed JSON POST when it opens and one when its host reports the outcome.
//!
//! The body is `{"event": "opened"|"closed", "request": {…}}`, the request as the server keeps
//! it (id, host, agent, state, route, threshold, times, the host's context, the decision and
//! the votes). It is signed with `X-Airlock-Signature: t=…,v1=…` (see [`crate::signing`] for
//! how a receiver checks it) with the secret in the config's `webhook.secret_file`.
//!
//! Each event is posted by the replica it happened on (a request opens and closes on the
//! replica its host is linked to), so a fleet behind several replicas posts it once. A failed
//! POST (no answer, a 5xx, 408 or 429) is retried with doubling delays ([`FIRST_RETRY`] up to
//! [`LAST_RETRY`], [`ATTEMPTS`] in all); a final failure, or another 4xx, is recorded as an
//! attempt (`channel: webhook`). Meanwhile the request stays decidable from the CLI and the
//! other channels. Retries are kept in memory: a server restart drops those still waiting.
//!
//! The config is read at every event, so a reload that changes `webhook:` takes effect for the
//! next event; a secret file that cannot be read keeps the previous secret (and says so).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::broker::{Broker, Change, now_ms};
use crate::config::Channel;
use crate::store::StoredRequest;

/// Attempts per event.
const ATTEMPTS: u32 = 8;
/// Delay before the first retry; doubled each time up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// Per attempt: connecting and the answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The channel name in records.
const CHANNEL: &str = "webhook";

/// Errors of the webhook channel.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook secret file {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("webhook secret file {path} is empty")]
    EmptySecret { path: PathBuf },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The secret in `file` (relative to `dir`), without a trailing newline.
pub fn read_secret(dir: &Path, file: &Path) -> Result<Vec<u8>, WebhookError> {
    let path = dir.join(file);
    let mut s = std::fs::read(&path).map_err(|source| WebhookError::Secret {
        path: path.clone(),
        source,
    })?;
    while s.last().is_some_and(|b| b.is_ascii_whitespace()) {
        s.pop();
    }
    if s.is_empty() {
        return Err(WebhookError::EmptySecret { path });
    }
    Ok(s)
}

/// Whether the files `cfg` names for the webhook can be used (relative to `dir`): checked at
/// start, on reload (a config whose secret is unreadable does not replace the one in force)
/// and by `config check`.
pub fn check(cfg: &crate::config::ServerConfig, dir: &Path) -> Result<(), WebhookError> {
    match &cfg.webhook {
        Some(w) => read_secret(dir, &w.secret_file).map(drop),
        None => Ok(()),
    }
}

/// The JSON body of an event.
pub fn body(event: &str, r: &StoredRequest) -> String {
    let context: serde_json::Value =
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "event": event,
        "request": {
            "id": r.id,
            "host": r.host,
            "agent": r.agent,
            "state": r.state,
            "route": r.route,
            "threshold": r.threshold,
            "created_unix_ms": r.created_unix_ms,
            "deadline_unix_ms": r.deadline_unix_ms,
            "context": context,
            "decision": r.decision,
            "votes": r.votes,
        }
    })
    .to_string()
}

/// Starts the channel for `broker` (secret files relative to `dir`); it ends with the broker.
pub fn spawn(broker: &Arc<Broker>, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    let mut changes = broker.hub.subscribe();
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect would turn the POST into a GET without the body, and its answer
            // would count as delivered.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("airlock-server/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook channel: no HTTP client; webhooks are not sent");
                return;
            }
        };
        let mut secret: Option<Arc<[u8]>> = None;
        loop {
            let change = match changes.recv().await {
                Ok(c) => c,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "webhook channel fell behind; {n} request changes were not posted"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let (event, r) = match &change {
                Change::Opened(p) => ("opened", &p.request),
                Change::Closed(r) => ("closed", r),
                Change::Reminder(r) => ("reminder", r),
                Change::Escalated { request, .. } => ("escalated", request),
                Change::Voted(_) => continue,
            };
            let Some(broker) = weak.upgrade() else { return };
            let cfg = broker.config();
            let Some(hook) = cfg.webhook.clone() else {
                continue;
            };
            let wants = r.route.as_ref().is_some_and(|name| {
                cfg.routes
                    .iter()
                    .any(|rt| &rt.name == name && rt.channels.contains(&Channel::Webhook))
            });
            if !wants {
                continue;
            }
            // Read at every event (events are few): a secret rotated in its file is used at
            // once, without a reload.
            match read_secret(&dir, &hook.secret_file) {
                Ok(s) => secret = Some(s.into()),
                Err(e) => {
                    tracing::error!(error = %e, "webhook secret unreadable; keeping the previous one");
                    broker
                        .record(
                            "server",
                            CHANNEL,
                            "configure",
                            None,
                            tonic::Code::FailedPrecondition,
                            &e.to_string(),
                        )
                        .await;
                }
            }
            let Some(key) = &secret else { continue };
            let job = Delivery {
                client: client.clone(),
                url: hook.url.clone(),
                secret: key.clone(),
                id: r.id.clone(),
                body: body(event, r),
                event,
            };
            tokio::spawn(job.run(Arc::downgrade(&broker)));
        }
    })
}

/// One event's POST, with its retries.
struct Delivery {
    client: reqwest::Client,
    url: String,
    secret: Arc<[u8]>,
    id: String,
    body: String,
    event: &'static str,
}

impl Delivery {
    async fn run(self, broker: Weak<Broker>) {
        let mut delay = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.post().await {
                Ok(()) => return,
                Err((why, retry)) => {
                    tracing::warn!(id = %self.id, event = self.event, attempt, error = %why, "webhook POST failed");
                    last = why;
                    if !retry {
                        break;
                    }
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LAST_RETRY);
            }
        }
        if let Some(b) = broker.upgrade() {
            let msg = format!(
                "{} not delivered to {}: {last}",
                self.event,
                origin(&self.url)
            );
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
    }

    /// One attempt: `Err((why, worth retrying))`.
    async fn post(&self) -> Result<(), (String, bool)> {
        let sig = crate::signing::sign_webhook(&self.secret, self.body.as_bytes(), now_ms() / 1000);
        let res = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(crate::signing::WEBHOOK_HEADER, sig)
            .header("X-Airlock-Event", self.event)
            .body(self.body.clone())
            .send()
            .await
            // Without the URL: it may carry a token, and this text is recorded.
            .map_err(|e| (e.without_url().to_string(), true))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
        Err((format!("HTTP {status}"), retry))
    }
}

/// `scheme://host[:port]` of a URL, for records (its path and query may carry a token).
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            // Credentials in the authority stay out too.
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}")
        }
        None => "(webhook URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_name_the_origin_only() {
        assert_eq!(
            super::origin("https://user:pw@hooks.example.com:8443/t/SECRET?k=v"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(super::origin("http://127.0.0.1:9/x"), "http://127.0.0.1:9");
    }
}
