//! Helpers of the fanotify host tests: a marker cgroup and the fake scope built on it, a
//! hand-built policy, forked "agent" children, and the world one test runs in.
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_agent::agents::{AgentCgroup, AgentMatch, AgentSet};
use airlock_agent::backend::fanotify::{FanotifyBackend, FanotifyError, Scope};
use airlock_agent::cgroup::CgroupDir;
use airlock_agent::event::GateEvent;
use airlock_agent::hold::{Gate, HoldKey, HoldKind, Holder, Release};
use airlock_common::{InodeKey, RuleRef, flags, kernel_dev, op};
use airlock_policy::{CompiledPolicy, ExecTarget, Mode, ProtectedTarget, RuleInfo};
use tokio::sync::mpsc;

/// The tests share the host's fanotify and count the backend's threads: one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("fanotify host test cannot run under CI=true: {why}");
    }
    eprintln!("SKIP fanotify host test: {why}");
    false
}

/// A cgroup whose members the fake scope treats as agents. On drop, whatever is still in it
/// (a test's children only) is killed and it is removed ([`CgroupDir`]).
pub struct MarkerCgroup {
    pub dir: CgroupDir,
    pub mount: PathBuf,
    pub rel: String,
    pub id: u64,
}

impl MarkerCgroup {
    pub fn create(tag: &str) -> io::Result<MarkerCgroup> {
        let mount = airlock_agent::cgroup::cgroup2_mount().map_err(io::Error::other)?;
        let rel = format!("/airlock-fanotify-test-{}-{tag}", std::process::id());
        let dir = CgroupDir::create(mount.join(&rel[1..])).map_err(io::Error::other)?;
        let id = fs::metadata(dir.path())?.ino();
        Ok(MarkerCgroup {
            dir,
            mount,
            rel,
            id,
        })
    }

    /// An fd on cgroup.procs; a child writes "0" to it to join.
    pub fn procs(&self) -> fs::File {
        fs::OpenOptions::new()
            .write(true)
            .open(self.dir.path().join("cgroup.procs"))
            .expect("open cgroup.procs")
    }

    /// The agent set the exec probe is pointed at: this cgroup as the one agent root.
    pub fn agent_set(&self) -> AgentSet {
        let root = AgentCgroup {
            agent: "test-agent".into(),
            path: self.rel.clone(),
            id: self.id,
        };
        AgentSet {
            mount: self.mount.clone(),
            roots: [(self.id, root)].into_iter().collect(),
        }
    }
}

/// Agents = threads whose cgroup is the marker cgroup.
pub struct MarkerScope {
    rel: String,
    id: u64,
}

impl Scope for MarkerScope {
    fn classify(&self, tid: u32) -> Option<AgentMatch> {
        let text = fs::read_to_string(format!("/proc/{tid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        (path == self.rel).then(|| AgentMatch {
            root: AgentCgroup {
                agent: "test-agent".into(),
                path: self.rel.clone(),
                id: self.id,
            },
            cgroup_id: self.id,
            cgroup_path: self.rel.clone(),
        })
    }
}

/// The fake scope for the marker cgroup `rel` (relative to the cgroup2 mount) with id `id`.
pub fn marker_scope(rel: &str, id: u64) -> Arc<dyn Scope> {
    Arc::new(MarkerScope {
        rel: rel.into(),
        id,
    })
}

pub fn key_of(p: &Path) -> InodeKey {
    let m = fs::metadata(p).unwrap();
    let dev = m.dev();
    InodeKey {
        ino: m.ino(),
        dev: kernel_dev(libc::major(dev), libc::minor(dev)),
        slot: 0,
    }
}

/// Builds a CompiledPolicy by hand.
#[derive(Default)]
pub struct Policy(pub CompiledPolicy);

impl Policy {
    pub fn rule(&mut self, act: u32, monitor: bool) -> RuleRef {
        let id = self.0.rules.len() as u32;
        self.0.rules.push(RuleInfo {
            id,
            name: format!("rule{id}"),
            policy: "test".into(),
            source: "test.yaml".into(),
            action: act,
            mode: if monitor {
                Mode::Monitor
            } else {
                Mode::Enforce
            },
            ops: op::ALL_WRITES,
            agents: Vec::new(),
            approval: None,
        });
        RuleRef {
            rule_id: id,
            action: act,
            ops: op::ALL_WRITES,
            flags: if monitor { flags::MONITOR } else { 0 },
        }
    }
    pub fn exec(mut self, p: &Path, act: u32) -> Self {
        let rule = self.rule(act, false);
        let inode = Some(key_of(p));
        self.0.exec.push(ExecTarget {
            rule,
            path: p.into(),
            canonical: p.into(),
            inode,
            entry: None,
            content: None,
        });
        self
    }
    pub fn protect(mut self, p: &Path, act: u32, monitor: bool) -> Self {
        let rule = self.rule(act, monitor);
        let (inode, is_dir) = (key_of(p), p.is_dir());
        self.0.protected.push(ProtectedTarget {
            rule,
            path: p.into(),
            canonical: p.into(),
            inode,
            is_dir,
        });
        self
    }
}

