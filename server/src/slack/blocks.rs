//! The Slack messages, as Block Kit JSON: the request (context fields and buttons, or a link
//! to the web page), its outcome, thread replies, ephemeral refusals and the deny modal.
//!
//! Everything a host or agent wrote (argv, paths, reasons) is escaped for Slack's mrkdwn
//! (`&`, `<`, `>`), so an agent cannot make the message mention `@channel` or link
//! somewhere, and cut to fit Slack's limits.
use airlock_approval::{Release, RequestState, Vote};
use serde_json::{Value, json};

use crate::broker::utc;
use crate::config::{OPERATIONS, Route};
use crate::store::StoredRequest;
use crate::wire::Body;

/// `action_id`s of the buttons, and the modal's `callback_id` / input ids.
pub const APPROVE: &str = "airlock_approve";
pub const APPROVE_15M: &str = "airlock_approve_15m";
pub const DENY: &str = "airlock_deny";
pub const DENY_MODAL: &str = "airlock_deny_reason";
pub const REASON_BLOCK: &str = "reason";
pub const REASON_INPUT: &str = "reason";
/// The `block_id` of the buttons.
pub const ACTIONS_BLOCK: &str = "airlock_decide";

/// Slack's limits: a section field 2000 characters, a section text 3000, a header 150.
const FIELD_MAX: usize = 1900;
const TEXT_MAX: usize = 2900;
const HEADER_MAX: usize = 150;

/// `s` escaped for mrkdwn, after [`crate::text::shown`] (no line breaks or invisible
/// characters from the host: a value cannot fake another field).
pub fn escape(s: &str) -> String {
    crate::text::shown(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `s` cut to at most `max` characters (with an ellipsis when cut).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Host text for a mrkdwn field: escaped, then cut.
fn text(s: &str, max: usize) -> String {
    cut(&escape(s), max)
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", text(value, FIELD_MAX))})
}

/// The operation's config name (`exec`, `open_write`).
fn op_name(b: &Body) -> &'static str {
    OPERATIONS
        .iter()
        .find(|(_, op)| *op == b.context.op)
        .map_or("?", |(name, _)| name)
}

/// `15m`, `2h`, `1d`, `90s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A date each reader sees in their own time zone.
pub fn date(unix_ms: u64) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        unix_ms / 1000,
        utc(unix_ms)
    )
}

/// Who launched the agent: `dave (sudo from erin)`.
fn launcher(b: &Body) -> String {
    let Some(l) = &b.context.launched_by else {
        return "unknown".into();
    };
    let user = l.user.clone().unwrap_or_else(|| format!("uid {}", l.uid));
    match &l.sudo_user {
        Some(s) => format!("{user} (sudo from {s})"),
        None => user,
    }
}

/// The blocks describing the request (what every version of the message shows).
fn context_blocks(r: &StoredRequest, b: &Body, route: Option<&Route>) -> Vec<Value> {
    let c = &b.context;
    let target = c.target_path.clone().unwrap_or_else(|| "?".into());
    let header = cut(&format!("{} {}", op_name(b), target), HEADER_MAX);
    let approvals = match r
        .votes
        .iter()
        .filter(|v| v.release == Release::Allow)
        .count()
    {
        0 => r.threshold.max(1).to_string(),
        n => format!("{} ({n} so far)", r.threshold.max(1)),
    };
    let rule = match (&c.rule, &c.policy) {
        (Some(r), Some(p)) => format!("{r} (policy {p})"),
        (Some(r), None) => r.clone(),
        _ => "?".into(),
    };
    let fields = vec![
        field("Host", &r.host),
        field("Agent", c.agent.as_deref().unwrap_or("?")),
        field("Launched by", &launcher(b)),
        field("Operation", op_name(b)),
        field("Target", &target),
        field("Rule", &rule),
        field("Working directory", c.cwd.as_deref().unwrap_or("?")),
        json!({"type": "mrkdwn", "text": format!("*Deadline*\n{}", date(r.deadline_unix_ms))}),
        field("Approvals needed", &approvals),
    ];
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header}}),
        json!({"type": "section", "fields": fields}),
    ];
    if !c.argv.is_empty() {
        let mut argv = c.argv.join(" ");
        if c.argv_truncated {
            argv.push_str(" …");
        }
        // In a code span, mrkdwn is not interpreted, but `<` still is: escape anyway.
        let shown = argv.replace('`', "'");
        let argv = text(&shown, TEXT_MAX - 20);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Command*\n```{argv}```")}}));
        // A command longer than a message holds could hide its dangerous end: say so, next
        // to the buttons.
        if c.argv_truncated || shown.chars().count() > TEXT_MAX - 20 {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(":warning: the command is longer than shown here: read it whole with `airlock show {}` or on the web page before approving", r.id)}]}));
        }
    }
    let why = c
        .reason
        .as_deref()
        .or_else(|| c.launched_by.as_ref().and_then(|l| l.reason.as_deref()));
    if let Some(why) = why {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Agent's reason*\n{}", text(why, TEXT_MAX))}}));
    }
    let route = route.map_or_else(|| "-".to_string(), |rt| rt.name.clone());
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Request `{}` · route {} · airlock", r.id, escape(&route))}]}));
    blocks
}

