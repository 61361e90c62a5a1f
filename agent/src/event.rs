//! Flagged actions as userspace sees them, whichever backend produced them.
//!
//! The LSM backend decodes [`airlock_common::Event`] records from its ring buffer; the fanotify
//! backend builds the same [`GateEvent`] from a permission event and procfs. Both then go through
//! one channel to the daemon, which enriches and records them.
use airlock_common::{ARG_LEN, ARGV_MAX, COMM_LEN, Event, NAME_LEN, action, flags, op, verdict};
use serde::Serialize;

/// Errors decoding a kernel event record.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event record is {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
    #[error("event has unknown {field} value {value}")]
    Unknown { field: &'static str, value: u32 },
}

pub use airlock_approval::Op;

/// The action a rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Audit,
    Deny,
    Approve,
}

impl Action {
    /// Decodes an [`airlock_common::action`] value.
    pub fn from_raw(v: u32) -> Option<Action> {
        Some(match v {
            action::ALLOW => Action::Allow,
            action::AUDIT => Action::Audit,
            action::DENY => Action::Deny,
            action::APPROVE => Action::Approve,
            _ => return None,
        })
    }
}

/// What happened to the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    Denied,
    /// Held for a decision: the task waits inside the syscall.
    Held,
}

impl Verdict {
    /// Decodes an [`airlock_common::verdict`] value.
    pub fn from_raw(v: u32) -> Option<Verdict> {
        Some(match v {
            verdict::ALLOWED => Verdict::Allowed,
            verdict::DENIED => Verdict::Denied,
            verdict::HELD => Verdict::Held,
            _ => return None,
        })
    }
}

/// One flagged action.
#[derive(Clone, Debug, Serialize)]
pub struct GateEvent {
    /// Which backend saw it: "lsm" or "fanotify".
    pub backend: &'static str,
    /// CLOCK_BOOTTIME nanoseconds when the kernel (or the fanotify listener) saw it.
    pub ktime_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub op: Op,
    /// Kernel `s_dev` of the target (MAJOR<<20 | MINOR).
    pub target_dev: u32,
    pub target_ino: u64,
    /// Last path component as the kernel saw it.
    pub target_name: String,
    /// Full path when the backend knows it (fanotify does; LSM fills it in userspace later).
    pub target_path: Option<String>,
    pub rule_id: u32,
    pub action: Action,
    pub verdict: Verdict,
    /// The policy was in monitor mode: `verdict` is what happened, `action` what would have.
    pub monitor: bool,
    /// The target name was cut at the kernel's buffer size.
    pub name_truncated: bool,
    /// Matched by (directory, name) rather than inode: the binary was replaced at its path.
    pub matched_by_entry: bool,
    /// Matched by content (SHA-256) rather than inode or path: a byte-identical copy of a
    /// gated binary (LSM backend).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub matched_by_content: bool,
    /// Refused because the file has a gated binary's size but its content could not be
    /// identified (fail closed; LSM backend).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unidentified: bool,
    /// exec only: the arguments as captured when the syscall was gated (bounded: see
    /// [`airlock_common::ARGV_MAX`]); empty for other operations or when unknown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// Some argument was cut, or there were more than fit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// exec only: [`airlock_common::argv_hash`] of the captured arguments (binds once-grants).
    #[serde(skip_serializing_if = "is_zero")]
    pub argv_hash: u64,
    /// An approve rule matched but the hold could not be kept (io_uring, a traced task), so
    /// the action was refused instead of held (see [`flags::UNHOLDABLE`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unholdable: bool,
    /// Which standing decision let the action through or failed it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
    /// fanotify only: the parked permission event this hold waits on (see
    /// `backend::fanotify::Parked`); never serialized.
    #[serde(skip)]
    pub hold_token: Option<u64>,
}

/// Which standing decision an event was decided by (rather than by the rule alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// A once-decision bound to this thread's held request, consumed by this attempt.
    Once,
    /// An agent-wide grant (`approve --for`) or denial (`deny --always`).
    AgentGrant,
    /// The fallback's exec backstop (no daemon decided the exec).
    Backstop,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Decodes the kernel's argv slots: at most `argc` of them, each up to its first NUL.
