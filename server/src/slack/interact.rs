//! Clicks and modal submissions, whichever way they arrive (Socket Mode or HTTP
//! interactivity): `block_actions` on a request's buttons and `view_submission` of the deny
//! modal become votes through the broker, under the same rules as every channel.
//!
//! The Slack user is mapped to a principal by `slack.users`; an unmapped user, a request of a
//! `web_only` route, a closed request, and every refusal of the broker (not an approver,
//! self-approval, reason required, …) get an ephemeral reply saying why and are recorded
//! (channel `slack`, action `decide`). A vote the store already holds from the same principal
//! with the same decision (a retried delivery, a double click) changes nothing and says
//! nothing.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_approval::{Decision, Release, RequestState};
use serde_json::{Value, json};

use super::api::Api;
use super::{CHANNEL, blocks, read_token};
use crate::broker::Broker;
use crate::error::Fault;
use crate::store::StoreError;

/// The duration of the "Approve 15m" button.
pub const APPROVE_FOR: Duration = Duration::from_secs(15 * 60);

/// Why an interaction was not turned into a vote.
#[derive(Debug, thiserror::Error)]
pub enum InteractError {
    /// The payload lacks a field it must have.
    #[error("Slack payload without {0}")]
    Malformed(&'static str),
    /// The clicking user is not in `slack.users`.
    #[error(
        "your Slack user {user} is not mapped to an airlock principal (slack.users in the server config)"
    )]
    Unmapped { user: String },
    /// No such request.
    #[error("request {id} is unknown to airlock-server")]
    Unknown { id: String },
    /// The request's route takes decisions on the web page only.
    #[error("requests of route {route} are decided on the web page, not in Slack")]
    WebOnly { route: String },
    /// The request is decided or closed.
    #[error("request {id} is already {state}; nothing changed")]
    Closed { id: String, state: String },
    /// The broker refused the vote.
    #[error("{0}")]
    Vote(#[from] Fault),
}

impl InteractError {
    /// The code recorded with the refusal.
    pub fn code(&self) -> tonic::Code {
        match self {
            InteractError::Malformed(_) => tonic::Code::InvalidArgument,
            InteractError::Unmapped { .. } | InteractError::WebOnly { .. } => {
                tonic::Code::PermissionDenied
            }
            InteractError::Unknown { .. } => tonic::Code::NotFound,
            InteractError::Closed { .. } => tonic::Code::FailedPrecondition,
            InteractError::Vote(f) => f.code(),
        }
    }

    /// The message for the record and the user (internal details of the broker stay in the
    /// log, as on gRPC).
    fn message(self) -> String {
        match self {
            InteractError::Vote(f) => tonic::Status::from(f).message().to_string(),
            e => e.to_string(),
        }
    }
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Approve, once or for [`APPROVE_FOR`].
    Approve { for_: Option<Duration> },
    /// The Deny button: open the modal with this trigger.
    AskReason { trigger_id: String },
    /// The modal's submission.
    Deny { reason: Option<String> },
}

/// One interaction on a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Interaction {
    /// The Slack user id.
    pub user: String,
    /// The request id (the button's value, or the modal's metadata).
    pub id: String,
    /// Where to answer ephemerally: the message's conversation and ts.
    pub channel: Option<String>,
    pub ts: Option<String>,
    pub action: Action,
}

/// The modal's `private_metadata`: the request and where its message is.
pub fn modal_metadata(id: &str, channel: Option<&str>, ts: Option<&str>) -> String {
    json!({"id": id, "channel": channel, "ts": ts}).to_string()
}

