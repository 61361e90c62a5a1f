//! Unit tests of selector matching, resolve, classify and diff on a fake cgroup tree (plain
//! directories in a tempdir: only inodes and paths matter to this code).
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn agent(name: &str, selectors: &[Selector]) -> AgentDef {
    AgentDef {
        name: name.into(),
        policy: "test".into(),
        selectors: selectors.to_vec(),
    }
}

fn cg(g: &str) -> Selector {
    Selector::Cgroup(g.into())
}

fn unit(g: &str) -> Selector {
    Selector::SystemdUnit(g.into())
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// A fake mount with the shapes selectors care about.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for d in [
        "airlock.slice/airlock-claude-1.scope/sub/deeper",
        "airlock.slice/airlock-codex-7.scope",
        "system.slice/agent-x.service",
        "user.slice/user-1000.slice/user@1000.service/app.slice/agent-y.service",
        "other/airlock.slice/airlock-claude-2.scope",
    ] {
        fs::create_dir_all(t.path().join(d)).unwrap();
    }
    // Interface files are regular files in real cgroupfs; they must be ignored.
    fs::write(t.path().join("airlock.slice/cgroup.procs"), "").unwrap();
    t
}

#[test]
fn cgroup_glob_star_does_not_cross_slash() {
    let m = AgentMatcher::new(&[agent("a", &[cg("/airlock.slice/*")])]).unwrap();
    assert_eq!(m.agent_for("/airlock.slice/x.scope"), Some("a"));
    assert_eq!(m.agent_for("/airlock.slice/x.scope/sub"), None);
    assert_eq!(m.agent_for("/airlock.slice"), None);
}

#[test]
fn cgroup_glob_double_star_crosses_slash() {
    let m = AgentMatcher::new(&[agent("a", &[cg("/user.slice/**/agent-*.service")])]).unwrap();
    assert_eq!(m.agent_for("/user.slice/u/v/agent-y.service"), Some("a"));
    assert_eq!(m.agent_for("/user.slice/agent-y.service"), Some("a"));
    assert_eq!(m.agent_for("/system.slice/agent-y.service"), None);
}

#[test]
fn unit_glob_matches_basename_at_any_depth_only() {
    let m = AgentMatcher::new(&[agent("u", &[unit("agent-*.service")])]).unwrap();
    assert_eq!(m.agent_for("/system.slice/agent-x.service"), Some("u"));
    assert_eq!(m.agent_for("/a/b/c/agent-z.service"), Some("u"));
    assert_eq!(m.agent_for("/agent-x.service/child"), None);
    assert_eq!(m.agent_for("/"), None);
}

#[test]
fn implicit_airlock_run_selector_matches_run_scopes() {
    let m = AgentMatcher::new(&[agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )])
    .unwrap();
    assert_eq!(
        m.agent_for("/airlock.slice/airlock-claude-123x9.scope"),
        Some("claude")
    );
    assert_eq!(m.agent_for("/airlock.slice/airlock-codex-1.scope"), None);
}

#[test]
fn first_declared_agent_wins_when_two_match() {
    let defs = [
        agent("first", &[unit("*.scope")]),
        agent("second", &[cg("/airlock.slice/*")]),
    ];
    let m = AgentMatcher::new(&defs).unwrap();
    assert_eq!(m.agent_for("/airlock.slice/a.scope"), Some("first"));
    let defs = [
        agent("first", &[cg("/airlock.slice/*")]),
        agent("second", &[unit("*.scope")]),
    ];
    let m = AgentMatcher::new(&defs).unwrap();
    assert_eq!(m.agent_for("/airlock.slice/a.scope"), Some("first"));
}

