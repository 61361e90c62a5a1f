//! The server config as the rest of the server uses it: checked, defaults filled in.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use airlock_approval::Op;
/// Match globs are the policy crate's: as written, with a matcher where `*` and `?` do not
/// cross `/` and `**` does, as in policy selectors.
pub use airlock_policy::Glob;

/// The parsed `server.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Address the gRPC (TLS) listener binds, `IP:PORT`; `None` leaves it to the command line
    /// (`serve` has its own default).
    pub listen: Option<String>,
    /// Address the HTTP listener binds (channel callbacks), `IP:PORT`; `None`: no HTTP
    /// listener.
    pub http_listen: Option<String>,
    /// Address the metrics listener binds (`GET /metrics`, Prometheus), `IP:PORT`; `None`:
    /// none. Read at start (`serve --metrics-listen` overrides it).
    pub metrics_listen: Option<String>,
    /// Database URL (`postgres://…` for replicas, `sqlite://PATH`); `None` means the SQLite
    /// file `airlock.db` in the server's directory.
    pub database: Option<String>,
    /// Whether linked hosts may still take decisions on their own local socket
    /// ("break-glass", recorded as `via: cli-break-glass`). Default true.
    pub break_glass: bool,
    /// The people who may vote, by principal name (the name API tokens are issued to).
    pub principals: BTreeMap<String, Principal>,
    /// Routes in file order; the first whose match fits a request decides who may vote on it.
    pub routes: Vec<Route>,
    /// The generic webhook channel (`webhook:`), for routes that name `webhook`.
    pub webhook: Option<Webhook>,
    /// The web page (`web:`), served on the HTTP listener; other channels link to it.
    pub web: Option<Web>,
    /// The Slack channel (`slack:`), for routes that name `slack` (see `crate::slack`).
    pub slack: Option<Slack>,
    /// The Microsoft Teams channel (`teams:`), for routes that name `teams`.
    pub teams: Option<Teams>,
    /// The audit collector (`audit:`).
    pub audit: Audit,
    /// Warnings that do not stop the server (`file:line:col: message`), e.g. no catch-all
    /// route. `config check` and `serve` print them.
    pub notes: Vec<String>,
}

/// `audit: { retention }`: how long the collector keeps hosts' audit records.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Audit {
    /// Records (and alerts) stored longer ago than this are deleted by the hourly prune;
    /// each host's chain goes on from the last deleted record. `None` (default): kept forever.
    pub retention: Option<Duration>,
}

/// `webhook: { url, secret_file }`: where the webhook channel POSTs, and the file holding the
/// shared secret its signatures use (read at start and on reload; see `crate::webhook`).
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    /// `http://…` or `https://…`.
    pub url: String,
    /// Relative paths are relative to the server's directory.
    pub secret_file: std::path::PathBuf,
}

/// `teams: { webhook_url_file }`: the file holding the URL of a Teams Workflows webhook ("When a
/// Teams webhook request is received"), read at start, on reload and at each message (see
/// `crate::teams`). The URL is kept in a file because it is the credential: whoever has it
/// posts to the channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Teams {
    /// Relative paths are relative to the server's directory.
    pub webhook_url_file: std::path::PathBuf,
}

/// `slack:`: the Slack app that announces requests and takes decisions (see `crate::slack`).
#[derive(Clone, Debug, PartialEq)]
pub struct Slack {
    /// How Slack delivers clicks: Socket Mode (default) or HTTP interactivity.
    pub mode: SlackMode,
    /// File holding the bot token (`xoxb-…`) for the Web API; relative paths are relative to
    /// the server's directory.
    pub bot_token_file: std::path::PathBuf,
    /// File holding the app-level token (`xapp-…`, scope `connections:write`); Socket Mode.
    pub app_token_file: Option<std::path::PathBuf>,
    /// File holding the app's signing secret; HTTP mode.
    pub signing_secret_file: Option<std::path::PathBuf>,
    /// The conversation requests are posted to (`C…`, `G…`).
    pub channel: String,
    /// The Web API's base URL, without a trailing slash. Default `https://slack.com/api`.
    pub api_url: String,
    /// Slack user id (`U…`, `W…`) → principal: who a click is from.
    pub users: BTreeMap<String, String>,
}

/// `slack.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlackMode {
    /// Socket Mode: the server opens a WebSocket to Slack (outbound only).
    Socket,
    /// Slack POSTs clicks to `/v1/slack/interactivity` on the HTTP listener.
    Http,
}

/// `web:`: the approval page airlock-server serves on its HTTP listener (see `crate::web`).
#[derive(Clone, Debug, PartialEq)]
pub struct Web {
    /// The page's address as approvers' browsers reach it (`https://airlock.example.com`),
    /// without a trailing slash: links in Slack and Teams messages, the OIDC redirect, the
    /// origin forms must come from. An `https://` address makes the session cookie `Secure`.
    pub public_url: String,
    /// How long a sign-in lasts. Default 8h.
    pub session: Duration,
    /// Sign-in with OpenID Connect; without it, approvers sign in with an API token.
    pub oidc: Option<Oidc>,
}

impl Web {
    /// The page of request `id`, for links in other channels' messages.
    pub fn request_url(&self, id: &str) -> String {
        format!("{}/requests/{id}", self.public_url)
    }
}

