//! Every kind of problem is reported at the right file:line:column, and all of a file's
//! problems are reported together.
use super::{errors_of, header};

#[test]
fn unknown_action_points_at_the_value() {
    let src = format!(
        "{}rules:\n  - name: r\n    action: block\n    exec: [/bin/true]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:8:13: rules[0].action: unknown action \"block\" (expected allow, audit, deny or approve)"
        ]
    );
}

#[test]
fn missing_mode_is_reported_at_the_document() {
    // Regression: mode has no default; a policy without it must not silently enforce or monitor.
    let src = "# comment\napiVersion: airlock.dev/v1\nkind: Policy\nmetadata: {name: p}\n";
    assert_eq!(
        errors_of(src),
        ["t.yaml:2:1: missing required key \"mode\""]
    );
}

#[test]
fn wrong_api_version_and_kind_stop_at_the_header() {
    let src = "apiVersion: airlock.dev/v2\nkind: Other\nspec: {}\n";
    assert_eq!(
        errors_of(src),
        [
            "t.yaml:1:13: apiVersion: unsupported apiVersion \"airlock.dev/v2\" (expected airlock.dev/v1)",
            "t.yaml:2:7: kind: unsupported kind \"Other\" (expected Policy)",
        ]
    );
}

#[test]
fn unknown_keys_are_errors_with_the_expected_keys() {
    // Regression: a misspelt `operations` must not widen a rule to every operation.
    let src = format!(
        "{}rules:\n  - name: r\n    action: deny\n    paths: [/etc]\n    operation: [write]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:10:5: rules[0]: unknown key \"operation\" (expected name, description, action, exec, paths, connect, privilege, operations, agents, timeout, onTimeout or tellAgent)"
        ]
    );
}

#[test]
fn exec_and_paths_together_and_neither() {
    let src = format!(
        "{}rules:\n  - name: both\n    action: deny\n    exec: [/usr/bin/apt]\n    paths: [/etc]\n  - name: none\n    action: deny\n  - name: three\n    action: deny\n    connect: [/run/docker.sock]\n    exec: [/usr/bin/apt]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:10:5: rules[0]: a rule has one of exec, paths, connect or privilege, not several",
            "t.yaml:11:5: rules[1]: a rule needs exec (binaries to gate), paths (trees and files to protect), connect (local service sockets to gate) or privilege (privilege changes to gate)",
            "t.yaml:16:5: rules[2]: a rule has one of exec, paths, connect or privilege, not several",
        ]
    );
}

#[test]
fn relative_and_unnormalized_paths() {
    let src = format!(
        "{}rules:\n  - name: r\n    action: deny\n    exec:\n      - usr/bin/apt\n      - /usr/bin/../bin/apt\n      - /usr/bin/\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:10:9: rules[0].exec[0]: path \"usr/bin/apt\" must be absolute (start with /)",
            "t.yaml:11:9: rules[0].exec[1]: path \"/usr/bin/../bin/apt\" must not contain . or .. components",
            "t.yaml:12:9: rules[0].exec[2]: path \"/usr/bin/\" names a directory (ends with /), not a binary",
        ]
    );
}

#[test]
fn bad_globs_point_at_the_glob() {
    let src = format!(
        "{}agents:\n  - name: a\n    cgroup: \"agents.slice/*\"\n  - name: b\n    systemdUnits: [ok.service, \"x[\"]\n",
        header("p", "enforce")
    );
    let errs = errors_of(&src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:8:13: agents[0].cgroup: bad glob \"agents.slice/*\": "),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("t.yaml:10:32: agents[1].systemdUnits[1]: bad glob \"x[\": "),
        "{}",
        errs[1]
    );
}

#[test]
fn unknown_agent_in_rule_points_at_the_name() {
    let src = format!(
        "{}agents: [{{name: claude}}]\nrules:\n  - name: r\n    action: deny\n    paths: [/etc]\n    agents: [claude, codex]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        ["t.yaml:11:22: rule \"r\" names unknown agent \"codex\" (declared: claude)"]
    );
}