/// The interaction in `payload`, or `Ok(None)` for payloads that are not airlock's (other
/// apps' buttons, other modals, other types).
pub fn parse(payload: &Value) -> Result<Option<Interaction>, InteractError> {
    let user = payload["user"]["id"]
        .as_str()
        .ok_or(InteractError::Malformed("user.id"))?
        .to_string();
    match payload["type"].as_str() {
        Some("block_actions") => {
            let Some(a) = payload["actions"].as_array().and_then(|a| a.first()) else {
                return Err(InteractError::Malformed("actions"));
            };
            let action = match a["action_id"].as_str() {
                Some(blocks::APPROVE) => Action::Approve { for_: None },
                Some(blocks::APPROVE_15M) => Action::Approve {
                    for_: Some(APPROVE_FOR),
                },
                Some(blocks::DENY) => Action::AskReason {
                    trigger_id: payload["trigger_id"]
                        .as_str()
                        .ok_or(InteractError::Malformed("trigger_id"))?
                        .to_string(),
                },
                _ => return Ok(None),
            };
            let id = a["value"]
                .as_str()
                .ok_or(InteractError::Malformed("actions[0].value"))?;
            let channel = payload["channel"]["id"]
                .as_str()
                .or_else(|| payload["container"]["channel_id"].as_str());
            let ts = payload["message"]["ts"]
                .as_str()
                .or_else(|| payload["container"]["message_ts"].as_str());
            Ok(Some(Interaction {
                user,
                id: id.to_string(),
                channel: channel.map(str::to_string),
                ts: ts.map(str::to_string),
                action,
            }))
        }
        Some("view_submission") => {
            let view = &payload["view"];
            if view["callback_id"].as_str() != Some(blocks::DENY_MODAL) {
                return Ok(None);
            }
            let meta: Value = view["private_metadata"]
                .as_str()
                .and_then(|m| serde_json::from_str(m).ok())
                .ok_or(InteractError::Malformed("view.private_metadata"))?;
            let id = meta["id"]
                .as_str()
                .ok_or(InteractError::Malformed("view.private_metadata.id"))?;
            let reason =
                view["state"]["values"][blocks::REASON_BLOCK][blocks::REASON_INPUT]["value"]
                    .as_str()
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string);
            Ok(Some(Interaction {
                user,
                id: id.to_string(),
                channel: meta["channel"].as_str().map(str::to_string),
                ts: meta["ts"].as_str().map(str::to_string),
                action: Action::Deny { reason },
            }))
        }
        _ => Ok(None),
    }
}

/// Handles a payload that arrived on either transport (token files relative to `dir`).
pub async fn handle(broker: Arc<Broker>, dir: &Path, payload: Value) {
    let it = match parse(&payload) {
        Ok(Some(it)) => it,
        Ok(None) => return,
        Err(e) => {
            let who = payload["user"]["id"].as_str().unwrap_or("unknown");
            broker
                .record(who, CHANNEL, "decide", None, e.code(), &e.to_string())
                .await;
            return;
        }
    };
    let cfg = broker.config();
    let Some(slack) = cfg.slack.clone() else {
        return;
    };
    let api = match Api::new(&slack.api_url) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "slack: no HTTP client");
            return;
        }
    };
    let principal = slack.users.get(&it.user).cloned();
    if let Err(e) = decide(&broker, &api, dir, &it, principal.as_deref()).await {
        let who = principal.as_deref().unwrap_or(&it.user);
        let code = e.code();
        let msg = e.message();
        broker
            .record(who, CHANNEL, "decide", Some(&it.id), code, &msg)
            .await;
        if let Some(channel) = &it.channel {
            let text = format!(
                "airlock: your decision on request {} was refused: {msg}",
                it.id
            );
            let body = blocks::ephemeral(channel, &it.user, it.ts.as_deref(), &text);
            let sent = match read_token(dir, &slack.bot_token_file) {
                Ok(token) => api
                    .post_ephemeral(&token, &body)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                tracing::warn!(id = %it.id, error = %e, "slack: ephemeral reply not sent");
            }
        }
    }
}

