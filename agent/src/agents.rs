//! Agent cgroups: resolving a policy's agent selectors to cgroup ids, deciding whether a process
//! is an agent process (its cgroup or any ancestor is an agent cgroup), and noticing matching
//! cgroups created after start ([`CgroupWatcher`]).
//!
//! Typical daemon use: start a [`CgroupWatcher`] first, then [`AgentSet::resolve_with`]; on every
//! watcher change resolve again and log [`AgentSet::diff`]. Starting the watcher first means a
//! cgroup created during the first walk is not missed.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use airlock_policy::{AgentDef, Selector};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::cgroup::{self, cgroup_dir, cgroup_id};

pub mod reap;
mod watch;

pub use reap::ScopeReaper;
pub use watch::{CgroupWatcher, FALLBACK_RESCAN, SAFETY_RESCAN, WatchError};

/// Errors resolving agent cgroups.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("bad selector {selector:?} of agent {agent}: {reason}")]
    Selector {
        agent: String,
        selector: String,
        reason: String,
    },
}

/// One cgroup that a selector matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCgroup {
    /// Name of the agent whose selector matched (the first declared, if several did).
    pub agent: String,
    /// Path relative to the cgroup2 mount, leading `/` (non-UTF-8 bytes replaced; display only).
    pub path: String,
    /// The cgroup id (directory inode): the identity that classification uses.
    pub id: u64,
}

impl fmt::Display for AgentCgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "agent {}: cgroup {} (id {})",
            self.agent, self.path, self.id
        )
    }
}

/// A process found to be an agent process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentMatch {
    /// The agent root cgroup it is in (or below).
    pub root: AgentCgroup,
    /// The process's own cgroup id and path (may be a descendant of `root`). The id is 0 when
    /// the process's own cgroup could not be stat'ed (removed meanwhile) but an ancestor matched.
    pub cgroup_id: u64,
    pub cgroup_path: String,
}

/// The agent selectors of a policy, compiled once so repeated rescans do not rebuild globs.
#[derive(Clone, Debug)]
pub struct AgentMatcher {
    names: Vec<String>,
    by_path: GlobSet,
    /// Agent index of each glob in `by_path`.
    path_agent: Vec<usize>,
    by_unit: GlobSet,
    unit_agent: Vec<usize>,
}

impl AgentMatcher {
    /// Compiles every agent's selectors. `Cgroup` globs must start with `/`; `SystemdUnit`
    /// globs must not contain `/` (they match a single directory name).
    pub fn new(agents: &[AgentDef]) -> Result<AgentMatcher, AgentsError> {
        let (mut by_path, mut path_agent) = (GlobSetBuilder::new(), Vec::new());
        let (mut by_unit, mut unit_agent) = (GlobSetBuilder::new(), Vec::new());
        for (i, agent) in agents.iter().enumerate() {
            for sel in &agent.selectors {
                let bad = |glob: &str, reason: String| AgentsError::Selector {
                    agent: agent.name.clone(),
                    selector: glob.to_string(),
                    reason,
                };
                let (glob, set, idx) = match sel {
                    Selector::Cgroup(g) if !g.starts_with('/') => {
                        return Err(bad(g, "a cgroup path glob must start with '/'".into()));
                    }
                    Selector::SystemdUnit(g) if g.contains('/') => {
                        return Err(bad(g, "a unit name glob cannot contain '/'".into()));
                    }
                    Selector::Cgroup(g) => (g, &mut by_path, &mut path_agent),
                    Selector::SystemdUnit(g) => (g, &mut by_unit, &mut unit_agent),
                };
                let compiled = GlobBuilder::new(glob)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| bad(glob, e.kind().to_string()))?;
                set.add(compiled);
                idx.push(i);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| AgentsError::Selector {
                agent: String::new(),
                selector: e.glob().unwrap_or_default().to_string(),
                reason: e.kind().to_string(),
            })
        };
        Ok(AgentMatcher {
            names: agents.iter().map(|a| a.name.clone()).collect(),
            by_path: build(by_path)?,
            path_agent,
            by_unit: build(by_unit)?,
            unit_agent,
        })
    }

    /// True when no agent has any selector: nothing can match, no walk needed.
    pub fn is_empty(&self) -> bool {
        self.path_agent.is_empty() && self.unit_agent.is_empty()
    }

    /// The agent whose selectors match cgroup path `path` (leading `/`). When several agents
    /// match, the one declared first wins, so the answer does not depend on glob order.
    pub fn agent_for(&self, path: &str) -> Option<&str> {
        let by_path = self
            .by_path
            .matches(path)
            .into_iter()
            .map(|g| self.path_agent[g]);
        let name = path.rsplit('/').next().unwrap_or("");
        let by_unit = (!name.is_empty())
            .then(|| {
                self.by_unit
                    .matches(name)
                    .into_iter()
                    .map(|g| self.unit_agent[g])
            })
            .into_iter()
            .flatten();
        let best = by_path.chain(by_unit).min();
        best.map(|i| self.names[i].as_str())
    }
}