/// One-line summary (notifications and clients without blocks).
fn summary(r: &StoredRequest, b: &Body) -> String {
    let target = b.context.target_path.as_deref().unwrap_or("?");
    text(
        &format!(
            "airlock: {} wants {} {} on {}",
            b.context.agent.as_deref().unwrap_or("an agent"),
            op_name(b),
            target,
            r.host
        ),
        HEADER_MAX * 2,
    )
}

/// chat.postMessage for a request that opened: its context and the buttons, or (`web_link`:
/// a `web_only` route) a link to its web page instead of buttons.
pub fn request_message(
    channel: &str,
    r: &StoredRequest,
    b: &Body,
    route: Option<&Route>,
    web_link: Option<&str>,
) -> Value {
    let mut blocks = context_blocks(r, b, route);
    match web_link {
        Some(url) => blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("Decide on the web page: <{url}|open request {}>", r.id)}
        })),
        None => {
            let button = |id: &str, label: &str, style: Option<&str>| {
                let mut v = json!({
                    "type": "button",
                    "action_id": id,
                    "text": {"type": "plain_text", "text": label},
                    "value": r.id,
                });
                if let Some(s) = style {
                    v["style"] = json!(s);
                }
                v
            };
            blocks.push(json!({
                "type": "actions",
                "block_id": ACTIONS_BLOCK,
                "elements": [
                    button(APPROVE, "Approve", Some("primary")),
                    button(APPROVE_15M, "Approve 15m", None),
                    button(DENY, "Deny", Some("danger")),
                ],
            }));
        }
    }
    json!({
        "channel": channel,
        "text": summary(r, b),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// Who decided, from the decision record: the principal, else the host user (break-glass).
fn decider(r: &StoredRequest) -> String {
    let by = r.decision.as_ref().and_then(|d| d.by.as_ref());
    match by {
        Some(a) => match (&a.principal, &a.user) {
            (Some(p), _) => p.clone(),
            (None, Some(u)) if a.via == "cli-break-glass" => {
                format!("{u} (break-glass on the host)")
            }
            (None, Some(u)) => format!("{u} (on the host)"),
            (None, None) => format!("uid {} (on the host)", a.uid),
        },
        None => "someone".into(),
    }
}

/// How the request ended, one line of mrkdwn.
pub fn outcome(r: &StoredRequest, b: &Body) -> String {
    let d = r.decision.as_ref();
    match r.state {
        RequestState::Approved => match d.and_then(|d| d.for_ms) {
            Some(ms) => format!(
                ":white_check_mark: *Approved for {}* by {}",
                duration(ms),
                escape(&decider(r))
            ),
            None => format!(":white_check_mark: *Approved* by {}", escape(&decider(r))),
        },
        RequestState::Denied => match d.and_then(|d| d.reason.as_deref()) {
            Some(why) => format!(
                ":no_entry: *Denied* by {}: {}",
                escape(&decider(r)),
                text(why, TEXT_MAX / 2)
            ),
            None => format!(":no_entry: *Denied* by {}", escape(&decider(r))),
        },
        RequestState::TimedOut => {
            let then = match b.on_timeout {
                airlock_approval::OnTimeout::Allow => "allowed",
                _ => "denied",
            };
            format!(":hourglass: *Timed out*: nobody decided in time; the host {then} it")
        }
        RequestState::Abandoned => ":ghost: *Abandoned*: the held process went away".into(),
        RequestState::Pending => ":hourglass_flowing_sand: pending".into(),
    }
}

/// chat.update for a closed request: the context, the outcome, no buttons.
pub fn closed_message(
    channel: &str,
    ts: &str,
    r: &StoredRequest,
    b: &Body,
    route: Option<&Route>,
) -> Value {
    let mut blocks = context_blocks(r, b, route);
    let line = outcome(r, b);
    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": line}}));
    json!({
        "channel": channel,
        "ts": ts,
        "text": format!("{} — {}", summary(r, b), r.state.as_str()),
        "blocks": blocks,
    })
}

/// A thread reply under the request's message.
pub fn reply(channel: &str, ts: &str, mrkdwn: &str) -> Value {
    json!({
        "channel": channel,
        "thread_ts": ts,
        "text": mrkdwn,
        "unfurl_links": false,
    })
}

/// What a vote says in the thread.
pub fn vote_line(v: &Vote, r: &StoredRequest) -> String {
    let who = escape(&v.principal);
    let via = escape(&v.via);
    match v.release {
        Release::Allow => {
            let n = r
                .votes
                .iter()
                .filter(|v| v.release == Release::Allow)
                .count();
            let how = match v.for_ms {
                Some(ms) => format!("approved for {}", duration(ms)),
                None => "approved".into(),
            };
            format!(
                "{who} {how} (via {via}; {n} of {} approvals)",
                r.threshold.max(1)
            )
        }
        Release::Deny => match v.reason.as_deref() {
            Some(why) => format!("{who} denied (via {via}): {}", text(why, TEXT_MAX / 2)),
            None => format!("{who} denied (via {via})"),
        },
    }
}

/// chat.postEphemeral: `text` shown to `user` only.
pub fn ephemeral(channel: &str, user: &str, thread_ts: Option<&str>, msg: &str) -> Value {
    let mut v = json!({"channel": channel, "user": user, "text": text(msg, TEXT_MAX)});
    if let Some(ts) = thread_ts {
        v["thread_ts"] = json!(ts);
    }
    v
}

/// views.open: the modal asking for the reason of a deny. `metadata` comes back with the
/// submission (the request id and where to answer).
pub fn deny_modal(trigger_id: &str, id: &str, metadata: &str, required: bool) -> Value {
    json!({
        "trigger_id": trigger_id,
        "view": {
            "type": "modal",
            "callback_id": DENY_MODAL,
            "private_metadata": metadata,
            "title": {"type": "plain_text", "text": "Deny request"},
            "submit": {"type": "plain_text", "text": "Deny"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("Deny request `{id}`. The agent's operator sees the reason.")}},
                {
                    "type": "input",
                    "block_id": REASON_BLOCK,
                    "optional": !required,
                    "label": {"type": "plain_text", "text": "Reason"},
                    "element": {
                        "type": "plain_text_input",
                        "action_id": REASON_INPUT,
                        "multiline": true,
                        "max_length": 500,
                    },
                },
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_text_cannot_mention_or_link() {
        assert_eq!(
            escape("<!channel> & <http://x|y>"),
            "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"
        );
    }

    #[test]
    fn durations_and_dates_read_as_people_write_them() {
        assert_eq!(duration(900_000), "15m");
        assert_eq!(duration(7_200_000), "2h");
        assert_eq!(duration(86_400_000), "1d");
        assert_eq!(duration(90_000), "90s");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_531_420_618_000), "2018-07-12 18:36:58 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn long_host_text_is_cut_to_slacks_limits() {
        let long = "x".repeat(5000);
        assert_eq!(cut(&long, 10).chars().count(), 10);
        assert!(cut(&long, 10).ends_with('…'));
        assert_eq!(cut("short", 10), "short");
    }
}
