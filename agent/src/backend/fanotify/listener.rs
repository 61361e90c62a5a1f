//! The listener thread: reads permission events, answers non-agent processes at once, decides
//! for agent processes (answering, or parking an `approve` hold), and reports flagged events.
//!
//! An agent open whose task still reads as `running` in `/proc/<tid>/syscall` (the procfs
//! module says why that is common under concurrency) gets a short re-read in line
//! ([`INLINE`]) and is then handed to the settler thread, which re-reads it every
//! [`SETTLE_POLL`] for up to [`SETTLE_DEADLINE`] while the listener goes on answering other
//! events, and then decides it with the same code. Measured on the 2-vCPU CI host (6.18),
//! agents running `sh -c 'head -1 /etc/hostname | sed …'` under the demo policy: about one
//! agent open in four reads `running` at first, nearly half of those settle within the
//! in-line millisecond, and all of them after 0.7-1.5 ms (median), 4-18 ms (p90), 10-90 ms
//! (p99), 230 ms at the most (32 agents at once, other builds loading the host). Waiting that
//! long in line would stall every event behind this one (non-agent opens of the protected
//! trees included), and a read must never become a request, so the wait is moved aside.
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use airlock_common::flags;

use super::Shared;
use super::argv::read_exec_argv;
use super::gate::Opening;
use super::procfs::{Intent, Patience, ProcReader, Reading, task_identity};
use super::rules::{Answer, Decision, Hit, RealFs, backstopped, decide, reported_op, write_ops};
use super::sys::{self, FileId, Permission, Response};
use crate::agents::AgentMatch;
use crate::event::{Action, DecidedBy, GateEvent, Op, Verdict};
use crate::hold::Release;

/// How long a `/proc/<tid>/syscall` read may take before the open is treated as unknown
/// (well above every [`Patience`] below, whose re-reads are part of the read).
const PROC_DEADLINE: Duration = Duration::from_millis(200);

/// In the listener's own thread, where every event behind this one waits: a few yields (a task
/// on the other CPU falls asleep within microseconds) and sleeps, about 1 ms in all.
const INLINE: Patience = Patience {
    bound: Duration::from_millis(1),
    min_rereads: 4,
};

/// A held exec's argv (read on the listener thread, only for execs that wait for a person):
/// without it the request shows no arguments, so it is worth a longer wait than [`INLINE`].
const ARGV: Patience = Patience {
    bound: Duration::from_millis(20),
    min_rereads: 20,
};

/// How often the settler re-reads the opens it holds.
const SETTLE_POLL: Duration = Duration::from_micros(200);

/// How long the settler re-reads an open before its intent counts as unknown (treated as a
/// write): about ten times the longest wait measured; only that task waits meanwhile (it is
/// waiting for our answer anyway).
const SETTLE_DEADLINE: Duration = Duration::from_secs(2);

/// An agent open whose task was still running when the listener read its flags.
struct Unsettled {
    tid: u32,
    agent: AgentMatch,
    file: FileId,
    permit: Permission,
    /// The listener's in-line wait, and when it handed the open over.
    waited: Duration,
    since: Instant,
    rereads: u32,
}

pub(crate) struct Listener {
    shared: Arc<Shared>,
    proc: ProcReader,
    /// The settler thread's inbox (none: decide at once, failing closed).
    settler: Option<mpsc::Sender<Unsettled>>,
}

impl Listener {
    pub fn new(shared: Arc<Shared>) -> Listener {
        Listener {
            shared,
            proc: ProcReader::new(PROC_DEADLINE),
            settler: None,
        }
    }