#[test]
fn bad_selectors_are_rejected_with_agent_name() {
    for (sel, want) in [
        (cg("airlock.slice/*"), "start with '/'"),
        (unit("a/b"), "cannot contain"),
        (cg("/a/[b"), ""),
    ] {
        let err = AgentMatcher::new(&[agent("bad", &[sel])]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad") && msg.contains(want), "{msg}");
    }
}

#[test]
fn resolve_finds_matching_dirs_keyed_by_inode() {
    let t = tree();
    let defs = [
        agent("claude", &[cg("/airlock.slice/airlock-claude-*.scope")]),
        agent("svc", &[unit("agent-*.service")]),
    ];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let mut got: Vec<(String, String)> = set
        .roots
        .values()
        .map(|c| (c.agent.clone(), c.path.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "claude".into(),
                "/airlock.slice/airlock-claude-1.scope".into()
            ),
            ("svc".into(), "/system.slice/agent-x.service".into()),
            (
                "svc".into(),
                "/user.slice/user-1000.slice/user@1000.service/app.slice/agent-y.service".into()
            ),
        ]
    );
    for c in set.roots.values() {
        assert_eq!(c.id, ino(&cgroup_dir(t.path(), &c.path)));
        assert_eq!(set.roots[&c.id], *c);
    }
}

#[test]
fn resolve_records_nested_matches_too() {
    let t = tree();
    let defs = [agent("a", &[cg("/airlock.slice/**")])];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let paths: Vec<&str> = set.roots.values().map(|c| c.path.as_str()).collect();
    assert!(paths.contains(&"/airlock.slice/airlock-claude-1.scope"));
    assert!(paths.contains(&"/airlock.slice/airlock-claude-1.scope/sub/deeper"));
    assert!(!paths.iter().any(|p| p.ends_with("cgroup.procs")));
}

#[test]
fn resolve_does_not_follow_symlinks() {
    let t = tree();
    std::os::unix::fs::symlink(
        t.path().join("system.slice"),
        t.path().join("airlock.slice/link.scope"),
    )
    .unwrap();
    let defs = [
        agent("a", &[cg("/airlock.slice/*")]),
        agent("u", &[unit("agent-*.service")]),
    ];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    assert!(
        set.roots.values().all(|c| !c.path.contains("link")),
        "{:?}",
        set.roots
    );
}

#[test]
fn resolve_skips_unreadable_dirs_but_fails_on_unreadable_mount() {
    let t = tree();
    let locked = t.path().join("system.slice");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let defs = [agent("u", &[unit("agent-*.service")])];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    // As root the dir stays readable; either way the walk succeeds and finds the user one.
    let set = set.unwrap();
    assert!(
        set.roots
            .values()
            .any(|c| c.path.ends_with("agent-y.service"))
    );
    let err = AgentSet::resolve(t.path().join("missing"), &defs).unwrap_err();
    assert!(matches!(err, AgentsError::Cgroup(_)), "{err}");
}

#[test]
fn resolve_with_no_selectors_is_empty() {
    let t = tree();
    let set = AgentSet::resolve(t.path().to_path_buf(), &[agent("a", &[])]).unwrap();
    assert!(set.roots.is_empty());
}

#[test]
fn resolve_handles_non_utf8_names_and_keeps_descending() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let odd = t.path().join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    fs::create_dir_all(odd.join("agent-z.service")).unwrap();
    let set = AgentSet::resolve(
        t.path().to_path_buf(),
        &[agent("u", &[unit("agent-*.service")])],
    )
    .unwrap();
    let c = set
        .roots
        .values()
        .next()
        .expect("found below non-UTF-8 dir");
    assert_eq!(c.id, ino(&odd.join("agent-z.service")));
}

#[test]
fn classify_finds_root_from_descendant_and_reports_own_cgroup() {
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let p = "/airlock.slice/airlock-claude-1.scope/sub/deeper";
    let m = set.classify_cgroup_path(p).unwrap();
    assert_eq!(m.root.path, "/airlock.slice/airlock-claude-1.scope");
    assert_eq!(m.root.agent, "claude");
    assert_eq!(m.cgroup_path, p);
    assert_eq!(m.cgroup_id, ino(&cgroup_dir(t.path(), p)));
    let m = set
        .classify_cgroup_path("/airlock.slice/airlock-claude-1.scope")
        .unwrap();
    assert_eq!(m.cgroup_id, m.root.id);
}

