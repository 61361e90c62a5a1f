//! Scenario plumbing: a report that counts PASS/FAIL/SKIP, an airlockd guard, fixtures, and
//! children run inside a given cgroup. Every guard cleans up on drop, also when a check fails.
use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Counts results and prints one line per check.
#[derive(Default)]
pub struct Report {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl Report {
    /// Records one check.
    pub fn check(&mut self, name: &str, r: anyhow::Result<()>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name}: {e:#}");
            }
        }
    }

    /// Records a check that could not run, and why. Under CI that is a failure.
    pub fn skip(&mut self, name: &str, why: &str) {
        if std::env::var("CI").as_deref() == Ok("true") {
            self.failed += 1;
            println!("FAIL {name}: {why} (a missing feature fails under CI)");
        } else {
            self.skipped += 1;
            println!("SKIP {name}: {why}");
        }
    }
}

/// Asserts a condition with a message.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> anyhow::Result<()> {
    if cond { Ok(()) } else { bail!(msg()) }
}

/// A running airlockd; SIGTERM (by PID) and wait on drop.
pub struct Daemon {
    child: Option<Child>,
    pub state_dir: PathBuf,
    /// Where it pins its programs (`AIRLOCK_PIN_DIR`).
    pub pin_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts airlockd and waits until its status file names its pid.
    pub fn start(
        bin_dir: &Path,
        policy: &Path,
        state_dir: &Path,
        backend: &str,
    ) -> anyhow::Result<Daemon> {
        Daemon::start_with(bin_dir, policy, state_dir, backend, &[])
    }

