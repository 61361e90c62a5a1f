//! The `slack:` section (the Slack app: tokens, mode, conversation, user mapping) and the
//! route rule that goes with it (`web_only` needs `web:`).
use std::collections::BTreeMap;
use std::path::PathBuf;

use airlock_policy::Problem;
use airlock_policy::walk::closest;
use airlock_policy::yaml::{Kind, Node};

use super::model::{ServerConfig, Slack, SlackMode};
use super::parse::Reader;

const SLACK_KEYS: &[&str] = &[
    "mode",
    "bot_token_file",
    "app_token_file",
    "signing_secret_file",
    "channel",
    "api_url",
    "users",
];

/// The Web API's address unless `api_url` says otherwise.
pub(crate) const DEFAULT_API_URL: &str = "https://slack.com/api";

/// What can be wrong in `slack:` (and in a route's `web_only`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlackProblem {
    /// `mode` is neither `socket` nor `http`.
    #[error("unknown Slack mode {found:?} (expected socket or http)")]
    BadMode { found: String },
    /// Socket Mode needs the app-level token.
    #[error(
        "Socket Mode (the default mode) needs app_token_file (an xapp- token with connections:write)"
    )]
    NeedsAppToken,
    /// HTTP mode needs the signing secret to check Slack's requests.
    #[error("mode http needs signing_secret_file (the app's signing secret)")]
    NeedsSigningSecret,
    /// HTTP mode takes clicks on the HTTP listener.
    #[error("mode http takes Slack's requests on the HTTP listener: set http_listen too")]
    NeedsHttpListen,
    /// Not a conversation id.
    #[error("channel {found:?}: expected a Slack conversation id such as C0123ABCD (not a #name)")]
    BadChannel { found: String },
    /// Not a user id.
    #[error("{found:?}: expected a Slack user id such as U0123ABCD")]
    BadUser { found: String },
    /// A user mapped to a principal the config does not have.
    #[error("unknown principal {principal:?}{}", airlock_policy::walk::did_you_mean(.suggestion.as_deref()))]
    UnknownPrincipal {
        principal: String,
        suggestion: Option<String>,
    },
    /// `api_url` is not an http(s) URL.
    #[error("api_url {found:?}: expected https://… (or http://… for a local test double)")]
    BadApiUrl { found: String },
    /// A route that links chat channels to the web page without a web page.
    #[error("web_only links Slack messages to the web page: add a top-level `web:` section")]
    WebOnlyNeedsWeb,
}

impl From<SlackProblem> for Problem {
    fn from(p: SlackProblem) -> Problem {
        Problem::Other(Box::new(p))
    }
}

/// Slack ids: an upper-case letter from `first`, then upper-case letters and digits.
fn slack_id(s: &str, first: &[char]) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| first.contains(&f))
        && s.len() >= 3
        && s.len() <= 32
        && c.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl Reader<'_> {
    /// `slack:`; `cfg` holds the principals and `http_listen` read before it.
    pub(super) fn slack(&mut self, node: &Node, cfg: &ServerConfig) -> Option<Slack> {
        let field = "slack";
        let f = self.mapping(node, field, SLACK_KEYS)?;
        let mut ok = true;
        let mode = match f.get("mode").and_then(|n| self.string(n, "slack.mode")) {
            None => SlackMode::Socket,
            Some(t) => match t.text.as_str() {
                "socket" => SlackMode::Socket,
                "http" => SlackMode::Http,
                _ => {
                    self.err(t.pos, "slack.mode", SlackProblem::BadMode { found: t.text });
                    ok = false;
                    SlackMode::Socket
                }
            },
        };
        let bot = self.required_string(&f, field, "bot_token_file");
        let app = self.optional_string(&f, field, "app_token_file");
        let signing = self.optional_string(&f, field, "signing_secret_file");
        match mode {
            SlackMode::Socket if app.is_none() => {
                self.err(node.pos, field, SlackProblem::NeedsAppToken);
                ok = false;
            }
            SlackMode::Http if signing.is_none() => {
                self.err(node.pos, field, SlackProblem::NeedsSigningSecret);
                ok = false;
            }
            SlackMode::Http if cfg.http_listen.is_none() => {
                self.err(node.pos, field, SlackProblem::NeedsHttpListen);
                ok = false;
            }
            _ => {}
        }
        let channel = self.required_string(&f, field, "channel");
        let channel = channel.and_then(|t| {
            if slack_id(&t.text, &['C', 'G', 'D']) {
                Some(t.text)
            } else {
                self.err(
                    t.pos,
                    "slack.channel",
                    SlackProblem::BadChannel { found: t.text },
                );
                None
            }
        });
        let mut api_url = DEFAULT_API_URL.to_string();
        if let Some(t) = f
            .get("api_url")
            .and_then(|n| self.string(n, "slack.api_url"))
        {
            let rest = t
                .text
                .strip_prefix("https://")
                .or_else(|| t.text.strip_prefix("http://"));
            if rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
                && !t.text.contains(['?', '#', ' '])
            {
                api_url = t.text.trim_end_matches('/').to_string();
            } else {
                self.err(
                    t.pos,
                    "slack.api_url",
                    SlackProblem::BadApiUrl { found: t.text },
                );
                ok = false;
            }
        }
        let mut users = BTreeMap::new();
        if let Some(n) = f.get("users") {
            for (k, v) in self.entries(n, "slack.users").unwrap_or_default() {
                let vf = format!("slack.users.{}", k.text);
                if !slack_id(&k.text, &['U', 'W']) {
                    self.err(
                        k.pos,
                        "slack.users",
                        SlackProblem::BadUser { found: k.text },
                    );
                    ok = false;
                    continue;
                }
                let Some(p) = self.string(v, &vf) else {
                    ok = false;
                    continue;
                };
                if cfg.principals.contains_key(&p.text) {
                    users.insert(k.text, p.text);
                } else {
                    let e = SlackProblem::UnknownPrincipal {
                        suggestion: closest(&p.text, cfg.principals.keys().map(String::as_str))
                            .map(str::to_owned),
                        principal: p.text,
                    };
                    self.err(p.pos, &vf, e);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        Some(Slack {
            mode,
            bot_token_file: PathBuf::from(bot?.text),
            app_token_file: app.map(PathBuf::from),
            signing_secret_file: signing.map(PathBuf::from),
            channel: channel?,
            api_url,
            users,
        })
    }

    /// Reports each route with `web_only: true` that lists `slack` while the config has no
    /// `web:` (its messages would link nowhere), at its `web_only`.
    pub(super) fn web_only_needs_web(&mut self, routes: &Node) {
        let Kind::Seq(items) = &routes.kind else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let Kind::Map(entries) = &item.kind else {
                continue;
            };
            let value = |key: &str| {
                entries.iter().find_map(|(k, v)| {
                    matches!(&k.kind, Kind::Scalar { value, .. } if value == key).then_some(v)
                })
            };
            let web_only = value("web_only").filter(
                |v| matches!(&v.kind, Kind::Scalar { value, quoted: false, .. } if value == "true"),
            );
            let slack = value("channels").is_some_and(|v| match &v.kind {
                Kind::Seq(names) => names
                    .iter()
                    .any(|n| matches!(&n.kind, Kind::Scalar { value, .. } if value == "slack")),
                _ => false,
            });
            if let (Some(w), true) = (web_only, slack) {
                self.err(
                    w.pos,
                    &format!("routes[{i}].web_only"),
                    SlackProblem::WebOnlyNeedsWeb,
                );
            }
        }
    }
}
