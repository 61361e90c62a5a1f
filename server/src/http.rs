//! The server's HTTP listener (`http_listen` in server.yaml), for the channels that call back:
//! today the generic webhook's decision callback.
//!
//! `POST /v1/webhook/decision`, signed like the server's own webhook POSTs
//! (`X-Airlock-Signature: t=…,v1=…`, see [`crate::signing`], with the webhook's secret), body:
//!
//! ```json
//! {"id": "01J…", "principal": "alice", "decision": "approve", "for": "15m"}
//! {"id": "01J…", "principal": "alice", "decision": "deny", "reason": "not during the freeze"}
//! ```
//!
//! The receiver vouches for who `principal` is (it signed the call); the server applies the
//! same approver rules as on every channel (the principal must be eligible for the request's
//! route, never the agent's launcher; N-of-M; a reason when the route wants one; a route
//! that does not list `webhook` refuses it, see `route::check_vote`). Idempotent by request id: the same
//! principal's same decision (same duration, same reason) sent again answers 200 with the
//! request as it is, changing nothing; a different one is a conflict (409). Answers are JSON: `{"id", "state", "decided", "votes"}` on
//! success, `{"error", "code"}` otherwise, with the HTTP status of [`crate::error::http_status`].
//! Every refused call is recorded (channel `webhook`).
//!
//! Plain HTTP: bind it to loopback or a private address behind a TLS-terminating proxy; the
//! signature authenticates the caller and the body, not the transport.
use std::path::PathBuf;
use std::sync::Arc;

use airlock_approval::{Decision, Release};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::broker::{Broker, now_ms};
use crate::error::{Fault, http_status};
use crate::store::StoreError;

/// Largest callback body accepted.
const MAX_BODY: usize = 16 * 1024;
const CHANNEL: &str = "webhook";

#[derive(Clone)]
struct App {
    broker: Arc<Broker>,
    /// The server's directory (relative secret files).
    dir: PathBuf,
}

/// The router: `POST /v1/webhook/decision`.
pub fn router(broker: Arc<Broker>, dir: PathBuf) -> Router {
    Router::new()
        .route("/v1/webhook/decision", post(decision))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(App {
            broker: broker.clone(),
            dir: dir.clone(),
        })
        .merge(crate::web::router(broker.clone(), dir.clone()))
        .merge(crate::slack::router(broker, dir))
}

/// A decision callback's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Callback {
    id: String,
    principal: String,
    decision: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn decision(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let b = &app.broker;
    // Who and what, for the record, before anything is trusted.
    let refuse = |who: String, id: Option<String>, code: tonic::Code, msg: String| {
        let b = b.clone();
        async move {
            b.record(&who, CHANNEL, "decide", id.as_deref(), code, &msg)
                .await;
            answer(
                StatusCode::from_u16(http_status(code)).unwrap_or(StatusCode::BAD_REQUEST),
                serde_json::json!({"error": msg, "code": crate::error::code_name(code)}),
            )
        }
    };
    let cfg = b.config();
    let Some(hook) = cfg.webhook.as_ref() else {
        return refuse(
            "unknown".into(),
            None,
            tonic::Code::NotFound,
            "no webhook is configured on this server".into(),
        )
        .await;
    };
    let secret = match crate::webhook::read_secret(&app.dir, &hook.secret_file) {
        Ok(s) => s,
        Err(e) => {
            // The path stays in the server's log: this answer goes to unauthenticated callers.
            tracing::error!(error = %e, "webhook callback: secret unreadable");
            let msg = "the webhook secret is unreadable; see the server's log".to_string();
            return refuse("unknown".into(), None, tonic::Code::Unavailable, msg).await;
        }
    };
    let sig = headers
        .get(crate::signing::WEBHOOK_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = crate::signing::verify_webhook(&secret, sig, &body, now_ms() / 1000) {
        return refuse(
            "unknown".into(),
            None,
            tonic::Code::Unauthenticated,
            format!("signature: {e}"),
        )
        .await;
    }
    let cb: Callback = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                "unknown".into(),
                None,
                tonic::Code::InvalidArgument,
                format!("body: {e}"),
            )
            .await;
        }
    };
    let who = cb.principal.clone();
    let id = cb.id.clone();
    let decision = match parse_decision(&cb) {
        Ok(d) => d,
        Err(msg) => {
            return refuse(who, Some(id), tonic::Code::InvalidArgument, msg).await;
        }
    };
    // What a repeat of this call must match to count as the same vote.
    let same = match &decision {
        Decision::Approve { for_ } => (Release::Allow, for_.map(|d| d.as_millis() as u64), None),
        Decision::Deny { reason, .. } => (Release::Deny, None, reason.clone()),
    };
    match b.vote(&who, None, CHANNEL, &id, decision).await {
        Ok(r) => answer(StatusCode::OK, summary(&r)),
        Err(f) => {
            // The same principal's same vote again (a retried callback): answered as it
            // stands, nothing changed.
            if matches!(
                &f,
                Fault::Store(StoreError::AlreadyVoted { .. } | StoreError::Closed { .. })
            ) && let Ok(Some(r)) = b.store.request(&id).await
                && r.votes
                    .iter()
                    .any(|v| v.principal == who && (v.release, v.for_ms, v.reason.clone()) == same)
            {
                return answer(StatusCode::OK, summary(&r));
            }
            let code = f.code();
            // As on gRPC: internal details (SQL errors) are logged, not sent.
            let msg = tonic::Status::from(f).message().to_string();
            refuse(who, Some(id), code, msg).await
        }
    }
}

fn parse_decision(cb: &Callback) -> Result<Decision, String> {
    match cb.decision.as_str() {
        "approve" => {
            if cb.reason.is_some() {
                return Err("reason: only with decision deny".into());
            }
            let for_ = match &cb.for_ {
                None => None,
                Some(s) => {
                    let d = crate::cli::parse_duration(s).map_err(|e| format!("for: {e}"))?;
                    airlock_approval::check_grant(d).map_err(|e| format!("for {s:?}: {e}"))?;
                    Some(d)
                }
            };
            Ok(Decision::Approve { for_ })
        }
        "deny" => {
            if cb.for_.is_some() {
                return Err("for: only with decision approve".into());
            }
            Ok(Decision::Deny {
                always: false,
                reason: cb.reason.clone().filter(|r| !r.trim().is_empty()),
            })
        }
        other => Err(format!(
            "decision: {other:?} is neither \"approve\" nor \"deny\""
        )),
    }
}

fn summary(r: &crate::store::StoredRequest) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "state": r.state,
        "decided": r.decision.is_some(),
        "votes": r.votes,
    })
}
