//! `AGENT_TASKS`: the agent processes by tgid, so that membership sticks to a process moved out
//! of its agent's cgroup subtree (ebpf-programs/src/sticky.rs). The kernel adds processes at
//! fork and when they are moved into an agent cgroup; this seeds the ones that were already in
//! agent cgroups when the programs were armed, and drops entries of cgroups that are no longer
//! agents' (the kernel also ignores those: it checks the root is still in `AGENT_ROOTS`).
use std::collections::HashMap as StdHashMap;
use std::path::Path;

use airlock_common::AgentTask;
use aya::maps::{HashMap, Map, MapData};

use super::{LsmError, map_err};
use crate::agents::AgentSet;

/// The tracepoint programs that keep `AGENT_TASKS` (program name, tracepoint).
pub const TRACEPOINTS: &[(&str, &str)] = &[
    ("agent_fork", "sched_process_fork"),
    ("agent_moved", "cgroup_attach_task"),
    ("agent_freed", "sched_process_free"),
];

/// The map, typed.
pub(crate) struct AgentTasks {
    map: HashMap<MapData, u32, AgentTask>,
}

impl AgentTasks {
    pub(crate) fn from(map: Map) -> Result<AgentTasks, LsmError> {
        Ok(AgentTasks {
            map: HashMap::try_from(map).map_err(map_err("AGENT_TASKS"))?,
        })
    }

    /// Adds every process now in an agent cgroup (under `agents.mount`) with its root and the
    /// slot `roots` gives it; removes entries whose root is no longer an agent's. A process that
    /// exits meanwhile is simply missing from a `cgroup.procs` read.
    pub(crate) fn seed(
        &mut self,
        agents: &AgentSet,
        roots: &StdHashMap<u64, u32>,
    ) -> Result<(), LsmError> {
        for (id, c) in &agents.roots {
            let slot = roots.get(id).copied().unwrap_or(0);
            let t = AgentTask {
                root: *id,
                slot,
                _pad: 0,
            };
            let dir = agents.mount.join(c.path.trim_start_matches('/'));
            for tgid in procs_below(&dir) {
                if self.map.get(&tgid, 0).ok() != Some(t) {
                    // Full map: the process is still gated while it stays in its cgroup.
                    if let Err(e) = self.map.insert(tgid, t, 0) {
                        tracing::warn!(tgid, error = %e, "AGENT_TASKS is full");
                        break;
                    }
                }
            }
        }
        let stale: Vec<u32> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, t)| !roots.contains_key(&t.root))
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.map.remove(&k);
        }
        Ok(())
    }
}

/// The tgids in `cgroup.procs` of `dir` and of every cgroup below it.
fn procs_below(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_below_reads_every_level_and_skips_garbage() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.procs"), "1\n2\n").unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/cgroup.procs"), "3\nnot-a-pid\n").unwrap();
        let mut got = procs_below(d.path());
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
        assert!(procs_below(&d.path().join("missing")).is_empty());
    }
}
