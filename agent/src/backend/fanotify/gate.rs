//! Holds on the fanotify backend: permission events parked while a person decides, standing
//! decisions the listener applies without asking, and [`FanotifyGate`], the backend's side of
//! [`crate::hold::Gate`].
//!
//! A parked permission event *is* the hold: its task waits in the kernel (state D, killable,
//! invisible to job control, deaf to SIGCONT: verified) until [`Permission::respond`] answers
//! it, from whichever thread decides. Nothing restarts, so nothing here de-duplicates: every
//! parked event is its own holder, and the request table groups them.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use airlock_common::InodeKey;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Shared;
use super::sys::{self, Permission, Response};
use crate::backend::exec_context::ExecAllow;
use crate::event::Op;
use crate::hold::{Gate, GateError, HoldKey, HoldKind, Holder, Release, Standing};

/// How long an allowed exec open waits for its `FAN_OPEN_PERM` twin.
const EXEC_TWIN_WINDOW: Duration = Duration::from_secs(1);

/// The open a permission event stands for, and what answering it must also do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opening {
    pub tid: u32,
    pub file: InodeKey,
    /// An exec open (`FAN_OPEN_EXEC_PERM`).
    pub exec: bool,
    /// Allowing it needs an `EXEC_ALLOW` entry, or the exec backstop stops the new image.
    pub backstop: bool,
}

struct Parked {
    permit: Permission,
    opening: Opening,
}

/// (agent cgroup, op, object).
type StandingKey = (u64, Op, u32, u64);

