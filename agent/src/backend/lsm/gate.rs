//! Releasing LSM holds and writing standing decisions: the kernel side of [`crate::hold::Gate`].
//!
//! A held task is stopped (SIGSTOP) with its syscall set to restart. Releasing it writes a
//! once-grant for exactly that thread and request into `ONCE_GRANTS`, then sends SIGCONT: the
//! restarted syscall finds the grant at the gate, consumes it and completes (or fails with
//! EPERM). The grant is written before the signal, so the restart can never miss it.
//!
//! SIGSTOP stops the whole process, so threads of it that were about to do the same thing
//! reach the gate only after SIGCONT, when the request is already decided. They are part of
//! the same request (one request per process, op, object and arguments): each thread of the
//! process that is not a holder gets the same decision once, for [`JOIN_GRACE`] only, so that
//! it is neither held again as a new request nor able to use the decision later.
use std::collections::HashSet;
use std::sync::Mutex;

use airlock_common::{AgentGrantKey, GRANT_FOREVER, Grant, OnceKey, verdict};
use aya::maps::{HashMap, MapData};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::hold::{Gate, GateError, HoldKey, HoldKind, Holder, ONCE_GRACE, Release, Standing};

/// The LSM backend's [`Gate`]: owns the grant maps (shared with the programs through the kernel).
pub struct LsmGate {
    once: Mutex<HashMap<MapData, OnceKey, Grant>>,
    agent: Mutex<HashMap<MapData, AgentGrantKey, Grant>>,
}

/// How long threads of a released process that were not held themselves may use the decision
/// (once each): enough for stopped threads to be scheduled again after SIGCONT, short enough
/// that it never stands in for a later decision.
pub const JOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// CLOCK_BOOTTIME in ns: what the programs compare grant expiries with (`bpf_ktime_get_boot_ns`).
fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn verdict_of(how: Release) -> u32 {
    match how {
        Release::Allow => verdict::ALLOWED,
        Release::Deny => verdict::DENIED,
    }
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> GateError {
    move |source| GateError::Map { name, source }
}

/// Removes entries whose `expires_ns` has passed (once-grants of threads that died while held,
/// standing grants that ran out), so the fixed-size maps never fill up with dead decisions.
fn sweep<K: aya::Pod + Eq>(map: &mut HashMap<MapData, K, Grant>, now: u64) {
    let dead: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, g)| g.expires_ns != GRANT_FOREVER && g.expires_ns <= now)
        .map(|(k, _)| k)
        .collect();
    for k in dead {
        let _ = map.remove(&k);
    }
}

impl LsmGate {
    pub(crate) fn new(
        once: HashMap<MapData, OnceKey, Grant>,
        agent: HashMap<MapData, AgentGrantKey, Grant>,
    ) -> LsmGate {
        LsmGate {
            once: Mutex::new(once),
            agent: Mutex::new(agent),
        }
    }
}

/// The once-grant keys for releasing `holders` of `key` (all must be LSM restart holds).
pub(crate) fn once_keys(key: &HoldKey, holders: &[Holder]) -> Result<Vec<OnceKey>, GateError> {
    holders
        .iter()
        .map(|h| match h.how {
            HoldKind::Restart => Ok(OnceKey {
                tid: h.tid,
                op: key.op.raw(),
                ino: key.ino,
                dev: key.dev,
                _pad: 0,
                argv_hash: key.argv_hash,
            }),
            HoldKind::Parked { .. } => Err(GateError::Unsupported {
                backend: "lsm",
                kind: "parked",
            }),
            HoldKind::AfterExec => Err(GateError::Unsupported {
                backend: "lsm",
                kind: "after_exec",
            }),
        })
        .collect()
}

/// Threads of process `tgid` (empty when it is gone).
fn threads_of(tgid: u32) -> Vec<u32> {
    crate::proc::threads(tgid)
}

/// Once-keys for the threads of the holders' processes that are not holders themselves.
pub(crate) fn sibling_keys(
    key: &HoldKey,
    holders: &[Holder],
    threads: impl Fn(u32) -> Vec<u32>,
) -> Vec<OnceKey> {
    let held: HashSet<u32> = holders.iter().map(|h| h.tid).collect();
    processes(holders)
        .into_iter()
        .flat_map(&threads)
        .filter(|tid| !held.contains(tid))
        .map(|tid| OnceKey {
            tid,
            op: key.op.raw(),
            ino: key.ino,
            dev: key.dev,
            _pad: 0,
            argv_hash: key.argv_hash,
        })
        .collect()
}

/// Distinct processes of `holders`, in order: each gets one SIGCONT (it resumes every thread).
pub(crate) fn processes(holders: &[Holder]) -> Vec<u32> {
    let mut seen = HashSet::new();
    holders
        .iter()
        .map(|h| h.tgid)
        .filter(|t| seen.insert(*t))
        .collect()
}

