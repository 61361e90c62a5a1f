//! Small helpers shared by the xtask jobs: paths, environment probes, running commands with echo,
//! timing and Ctrl-C bookkeeping.
use anyhow::{Context as _, Result, bail};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where things are.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Workspace root (the directory holding the top-level Cargo.toml).
    pub root: PathBuf,
    /// Cargo's target dir (`$CARGO_TARGET_DIR` or `<root>/target`).
    pub target: PathBuf,
    /// `CI=true` (or `1`): missing prerequisites are failures, not skips.
    pub ci: bool,
}

impl Ctx {
    pub fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) if !t.is_empty() => {
                let t = PathBuf::from(t);
                if t.is_absolute() { t } else { root.join(t) }
            }
            _ => root.join("target"),
        };
        let ci = matches!(
            std::env::var("CI")
                .unwrap_or_default()
                .to_ascii_lowercase()
                .as_str(),
            "true" | "1" | "yes"
        );
        Ok(Self { root, target, ci })
    }

    /// Directory of the debug binaries built by `cargo build`.
    pub fn bin_dir(&self) -> PathBuf {
        self.target.join("debug")
    }

    /// Scratch directory for xtask outputs (logs, initramfs images).
    pub fn xtask_dir(&self) -> Result<PathBuf> {
        let d = self.target.join("xtask");
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Download cache (`<root>/.cache`, git-ignored).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join(".cache")
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `prog` is an executable found in `$PATH` (or an existing path if it contains '/').
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Shell-style rendering of a command, for logs.
pub fn render(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), quote(v)));
        }
    }
    s.push_str(&quote(cmd.get_program()));
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

/// Quote a word for a POSIX shell (only when needed).
pub fn quote(w: impl AsRef<OsStr>) -> String {
    let w = w.as_ref().to_string_lossy();
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        w.into_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Run a command with inherited stdio, echoing it first; fail on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    println!("+ {}", render(cmd));
    let st = cmd
        .status()
        .with_context(|| format!("spawning {}", render(cmd)))?;
    check_interrupted()?;
    if !st.success() {
        bail!("`{}` failed: {st}", render(cmd));
    }
    Ok(())
}

/// Run a command quietly and capture its output (no exit-status check).
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("spawning {}", render(cmd)))
}

/// Run a command quietly and return its stdout; fail on a non-zero exit (stderr in the error).
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            render(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, s as u64 % 60)
    }
}

/// Prints a step banner on creation and its elapsed time on `done`.
pub struct Step {
    name: String,
    start: Instant,
}

impl Step {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        println!("\n==> {name}");
        Self {
            name,
            start: Instant::now(),
        }
    }
    pub fn done(self, what: &str) -> Duration {
        let d = self.start.elapsed();
        println!("<== {}: {what} ({})", self.name, fmt_dur(d));
        d
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // Second Ctrl-C: leave now. Children spawned with PR_SET_PDEATHSIG die with us.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT/SIGTERM set a flag that the long-running loops poll (so they can kill what they
/// started, by PID); a second signal exits at once.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches an atomic (and calls _exit), both async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Makes the child get SIGKILL when xtask dies, so no qemu or test process outlives it.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
}