/// Checks and casts the vote (or opens the modal).
async fn decide(
    broker: &Broker,
    api: &Api,
    dir: &Path,
    it: &Interaction,
    principal: Option<&str>,
) -> Result<(), InteractError> {
    let principal = principal.ok_or_else(|| InteractError::Unmapped {
        user: it.user.clone(),
    })?;
    let r = broker
        .store
        .request(&it.id)
        .await
        .map_err(Fault::from)?
        .ok_or_else(|| InteractError::Unknown { id: it.id.clone() })?;
    let cfg = broker.config();
    // The route in force for it, as the broker picks it; a route of that name that is
    // web-only refuses Slack votes even when the click was forged (its message has no button).
    if let Some(route) = r
        .route
        .as_deref()
        .and_then(|n| cfg.routes.iter().find(|rt| rt.name == n))
        && route.web_only
    {
        return Err(InteractError::WebOnly {
            route: route.name.clone(),
        });
    }
    let decision = match &it.action {
        Action::AskReason { trigger_id } => {
            if r.state != RequestState::Pending || r.decision.is_some() {
                let state = match r.decision.as_ref() {
                    Some(_) if r.state == RequestState::Pending => "decided".to_string(),
                    _ => r.state.as_str().to_string(),
                };
                return Err(InteractError::Closed {
                    id: it.id.clone(),
                    state,
                });
            }
            let required = r
                .route
                .as_deref()
                .and_then(|n| cfg.routes.iter().find(|rt| rt.name == n))
                .is_some_and(|rt| rt.deny_requires_reason);
            let meta = modal_metadata(&it.id, it.channel.as_deref(), it.ts.as_deref());
            let slack = cfg
                .slack
                .as_ref()
                .ok_or(InteractError::Malformed("slack config"))?;
            let token = read_token(dir, &slack.bot_token_file)
                .map_err(|e| Fault::Internal(e.to_string()))?;
            let body = blocks::deny_modal(trigger_id, &it.id, &meta, required);
            if let Err(e) = api.open_view(&token, &body).await {
                tracing::warn!(id = %it.id, error = %e, "slack: deny form not opened");
                return Err(Fault::Internal(format!(
                    "the deny form could not be opened ({e}); deny with `airlock deny {}`",
                    it.id
                ))
                .into());
            }
            return Ok(());
        }
        Action::Approve { for_ } => Decision::Approve { for_: *for_ },
        Action::Deny { reason } => Decision::Deny {
            always: false,
            reason: reason.clone(),
        },
    };
    // What a repeat must match to count as the same vote.
    let same = match &decision {
        Decision::Approve { for_ } => (Release::Allow, for_.map(|d| d.as_millis() as u64), None),
        Decision::Deny { reason, .. } => (Release::Deny, None, reason.clone()),
    };
    match broker
        .vote(principal, None, CHANNEL, &it.id, decision)
        .await
    {
        Ok(_) => Ok(()),
        Err(f) => {
            if matches!(
                &f,
                Fault::Store(StoreError::AlreadyVoted { .. } | StoreError::Closed { .. })
            ) && let Ok(Some(now)) = broker.store.request(&it.id).await
                && now.votes.iter().any(|v| {
                    v.principal == principal && (v.release, v.for_ms, v.reason.clone()) == same
                })
            {
                return Ok(());
            }
            Err(f.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_and_the_modal_parse_into_actions() {
        let click = json!({
            "type": "block_actions",
            "user": {"id": "U1"},
            "trigger_id": "t.1",
            "channel": {"id": "C1"},
            "message": {"ts": "1.2"},
            "actions": [{"action_id": blocks::APPROVE_15M, "value": "01J"}],
        });
        let it = parse(&click).unwrap().unwrap();
        assert_eq!(
            it.action,
            Action::Approve {
                for_: Some(APPROVE_FOR)
            }
        );
        assert_eq!(
            (it.id.as_str(), it.channel.as_deref(), it.ts.as_deref()),
            ("01J", Some("C1"), Some("1.2"))
        );
        let submit = json!({
            "type": "view_submission",
            "user": {"id": "U1"},
            "view": {
                "callback_id": blocks::DENY_MODAL,
                "private_metadata": modal_metadata("01J", Some("C1"), Some("1.2")),
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": " no "}}}},
            },
        });
        let it = parse(&submit).unwrap().unwrap();
        assert_eq!(
            it.action,
            Action::Deny {
                reason: Some("no".into())
            }
        );
        // Someone else's button, and a payload without a user.
        let other =
            json!({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "x"}]});
        assert_eq!(parse(&other).unwrap(), None);
        assert!(matches!(
            parse(&json!({"type": "block_actions"})),
            Err(InteractError::Malformed("user.id"))
        ));
    }
}