/// Most directories [`AgentSet::classify_cgroup_id`] looks at: agent subtrees are small, and
/// an event must not cost a walk of a huge tree.
pub const MAX_SUBTREE_SCAN: usize = 4096;

/// The agent root cgroups currently matched, keyed by cgroup id.
#[derive(Clone, Debug, Default)]
pub struct AgentSet {
    pub mount: PathBuf,
    pub roots: HashMap<u64, AgentCgroup>,
}

/// What changed between two [`AgentSet`]s, for logging. A root whose agent or path changed
/// under the same id (a cgroup removed and its inode reused) appears in both lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSetDiff {
    /// Sorted by path.
    pub added: Vec<AgentCgroup>,
    /// Sorted by path.
    pub removed: Vec<AgentCgroup>,
}

impl AgentSetDiff {
    /// Nothing added or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl AgentSet {
    /// Walks the cgroup tree under `mount` and matches every directory against `agents`.
    pub fn resolve(mount: PathBuf, agents: &[AgentDef]) -> Result<AgentSet, AgentsError> {
        Self::resolve_with(mount, &AgentMatcher::new(agents)?)
    }

    /// [`AgentSet::resolve`] with selectors compiled beforehand.
    ///
    /// Directories that cannot be read (or vanish during the walk) are skipped; only an
    /// unreadable `mount` is an error. Symlinks are not followed. A matching cgroup below
    /// another matching one is recorded too: classification stops at the nearest.
    pub fn resolve_with(mount: PathBuf, matcher: &AgentMatcher) -> Result<AgentSet, AgentsError> {
        let mut roots = HashMap::new();
        let top = std::fs::read_dir(&mount).map_err(|e| cgroup::CgroupError::io(&mount, e))?;
        if matcher.is_empty() {
            return Ok(AgentSet { mount, roots });
        }
        let mut pending = vec![(mount.clone(), "/".to_string(), Some(top))];
        while let Some((dir, path, listing)) = pending.pop() {
            if let Some(agent) = matcher.agent_for(&path)
                && let Ok(id) = cgroup_id(&dir)
            {
                let c = AgentCgroup {
                    agent: agent.to_string(),
                    path: path.clone(),
                    id,
                };
                roots.insert(id, c);
            }
            let Some(listing) = listing.or_else(|| std::fs::read_dir(&dir).ok()) else {
                continue;
            };
            for entry in listing.flatten() {
                // file_type() is lstat-like: a symlink is never a dir here.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                // Lossy only for matching and display: identity comes from the inode of `child`.
                let name = entry.file_name();
                let child_path = if path == "/" {
                    format!("/{}", name.to_string_lossy())
                } else {
                    format!("{path}/{}", name.to_string_lossy())
                };
                pending.push((entry.path(), child_path, None));
            }
        }
        Ok(AgentSet { mount, roots })
    }

    /// Is `pid` an agent process? Walks its cgroup's ancestors by inode, not by path string.
    ///
    /// Costs one read of `/proc/PID/cgroup` and one stat per path level; nothing at all when no
    /// agent cgroup is known. `None` also when the process is gone.
    pub fn classify_pid(&self, pid: u32) -> Option<AgentMatch> {
        if self.roots.is_empty() {
            return None;
        }
        let path = cgroup::pid_cgroup_path_bytes(pid).ok()?;
        self.classify_bytes(&path)
    }

