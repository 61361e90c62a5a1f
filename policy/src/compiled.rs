//! The output of policy compilation: what backends load. Produced by [`crate::compile`],
//! consumed by the agent's backends (BPF maps, fanotify marks). Nothing here touches the kernel.
use std::path::PathBuf;
use std::time::Duration;

use airlock_common::{DirEntryKey, InodeKey, RuleRef};

/// `enforce` or `monitor`, per policy (explicit in every policy file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rules take effect.
    Enforce,
    /// `deny` and `approve` rules only record what they would have done.
    Monitor,
}

/// How an agent's cgroups are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Glob on the cgroup v2 path relative to the cgroup2 mount, with a leading `/`
    /// (`/airlock.slice/*`). `*` does not cross `/`; `**` does.
    Cgroup(String),
    /// Glob on a systemd unit name (`agent-*.service`, `run-*.scope`): matches a cgroup directory
    /// with that name anywhere in the hierarchy.
    SystemdUnit(String),
}

/// One named agent and how to find its cgroups. Compilation adds the `airlock run` selector
/// ([`run_scope_selector`]) to every agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentDef {
    /// Unique across all policies loaded together.
    pub name: String,
    /// Name of the policy that declared it.
    pub policy: String,
    /// Explicit selectors in policy order, then the `airlock run` one.
    pub selectors: Vec<Selector>,
}

/// What is known about a compiled rule, for events and logs. Its index in
/// [`CompiledPolicy::rules`] is the `rule_id` carried by [`RuleRef`] and by events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// Index in [`CompiledPolicy::rules`].
    pub id: u32,
    /// The rule's name, unique within its policy.
    pub name: String,
    /// Name of the policy that holds it.
    pub policy: String,
    /// File the policy was loaded from.
    pub source: PathBuf,
    /// One of `airlock_common::action`.
    pub action: u32,
    /// Mode of the policy that holds it.
    pub mode: Mode,
    /// Mask of `airlock_common::op::bit`s the rule covers (`op::bit(op::EXEC)` for exec rules).
    pub ops: u32,
    /// Agents the rule is restricted to; empty means every agent. Both backends hold such a
    /// rule in those agents' own map entries only (see [`crate::Scopes`]).
    pub agents: Vec<String>,
    /// How long an `approve` rule waits for a decision, and what happens then. `None` for other
    /// actions.
    pub approval: Option<Approval>,
}

/// Settings of an `approve` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approval {
    /// How long the action is held for a human decision (policy default 5 minutes).
    pub timeout: Duration,
    /// What happens when nobody decides in time (policy default deny).
    pub on_timeout: OnTimeout,
    /// Whether airlockd writes a line about the hold (opened, then decided or timed out) to
    /// the held process's standard error (`tellAgent`, default true).
    pub tell_agent: bool,
}

/// What an unanswered approval turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimeout {
    /// Fail the action (the default).
    Deny,
    /// Let the action go ahead.
    Allow,
}

/// A gated binary (or, in [`CompiledPolicy::connect`], a gated socket) as the policy named it,
/// and what it resolved to on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    /// The map value for this binary.
    pub rule: RuleRef,
    /// The path as written in the policy.
    pub path: PathBuf,
    /// Symlinks resolved (or, when the file is missing, the parent resolved plus the file name).
    pub canonical: PathBuf,
    /// The inode now at that path; `None` when the binary is not installed (it is still gated
    /// by its directory entry, so installing it later does not slip past).
    pub inode: Option<InodeKey>,
    /// (parent directory inode, file name): matches whatever inode is installed at the path.
    pub entry: Option<DirEntryKey>,
    /// The binary's content when the policy was compiled (binaries only): a byte-identical
    /// copy anywhere is the same program (LSM backend; see ebpf-programs/src/digest.rs).
    pub content: Option<crate::resolve::Content>,
}

/// A `connect` path with a wildcard, resolved: see [`airlock_common::WildKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WildTarget {
    /// The map value for these sockets.
    pub rule: RuleRef,
    /// The path as written in the policy.
    pub path: PathBuf,
    /// The map key (slot 0).
    pub key: airlock_common::WildKey,
}

/// A protected tree (or single file) as the policy named it, and its resolved identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedTarget {
    /// The map value for this object.
    pub rule: RuleRef,
    /// The path as written in the policy.
    pub path: PathBuf,
    /// Symlinks resolved.
    pub canonical: PathBuf,
    /// The object at that path when the policy was compiled.
    pub inode: InodeKey,
    /// A directory: the rule covers its whole subtree.
    pub is_dir: bool,
}

/// Everything a backend needs, for every policy loaded.
#[derive(Clone, Debug, Default)]
pub struct CompiledPolicy {
    /// Indexed by rule id.
    pub rules: Vec<RuleInfo>,
    /// Every agent of every policy.
    pub agents: Vec<AgentDef>,
    /// One per (rule, path); when several rules name the same inode the map loaders keep the
    /// strictest (see [`strictness`]).
    pub exec: Vec<ExecTarget>,
    /// One per (rule, path) that exists on this host.
    pub protected: Vec<ProtectedTarget>,
    /// The directories above protected roots (up to, not including, `/`), each gating only its
    /// own renaming and mounts on it, with the rule of the root below it (ops `RENAME` and
    /// `MOUNT` as far as that rule has them, flag `SELF_ONLY`): renaming `/usr/local`, or
    /// mounting a tmpfs on it, would free the path of a protected `/usr/local/bin`.
    /// LSM backend only; not trees (nothing below them is protected by these entries).
    pub ancestors: Vec<ProtectedTarget>,
    /// The rule of each `privilege` rule (its `ops` are the privilege changes it names).
    pub privilege: Vec<RuleRef>,
    /// One per (rule, path) of `connect` rules: a socket has the same two identities as a
    /// gated binary (its inode, and its name in its directory, which a service that restarts
    /// and binds its socket anew keeps).
    pub connect: Vec<ExecTarget>,
    /// `connect` paths with a wildcard component (`/run/user/*/bus`): per-user sockets,
    /// matched by the directory above the `*` and the names below it, whenever they appear.
    pub connect_wild: Vec<WildTarget>,
    /// Things worth telling the operator that are not errors (missing binaries, missing paths).
    pub notes: Vec<String>,
    /// airlockd's secrets (its host key) by inode: agent processes may not open them at all,
    /// reads included. Added by airlockd, never by a policy; LSM backend only.
    pub secrets: Vec<InodeKey>,
}

/// Order of actions when two rules meet on one object: deny beats approve beats audit beats
/// allow.
pub fn strictness(action: u32) -> u8 {
    use airlock_common::action::*;
    match action {
        DENY => 4,
        APPROVE => 3,
        AUDIT => 1,
        _ => 0,
    }
}

/// The selector every agent gets implicitly: the transient scopes that `airlock run --agent NAME`
/// creates, `/airlock.slice/airlock-NAME-*.scope`.
pub fn run_scope_selector(agent: &str) -> Selector {
    Selector::Cgroup(format!("/airlock.slice/airlock-{agent}-*.scope"))
}
