//! What can be wrong in a server config beyond what the policy crate's walker and value rules
//! report ([`WalkError`](airlock_policy::WalkError): types, keys, lists;
//! [`ValueError`](airlock_policy::ValueError): names, globs, durations), one variant per
//! distinct failure. Each is reported as a policy-crate [`Diagnostic`](airlock_policy::Diagnostic)
//! (`file:line:col: field: message`) through [`Problem::Other`].
use airlock_policy::Problem;
use airlock_policy::walk::{did_you_mean, did_you_mean_or_list};

/// One problem in `server.yaml`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigProblem {
    /// Comments only: most likely a truncated or wrong file; `init` writes a full one.
    #[error("holds no configuration (airlock-server init writes a commented one)")]
    NoDocument,
    /// A second `---` document: which one is in force would be a guess.
    #[error("a second YAML document; the config is one document")]
    ManyDocuments,
    /// Two routes with one name (requests record their route by name).
    #[error("duplicate route name {name:?} (first at line {first_line})")]
    DuplicateRoute { name: String, first_line: usize },
    /// A group no principal belongs to: the route could never collect a vote from it.
    #[error("unknown group {group:?}: no principal is in it{}", did_you_mean(.suggestion.as_deref()))]
    UnknownGroup {
        group: String,
        suggestion: Option<String>,
    },
    /// `threshold` is not a whole number.
    #[error("invalid threshold {found:?} (expected a whole number, at least 1)")]
    BadThreshold { found: String },
    /// `threshold: 0` would decide without any vote.
    #[error("threshold must be at least 1")]
    ThresholdZero,
    /// More approvals than there are approvers: the route could never approve.
    #[error(
        "threshold {threshold} exceeds the {members} principal(s) in the approver groups ({groups})"
    )]
    ThresholdTooHigh {
        threshold: u32,
        members: usize,
        groups: String,
    },
    /// Not an [`Op`](airlock_approval::Op) name.
    #[error(
        "unknown operation {found:?} ({})",
        did_you_mean_or_list(*.suggestion, &super::parse::OP_NAMES)
    )]
    UnknownOperation {
        found: String,
        suggestion: Option<&'static str>,
    },
    /// Not a [`Channel`](super::Channel) name.
    #[error(
        "unknown channel {found:?} ({})",
        did_you_mean_or_list(*.suggestion, &super::parse::CHANNEL_NAMES)
    )]
    UnknownChannel {
        found: String,
        suggestion: Option<&'static str>,
    },
    /// `listen` is not `IP:PORT`.
    #[error(
        "invalid listen address {found:?} (expected IP:PORT, e.g. 127.0.0.1:7443 or [::]:7443)"
    )]
    BadListen { found: String },
    /// A webhook URL that is not http:// or https://.
    #[error("webhook URL {found:?}: expected http://… or https://…")]
    BadWebhookUrl { found: String },
    /// A route whose messages send approvers to the web page but does not list `web`.
    #[error("{via} sends approvers to the web page to decide: add web to this route's channels")]
    PageNotOnRoute { via: &'static str },
    /// `web:` without `http_listen`, which serves the page.
    #[error("the web page is served on the HTTP listener: set http_listen too")]
    WebNeedsHttpListen,
    /// A page or issuer address that is not an http(s) URL without query or credentials.
    #[error(
        "{found:?}: expected http://HOST[:PORT][/PATH] or https://… (no query, fragment or credentials)"
    )]
    BadPageUrl { found: String },
    /// A sign-in lifetime under a minute.
    #[error("sessions last at least 1m")]
    SessionTooShort,
    /// A channel a route names that needs a section the config does not have.
    #[error("channel {channel} needs a top-level `{section}:` section")]
    ChannelNotConfigured {
        channel: &'static str,
        section: &'static str,
    },
    /// A database URL the store cannot open.
    #[error("unsupported database URL (expected postgres://… or sqlite://PATH)")]
    BadDatabase,
    /// A `host_users` entry that is not `user` or `user@host-glob`.
    #[error("invalid host user {entry:?}: {reason}")]
    BadHostUser { entry: String, reason: &'static str },
}

impl From<ConfigProblem> for Problem {
    fn from(p: ConfigProblem) -> Problem {
        Problem::Other(Box::new(p))
    }
}