/// Hold state shared by the listener, the backend and its gate.
pub(crate) struct Holds {
    next_token: AtomicU64,
    parked: Mutex<HashMap<u64, Parked>>,
    standing: Mutex<HashMap<StandingKey, (Release, Option<u64>)>>,
    backstop: RwLock<Option<Arc<ExecAllow>>>,
    /// Agent threads whose exec open of this inode was just allowed: the `FAN_OPEN_PERM` that
    /// the kernel sends next for the same open is an exec, not a write.
    twins: Mutex<HashMap<u32, (InodeKey, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Holds {
    pub fn new() -> Holds {
        Holds {
            // Tokens stay unique across daemon restarts within a boot (a restored request
            // naming an old token must never answer a new event): start at the boot clock.
            next_token: AtomicU64::new(sys::boottime_ns()),
            parked: Mutex::new(HashMap::new()),
            standing: Mutex::new(HashMap::new()),
            backstop: RwLock::new(None),
            twins: Mutex::new(HashMap::new()),
        }
    }

    /// Parks `permit`; returns its token.
    pub fn park(&self, permit: Permission, opening: Opening) -> u64 {
        let token = self.next_token.fetch_add(1, Relaxed);
        lock(&self.parked).insert(token, Parked { permit, opening });
        token
    }

    /// Takes a parked permission out of the table.
    pub fn unpark(&self, token: u64) -> Option<(Permission, Opening)> {
        lock(&self.parked)
            .remove(&token)
            .map(|p| (p.permit, p.opening))
    }

    pub fn is_parked(&self, token: u64) -> bool {
        lock(&self.parked).contains_key(&token)
    }

    pub fn parked_count(&self) -> usize {
        lock(&self.parked).len()
    }

    /// Takes out the parked permissions whose thread is gone (killed while it waited: the
    /// kernel dropped the event, and no request will ever be released for it).
    fn take_dead(&self) -> Vec<(Permission, Opening)> {
        let mut t = lock(&self.parked);
        let dead: Vec<u64> = t
            .iter()
            .filter(|(_, p)| !thread_alive(p.opening.tid))
            .map(|(k, _)| *k)
            .collect();
        dead.into_iter()
            .filter_map(|k| t.remove(&k))
            .map(|p| (p.permit, p.opening))
            .collect()
    }

    /// Every parked permission, emptying the table.
    fn drain(&self) -> Vec<(Permission, Opening)> {
        lock(&self.parked)
            .drain()
            .map(|(_, p)| (p.permit, p.opening))
            .collect()
    }

    /// The live standing decision for this cgroup's `op` on `file`, if any (expired ones are
    /// dropped on the way).
    pub fn standing(&self, cgroup_id: u64, op: Op, file: InodeKey) -> Option<Release> {
        let mut t = lock(&self.standing);
        let key = (cgroup_id, op, file.dev, file.ino);
        let (release, until) = *t.get(&key)?;
        if until.is_some_and(|u| sys::boottime_ns() >= u) {
            t.remove(&key);
            return None;
        }
        Some(release)
    }

    fn set_standing(&self, s: &Standing) {
        let mut t = lock(&self.standing);
        let now = sys::boottime_ns();
        t.retain(|_, (_, until)| until.is_none_or(|u| u > now));
        t.insert(
            (s.cgroup_id, s.op, s.dev, s.ino),
            (s.release, s.until_boot_ns),
        );
    }

    pub fn set_backstop(&self, allow: Option<Arc<ExecAllow>>) {
        *self.backstop.write().unwrap_or_else(|e| e.into_inner()) = allow;
    }

    /// Consumes the twin mark of `tid`, if it names `file` and is fresh.
    pub fn take_twin(&self, tid: u32, file: InodeKey) -> bool {
        lock(&self.twins)
            .remove(&tid)
            .is_some_and(|(k, t)| k == file && t.elapsed() < EXEC_TWIN_WINDOW)
    }

    fn note_twin(&self, tid: u32, file: InodeKey) {
        let mut t = lock(&self.twins);
        if t.len() > 1024 {
            t.retain(|_, (_, at)| at.elapsed() < EXEC_TWIN_WINDOW);
        }
        t.insert(tid, (file, Instant::now()));
    }
}

impl Shared {
    /// Answers a permission event (the listener's and the gate's one way out): an allowed exec
    /// first gets its `EXEC_ALLOW` entry (before the answer, so the tracepoint finds it) and
    /// its twin mark.
    pub(crate) fn answer(&self, permit: Permission, r: Response, o: &Opening) {
        if r == Response::Allow && o.exec {
            if o.backstop {
                let handle = self
                    .holds
                    .backstop
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(h) = handle
                    && let Err(e) = h.allow(o.tid, o.file)
                {
                    tracing::error!(error = %e, tid = o.tid, "EXEC_ALLOW insert failed; the backstop will stop this exec");
                }
            }
            self.holds.note_twin(o.tid, o.file);
        }
        let c = match r {
            Response::Allow => &self.counters.agent_allowed,
            Response::Deny => &self.counters.denied,
        };
        c.fetch_add(1, Relaxed);
        permit.respond(r);
    }

    /// Drops parked permissions whose thread is gone (answered with deny, which the kernel
    /// ignores). The listener calls it when the table grows.
    pub(crate) fn sweep_dead_parked(&self) {
        for (p, o) in self.holds.take_dead() {
            self.answer(p, Response::Deny, &o);
        }
    }

    /// Answers every parked permission with `r` (the backend is going away).
    pub(crate) fn answer_all_parked(&self, r: Response) {
        for (p, o) in self.holds.drain() {
            self.answer(p, r, &o);
        }
    }
}

fn response(r: Release) -> Response {
    match r {
        Release::Allow => Response::Allow,
        Release::Deny => Response::Deny,
    }
}

/// The fanotify backend's [`Gate`]: answers parked permission events, signals processes the
/// exec backstop stopped, and keeps the standing decisions the listener consults. Holds the
/// backend weakly: once the backend is dropped (every parked event answered, the group
/// closed) releasing a parked holder is a no-op.
pub struct FanotifyGate {
    pub(crate) shared: Weak<Shared>,
}

impl FanotifyGate {
    /// Is the permission event `token` still parked (not answered yet)?
    pub fn is_parked(&self, token: u64) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|s| s.holds.is_parked(token))
    }

    /// Does `h` still wait on request `key` (for the request table's `alive` / `still_held`)?
    /// Parked: its permission event is parked here and its thread lives (a dead one's is
    /// dropped); after a daemon restart every old token reads as gone (the kernel allowed those
    /// events when the old group closed). AfterExec: the process still runs the held image.
    /// Restart holders never exist on this backend.
    pub fn holder_alive(&self, key: &HoldKey, h: &Holder) -> bool {
        match h.how {
            HoldKind::Parked { token } => {
                let Some(shared) = self.shared.upgrade() else {
                    return false;
                };
                if !shared.holds.is_parked(token) {
                    return false;
                }
                if thread_alive(h.tid) {
                    return true;
                }
                shared.sweep_dead_parked();
                false
            }
            HoldKind::AfterExec => runs_image(h.tgid, key),
            HoldKind::Restart => false,
        }
    }
}

/// Is thread `tid` there and not a zombie?
fn thread_alive(tid: u32) -> bool {
    crate::proc::alive(tid)
}

