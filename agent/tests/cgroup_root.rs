//! Tests against the real cgroup2 hierarchy; they need root. Without root they print why and
//! pass, except under `CI=true`, where skipping would hide a broken setup, so they fail.
//!
//! Every cgroup made here is `<mount>/airlock-test-<pid>-<test>` or below, held by a
//! [`CgroupDir`] guard, so a failing (panicking) test still removes what it made.
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_agent::agents::{AgentSet, CgroupWatcher};
use airlock_agent::cgroup::{self, CgroupDir};
use airlock_agent::cli::run::{RunArgs, run_status};
use airlock_policy::{AgentDef, Selector};

/// The cgroup2 mount, or `None` (test skipped) when not root. Panics under CI=true instead.
fn setup(test: &str) -> Option<PathBuf> {
    let why = if !nix::unistd::geteuid().is_root() {
        "needs root".to_string()
    } else {
        match cgroup::cgroup2_mount() {
            Ok(m) => return Some(m),
            Err(e) => format!("needs cgroup2: {e}"),
        }
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} {why} (CI=true: not skipping)");
    }
    eprintln!("skipping {test}: {why}");
    None
}

/// A fresh test cgroup directly under the mount.
fn test_root(mount: &Path, test: &str) -> CgroupDir {
    CgroupDir::create(mount.join(format!("airlock-test-{}-{test}", std::process::id()))).unwrap()
}

/// The cgroup path (leading `/`) of `dir` under `mount`.
fn rel(mount: &Path, dir: &Path) -> String {
    cgroup::cgroup_path_of(mount, dir).unwrap()
}

fn agent(name: &str, selector: Selector) -> AgentDef {
    AgentDef {
        name: name.into(),
        policy: "test".into(),
        selectors: vec![selector],
    }
}

/// A child that lives until killed; killed and reaped on drop so no test leaks it.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("300")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn process_gone(pid: u32) -> bool {
    // Gone, or a zombie waiting for a parent that is not us.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn classify_pid_finds_agent_root_of_process_in_nested_cgroup() {
    let Some(mount) = setup("classify_pid_finds_agent_root_of_process_in_nested_cgroup") else {
        return;
    };
    let root = test_root(&mount, "classify");
    let agent_dir = root.create_child("agent.scope").unwrap();
    let deeper = root.create_child("agent.scope/sub/deeper").unwrap();
    let other = root.create_child("other.scope").unwrap();
    let in_agent = Sleeper::spawn();
    let outside = Sleeper::spawn();
    cgroup::add_pid(&deeper, in_agent.pid()).unwrap();
    cgroup::add_pid(&other, outside.pid()).unwrap();

    assert_eq!(
        cgroup::pid_cgroup_path(in_agent.pid()).unwrap(),
        rel(&mount, &deeper)
    );
    let set = AgentSet::resolve(
        mount.clone(),
        &[agent("t", Selector::Cgroup(rel(&mount, &agent_dir)))],
    )
    .unwrap();
    assert_eq!(set.roots.len(), 1);
    let m = set
        .classify_pid(in_agent.pid())
        .expect("agent process classified");
    assert_eq!(m.root.agent, "t");
    assert_eq!(m.root.path, rel(&mount, &agent_dir));
    assert_eq!(m.root.id, cgroup::cgroup_id(&agent_dir).unwrap());
    assert_eq!(m.cgroup_path, rel(&mount, &deeper));
    assert_eq!(m.cgroup_id, std::fs::metadata(&deeper).unwrap().ino());
    assert_eq!(set.classify_pid(outside.pid()), None);
    assert_eq!(set.classify_pid(std::process::id()), None);
}

#[test]
fn unit_selector_matches_cgroup_basename_in_real_tree() {
    let Some(mount) = setup("unit_selector_matches_cgroup_basename_in_real_tree") else {
        return;
    };
    let root = test_root(&mount, "unit");
    let unit = format!("airlock-unit-test-{}.service", std::process::id());
    let svc = root.create_child(format!("system.slice/{unit}")).unwrap();
    let p = Sleeper::spawn();
    cgroup::add_pid(&svc, p.pid()).unwrap();
    let set =
        AgentSet::resolve(mount.clone(), &[agent("svc", Selector::SystemdUnit(unit))]).unwrap();
    assert_eq!(
        set.classify_pid(p.pid()).unwrap().root.path,
        rel(&mount, &svc)
    );
}

