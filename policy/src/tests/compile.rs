//! Compilation against a fake host: identities, flags, rule ids, notes.
use std::path::{Path, PathBuf};

use airlock_common::{DirEntryKey, InodeKey, NAME_LEN, RuleRef, action, flags, op};

use super::{DEV, FakeResolver, header};
use crate::{CompileError, Policy, Selector, compile, parse_str};

fn policies(src: &str) -> Vec<Policy> {
    parse_str(Path::new("t.yaml"), src).unwrap()
}

fn key(ino: u64) -> InodeKey {
    InodeKey {
        ino,
        dev: DEV,
        slot: 0,
    }
}

fn entry(dir_ino: u64, name: &str) -> DirEntryKey {
    let mut n = [0u8; NAME_LEN];
    n[..name.len()].copy_from_slice(name.as_bytes());
    DirEntryKey {
        dir_ino,
        dev: DEV,
        slot: 0,
        name: n,
    }
}

/// A merged-/usr host: /bin and /sbin are links into /usr.
fn host() -> FakeResolver {
    FakeResolver::new()
        .dir("/", 2)
        .dir("/usr", 3)
        .dir("/usr/bin", 10)
        .dir("/usr/sbin", 11)
        .link("/bin", "/usr/bin")
        .link("/sbin", "/usr/sbin")
        .file("/usr/bin/apt", 100)
        .file("/usr/bin/kmod", 101)
        .link("/usr/sbin/modprobe", "/usr/bin/kmod")
        .dir("/etc", 20)
        .dir("/etc/ssh", 21)
        .file("/etc/shadow", 22)
}

