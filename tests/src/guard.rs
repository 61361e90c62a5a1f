//! Self-protection scenarios (LSM backend only; the fanotify fallback cannot refuse signals,
//! ptrace, bpf(2) or module loads, and does not mark airlockd's own files: see README, "Threat
//! model"). Every attempt comes from a
//! process in the test's agent cgroup running as root, several ways per class; each must fail
//! with the exact errno, be recorded as a `self-protection` event, and leave airlockd running.
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::cases::Ctx;
use crate::harness::{Report, ensure};

/// airlockd's pid, and a check that it is alive and still answering (its status file is
/// rewritten with its own pid).
fn airlockd(c: &Ctx) -> anyhow::Result<u32> {
    let pid = c.daemon.pid().context("airlockd is not running")?;
    // SAFETY: signal 0 only checks that the process exists.
    ensure(unsafe { libc::kill(pid as i32, 0) } == 0, || {
        format!("airlockd (pid {pid}) is gone:\n{}", c.daemon.log_text())
    })?;
    Ok(pid)
}

/// Waits for a self-protection event of `op` by process `pid`.
fn recorded(c: &Ctx, pid: u32, op: &str) -> anyhow::Result<()> {
    let ev = c
        .daemon
        .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)) && e["op"] == op)
        .with_context(|| format!("no {op} event for pid {pid}"))?;
    ensure(
        ev["rule"] == "self-protection" && ev["policy"] == "builtin" && ev["verdict"] == "denied",
        || format!("{op} event: {ev}"),
    )
}

fn expect_one_of(out: &str, want: &[&str], what: &str) -> anyhow::Result<()> {
    ensure(want.contains(&out), || {
        format!("{what}: expected one of {want:?}, got {out:?}")
    })
}

