//! The Microsoft Teams channel: for each request whose route names `teams`, an Adaptive Card
//! posted to a Teams Workflows webhook ("When a Teams webhook request is received") when it
//! opens, a reminder card when the route's `reminder` comes due, a card naming the groups it
//! escalated to, and a follow-up card with the outcome when its host reports it.
//!
//! Teams webhook cards cannot deliver clicks (`Action.Submit` is unsupported there and
//! `Action.Execute` needs a bot), and no message handle comes back, so cards are never updated
//! in place: each card's button is an `Action.OpenUrl` to the request on the server's web page
//! (`web:`, which the config requires next to a `teams` route), where the approver signs in and
//! decides. The outcome is a card of its own.
//!
//! The URL is the credential (whoever has it posts to the channel), so it is kept in the file
//! `teams.webhook_url_file`, checked at start, on reload and by `config check` ([`check`]),
//! read again at each card (a rotated URL is used at once; an unreadable file keeps the
//! previous URL and is recorded), and named by its origin only in logs and records. Posting and
//! retries are the webhook channel's ([`crate::outbound`]); like it, a card is posted by the
//! replica its host is linked to, so once per fleet.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_approval::{DecisionRecord, Release, RequestContext, RequestState};
use serde_json::{Value, json};

use crate::broker::{Broker, Change, utc};
use crate::config::{Channel, Web};
use crate::outbound;
use crate::store::StoredRequest;
use crate::wire::Body;

/// The channel name in records.
const CHANNEL: &str = "teams";
/// Longest text of one fact: a card is at most about 28 KB, and an argv of 256 arguments of
/// 4 KiB would not fit.
const MAX_FACT: usize = 300;

/// Errors of the Teams channel.
#[derive(Debug, thiserror::Error)]
pub enum TeamsError {
    /// The URL file cannot be read or is empty.
    #[error(transparent)]
    UrlFile(#[from] crate::secret_file::SecretFileError),
    /// The file holds something other than an http(s) URL (the URL itself is not shown: it is
    /// the credential).
    #[error("teams webhook URL file {path} does not hold an https:// (or http://) URL")]
    NotAUrl { path: PathBuf },
}

/// The Workflows URL in `file` (relative to `dir`), without surrounding whitespace.
pub fn read_url(dir: &Path, file: &Path) -> Result<String, TeamsError> {
    let url = crate::secret_file::read(dir, file, "teams webhook URL")?;
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        return Err(TeamsError::NotAUrl {
            path: dir.join(file),
        });
    }
    Ok(url)
}

/// Whether the URL file `cfg` names can be used (relative to `dir`): checked at start, on
/// reload (a config whose file is unusable does not replace the one in force) and by
/// `config check`.
pub fn check(cfg: &crate::config::ServerConfig, dir: &Path) -> Result<(), TeamsError> {
    match &cfg.teams {
        Some(t) => read_url(dir, &t.webhook_url_file).map(drop),
        None => Ok(()),
    }
}

/// Starts the channel for `broker` (the URL file relative to `dir`); it ends with the broker.
pub fn spawn(broker: &Arc<Broker>, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    let mut changes = broker.hub.subscribe();
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let client = match outbound::client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "teams channel: no HTTP client; cards are not sent");
                return;
            }
        };
        let mut url: Option<String> = None;
        while let Some(change) = outbound::next_change(&mut changes, CHANNEL).await {
            if matches!(change, Change::Voted(_)) {
                continue;
            }
            let Some(broker) = weak.upgrade() else { return };
            let cfg = broker.config();
            // The config refuses a `teams` route without both sections.
            let (Some(teams), Some(web)) = (&cfg.teams, &cfg.web) else {
                continue;
            };
            if !outbound::route_lists(&cfg, change.request(), Channel::Teams) {
                continue;
            }
            match read_url(&dir, &teams.webhook_url_file) {
                Ok(u) => url = Some(u),
                Err(e) => outbound::unusable_file(&broker, CHANNEL, &e).await,
            }
            let Some(url) = url.clone() else { continue };
            let Some((event, body)) = message(&change, web) else {
                continue;
            };
            let post = outbound::Post {
                channel: CHANNEL,
                client: client.clone(),
                url,
                id: change.request().id.clone(),
                event,
                body: body.to_string(),
                headers: None,
            };
            tokio::spawn(post.run(Arc::downgrade(&broker)));
        }
    })
}

/// The Workflows message for `change` (with its event name for logs and records), `None` for
/// a change Teams is not told about (votes: the page shows them).
pub fn message(change: &Change, web: &Web) -> Option<(&'static str, Value)> {
    let (event, card) = match change {
        Change::Opened(p) => ("opened", opened_card(&p.request, Some(&p.body), web)),
        Change::Reminder(r) => ("reminder", reminder_card(r, body_of(r).as_ref(), web)),
        Change::Escalated { request, to } => (
            "escalated",
            escalated_card(request, body_of(request).as_ref(), to, web),
        ),
        Change::Closed(r) => ("closed", closed_card(r, body_of(r).as_ref(), web)),
        Change::Voted(_) => return None,
    };
    Some((event, envelope(card)))
}