#[test]
fn watcher_sees_mkdir_and_rmdir_of_cgroups_on_cgroup2() {
    let Some(mount) = setup("watcher_sees_mkdir_and_rmdir_of_cgroups_on_cgroup2") else {
        return;
    };
    let w = CgroupWatcher::spawn(mount.clone()).unwrap();
    assert!(w.uses_inotify());
    let g0 = w.generation();
    let root = test_root(&mount, "watch");
    wait_until("mkdir under the mount", || w.generation() > g0);
    // The new cgroup got its own watch: a cgroup made inside it is seen too.
    let g1 = w.generation();
    let child = root.create_child("agent.scope").unwrap();
    wait_until("mkdir in a new cgroup", || w.generation() > g1);
    let g2 = w.generation();
    std::fs::remove_dir(&child).unwrap();
    wait_until("rmdir", || w.generation() > g2);
}

#[test]
fn guard_kills_and_removes_nested_cgroups_when_test_panics() {
    let Some(mount) = setup("guard_kills_and_removes_nested_cgroups_when_test_panics") else {
        return;
    };
    let mut victim = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = victim.id();
    let path = mount.join(format!("airlock-test-{}-panic", std::process::id()));
    let p2 = path.clone();
    let result = std::panic::catch_unwind(move || {
        let g = CgroupDir::create(&p2).unwrap();
        let deep = g.create_child("a/b/c").unwrap();
        g.create_child("a/d").unwrap();
        cgroup::add_pid(&deep, pid).unwrap();
        panic!("test failure inside the guard's scope");
    });
    assert!(result.is_err());
    let status = victim.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn kill_all_with_cgroup_kill_empties_subtree() {
    let Some(mount) = setup("kill_all_with_cgroup_kill_empties_subtree") else {
        return;
    };
    let root = test_root(&mount, "killall");
    let sub = root.create_child("sub").unwrap();
    let mut sh = start_forking_shell_in(&sub);
    root.kill_all().unwrap();
    assert!(!root.is_populated().unwrap());
    let _ = sh.wait();
    root.remove().unwrap();
}

#[test]
fn kill_tree_by_signal_fallback_empties_subtree() {
    let Some(mount) = setup("kill_tree_by_signal_fallback_empties_subtree") else {
        return;
    };
    let root = test_root(&mount, "killsig");
    let sub = root.create_child("sub/deeper").unwrap();
    let mut sh = start_forking_shell_in(&sub);
    cgroup::kill_tree_by_signal(root.path(), Duration::from_secs(5)).unwrap();
    assert!(!root.is_populated().unwrap());
    // Thawed again, so the (now empty) cgroup is left as found.
    let freeze = std::fs::read_to_string(root.path().join("cgroup.freeze")).unwrap_or_default();
    assert!(!freeze.starts_with('1'), "still frozen");
    let _ = sh.wait();
    root.remove().unwrap();
}

/// A shell moved into `sub` that then forks two sleepers (born inside, as agents' children are).
fn start_forking_shell_in(sub: &Path) -> Child {
    // `read` holds the shell until it has been moved.
    let mut sh = Command::new("sh")
        .args(["-c", "read x; sleep 300 & sleep 300 & wait"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cgroup::add_pid(sub, sh.id()).unwrap();
    sh.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_until("sh and its two sleepers in the cgroup", || {
        std::fs::read_to_string(sub.join("cgroup.procs")).is_ok_and(|s| s.lines().count() == 3)
    });
    sh
}

#[test]
fn guard_without_kill_on_drop_leaves_populated_cgroup() {
    let Some(mount) = setup("guard_without_kill_on_drop_leaves_populated_cgroup") else {
        return;
    };
    let outer = test_root(&mount, "keep");
    let p = Sleeper::spawn();
    let inner_path = outer.path().join("inner");
    {
        let mut inner = CgroupDir::create(&inner_path).unwrap();
        inner.set_kill_on_drop(false);
        inner.add_pid(p.pid()).unwrap();
    }
    assert!(inner_path.exists(), "populated cgroup removed");
    assert!(!process_gone(p.pid()));
    // An empty one is removed even so.
    {
        let mut empty = CgroupDir::create(outer.path().join("empty")).unwrap();
        empty.set_kill_on_drop(false);
    }
    assert!(!outer.path().join("empty").exists());
    drop(outer);
    assert!(!inner_path.exists());
}

/// `run_status` is one at a time per process, and signals sent to this process are forwarded
/// to whichever run is active: run tests must not overlap.
static RUN_TESTS: Mutex<()> = Mutex::new(());

fn run_args(root: &CgroupDir, agent: &str, kill_on_exit: bool, cmd: &str) -> RunArgs {
    RunArgs {
        agent: agent.into(),
        cgroup_root: Some(root.path().to_path_buf()),
        kill_on_exit,
        verbose: true,
        // These tests exercise cgroup handling, not gating: no airlockd runs.
        state_dir: std::path::PathBuf::from("/nonexistent-airlock-state"),
        unguarded: true,
        reason: None,
        quiet: false,
        command: ["sh", "-c", cmd].iter().map(Into::into).collect(),
    }
}

#[test]
fn run_puts_command_in_fresh_agent_scope_with_env_and_exit_code_then_removes_it() {
    let Some(mount) =
        setup("run_puts_command_in_fresh_agent_scope_with_env_and_exit_code_then_removes_it")
    else {
        return;
    };
    let _serial = RUN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let root = test_root(&mount, "run");
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = out.path().display();
    let cmd = format!("cat /proc/self/cgroup > {o}; echo \"agent=$AIRLOCK_AGENT\" >> {o}; exit 7");
    let code = run_status(&run_args(&root, "runtest", true, &cmd)).unwrap();
    assert_eq!(code, 7);
    let text = std::fs::read_to_string(out.path()).unwrap();
    let cg = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("v2 line");
    let prefix = format!(
        "{}/airlock.slice/airlock-runtest-",
        rel(&mount, root.path())
    );
    assert!(cg.starts_with(&prefix) && cg.ends_with(".scope"), "{cg}");
    assert!(text.contains("agent=runtest\n"), "{text}");
    assert!(
        !root.path().join("airlock.slice").exists(),
        "scope or slice left behind"
    );
}

#[test]
fn run_process_is_classified_as_agent_and_sigterm_is_forwarded() {
    let Some(mount) = setup("run_process_is_classified_as_agent_and_sigterm_is_forwarded") else {
        return;
    };
    let _serial = RUN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let root = test_root(&mount, "runsig");
    let out = tempfile::NamedTempFile::new().unwrap();
    let args = run_args(
        &root,
        "runsig",
        true,
        &format!("echo $$ > {}; exec sleep 300", out.path().display()),
    );
    let runner = std::thread::spawn(move || run_status(&args).unwrap());

    let mut pid = 0u32;
    wait_until("command started", || {
        pid = std::fs::read_to_string(out.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    let selector = Selector::Cgroup(format!(
        "{}/airlock.slice/airlock-runsig-*.scope",
        rel(&mount, root.path())
    ));
    let set = AgentSet::resolve(mount.clone(), &[agent("runsig", selector)]).unwrap();
    let m = set
        .classify_pid(pid)
        .expect("run's command is an agent process");
    assert_eq!(m.root.agent, "runsig");

    // Only signal ourselves once the forwarding handler is in place; otherwise SIGTERM would
    // kill the test binary and strand the cgroups.
    assert!(
        sigterm_is_handled(),
        "no SIGTERM handler while run is active"
    );
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(runner.join().unwrap(), 128 + libc::SIGTERM as u8);
    assert!(!sigterm_is_handled(), "handler not restored");
    assert!(!root.path().join("airlock.slice").exists());
}

fn sigterm_is_handled() -> bool {
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying only (null new action).
    unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut old) };
    old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN
}

#[test]
fn run_kills_background_leftovers_by_default() {
    let Some(mount) = setup("run_kills_background_leftovers_by_default") else {
        return;
    };
    let _serial = RUN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let root = test_root(&mount, "runkill");
    let out = tempfile::NamedTempFile::new().unwrap();
    let cmd = format!(
        "sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}",
        out.path().display()
    );
    assert_eq!(
        run_status(&run_args(&root, "runkill", true, &cmd)).unwrap(),
        0
    );
    let pid: u32 = std::fs::read_to_string(out.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("leftover killed", || process_gone(pid));
    assert!(!root.path().join("airlock.slice").exists());
}

#[test]
fn run_with_kill_on_exit_false_keeps_scope_while_leftovers_live() {
    let Some(mount) = setup("run_with_kill_on_exit_false_keeps_scope_while_leftovers_live") else {
        return;
    };
    let _serial = RUN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let root = test_root(&mount, "runkeep");
    let out = tempfile::NamedTempFile::new().unwrap();
    let cmd = format!(
        "sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}",
        out.path().display()
    );
    assert_eq!(
        run_status(&run_args(&root, "runkeep", false, &cmd)).unwrap(),
        0
    );
    let pid: u32 = std::fs::read_to_string(out.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_gone(pid));
    let cg = cgroup::pid_cgroup_path(pid).unwrap();
    assert!(cg.contains("/airlock.slice/airlock-runkeep-"), "{cg}");
    // `root` is dropped here: kills the leftover and removes the kept scope.
    drop(root);
    wait_until("leftover killed by test guard", || process_gone(pid));
}

#[test]
fn run_reports_127_for_missing_command_and_removes_scope() {
    let Some(mount) = setup("run_reports_127_for_missing_command_and_removes_scope") else {
        return;
    };
    let _serial = RUN_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let root = test_root(&mount, "run127");
    let mut args = run_args(&root, "run127", true, "");
    args.command = vec!["/nonexistent/airlock-no-such-command".into()];
    assert_eq!(run_status(&args).unwrap(), 127);
    assert!(!root.path().join("airlock.slice").exists());
}
