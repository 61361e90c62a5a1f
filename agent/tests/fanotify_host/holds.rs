//! Holds on the fanotify backend: `approve` parks the permission event until the gate releases
//! it; standing decisions decide without parking.
use std::fs;
use std::time::Duration;

use airlock_agent::event::{Action, DecidedBy, Op, Verdict};
use airlock_agent::hold::{Gate, HoldKey, HoldKind, Holder, Release, Standing};
use airlock_common::{ARG_LEN, ARGV_MAX, action, argv_hash};

use super::kids::{Act, Kid};
use super::support::*;

fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The hash the backend computes for these arguments (same slot layout as the kernel side).
fn hash_of(args: &[&str]) -> u64 {
    let mut slots = [[0u8; ARG_LEN]; ARGV_MAX];
    for (s, a) in slots.iter_mut().zip(args) {
        s[..a.len()].copy_from_slice(a.as_bytes());
    }
    argv_hash(args.len() as u32, &slots)
}

#[test]
fn a_parked_approve_exec_runs_on_allow_with_its_output_and_fails_with_eperm_on_deny() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("hold-exec") else {
        return;
    };
    let echo = w.path("gated-echo");
    copy_exe("/bin/echo", &echo);
    w.apply(&Policy::default().exec(&echo, action::APPROVE))
        .unwrap();
    let p = echo.to_str().unwrap();
    let args = [p, "hello", "world"];

    let mut kid = Kid::start(&w, true, Act::Exec(&echo, &args), false);
    let (ev, token) = w.next_hold();
    assert_eq!(
        (ev.op, ev.action, ev.verdict, ev.decided_by, ev.tgid),
        (
            Op::Exec,
            Action::Approve,
            Verdict::Held,
            None,
            kid.pid as u32
        )
    );
    assert_eq!(ev.argv, args, "argv read from the waiting execve");
    assert_eq!(ev.argv_hash, hash_of(&args));
    assert!(
        kid.wait_state('D'),
        "waits inside execve: state {:?}",
        kid.state()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        kid.alive() && kid.output().is_empty(),
        "nothing ran while held"
    );
    let c = w.backend.as_ref().unwrap().counters();
    assert_eq!((c.held, c.parked), (1, 1), "{c:?}");
    w.release(&ev, token, Release::Allow);
    assert_eq!(kid.code(), 0);
    assert_eq!(kid.output(), "hello world\n", "the real program ran");
    // Releasing again (or a token never parked) is no error and does nothing.
    w.release(&ev, token, Release::Deny);

    let mut kid = Kid::start(&w, true, Act::Exec(&echo, &[p, "again"]), false);
    let (ev2, token2) = w.next_hold();
    assert_ne!(token2, token, "every parked event has its own token");
    assert_ne!(ev2.argv_hash, ev.argv_hash, "other arguments, other hash");
    w.release(&ev2, token2, Release::Deny);
    assert_eq!(kid.code(), EPERM, "denied exec fails with EPERM");
    assert!(kid.output().is_empty());
    let c = w.backend.as_ref().unwrap().counters();
    assert_eq!(
        (c.held, c.parked, c.agent_allowed, c.denied),
        (2, 0, 1, 1),
        "{c:?}"
    );
    assert!(w.events().is_empty(), "a release sends no further event");
}

#[test]
fn a_held_o_trunc_open_leaves_the_file_intact_until_approved_and_after_deny() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("hold-trunc") else {
        return;
    };
    let prot = w.path("prot");
    fs::create_dir(&prot).unwrap();
    let file = prot.join("config");
    fs::write(&file, "original").unwrap();
    w.apply(&Policy::default().protect(&prot, action::APPROVE, false))
        .unwrap();
    let trunc = libc::O_WRONLY | libc::O_TRUNC;

    let mut kid = Kid::start(&w, true, Act::Open(&file, trunc, b"replaced"), false);
    let (ev, token) = w.next_hold();
    assert_eq!(
        (ev.op, ev.verdict, ev.argv_hash),
        (Op::OpenWrite, Verdict::Held, 0)
    );
    assert!(ev.argv.is_empty(), "no arguments for opens");
    assert!(kid.wait_state('D'));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "original",
        "not truncated while held"
    );
    w.release(&ev, token, Release::Deny);
    assert_eq!(kid.code(), EPERM);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "original",
        "not truncated after deny"
    );

    let mut kid = Kid::start(&w, true, Act::Open(&file, trunc, b"replaced"), false);
    let (ev, token) = w.next_hold();
    assert_eq!(fs::read_to_string(&file).unwrap(), "original");
    w.release(&ev, token, Release::Allow);
    assert_eq!(kid.code(), 0);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "replaced",
        "the approved open went through"
    );
}

