//! The scopes `airlock run` makes do not outlive their processes, however `airlock run` ended.
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cases::Ctx;
use crate::harness::{ensure, spawn_in};

/// Kills what the case started if it fails half way: the `airlock run` (by its Child), the
/// processes in its scope, and the scope itself.
struct RunGuard {
    child: Child,
    scope: Option<PathBuf>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.scope
            && dir.exists()
        {
            // Only this run's scope: every process in it is one this case started.
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            let t = Instant::now();
            while populated(dir) && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|t| t.contains("populated 1"))
}

/// The scope of the `airlock run` with pid `pid` in `slice` (named `airlock-e2e-<pid>x…`).
fn scope_of(slice: &Path, pid: u32) -> Option<PathBuf> {
    let prefix = format!("airlock-e2e-{pid}x");
    std::fs::read_dir(slice)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// Guards the regression "a SIGKILL of `airlock run` leaves its empty scope behind": airlockd
/// removes the scope once its processes are gone.
pub fn sigkilled_run(c: &Ctx) -> anyhow::Result<()> {
    let airlock = c.bin_dir.join("airlock").to_string_lossy().to_string();
    let sd = c.daemon.state_dir.to_string_lossy().to_string();
    let slice = airlock_agent::cgroup::cgroup2_mount()?.join("airlock.slice");
    let child = spawn_in(
        c.outside(),
        None,
        &[
            &airlock,
            "run",
            "--agent",
            "e2e",
            "--state-dir",
            &sd,
            "--",
            "/bin/sleep",
            "60",
        ],
    )?;
    let pid = child.id();
    let mut guard = RunGuard { child, scope: None };
    // Running: the scope exists and sleep is in it.
    let t = Instant::now();
    let scope = loop {
        if let Some(s) = scope_of(&slice, pid)
            && populated(&s)
        {
            break s;
        }
        ensure(t.elapsed() < Duration::from_secs(15), || {
            format!(
                "no populated scope of airlock run {pid} in {}",
                slice.display()
            )
        })?;
        std::thread::sleep(Duration::from_millis(20));
    };
    guard.scope = Some(scope.clone());
    let procs = std::fs::read_to_string(scope.join("cgroup.procs"))
        .with_context(|| format!("reading {}/cgroup.procs", scope.display()))?;
    // SIGKILL: `airlock run` gets no chance to clean up.
    guard.child.kill()?;
    guard.child.wait()?;
    ensure(scope.exists(), || {
        "the scope went with airlock run itself".into()
    })?;
    for p in procs
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // The sleep this case started (the scope held nothing else).
        // SAFETY: kill(2) with a pid read from our own run's scope.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let t = Instant::now();
    while scope.exists() {
        ensure(t.elapsed() < Duration::from_secs(5), || {
            format!(
                "{} still there 5 s after its processes were killed (populated: {})",
                scope.display(),
                populated(&scope)
            )
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = airlock_agent::paths::run_record(
        &c.daemon.state_dir,
        &scope.file_name().unwrap_or_default().to_string_lossy(),
    );
    // The reaper removes the record right after the scope: give it a moment (a slow guest
    // can be between the two when the scope's absence is seen).
    let t = Instant::now();
    while record.exists() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure(!record.exists(), || {
        format!("run record {} left behind", record.display())
    })
}
