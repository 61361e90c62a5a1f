//! Routes around the gates through other processes' work (LSM backend only): a write
//! descriptor opened outside the agent and passed in (SCM_RIGHTS) is gated like the agent's
//! own open, an agent process moved out of its cgroup by someone else stays the agent's, and
//! a module the kernel would autoload for an agent is refused.
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::cases::{Ctx, expect};
use crate::harness::ensure;

type Case = fn(&Ctx) -> anyhow::Result<()>;

/// AF_DECnet: removed from the kernel (6.1), so no family is registered under its number and
/// a socket of it makes the kernel ask for module `net-pf-12`.
const UNLOADED_FAMILY: &str = "12";

/// (name, check); every case needs the LSM backend.
pub const CASES: &[(&str, Case)] = &[
    (
        "write_descriptor_passed_into_an_agent_is_gated_like_its_open",
        |c| {
            let target = c.fx.etc.join("passed-in");
            std::fs::write(&target, "original\n")?;
            let t = target.to_string_lossy().to_string();
            let (pid, out) = pass(c, c.agent(), &t, "agent-wrote\n")?;
            expect(&out, "no-fd", "agent receiving a write descriptor of /etc")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
                .context("no event for the passed-in descriptor")?;
            ensure(
                ev["op"] == "open_write" && ev["rule"] == "protected-etc",
                || format!("passed-in write descriptor: {ev}"),
            )?;
            ensure(std::fs::read_to_string(&target)? == "original\n", || {
                "the protected file changed".into()
            })?;
            // The same hand-over outside agents goes through.
            expect(
                &pass(c, c.outside(), &t, "outside-wrote\n")?.1,
                "ok",
                "outside process receiving the descriptor",
            )?;
            // cgroup.procs of a cgroup outside the agent, opened outside and passed in.
            let procs = c.fx.outside_cg.join("cgroup.procs");
            let (pid, out) = pass(c, c.agent(), &procs.to_string_lossy(), "0")?;
            expect(
                &out,
                "no-fd",
                "agent receiving cgroup.procs of another cgroup",
            )?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
                .context("no event for the passed-in cgroup.procs")?;
            ensure(ev["op"] == "cgroup_move", || {
                format!("passed-in cgroup.procs: {ev}")
            })
        },
    ),
    (
        "agent_process_moved_out_of_its_cgroup_stays_gated",
        moved_out_agent_process_stays_gated,
    ),
    (
        "per_user_socket_under_a_wildcard_connect_rule_is_gated",
        |c| {
            // A user's session directory and socket, created after the policy was compiled.
            let user = c.fx.dir.join("sockets/u1000");
            std::fs::create_dir_all(&user)?;
            let svc = user.join("svc.sock");
            let other = user.join("other.sock");
            let _l1 = std::os::unix::net::UnixListener::bind(&svc)?;
            let _l2 = std::os::unix::net::UnixListener::bind(&other)?;
            let s = svc.to_string_lossy().to_string();
            let (pid, out) = c.op(c.agent(), "connect", &[&s])?;
            expect(&out, "errno=1", "agent connect to a per-user socket")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
                .context("no event for the per-user socket")?;
            ensure(
                ev["op"] == "connect" && ev["rule"] == "user-sockets",
                || format!("per-user socket: {ev}"),
            )?;
            let o = other.to_string_lossy().to_string();
            expect(
                &c.op(c.agent(), "connect", &[&o])?.1,
                "ok",
                "agent connect to another socket",
            )?;
            expect(
                &c.op(c.outside(), "connect", &[&s])?.1,
                "ok",
                "outside connect",
            )
        },
    ),
    (
        "block_device_holding_a_protected_tree_is_protected_for_writing",
        |c| {
            // A device node with the number of the filesystem that holds the protected tree (in
            // the guest an anonymous one; on a host the disk and partition behind it too).
            use std::os::unix::fs::MetadataExt as _;
            let st_dev = std::fs::metadata(&c.fx.etc)?.dev();
            let node = c.fx.dir.join("blockdev");
            let _ = std::fs::remove_file(&node);
            let p = std::ffi::CString::new(node.to_string_lossy().as_bytes())?;
            // SAFETY: mknod on a NUL-terminated path.
            let rc =
                unsafe { libc::mknod(p.as_ptr(), libc::S_IFBLK | 0o600, st_dev as libc::dev_t) };
            ensure(rc == 0, || {
                format!("mknod: {}", std::io::Error::last_os_error())
            })?;
            let n = node.to_string_lossy().to_string();
            let (pid, out) = c.op(c.agent(), "write", &[&n])?;
            expect(&out, "errno=1", "agent write open of the block device")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
                .context("no event for the block device")?;
            ensure(
                ev["op"] == "open_write" && ev["rule"] == "protected-etc",
                || format!("block device: {ev}"),
            )?;
            // Outside agents the open reaches the (absent) driver.
            let out = c.op(c.outside(), "write", &[&n])?.1;
            ensure(out != "errno=1", || format!("outside write open: {out}"))
        },
    ),
    (
        "inode_flags_and_timestamps_of_protected_files_are_gated",
        |c| {
            let f = c.fx.etc.join("attrs");
            std::fs::write(&f, "attrs\n")?;
            let p = f.to_string_lossy().to_string();
            for op in ["chattr-append", "set-times"] {
                let (pid, out) = c.op(c.agent(), op, &[&p])?;
                expect(&out, "errno=1", &format!("agent {op}"))?;
                let ev = c
                    .daemon
                    .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
                    .with_context(|| format!("no event for {op}"))?;
                ensure(
                    ev["op"] == "setattr" && ev["rule"] == "protected-etc",
                    || format!("{op}: {ev}"),
                )?;
            }
            // Outside agents the timestamps change (inode flags depend on the filesystem).
            expect(
                &c.op(c.outside(), "set-times", &[&p])?.1,
                "ok",
                "outside set-times",
            )?;
            let out = c.op(c.outside(), "chattr-append", &[&p])?.1;
            ensure(out != "errno=1", || format!("outside chattr: {out}"))?;
            // Clear it again (append-only would stop the fixture's cleanup).
            let _ = c.op(c.outside(), "chattr-append", &[&p, "clear"]);
            Ok(())
        },
    ),
    ("module_autoload_asked_by_an_agent_is_refused", |c| {
        let (pid, _) = c.op(c.agent(), "socket-family", &[UNLOADED_FAMILY])?;
        let ev = c
            .daemon
            .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
            .context("no event for the module autoload")?;
        ensure(
            ev["op"] == "kernel_load"
                && ev["rule"] == "self-protection"
                && ev["target_name"] == "a kernel module autoload (request_module)",
            || format!("module autoload: {ev}"),
        )?;
        let (pid, _) = c.op(c.outside(), "socket-family", &[UNLOADED_FAMILY])?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        ensure(
            !c.daemon
                .events()
                .iter()
                .any(|e| e["pid"].as_u64() == Some(u64::from(pid))),
            || "an event for a process outside agents".into(),
        )
    }),
];