/// Is process `tgid` still running the image the backstop stopped (so that a signal meant for
/// it cannot hit a process that reused its pid)?
fn runs_image(tgid: u32, key: &HoldKey) -> bool {
    std::fs::metadata(Path::new(&format!("/proc/{tgid}/exe")))
        .map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            let k = sys::inode_key(m.dev(), m.ino());
            (k.dev, k.ino) == (key.dev, key.ino)
        })
        .unwrap_or(false)
}

impl Gate for FanotifyGate {
    fn release(&self, key: &HoldKey, holders: &[Holder], how: Release) -> Result<(), GateError> {
        let mut first_err = None;
        for h in holders {
            let r = match h.how {
                HoldKind::Parked { token } => {
                    // Not parked (answered at shutdown, or by an earlier release): nothing to do.
                    if let Some(shared) = self.shared.upgrade()
                        && let Some((permit, opening)) = shared.holds.unpark(token)
                    {
                        shared.answer(permit, response(how), &opening);
                    }
                    Ok(())
                }
                HoldKind::AfterExec if !runs_image(h.tgid, key) => Ok(()),
                HoldKind::AfterExec => {
                    let (sig, name) = match how {
                        Release::Allow => (Signal::SIGCONT, "SIGCONT"),
                        Release::Deny => (Signal::SIGKILL, "SIGKILL"),
                    };
                    match kill(Pid::from_raw(h.tgid as i32), sig) {
                        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
                        Err(source) => Err(GateError::Signal {
                            signal: name,
                            pid: h.tgid,
                            source,
                        }),
                    }
                }
                HoldKind::Restart => Err(GateError::Unsupported {
                    backend: "fanotify",
                    kind: "restart",
                }),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn standing(&self, s: &Standing) -> Result<(), GateError> {
        if let Some(shared) = self.shared.upgrade() {
            shared.holds.set_standing(s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> InodeKey {
        InodeKey {
            ino,
            dev: 8 << 20,
            slot: 0,
        }
    }

    #[test]
    fn standing_decisions_apply_per_cgroup_op_and_object_until_they_expire() {
        let h = Holds::new();
        let now = sys::boottime_ns();
        let s = |cgroup_id, release, until_boot_ns| Standing {
            cgroup_id,
            op: Op::Exec,
            dev: 8 << 20,
            ino: 5,
            release,
            until_boot_ns,
        };
        h.set_standing(&s(1, Release::Allow, Some(now + 60_000_000_000)));
        h.set_standing(&s(2, Release::Deny, None));
        h.set_standing(&s(3, Release::Allow, Some(now.saturating_sub(1))));
        assert_eq!(h.standing(1, Op::Exec, key(5)), Some(Release::Allow));
        assert_eq!(h.standing(2, Op::Exec, key(5)), Some(Release::Deny));
        assert_eq!(h.standing(3, Op::Exec, key(5)), None, "expired");
        assert_eq!(h.standing(1, Op::OpenWrite, key(5)), None, "another op");
        assert_eq!(h.standing(1, Op::Exec, key(6)), None, "another object");
        assert_eq!(h.standing(4, Op::Exec, key(5)), None, "another cgroup");
    }

    #[test]
    fn twins_are_consumed_once_and_only_for_their_inode() {
        let h = Holds::new();
        h.note_twin(7, key(1));
        assert!(!h.take_twin(7, key(2)));
        h.note_twin(7, key(1));
        assert!(h.take_twin(7, key(1)));
        assert!(!h.take_twin(7, key(1)));
    }

    #[test]
    fn a_gate_without_its_backend_releases_nothing_and_fails_nothing() {
        let g = FanotifyGate {
            shared: Weak::new(),
        };
        let k = HoldKey {
            tgid: 1,
            op: Op::Exec,
            dev: 0,
            ino: 0,
            argv_hash: 0,
        };
        let parked = Holder {
            tid: 1,
            tgid: 1,
            how: HoldKind::Parked { token: 9 },
        };
        assert!(g.release(&k, &[parked], Release::Allow).is_ok());
        assert!(!g.is_parked(9));
        let restart = Holder {
            how: HoldKind::Restart,
            ..parked
        };
        assert!(matches!(
            g.release(&k, &[restart], Release::Allow),
            Err(GateError::Unsupported { .. })
        ));
        // pid 1 does not run inode 0: no signal is sent.
        let after = Holder {
            how: HoldKind::AfterExec,
            ..parked
        };
        assert!(g.release(&k, &[after], Release::Deny).is_ok());
    }
}
