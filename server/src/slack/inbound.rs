//! HTTP interactivity: Slack POSTs each click and modal submission to
//! `POST /v1/slack/interactivity` on the HTTP listener (`slack.mode: http`).
//!
//! The request is signed (`X-Slack-Signature`, `X-Slack-Request-Timestamp`; checked over the
//! raw body by [`crate::signing::verify_slack`] with the secret in `signing_secret_file`, read
//! at each call so a rotated secret applies at once); the body is a form with one field,
//! `payload`, holding the JSON. The answer is an empty 200 at once (Slack wants one within
//! 3 s; for a modal submission it closes the modal) and the work runs in a task of its own.
//! A bad or stale signature is 401, a body without a payload 400; both are recorded, and no
//! ephemeral reply is sent: what an unauthenticated caller names (user, conversation) cannot
//! be trusted to be where the answer should go.
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::{CHANNEL, interact, read_token};
use crate::broker::{Broker, now_ms};
use crate::config::SlackMode;

/// Largest body accepted: a click's payload carries the whole message's blocks.
const MAX_BODY: usize = 512 * 1024;

#[derive(Clone)]
struct App {
    broker: Arc<Broker>,
    dir: PathBuf,
}

/// The router: `POST /v1/slack/interactivity` (token and secret files relative to `dir`).
pub fn router(broker: Arc<Broker>, dir: PathBuf) -> Router {
    Router::new()
        .route("/v1/slack/interactivity", post(interactivity))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(App { broker, dir })
}

async fn interactivity(State(app): State<App>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let b = &app.broker;
    let refuse = |code: tonic::Code, msg: String| {
        let b = b.clone();
        async move {
            b.record("unknown", CHANNEL, "decide", None, code, &msg)
                .await;
            StatusCode::from_u16(crate::error::http_status(code)).unwrap_or(StatusCode::BAD_REQUEST)
        }
    };
    let cfg = b.config();
    let Some(slack) = cfg.slack.as_ref().filter(|s| s.mode == SlackMode::Http) else {
        return refuse(
            tonic::Code::NotFound,
            "Slack HTTP interactivity is not configured on this server".into(),
        )
        .await;
    };
    let Some(file) = &slack.signing_secret_file else {
        return refuse(tonic::Code::NotFound, "no Slack signing secret".into()).await;
    };
    let secret = match read_token(&app.dir, file) {
        Ok(s) => s,
        Err(e) => {
            // The path stays in the log: this answer goes to an unauthenticated caller.
            tracing::error!(error = %e, "slack: signing secret unreadable");
            let msg = "the Slack signing secret is unreadable; see the server's log".into();
            return refuse(tonic::Code::Unavailable, msg).await;
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = crate::signing::verify_slack(
        secret.as_bytes(),
        header("X-Slack-Request-Timestamp"),
        header("X-Slack-Signature"),
        &body,
        now_ms() / 1000,
    ) {
        return refuse(tonic::Code::Unauthenticated, format!("signature: {e}")).await;
    }
    let payload = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned());
    let Some(payload) = payload else {
        return refuse(
            tonic::Code::InvalidArgument,
            "body: no payload field".into(),
        )
        .await;
    };
    let payload: serde_json::Value = match serde_json::from_str(&payload) {
        Ok(v) => v,
        Err(e) => {
            return refuse(tonic::Code::InvalidArgument, format!("payload: {e}")).await;
        }
    };
    let broker = b.clone();
    tokio::spawn(async move { interact::handle(broker, &app.dir, payload).await });
    StatusCode::OK
}
