//! The Slack channel: for each request whose route lists `slack`, a Block Kit message in the
//! configured conversation with its context and the buttons Approve, Approve 15m and Deny
//! (which opens a modal asking for the reason); votes and refusals come back as clicks.
//!
//! ```text
//!  hub (this replica) ─▶ deliver.rs: one worker per request ─▶ chat.postMessage / thread
//!                          replies / chat.update on close        (message channel+ts in the store)
//!  Slack ─ Socket Mode (socket.rs) ─┐
//!        ─ HTTP POST (inbound.rs) ──┴▶ interact.rs ─▶ broker.vote(principal, "slack") or an
//!                                                      ephemeral refusal, recorded
//! ```
//!
//! - **Who**: `slack.users` maps Slack user ids to principals; the broker's rules do the rest
//!   (approver groups, never the agent's launcher, N-of-M, a reason when the route wants one,
//!   only on routes that list `slack`). Routes with `web_only: true` get a message linking to
//!   the web page, without buttons, and Slack votes on them are refused.
//! - **Delivery**: a failed post (no answer, 5xx, 429 with its Retry-After, a retryable
//!   `ok: false`) is retried with doubling delays while the request is pending; meanwhile it
//!   stays decidable from the CLI. Messages are stored, so thread replies and the final update
//!   work from any replica and after a restart, and a restart posts what was never posted.
//! - **Transports**: Socket Mode (default; outbound WebSocket, `app_token_file`) or HTTP
//!   interactivity (`mode: http`, `POST /v1/slack/interactivity` on the HTTP listener, signed
//!   with the app's signing secret).
//! - Token and secret files are relative to the server's directory, read when used (a rotated
//!   token applies without a reload) and checked by [`check`] at start, on reload and by
//!   `config check`.
mod api;
mod blocks;
mod deliver;
mod inbound;
mod interact;
mod socket;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use api::{Api, ApiError};
pub use blocks::{APPROVE, APPROVE_15M, DENY, DENY_MODAL, REASON_BLOCK, REASON_INPUT};
pub use inbound::router;
pub use interact::{APPROVE_FOR, InteractError, modal_metadata};
pub use socket::SocketError;

use crate::broker::Broker;
use crate::config::{ServerConfig, SlackMode};

/// The channel's name in votes and records.
pub const CHANNEL: &str = "slack";

/// Errors of the Slack channel's files.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// A token or secret file cannot be used.
    #[error(transparent)]
    File(#[from] crate::secret_file::SecretFileError),
}

/// The token or secret in `file` (relative to `dir`), without surrounding whitespace.
pub fn read_token(dir: &Path, file: &Path) -> Result<String, SlackError> {
    Ok(crate::secret_file::read(dir, file, "Slack credential")?)
}

/// Whether the files `cfg`'s `slack:` names can be read (relative to `dir`): the bot token,
/// and the app token (Socket Mode) or the signing secret (HTTP mode).
pub fn check(cfg: &ServerConfig, dir: &Path) -> Result<(), SlackError> {
    let Some(s) = &cfg.slack else { return Ok(()) };
    read_token(dir, &s.bot_token_file)?;
    let other = match s.mode {
        SlackMode::Socket => &s.app_token_file,
        SlackMode::Http => &s.signing_secret_file,
    };
    if let Some(f) = other {
        read_token(dir, f)?;
    }
    Ok(())
}

/// Starts the channel for `broker` (files relative to `dir`): the outbound side on this
/// replica's hub, the sweep, and the Socket Mode client. Everything ends with the broker;
/// without `slack:` in the config the tasks idle (a reload may add it).
pub fn spawn(broker: &Arc<Broker>, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    let mut changes = broker.hub.subscribe();
    let weak = Arc::downgrade(broker);
    tokio::spawn(socket::run(weak.clone(), dir.clone()));
    tokio::spawn(async move {
        let mut out = deliver::Outbound::new(weak, dir);
        let mut sweep = tokio::time::interval(deliver::SWEEP);
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => out.change(c),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // What was missed is caught up by the next sweep (messages) or not
                        // at all (thread replies): say so.
                        tracing::warn!(missed = n, "slack channel fell behind; sweeping now");
                        out.sweep().await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = sweep.tick() => out.sweep().await,
            }
        }
    })
}
