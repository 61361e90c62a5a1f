//! Merging rules that name the same object into the one map value the kernel holds.
use airlock_common::{InodeKey, RuleRef, action, flags, op};

use crate::{
    CompiledPolicy, ProtectedTarget, effective_exec_entry_map, effective_exec_map,
    effective_protected_map,
};

fn rr(rule_id: u32, action: u32, ops: u32, flags: u32) -> RuleRef {
    RuleRef {
        rule_id,
        action,
        ops,
        flags,
    }
}

fn protected(rules: &[RuleRef]) -> CompiledPolicy {
    let inode = InodeKey {
        ino: 7,
        dev: 1,
        slot: 0,
    };
    let mut c = CompiledPolicy::default();
    for r in rules {
        c.protected.push(ProtectedTarget {
            rule: *r,
            path: "/etc".into(),
            canonical: "/etc".into(),
            inode,
            is_dir: true,
        });
    }
    c
}

fn merged(rules: &[RuleRef]) -> RuleRef {
    let map = effective_protected_map(&protected(rules));
    assert_eq!(map.len(), 1);
    *map.values().next().unwrap()
}

const W: u32 = op::bit(op::OPEN_WRITE);
const U: u32 = op::bit(op::UNLINK);

#[test]
fn stricter_action_wins_on_a_shared_inode() {
    assert_eq!(
        merged(&[rr(0, action::ALLOW, W, 0), rr(1, action::DENY, W, 0)]).rule_id,
        1
    );
    assert_eq!(
        merged(&[rr(0, action::DENY, W, 0), rr(1, action::APPROVE, W, 0)]).rule_id,
        0
    );
    assert_eq!(
        merged(&[rr(0, action::AUDIT, W, 0), rr(1, action::APPROVE, W, 0)]).rule_id,
        1
    );
}

#[test]
fn monitor_rule_never_displaces_an_enforcing_one() {
    // Regression: a monitor-mode deny outranking an enforcing approve would turn enforcement off.
    let m = merged(&[
        rr(0, action::DENY, W, flags::MONITOR),
        rr(1, action::APPROVE, W, 0),
    ]);
    assert_eq!((m.rule_id, m.flags), (1, 0));
    // ...but it still outranks audit and allow, so the "would deny" is recorded.
    let m = merged(&[
        rr(0, action::AUDIT, W, 0),
        rr(1, action::DENY, W, flags::MONITOR),
    ]);
    assert_eq!(m.rule_id, 1);
}

#[test]
fn ops_of_rules_of_the_same_class_are_united() {
    // Regression: deny{unlink} + approve{write} on one inode must keep gating writes.
    let m = merged(&[rr(0, action::APPROVE, W, 0), rr(1, action::DENY, U, 0)]);
    assert_eq!((m.rule_id, m.action, m.ops), (1, action::DENY, W | U));
    // Different classes: the audit rule's ops are not turned into denials.
    let m = merged(&[rr(0, action::AUDIT, W, 0), rr(1, action::DENY, U, 0)]);
    assert_eq!(m.ops, U);
}

#[test]
fn ties_keep_the_lower_rule_id_whatever_the_order() {
    assert_eq!(
        merged(&[rr(3, action::DENY, W, 0), rr(1, action::DENY, W, 0)]).rule_id,
        1
    );
    assert_eq!(
        merged(&[rr(1, action::DENY, W, 0), rr(3, action::DENY, W, 0)]).rule_id,
        1
    );
}

#[test]
fn exec_maps_skip_missing_keys() {
    use crate::ExecTarget;
    let mut c = CompiledPolicy::default();
    let inode = InodeKey {
        ino: 9,
        dev: 1,
        slot: 0,
    };
    c.exec.push(ExecTarget {
        rule: rr(0, action::DENY, op::bit(op::EXEC), 0),
        path: "/usr/bin/dnf".into(),
        canonical: "/usr/bin/dnf".into(),
        inode: None,
        entry: None,
        content: None,
    });
    c.exec.push(ExecTarget {
        rule: rr(1, action::DENY, op::bit(op::EXEC), 0),
        path: "/usr/bin/apt".into(),
        canonical: "/usr/bin/apt".into(),
        inode: Some(inode),
        entry: None,
        content: None,
    });
    assert_eq!(effective_exec_map(&c).len(), 1);
    assert_eq!(effective_exec_map(&c)[&inode].rule_id, 1);
    assert!(effective_exec_entry_map(&c).is_empty());
}

#[test]
fn a_trees_own_rule_beats_an_ancestors_rename_only_entry_whatever_the_order() {
    // Regression guard: airlockd's built-in trees add rename-only entries above them (e.g. on
    // /etc for /etc/airlock/policies); an enforcing deny there must not turn a policy's
    // approve on the /etc tree into a rename-only entry.
    let tree = rr(0, action::APPROVE, op::ALL_WRITES, 0);
    let above = rr(
        u32::MAX,
        action::DENY,
        op::bit(op::RENAME),
        flags::SELF_ONLY,
    );
    assert_eq!(merged(&[tree, above]), tree);
    assert_eq!(merged(&[above, tree]), tree);
    let other_above = rr(3, action::APPROVE, op::bit(op::RENAME), flags::SELF_ONLY);
    assert_eq!(merged(&[above, other_above]).rule_id, u32::MAX);
}