    /// Is a process in cgroup `path` (leading `/`, relative to the mount) an agent process?
    pub fn classify_cgroup_path(&self, path: &str) -> Option<AgentMatch> {
        self.classify_bytes(path.as_bytes())
    }

    fn classify_bytes(&self, path: &[u8]) -> Option<AgentMatch> {
        if self.roots.is_empty() {
            return None;
        }
        let mut own_id = 0;
        let mut cur = path;
        loop {
            if let Ok(id) = cgroup_id(&cgroup_dir(&self.mount, OsStr::from_bytes(cur))) {
                if cur.len() == path.len() {
                    own_id = id;
                }
                if let Some(root) = self.roots.get(&id) {
                    return Some(AgentMatch {
                        root: root.clone(),
                        cgroup_id: own_id,
                        cgroup_path: String::from_utf8_lossy(path).into_owned(),
                    });
                }
            }
            cur = parent_cgroup_path(cur)?;
        }
    }

    /// The agent cgroup `id` (a kernel cgroup id, as events carry it) is, or is below: the
    /// root itself, else a search of the roots' subtrees for the directory with that inode
    /// (at most [`MAX_SUBTREE_SCAN`] directories in all). `None` when it is in no agent
    /// subtree, or was removed.
    ///
    /// Events name the cgroup the kernel saw; a process that exited (or moved) before its
    /// event was recorded can no longer be classified by pid, but its cgroup still can.
    pub fn classify_cgroup_id(&self, id: u64) -> Option<AgentMatch> {
        if id == 0 {
            return None;
        }
        if let Some(root) = self.roots.get(&id) {
            return Some(AgentMatch {
                root: root.clone(),
                cgroup_id: id,
                cgroup_path: root.path.clone(),
            });
        }
        let mut budget = MAX_SUBTREE_SCAN;
        for root in self.roots.values() {
            let mut pending = vec![(
                cgroup_dir(&self.mount, OsStr::new(&root.path)),
                root.path.clone(),
            )];
            while let Some((dir, path)) = pending.pop() {
                let Ok(listing) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in listing.flatten() {
                    if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    if budget == 0 {
                        return None;
                    }
                    budget -= 1;
                    let child = format!("{path}/{}", entry.file_name().to_string_lossy());
                    if cgroup_id(&entry.path()).ok() == Some(id) {
                        // The nearest agent root above it decides (a matching cgroup below
                        // another is a root of its own).
                        return self.classify_bytes(child.as_bytes());
                    }
                    pending.push((entry.path(), child));
                }
            }
        }
        None
    }

    /// Is `id` one of the agent root cgroups? (Descendants are not included; see
    /// [`AgentSet::classify_pid`].)
    pub fn contains_id(&self, id: u64) -> bool {
        self.roots.contains_key(&id)
    }

    /// The ids of all agent root cgroups (what the BPF backend loads into its map).
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.roots.keys().copied()
    }

    /// What `self` has that `old` lacks (added) and vice versa (removed).
    pub fn diff(&self, old: &AgentSet) -> AgentSetDiff {
        let only = |a: &AgentSet, b: &AgentSet| {
            let mut v: Vec<AgentCgroup> = a
                .roots
                .values()
                .filter(|c| b.roots.get(&c.id) != Some(*c))
                .cloned()
                .collect();
            v.sort_by(|x, y| (&x.path, x.id).cmp(&(&y.path, y.id)));
            v
        };
        AgentSetDiff {
            added: only(self, old),
            removed: only(old, self),
        }
    }
}

/// `/a/b` → `/a`, `/a` → `/`, `/` → none.
fn parent_cgroup_path(p: &[u8]) -> Option<&[u8]> {
    let p = match p {
        b"" | b"/" => return None,
        _ => p.strip_suffix(b"/").unwrap_or(p),
    };
    match p.iter().rposition(|b| *b == b'/')? {
        0 => Some(b"/"),
        i => Some(&p[..i]),
    }
}

#[cfg(test)]
mod tests;
