//! What the outbound channels (the generic webhook, Teams) share: which requests a channel
//! posts about, and one POST with its retries.
//!
//! A failed POST (no answer, a 5xx, 408 or 429) is retried with doubling delays
//! ([`FIRST_RETRY`] up to [`LAST_RETRY`], [`ATTEMPTS`] in all); a final failure, or another
//! 4xx, is recorded as an attempt under the channel's name. Records and logs name the URL's
//! origin only: a webhook URL's path or query may be its credential (a Teams Workflows URL
//! carries its signature in the query). Retries are kept in memory: a server restart drops
//! those still waiting.
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::broker::{Broker, Change};
use crate::config::{Channel, ServerConfig};
use crate::store::StoredRequest;

/// Attempts per message.
pub const ATTEMPTS: u32 = 8;
/// Delay before the first retry; doubled each time up to [`LAST_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest delay between two attempts.
pub const LAST_RETRY: Duration = Duration::from_secs(60);
/// Per attempt: connecting and the answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Headers of one attempt, made afresh for each (a signature carries the attempt's time).
pub type Headers = Arc<dyn Fn(&str) -> Vec<(&'static str, String)> + Send + Sync>;

/// The HTTP client of an outbound channel.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        // A redirect would turn the POST into a GET without the body, and its answer would
        // count as delivered.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("airlock-server/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Whether `r`'s route (by name, in `cfg`) lists `channel`.
pub fn route_lists(cfg: &ServerConfig, r: &StoredRequest, channel: Channel) -> bool {
    r.route.as_ref().is_some_and(|name| {
        cfg.routes
            .iter()
            .any(|rt| &rt.name == name && rt.channels.contains(&channel))
    })
}

/// The next request change for channel `name`; `None` once the hub is gone. A channel that
/// fell behind says how many changes it missed and goes on.
pub async fn next_change(rx: &mut broadcast::Receiver<Change>, name: &str) -> Option<Change> {
    loop {
        match rx.recv().await {
            Ok(c) => return Some(c),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    channel = name,
                    missed = n,
                    "{name} channel fell behind; {n} request changes were not posted"
                );
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// Logs and records that a channel's credential file (`e` says which) cannot be used: the
/// channel keeps what it read last.
pub async fn unusable_file(
    broker: &Broker,
    channel: &'static str,
    e: &(dyn std::fmt::Display + Sync),
) {
    tracing::error!(channel, error = %e, "credential file unusable; keeping the previous one");
    broker
        .record(
            "server",
            channel,
            "configure",
            None,
            tonic::Code::FailedPrecondition,
            &e.to_string(),
        )
        .await;
}

/// One message to POST, with its retries ([`Post::run`]).
pub struct Post {
    /// The channel's name in records (`webhook`, `teams`).
    pub channel: &'static str,
    pub client: reqwest::Client,
    pub url: String,
    /// The request it is about.
    pub id: String,
    /// What happened (`opened`, `closed`, …), for logs and records.
    pub event: &'static str,
    /// JSON.
    pub body: String,
    /// Headers besides `Content-Type`, made for each attempt from the body.
    pub headers: Option<Headers>,
}

impl Post {
    /// Posts until delivered, retrying failures worth retrying; records a final failure
    /// (while the broker lives).
    pub async fn run(self, broker: Weak<Broker>) {
        let mut delay = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.attempt().await {
                Ok(()) => return,
                Err((why, retry)) => {
                    tracing::warn!(channel = self.channel, id = %self.id, event = self.event, attempt, error = %why, "POST failed");
                    if let Some(b) = broker.upgrade() {
                        b.metrics.delivery_error(self.channel);
                    }
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
            b.metrics.delivery_failed(self.channel);
            let msg = format!(
                "{} not delivered to {}: {last}",
                self.event,
                origin(&self.url)
            );
            b.record(
                "server",
                self.channel,
                "deliver",
                Some(&self.id),
                tonic::Code::Unavailable,
                &msg,
            )
            .await;
        }
    }

    /// One attempt: `Err((why, worth retrying))`.
    async fn attempt(&self) -> Result<(), (String, bool)> {
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(h) = &self.headers {
            for (k, v) in h(&self.body) {
                req = req.header(k, v);
            }
        }
        let res = req
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
pub fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            // Credentials in the authority stay out too.
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}")
        }
        None => "(URL withheld)".to_string(),
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
        assert_eq!(
            super::origin(
                "https://prod.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=SECRET"
            ),
            "https://prod.westeurope.logic.azure.com:443"
        );
        assert_eq!(super::origin("no scheme/SECRET"), "(URL withheld)");
    }
}