/// Starts `airlock-e2e --op send-fd` outside every agent (this process's cgroup), then runs
/// `recv-fd-write` in `cg`: (receiver pid, receiver output).
fn pass(
    c: &Ctx,
    cg: Option<&std::path::Path>,
    file: &str,
    data: &str,
) -> anyhow::Result<(u32, String)> {
    let sock = c.fx.dir.join(format!("pass-{}.sock", std::process::id()));
    let s = sock.to_string_lossy().to_string();
    let _ = std::fs::remove_file(&sock);
    let sender = Command::new(&c.me)
        .args(["--op", "send-fd", &s, file])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the sender")?;
    let got = c.op(cg, "recv-fd-write", &[&s, data]);
    let sent = sender.wait_with_output()?;
    let _ = std::fs::remove_file(&sock);
    let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    ensure(sent == "sent", || format!("sender: {sent:?}"))?;
    got
}

/// An agent process moved out of its agent cgroup by a process outside the agent stays the
/// agent's, and so does a child it starts afterwards.
pub fn moved_out_agent_process_stays_gated(c: &Ctx) -> anyhow::Result<()> {
    let flag = c.fx.dir.join(format!("moved-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let me = c.me.to_string_lossy().to_string();
    let f = flag.to_string_lossy().to_string();
    let g = c.fx.pristine.to_string_lossy().to_string();
    let mut argv = vec![
        me.as_str(),
        "--op",
        "wait-then-exec",
        f.as_str(),
        g.as_str(),
    ];
    argv.extend(c.fx.gated.args.iter().map(String::as_str));
    let child = crate::harness::spawn_in(c.agent(), None, &argv)?;
    let pid = child.id();
    // Moved by this process (outside every agent), as an administrator or a service would.
    std::fs::write(c.fx.outside_cg.join("cgroup.procs"), pid.to_string())
        .context("moving the agent process out")?;
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let outside = c.fx.outside_cg.file_name().unwrap_or_default();
    ensure(cg.trim_end().ends_with(&*outside.to_string_lossy()), || {
        format!("the process did not move: {cg:?}")
    })?;
    std::fs::write(&flag, "")?;
    let out = child.wait_with_output()?;
    let _ = std::fs::remove_file(&flag);
    let so = String::from_utf8_lossy(&out.stdout).trim().to_string();
    expect(
        &so,
        "child:errno=1\nerrno=1",
        "gated execs of a moved-out agent process and its child",
    )?;
    let ev = c
        .daemon
        .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)) && e["op"] == "exec")
        .context("no exec event for the moved-out process")?;
    ensure(ev["rule"] == "gated-tools", || {
        format!("moved-out exec: {ev}")
    })
}