/// The stored body; `None` if unreadable (it was checked when stored: the card then shows
/// what the row has).
fn body_of(r: &StoredRequest) -> Option<Body> {
    crate::wire::body(r).ok()
}

/// A Workflows webhook message carrying one Adaptive Card.
fn envelope(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": card,
        }]
    })
}

/// An Adaptive Card 1.4: a title, optional lines, facts, and one button to the request's page.
fn card(
    title: String,
    lines: Vec<String>,
    facts: Vec<(&str, String)>,
    button: &str,
    url: String,
) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock",
        "size": "Medium",
        "weight": "Bolder",
        "text": title,
        "wrap": true,
    })];
    for l in lines {
        body.push(json!({ "type": "TextBlock", "text": l, "wrap": true }));
    }
    let facts: Vec<Value> = facts
        .into_iter()
        .map(|(t, v)| json!({ "title": t, "value": v }))
        .collect();
    body.push(json!({ "type": "FactSet", "facts": facts }));
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [{ "type": "Action.OpenUrl", "title": button, "url": url }],
    })
}

/// `exec /usr/bin/kubectl`: what is held, for titles.
fn what(r: &StoredRequest, b: Option<&Body>) -> String {
    match b {
        Some(b) => {
            let c = &b.context;
            let target = c.target_path.as_deref().unwrap_or("(no path)");
            text(&format!("{} {target}", op_name(c)))
        }
        None => format!("request {}", r.id),
    }
}

