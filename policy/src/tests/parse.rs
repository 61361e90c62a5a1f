//! Valid policies parse into what they say.
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_common::{action, op};

use crate::{Approval, Mode, OnTimeout, Selector, Target, parse_str};

const FULL: &str = "\
apiVersion: airlock.dev/v1
kind: Policy
metadata:
  name: default
  description: everything
mode: monitor
agents:
  - name: claude
    cgroup: \"/agents.slice/*\"
  - name: ci
    systemdUnit: \"agent-*.service\"
    cgroups: [\"/a/**\", \"/b\"]
    systemdUnits: [x.scope]
  - name: bare
rules:
  - name: package-managers
    action: deny
    exec: [/usr/bin/apt, /usr/bin/apt-get, /usr/bin/dpkg]
  - name: etc
    description: config
    action: approve
    paths: [/etc/]
    operations: [write, unlink]
    agents: [claude]
    timeout: 1h30m
    onTimeout: allow
    tellAgent: false
  - name: boot
    action: approve
    paths: [/boot]
  - name: logs
    action: audit
    paths: [/var/log]
---
apiVersion: airlock.dev/v1
kind: Policy
metadata:
  name: second
mode: enforce
";

#[test]
fn full_policy_parses_with_every_field() {
    let policies = parse_str(Path::new("t.yaml"), FULL).unwrap();
    assert_eq!(policies.len(), 2);
    let p = &policies[0];
    assert_eq!(p.name, "default");
    assert_eq!(p.description.as_deref(), Some("everything"));
    assert_eq!(p.mode, Mode::Monitor);
    assert_eq!((p.location.line, p.location.column), (1, 1));

    assert_eq!(p.agents.len(), 3);
    assert_eq!(
        p.agents[0].selectors,
        vec![Selector::Cgroup("/agents.slice/*".into())]
    );
    assert_eq!(
        p.agents[1].selectors,
        vec![
            Selector::Cgroup("/a/**".into()),
            Selector::Cgroup("/b".into()),
            Selector::SystemdUnit("agent-*.service".into()),
            Selector::SystemdUnit("x.scope".into()),
        ]
    );
    assert!(
        p.agents[2].selectors.is_empty(),
        "the airlock run selector is added at compile"
    );

    let r = &p.rules[0];
    assert_eq!(r.action, action::DENY);
    assert_eq!(r.ops, op::bit(op::EXEC));
    assert!(r.approval.is_none());
    let Target::Exec(paths) = &r.target else {
        panic!("exec rule: {r:?}")
    };
    assert_eq!(paths.len(), 3);
    assert_eq!(paths[1].path, PathBuf::from("/usr/bin/apt-get"));
    assert_eq!((paths[1].location.line, paths[1].location.column), (18, 26));

    let r = &p.rules[1];
    assert_eq!(r.action, action::APPROVE);
    assert_eq!(r.ops, op::bit(op::OPEN_WRITE) | op::bit(op::UNLINK));
    assert_eq!(
        r.agents.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["claude"]
    );
    assert_eq!(
        r.approval,
        Some(Approval {
            timeout: Duration::from_secs(5400),
            on_timeout: OnTimeout::Allow,
            tell_agent: false,
        })
    );
    assert_eq!(
        r.target.paths()[0].path,
        PathBuf::from("/etc"),
        "trailing / is dropped"
    );

    // Defaults: every write operation; approve waits 5 minutes then denies.
    let r = &p.rules[2];
    assert_eq!(r.ops, op::ALL_WRITES);
    assert_eq!(
        r.approval,
        Some(Approval {
            timeout: Duration::from_secs(300),
            on_timeout: OnTimeout::Deny,
            tell_agent: true,
        })
    );
    assert_eq!(p.rules[3].action, action::AUDIT);

    let p = &policies[1];
    assert_eq!((p.name.as_str(), p.mode), ("second", Mode::Enforce));
    assert!(p.agents.is_empty() && p.rules.is_empty());
    assert_eq!(p.location.line, 35);
}

#[test]
fn rule_agents_may_name_agents_of_other_policies_loaded_together() {
    let dir = tempfile::tempdir().unwrap();
    let a = format!(
        "{}agents: [{{name: claude}}]\n",
        super::header("a", "enforce")
    );
    let b = format!(
        "{}rules:\n  - {{name: r, action: deny, paths: [/etc], agents: [claude]}}\n",
        super::header("b", "enforce")
    );
    std::fs::write(dir.path().join("a.yaml"), a).unwrap();
    std::fs::write(dir.path().join("b.yml"), b).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not: a policy").unwrap();
    let policies = crate::load_paths(&[dir.path().to_path_buf()]).unwrap();
    let names: Vec<_> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "yaml files of the directory, in name order"
    );
}

#[test]
fn quoted_scalars_and_str_tags_are_plain_strings() {
    let src = format!(
        "{}rules:\n  - name: '1'\n    action: \"deny\"\n    exec: [!!str /usr/bin/x]\n",
        super::header("q", "enforce")
    );
    let p = parse_str(Path::new("t.yaml"), &src).unwrap();
    assert_eq!(p[0].rules[0].name, "1");
}
