//! A policy as written: what the schema check produces from one YAML document, before anything
//! on the host is looked at. Every part keeps its [`Location`] so later checks can point at it.
use std::path::PathBuf;

use airlock_common::{action, op};

use crate::compiled::{Approval, Mode, Selector};
use crate::diag::Location;

/// The only `apiVersion` understood.
pub const API_VERSION: &str = "airlock.dev/v1";
/// The only `kind` understood.
pub const KIND: &str = "Policy";

/// One policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `metadata.name`; unique among the policies loaded together.
    pub name: String,
    /// `metadata.description`.
    pub description: Option<String>,
    /// `mode`.
    pub mode: Mode,
    /// `agents`, in file order.
    pub agents: Vec<AgentSpec>,
    /// `rules`, in file order (their rule ids follow this order).
    pub rules: Vec<Rule>,
    /// Where the document starts.
    pub location: Location,
    /// Where `metadata.name` is (duplicate policy names are reported there).
    pub name_location: Location,
}

/// An agent declaration: a name and the explicit selectors written for it. The implicit
/// `airlock run` selector is added at compile time, not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// Unique among all policies loaded together.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// `cgroup(s)` then `systemdUnit(s)`, in file order within each.
    pub selectors: Vec<Selector>,
    /// Where the agent's `name` is.
    pub location: Location,
}

/// A rule as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique within its policy.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// One of `airlock_common::action`.
    pub action: u32,
    /// `exec`, `paths` or `connect`.
    pub target: Target,
    /// Mask of `op::bit`s: `op::bit(op::EXEC)` for exec rules, the listed operations (default
    /// [`op::ALL_WRITES`]) for path rules.
    pub ops: u32,
    /// Agents the rule is restricted to (empty: every agent), each with where it was named.
    pub agents: Vec<(String, Location)>,
    /// For `approve` rules only.
    pub approval: Option<Approval>,
    /// Where the rule's mapping starts.
    pub location: Location,
}

/// What a rule gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Executing these binaries.
    Exec(Vec<PathSpec>),
    /// Modifying these trees or files.
    Paths(Vec<PathSpec>),
    /// Connecting to these local service sockets (delegation: the service acts for the agent).
    Connect(Vec<PathSpec>),
    /// These privilege changes ([`PRIVILEGES`]; the rule's `ops` say which).
    Privilege,
}

impl Target {
    /// The paths, whichever kind.
    pub fn paths(&self) -> &[PathSpec] {
        match self {
            Target::Exec(p) | Target::Paths(p) | Target::Connect(p) => p,
            Target::Privilege => &[],
        }
    }
}

/// An absolute path from a policy, normalized (no trailing `/`), and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSpec {
    /// Absolute, without `.`, `..`, `//` or a trailing `/` (except `/` itself).
    pub path: PathBuf,
    /// Where it was written.
    pub location: Location,
}

/// Policy spelling of each `airlock_common::action`, in the order messages list them.
pub const ACTIONS: [(&str, u32); 4] = [
    ("allow", action::ALLOW),
    ("audit", action::AUDIT),
    ("deny", action::DENY),
    ("approve", action::APPROVE),
];

/// Policy spelling of each path operation and its `airlock_common::op`.
pub const OPERATIONS: [(&str, u32); 14] = [
    ("write", op::OPEN_WRITE),
    ("create", op::CREATE),
    ("unlink", op::UNLINK),
    ("rename", op::RENAME),
    ("truncate", op::TRUNCATE),
    ("link", op::LINK),
    ("chmod", op::CHMOD),
    ("chown", op::CHOWN),
    ("mkdir", op::MKDIR),
    ("rmdir", op::RMDIR),
    ("symlink", op::SYMLINK),
    ("xattr", op::XATTR),
    ("setattr", op::SETATTR),
    ("mount", op::MOUNT),
];

/// Policy spelling of each privilege change a `privilege` rule can name.
pub const PRIVILEGES: [(&str, u32); 4] = [
    ("setuid", op::SETUID),
    ("setgid", op::SETGID),
    ("userns", op::USERNS),
    ("caps", op::CAPS),
];

/// The policy spelling of an `airlock_common::action` value (`"?"` for an unknown value).
pub fn action_name(action: u32) -> &'static str {
    ACTIONS
        .iter()
        .find(|(_, a)| *a == action)
        .map_or("?", |(n, _)| n)
}

/// The policy spellings of the operations in an ops mask, in [`OPERATIONS`] order; `exec` for
/// the exec bit.
pub fn op_names(ops: u32) -> Vec<&'static str> {
    let mut names = Vec::new();
    if ops & op::bit(op::EXEC) != 0 {
        names.push("exec");
    }
    if ops & op::bit(op::CONNECT) != 0 {
        names.push("connect");
    }
    names.extend(
        PRIVILEGES
            .iter()
            .filter(|(_, o)| ops & op::bit(*o) != 0)
            .map(|(n, _)| *n),
    );
    names.extend(
        OPERATIONS
            .iter()
            .filter(|(_, o)| ops & op::bit(*o) != 0)
            .map(|(n, _)| *n),
    );
    names
}

/// The policy spelling of a [`Mode`].
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Monitor => "monitor",
    }
}