/// `web.oidc:`: an OpenID Connect provider (authorization code flow with PKCE).
#[derive(Clone, Debug, PartialEq)]
pub struct Oidc {
    /// The issuer URL; its `/.well-known/openid-configuration` is read at sign-in.
    pub issuer: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// File holding the client secret (relative to the server's directory); `None` for a
    /// public client (PKCE alone).
    pub client_secret_file: Option<std::path::PathBuf>,
    /// The ID token claim naming the principal. Default `email`.
    pub principal_claim: String,
    /// The ID token claim listing the user's groups at the provider. Default `groups`.
    pub groups_claim: String,
    /// Provider group → airlock approver group. A signed-in user's groups are their
    /// principal's groups in this config plus the mapped ones.
    pub groups: BTreeMap<String, String>,
}

/// One person (or service identity) who may vote.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Principal {
    /// Groups this principal belongs to; routes name groups, never principals, so that
    /// staffing changes touch only this list.
    pub groups: Vec<String>,
    /// Host user names that are this person, so that the server can refuse a vote by the
    /// person who launched the agent (see `route::check_vote`).
    pub host_users: Vec<HostUser>,
}

/// A `host_users` entry: `user` (on any host) or `user@host-glob`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostUser {
    /// The user name on the host, compared with the launcher's user and `SUDO_USER`.
    pub user: String,
    /// Host names this entry is limited to; `None` for every host.
    pub hosts: Option<Glob>,
}

impl HostUser {
    /// Whether `user` on `host` is this entry.
    pub fn matches(&self, user: &str, host: &str) -> bool {
        self.user == user && self.hosts.as_ref().is_none_or(|g| g.is_match(host))
    }
}

impl fmt::Display for HostUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hosts {
            None => write!(f, "{}", self.user),
            Some(g) => write!(f, "{}@{}", self.user, g.as_str()),
        }
    }
}

/// Who may decide one class of requests, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Unique name; stored with each request it routed.
    pub name: String,
    /// Which requests this route is for (`match:` in the file).
    pub matching: Match,
    /// Groups whose members may vote from the start.
    pub approvers: Vec<String>,
    /// Distinct approvals needed (N of the M principals in `approvers`). Default 1; checked to
    /// be at least 1 and at most M.
    pub threshold: u32,
    /// Whether a deny must carry a reason (for the agent's operator and the audit trail).
    pub deny_requires_reason: bool,
    /// Remind the approvers this long before the request's deadline.
    pub reminder: Option<Duration>,
    /// Widens the approver set when nobody decided in time.
    pub escalation: Option<Escalation>,
    /// Channels that announce this route's requests. Default `[cli]`.
    pub channels: Vec<Channel>,
    /// Chat channels (Slack) only link to the web page for this route's requests: no buttons,
    /// and a decision sent through them is refused. Needs `web:`. Default false.
    pub web_only: bool,
}

/// `escalation: { after, to }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    /// Delay after the request opened.
    pub after: Duration,
    /// Groups whose members may vote (and are notified) once the delay has passed.
    pub to: Vec<String>,
}

/// A route's `match:`. Each criterion left out (empty here) matches every request; the given
/// ones must all match; within a list, any entry may match.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Match {
    /// Host name globs (the host's enrolled name, not what it reports).
    pub hosts: Vec<Glob>,
    /// Host labels (from enrolment) that must all be present with these values.
    pub labels: BTreeMap<String, String>,
    /// Agent name globs; a request without an agent name matches none.
    pub agents: Vec<Glob>,
    /// Policy rule name globs.
    pub rules: Vec<Glob>,
    /// Operations.
    pub operations: Vec<Op>,
    /// Target path globs (`*` stays within one path component, `**` crosses them).
    pub paths: Vec<Glob>,
    /// Binary globs, for exec requests only (the target, or the executable).
    pub binaries: Vec<Glob>,
}

impl Match {
    /// True when no criterion is given: the route takes every request.
    pub fn is_catch_all(&self) -> bool {
        let Match {
            hosts,
            labels,
            agents,
            rules,
            operations,
            paths,
            binaries,
        } = self;
        hosts.is_empty()
            && labels.is_empty()
            && agents.is_empty()
            && rules.is_empty()
            && operations.is_empty()
            && paths.is_empty()
            && binaries.is_empty()
    }
}

/// A notification channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `airlock-server` approvals API clients (`airlock pending`/`watch` against the server).
    Cli,
    /// The web UI.
    Web,
    /// Slack.
    Slack,
    /// Microsoft Teams.
    Teams,
    /// A generic HTTP webhook.
    Webhook,
}

impl Channel {
    /// Every channel, in the order the config documents them.
    pub const ALL: [Channel; 5] = [
        Channel::Cli,
        Channel::Web,
        Channel::Slack,
        Channel::Teams,
        Channel::Webhook,
    ];

    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Cli => "cli",
            Channel::Web => "web",
            Channel::Slack => "slack",
            Channel::Teams => "teams",
            Channel::Webhook => "webhook",
        }
    }

    /// Parses [`Channel::as_str`]'s spellings.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The config's operation names: [`Op`]'s snake_case serde names, as on the wire.
pub const OPERATIONS: [(&str, Op); 14] = [
    ("exec", Op::Exec),
    ("map_exec", Op::MapExec),
    ("open_write", Op::OpenWrite),
    ("create", Op::Create),
    ("unlink", Op::Unlink),
    ("rename", Op::Rename),
    ("truncate", Op::Truncate),
    ("link", Op::Link),
    ("chmod", Op::Chmod),
    ("chown", Op::Chown),
    ("mkdir", Op::Mkdir),
    ("rmdir", Op::Rmdir),
    ("symlink", Op::Symlink),
    ("setattr", Op::Setattr),
];
