//! Fallback backend: fanotify permission events on gated binaries and protected trees, with
//! agent scoping done in userspace. For kernels that refuse BPF LSM programs.
//!
//! # How it works
//!
//! One fanotify group (`FAN_CLASS_CONTENT`, unlimited queue and marks, `FAN_REPORT_TID`) holds
//! **inode marks only** (filesystem or mount marks would make every exec on the host wait for
//! this daemon: +16 % per exec measured):
//!
//! - each gated binary's inode: `FAN_OPEN_EXEC_PERM`;
//! - each directory of a protected tree: `FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM |
//!   FAN_EVENT_ON_CHILD` (opens of its entries, including files created later);
//! - each regular file of a protected tree: `FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM` on its own
//!   inode, so that a hard link to it from anywhere is still gated.
//!
//! `FAN_OPEN_EXEC_PERM` on protected objects lets an exec open announce itself: the kernel sends
//! it first and then, for the same open, `FAN_OPEN_PERM`; the listener remembers the allowed exec
//! of (thread, inode) and knows the twin is no write without reading `/proc/<tid>/syscall`, which
//! would block on the exec'ing task's `cred_guard_mutex` (deadlock: it waits for our answer).
//!
//! Trees are walked without following symlinks and without entering other filesystems mounted
//! inside them (a note names each one; name it in a policy to protect it). Bind-mounted single
//! files inside a tree are marked. An inotify watcher follows the trees (new or moved-in
//! directories are walked and marked; new files get their own marks) and the parent directory
//! of every policy root (a gated binary or protected path whose name now points at a new inode,
//! e.g. after a package upgrade renamed a new file over it, is re-marked and logged). Roots are
//! also matched by (parent directory, name) so a replaced root is recognised by path.
//!
//! The listener thread answers every permission event. For a process the [`Scope`] says is no
//! agent it answers `FAN_ALLOW` at once (the hot path: one classification per open of a marked
//! object). For an agent process:
//!
//! - `FAN_OPEN_EXEC_PERM`: the exec rule for the inode (or, failing that, the (directory, name)
//!   of the path the binary was opened through);
//! - `FAN_OPEN_PERM`: the open flags from `/proc/<tid>/syscall` (`open`, `openat`, `creat`,
//!   `openat2` via `/proc/<tid>/mem`, `open_by_handle_at`; exec opens are reads). Read opens are
//!   allowed. A write open (`O_WRONLY`, `O_RDWR`, `O_TRUNC`, `O_CREAT`, `O_APPEND`) falls under
//!   the nearest protected object (the file, then each ancestor) with a rule covering
//!   `open_write` (or `create` for `O_CREAT`), so a nested `allow` rule carves an exception. If
//!   the flags cannot be determined (io_uring, kernel-internal opens, a 32-bit task, procfs
//!   blocked past 200 ms) the open counts as a write: fail closed, with a warning in the log.
//!
//! The verdict is [`crate::event::verdict_for`] (`approve` holds, `deny` denies, monitor mode
//! never denies nor holds); `audit` allows with an event, `allow` allows silently. Events go out
//! with `try_send` before the answer (lost ones are counted). Every permission event is answered
//! on every path, including panics (see [`Permission`]), and its fd closed.
//!
//! [`FanotifyBackend::apply`](Backend::apply) builds the new mark set on top of the old (adding
//! marks first), then publishes the new rules, then removes marks no longer needed, so an object
//! gated by both policies is never ungated in between. On error the marks it added are removed
//! and the old rules stay in force. An apply that only changes the agent set swaps the scope.
//!
//! # Holding for approval
//!
//! The permission event *is* the hold (`gate.rs`): for `approve` the listener first consults
//! the standing decisions (agent cgroup, op, object → allow/deny until a CLOCK_BOOTTIME
//! deadline; written by [`FanotifyGate`]'s [`standing`](crate::hold::Gate::standing)); a live
//! one decides at once (event `decided_by: agent_grant`). Otherwise it moves the [`Permission`]
//! into the table of parked permissions under a fresh token (unique across daemon restarts in
//! one boot), sends the event with verdict `held` and `hold_token`, and returns to other
//! events. If the event cannot be delivered the hold is denied at once (nobody would ever
//! decide it). The task waits in its syscall (state D: killable, invisible to job control, and
//! SIGCONT/SIGSTOP do nothing to it: verified). Nothing restarts, so every parked event is its
//! own holder; the request table de-duplicates. [`FanotifyGate::release`](crate::hold::Gate::release)
//! answers parked tokens (a token no longer parked is a no-op), sends SIGCONT (allow) or
//! SIGKILL (deny) to a process the exec backstop stopped (only if it still runs the held
//! image), and refuses `Restart` holders. Dropping the backend stops the threads, then denies
//! every parked permission, then closes the group; gates hold the backend weakly.
//!
//! A held exec carries its arguments: `/proc/<tid>/syscall` gives execve's `argv` pointer and
//! `process_vm_readv` reads up to [`airlock_common::ARGV_MAX`] × [`airlock_common::ARG_LEN`]
//! (`argv.rs`; readable while the exec waits on 6.8+ and verified on 6.18, run with the 200 ms
//! procfs deadline; `argv_hash` as the kernel side computes it).
//!
//! # Exec backstop
//!
//! When airlockd dies the kernel allows every pending permission event and closing the group
//! removes every mark. The pinned exec probe (`super::exec_context`) keeps watching agent
//! execs: a binary under an enforcing `deny`/`approve` rule that runs without an `EXEC_ALLOW`
//! entry is killed (deny) or stopped before its first instruction (approve), with an event in
//! the pinned ring for the restarted daemon. The listener writes `EXEC_ALLOW` (thread, binary)
//! right before it answers `FAN_ALLOW` for such an exec (an approved hold or a standing grant;
//! [`FanotifyBackend::set_backstop`]).