#[test]
fn classify_rejects_non_agent_cgroups() {
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    assert_eq!(
        set.classify_cgroup_path("/airlock.slice/airlock-codex-7.scope"),
        None
    );
    assert_eq!(set.classify_cgroup_path("/airlock.slice"), None);
    assert_eq!(set.classify_cgroup_path("/"), None);
    assert_eq!(set.classify_cgroup_path("/does/not/exist"), None);
}

#[test]
fn classify_uses_identity_not_path_string() {
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let root = t.path().join("airlock.slice/airlock-claude-1.scope");
    // Same path, different directory (removed and recreated): no longer the agent's cgroup.
    fs::rename(&root, t.path().join("moved")).unwrap();
    fs::create_dir_all(root.join("sub")).unwrap();
    assert_eq!(
        set.classify_cgroup_path("/airlock.slice/airlock-claude-1.scope/sub"),
        None
    );
    // The original directory under another name still is.
    let m = set.classify_cgroup_path("/moved/sub/deeper").unwrap();
    assert_eq!(m.root.path, "/airlock.slice/airlock-claude-1.scope");
}

#[test]
fn classify_walks_past_a_deleted_own_cgroup() {
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let m = set
        .classify_cgroup_path("/airlock.slice/airlock-claude-1.scope/gone")
        .unwrap();
    assert_eq!(m.cgroup_id, 0);
    assert_eq!(m.root.path, "/airlock.slice/airlock-claude-1.scope");
}

#[test]
fn classify_nearest_root_wins_for_nested_roots() {
    let t = tree();
    let defs = [
        agent("inner", &[cg("/airlock.slice/airlock-claude-1.scope/sub")]),
        agent("outer", &[cg("/airlock.slice/*")]),
    ];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let m = set
        .classify_cgroup_path("/airlock.slice/airlock-claude-1.scope/sub/deeper")
        .unwrap();
    assert_eq!(m.root.agent, "inner");
    let m = set
        .classify_cgroup_path("/airlock.slice/airlock-claude-1.scope")
        .unwrap();
    assert_eq!(m.root.agent, "outer");
}

#[test]
fn classify_pid_of_non_agent_process_is_none() {
    let set = AgentSet::default();
    assert_eq!(set.classify_pid(std::process::id()), None);
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    assert_eq!(set.classify_pid(std::process::id()), None);
    assert_eq!(set.classify_pid(u32::MAX), None);
}

#[test]
fn contains_id_and_ids_cover_roots_only() {
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let set = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let root = ino(&t.path().join("airlock.slice/airlock-claude-1.scope"));
    assert!(set.contains_id(root));
    assert!(!set.contains_id(ino(
        &t.path().join("airlock.slice/airlock-claude-1.scope/sub")
    )));
    assert_eq!(set.ids().collect::<Vec<_>>(), vec![root]);
}

#[test]
fn diff_reports_added_and_removed_roots() {
    let t = tree();
    let defs = [agent(
        "claude",
        &[cg("/airlock.slice/airlock-claude-*.scope")],
    )];
    let old = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    assert!(old.diff(&old).is_empty());
    fs::create_dir(t.path().join("airlock.slice/airlock-claude-2.scope")).unwrap();
    fs::remove_dir_all(t.path().join("airlock.slice/airlock-claude-1.scope")).unwrap();
    let new = AgentSet::resolve(t.path().to_path_buf(), &defs).unwrap();
    let d = new.diff(&old);
    assert_eq!(d.added.len(), 1);
    assert_eq!(d.added[0].path, "/airlock.slice/airlock-claude-2.scope");
    assert_eq!(d.removed.len(), 1);
    assert_eq!(d.removed[0].path, "/airlock.slice/airlock-claude-1.scope");
    assert_eq!(
        d.added[0].to_string(),
        format!(
            "agent claude: cgroup /airlock.slice/airlock-claude-2.scope (id {})",
            d.added[0].id
        )
    );
}