#[test]
fn sigcont_does_not_release_a_parked_hold() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("hold-sigcont") else {
        return;
    };
    let prot = w.path("prot");
    fs::create_dir(&prot).unwrap();
    let file = prot.join("f");
    fs::write(&file, "x").unwrap();
    w.apply(&Policy::default().protect(&prot, action::APPROVE, false))
        .unwrap();
    let mut kid = Kid::start(
        &w,
        true,
        Act::Open(&file, libc::O_WRONLY | libc::O_APPEND, b"y"),
        false,
    );
    let (ev, token) = w.next_hold();
    assert!(kid.wait_state('D'));
    for sig in [libc::SIGCONT, libc::SIGSTOP, libc::SIGCONT] {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(kid.pid, sig) }, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(kid.alive(), "still waiting after SIGCONT/SIGSTOP/SIGCONT");
    assert_eq!(kid.state(), Some('D'), "still in the permission wait");
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    assert_eq!(w.backend.as_ref().unwrap().counters().parked, 1);
    w.release(&ev, token, Release::Deny);
    assert_eq!(kid.code(), EPERM);
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn a_standing_decision_decides_without_parking_until_it_expires() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("hold-standing") else {
        return;
    };
    let (ok, no) = (w.path("granted"), w.path("refused"));
    copy_exe("/bin/true", &ok);
    copy_exe("/bin/true", &no);
    w.apply(
        &Policy::default()
            .exec(&ok, action::APPROVE)
            .exec(&no, action::APPROVE),
    )
    .unwrap();
    let standing = |p: &std::path::Path, release, until_boot_ns| {
        let k = key_of(p);
        Standing {
            cgroup_id: w.cg.id,
            op: Op::Exec,
            dev: k.dev,
            ino: k.ino,
            release,
            until_boot_ns,
        }
    };
    let gate = w.gate();
    gate.standing(&standing(
        &ok,
        Release::Allow,
        Some(boot_ns() + 1_500_000_000),
    ))
    .unwrap();
    gate.standing(&standing(&no, Release::Deny, None)).unwrap();

    assert_eq!(w.exec(true, &ok).unwrap(), 0, "granted: runs at once");
    let ev = w.next_event();
    assert_eq!(
        (ev.verdict, ev.decided_by, ev.hold_token, ev.target_ino),
        (
            Verdict::Allowed,
            Some(DecidedBy::AgentGrant),
            None,
            key_of(&ok).ino
        )
    );
    let e = w.exec(true, &no).expect_err("refused for good");
    assert_eq!(e.raw_os_error(), Some(EPERM));
    let ev = w.next_event();
    assert_eq!(
        (ev.verdict, ev.decided_by),
        (Verdict::Denied, Some(DecidedBy::AgentGrant))
    );
    assert_eq!(
        w.exec(false, &no).unwrap(),
        0,
        "a standing decision is per agent cgroup"
    );
    assert_eq!(
        w.backend.as_ref().unwrap().counters().held,
        0,
        "nothing parked"
    );

    std::thread::sleep(Duration::from_millis(1600));
    let mut kid = Kid::start(&w, true, Act::Exec(&ok, &[ok.to_str().unwrap()]), false);
    let (ev, token) = w.next_hold();
    assert_eq!(
        ev.decided_by, None,
        "an expired grant no longer decides: held again"
    );
    w.release(&ev, token, Release::Deny);
    assert_eq!(kid.code(), EPERM);
}

#[test]
fn dropping_the_backend_denies_every_parked_hold() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("hold-drop") else {
        return;
    };
    let gated = w.path("gated");
    copy_exe("/bin/true", &gated);
    w.apply(&Policy::default().exec(&gated, action::APPROVE))
        .unwrap();
    let mut kid = Kid::start(
        &w,
        true,
        Act::Exec(&gated, &[gated.to_str().unwrap()]),
        false,
    );
    let (ev, token) = w.next_hold();
    let gate = w.backend.as_ref().unwrap().fanotify_gate();
    assert!(gate.is_parked(token));
    let threads = backend_threads();
    w.backend = None;
    assert_eq!(
        kid.code(),
        EPERM,
        "answered with deny when the backend went away"
    );
    assert_eq!(backend_threads(), threads.saturating_sub(2));
    assert!(!gate.is_parked(token));
    // The gate outlives the backend harmlessly.
    let key = HoldKey {
        tgid: ev.tgid,
        op: ev.op,
        dev: ev.target_dev,
        ino: ev.target_ino,
        argv_hash: 0,
    };
    let h = Holder {
        tid: ev.pid,
        tgid: ev.tgid,
        how: HoldKind::Parked { token },
    };
    gate.release(&key, &[h], Release::Allow).unwrap();
    assert_eq!(
        w.exec(true, &gated).unwrap(),
        0,
        "no gate once the backend is dropped"
    );
}

#[test]
fn a_holder_killed_while_parked_is_gone_and_its_permission_dropped() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("hold-killed") else {
        return;
    };
    let gated = w.path("gated");
    copy_exe("/bin/true", &gated);
    w.apply(&Policy::default().exec(&gated, action::APPROVE))
        .unwrap();
    let mut kid = Kid::start(
        &w,
        true,
        Act::Exec(&gated, &[gated.to_str().unwrap()]),
        false,
    );
    let (ev, token) = w.next_hold();
    let gate = w.backend.as_ref().unwrap().fanotify_gate();
    let key = HoldKey {
        tgid: ev.tgid,
        op: ev.op,
        dev: ev.target_dev,
        ino: ev.target_ino,
        argv_hash: ev.argv_hash,
    };
    let h = Holder {
        tid: ev.pid,
        tgid: ev.tgid,
        how: HoldKind::Parked { token },
    };
    assert!(gate.holder_alive(&key, &h));
    // SAFETY: signalling our own child; the permission wait is killable.
    assert_eq!(unsafe { libc::kill(kid.pid, libc::SIGKILL) }, 0);
    let s = kid.wait();
    assert!(libc::WIFSIGNALED(s), "killed while waiting: status {s:#x}");
    assert!(!gate.holder_alive(&key, &h), "a killed holder is gone");
    assert!(!gate.is_parked(token), "and its parked permission dropped");
    assert_eq!(w.backend.as_ref().unwrap().counters().parked, 0);
    let stale = Holder {
        how: HoldKind::Parked {
            token: token + 1000,
        },
        ..h
    };
    assert!(
        !gate.holder_alive(&key, &stale),
        "a token never parked here (e.g. before a restart)"
    );
}