#[test]
fn duplicate_rule_names_and_keys() {
    let src = format!(
        "{}rules:\n  - name: r\n    action: deny\n    action: allow\n    paths: [/etc]\n  - name: r\n    action: deny\n    paths: [/etc, /etc/]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:9:5: rules[0].action: duplicate key \"action\" (first at line 8)",
            "t.yaml:11:11: rules[1].name: duplicate rule name \"r\" (first at line 7)",
            "t.yaml:13:19: rules[1].paths[1]: \"/etc/\" is listed twice (first at line 13)",
        ]
    );
}

#[test]
fn duplicate_policy_and_agent_names_across_files_name_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(
        &a,
        format!("{}agents: [{{name: claude}}]\n", header("same", "enforce")),
    )
    .unwrap();
    std::fs::write(
        &b,
        format!("{}agents:\n  - name: claude\n", header("same", "monitor")),
    )
    .unwrap();
    let errs: Vec<String> = crate::load_paths(&[a.clone(), b.clone()])
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let (a, b) = (a.display(), b.display());
    assert_eq!(
        errs,
        [
            format!("{b}:4:9: metadata.name: duplicate policy name \"same\" (first at {a}:4:9)"),
            format!("{b}:7:11: duplicate agent name \"claude\" (first at {a}:6:17)"),
        ]
    );
}

#[test]
fn durations_and_approval_only_keys() {
    let src = format!(
        "{}rules:\n  - name: a\n    action: approve\n    paths: [/etc]\n    timeout: 5\n    onTimeout: maybe\n    tellAgent: yes\n  - name: d\n    action: deny\n    paths: [/etc]\n    timeout: 5m\n    tellAgent: \"no\"\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:10:14: rules[0].timeout: invalid duration \"5\" (expected a number with a unit: 30s, 5m, 1h, 1h30m)",
            "t.yaml:11:16: rules[0].onTimeout: unknown onTimeout \"maybe\" (expected deny or allow)",
            "t.yaml:12:16: rules[0].tellAgent: expected true or false, found \"yes\"",
            "t.yaml:16:5: rules[1].timeout: only valid with action approve",
            "t.yaml:17:5: rules[1].tellAgent: only valid with action approve",
        ]
    );
}

#[test]
fn operations_unknown_and_on_exec() {
    let src = format!(
        "{}rules:\n  - name: a\n    action: deny\n    paths: [/etc]\n    operations: [write, delete]\n  - name: b\n    action: deny\n    exec: [/usr/bin/apt]\n    operations: [write]\n  - name: c\n    action: deny\n    connect: [/run/x.sock, /run/]\n    operations: [write]\n",
        header("p", "enforce")
    );
    let errs = errors_of(&src);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("t.yaml:10:25: rules[0].operations[1]: unknown operation \"delete\" (expected write, create,"), "{}", errs[0]);
    assert_eq!(
        errs[1],
        "t.yaml:14:5: rules[1].operations: only valid with paths; other rules gate what they list"
    );
    assert_eq!(
        errs[2],
        "t.yaml:17:28: rules[2].connect[1]: path \"/run/\" names a directory (ends with /), not a socket"
    );
    assert_eq!(
        errs[3],
        "t.yaml:18:5: rules[2].operations: only valid with paths; other rules gate what they list"
    );
}

#[test]
fn wrong_types_and_bad_names() {
    let src = "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: My_Policy\nmode: enforce\nagents: {name: a}\nrules:\n  - name: r\n    action: deny\n    exec: /usr/bin/apt\n  - name: \"\"\n    action: [deny]\n    paths: []\n";
    assert_eq!(
        errors_of(src),
        [
            "t.yaml:4:9: metadata.name: invalid policy name \"My_Policy\" (expected 1 to 63 characters of a-z, 0-9 and -)",
            "t.yaml:6:9: agents: expected a list, found a mapping",
            "t.yaml:10:11: rules[0].exec: expected a list, found a scalar",
            "t.yaml:11:11: rules[1].name: invalid rule name \"\" (expected 1 to 63 characters of a-z, 0-9, _ and -)",
            "t.yaml:12:13: rules[1].action: expected a string, found a list",
            "t.yaml:13:12: rules[1].paths: must not be empty",
        ]
    );
}

