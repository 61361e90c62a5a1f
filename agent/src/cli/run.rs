//! `airlock run --agent NAME [--cgroup-root PATH] -- CMD [ARGS...]`: runs CMD as agent NAME,
//! i.e. in a fresh cgroup `/airlock.slice/airlock-NAME-<unique>.scope`, which every agent NAME
//! matches implicitly.
//!
//! Where systemd runs (and no `--cgroup-root` is given) the cgroup is a transient scope made by
//! `systemd-run --scope`, so systemd's own bookkeeping stays right. Otherwise the cgroup is made
//! directly in cgroupfs: the forked child moves itself into it before exec, so nothing of CMD
//! ever runs outside it. Either way `AIRLOCK_AGENT=NAME` is set for CMD, SIGINT/SIGTERM/SIGHUP
//! sent to `airlock run` are passed on, and the exit status is CMD's (128+N if killed by
//! signal N; 127/126 if CMD cannot be found/executed).
//!
//! `--kill-on-exit` (default true): when CMD exits, processes it left behind are killed and the
//! cgroup removed. With `--kill-on-exit=false` they keep running, and the cgroup stays as long
//! as they do, so they remain agent processes (still gated). Once they are gone, airlockd
//! removes it (as it removes the scope of an `airlock run` that was killed: agents/reap.rs);
//! under systemd, systemd collects the transient scope itself.
pub mod gated_exec;

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::cgroup::{self, CgroupDir, CgroupError, KILL_TIMEOUT};

/// Arguments of `airlock run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Agent to run CMD as (lowercase letters, digits, '_' and '-').
    #[arg(long, value_name = "NAME")]
    pub agent: String,
    /// cgroup2 mount to create the agent cgroup under, instead of the one found in
    /// /proc/self/mountinfo. Implies creating it directly in cgroupfs (no systemd-run).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// When CMD exits, kill what it left running and remove its cgroup. With false, leftover
    /// processes keep running in the agent cgroup, which stays until they are gone.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub kill_on_exit: bool,
    /// Notes on stderr about the cgroup used.
    #[arg(long)]
    pub verbose: bool,
    /// airlockd's state directory: CMD starts only once airlockd gates its cgroup.
    #[arg(long, env = "AIRLOCK_STATE_DIR", default_value = "/run/airlock")]
    pub state_dir: PathBuf,
    /// Start CMD even when no airlockd gates its cgroup (it then runs ungated).
    #[arg(long)]
    pub unguarded: bool,
    /// Why this agent runs; shown with every approval request of this run (an agent can give
    /// a reason per action by setting AIRLOCK_REASON in its environment).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Do not write airlock's lines about held actions (held, then decided or timed out) to
    /// the standard error of this run's processes.
    #[arg(long)]
    pub quiet: bool,
    /// The command to run, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// Runs `airlock run`; returns the exit code `airlock` should exit with (CMD's).
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    run_status(&args).map(ExitCode::from)
}

/// [`run`], with the exit code as a number.
pub fn run_status(args: &RunArgs) -> anyhow::Result<u8> {
    validate_agent_name(&args.agent)?;
    // Signal forwarding uses process-wide state; one run at a time per process.
    let _one_at_a_time = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if args.cgroup_root.is_none() && Path::new("/run/systemd/system").is_dir() {
        match find_in_path("systemd-run") {
            Some(systemd_run) => return run_in_systemd_scope(args, &systemd_run),
            None => note(
                args,
                "systemd runs but systemd-run is not in PATH; using cgroupfs directly",
            ),
        }
    }
    run_in_cgroupfs(args)
}

static RUN_LOCK: Mutex<()> = Mutex::new(());

/// How long `airlock run` waits for airlockd to pick up a new agent cgroup (it normally takes
/// one inotify round trip).
pub(crate) const GATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until airlockd's status lists cgroup `id` among the agent cgroups it gates, so that
/// nothing of CMD runs before the kernel side knows the cgroup.
pub fn wait_until_gated(
    state_dir: &Path,
    id: u64,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let status = crate::paths::status_file(state_dir);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let gated = std::fs::read(&status)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::daemon::Status>(&b).ok())
            .filter(|s| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid as i32), None).is_ok()
            });
        match gated {
            Some(s) if s.agents.iter().any(|a| a.id == id) => return Ok(()),
            None if std::time::Instant::now() > deadline => {
                bail!(
                    "airlockd is not running (no live status in {})",
                    status.display()
                )
            }
            _ if std::time::Instant::now() > deadline => {
                bail!(
                    "airlockd did not pick the cgroup up within {timeout:?} (does the policy define this agent?)"
                )
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

/// Agent names become part of cgroup and unit names, and of selector globs.
pub fn validate_agent_name(name: &str) -> anyhow::Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || !ok_chars {
        bail!("invalid agent name {name:?}: use only lowercase letters, digits, '_' and '-'");
    }
    if name.len() > 200 {
        bail!("invalid agent name: longer than 200 characters");
    }
    Ok(())
}

/// The cgroup path (relative to the mount) of a run of agent `name`.
pub fn scope_cgroup_path(name: &str, unique: &str) -> String {
    format!("/airlock.slice/airlock-{name}-{unique}.scope")
}

/// Unique among live runs (it contains our pid) and unlikely to repeat a stale leftover's name.
/// No '-' inside, so the agent name is everything between `airlock-` and the last '-'.
fn unique_suffix(attempt: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}x{:x}", std::process::id(), nanos.wrapping_add(attempt))
}

