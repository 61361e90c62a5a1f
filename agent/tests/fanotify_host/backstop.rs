//! The exec backstop: the pinned tp_btf program stops (approve) or kills (deny) an agent's exec
//! of a gated binary that no daemon allowed, and keeps doing so after the daemon is gone.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_agent::backend::exec_context::{ExecContextProbe, ExecRecord, remove_pins};
use airlock_agent::backend::fanotify::FanotifyBackend;
use airlock_agent::event::{Action, DecidedBy, GateEvent, Op, Verdict};
use airlock_agent::hold::{HoldKey, HoldKind, Holder, Release};
use airlock_common::action;
use tokio::sync::mpsc;

use super::kids::{Act, Kid};
use super::support::*;

/// A pin directory of this test; removed (detaching the program) on drop, even on failure.
struct Pins(PathBuf);

impl Pins {
    fn new(tag: &str) -> Pins {
        Pins(PathBuf::from(format!(
            "/sys/fs/bpf/airlock-test-{}-{tag}",
            std::process::id()
        )))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        // airlockd itself pins its probe one level down, under PIN_DIR/exec.
        for dir in [self.0.join("exec"), self.0.clone()] {
            if let Err(e) = remove_pins(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("removing test pins {}: {e}", dir.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (up to 3 s) for `n` events on `rx`.
fn collect(rx: &mut mpsc::Receiver<GateEvent>, n: usize) -> Vec<GateEvent> {
    let t = Instant::now();
    let mut v = Vec::new();
    while v.len() < n && t.elapsed() < Duration::from_secs(3) {
        match rx.try_recv() {
            Ok(e) => v.push(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    v
}

/// Starts the pinned probe; `None` (skip) only on a kernel without BTF, where tp_btf cannot
/// load. Any other error fails the test.
fn start_probe(tx: mpsc::Sender<ExecRecord>, pins: &Pins) -> Option<ExecContextProbe> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        skip_or_fail("no kernel BTF: the exec probe cannot load");
        return None;
    }
    Some(ExecContextProbe::start_pinned(tx, &pins.0).unwrap_or_else(|e| panic!("exec probe: {e}")))
}

fn exe_ino(pid: i32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| m.ino())
}

fn after_exec(ev: &GateEvent) -> (HoldKey, Holder) {
    let key = HoldKey {
        tgid: ev.tgid,
        op: ev.op,
        dev: ev.target_dev,
        ino: ev.target_ino,
        argv_hash: ev.argv_hash,
    };
    (
        key,
        Holder {
            tid: ev.pid,
            tgid: ev.tgid,
            how: HoldKind::AfterExec,
        },
    )
}

#[test]
fn the_pinned_backstop_stops_or_kills_gated_execs_once_the_daemon_is_gone() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("backstop") else {
        return;
    };
    let rt = runtime();
    let _rt = rt.enter();
    let pins = Pins::new("backstop");
    let (xtx, _xrx) = mpsc::channel(1024);
    let Some(mut probe) = start_probe(xtx.clone(), &pins) else {
        return;
    };
    assert!(!probe.adopted(), "nothing pinned before");
    let (held, killed) = (w.path("gated-echo"), w.path("denied-true"));
    copy_exe("/bin/echo", &held);
    copy_exe("/bin/true", &killed);
    let (h, k) = (held.to_str().unwrap(), killed.to_str().unwrap());
    let policy = Policy::default()
        .exec(&held, action::APPROVE)
        .exec(&killed, action::DENY);
    probe.set_agents(&w.cg.agent_set()).unwrap();
    probe.set_rules(&policy.0).unwrap();
    let (btx, mut brx) = mpsc::channel(64);
    let allow = probe.arm_backstop(btx).unwrap();
    w.backend
        .as_ref()
        .unwrap()
        .set_backstop(Some(allow.clone()));
    w.apply(&policy).unwrap();

    // Daemon alive: an approved exec gets its EXEC_ALLOW entry first and runs unstopped.
    let mut kid = Kid::start(&w, true, Act::Exec(&held, &[h, "approved"]), false);
    let (ev, token) = w.next_hold();
    w.release(&ev, token, Release::Allow);
    assert_eq!(kid.code(), 0);
    assert_eq!(kid.output(), "approved\n");
    assert_eq!(allow.pending(), 0, "the entry was consumed by its exec");
    let mut kid = Kid::start(&w, true, Act::Exec(&killed, &[k]), false);
    assert_eq!(kid.code(), EPERM, "deny is the listener's, before any exec");
    assert_eq!(w.next_event().verdict, Verdict::Denied);
    assert!(
        collect(&mut brx, 1).is_empty(),
        "no backstop event while the daemon decides"
    );

    // Daemon gone: the fanotify group is closed (marks gone), the probe's fds are closed.
    w.backend = None;
    drop(probe);
    let mut stopped = Kid::start(&w, true, Act::Exec(&held, &[h, "unattended"]), false);
    assert!(
        stopped.wait_state('T'),
        "stopped after exec: state {:?}",
        stopped.state()
    );
    assert_eq!(
        exe_ino(stopped.pid),
        Some(key_of(&held).ino),
        "the exec itself went through"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        stopped.alive() && stopped.output().is_empty(),
        "stopped before its first instruction"
    );
    let mut dead = Kid::start(&w, true, Act::Exec(&killed, &[k]), false);
    let s = dead.wait();
    assert!(
        libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGKILL,
        "deny rule: SIGKILL, status {s:#x}"
    );
    let mut let_through = Kid::start(&w, true, Act::Exec(&held, &[h, "allowed"]), true);
    allow.allow(let_through.pid as u32, key_of(&held)).unwrap();
    let_through.go();
    assert_eq!(
        let_through.code(),
        0,
        "an EXEC_ALLOW entry lets the exec run"
    );
    assert_eq!(let_through.output(), "allowed\n");
    let mut outsider = Kid::start(&w, false, Act::Exec(&held, &[h, "outsider"]), false);
    assert_eq!(outsider.code(), 0, "non-agents are never stopped");

    // Restart: the probe is adopted (never detached) and its pinned ring handed over.
    let mut probe = start_probe(xtx, &pins).expect("adopt");
    assert!(probe.adopted(), "same build: adopted from the pins");
    let (btx, mut brx) = mpsc::channel(64);
    probe.arm_backstop(btx).unwrap();
    let evs = collect(&mut brx, 2);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    let (s_ev, d_ev) = (&evs[0], &evs[1]);
    assert_eq!(
        (
            s_ev.op,
            s_ev.action,
            s_ev.verdict,
            s_ev.decided_by,
            s_ev.tgid,
            s_ev.target_ino
        ),
        (
            Op::Exec,
            Action::Approve,
            Verdict::Held,
            Some(DecidedBy::Backstop),
            stopped.pid as u32,
            key_of(&held).ino
        )
    );
    assert_eq!(
        (s_ev.cgroup_id, s_ev.target_name.as_str()),
        (w.cg.id, "gated-echo")
    );
    assert_eq!(
        s_ev.argv,
        [h, "unattended"],
        "argv from the stopped process"
    );
    assert_eq!(
        (d_ev.action, d_ev.verdict, d_ev.decided_by, d_ev.tgid),
        (
            Action::Deny,
            Verdict::Denied,
            Some(DecidedBy::Backstop),
            dead.pid as u32
        )
    );
    // The restarted daemon's gate resumes the stopped exec.
    let (tx, _rx) = mpsc::channel(16);
    let fresh = FanotifyBackend::start(tx).unwrap();
    let (key, holder) = after_exec(s_ev);
    fresh
        .gate()
        .release(&key, &[holder], Release::Allow)
        .unwrap();
    assert_eq!(stopped.code(), 0, "SIGCONT: the program runs");
    assert_eq!(stopped.output(), "unattended\n");
    drop(fresh);

    // remove_pins detaches for good.
    drop(probe);
    remove_pins(&pins.0).unwrap();
    assert!(!pins.0.exists());
    let mut free = Kid::start(&w, true, Act::Exec(&held, &[h, "free"]), false);
    assert_eq!(
        free.code(),
        0,
        "nothing stops execs once the pins are removed"
    );
}

#[test]
fn a_held_exec_released_by_a_killed_daemon_is_stopped_by_the_backstop() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("kill9") else {
        return;
    };
    w.backend = None;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        skip_or_fail("no kernel BTF: the exec probe cannot load");
        return;
    }
    let rt = runtime();
    let _rt = rt.enter();
    let pins = Pins::new("kill9");
    let held = w.path("gated-echo");
    copy_exe("/bin/echo", &held);
    let h = held.to_str().unwrap();
    // The real airlockd (fanotify backend), in a process of its own so the test can kill -9 it.
    let policy = w.path("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: kill9\nmode: enforce\n\
             agents:\n  - name: test-agent\n    cgroup: \"{}\"\n\
             rules:\n  - name: held\n    action: approve\n    exec: [\"{h}\"]\n",
            w.cg.rel
        ),
    )
    .unwrap();
    let state = w.path("state");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_airlockd"))
            .args(["--backend", "fanotify", "--policy"])
            .arg(&policy)
            .arg("--state-dir")
            .arg(&state)
            .arg("--pin-dir")
            .arg(&pins.0)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ready once its status lists our cgroup as gated.
    let t = Instant::now();
    loop {
        let gated = std::fs::read(state.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| {
                s["agents"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c["id"].as_u64() == Some(w.cg.id)))
            });
        if gated {
            break;
        }
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "airlockd exited early (see its output above)"
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "airlockd did not gate the test cgroup within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut kid = Kid::start(&w, true, Act::Exec(&held, &[h, "unattended"]), false);
    assert!(
        kid.wait_state('D'),
        "held by the stand-in daemon: state {:?}",
        kid.state()
    );
    // kill -9 airlockd: the kernel allows the pending exec as the group closes.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    assert!(
        kid.wait_state('T'),
        "the released exec is stopped by the backstop: state {:?}",
        kid.state()
    );
    assert_eq!(exe_ino(kid.pid), Some(key_of(&held).ino));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        kid.output().is_empty(),
        "stopped before its first instruction"
    );

    // The restarted daemon finds the event in the pinned ring (airlockd pins its probe under
    // PIN_DIR/exec) and denies: SIGKILL.
    let (xtx, _xrx) = mpsc::channel(1024);
    let mut probe = ExecContextProbe::start_pinned(xtx, &pins.0.join("exec")).expect("adopt");
    assert!(probe.adopted());
    let (btx, mut brx) = mpsc::channel(64);
    probe.arm_backstop(btx).unwrap();
    let evs = collect(&mut brx, 1);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(
        (evs[0].tgid, evs[0].verdict, evs[0].decided_by),
        (kid.pid as u32, Verdict::Held, Some(DecidedBy::Backstop))
    );
    let (tx, _rx) = mpsc::channel(16);
    let (key, holder) = after_exec(&evs[0]);
    FanotifyBackend::start(tx)
        .unwrap()
        .gate()
        .release(&key, &[holder], Release::Deny)
        .unwrap();
    let s = kid.wait();
    assert!(
        libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGKILL,
        "status {s:#x}"
    );
    drop(probe);
}

