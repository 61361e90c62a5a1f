//! The listener thread: reads permission events, answers non-agent processes at once, decides
//! for agent processes, and reports flagged events.
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use airlock_common::{InodeKey, flags};

use super::Shared;
use super::procfs::{Intent, ProcReader, task_identity};
use super::rules::{Decision, Hit, RealFs, decide, reported_op, write_ops};
use super::sys::{self, FileId, Permission, Response};
use crate::agents::AgentMatch;
use crate::event::{Action, GateEvent, Op};

/// How long a `/proc/<tid>/syscall` read may take before the open is treated as unknown.
const PROC_DEADLINE: Duration = Duration::from_millis(200);
/// How long an allowed exec open waits for its `FAN_OPEN_PERM` twin.
const EXEC_TWIN_WINDOW: Duration = Duration::from_secs(1);

pub(crate) struct Listener {
    shared: Arc<Shared>,
    proc: ProcReader,
    /// Agent threads whose exec open of this inode was just allowed: the `FAN_OPEN_PERM` that
    /// the kernel sends next for the same open is an exec, not a write.
    exec_twins: HashMap<u32, (InodeKey, Instant)>,
}

impl Listener {
    pub fn new(shared: Arc<Shared>) -> Listener {
        Listener {
            shared,
            proc: ProcReader::new(PROC_DEADLINE),
            exec_twins: HashMap::new(),
        }
    }

    /// Runs until `stop` becomes readable (its write end closed).
    pub fn run(mut self, stop: OwnedFd) {
        // 8 KiB: at most ~340 events (and fds) per read, well inside any fd limit.
        let mut buf = vec![0u8; 8192];
        let group = self.shared.group.clone();
        while sys::wait_readable(group.as_fd(), stop.as_fd()) {
            loop {
                let n = match sys::read_some(group.as_fd(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "reading fanotify events failed");
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                };
                for ev in sys::parse_events(&buf[..n]) {
                    self.dispatch(ev);
                }
            }
        }
    }