fn run_in_cgroupfs(args: &RunArgs) -> anyhow::Result<u8> {
    let mount = match &args.cgroup_root {
        Some(root) => root.clone(),
        None => cgroup::cgroup2_mount().context("airlock run needs cgroup v2")?,
    };
    let mut attempt = 0;
    let (mut scope, path) = loop {
        let path = scope_cgroup_path(&args.agent, &unique_suffix(attempt));
        match CgroupDir::create(cgroup::cgroup_dir(&mount, &path)) {
            Ok(dir) => break (dir, path),
            Err(CgroupError::Exists { .. }) if attempt < 10 => attempt += 1,
            Err(e) => {
                return Err(e).context("cannot create the agent cgroup (airlock run needs root, or a delegated cgroup as --cgroup-root)");
            }
        }
    };
    scope.set_kill_on_drop(args.kill_on_exit);
    let scope_name = path.rsplit('/').next().unwrap_or_default().to_string();
    let _record = RunRecord::write(&args.state_dir, &scope_name, args);
    if args.verbose {
        let id = scope
            .id()
            .map(|i| i.to_string())
            .unwrap_or_else(|e| format!("? ({e})"));
        note(
            args,
            &format!("agent {}: cgroup {path} (id {id})", args.agent),
        );
    }

    if !args.unguarded {
        let id = scope.id().context("agent cgroup id")?;
        wait_until_gated(&args.state_dir, id, GATE_TIMEOUT)
            .with_context(|| format!("agent cgroup {path} is not gated; refusing to start an ungated agent (--unguarded runs it anyway)"))?;
    }
    let procs_path = scope.path().join("cgroup.procs");
    // Opened before fork: the child may only make async-signal-safe calls (write) before exec.
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .with_context(|| format!("opening {}", procs_path.display()))?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = command(args, &args.command[0], &args.command[1..]);
    // SAFETY: the closure only calls write(2), which is async-signal-safe; the fd stays open in
    // the parent until spawn returns and is O_CLOEXEC, so CMD does not inherit it.
    unsafe {
        cmd.pre_exec(move || {
            // "0" = the writing process itself.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let status = spawn_and_wait(args, cmd);
    drop(procs);
    let status = status?;

    if !args.kill_on_exit && scope.is_populated().unwrap_or(false) {
        let kept = scope.keep();
        note(
            args,
            &format!("processes left running; keeping cgroup {}", kept.display()),
        );
    } else if let Err(e) = scope.remove() {
        eprintln!("airlock run: warning: could not clean up the agent cgroup: {e}");
    }
    Ok(status)
}

fn run_in_systemd_scope(args: &RunArgs, systemd_run: &Path) -> anyhow::Result<u8> {
    let unit = format!("airlock-{}-{}", args.agent, unique_suffix(0));
    note(
        args,
        &format!(
            "agent {}: systemd scope {unit}.scope in airlock.slice",
            args.agent
        ),
    );
    let exe = std::env::current_exe().context("the airlock binary's path")?;
    let argv = scope_argv(&unit, &exe, args);
    let cmd = command(args, systemd_run.as_os_str(), &argv);
    let _record = RunRecord::write(&args.state_dir, &format!("{unit}.scope"), args);
    let status = spawn_and_wait(args, cmd)?;
    if args.kill_on_exit {
        // systemd-run --scope exec'd CMD, so it is gone; leftovers keep the scope alive. Killing
        // them through cgroupfs lets systemd see the scope empty and collect it.
        if let Ok(mount) = cgroup::cgroup2_mount()
            && let dir = cgroup::cgroup_dir(&mount, format!("/airlock.slice/{unit}.scope"))
            && dir.is_dir()
            && let Err(e) = cgroup::kill_tree(&dir, KILL_TIMEOUT)
        {
            eprintln!("airlock run: warning: could not kill leftover processes: {e}");
        }
    }
    Ok(status)
}

/// `systemd-run`'s arguments: the scope, then `airlock __gated-exec`, which waits inside the
/// scope until airlockd gates it and only then execs CMD (see `run/gated_exec.rs`).
fn scope_argv(unit: &str, exe: &Path, args: &RunArgs) -> Vec<OsString> {
    let mut argv: Vec<OsString> = systemd_run_args(unit)
        .into_iter()
        .map(OsString::from)
        .collect();
    argv.push(exe.into());
    argv.push(gated_exec::NAME.into());
    argv.push("--state-dir".into());
    argv.push(args.state_dir.clone().into());
    if args.unguarded {
        argv.push("--unguarded".into());
    }
    argv.push("--".into());
    argv.extend(args.command.iter().cloned());
    argv
}

/// Arguments to `systemd-run` before CMD.
pub fn systemd_run_args(unit: &str) -> Vec<String> {
    vec![
        "--scope".into(),
        "--slice=airlock.slice".into(),
        format!("--unit={unit}"),
        "--quiet".into(),
        "--".into(),
    ]
}

/// Who launched a run and why, for the approval requests of its agent: written to
/// `STATE_DIR/runs/<scope>.json` before CMD starts (airlockd reads it by the scope's name),
/// removed when the run ends. Best effort: without it requests just lack "launched by".
struct RunRecord {
    path: Option<PathBuf>,
}

impl RunRecord {
    fn write(state_dir: &Path, scope: &str, args: &RunArgs) -> RunRecord {
        let uid = nix::unistd::getuid();
        let launcher = crate::hold::Launcher {
            uid: uid.as_raw(),
            user: nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name),
            sudo_user: std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()),
            reason: args.reason.clone(),
        };
        let path = crate::paths::run_record(state_dir, scope);
        let file = crate::hold::RunRecordFile {
            launcher,
            quiet: args.quiet,
        };
        let body = serde_json::to_vec(&file).expect("run record serializes");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, body));
        match written {
            Ok(()) => RunRecord { path: Some(path) },
            Err(e) => {
                eprintln!(
                    "airlock run: warning: cannot record who launched this run ({}): {e}",
                    path.display()
                );
                RunRecord { path: None }
            }
        }
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn command(args: &RunArgs, program: impl AsRef<std::ffi::OsStr>, argv: &[OsString]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(argv).env("AIRLOCK_AGENT", &args.agent);
    cmd
}

/// Spawns `cmd`, forwards signals to it until it exits, and returns its shell-style exit code.
/// Failing to start CMD is reported on stderr and gives 127 (not found) or 126, as shells do.
fn spawn_and_wait(args: &RunArgs, mut cmd: Command) -> anyhow::Result<u8> {
    let forwarder = SignalForwarder::install().context("installing signal handlers")?;
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "airlock run: {}: {e}",
                Path::new(cmd.get_program()).display()
            );
            return Ok(if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    forwarder.set_child(child.id());
    let status = child.wait().context("waiting for the command")?;
    drop(forwarder);
    let code = exit_code(status);
    if args.verbose && code != 0 {
        note(args, &format!("command exited with {status}"));
    }
    Ok(code)
}

/// Shell convention: the exit code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    }
}

