//! The Slack Web API methods the channel calls: `chat.postMessage`, `chat.update`,
//! `chat.postEphemeral`, `views.open` (bot token) and `apps.connections.open` (app-level
//! token). JSON bodies, `Authorization: Bearer`, answers `{"ok": true|false, …}`.
use std::time::Duration;

use serde_json::Value;

/// Per call: connecting and the answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Slack's `error` codes worth another try (their outage and rate-limit answers).
const RETRYABLE: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// Why a Web API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(reqwest::Error),
    /// No answer (connection refused, reset, timeout).
    #[error("{method}: {source}")]
    Network {
        method: &'static str,
        source: reqwest::Error,
    },
    /// An HTTP status other than 200.
    #[error("{method}: HTTP {status}")]
    Status {
        method: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// `{"ok": false, "error": …}`.
    #[error("{method}: Slack answered {error}")]
    Slack {
        method: &'static str,
        error: String,
        retry_after: Option<Duration>,
    },
    /// 200 with something that is not Slack's JSON, or without a field the caller needs.
    #[error("{method}: unexpected answer: {detail}")]
    BadAnswer {
        method: &'static str,
        detail: String,
    },
}

impl ApiError {
    /// Whether the same call may succeed later (an outage, a rate limit), as opposed to a
    /// mistake a retry repeats (a bad token, an unknown channel).
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Client(_) | ApiError::BadAnswer { .. } => false,
            ApiError::Network { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            ApiError::Slack { error, .. } => RETRYABLE.contains(&error.as_str()),
        }
    }

    /// How long Slack asked to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } | ApiError::Slack { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A Web API client for one base URL (`https://slack.com/api`, or a test double's).
#[derive(Clone, Debug)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for the methods under `base` (no trailing slash).
    pub fn new(base: &str) -> Result<Api, ApiError> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // Slack never redirects its API; following one would send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("airlock-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ApiError::Client)?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method` with `body` (JSON; `None`: an empty form, for methods without
    /// arguments) and returns the answer when it is `ok: true`.
    pub async fn call(
        &self,
        method: &'static str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let req = self
            .client
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token);
        let req = match body {
            Some(b) => req
                .header("Content-Type", "application/json; charset=utf-8")
                .body(b.to_string()),
            None => req.header("Content-Type", "application/x-www-form-urlencoded"),
        };
        let res = req.send().await.map_err(|e| ApiError::Network {
            method,
            source: e.without_url(),
        })?;
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let status = res.status().as_u16();
        if status != 200 {
            return Err(ApiError::Status {
                method,
                status,
                retry_after,
            });
        }
        let bytes = res.bytes().await.map_err(|e| ApiError::Network {
            method,
            source: e.without_url(),
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadAnswer {
            method,
            detail: e.to_string(),
        })?;
        if v["ok"].as_bool() == Some(true) {
            return Ok(v);
        }
        match v["error"].as_str() {
            Some(error) => Err(ApiError::Slack {
                method,
                error: error.to_string(),
                retry_after,
            }),
            None => Err(ApiError::BadAnswer {
                method,
                detail: "neither ok nor error".into(),
            }),
        }
    }

    /// `chat.postMessage`: the (channel, ts) of the new message.
    pub async fn post_message(
        &self,
        token: &str,
        body: &Value,
    ) -> Result<(String, String), ApiError> {
        const M: &str = "chat.postMessage";
        let v = self.call(M, token, Some(body)).await?;
        match (v["channel"].as_str(), v["ts"].as_str()) {
            (Some(c), Some(ts)) => Ok((c.to_string(), ts.to_string())),
            _ => Err(ApiError::BadAnswer {
                method: M,
                detail: "no channel or ts".into(),
            }),
        }
    }

    /// `chat.update`.
    pub async fn update(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        self.call("chat.update", token, Some(body)).await.map(drop)
    }

    /// `chat.postEphemeral`.
    pub async fn post_ephemeral(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        self.call("chat.postEphemeral", token, Some(body))
            .await
            .map(drop)
    }

    /// `views.open`.
    pub async fn open_view(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        self.call("views.open", token, Some(body)).await.map(drop)
    }

    /// `apps.connections.open` with the app-level token: a Socket Mode WebSocket URL.
    pub async fn open_connection(&self, app_token: &str) -> Result<String, ApiError> {
        const M: &str = "apps.connections.open";
        let v = self.call(M, app_token, None).await?;
        v["url"]
            .as_str()
            .map(str::to_string)
            .ok_or(ApiError::BadAnswer {
                method: M,
                detail: "no url".into(),
            })
    }
}