fn op_name(c: &RequestContext) -> String {
    serde_json::to_value(c.op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", c.op))
}

/// The request's context as facts: host, agent, launcher, operation, target, rule, argv,
/// cwd, deadline (UTC) and votes needed. Missing ones are left out.
fn facts(r: &StoredRequest, b: Option<&Body>) -> Vec<(&'static str, String)> {
    let mut f = vec![("Host", text(&r.host))];
    let Some(b) = b else {
        f.push(("Deadline", utc(r.deadline_unix_ms)));
        return f;
    };
    let c = &b.context;
    let opt = |v: &Option<String>| v.as_deref().map(text);
    if let Some(a) = opt(&c.agent) {
        f.push(("Agent", a));
    }
    if let Some(l) = &c.launched_by {
        let user = l.user.clone().unwrap_or_else(|| format!("uid {}", l.uid));
        let mut s = match &l.sudo_user {
            Some(su) => format!("{user} (sudo from {su})"),
            None => user,
        };
        if let Some(why) = &l.reason {
            s.push_str(&format!(": {why}"));
        }
        f.push(("Launched by", text(&s)));
    }
    if let Some(why) = opt(&c.reason) {
        f.push(("Agent's reason", why));
    }
    f.push(("Operation", op_name(c)));
    if let Some(t) = opt(&c.target_path) {
        f.push(("Target", t));
    }
    if let Some(rule) = &c.rule {
        let s = match &c.policy {
            Some(p) => format!("{rule} (policy {p})"),
            None => rule.clone(),
        };
        f.push(("Rule", text(&s)));
    }
    if !c.argv.is_empty() {
        let mut s = c.argv.join(" ");
        if c.argv_truncated {
            s.push_str(" …");
        }
        f.push(("Command", text(&s)));
    }
    if let Some(cwd) = opt(&c.cwd) {
        f.push(("Working directory", cwd));
    }
    f.push(("Deadline", utc(r.deadline_unix_ms)));
    f.push(("Votes needed", votes_needed(r)));
    f
}

/// `2 (1 so far)`.
fn votes_needed(r: &StoredRequest) -> String {
    let n = r.threshold.max(1);
    let mut approvers: Vec<&str> = r
        .votes
        .iter()
        .filter(|v| v.release == Release::Allow)
        .map(|v| v.principal.as_str())
        .collect();
    approvers.sort_unstable();
    approvers.dedup();
    if approvers.is_empty() {
        n.to_string()
    } else {
        format!("{n} ({} so far)", approvers.len())
    }
}

fn opened_card(r: &StoredRequest, b: Option<&Body>, web: &Web) -> Value {
    card(
        format!("Approval needed: {}", what(r, b)),
        Vec::new(),
        facts(r, b),
        "Open to approve",
        web.request_url(&r.id),
    )
}

fn reminder_card(r: &StoredRequest, b: Option<&Body>, web: &Web) -> Value {
    card(
        format!("Reminder: still waiting for approval: {}", what(r, b)),
        vec![format!(
            "Undecided; the deadline is {}.",
            utc(r.deadline_unix_ms)
        )],
        facts(r, b),
        "Open to approve",
        web.request_url(&r.id),
    )
}

fn escalated_card(r: &StoredRequest, b: Option<&Body>, to: &[String], web: &Web) -> Value {
    card(
        format!("Escalated to {}: {}", to.join(", "), what(r, b)),
        vec![format!(
            "Nobody decided in time; members of {} may decide it now.",
            to.join(", ")
        )],
        facts(r, b),
        "Open to approve",
        web.request_url(&r.id),
    )
}

fn closed_card(r: &StoredRequest, b: Option<&Body>, web: &Web) -> Value {
    let outcome = outcome(r, b);
    let mut f = vec![("Host", text(&r.host))];
    if let Some(a) = &r.agent {
        f.push(("Agent", text(a)));
    }
    f.push(("Outcome", outcome.clone()));
    card(
        format!("{}: {outcome}", what(r, b)),
        Vec::new(),
        f,
        "Open request",
        web.request_url(&r.id),
    )
}

/// `approved by alice`, `approved by alice for 15m`, `denied by bob: not now`, `timed out
/// (denied per the rule)`, `abandoned (every held process is gone)`.
fn outcome(r: &StoredRequest, b: Option<&Body>) -> String {
    let d = r.decision.as_ref();
    match r.state {
        RequestState::Approved => match d.and_then(|d| d.for_ms) {
            Some(ms) => format!("approved {} for {}", by(d), crate::route::human(ms)),
            None => format!("approved {}", by(d)),
        },
        RequestState::Denied => match d.and_then(|d| d.reason.as_deref()) {
            Some(why) => format!("denied {}: {}", by(d), text(why)),
            None => format!("denied {}", by(d)),
        },
        RequestState::TimedOut => match b.map(|b| b.on_timeout) {
            Some(airlock_approval::OnTimeout::Allow) => "timed out (allowed per the rule)".into(),
            Some(_) => "timed out (denied per the rule)".into(),
            None => "timed out".into(),
        },
        RequestState::Abandoned => "abandoned (every held process is gone)".into(),
        RequestState::Pending => "pending".into(),
    }
}

/// `by alice`, `by root on the host (break-glass)`.
fn by(d: Option<&DecisionRecord>) -> String {
    let Some(a) = d.and_then(|d| d.by.as_ref()) else {
        return "(by whom unknown)".into();
    };
    match (&a.principal, &a.user) {
        (Some(p), _) => format!("by {}", text(p)),
        (None, Some(u)) => format!("by {} on the host (via {})", text(u), text(&a.via)),
        (None, None) => format!("by uid {} on the host (via {})", a.uid, text(&a.via)),
    }
}

/// Host-supplied text made safe for a card: control characters (a newline could start a
/// Markdown block) become spaces, Markdown's inline markers are escaped so that an agent's
/// argv or path cannot make a link or emphasis in the card, and it is cut at [`MAX_FACT`].
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_FACT) + 8);
    for (n, ch) in s.chars().enumerate() {
        if n == MAX_FACT {
            out.push('…');
            break;
        }
        match ch {
            c if c.is_control() => out.push(' '),
            c if crate::text::is_hidden(c) => out.push('\u{FFFD}'),
            '\\' | '*' | '_' | '[' | ']' | '`' | '~' | '<' | '>' => {
                out.push('\\');
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_text_cannot_carry_markdown_links_or_new_lines() {
        assert_eq!(
            text("see [docs](https://evil.example)\nrm -rf *"),
            "see \\[docs\\](https://evil.example) rm -rf \\*"
        );
        let long = "a".repeat(MAX_FACT + 5);
        assert_eq!(text(&long).chars().count(), MAX_FACT + 1);
    }

    #[test]
    fn a_bad_url_file_is_refused_without_showing_its_content() {
        let dir = crate::testing::TempDir::new("airlock-teams-url").unwrap();
        let p = dir.path();
        std::fs::write(p.join("ok"), "https://example.com/workflows/x?sig=S\n").unwrap();
        assert_eq!(
            read_url(p, Path::new("ok")).unwrap(),
            "https://example.com/workflows/x?sig=S"
        );
        std::fs::write(p.join("empty"), " \n").unwrap();
        assert!(matches!(
            read_url(p, Path::new("empty")),
            Err(TeamsError::UrlFile(
                crate::secret_file::SecretFileError::Empty { .. }
            ))
        ));
        std::fs::write(p.join("bad"), "sig=SECRET").unwrap();
        let e = read_url(p, Path::new("bad")).unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(matches!(
            read_url(p, Path::new("missing")),
            Err(TeamsError::UrlFile(
                crate::secret_file::SecretFileError::Read { .. }
            ))
        ));
    }
}