/// A process outside every agent cgroup that sleeps until killed (killed on drop).
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> anyhow::Result<Sleeper> {
        Ok(Sleeper(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .context("spawning sleep")?,
        ))
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Case = fn(&Ctx) -> anyhow::Result<()>;

const CASES: &[(&str, Case)] = &[
    ("agent_root_cannot_signal_airlockd", |c| {
        let pid = airlockd(c)?.to_string();
        // The mildest first: were one to get through, the next ones still report.
        for (sig, name) in [
            (1, "SIGHUP"),
            (19, "SIGSTOP"),
            (15, "SIGTERM"),
            (9, "SIGKILL"),
        ] {
            let (p, out) = c.op(c.agent(), "kill", &[&pid, &sig.to_string()])?;
            ensure(out == "errno=1", || {
                format!("kill -{name} airlockd from the agent: {out}")
            })?;
            recorded(c, p, "signal")?;
        }
        // Asking whether it exists is no attack.
        let (_, out) = c.op(c.agent(), "kill", &[&pid, "0"])?;
        ensure(out == "ok", || format!("kill -0 airlockd: {out}"))?;
        // Other processes stay the agent's to signal.
        let other = Sleeper::start()?;
        let (_, out) = c.op(c.agent(), "kill", &[&other.0.id().to_string(), "15"])?;
        ensure(out == "ok", || {
            format!("kill of an ordinary process: {out}")
        })?;
        airlockd(c).map(drop)
    }),
    ("agent_root_cannot_ptrace_or_read_airlockd_memory", |c| {
        let pid = airlockd(c)?.to_string();
        let (p, out) = c.op(c.agent(), "ptrace-attach", &[&pid])?;
        ensure(out == "errno=1", || format!("PTRACE_ATTACH: {out}"))?;
        recorded(c, p, "ptrace")?;
        // /proc/PID/mem asks the same question (ptrace_may_access), answered with EACCES.
        let (p, out) = c.op(c.agent(), "proc-mem", &[&pid])?;
        expect_one_of(&out, &["errno=13", "errno=1"], "open /proc/airlockd/mem")?;
        recorded(c, p, "ptrace")?;
        airlockd(c).map(drop)
    }),
    (
        "agent_root_cannot_trace_or_write_processes_outside_its_subtree",
        |c| {
            let victim = Sleeper::start()?;
            let pid = victim.0.id().to_string();
            let (p, out) = c.op(c.agent(), "ptrace-attach", &[&pid])?;
            ensure(out == "errno=1", || {
                format!("PTRACE_ATTACH to a process outside the agent: {out}")
            })?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)) && e["op"] == "ptrace")
                .context("no ptrace event")?;
            ensure(
                ev["target_name"] == format!("pid {pid} (outside the agent)").as_str(),
                || format!("ptrace event: {ev}"),
            )?;
            let (p, out) = c.op(c.agent(), "proc-mem", &[&pid])?;
            expect_one_of(&out, &["errno=13", "errno=1"], "open /proc/outside/mem")?;
            recorded(c, p, "ptrace")?;
            // Its own processes an agent may still debug; outside agents nothing changed.
            let (_, out) = c.op(c.agent(), "ptrace-own-child", &[])?;
            ensure(out == "ok", || {
                format!("PTRACE_ATTACH to its own child: {out}")
            })?;
            let (_, out) = c.op(c.outside(), "ptrace-attach", &[&pid])?;
            ensure(out == "ok", || {
                format!("PTRACE_ATTACH outside agents: {out}")
            })?;
            airlockd(c).map(drop)
        },
    ),
    (
        "agent_root_bpf_calls_are_refused_and_outside_ones_are_not",
        |c| {
            for op in ["bpf-next-id", "bpf-map-create"] {
                let (p, out) = c.op(c.agent(), op, &[])?;
                ensure(out == "errno=1", || format!("{op} from the agent: {out}"))?;
                recorded(c, p, "bpf")?;
            }
            let (_, out) = c.op(c.outside(), "bpf-next-id", &[])?;
            ensure(out == "ok", || format!("bpf-next-id outside: {out}"))?;
            airlockd(c).map(drop)
        },
    ),
    ("agent_root_cannot_load_kernel_modules", |c| {
        let junk = c.fx.dir.join("not-a-module.ko");
        std::fs::write(&junk, [0u8; 64])?;
        let j = junk.to_string_lossy().to_string();
        for (op, args) in [("init-module", vec![]), ("finit-module", vec![j.as_str()])] {
            // Outside, the kernel itself refuses the junk with its own errno: if that were
            // EPERM too (modules disabled), the agent's EPERM would prove nothing.
            let (_, outside) = c.op(c.outside(), op, &args)?;
            ensure(
                outside.starts_with("errno=") && outside != "errno=1",
                || {
                    format!(
                        "{op} of junk outside an agent: {outside} (want the kernel's own error)"
                    )
                },
            )?;
            let (p, out) = c.op(c.agent(), op, &args)?;
            ensure(out == "errno=1", || format!("{op} from the agent: {out}"))?;
            recorded(c, p, "kernel_load")?;
        }
        airlockd(c).map(drop)
    }),
    (
        "agent_root_cannot_change_airlockd_state_pins_or_policy",
        |c| {
            let s = |p: &Path| p.to_string_lossy().to_string();
            let state = &c.daemon.state_dir;
            let pin = first_file(&c.daemon.pin_dir)
                .with_context(|| format!("no pin under {}", c.daemon.pin_dir.display()))?;
            let policy_before = std::fs::read(&c.fx.policy)?;
            let tries: [(&str, Vec<String>, &str); 6] = [
                ("write", vec![s(&state.join("events.jsonl"))], "open_write"),
                ("create", vec![s(&state.join("forged.json"))], "create"),
                ("unlink", vec![s(&state.join("status.json"))], "unlink"),
                ("write", vec![s(&c.fx.policy)], "open_write"),
                (
                    "rename",
                    vec![s(&c.fx.policy), s(&c.fx.dir.join("stolen.yaml"))],
                    "rename",
                ),
                ("unlink", vec![s(&pin)], "unlink"),
            ];
            for (op, args, recorded_as) in tries {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let (p, out) = c.op(c.agent(), op, &a)?;
                ensure(out == "errno=1", || {
                    format!("{op} {args:?} from the agent: {out}")
                })?;
                recorded(c, p, recorded_as)?;
            }
            ensure(pin.exists(), || "the pin was removed".into())?;
            ensure(std::fs::read(&c.fx.policy)? == policy_before, || {
                "the policy file changed".into()
            })?;
            // Outside agents nothing changed: the test (root, no agent) may still write there.
            let scratch = state.join("written-from-outside");
            std::fs::write(&scratch, "ok")?;
            std::fs::remove_file(&scratch)?;
            airlockd(c).map(drop)
        },
    ),
    (
        "agent_root_cannot_move_a_process_out_of_its_agent_subtree",
        |c| {
            let mount = airlock_agent::cgroup::cgroup2_mount()?;
            let top = c.fx.agent_cg.parent().context("agent cgroup parent")?;
            let s = |p: &Path| p.to_string_lossy().to_string();
            // The cgroup root, the fixture's top (the agent's parent), a sibling; procs and threads.
            for dir in [mount.as_path(), top, c.fx.outside_cg.as_path()] {
                for file in ["cgroup.procs", "cgroup.threads"] {
                    let f = s(&dir.join(file));
                    let (p, out) = c.op(c.agent(), "write", &[&f])?;
                    ensure(out == "errno=1", || {
                        format!("open {f} for writing from the agent: {out}")
                    })?;
                    recorded(c, p, "cgroup_move")?;
                }
            }
            // Inside its own subtree an agent may organise its processes.
            let inner = s(&c.fx.nested_cg.join("cgroup.procs"));
            let (_, out) = c.op(c.agent(), "write", &[&inner])?;
            ensure(out == "ok", || {
                format!("open {inner} from the agent: {out}")
            })?;
            // Outside agents nothing changed.
            std::fs::OpenOptions::new()
                .append(true)
                .open(mount.join("cgroup.procs"))
                .context("opening the root cgroup.procs outside any agent")?;
            airlockd(c).map(drop)
        },
    ),
    (
        "agent_root_cannot_clone_a_process_into_another_cgroup",
        |c| {
            let s = |p: &Path| p.to_string_lossy().to_string();
            let top = c.fx.agent_cg.parent().context("agent cgroup parent")?;
            // Outside agents clone3(CLONE_INTO_CGROUP) works here: the refusals below are
            // airlock's, not a kernel without the flag.
            let (_, out) = c.op(c.outside(), "clone-into", &[&s(&c.fx.outside_cg)])?;
            ensure(out == "ok", || {
                format!("clone3 into a cgroup from outside agents: {out}")
            })?;
            // A sibling, the fixture's top, and (refused too: the target is not known yet
            // when the hook runs) the agent's own nested cgroup.
            for dir in [c.fx.outside_cg.as_path(), top, c.fx.nested_cg.as_path()] {
                let d = s(dir);
                let (p, out) = c.op(c.agent(), "clone-into", &[&d])?;
                ensure(out == "errno=1", || {
                    format!("clone3 into {d} from the agent: {out}")
                })?;
                recorded(c, p, "cgroup_move")?;
            }
            airlockd(c).map(drop)
        },
    ),
];

/// The first regular file (or pin) below `dir`.
fn first_file(dir: &Path) -> Option<std::path::PathBuf> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let t = e.file_type().ok()?;
            if t.is_dir() {
                pending.push(e.path());
            } else {
                return Some(e.path());
            }
        }
    }
    None
}

/// Runs every case (LSM backend only).
pub fn run_all(r: &mut Report, ctx: &Ctx) {
    for (name, f) in CASES {
        r.check(name, f(ctx));
    }
}