    /// [`Daemon::start`] with extra airlockd arguments (e.g. `--server URL`).
    pub fn start_with(
        bin_dir: &Path,
        policy: &Path,
        state_dir: &Path,
        backend: &str,
        extra: &[&str],
    ) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(state_dir)?;
        let log = state_dir.join("airlockd.log");
        let out = std::fs::File::create(&log)?;
        let pins = pin_dir().join(
            state_dir
                .parent()
                .and_then(|p| p.file_name())
                .unwrap_or_default(),
        );
        let child = Command::new(bin_dir.join("airlockd"))
            .env("AIRLOCK_PIN_DIR", &pins)
            .arg("--policy")
            .arg(policy)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--backend")
            .arg(backend)
            .args(extra)
            .env(
                "AIRLOCK_LOG",
                std::env::var("AIRLOCK_E2E_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning airlockd")?;
        let pid = child.id();
        let mut d = Daemon {
            child: Some(child),
            state_dir: state_dir.to_path_buf(),
            pin_dir: pins,
            log,
        };
        // Under software emulation on a loaded 2-core machine, loading and verifying the LSM
        // programs took over 30 s on the 6.1 guest: wait longer (it costs nothing when quick).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = d.status()
                && s["pid"].as_u64() == Some(pid as u64)
            {
                return Ok(d);
            }
            if let Some(c) = d.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!("airlockd exited early ({st}):\n{}", d.log_text());
            }
            if Instant::now() > deadline {
                bail!("airlockd not ready after 120 s:\n{}", d.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// airlockd's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The parsed status file.
    pub fn status(&self) -> Option<serde_json::Value> {
        let b = std::fs::read(self.state_dir.join("status.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// airlockd's own log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Events recorded so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let Ok(f) = std::fs::File::open(self.state_dir.join("events.jsonl")) else {
            return vec![];
        };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// Waits up to 5 s for an event matching `pred`.
    pub fn wait_event(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills the daemon with SIGKILL (no clean-up of its own) and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            bail!("already stopped")
        };
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 10 s) and returns its exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("already stopped")
        };
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                c.kill()?;
                return Ok(c.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs `argv` with its process moved into `cgroup` before exec (or left where it is when
/// `cgroup` is None), from working directory `cwd`, and collects its output.
pub fn run_in(
    cgroup: Option<&Path>,
    cwd: Option<&Path>,
    argv: &[&str],
) -> anyhow::Result<(u32, Output)> {
    let child = spawn_in(cgroup, cwd, argv)?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    Ok((pid, out))
}

/// Starts `argv` like [`run_in`] without waiting for it; stdout and stderr are piped.
pub fn spawn_in(cgroup: Option<&Path>, cwd: Option<&Path>, argv: &[&str]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    if let Some(cg) = cgroup {
        join_cgroup(&mut cmd, cg)?;
    }
    cmd.spawn().with_context(|| format!("spawning {argv:?}"))
}

/// Makes `cmd`'s child move itself into `cgroup` before exec, so nothing of it runs outside.
fn join_cgroup(cmd: &mut Command, cgroup: &Path) -> anyhow::Result<()> {
    let procs = std::ffi::CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    // SAFETY: only async-signal-safe calls (open/write/close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Copies the executable `src` to `dst` and appends `tag` past the end of its ELF image (the
/// loader ignores trailing bytes): a program that runs the same but has content of its own.
/// Test binaries must differ in content, or gating one by content would gate its twins (and
/// airlock-e2e itself, which runs every operation).
pub fn copy_distinct(src: &Path, dst: &Path, tag: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::fs::copy(src, dst)
        .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    let mut f = std::fs::OpenOptions::new().append(true).open(dst)?;
    f.write_all(format!("\0airlock-e2e copy: {tag}\0").as_bytes())?;
    Ok(())
}

/// stdout of an `--op` child, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// (kernel dev, ino) of a path, as events report them.
pub fn kernel_id(p: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).with_context(|| p.display().to_string())?;
    let dev = m.dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    Ok(((major << 20) | minor, m.ino()))
}

/// bpffs directory this test run's daemons pin their programs under (never the system's).
pub fn pin_dir() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/airlock-e2e-{}", std::process::id()))
}

/// Removes this run's pins on drop (unpinning detaches the programs once no daemon holds them).
pub struct Pins;

impl Pins {
    /// Removes them now; true when nothing is left.
    pub fn remove(&self) -> bool {
        let d = pin_dir();
        // The kernel detaches unpinned programs asynchronously (about 1.5 s under emulation):
        // the backends' removers wait until they are gone.
        for sub in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let _ = airlock_agent::backend::lsm::remove_pins(&sub.path());
            let _ = airlock_agent::backend::exec_context::remove_pins(&sub.path().join("exec"));
        }
        let _ = std::fs::remove_dir_all(&d);
        !d.exists()
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A child started in a cgroup that is not waited for yet (held syscalls).
pub struct Spawned {
    pub child: Option<Child>,
    pub pid: u32,
}

impl Spawned {
    /// Starts `argv` inside `cgroup` with piped stdout/stderr.
    pub fn start(cgroup: &Path, argv: &[&str]) -> anyhow::Result<Spawned> {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        join_cgroup(&mut cmd, cgroup)?;
        let child = cmd.spawn().with_context(|| format!("spawning {argv:?}"))?;
        let pid = child.id();
        Ok(Spawned {
            child: Some(child),
            pid,
        })
    }

    /// Has it exited (without reaping)?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits up to `timeout` for it to exit and returns its output.
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<Output> {
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() > deadline {
                bail!("child {} still running after {timeout:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(self.child.take().context("reaped")?.wait_with_output()?)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes an empty directory (a cgroup) on drop, when one is given.
pub struct RemoveIfCreated(pub Option<PathBuf>);

impl Drop for RemoveIfCreated {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Agent names the scenarios start with `airlock run` (its scopes are
/// `airlock.slice/airlock-AGENT-UNIQUE.scope`).
const RUN_AGENTS: &[&str] = &["e2e", "e2esrv", "nobody-defines-this", "demo"];

/// Removes, on drop, the `airlock run` scopes of [`RUN_AGENTS`] under `slice` that appeared
/// while it lived. `airlock run` removes its scope when it exits, but a case that fails kills
/// it (SIGKILL, `Spawned`'s drop) and the scope stays: its processes are killed
/// (`cgroup.kill`) and the directory removed. Scopes that were there before are not touched.
pub struct ScopeSweep {
    slice: Option<PathBuf>,
    before: std::collections::HashSet<std::ffi::OsString>,
}

impl ScopeSweep {
    pub fn new(slice: Option<PathBuf>) -> ScopeSweep {
        let before = slice.as_deref().map(ours).unwrap_or_default();
        ScopeSweep { slice, before }
    }
}

/// Names of the scopes of [`RUN_AGENTS`] in `slice`.
fn ours(slice: &Path) -> std::collections::HashSet<std::ffi::OsString> {
    let Ok(rd) = std::fs::read_dir(slice) else {
        return Default::default();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            n.ends_with(".scope")
                && RUN_AGENTS.iter().any(|a| {
                    n.strip_prefix(&format!("airlock-{a}-"))
                        .is_some_and(|rest| !rest.contains('-'))
                })
        })
        .collect()
}

impl Drop for ScopeSweep {
    fn drop(&mut self) {
        let Some(slice) = &self.slice else { return };
        for name in ours(slice).difference(&self.before) {
            let dir = slice.join(name);
            // Opened, never created (outside cgroupfs there is nothing to kill).
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.kill"))
            {
                let _ = std::io::Write::write_all(&mut f, b"1");
            }
            let t = std::time::Instant::now();
            while std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.is_empty())
                && t.elapsed() < std::time::Duration::from_secs(2)
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("airlock-e2e: leftover cgroup {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ScopeSweep;

    /// Guards the host against cgroups a failed case leaves: new scopes of the scenarios'
    /// agents go, the ones that were there and other agents' stay.
    #[test]
    fn scope_sweep_removes_only_scenario_scopes_made_while_it_lived() {
        let slice = tempfile::tempdir().unwrap();
        let mk = |n: &str| std::fs::create_dir(slice.path().join(n)).unwrap();
        mk("airlock-e2e-1x1.scope");
        let sweep = ScopeSweep::new(Some(slice.path().to_path_buf()));
        mk("airlock-e2esrv-2x2.scope");
        mk("airlock-e2e-3x3.scope");
        mk("airlock-someone-4x4.scope");
        mk("airlock-e2e-team-5x5.scope");
        drop(sweep);
        let mut left: Vec<String> = std::fs::read_dir(slice.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "airlock-e2e-1x1.scope",
                "airlock-e2e-team-5x5.scope",
                "airlock-someone-4x4.scope"
            ]
        );
    }
}