/// The airlockd process; killed (by its pid: our child) and reaped on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pinned_probe_of_another_build_is_replaced_without_a_gap_and_its_events_handed_over() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = World::new("replace") else {
        return;
    };
    let rt = runtime();
    let _rt = rt.enter();
    let pins = Pins::new("replace");
    let (xtx, _xrx) = mpsc::channel(1024);
    let Some(mut probe) = start_probe(xtx.clone(), &pins) else {
        return;
    };
    let held = w.path("gated-echo");
    copy_exe("/bin/echo", &held);
    let h = held.to_str().unwrap();
    probe.set_agents(&w.cg.agent_set()).unwrap();
    probe
        .set_rules(&Policy::default().exec(&held, action::APPROVE).0)
        .unwrap();
    let (btx, _brx) = mpsc::channel(64);
    probe.arm_backstop(btx).unwrap();
    let ours = probe.pinned().unwrap().to_path_buf();
    drop(probe);
    let first = Kid::start(&w, true, Act::Exec(&held, &[h, "first"]), false);
    assert!(first.wait_state('T'));

    // Pretend the pins were left by another build.
    let other = pins.0.join("0000000000000000");
    std::fs::rename(&ours, &other).unwrap();
    let mut probe = start_probe(xtx, &pins).expect("replace");
    assert!(!probe.adopted(), "another build: replaced");
    let left: Vec<PathBuf> = std::fs::read_dir(&pins.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&ours),
        "the old instance was unpinned"
    );
    // Agents, rules and the backstop switch were copied: still gating without any set_*.
    let second = Kid::start(&w, true, Act::Exec(&held, &[h, "second"]), false);
    assert!(
        second.wait_state('T'),
        "the new program gates from its first exec"
    );
    let (btx, mut brx) = mpsc::channel(64);
    probe.arm_backstop(btx).unwrap();
    let evs = collect(&mut brx, 2);
    let pids: Vec<u32> = evs.iter().map(|e| e.tgid).collect();
    assert_eq!(
        pids,
        [first.pid as u32, second.pid as u32],
        "the old ring's event first, then the new one's"
    );
    assert!(
        evs.iter()
            .all(|e| e.decided_by == Some(DecidedBy::Backstop) && e.verdict == Verdict::Held)
    );
    assert!(Path::new(&ours).join("link").exists());
    drop(probe);
}
