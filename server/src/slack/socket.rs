//! Socket Mode: the server opens the WebSocket (outbound only, no public endpoint).
//!
//! `apps.connections.open` with the app-level token gives a fresh `wss://` URL; Slack sends
//! envelopes on it: `hello` when ready, `interactive` with the click in `payload`, and
//! `disconnect` when it wants the client to reconnect (a new URL each time). Every envelope
//! with an `envelope_id` is acknowledged at once (`{"envelope_id": …}`; Slack redelivers
//! after 3 s without one), then its work runs in a task of its own, so a slow vote never
//! delays the next ack. Errors reconnect with doubling delays ([`FIRST_RETRY`] to
//! [`LAST_RETRY`]), reset once a connection says hello.
//!
//! Each click goes to one of the app's connections, on any replica: votes are idempotent in
//! the shared store (see `interact.rs`).
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::api::{Api, ApiError};
use super::{interact, read_token};
use crate::broker::Broker;
use crate::config::SlackMode;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// Without Socket Mode configured, how often the config is looked at again (a reload may
/// turn it on).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// A ping every so often; a connection silent for [`SILENCE`] is taken to be dead.
const PING: Duration = Duration::from_secs(30);
const SILENCE: Duration = Duration::from_secs(90);

/// Why a Socket Mode connection ended.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The app-level token file cannot be read.
    #[error("{0}")]
    Token(#[from] super::SlackError),
    /// `apps.connections.open` failed.
    #[error("{0}")]
    Open(#[from] ApiError),
    /// The WebSocket failed or was closed.
    #[error("WebSocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// Slack closed the connection without a `disconnect` envelope.
    #[error("Slack closed the connection")]
    Closed,
    /// Nothing arrived for [`SILENCE`].
    #[error("no frame from Slack for {0:?}")]
    Silent(Duration),
}

/// How a connection ended without an error.
enum End {
    /// Slack asked for a reconnect (`disconnect`).
    Reconnect,
    /// Socket Mode is no longer configured (a reload), or the server is stopping.
    Stop,
}

/// Runs the Socket Mode client while the broker lives (token files relative to `dir`).
pub(super) async fn run(broker: Weak<Broker>, dir: PathBuf) {
    let mut delay = FIRST_RETRY;
    loop {
        let Some(b) = broker.upgrade() else { return };
        let wanted = b
            .config()
            .slack
            .as_ref()
            .is_some_and(|s| s.mode == SlackMode::Socket);
        drop(b);
        if !wanted {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        let mut said_hello = false;
        match session(&broker, &dir, &mut said_hello).await {
            Ok(End::Reconnect) => {
                tracing::info!("slack: Socket Mode reconnecting as Slack asked");
                delay = FIRST_RETRY;
                continue;
            }
            Ok(End::Stop) => continue,
            Err(e) => {
                if said_hello {
                    delay = FIRST_RETRY;
                }
                tracing::warn!(error = %e, retry_in = ?delay, "slack: Socket Mode connection failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LAST_RETRY);
    }
}

/// One connection: from `apps.connections.open` to its end.
async fn session(
    broker: &Weak<Broker>,
    dir: &std::path::Path,
    said_hello: &mut bool,
) -> Result<End, SocketError> {
    let (api, token) = {
        let Some(b) = broker.upgrade() else {
            return Ok(End::Stop);
        };
        let cfg = b.config();
        let Some(slack) = cfg.slack.as_ref().filter(|s| s.mode == SlackMode::Socket) else {
            return Ok(End::Stop);
        };
        let Some(file) = &slack.app_token_file else {
            return Ok(End::Stop);
        };
        (Api::new(&slack.api_url)?, read_token(dir, file)?)
    };
    let url = api.open_connection(&token).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    let mut last = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = ping.tick() => {
                if last.elapsed() > SILENCE {
                    return Err(SocketError::Silent(SILENCE));
                }
                ws.send(Message::Ping(Vec::new().into())).await?;
                continue;
            }
        };
        last = tokio::time::Instant::now();
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => return Err(SocketError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
        };
        let Ok(env) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::warn!("slack: Socket Mode frame is not JSON; ignored");
            continue;
        };
        // The ack first, before any work (Slack's 3-second limit).
        if let Some(id) = env["envelope_id"].as_str() {
            let ack = json!({"envelope_id": id}).to_string();
            ws.send(Message::Text(ack.into())).await?;
        }
        match env["type"].as_str() {
            Some("hello") => {
                *said_hello = true;
                tracing::info!("slack: Socket Mode connected");
            }
            Some("disconnect") => {
                tracing::info!(
                    reason = env["reason"].as_str().unwrap_or(""),
                    "slack: Slack asked to reconnect"
                );
                let _ = ws.close(None).await;
                return Ok(End::Reconnect);
            }
            Some("interactive") => {
                let Some(b) = broker.upgrade() else {
                    return Ok(End::Stop);
                };
                let payload = env["payload"].clone();
                let dir = dir.to_path_buf();
                tokio::spawn(async move { interact::handle(b, &dir, payload).await });
            }
            // Events API and slash commands are not airlock's: acknowledged, ignored.
            _ => {}
        }
    }
}
