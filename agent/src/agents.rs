//! Agent cgroups: resolving a policy's agent selectors to cgroup ids, deciding whether a process
//! is an agent process (its cgroup or any ancestor is an agent cgroup), and noticing matching
//! cgroups created after start. (Owned by the cgroup work; signatures are the contract.)
use std::collections::HashMap;
use std::path::PathBuf;

use airlock_policy::AgentDef;

/// Errors resolving agent cgroups.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("bad selector {selector:?} of agent {agent}: {reason}")]
    Selector { agent: String, selector: String, reason: String },
}

/// One cgroup that a selector matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCgroup {
    pub agent: String,
    /// Path relative to the cgroup2 mount, leading `/`.
    pub path: String,
    pub id: u64,
}

/// A process found to be an agent process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentMatch {
    /// The agent root cgroup it is in (or below).
    pub root: AgentCgroup,
    /// The process's own cgroup id and path (may be a descendant of `root`).
    pub cgroup_id: u64,
    pub cgroup_path: String,
}

/// The agent root cgroups currently matched, keyed by cgroup id.
#[derive(Clone, Debug, Default)]
pub struct AgentSet {
    pub mount: PathBuf,
    pub roots: HashMap<u64, AgentCgroup>,
}

impl AgentSet {
    /// Walks the cgroup tree under `mount` and matches every directory against `agents`.
    pub fn resolve(mount: PathBuf, agents: &[AgentDef]) -> Result<AgentSet, AgentsError> {
        let _ = (mount, agents);
        todo!()
    }

    /// Is `pid` an agent process? Walks its cgroup's ancestors by inode, not by path string.
    pub fn classify_pid(&self, pid: u32) -> Option<AgentMatch> {
        let _ = pid;
        todo!()
    }
}
