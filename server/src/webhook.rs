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
//! POST (no answer, a 5xx, 408 or 429) is retried with doubling delays (see [`crate::outbound`],
//! shared with the Teams channel); a final failure, or another 4xx, is recorded as an attempt
//! (`channel: webhook`). Meanwhile the request stays decidable from the CLI and the
//! other channels. Retries are kept in memory: a server restart drops those still waiting.
//!
//! The config is read at every event, so a reload that changes `webhook:` takes effect for the
//! next event; a secret file that cannot be read keeps the previous secret (and says so).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::broker::{Broker, Change, now_ms};
use crate::config::Channel;
use crate::outbound;
use crate::store::StoredRequest;

/// The channel name in records.
const CHANNEL: &str = "webhook";

/// Errors of the webhook channel.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Secret(#[from] crate::secret_file::SecretFileError),
}

/// The secret in `file` (relative to `dir`), without surrounding whitespace.
pub fn read_secret(dir: &Path, file: &Path) -> Result<Vec<u8>, WebhookError> {
    Ok(crate::secret_file::read(dir, file, "webhook secret")?.into_bytes())
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
        let client = match outbound::client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook channel: no HTTP client; webhooks are not sent");
                return;
            }
        };
        let mut secret: Option<Arc<[u8]>> = None;
        while let Some(change) = outbound::next_change(&mut changes, CHANNEL).await {
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
            if !outbound::route_lists(&cfg, r, Channel::Webhook) {
                continue;
            }
            // Read at every event (events are few): a secret rotated in its file is used at
            // once, without a reload.
            match read_secret(&dir, &hook.secret_file) {
                Ok(s) => secret = Some(s.into()),
                Err(e) => outbound::unusable_file(&broker, CHANNEL, &e).await,
            }
            let Some(key) = secret.clone() else { continue };
            let post = outbound::Post {
                channel: CHANNEL,
                client: client.clone(),
                url: hook.url.clone(),
                id: r.id.clone(),
                event,
                body: body(event, r),
                // Signed at each attempt: a retry minutes later still carries a fresh time.
                headers: Some(Arc::new(move |body: &str| {
                    let sig = crate::signing::sign_webhook(&key, body.as_bytes(), now_ms() / 1000);
                    vec![
                        (crate::signing::WEBHOOK_HEADER, sig),
                        ("X-Airlock-Event", event.to_string()),
                    ]
                })),
            };
            tokio::spawn(post.run(Arc::downgrade(&broker)));
        }
    })
}