//! # Inode numbers are reused at once
//!
//! The kernel drops an inode's marks when its last link goes, and ext4 gives the freed number
//! to the next new file (seen here: a binary renamed over a gated one, then a new file in the
//! same directory got the old binary's inode number). So marks are always re-added rather than
//! trusted from bookkeeping, and the backend holds an `O_PATH` fd on every policy root object
//! the rules name by inode: the number cannot be reused while the rules name it, and when a
//! replaced root's link count drops to 0 its rule is dropped before the fd is closed.
//!
//! # Limits
//!
//! Verified on this host's kernel (6.18) by `agent/tests/fanotify_host.rs` where marked so.
//!
//! - **What airlockd's death leaves open**: writes and opens of protected files are ungated
//!   until it restarts (the marks go with the group), and pending held opens are *allowed* by
//!   the kernel as the group closes (held execs too, but see below). Execs of gated binaries
//!   stay covered by the pinned backstop (verified): `deny` binaries are SIGKILLed,
//!   `approve` binaries stopped (SIGSTOP) before their first instruction until a restarted
//!   daemon's decision sends SIGCONT or SIGKILL. The backstop does not cover: scripts (`#!`:
//!   the tracepoint sees the interpreter's inode), binaries matched only by (directory, name)
//!   after a replacement, monitor mode, and a stopped process that anyone allowed to signal it
//!   (the agent itself) resumes with SIGCONT; while stopped it is visible to job control.
//! - **Blind to** unlink, rename, link, chmod, chown, truncate(2) by path, mkdir, rmdir, symlink,
//!   mknod: fanotify has no permission events for them. An agent can therefore replace a
//!   protected file by renaming another file over it; the new inode is marked after an inotify
//!   round trip.
//! - **`O_CREAT` of a new file in a protected directory** (verified): fanotify's open
//!   permission fires after the file is created, so a denied `open(O_CREAT|O_EXCL)` leaves a
//!   new, empty file behind; the caller gets EPERM and no fd. An existing file is untouched.
//! - **`O_TRUNC` is checked before truncating** (verified): a denied `O_TRUNC` open (with
//!   `O_WRONLY`, `O_RDWR|O_CREAT`, or even `O_RDONLY`) leaves the content intact.
//! - **FIFOs, sockets and device nodes** inside protected trees are not gated on kernels 6.14
//!   and later (verified on 6.18: an agent's write-open of a FIFO succeeds), which send no
//!   permission events for special files. Older kernels send them; the event fds are opened
//!   `O_NONBLOCK` so that opening a FIFO for us cannot wait for the writer we are holding.
//! - **Replaced binaries and new directories** are marked after an inotify round trip: an exec
//!   or write in that short window is not gated.
//! - **Memory**: every marked inode is pinned in the inode cache (roughly 1 KiB each); protect
//!   trees, not whole filesystems. Non-agent processes pay one round trip to this daemon for
//!   every open of a marked object (and every exec of a gated binary).
//! - Other filesystems mounted inside a protected tree (btrfs subvolumes included) are not
//!   entered unless a policy names them; procfs refuses permission marks (an apply naming a
//!   procfs path fails and the previous policy stays).
//! - `/proc/<tid>/syscall` numbers are the native ABI's (x86_64, aarch64); other architectures
//!   and 32-bit tasks fail closed (their writable and read-only opens alike are denied when a
//!   rule covers the file). Reading it while the thread waits works (verified, including for a
//!   non-main thread and `openat2` through `/proc/<tid>/mem`).
//! - A mark whose object was moved out of its tree before the next apply cannot be found to be
//!   removed: it stays (harmless, no rule matches it, one round trip per open) until restart;
//!   [`FanotifyCounters::stale_marks`] counts them. A file hard-linked out of a protected tree
//!   stays gated; one moved out (link count 1) is not.
//! - Forked children inherit the group fd and the threads' stop pipe until they exec: a test
//!   (or any in-process user) that forks agents from the daemon's own process keeps the group
//!   alive while such a child waits; the stop pipe is poked, never merely closed, for that.
//! - The event carries no "flags unknown" marker (GateEvent has no field for it); such opens
//!   are logged as warnings and counted in [`FanotifyCounters::intent_unknown`].

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use airlock_common::{InodeKey, RuleRef};
use airlock_policy::{CompiledPolicy, ExecTarget, ProtectedTarget, RuleInfo};
use serde::Serialize;