impl Gate for LsmGate {
    fn release(&self, key: &HoldKey, holders: &[Holder], how: Release) -> Result<(), GateError> {
        // Every holder is checked before anything is written: an unsupported one changes nothing.
        let keys = once_keys(key, holders)?;
        let siblings = sibling_keys(key, holders, threads_of);
        let now = boottime_ns();
        let grant = Grant {
            expires_ns: now + ONCE_GRACE.as_nanos() as u64,
            verdict: verdict_of(how),
            _pad: 0,
        };
        let join = Grant {
            expires_ns: now + JOIN_GRACE.as_nanos() as u64,
            ..grant
        };
        {
            let mut once = self.once.lock().unwrap_or_else(|p| p.into_inner());
            sweep(&mut once, now);
            for k in &keys {
                once.insert(k, grant, 0).map_err(map_err("ONCE_GRANTS"))?;
            }
            for k in &siblings {
                once.insert(k, join, 0).map_err(map_err("ONCE_GRANTS"))?;
            }
        }
        for tgid in processes(holders) {
            match kill(Pid::from_raw(tgid as i32), Signal::SIGCONT) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(GateError::Signal {
                        signal: "SIGCONT",
                        pid: tgid,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn standing(&self, s: &Standing) -> Result<(), GateError> {
        let key = AgentGrantKey {
            cgroup_id: s.cgroup_id,
            ino: s.ino,
            dev: s.dev,
            op: s.op.raw(),
        };
        let grant = Grant {
            expires_ns: s.until_boot_ns.unwrap_or(GRANT_FOREVER),
            verdict: verdict_of(s.release),
            _pad: 0,
        };
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        sweep(&mut agent, boottime_ns());
        agent.insert(key, grant, 0).map_err(map_err("AGENT_GRANTS"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;

    fn key() -> HoldKey {
        HoldKey {
            tgid: 10,
            op: Op::Exec,
            dev: (8 << 20) | 1,
            ino: 77,
            argv_hash: 0xfeed,
        }
    }

    #[test]
    fn once_keys_bind_thread_op_object_and_argv() {
        let holders = [
            Holder {
                tid: 11,
                tgid: 10,
                how: HoldKind::Restart,
            },
            Holder {
                tid: 12,
                tgid: 10,
                how: HoldKind::Restart,
            },
        ];
        let keys = once_keys(&key(), &holders).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[0],
            OnceKey {
                tid: 11,
                op: airlock_common::op::EXEC,
                ino: 77,
                dev: (8 << 20) | 1,
                _pad: 0,
                argv_hash: 0xfeed
            }
        );
        assert_eq!(keys[1].tid, 12);
    }

    #[test]
    fn parked_and_after_exec_holders_are_not_ours() {
        let parked = [
            Holder {
                tid: 11,
                tgid: 10,
                how: HoldKind::Restart,
            },
            Holder {
                tid: 12,
                tgid: 10,
                how: HoldKind::Parked { token: 3 },
            },
        ];
        assert!(matches!(
            once_keys(&key(), &parked),
            Err(GateError::Unsupported { backend: "lsm", .. })
        ));
        let after = [Holder {
            tid: 11,
            tgid: 10,
            how: HoldKind::AfterExec,
        }];
        assert!(matches!(
            once_keys(&key(), &after),
            Err(GateError::Unsupported { .. })
        ));
    }

    #[test]
    fn threads_that_were_not_held_get_the_same_key_and_holders_are_not_repeated() {
        let holders = [Holder {
            tid: 11,
            tgid: 10,
            how: HoldKind::Restart,
        }];
        let keys = sibling_keys(&key(), &holders, |tgid| {
            if tgid == 10 { vec![10, 11, 12] } else { vec![] }
        });
        assert_eq!(keys.iter().map(|k| k.tid).collect::<Vec<_>>(), vec![10, 12]);
        assert!(
            keys.iter()
                .all(|k| k.op == airlock_common::op::EXEC && k.ino == 77 && k.argv_hash == 0xfeed)
        );
    }

    #[test]
    fn one_sigcont_per_process() {
        let holders = [
            Holder {
                tid: 11,
                tgid: 10,
                how: HoldKind::Restart,
            },
            Holder {
                tid: 21,
                tgid: 20,
                how: HoldKind::Restart,
            },
            Holder {
                tid: 12,
                tgid: 10,
                how: HoldKind::Restart,
            },
        ];
        assert_eq!(processes(&holders), vec![10, 20]);
    }

    #[test]
    fn boottime_is_monotonic_and_nonzero() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a);
    }
}