#[test]
fn exec_targets_get_inode_and_entry_of_the_canonical_path() {
    // Regression: /bin/apt on merged-/usr must be keyed as /usr/bin/apt, the file the kernel
    // sees, not as a path string.
    let src = format!(
        "{}rules:\n  - name: pm\n    action: deny\n    exec: [/bin/apt]\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    assert_eq!(c.exec.len(), 1);
    let t = &c.exec[0];
    assert_eq!(t.path, PathBuf::from("/bin/apt"));
    assert_eq!(t.canonical, PathBuf::from("/usr/bin/apt"));
    assert_eq!(t.inode, Some(key(100)));
    assert_eq!(t.entry, Some(entry(10, "apt")));
    assert_eq!(
        t.rule,
        RuleRef {
            rule_id: 0,
            action: action::DENY,
            ops: op::bit(op::EXEC),
            flags: 0
        }
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn connect_targets_are_sockets_by_inode_and_entry_even_before_they_exist() {
    let src = format!(
        "{}rules:\n  - name: svc\n    action: approve\n    connect: [/etc/ssh/agent.sock, /etc/ssh/later.sock]\n",
        header("p", "enforce")
    );
    let host = host().file("/etc/ssh/agent.sock", 30);
    let c = compile(&policies(&src), &host).unwrap();
    assert!(c.exec.is_empty());
    assert_eq!(c.connect.len(), 2);
    assert_eq!(c.connect[0].inode, Some(key(30)));
    assert_eq!(c.connect[0].entry, Some(entry(21, "agent.sock")));
    assert_eq!(c.connect[0].rule.ops, op::bit(op::CONNECT));
    // Not bound yet: gated by name once its service creates it.
    assert_eq!(c.connect[1].inode, None);
    assert_eq!(c.connect[1].entry, Some(entry(21, "later.sock")));
    assert_eq!(
        c.notes,
        [
            "t.yaml:9:36: rule \"svc\": /etc/ssh/later.sock: no socket there now; gated by path once its service creates it"
        ]
    );
    let m = crate::effective_connect_map(&c);
    assert_eq!(m.len(), 1);
    assert_eq!(crate::effective_connect_entry_map(&c).len(), 2);
    assert!(crate::effective_exec_map(&c).is_empty());
}

#[test]
fn missing_binary_is_gated_by_directory_entry_only_with_a_note() {
    // Regression: a binary installed after the policy loads must still be gated.
    let src = format!(
        "{}rules:\n  - name: pm\n    action: deny\n    exec: [/usr/bin/dnf, /opt/none/bin/x]\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    assert_eq!(
        c.exec.len(),
        1,
        "no target at all when the directory is missing too"
    );
    assert_eq!(c.exec[0].inode, None);
    assert_eq!(c.exec[0].entry, Some(entry(10, "dnf")));
    assert_eq!(c.exec[0].canonical, PathBuf::from("/usr/bin/dnf"));
    assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    assert!(
        c.notes[0].starts_with("t.yaml:9:12: rule \"pm\": /usr/bin/dnf: not installed"),
        "{}",
        c.notes[0]
    );
    assert!(
        c.notes[1].contains("/opt/none/bin/x: neither it nor /opt/none/bin exists; not gated"),
        "{}",
        c.notes[1]
    );
}

#[test]
fn binary_reached_through_a_link_with_another_name_is_noted() {
    let src = format!(
        "{}rules:\n  - name: km\n    action: approve\n    exec: [/sbin/modprobe]\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    assert_eq!(c.exec[0].inode, Some(key(101)));
    assert_eq!(c.exec[0].entry, Some(entry(10, "kmod")));
    assert_eq!(c.notes.len(), 1);
    assert!(
        c.notes[0]
            .ends_with("is a link to /usr/bin/kmod; every command that runs that file is gated"),
        "{}",
        c.notes[0]
    );
}

#[test]
fn protected_targets_and_missing_or_unreadable_paths() {
    let src = format!(
        "{}rules:\n  - name: cfg\n    action: approve\n    paths: [/etc, /etc/shadow, /srv/none, /root/.ssh]\n    operations: [write, rename]\n",
        header("p", "enforce")
    );
    let resolver = host().deny("/root");
    let c = compile(&policies(&src), &resolver).unwrap();
    assert_eq!(c.protected.len(), 2);
    assert_eq!(
        (c.protected[0].inode, c.protected[0].is_dir),
        (key(20), true)
    );
    assert_eq!(
        (c.protected[1].inode, c.protected[1].is_dir),
        (key(22), false)
    );
    let ops = op::bit(op::OPEN_WRITE) | op::bit(op::RENAME);
    assert_eq!(
        c.protected[0].rule,
        RuleRef {
            rule_id: 0,
            action: action::APPROVE,
            ops,
            flags: 0
        }
    );
    assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    assert!(
        c.notes[0].ends_with(
            "/srv/none: does not exist; not protected (create it, then restart or reload)"
        )
    );
    assert!(
        c.notes[1].contains("/root/.ssh: cannot resolve: permission denied"),
        "{}",
        c.notes[1]
    );
}

#[test]
fn monitor_policies_set_the_monitor_flag_and_rule_ids_are_global() {
    let a = format!(
        "{}rules:\n  - {{name: a, action: deny, exec: [/usr/bin/apt]}}\n",
        header("a", "enforce")
    );
    let b = format!(
        "{}rules:\n  - {{name: b1, action: audit, paths: [/etc]}}\n  - {{name: b2, action: deny, exec: [/usr/bin/apt]}}\n",
        header("b", "monitor")
    );
    let mut all = policies(&a);
    all.extend(policies(&b));
    let c = compile(&all, &host()).unwrap();
    let ids: Vec<(u32, &str, &str)> = c
        .rules
        .iter()
        .map(|r| (r.id, r.policy.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(ids, [(0, "a", "a"), (1, "b", "b1"), (2, "b", "b2")]);
    assert_eq!(c.exec[0].rule.flags, 0);
    assert_eq!(c.protected[0].rule.flags, flags::MONITOR);
    assert_eq!(c.protected[0].rule.rule_id, 1);
    assert_eq!(c.exec[1].rule.flags, flags::MONITOR);
    assert_eq!(c.exec[1].rule.rule_id, 2);
    assert_eq!(c.rules[1].mode, crate::Mode::Monitor);
    assert_eq!(c.rules[1].source, PathBuf::from("t.yaml"));
}

#[test]
fn every_agent_gets_the_airlock_run_selector() {
    // Regression: `airlock run --agent NAME` scopes must match the agent without any selector
    // written for them.
    let src = format!(
        "{}agents:\n  - name: claude\n    cgroup: /agents.slice/claude.service\n  - name: bare\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    assert_eq!(c.agents.len(), 2);
    assert_eq!(c.agents[0].policy, "p");
    assert_eq!(
        c.agents[0].selectors,
        [
            Selector::Cgroup("/agents.slice/claude.service".into()),
            Selector::Cgroup("/airlock.slice/airlock-claude-*.scope".into()),
        ]
    );
    assert_eq!(
        c.agents[1].selectors,
        [Selector::Cgroup(
            "/airlock.slice/airlock-bare-*.scope".into()
        )]
    );
}

#[test]
fn rule_info_records_agents_ops_and_approval() {
    let src = format!(
        "{}agents: [{{name: claude}}]\nrules:\n  - {{name: r, action: approve, paths: [/etc], agents: [claude], timeout: 30s}}\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    let r = &c.rules[0];
    assert_eq!(r.agents, ["claude"]);
    assert_eq!(r.ops, op::ALL_WRITES);
    assert_eq!(
        r.approval.unwrap().timeout,
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn overlapping_run_scope_globs_are_noted() {
    let src = format!(
        "{}agents: [{{name: a}}, {{name: a-b}}]\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    assert_eq!(c.notes.len(), 1);
    assert!(c.notes[0].contains("agent \"a\""), "{}", c.notes[0]);
}

#[test]
fn compile_refuses_inconsistent_sets_handed_to_it_directly() {
    let src = format!(
        "{}rules: [{{name: r, action: deny, paths: [/etc]}}]\n",
        header("p", "enforce")
    );
    let mut all = policies(&src);
    all.extend(policies(&src));
    let Err(CompileError::Invalid(d)) = compile(&all, &host()) else {
        panic!("duplicate accepted")
    };
    assert_eq!(
        d.to_string(),
        "t.yaml:4:9: metadata.name: duplicate policy name \"p\" (first at t.yaml:4:9)"
    );
}

#[test]
fn a_rule_naming_agents_fills_only_their_own_map_entries() {
    let src = format!(
        "{}agents: [{{name: ci}}, {{name: claude}}]\nrules:
  - name: ci-etc
    action: deny
    paths: [/etc/ssh]
    agents: [ci]
  - name: all-etc
    action: approve
    paths: [/etc]
  - name: both
    action: audit
    paths: [/etc/shadow]
    agents: [ci, claude]
  - name: ci-apt
    action: deny
    exec: [/usr/bin/apt]
    agents: [ci]
",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    let (ci, claude) = (crate::agent_slot("ci"), crate::agent_slot("claude"));
    let scopes = crate::Scopes::of(&c);
    assert!(scopes.has_own_rules(ci) && scopes.has_own_rules(claude));
    assert!(!scopes.has_own_rules(crate::agent_slot("other")));

    let p = crate::effective_protected_map(&c);
    let at = |ino, slot| crate::lookup(&p, &key(ino), slot).map(|r| r.rule_id);
    // /etc/ssh: ci's own deny; every other agent has no rule there (the tree rule on /etc
    // covers them from the ancestor).
    assert_eq!(at(21, ci), Some(0));
    assert_eq!(at(21, claude), None);
    assert_eq!(at(21, crate::ANY_AGENT), None);
    // /etc: one rule for every agent, no agent-specific entries.
    assert_eq!(at(20, ci), Some(1));
    assert_eq!(
        p.get(&InodeKey {
            slot: ci,
            ..key(20)
        }),
        None
    );
    // /etc/shadow: both agents' own audit entries; nothing for the rest.
    assert_eq!(at(22, claude), Some(2));
    assert_eq!(at(22, crate::agent_slot("other")), None);
    assert_eq!(p.len(), 4);

    let e = crate::effective_exec_map(&c);
    assert_eq!(crate::lookup(&e, &key(100), ci).map(|r| r.rule_id), Some(3));
    assert_eq!(crate::lookup(&e, &key(100), claude), None);
    let d = crate::effective_exec_entry_map(&c);
    assert_eq!(
        crate::lookup(&d, &entry(10, "apt"), ci).map(|r| r.rule_id),
        Some(3)
    );
    assert_eq!(crate::lookup(&d, &entry(10, "apt"), claude), None);
}

#[test]
fn directories_above_a_protected_root_gate_only_their_own_renaming() {
    let src = format!(
        "{}rules:
  - name: ssh
    action: deny
    paths: [/etc/ssh]
  - name: shadow-writes
    action: approve
    paths: [/etc/shadow]
    operations: [write]
  - name: carve
    action: allow
    paths: [/usr/bin]
",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    // /etc for /etc/ssh; nothing for /etc/shadow (its rule does not gate renames), nothing
    // for an allow, never `/`.
    assert_eq!(c.ancestors.len(), 1, "{:?}", c.ancestors);
    let a = &c.ancestors[0];
    assert_eq!(
        (a.canonical.as_path(), a.inode),
        (Path::new("/etc"), key(20))
    );
    assert_eq!(a.rule.rule_id, 0);
    assert_eq!(a.rule.ops, op::bit(op::RENAME) | op::bit(op::MOUNT));
    assert_eq!(a.rule.flags, flags::SELF_ONLY);
    assert_eq!(crate::effective_protected_map(&c)[&key(20)], a.rule);
}

#[test]
fn privilege_rules_key_each_named_change_by_its_op() {
    let src = format!(
        "{}rules:\n  - name: ids\n    action: approve\n    privilege: [setuid, userns, caps]\n",
        header("p", "enforce")
    );
    let c = compile(&policies(&src), &host()).unwrap();
    assert_eq!(c.privilege.len(), 1);
    assert_eq!(
        c.privilege[0].ops,
        op::bit(op::SETUID) | op::bit(op::USERNS) | op::bit(op::CAPS)
    );
    let m = crate::effective_privilege_map(&c);
    assert_eq!(m.len(), 3);
    assert_eq!(m[&crate::privilege_key(op::SETUID)].action, action::APPROVE);
    assert!(m.contains_key(&crate::privilege_key(op::USERNS)));
    assert!(m.contains_key(&crate::privilege_key(op::CAPS)));
    assert!(!m.contains_key(&crate::privilege_key(op::SETGID)));
    assert_eq!(
        crate::op_names(c.rules[0].ops),
        ["setuid", "userns", "caps"]
    );
}