#[test]
fn all_problems_of_a_file_are_reported_in_order() {
    // Regression: the checker must not stop at the first problem (operators fix files in one go).
    let src = "\
apiVersion: airlock.dev/v1
kind: Policy
metadata:
  name: p
mode: enforcing
agents:
  - name: Claude
rules:
  - name: one
    action: block
    exec: [relative]
  - name: two
    action: deny
    paths: [/etc]
    timeout: 5m
";
    let errs = errors_of(src);
    let locs: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        locs,
        [
            "t.yaml:5:7",
            "t.yaml:7:11",
            "t.yaml:10:13",
            "t.yaml:11:12",
            "t.yaml:15:5"
        ],
        "{errs:#?}"
    );
}

#[test]
fn documents_of_one_file_are_all_checked() {
    let src = format!(
        "{}bogus: 1\n---\n{}bogus: 2\n",
        header("a", "enforce"),
        header("b", "enforce")
    );
    let errs = errors_of(&src);
    assert_eq!(errs.len(), 2);
    assert!(errs[0].starts_with("t.yaml:6:1: unknown key \"bogus\""));
    assert!(errs[1].starts_with("t.yaml:13:1: unknown key \"bogus\""));
}

#[test]
fn yaml_syntax_errors_are_located() {
    let src = format!(
        "{}rules:\n  - name: r\n   action: deny\n",
        header("p", "enforce")
    );
    let errs = errors_of(&src);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("t.yaml:8:4: YAML syntax error: "),
        "{}",
        errs[0]
    );
}

#[test]
fn aliases_are_refused_with_their_name() {
    let src = format!(
        "{}agents: &all [{{name: a}}]\nrules:\n  - {{name: r, action: deny, paths: [/etc], agents: *all}}\n",
        header("p", "enforce")
    );
    let errs = errors_of(&src);
    assert_eq!(
        errs[0],
        "t.yaml:8:52: aliases (*all) are not supported in policy files; write the value out"
    );
}

#[test]
fn empty_files_and_directories_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing here\n").unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let missing = dir.path().join("missing.yaml");
    let errs: Vec<String> = crate::load_paths(&[empty.clone(), sub.clone(), missing.clone()])
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs.contains(&format!("{}: holds no policy document", empty.display())));
    assert!(errs.contains(&format!(
        "{}: directory holds no *.yaml or *.yml file",
        sub.display()
    )));
    let missing_prefix = format!("{}: cannot read: ", missing.display());
    assert!(
        errs.iter().any(|e| e.starts_with(&missing_prefix)),
        "{errs:#?}"
    );
}

#[test]
fn agents_whose_names_share_a_kernel_slot_are_refused() {
    // FNV-1a 32 of both names is 0x540ae0e6 (found by search; one pair in four billion).
    assert_eq!(
        crate::agent_slot("agent-33049"),
        crate::agent_slot("agent-625200")
    );
    let src = format!(
        "{}agents: [{{name: agent-33049}}, {{name: agent-625200}}]\nrules:\n  - name: r\n    action: deny\n    paths: [/etc]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:6:38: agent \"agent-625200\" cannot be told apart from agent \"agent-33049\" \
             in the kernel's rule maps; rename one of them"
        ]
    );
}

#[test]
fn unknown_privilege_changes_are_named() {
    let src = format!(
        "{}rules:\n  - name: ids\n    action: deny\n    privilege: [setuid, sudo]\n    operations: [write]\n",
        header("p", "enforce")
    );
    assert_eq!(
        errors_of(&src),
        [
            "t.yaml:9:25: rules[0].privilege[1]: unknown privilege change \"sudo\" (expected setuid, setgid, userns or caps)",
            "t.yaml:10:5: rules[0].operations: only valid with paths; other rules gate what they list",
        ]
    );
}