    /// Runs until `stop` becomes readable (its write end closed), with the settler thread
    /// beside it; returns after the settler has decided what it held.
    pub fn run(mut self, stop: OwnedFd) {
        let (tx, rx) = mpsc::channel();
        let settler = Listener::new(self.shared.clone());
        std::thread::scope(|s| {
            let spawned = std::thread::Builder::new()
                .name("airlock-settle".into())
                .spawn_scoped(s, move || settler.settle_loop(rx));
            match spawned {
                Ok(_) => self.settler = Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "no settler thread: opens of running tasks fail closed");
                }
            }
            self.listen(stop);
            // Dropping the inbox ends the settler once it has decided what it holds.
            self.settler = None;
        });
    }

    fn listen(&mut self, stop: OwnedFd) {
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
        self.shared
            .ruleset
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn on_exec(&mut self, tid: u32, agent: &AgentMatch, file: FileId, permit: Permission) {
        let path = sys::fd_target(permit.fd());
        let hit = {
            let rs = self.ruleset();
            rs.find_exec(
                file.key,
                path.as_deref(),
                &RealFs,
                rs.slot_of(&agent.root.agent),
            )
        };
        let mut o = Opening {
            tid,
            file: file.key,
            exec: true,
            backstop: false,
        };
        let Some(h) = hit else {
            self.shared.answer(permit, Response::Allow, &o);
            return;
        };
        o.backstop = backstopped(&h.rule);
        let g = Gated {
            tid,
            agent,
            op: Op::Exec,
            file: &file,
            path: path.as_deref(),
            hit: &h,
        };
        self.settle(&g, decide(&h.rule), permit, o);
    }

    fn on_open(&mut self, tid: u32, agent: &AgentMatch, file: FileId, permit: Permission) {
        let reading = if self.shared.holds.take_twin(tid, file.key) {
            Reading::known(Intent::Exec)
        } else {
            self.proc.intent(tid, INLINE)
        };
        if reading.task_running()
            && let Some(tx) = &self.settler
        {
            let u = Unsettled {
                tid,
                agent: agent.clone(),
                file,
                permit,
                waited: reading.waited,
                since: Instant::now(),
                rereads: reading.rereads,
            };
            match tx.send(u) {
                Ok(()) => return,
                Err(mpsc::SendError(u)) => {
                    // The settler died (a bug): decide here, failing closed.
                    self.settler = None;
                    return self.decide_open(tid, agent, file, u.permit, reading);
                }
            }
        }
        self.decide_open(tid, agent, file, permit, reading);
    }

    /// The settler thread: re-reads the opens handed over until their task sleeps (or
    /// [`SETTLE_DEADLINE`]), then decides them. Ends when the listener drops the inbox.
    fn settle_loop(mut self, rx: mpsc::Receiver<Unsettled>) {
        let mut waiting: Vec<Unsettled> = Vec::new();
        let mut open = true;
        while open || !waiting.is_empty() {
            if waiting.is_empty() {
                match rx.recv() {
                    Ok(u) => waiting.push(u),
                    Err(_) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(u) => waiting.push(u),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            waiting = std::mem::take(&mut waiting)
                .into_iter()
                .filter_map(|u| self.retry(u, !open))
                .collect();
            if !waiting.is_empty() {
                std::thread::sleep(SETTLE_POLL);
            }
        }
    }

    /// Reads `u`'s intent once more; decides it if that tells, or when time is up (`last`:
    /// the backend is stopping; one more patient read). Gives it back to wait on otherwise.
    fn retry(&mut self, mut u: Unsettled, last: bool) -> Option<Unsettled> {
        let mut r = self
            .proc
            .intent(u.tid, if last { INLINE } else { Patience::ONCE });
        u.rereads += 1 + r.rereads;
        (r.waited, r.rereads) = (u.waited + u.since.elapsed(), u.rereads);
        if r.task_running() && !last && r.waited < SETTLE_DEADLINE {
            return Some(u);
        }
        let Unsettled {
            tid,
            agent,
            file,
            permit,
            ..
        } = u;
        // As in `dispatch`: a panic must not end the thread; the permit answers its fallback.
        let decided = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.decide_open(tid, &agent, file, permit, r)
        }));
        if decided.is_err() {
            self.shared.counters.errors.fetch_add(1, Relaxed);
        }
        None
    }

    /// Decides an agent open from what its flags say.
    fn decide_open(
        &mut self,
        tid: u32,
        agent: &AgentMatch,
        file: FileId,
        permit: Permission,
        reading: Reading,
    ) {
        let o = Opening {
            tid,
            file: file.key,
            exec: false,
            backstop: false,
        };
        if reading.rereads > 0 {
            tracing::debug!(
                tid,
                waited_us = reading.waited.as_micros() as u64,
                rereads = reading.rereads,
                settled = !reading.task_running(),
                "agent task was still running when its open event arrived; waited for it"
            );
        }
        let intent = reading.intent;
        let open_flags = match intent {
            Intent::Read | Intent::Exec => {
                self.shared.answer(permit, Response::Allow, &o);
                return;
            }
            Intent::Write { flags } => Some(flags),
            Intent::Unknown(_) => None,
        };
        let path = sys::fd_target(permit.fd());
        let hit = {
            let rs = self.ruleset();
            let slot = rs.slot_of(&agent.root.agent);
            rs.find_protected(file, path.as_deref(), write_ops(open_flags), &RealFs, slot)
        };
        let Some(h) = hit else {
            self.shared.answer(permit, Response::Allow, &o);
            return;
        };
        if let Intent::Unknown(why) = intent {
            self.shared.counters.intent_unknown.fetch_add(1, Relaxed);
            tracing::warn!(
                tid, path = %path.as_deref().unwrap_or(Path::new("?")).display(), reason = why,
                rereads = reading.rereads,
                "open flags of an agent process unknown after waiting {} µs; treated as a write (fail closed)",
                reading.waited.as_micros()
            );
        }
        let op = reported_op(&h.rule);
        let g = Gated {
            tid,
            agent,
            op,
            file: &file,
            path: path.as_deref(),
            hit: &h,
        };
        self.settle(&g, decide(&h.rule), permit, o);
    }

    /// Carries out a decision: answer now, or (approve) apply a standing decision, or park.
    fn settle(&mut self, g: &Gated<'_>, d: Decision, permit: Permission, o: Opening) {
        let r = match d.answer {
            Answer::Now(r) => {
                if d.report {
                    self.send(self.event(g, d.verdict));
                }
                r
            }
            Answer::Hold => match self
                .shared
                .holds
                .standing(g.agent.cgroup_id, g.op, g.file.key)
            {
                Some(release) => {
                    let r = match release {
                        Release::Allow => Response::Allow,
                        Release::Deny => Response::Deny,
                    };
                    let mut ev = self.event(
                        g,
                        if r == Response::Allow {
                            Verdict::Allowed
                        } else {
                            Verdict::Denied
                        },
                    );
                    ev.decided_by = Some(DecidedBy::AgentGrant);
                    self.send(ev);
                    r
                }
                None => return self.hold(g, permit, o),
            },
        };
        self.shared.answer(permit, r, &o);
    }

    /// Parks the permission and reports the hold. Never blocks; if the event cannot be
    /// delivered nobody will ever decide, so the hold is denied at once.
    fn hold(&mut self, g: &Gated<'_>, permit: Permission, o: Opening) {
        let argv = if g.op == Op::Exec {
            let tid = g.tid;
            self.proc
                .run(move || read_exec_argv(tid, ARGV))
                .ok()
                .flatten()
        } else {
            None
        };
        let mut ev = self.event(g, Verdict::Held);
        if let Some(a) = &argv {
            (ev.argv, ev.argv_truncated, ev.argv_hash) = (a.strings(), a.truncated, a.hash());
        }
        if self.shared.holds.parked_count() >= 64 {
            self.shared.sweep_dead_parked();
        }
        // Parked before the event goes out: a decision may come back at once.
        let token = self.shared.holds.park(permit, o);
        ev.hold_token = Some(token);
        self.shared.counters.held.fetch_add(1, Relaxed);
        if !self.send(ev)
            && let Some((permit, o)) = self.shared.holds.unpark(token)
        {
            tracing::warn!(tid = g.tid, "event channel full: hold denied at once");
            self.shared.answer(permit, Response::Deny, &o);
        }
    }

    /// The event for a gated operation, built before answering, while the task (and its comm)
    /// is still what it was.
    fn event(&self, g: &Gated<'_>, verdict: Verdict) -> GateEvent {
        let (st, comm) = task_identity(g.tid);
        let rule = &g.hit.rule;
        GateEvent {
            backend: "fanotify",
            ktime_ns: sys::boottime_ns(),
            pid: g.tid,
            tgid: st.tgid,
            ppid: st.ppid,
            uid: st.uid,
            euid: st.euid,
            cgroup_id: g.agent.cgroup_id,
            comm,
            op: g.op,
            target_dev: g.file.key.dev,
            target_ino: g.file.key.ino,
            target_name: g
                .path
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            target_path: g.path.map(PathBuf::from).map(|p| p.display().to_string()),
            rule_id: rule.rule_id,
            action: Action::from_raw(rule.action).unwrap_or(Action::Deny),
            verdict,
            monitor: rule.flags & flags::MONITOR != 0,
            name_truncated: false,
            matched_by_entry: g.hit.by_entry,
            matched_by_content: false,
            unidentified: false,
            argv: Vec::new(),
            argv_truncated: false,
            unholdable: false,
            argv_hash: 0,
            decided_by: None,
            hold_token: None,
        }
    }

    /// Sends without blocking: a full channel counts the event as lost (returns false).
    fn send(&self, ev: GateEvent) -> bool {
        let c = &self.shared.counters;
        let ok = self.shared.events.try_send(ev).is_ok();
        if ok { &c.events } else { &c.lost }.fetch_add(1, Relaxed);
        ok
    }
}

/// A gated operation of an agent process.
struct Gated<'a> {
    tid: u32,
    agent: &'a AgentMatch,
    op: Op,
    file: &'a FileId,
    path: Option<&'a Path>,
    hit: &'a Hit,
}