#[test]
fn parent_cgroup_path_walks_to_root() {
    assert_eq!(parent_cgroup_path(b"/a/b"), Some(&b"/a"[..]));
    assert_eq!(parent_cgroup_path(b"/a"), Some(&b"/"[..]));
    assert_eq!(parent_cgroup_path(b"/a/b/"), Some(&b"/a"[..]));
    assert_eq!(parent_cgroup_path(b"/"), None);
    assert_eq!(parent_cgroup_path(b""), None);
}

#[test]
fn watcher_reports_mkdir_in_plain_directory_tree() {
    // inotify semantics on a normal fs; the cgroup2 case is in tests/cgroup_root.rs.
    let t = tree();
    let w = CgroupWatcher::spawn(t.path().to_path_buf()).unwrap();
    assert!(w.uses_inotify());
    let g0 = w.generation();
    fs::create_dir(t.path().join("airlock.slice/new.scope")).unwrap();
    wait_for_generation(&w, g0);
    // A directory created inside the new one is seen too: the new one got a watch.
    let g1 = w.generation();
    fs::create_dir(t.path().join("airlock.slice/new.scope/child")).unwrap();
    wait_for_generation(&w, g1);
    let g2 = w.generation();
    fs::remove_dir(t.path().join("airlock.slice/new.scope/child")).unwrap();
    wait_for_generation(&w, g2);
}

#[test]
fn watcher_ignores_regular_files() {
    let t = tree();
    let w = CgroupWatcher::spawn(t.path().to_path_buf()).unwrap();
    let g0 = w.generation();
    fs::write(t.path().join("airlock.slice/cgroup.x"), "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(w.generation(), g0);
}

#[test]
fn watcher_periodic_rescan_ticks() {
    let t = tree();
    let w = CgroupWatcher::spawn_with(t.path().to_path_buf(), std::time::Duration::from_millis(20))
        .unwrap();
    let g0 = w.generation();
    wait_for_generation(&w, g0);
}

#[test]
fn watcher_drop_stops_thread_promptly() {
    let t = tree();
    let w = CgroupWatcher::spawn(t.path().to_path_buf()).unwrap();
    let start = std::time::Instant::now();
    drop(w);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn watcher_changed_resolves_async() {
    let t = tree();
    let mut w = CgroupWatcher::spawn(t.path().to_path_buf()).unwrap();
    fs::create_dir(t.path().join("airlock.slice/async.scope")).unwrap();
    let g = tokio::time::timeout(std::time::Duration::from_secs(5), w.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(g >= 1);
}

fn wait_for_generation(w: &CgroupWatcher, above: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while w.generation() <= above {
        assert!(
            std::time::Instant::now() < deadline,
            "no change seen after {above}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn classify_by_cgroup_id_finds_roots_and_descendants_without_a_process() {
    let t = tree();
    let set = AgentSet::resolve(
        t.path().to_path_buf(),
        &[agent(
            "claude",
            &[cg("/airlock.slice/airlock-claude-*.scope")],
        )],
    )
    .unwrap();
    let root = t.path().join("airlock.slice/airlock-claude-1.scope");
    let deeper = root.join("sub/deeper");
    let m = set.classify_cgroup_id(ino(&root)).unwrap();
    assert_eq!((m.root.agent.as_str(), m.cgroup_id), ("claude", ino(&root)));
    let m = set.classify_cgroup_id(ino(&deeper)).unwrap();
    assert_eq!(m.root.agent, "claude");
    assert_eq!(
        m.cgroup_path,
        "/airlock.slice/airlock-claude-1.scope/sub/deeper"
    );
    assert_eq!(m.cgroup_id, ino(&deeper));
    // Not an agent's: another scope, and an id nobody has.
    assert_eq!(
        set.classify_cgroup_id(ino(&t.path().join("airlock.slice/airlock-codex-7.scope"))),
        None
    );
    assert_eq!(set.classify_cgroup_id(0), None);
    assert_eq!(set.classify_cgroup_id(u64::MAX), None);
}