    fn dispatch(&mut self, ev: sys::RawEvent) {
        if ev.fd < 0 {
            return;
        }
        let perm = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;
        if ev.mask & perm == 0 {
            // Not a permission event (we ask for none): just close its fd.
            // SAFETY: the kernel installed this fd for the event and nobody else owns it.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ev.fd) });
            return;
        }
        let permit = Permission::new(self.shared.group.clone(), ev.fd);
        self.shared.counters.perm_events.fetch_add(1, Relaxed);
        // A panic (a bug, or a Scope that panics) must not kill the thread: every later event
        // would wait forever. The permit answers its fallback while unwinding.
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.handle(ev, permit))).is_err() {
            self.shared.counters.errors.fetch_add(1, Relaxed);
        }
    }

    fn handle(&mut self, ev: sys::RawEvent, mut permit: Permission) {
        let tid = ev.tid as u32;
        let scope = self
            .shared
            .scope
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Hot path: every process touching a marked object pays for this and nothing more.
        let Some(agent) = scope.classify(tid) else {
            permit.respond(Response::Allow);
            self.shared.counters.fast_allowed.fetch_add(1, Relaxed);
            return;
        };
        // From here on an agent process waits: if anything fails, fail closed.
        permit.set_fallback(Response::Deny);
        let Ok(file) = sys::fstat(permit.fd()) else {
            return;
        };
        if !ev.version_ok {
            tracing::error!("fanotify metadata version mismatch; denying agent access");
            return;
        }
        if ev.mask & libc::FAN_OPEN_EXEC_PERM != 0 {
            self.on_exec(tid, &agent, file, permit);
        } else {
            self.on_open(tid, &agent, file, permit);
        }
    }

    /// The rules in force (a poisoned lock still holds the last published rule set).
    fn ruleset(&self) -> std::sync::RwLockReadGuard<'_, super::rules::Ruleset> {
        self.shared.ruleset.read().unwrap_or_else(|e| e.into_inner())
    }

    fn on_exec(&mut self, tid: u32, agent: &AgentMatch, file: FileId, permit: Permission) {
        let path = sys::fd_target(permit.fd());
        let hit = self.ruleset().find_exec(file.key, path.as_deref(), &RealFs);
        let response = match hit {
            None => Response::Allow,
            Some(h) => {
                let d = decide(&h.rule);
                self.report(tid, agent, Op::Exec, &file, path.as_deref(), &h, &d);
                d.response
            }
        };
        if response == Response::Allow {
            if self.exec_twins.len() > 1024 {
                self.exec_twins
                    .retain(|_, (_, t)| t.elapsed() < EXEC_TWIN_WINDOW);
            }
            self.exec_twins.insert(tid, (file.key, Instant::now()));
        }
        self.count(response);
        permit.respond(response);
    }

    fn on_open(&mut self, tid: u32, agent: &AgentMatch, file: FileId, permit: Permission) {
        let intent = match self.exec_twins.remove(&tid) {
            Some((k, t)) if k == file.key && t.elapsed() < EXEC_TWIN_WINDOW => Intent::Exec,
            _ => self.proc.intent(tid),
        };
        let open_flags = match intent {
            Intent::Read | Intent::Exec => {
                self.count(Response::Allow);
                permit.respond(Response::Allow);
                return;
            }
            Intent::Write { flags } => Some(flags),
            Intent::Unknown(_) => None,
        };
        let path = sys::fd_target(permit.fd());
        let hit = self.ruleset().find_protected(file, path.as_deref(), write_ops(open_flags), &RealFs);
        let Some(h) = hit else {
            self.count(Response::Allow);
            permit.respond(Response::Allow);
            return;
        };
        let d = decide(&h.rule);
        if let Intent::Unknown(why) = intent {
            self.shared.counters.intent_unknown.fetch_add(1, Relaxed);
            tracing::warn!(
                tid, path = %path.as_deref().unwrap_or(Path::new("?")).display(), reason = why,
                "open flags of an agent process unknown; treated as a write (fail closed)"
            );
        }
        self.report(
            tid,
            agent,
            reported_op(&h.rule),
            &file,
            path.as_deref(),
            &h,
            &d,
        );
        self.count(d.response);
        permit.respond(d.response);
    }

    fn count(&self, r: Response) {
        let c = match r {
            Response::Allow => &self.shared.counters.agent_allowed,
            Response::Deny => &self.shared.counters.denied,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Sends the event before answering, while the task (and its comm) is still what it was;
    /// never blocks: a full channel counts the event as lost.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        tid: u32,
        agent: &AgentMatch,
        op: Op,
        file: &FileId,
        path: Option<&Path>,
        hit: &Hit,
        d: &Decision,
    ) {
        if !d.report {
            return;
        }
        let (st, comm) = task_identity(tid);
        let ev = GateEvent {
            backend: "fanotify",
            ktime_ns: sys::boottime_ns(),
            pid: tid,
            tgid: st.tgid,
            ppid: st.ppid,
            uid: st.uid,
            euid: st.euid,
            cgroup_id: agent.cgroup_id,
            comm,
            op,
            target_dev: file.key.dev,
            target_ino: file.key.ino,
            target_name: path
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            target_path: path.map(PathBuf::from).map(|p| p.display().to_string()),
            rule_id: hit.rule.rule_id,
            action: Action::from_raw(hit.rule.action).unwrap_or(Action::Deny),
            verdict: d.verdict,
            monitor: hit.rule.flags & flags::MONITOR != 0,
            name_truncated: false,
            matched_by_entry: hit.by_entry,
            argv: Vec::new(),
            argv_truncated: false,
            argv_hash: 0,
            decided_by: None,
            hold_token: None,
        };
        let c = &self.shared.counters;
        match self.shared.events.try_send(ev) {
            Ok(()) => c.events.fetch_add(1, Relaxed),
            Err(_) => c.lost.fetch_add(1, Relaxed),
        };
    }
}