use super::exec_context::ExecAllow;
use super::{Backend, BackendError, BackendKind, BackendStats, EventSender};
use crate::agents::{AgentMatch, AgentSet};

pub(crate) mod argv;
mod gate;
mod listener;
mod marks;
mod procfs;
mod rules;
mod sys;
mod watch;

pub use gate::FanotifyGate;
pub(crate) use sys::boottime_ns;
pub use sys::{Permission, Response};

use marks::{MarkState, Marker, RootKind};
use rules::Ruleset;

/// Errors of the fanotify backend.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// Creating the fanotify group failed (not root, or a kernel without fanotify permission
    /// events).
    #[error("fanotify_init: {0}")]
    Init(std::io::Error),
    /// Creating the inotify instance failed.
    #[error("inotify_init: {0}")]
    Inotify(std::io::Error),
    /// A backend thread could not be started.
    #[error("starting the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A policy root exists but cannot be opened.
    #[error("{path}: {source}")]
    Open {
        /// The path as resolved.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel refused a mark (e.g. a protected path on procfs, which allows no permission
    /// events).
    #[error("cannot mark {path}: {source}")]
    Mark {
        /// The object's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Decides whether a thread is an agent process. [`AgentSet`] is the real one; tests supply
/// their own. Called for every permission event, so it must be quick for non-agents.
pub trait Scope: Send + Sync {
    /// `tid` is a thread id (the group reports threads); `/proc/<tid>/…` works for it.
    fn classify(&self, tid: u32) -> Option<AgentMatch>;
}

impl Scope for AgentSet {
    fn classify(&self, tid: u32) -> Option<AgentMatch> {
        self.classify_pid(tid)
    }
}

/// No agents: everything is allowed (the scope before the first apply).
struct NoAgents;

impl Scope for NoAgents {
    fn classify(&self, _: u32) -> Option<AgentMatch> {
        None
    }
}

/// Counters kept by the listener.
#[derive(Default)]
pub(crate) struct Counters {
    events: AtomicU64,
    lost: AtomicU64,
    perm_events: AtomicU64,
    fast_allowed: AtomicU64,
    agent_allowed: AtomicU64,
    denied: AtomicU64,
    held: AtomicU64,
    intent_unknown: AtomicU64,
    errors: AtomicU64,
}

/// A snapshot of the backend's counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FanotifyCounters {
    /// Events delivered to the daemon.
    pub events: u64,
    /// Events dropped because the channel was full.
    pub lost: u64,
    /// Permission events received (answered, or parked now).
    pub perm_events: u64,
    /// Of those, from non-agent processes (allowed at once).
    pub fast_allowed: u64,
    /// Of those, from agent processes and allowed (at once, or released by an approval).
    pub agent_allowed: u64,
    /// Of those, denied (at once, or released by a denial, a timeout or shutdown).
    pub denied: u64,
    /// Holds parked so far (each is answered later and then also counted as allowed or
    /// denied).
    pub held: u64,
    /// Holds parked now, waiting for a decision.
    pub parked: u64,
    /// Agent opens whose flags could not be determined (treated as writes).
    pub intent_unknown: u64,
    /// Events whose handling panicked (answered with the fallback).
    pub errors: u64,
    /// Inodes marked now.
    pub marks: u64,
    /// Directories watched with inotify now.
    pub watches: u64,
    /// Marks that could not be removed because their object moved away.
    pub stale_marks: u64,
}

/// State shared with the listener thread.
pub(crate) struct Shared {
    group: Arc<OwnedFd>,
    ruleset: RwLock<Ruleset>,
    scope: RwLock<Arc<dyn Scope>>,
    counters: Counters,
    events: EventSender,
    holds: gate::Holds,
}

/// What an apply marks; an apply with the same targets only swaps the scope.
#[derive(Clone, PartialEq, Eq)]
struct Targets {
    rules: Vec<RuleInfo>,
    exec: Vec<ExecTarget>,
    protected: Vec<ProtectedTarget>,
}

/// The running fanotify backend. Dropping it stops its threads and closes the group, which
/// removes every mark.
pub struct FanotifyBackend {
    shared: Arc<Shared>,
    state: Arc<Mutex<MarkState>>,
    inotify: Arc<OwnedFd>,
    applied: Option<Targets>,
    notes: Vec<String>,
    /// Write end of the stop pipe: a byte written to it stops the threads.
    stop: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

impl FanotifyBackend {
    /// Creates the fanotify group and starts the listener and watcher threads. Nothing is
    /// gated until [`apply`](Backend::apply).
    pub fn start(events: EventSender) -> Result<Self, FanotifyError> {
        let group = Arc::new(sys::fanotify_init().map_err(FanotifyError::Init)?);
        let inotify = Arc::new(sys::inotify_init().map_err(FanotifyError::Inotify)?);
        let (stop_r, stop_w) = sys::pipe().map_err(FanotifyError::Init)?;
        let shared = Arc::new(Shared {
            group,
            ruleset: RwLock::new(Ruleset::default()),
            scope: RwLock::new(Arc::new(NoAgents)),
            counters: Counters::default(),
            events,
            holds: gate::Holds::new(),
        });
        let state = Arc::new(Mutex::new(MarkState::default()));
        let mut me = FanotifyBackend {
            shared,
            state,
            inotify,
            applied: None,
            notes: Vec::new(),
            stop: Some(stop_w),
            threads: Vec::new(),
        };
        let thread = |what| move |source| FanotifyError::Thread { what, source };
        let stop2 = stop_r.try_clone().map_err(thread("watcher"))?;
        let l = listener::Listener::new(me.shared.clone());
        let h = std::thread::Builder::new()
            .name("airlock-fan".into())
            .spawn(move || l.run(stop_r));
        me.threads.push(h.map_err(thread("listener"))?);
        let (shared, st, ino) = (me.shared.clone(), me.state.clone(), me.inotify.clone());
        let h = std::thread::Builder::new()
            .name("airlock-inotify".into())
            .spawn(move || watch::watch_loop(&shared, &st, &ino, stop2));
        me.threads.push(h.map_err(thread("watcher"))?);
        Ok(me)
    }

    /// [`Backend::apply`] with an explicit scope (tests pass a fake classifier).
    pub fn apply_scoped(
        &mut self,
        policy: &CompiledPolicy,
        scope: Arc<dyn Scope>,
    ) -> Result<(), FanotifyError> {
        let targets = Targets {
            rules: policy.rules.clone(),
            exec: policy.exec.clone(),
            protected: policy.protected.clone(),
        };
        if self.applied.as_ref() == Some(&targets) {
            *self.shared.scope.write().unwrap_or_else(|e| e.into_inner()) = scope;
            return Ok(());
        }
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        let group = self.shared.group.as_fd();
        let tree_roots = policy
            .protected
            .iter()
            .filter_map(|t| {
                sys::lstat(&t.canonical)
                    .ok()
                    .filter(|id| id.is_dir())
                    .map(|id| id.key)
            })
            .collect();
        let mut m = Marker::new(group, self.inotify.as_fd(), &st.marks, &tree_roots);
        let mut rs = Ruleset::new(airlock_policy::Scopes::of(policy));
        if let Err(e) = build(&mut m, policy, &mut rs) {
            for (key, bits) in &m.added {
                if let Some(rec) = m.marks.get(key) {
                    marks::remove_bits(group, *key, rec, *bits);
                }
            }
            for wd in m.watches.keys().filter(|wd| !st.watches.contains_key(wd)) {
                sys::inotify_unwatch(self.inotify.as_fd(), *wd);
            }
            return Err(e);
        }
        let marks::Batch {
            marks: new_marks,
            watches: new_watches,
            members,
            held,
            notes,
        } = m.finish();
        rs.members = members;
        *self
            .shared
            .ruleset
            .write()
            .unwrap_or_else(|e| e.into_inner()) = rs;
        *self.shared.scope.write().unwrap_or_else(|e| e.into_inner()) = scope;
        for (key, rec) in &st.marks {
            let extra = rec.mask & !new_marks.get(key).map_or(0, |r| r.mask);
            if extra != 0 && !marks::remove_bits(group, *key, rec, extra) {
                st.stale += 1;
            }
        }
        for wd in st.watches.keys().filter(|wd| !new_watches.contains_key(wd)) {
            sys::inotify_unwatch(self.inotify.as_fd(), *wd);
        }
        for n in &notes {
            tracing::warn!(note = %n, "fanotify backend");
        }
        (st.marks, st.watches, st.tree_roots, st.held) = (new_marks, new_watches, tree_roots, held);
        drop(guard);
        self.notes = notes;
        self.applied = Some(targets);
        Ok(())
    }

    /// The backend's side of holds: releases parked permission events and stopped execs,
    /// keeps standing decisions. Holds the backend weakly (it never keeps the group open).
    pub fn gate(&self) -> Arc<dyn crate::hold::Gate> {
        self.fanotify_gate()
    }

    /// [`Self::gate`] as its concrete type (for [`FanotifyGate::is_parked`]).
    pub fn fanotify_gate(&self) -> Arc<FanotifyGate> {
        Arc::new(FanotifyGate {
            shared: Arc::downgrade(&self.shared),
        })
    }

    /// Connects the exec backstop: every agent exec this backend allows under an enforcing
    /// `deny`/`approve` rule gets an `EXEC_ALLOW` entry first, so that the tracepoint lets it
    /// run. Call before the first [`apply`](Backend::apply) once the probe's backstop is
    /// armed; `None` disconnects.
    pub fn set_backstop(&self, allow: Option<Arc<ExecAllow>>) {
        self.shared.holds.set_backstop(allow);
    }

    /// Things the last apply could not do fully (unmarked mounts, missing paths, watch limits).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// All counters.
    pub fn counters(&self) -> FanotifyCounters {
        let c = &self.shared.counters;
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        FanotifyCounters {
            events: c.events.load(Relaxed),
            lost: c.lost.load(Relaxed),
            perm_events: c.perm_events.load(Relaxed),
            fast_allowed: c.fast_allowed.load(Relaxed),
            agent_allowed: c.agent_allowed.load(Relaxed),
            denied: c.denied.load(Relaxed),
            held: c.held.load(Relaxed),
            parked: self.shared.holds.parked_count() as u64,
            intent_unknown: c.intent_unknown.load(Relaxed),
            errors: c.errors.load(Relaxed),
            marks: st.marks.len() as u64,
            watches: st.watches.len() as u64,
            stale_marks: st.stale,
        }
    }
}

/// Marks every root of `policy` and fills `rs`.
fn build(
    m: &mut Marker<'_>,
    policy: &CompiledPolicy,
    rs: &mut Ruleset,
) -> Result<(), FanotifyError> {
    let mut protected: BTreeMap<&PathBuf, Vec<RuleRef>> = BTreeMap::new();
    for t in &policy.protected {
        protected.entry(&t.canonical).or_default().push(t.rule);
    }
    for (path, rules) in protected {
        if m.protect_root(path, &rules, rs)?.is_none() {
            m.notes.push(format!(
                "protected path {} does not exist; it is gated once created",
                path.display()
            ));
        }
        if let Some(e) = m.follow_root(path, RootKind::Protected(rules.clone())) {
            for r in rules {
                rs.add_protected_entry(e.clone(), r);
            }
        }
    }
    let mut exec: BTreeMap<&PathBuf, (Vec<RuleRef>, Option<InodeKey>)> = BTreeMap::new();
    for t in &policy.exec {
        exec.entry(&t.canonical)
            .or_insert_with(|| (Vec::new(), t.inode))
            .0
            .push(t.rule);
    }
    for (path, (rules, compiled)) in exec {
        match m.gate_binary(path, &rules, rs)? {
            None => m.notes.push(format!(
                "gated binary {} is not installed; it is gated once installed",
                path.display()
            )),
            Some(k) if compiled.is_some_and(|c| c != k) => m.notes.push(format!(
                "gated binary {} changed since the policy was compiled; gating inode {}",
                path.display(),
                k.ino
            )),
            Some(_) => {}
        }
        if let Some(e) = m.follow_root(path, RootKind::Exec(rules.clone())) {
            for r in rules {
                rs.add_exec_entry(e.clone(), r);
            }
        }
    }
    if !policy.privilege.is_empty() {
        m.notes.push(
            "privilege rules (setuid, setgid, userns, caps) are not enforced: the fanotify fallback \
             cannot see credential changes (BPF LSM only)"
                .to_owned(),
        );
    }
    let sockets = policy.connect.iter().map(|t| &t.canonical);
    for p in sockets.chain(policy.connect_wild.iter().map(|t| &t.path)) {
        m.notes.push(format!(
            "socket {} is not gated: the fanotify fallback cannot see connect(2) (BPF LSM only)",
            p.display()
        ));
    }
    Ok(())
}

impl Drop for FanotifyBackend {
    /// Stops the threads, then denies every parked hold (nobody is left to decide it), then
    /// closes the group (with the last `Arc` of `shared`; gates hold it weakly).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            sys::poke(stop.as_fd());
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.shared.answer_all_parked(Response::Deny);
    }
}

impl Backend for FanotifyBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fanotify
    }
    fn is_alive(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }
    fn set_backstop(&self, allow: Option<Arc<ExecAllow>>) {
        FanotifyBackend::set_backstop(self, allow);
    }
    fn apply(&mut self, policy: &CompiledPolicy, agents: &AgentSet) -> Result<(), BackendError> {
        Ok(self.apply_scoped(policy, Arc::new(agents.clone()))?)
    }
    fn stats(&self) -> BackendStats {
        let c = &self.shared.counters;
        BackendStats {
            events: c.events.load(Relaxed),
            lost: c.lost.load(Relaxed),
        }
    }
}