/// One test's world: temp dir, marker cgroup, backend, event receiver.
pub struct World {
    // Field order is drop order: the backend (and its marks) go first.
    pub backend: Option<FanotifyBackend>,
    pub rx: mpsc::Receiver<GateEvent>,
    pub cg: MarkerCgroup,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new(tag: &str) -> Option<World> {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        // SAFETY: geteuid has no arguments.
        if unsafe { libc::geteuid() } != 0 {
            skip_or_fail("needs root (fanotify permission events, cgroups)");
            return None;
        }
        let cg = match MarkerCgroup::create(tag) {
            Ok(c) => c,
            Err(e) => {
                skip_or_fail(&format!("cannot create a cgroup2 marker cgroup: {e}"));
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let backend = match FanotifyBackend::start(tx) {
            Ok(b) => b,
            Err(e) => {
                skip_or_fail(&format!("fanotify backend does not start: {e}"));
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("airlock-fan-")
            .tempdir_in("/tmp")
            .unwrap();
        Some(World {
            backend: Some(backend),
            rx,
            cg,
            dir,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn scope(&self) -> Arc<dyn Scope> {
        marker_scope(&self.cg.rel, self.cg.id)
    }

    pub fn apply(&mut self, p: &Policy) -> Result<(), FanotifyError> {
        let scope = self.scope();
        self.backend.as_mut().unwrap().apply_scoped(&p.0, scope)
    }

    /// The backend's gate.
    pub fn gate(&self) -> Arc<dyn Gate> {
        self.backend.as_ref().expect("backend running").gate()
    }

    /// Waits (up to 5 s) for the next event.
    pub fn next_event(&mut self) -> GateEvent {
        let t = Instant::now();
        loop {
            if let Ok(e) = self.rx.try_recv() {
                return e;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no event within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a hold's event and returns it with its token.
    pub fn next_hold(&mut self) -> (GateEvent, u64) {
        let e = self.next_event();
        let token = e
            .hold_token
            .unwrap_or_else(|| panic!("not a parked hold: {e:#?}"));
        (e, token)
    }

    /// Releases the parked permission event of `ev` through the backend's gate.
    pub fn release(&self, ev: &GateEvent, token: u64, how: Release) {
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
        self.gate().release(&key, &[h], how).expect("release");
    }

    pub fn events(&mut self) -> Vec<GateEvent> {
        let mut v = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            v.push(e);
        }
        v
    }

    /// Runs `f` in a forked child (in the marker cgroup when `agent`); returns (pid, f's code).
    /// `f` must only make raw syscalls: the parent is multi-threaded.
    pub fn child(&self, agent: bool, f: impl FnOnce() -> i32) -> (i32, i32) {
        let procs = agent.then(|| self.cg.procs());
        let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: the child only makes async-signal-safe calls, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if let Some(fd) = procs_fd {
                // SAFETY: writing 1 byte from a static buffer.
                if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                    // SAFETY: _exit never returns.
                    unsafe { libc::_exit(125) };
                }
            }
            // A panic must not unwind into the test's destructors in this forked copy (they
            // would remove the parent's cgroup and temp dir).
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(127);
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        (pid, libc::WEXITSTATUS(status))
    }

    /// open(2) in a child; 0 on success, else errno.
    pub fn open(&self, agent: bool, p: &Path, oflags: i32) -> (i32, i32) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        self.child(agent, move || {
            // SAFETY: valid C string.
            let fd = unsafe { libc::open(c.as_ptr(), oflags | libc::O_CLOEXEC, 0o644) };
            if fd < 0 { errno() } else { 0 }
        })
    }

    /// Spawns `p` (as an agent when `agent`) and waits.
    pub fn exec(&self, agent: bool, p: &Path) -> io::Result<i32> {
        let mut cmd = Command::new(p);
        if agent {
            let procs = self.cg.procs();
            // SAFETY: pre_exec only writes to an fd the child inherited.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Ok(cmd.status()?.code().unwrap_or(-1))
    }
}

pub fn errno() -> i32 {
    // SAFETY: reading the thread's errno.
    unsafe { *libc::__errno_location() }
}

pub fn copy_exe(from: &str, to: &Path) {
    fs::copy(from, to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn backend_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "airlock-fan" || c.trim() == "airlock-inotify")
        })
        .count()
}

/// Retries `f` until it returns true or 3 s pass (for inotify round trips).
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub const EPERM: i32 = libc::EPERM;
