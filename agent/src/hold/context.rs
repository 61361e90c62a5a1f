//! What a request tells the person deciding, gathered from procfs when the request opens (the
//! held process cannot change while it waits: LSM holds stop every thread of it, fanotify holds
//! keep the thread inside its syscall). argv comes from the kernel, not from here.

use super::{Ancestor, Launcher, RequestContext};
use crate::event::GateEvent;
use crate::proc;

/// Environment variable an agent sets to tell approvers why it does something.
pub const REASON_ENV: &str = "AIRLOCK_REASON";
/// Longest ancestry recorded.
const MAX_ANCESTRY: usize = 16;
/// Longest reason kept.
const MAX_REASON: usize = 512;

/// What the daemon knows besides the event.
pub struct Sources<'a> {
    pub host: &'a str,
    pub agent: Option<&'a crate::agents::AgentMatch>,
    pub rule: Option<&'a airlock_policy::RuleInfo>,
    /// Last exec of the process from the exec tracepoint.
    pub exe: Option<String>,
    /// The agent's own `airlock run` record, if it was started that way.
    pub launched_by: Option<Launcher>,
    /// Is this pid inside the agent (ancestry stops at the first process that is not)?
    pub in_agent: &'a dyn Fn(u32) -> bool,
}

/// Builds the context of a new request.
pub fn gather(ev: &GateEvent, src: &Sources<'_>) -> RequestContext {
    let reason = proc::environ_var(ev.tgid, REASON_ENV, MAX_REASON)
        .or_else(|| src.launched_by.as_ref().and_then(|l| l.reason.clone()));
    let exe = src.exe.clone().or_else(|| shown(proc::exe(ev.tgid)));
    RequestContext {
        host: src.host.to_string(),
        agent: src.agent.map(|m| m.root.agent.clone()),
        agent_cgroup: src.agent.map(|m| m.cgroup_path.clone()),
        cgroup_id: if ev.cgroup_id != 0 {
            ev.cgroup_id
        } else {
            src.agent.map_or(0, |m| m.cgroup_id)
        },
        unit: src.agent.and_then(|m| unit_of(&m.cgroup_path)),
        launched_by: src.launched_by.clone(),
        pid: ev.pid,
        tgid: ev.tgid,
        uid: ev.uid,
        euid: ev.euid,
        comm: ev.comm.clone(),
        exe,
        ancestry: ancestry(ev.tgid, src.in_agent),
        argv: ev.argv.clone(),
        argv_truncated: ev.argv_truncated,
        cwd: shown(proc::cwd(ev.tgid)),
        op: ev.op,
        target_path: ev.target_path.clone(),
        target_dev: ev.target_dev,
        target_ino: ev.target_ino,
        rule: src.rule.map(|r| r.name.clone()),
        policy: src.rule.map(|r| r.policy.clone()),
        reason,
        backend: ev.backend.to_string(),
    }
}

fn shown(p: Option<std::path::PathBuf>) -> Option<String> {
    p.map(|p| p.display().to_string())
}

/// The systemd unit a cgroup path belongs to: its deepest `.scope` or `.service` component.
pub fn unit_of(cgroup_path: &str) -> Option<String> {
    cgroup_path
        .rsplit('/')
        .find(|c| c.ends_with(".scope") || c.ends_with(".service"))
        .map(str::to_string)
}

/// The held process and its ancestors while they are inside the agent (at most
/// [`MAX_ANCESTRY`]): who in the agent led to this action.
pub fn ancestry(pid: u32, in_agent: &dyn Fn(u32) -> bool) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut cur = pid;
    while out.len() < MAX_ANCESTRY && cur > 1 {
        let Some((ppid, comm)) = proc::parent_and_comm(cur) else {
            break;
        };
        out.push(Ancestor {
            pid: cur,
            comm,
            exe: shown(proc::exe(cur)),
        });
        if !in_agent(ppid) {
            break;
        }
        cur = ppid;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_the_deepest_scope_or_service() {
        assert_eq!(
            unit_of("/airlock.slice/airlock-demo-1.scope").as_deref(),
            Some("airlock-demo-1.scope")
        );
        assert_eq!(
            unit_of("/system.slice/agent.service/sub").as_deref(),
            Some("agent.service")
        );
        assert_eq!(unit_of("/airlock-e2e-1/agent"), None);
    }

    #[test]
    fn ancestry_starts_at_the_process_and_stops_outside_the_agent() {
        let me = std::process::id();
        let a = ancestry(me, &|_| false);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].pid, me);
        let all = ancestry(me, &|_| true);
        assert!(
            all.len() >= 2,
            "our parent is listed when it counts as inside"
        );
        assert!(all.len() <= MAX_ANCESTRY);
    }
}