fn note(args: &RunArgs, msg: &str) {
    if args.verbose {
        eprintln!("airlock run: {msg}");
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
/// The child to forward to (0: none yet). Statics because a signal handler can reach nothing else.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived before the child's pid was known.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid <= 0 {
        PENDING.store(sig, Ordering::SeqCst);
        return;
    }
    // Sent by the terminal (Ctrl-C, hangup) to our whole process group, which includes the
    // child: it already has it, and a second copy would look like a double Ctrl-C.
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    if !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    // SAFETY: kill(2) is async-signal-safe.
    unsafe { libc::kill(pid, sig) };
}

/// Installs the forwarding handlers; dropping restores the previous ones.
struct SignalForwarder {
    previous: Vec<(Signal, SigAction)>,
}

impl SignalForwarder {
    fn install() -> nix::Result<SignalForwarder> {
        CHILD.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::SigAction(forward),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut me = SignalForwarder {
            previous: Vec::new(),
        };
        for sig in FORWARDED {
            // SAFETY: `forward` only touches atomics and calls kill(2).
            let old = unsafe { sigaction(sig, &action)? };
            me.previous.push((sig, old));
        }
        Ok(me)
    }

    fn set_child(&self, pid: u32) {
        let pid = pid as i32;
        CHILD.store(pid, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if pending != 0 {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid, pending) };
        }
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..).rev() {
            // SAFETY: restoring the action that was installed before.
            let _ = unsafe { sigaction(sig, &old) };
        }
        CHILD.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(argv: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(argv.iter().copied())).map(|c| c.run)
    }

    #[test]
    fn agent_names_outside_lowercase_alnum_dash_underscore_are_rejected() {
        for ok in ["claude", "codex-2", "a_b", "0"] {
            validate_agent_name(ok).unwrap();
        }
        for bad in ["", "Claude", "a/b", "a.b", "a b", "x*", "ü", "../x"] {
            let e = validate_agent_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid agent name"), "{bad:?}: {e}");
        }
        assert!(validate_agent_name(&"a".repeat(201)).is_err());
    }

    #[test]
    fn scope_path_matches_the_implicit_agent_selector_shape() {
        let u = unique_suffix(0);
        assert!(!u.contains('-') && !u.contains('/'), "{u}");
        let p = scope_cgroup_path("claude", &u);
        assert_eq!(p, format!("/airlock.slice/airlock-claude-{u}.scope"));
        let airlock_policy::Selector::Cgroup(sel) = airlock_policy::run_scope_selector("claude")
        else {
            panic!("run scope selector is not a cgroup glob");
        };
        let glob = globset::GlobBuilder::new(&sel)
            .literal_separator(true)
            .build()
            .unwrap()
            .compile_matcher();
        assert!(glob.is_match(&p));
    }

    #[test]
    fn systemd_run_gets_scope_slice_unit_and_end_of_options() {
        let a = systemd_run_args("airlock-claude-1x2");
        assert_eq!(
            a,
            [
                "--scope",
                "--slice=airlock.slice",
                "--unit=airlock-claude-1x2",
                "--quiet",
                "--"
            ]
        );
    }

    /// Regression: under systemd, CMD ran before airlockd gated its scope (systemd-run execs
    /// it at once); the scope's first program must be the gate wait, with CMD after `--`.
    #[test]
    fn under_systemd_the_scope_starts_with_the_gate_wait_then_cmd() {
        let a = parse(&["--agent", "claude", "--", "dpkg", "--", "-i"]).unwrap();
        let argv = scope_argv("airlock-claude-1x2", Path::new("/usr/bin/airlock"), &a);
        let argv: Vec<&str> = argv.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            argv,
            [
                "--scope",
                "--slice=airlock.slice",
                "--unit=airlock-claude-1x2",
                "--quiet",
                "--",
                "/usr/bin/airlock",
                "__gated-exec",
                "--state-dir",
                "/run/airlock",
                "--",
                "dpkg",
                "--",
                "-i"
            ]
        );
        // And the hidden command parses it back to the same CMD.
        let g = gated_exec::GatedExecCli::try_parse_from(argv[6..].iter().copied())
            .unwrap()
            .args;
        assert_eq!(g.command, ["dpkg", "--", "-i"]);
        assert!(!g.unguarded);
        assert_eq!(g.state_dir, PathBuf::from("/run/airlock"));
    }

    #[test]
    fn cli_parses_command_after_double_dash_with_its_own_flags() {
        let a = parse(&["--agent", "claude", "--", "ls", "-la", "--verbose"]).unwrap();
        assert_eq!(a.agent, "claude");
        assert_eq!(a.command, ["ls", "-la", "--verbose"]);
        assert!(a.kill_on_exit);
        assert!(!a.verbose);
        assert!(a.cgroup_root.is_none());
    }

    #[test]
    fn cli_kill_on_exit_can_be_turned_off_and_cmd_is_required() {
        let a = parse(&[
            "--agent",
            "x",
            "--kill-on-exit=false",
            "--verbose",
            "--cgroup-root",
            "/c",
            "--",
            "sh",
        ])
        .unwrap();
        assert!(!a.kill_on_exit);
        assert!(a.verbose);
        assert_eq!(a.cgroup_root.as_deref(), Some(Path::new("/c")));
        assert!(parse(&["--agent", "x"]).is_err());
        assert!(parse(&["--", "sh"]).is_err());
    }

    #[test]
    fn exit_code_follows_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn invalid_agent_name_fails_before_touching_cgroups() {
        let a = parse(&[
            "--agent",
            "Bad/Name",
            "--cgroup-root",
            "/nonexistent",
            "--",
            "true",
        ])
        .unwrap();
        let e = run_status(&a).unwrap_err().to_string();
        assert!(e.contains("invalid agent name"), "{e}");
    }
}