pub fn decode_argv(argc: u32, slots: &[[u8; ARG_LEN]; ARGV_MAX]) -> (Vec<String>, bool) {
    let n = (argc as usize).min(ARGV_MAX);
    let mut cut = argc as usize > ARGV_MAX;
    let v = slots[..n]
        .iter()
        .map(|s| {
            let end = s.iter().position(|&b| b == 0).unwrap_or(ARG_LEN);
            cut |= end >= ARG_LEN - 1;
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .collect();
    (v, cut)
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl GateEvent {
    /// Decodes a raw ring-buffer record.
    pub fn decode(backend: &'static str, bytes: &[u8]) -> Result<GateEvent, EventError> {
        let want = core::mem::size_of::<Event>();
        if bytes.len() < want {
            return Err(EventError::Size {
                got: bytes.len(),
                want,
            });
        }
        // SAFETY: Event is repr(C) POD and the slice holds at least size_of::<Event>() bytes;
        // read_unaligned copes with the ring buffer's 8-byte alignment.
        let ev: Event = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
        Self::from_raw(backend, &ev)
    }

    /// Converts a kernel-layout event.
    pub fn from_raw(backend: &'static str, ev: &Event) -> Result<GateEvent, EventError> {
        let unknown = |field, value| EventError::Unknown { field, value };
        // The exec'd program's name, for privilege changes made by an exec.
        let exe = c_str(&ev.name[..NAME_LEN]);
        let at_exec = |before: &str, after: &str| {
            if exe.is_empty() {
                String::new()
            } else {
                format!("{before}{exe}{after}")
            }
        };
        Ok(GateEvent {
            backend,
            ktime_ns: ev.ktime_ns,
            pid: ev.pid,
            tgid: ev.tgid,
            ppid: ev.ppid,
            uid: ev.uid,
            euid: ev.euid,
            cgroup_id: ev.cgroup_id,
            comm: c_str(&ev.comm[..COMM_LEN]),
            op: Op::from_raw(ev.op).ok_or_else(|| unknown("op", ev.op))?,
            target_dev: ev.target_dev,
            target_ino: ev.target_ino,
            target_name: match ev.op {
                // Self-protection events carry a number where others carry an inode.
                op::SIGNAL => format!("airlockd (pid {})", ev.target_ino),
                op::PTRACE if ev.target_ino == u64::from(std::process::id()) => {
                    format!("airlockd (pid {})", ev.target_ino)
                }
                op::PTRACE => format!("pid {} (outside the agent)", ev.target_ino),
                op::BPF => format!("bpf command {}", ev.target_ino),
                op::KERNEL_LOAD if ev.target_ino == airlock_common::MODULE_AUTOLOAD => {
                    "a kernel module autoload (request_module)".to_owned()
                }
                op::KERNEL_LOAD => format!("kernel load (id {})", ev.target_ino),
                // At exec (set-id file, file capabilities) the kernel names the program.
                op::SETUID => format!("uid {}{}", ev.target_ino, at_exec(" (exec of ", ")")),
                op::SETGID => format!("gid {}{}", ev.target_ino, at_exec(" (exec of ", ")")),
                op::USERNS => "a new user namespace".to_owned(),
                op::CAPS => format!(
                    "capabilities {:#x} gained at exec{}",
                    ev.target_ino,
                    at_exec(" of ", "")
                ),
                op::READ_SECRET => format!("airlockd's host key (inode {})", ev.target_ino),
                op::CGROUP_MOVE if ev.target_ino == 0 => {
                    "the cgroup of a new process (clone3 CLONE_INTO_CGROUP)".to_owned()
                }
                op::CGROUP_MOVE => format!("cgroup {} (outside the agent)", ev.target_ino),
                _ => c_str(&ev.name[..NAME_LEN]),
            },
            target_path: None,
            rule_id: ev.rule_id,
            action: Action::from_raw(ev.action).ok_or_else(|| unknown("action", ev.action))?,
            verdict: Verdict::from_raw(ev.verdict).ok_or_else(|| unknown("verdict", ev.verdict))?,
            monitor: ev.flags & flags::MONITOR != 0,
            name_truncated: ev.flags & flags::NAME_TRUNCATED != 0,
            matched_by_entry: ev.flags & flags::MATCHED_BY_ENTRY != 0,
            matched_by_content: ev.flags & flags::MATCHED_BY_CONTENT != 0,
            unidentified: ev.flags & flags::UNIDENTIFIED != 0,
            argv: if ev.op == op::EXEC {
                decode_argv(ev.argc, &ev.argv).0
            } else {
                Vec::new()
            },
            argv_truncated: ev.flags & flags::ARGV_TRUNCATED != 0
                || (ev.op == op::EXEC && decode_argv(ev.argc, &ev.argv).1),
            argv_hash: ev.argv_hash,
            unholdable: ev.flags & flags::UNHOLDABLE != 0,
            decided_by: if ev.flags & flags::BACKSTOP != 0 {
                Some(DecidedBy::Backstop)
            } else if ev.flags & flags::BY_ONCE != 0 {
                Some(DecidedBy::Once)
            } else if ev.flags & flags::BY_AGENT_GRANT != 0 {
                Some(DecidedBy::AgentGrant)
            } else {
                None
            },
            hold_token: None,
        })
    }
}

/// The verdict a rule's action leads to when no standing decision applies: `approve` holds,
/// `deny` denies; monitor mode turns every deny and hold into an allow-with-event.
pub fn verdict_for(action: u32, rule_flags: u32) -> u32 {
    if rule_flags & flags::MONITOR != 0 {
        return verdict::ALLOWED;
    }
    match action {
        action::DENY => verdict::DENIED,
        action::APPROVE => verdict::HELD,
        _ => verdict::ALLOWED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> Event {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"bash");
        let mut name = [0u8; NAME_LEN];
        name[..3].copy_from_slice(b"apt");
        Event {
            ktime_ns: 42,
            cgroup_id: 7,
            target_ino: 1234,
            pid: 10,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            euid: 0,
            target_dev: (8 << 20) | 1,
            op: op::EXEC,
            rule_id: 3,
            action: action::APPROVE,
            verdict: verdict::DENIED,
            flags: flags::MATCHED_BY_ENTRY,
            comm,
            name,
            argv_hash: 0,
            argc: 0,
            _pad: 0,
            argv: [[0; ARG_LEN]; ARGV_MAX],
        }
    }

    #[test]
    fn decodes_every_field_of_a_kernel_record() {
        let ev = raw();
        // SAFETY: reading the bytes of a POD value.
        let bytes = unsafe {
            core::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), size_of::<Event>())
        };
        let g = GateEvent::decode("lsm", bytes).unwrap();
        assert_eq!((g.pid, g.tgid, g.ppid, g.uid, g.euid), (10, 10, 1, 1000, 0));
        assert_eq!(g.comm, "bash");
        assert_eq!(g.target_name, "apt");
        assert_eq!(g.op, Op::Exec);
        assert_eq!(g.action, Action::Approve);
        assert_eq!(g.verdict, Verdict::Denied);
        assert!(g.matched_by_entry && !g.monitor && !g.name_truncated);
        assert_eq!(
            (g.target_dev, g.target_ino, g.cgroup_id, g.rule_id),
            ((8 << 20) | 1, 1234, 7, 3)
        );
    }

    #[test]
    fn argv_slots_decode_up_to_argc_and_report_cuts() {
        let mut slots = [[0u8; ARG_LEN]; ARGV_MAX];
        slots[0][..3].copy_from_slice(b"apt");
        slots[1][..7].copy_from_slice(b"install");
        slots[2] = [b'x'; ARG_LEN];
        slots[2][ARG_LEN - 1] = 0;
        let (v, cut) = decode_argv(2, &slots);
        assert_eq!(v, ["apt", "install"]);
        assert!(!cut);
        let (v, cut) = decode_argv(3, &slots);
        assert_eq!(v[2].len(), ARG_LEN - 1);
        assert!(cut, "a full slot means the argument was cut");
        let (v, cut) = decode_argv(40, &slots);
        assert_eq!(v.len(), ARGV_MAX);
        assert!(cut, "more arguments than slots");
    }

    #[test]
    fn argv_hash_depends_on_every_argument_byte_and_argc() {
        let mut slots = [[0u8; ARG_LEN]; ARGV_MAX];
        slots[0][..3].copy_from_slice(b"apt");
        let a = airlock_common::argv_hash(1, &slots);
        assert_eq!(a, airlock_common::argv_hash(1, &slots));
        assert_ne!(a, airlock_common::argv_hash(2, &slots));
        slots[ARGV_MAX - 1][ARG_LEN - 2] = b'z';
        assert_ne!(a, airlock_common::argv_hash(1, &slots));
    }

    #[test]
    fn short_record_is_an_error_not_a_read_past_the_end() {
        assert!(matches!(
            GateEvent::decode("lsm", &[0u8; 8]),
            Err(EventError::Size { .. })
        ));
    }

    #[test]
    fn unknown_op_is_rejected() {
        let mut ev = raw();
        ev.op = 99;
        assert!(matches!(
            GateEvent::from_raw("lsm", &ev),
            Err(EventError::Unknown {
                field: "op",
                value: 99
            })
        ));
    }

    #[test]
    fn every_op_round_trips() {
        for v in 1..=op::MAX {
            assert_eq!(Op::from_raw(v).unwrap().raw(), v);
        }
    }

    #[test]
    fn monitor_mode_never_denies_or_holds_and_approve_holds() {
        assert_eq!(verdict_for(action::DENY, flags::MONITOR), verdict::ALLOWED);
        assert_eq!(
            verdict_for(action::APPROVE, flags::MONITOR),
            verdict::ALLOWED
        );
        assert_eq!(verdict_for(action::APPROVE, 0), verdict::HELD);
        assert_eq!(verdict_for(action::DENY, 0), verdict::DENIED);
        assert_eq!(verdict_for(action::AUDIT, 0), verdict::ALLOWED);
    }
}
