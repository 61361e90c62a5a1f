//! The config format: a full example, the template, and each class of error with its exact
//! `file:line:col`.
use std::time::Duration;

use airlock_approval::Op;

use super::*;

/// The example of the format's documentation, with one more group for the escalation.
const EXAMPLE: &str = r#"# listen address for gRPC (TLS)
listen: 127.0.0.1:7443
database: postgres://user@host/db
break_glass: false
principals:
  alice:
    groups: [sre, dba]
    host_users: [alice, "alice@build-*"]
  bob: { groups: [sre] }
  carol: { groups: [oncall] }
routes:
  - name: prod-etc
    match:
      hosts: ["web-*"]
      labels: { env: prod }
      agents: [claude]
      rules: ["etc-*"]
      operations: [exec, open_write]
      paths: ["/etc/**"]
      binaries: ["/usr/bin/kubectl"]
    approvers: [sre]
    threshold: 2
    deny_requires_reason: true
    reminder: 2m
    escalation: { after: 5m, to: [oncall] }
    channels: [cli, slack]
  - name: default
    approvers: [sre]
slack:
  bot_token_file: slack-bot.token
  app_token_file: slack-app.token
  channel: C0123ABCD
  users: { U0123ABCD: alice }
"#;

/// The diagnostics of a config that must fail, one string per line.
fn errors(src: &str) -> Vec<String> {
    match parse(src, "server.yaml") {
        Ok(c) => panic!("parsed: {c:?}"),
        Err(ConfigError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
        Err(e) => panic!("not invalid: {e}"),
    }
}

/// A config with principals alice, bob (group sre) and carol (oncall), then `routes`.
fn with_routes(routes: &str) -> String {
    format!(
        "principals:\n  alice: {{ groups: [sre] }}\n  bob: {{ groups: [sre] }}\n  \
         carol: {{ groups: [oncall] }}\nroutes:\n{routes}"
    )
}

#[test]
fn the_documented_example_parses_into_the_model() {
    let c = parse(EXAMPLE, "server.yaml").unwrap();
    assert_eq!(c.listen.as_deref(), Some("127.0.0.1:7443"));
    assert_eq!(c.database.as_deref(), Some("postgres://user@host/db"));
    assert!(!c.break_glass);
    assert_eq!(c.principals.len(), 3);
    let alice = &c.principals["alice"];
    assert_eq!(alice.groups, ["sre", "dba"]);
    assert_eq!(alice.host_users.len(), 2);
    assert_eq!(alice.host_users[1].to_string(), "alice@build-*");
    assert!(alice.host_users[1].matches("alice", "build-3"));
    assert_eq!(c.routes.len(), 2);
    let r = &c.routes[0];
    assert_eq!(r.name, "prod-etc");
    assert_eq!(r.matching.hosts[0].as_str(), "web-*");
    assert_eq!(r.matching.labels["env"], "prod");
    assert_eq!(r.matching.operations, [Op::Exec, Op::OpenWrite]);
    assert_eq!(r.matching.paths[0].as_str(), "/etc/**");
    assert_eq!(r.matching.binaries[0].as_str(), "/usr/bin/kubectl");
    assert_eq!(r.approvers, ["sre"]);
    assert_eq!(r.threshold, 2);
    assert!(r.deny_requires_reason);
    assert_eq!(r.reminder, Some(Duration::from_secs(120)));
    let e = r.escalation.as_ref().unwrap();
    assert_eq!(
        (e.after, e.to.as_slice()),
        (Duration::from_secs(300), &["oncall".to_owned()][..])
    );
    assert_eq!(r.channels, [Channel::Cli, Channel::Slack]);
    let d = &c.routes[1];
    assert!(d.matching.is_catch_all());
    assert_eq!((d.threshold, d.deny_requires_reason), (1, false));
    assert_eq!(
        (d.reminder, &d.escalation, d.channels.as_slice()),
        (None, &None, &[Channel::Cli][..])
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn defaults_when_keys_are_left_out() {
    let c = parse("principals: {}\n", "server.yaml").unwrap();
    assert_eq!((c.listen, c.database, c.break_glass), (None, None, true));
    assert!(c.routes.is_empty());
}

#[test]
fn template_parses_cleanly_with_an_admin_and_a_catch_all() {
    for listen in [DEFAULT_LISTEN, "[::]:7443", "0.0.0.0:443"] {
        let text = template(listen);
        let c = parse(&text, "server.yaml").unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert_eq!(c.listen.as_deref(), Some(listen));
        assert!(c.break_glass);
        assert_eq!(c.principals["admin"].groups, ["admins"]);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].name, "default");
        assert!(c.routes[0].matching.is_catch_all());
        assert_eq!(c.routes[0].approvers, ["admins"]);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }
}

#[test]
fn template_const_is_the_default_and_template_replaces_only_listen() {
    assert_eq!(template(DEFAULT_LISTEN), TEMPLATE);
    let other = template("10.0.0.1:9000");
    assert_eq!(
        other.replace("\"10.0.0.1:9000\"", "\"127.0.0.1:7443\""),
        TEMPLATE
    );
    assert!(other.contains("\nlisten: \"10.0.0.1:9000\"\n"));
}

#[test]
fn template_examples_parse_when_uncommented() {
    // The commented examples document the format; they must be valid once uncommented.
    // Examples are the indented comments that start with a key (`name:`, `- name:`); prose
    // and the top-level `database` example stay comments.
    let is_example = |rest: &str| {
        let key = rest.strip_prefix("- ").unwrap_or(rest);
        key.split_once(':').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    };
    let text: String = template(DEFAULT_LISTEN)
        .lines()
        .map(|l| {
            let body = l.trim_start();
            match body.strip_prefix("# ") {
                Some(rest) if l.starts_with(' ') && is_example(rest.trim_start()) => {
                    format!("{}{rest}\n", &l[..l.len() - body.len()])
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    let c = parse(&text, "server.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.principals.len(), 4);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].name, "prod-etc");
    assert_eq!(c.routes[0].threshold, 2);
    assert_eq!(c.principals["admin"].host_users.len(), 2);
}

#[test]
fn unknown_keys_are_errors_with_did_you_mean() {
    assert_eq!(
        errors("listn: 127.0.0.1:7443\nbreakGlass: true\ncolour: red\n"),
        [
            "server.yaml:1:1: unknown key \"listn\" (did you mean \"listen\"?)",
            "server.yaml:2:1: unknown key \"breakGlass\" (did you mean \"break_glass\"?)",
            "server.yaml:3:1: unknown key \"colour\" (expected one of: listen, http_listen, \
             metrics_listen, database, break_glass, principals, routes, webhook, web, teams, slack, audit)",
        ]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    treshold: 2\n    match: { host: [a] }\n"
        )),
        [
            "server.yaml:8:5: routes[0]: unknown key \"treshold\" (did you mean \"threshold\"?)",
            "server.yaml:9:14: routes[0].match: unknown key \"host\" (did you mean \"hosts\"?)",
        ]
    );
    assert_eq!(
        errors("principals:\n  alice: { group: [sre] }\n"),
        ["server.yaml:2:12: principals.alice: unknown key \"group\" (did you mean \"groups\"?)"]
    );
}

#[test]
fn wrong_types_are_located_at_the_value() {
    assert_eq!(
        errors("listen: [1]\nbreak_glass: yes\nprincipals: [alice]\nroutes: { a: 1 }\n"),
        [
            "server.yaml:1:9: listen: expected a string, found a list",
            "server.yaml:2:14: break_glass: expected true or false, found \"yes\"",
            "server.yaml:3:13: principals: expected a mapping, found a list",
            "server.yaml:4:9: routes: expected a list, found a mapping",
        ]
    );
    // A quoted "true" is a string: reading it as a boolean would hide the quotes' intent.
    assert_eq!(
        errors("break_glass: \"false\"\n"),
        ["server.yaml:1:14: break_glass: expected true or false, found \"false\""]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: sre\n    threshold: [2]\n"
        )),
        [
            "server.yaml:7:16: routes[0].approvers: expected a list, found a scalar",
            "server.yaml:8:16: routes[0].threshold: expected a string, found a list",
        ]
    );
    assert_eq!(
        errors("- a\n"),
        ["server.yaml:1:1: expected a mapping, found a list"]
    );
}

#[test]
fn duplicate_keys_principals_and_route_names_are_errors() {
    assert_eq!(
        errors("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n"),
        ["server.yaml:2:1: listen: duplicate key \"listen\" (first at line 1)"]
    );
    assert_eq!(
        errors("principals:\n  alice: {}\n  alice: {}\n"),
        ["server.yaml:3:3: principals.alice: duplicate key \"alice\" (first at line 2)"]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n  - name: r\n    approvers: [oncall]\n"
        )),
        ["server.yaml:8:11: routes[1].name: duplicate route name \"r\" (first at line 6)"]
    );
    assert_eq!(
        errors(&with_routes("  - name: r\n    approvers: [sre, sre]\n")),
        ["server.yaml:7:22: routes[0].approvers[1]: \"sre\" is listed twice (first at line 7)"]
    );
}

#[test]
fn unknown_groups_in_approvers_and_escalation_are_errors() {
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sres]\n    escalation: { after: 5m, to: [ops] }\n"
        )),
        [
            "server.yaml:7:17: routes[0].approvers[0]: unknown group \"sres\": no principal is \
             in it (did you mean \"sre\"?)",
            "server.yaml:8:35: routes[0].escalation.to[0]: unknown group \"ops\": no principal \
             is in it",
        ]
    );
}

#[test]
fn threshold_must_be_between_one_and_the_number_of_approvers() {
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    threshold: 0\n"
        )),
        ["server.yaml:8:16: routes[0].threshold: threshold must be at least 1"]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    threshold: 3\n"
        )),
        [
            "server.yaml:8:16: routes[0].threshold: threshold 3 exceeds the 2 principal(s) in \
          the approver groups (sre)"
        ]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    threshold: two\n"
        )),
        [
            "server.yaml:8:16: routes[0].threshold: invalid threshold \"two\" (expected a whole \
          number, at least 1)"
        ]
    );
    // M counts principals, not memberships: alice in both groups is one approver.
    let both = "principals:\n  alice: { groups: [sre, dba] }\n  bob: { groups: [dba] }\n\
                routes:\n  - name: r\n    approvers: [sre, dba]\n    threshold: 3\n";
    assert_eq!(
        errors(both),
        [
            "server.yaml:7:16: routes[0].threshold: threshold 3 exceeds the 2 principal(s) in \
          the approver groups (sre, dba)"
        ]
    );
    let ok = with_routes("  - name: r\n    approvers: [sre, oncall]\n    threshold: 3\n");
    assert_eq!(parse(&ok, "server.yaml").unwrap().routes[0].threshold, 3);
}

#[test]
fn bad_globs_are_located_at_the_entry() {
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    match:\n      hosts: [\"web/*\"]\n      \
             paths: [\"etc/**\"]\n      agents: [\"[a\"]\n"
        )),
        [
            "server.yaml:9:15: routes[0].match.hosts[0]: bad glob \"web/*\": host names contain \
             no /, so it never matches",
            "server.yaml:10:15: routes[0].match.paths[0]: bad glob \"etc/**\": paths are \
             absolute, so it never matches (start it with / or **)",
            "server.yaml:11:16: routes[0].match.agents[0]: bad glob \"[a\": unclosed character \
             class; missing ']'",
        ]
    );
}

#[test]
fn bad_durations_are_located_at_the_value() {
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    reminder: 5\n    \
             escalation: { after: 0s, to: [oncall] }\n"
        )),
        [
            "server.yaml:8:15: routes[0].reminder: invalid duration \"5\" (expected a number \
             with a unit s, m, h or d: 30s, 5m, 1h30m)",
            "server.yaml:9:26: routes[0].escalation.after: duration \"0s\" out of range \
             (expected more than 0s and at most 24h)",
        ]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    escalation: { to: [oncall] }\n"
        )),
        ["server.yaml:8:17: routes[0].escalation: missing required key \"after\""]
    );
}

#[test]
fn bad_operation_and_channel_names_suggest_the_right_one() {
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    match: { operations: [write, exex, fly] }\n    \
             channels: [slak]\n"
        )),
        [
            "server.yaml:8:27: routes[0].match.operations[0]: unknown operation \"write\" \
             (did you mean \"open_write\"?)",
            "server.yaml:8:34: routes[0].match.operations[1]: unknown operation \"exex\" \
             (did you mean \"exec\"?)",
            "server.yaml:8:40: routes[0].match.operations[2]: unknown operation \"fly\" \
             (expected one of: exec, map_exec, open_write, create, unlink, rename, truncate, link, \
             chmod, chown, mkdir, rmdir, symlink, setattr)",
            "server.yaml:9:16: routes[0].channels[0]: unknown channel \"slak\" (did you mean \
             \"slack\"?)",
        ]
    );
}

#[test]
fn operation_names_are_the_wire_names() {
    for (name, op) in OPERATIONS {
        assert_eq!(serde_json::to_value(op).unwrap(), name);
    }
}

#[test]
fn names_outside_their_charset_are_errors() {
    assert_eq!(
        errors("principals:\n  Alice: { groups: [SRE] }\n  \"a b\": {}\n  bob@example.com: {}\n"),
        [
            "server.yaml:2:3: principals: invalid principal name \"Alice\" (expected 1 to 128 \
             characters of a-z, 0-9, ., _, - and @)",
            "server.yaml:2:21: principals.Alice.groups[0]: invalid group name \"SRE\" (expected \
             1 to 63 characters of a-z, 0-9, ., _ and -)",
            "server.yaml:3:3: principals: invalid principal name \"a b\" (expected 1 to 128 \
             characters of a-z, 0-9, ., _, - and @)",
        ]
    );
    assert_eq!(
        errors(&with_routes("  - name: Prod\n    approvers: [sre]\n")),
        [
            "server.yaml:6:11: routes[0].name: invalid route name \"Prod\" (expected 1 to 63 \
          characters of a-z, 0-9, ., _ and -)"
        ]
    );
}

#[test]
fn missing_required_route_keys_point_at_the_route() {
    assert_eq!(
        errors(&with_routes("  - match: {}\n")),
        [
            "server.yaml:6:5: routes[0]: missing required key \"name\"",
            "server.yaml:6:5: routes[0]: missing required key \"approvers\"",
        ]
    );
}

#[test]
fn empty_lists_and_labels_are_errors_since_leaving_the_key_out_means_any() {
    assert_eq!(
        errors(&with_routes(
            "  - name: r\n    approvers: [sre]\n    match: { hosts: [], labels: {} }\n"
        )),
        [
            "server.yaml:8:21: routes[0].match.hosts: must not be empty (leave the key out to \
             match any)",
            "server.yaml:8:33: routes[0].match.labels: must not be empty (leave the key out to \
             match any)",
        ]
    );
}

#[test]
fn listen_database_and_host_users_are_checked() {
    assert_eq!(
        errors(
            "listen: localhost:7443\ndatabase: mysql://db\nprincipals:\n  alice: { host_users: \
             [\"alice@\"] }\n"
        ),
        [
            "server.yaml:1:9: listen: invalid listen address \"localhost:7443\" (expected \
             IP:PORT, e.g. 127.0.0.1:7443 or [::]:7443)",
            "server.yaml:2:11: database: unsupported database URL (expected postgres://… or \
             sqlite://PATH)",
            "server.yaml:4:25: principals.alice.host_users[0]: invalid host user \"alice@\": the \
             host glob after @ is empty (leave out @ for every host)",
        ]
    );
}

#[test]
fn no_catch_all_route_is_a_note_not_an_error() {
    let c = parse(
        &with_routes("  - name: r\n    match: { hosts: [a] }\n    approvers: [sre]\n"),
        "server.yaml",
    )
    .unwrap();
    assert_eq!(c.notes.len(), 1);
    assert!(
        c.notes[0].starts_with("server.yaml:5:1: routes: no catch-all route"),
        "{}",
        c.notes[0]
    );
    let none = parse("principals: {}\n", "server.yaml").unwrap();
    assert!(
        none.notes[0].starts_with("server.yaml: routes: no catch-all"),
        "{:?}",
        none.notes
    );
}

#[test]
fn routes_below_a_catch_all_get_a_note() {
    let c = parse(
        &with_routes(
            "  - name: all\n    approvers: [sre]\n  - name: late\n    match: { hosts: [a] }\n    \
             approvers: [oncall]\n",
        ),
        "server.yaml",
    )
    .unwrap();
    assert_eq!(
        c.notes,
        [
            "server.yaml:8:5: routes[1]: route \"late\" is never used: route \"all\" above it \
          matches every request"
        ]
    );
}

#[test]
fn yaml_syntax_aliases_and_documents_are_reported() {
    assert_eq!(
        errors("listen: a\n  b: c\n"),
        ["server.yaml:2:4: YAML syntax error: mapping values are not allowed in this context"]
    );
    assert_eq!(
        errors("principals:\n  a: &x { groups: [g] }\n  b: *x\n"),
        [
            "server.yaml:3:6: aliases (*x) are not supported in the server config; write the \
          value out"
        ]
    );
    assert_eq!(
        errors("# nothing\n"),
        ["server.yaml: holds no configuration (airlock-server init writes a commented one)"]
    );
    assert_eq!(
        errors("principals: {}\n---\nroutes: []\n"),
        ["server.yaml:3:1: a second YAML document; the config is one document"]
    );
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.yaml");
    std::fs::write(&path, template("127.0.0.1:7443")).unwrap();
    assert_eq!(load(&path).unwrap().routes.len(), 1);

    std::fs::write(&path, "listen: nowhere\n").unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:1:9: listen: invalid listen address \"nowhere\" (expected IP:PORT, e.g. \
             127.0.0.1:7443 or [::]:7443)",
            path.display()
        )
    );

    std::fs::write(&path, b"listen: \xff\n").unwrap();
    assert_eq!(
        load(&path).unwrap_err().to_string(),
        format!("{}: not UTF-8 text", path.display())
    );

    let missing = dir.path().join("missing.yaml");
    assert!(matches!(load(&missing), Err(ConfigError::Io { .. })));
    assert!(
        load(&missing)
            .unwrap_err()
            .to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display()))
    );
}

#[test]
fn several_problems_are_reported_together_in_file_order() {
    let e = errors(&with_routes(
        "  - name: a\n    approvers: [nobody]\n    threshold: 0\n  - name: a\n    approvers: [sre]\n",
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("server.yaml:7:17: "), "{e:?}");
    assert!(e[1].starts_with("server.yaml:8:16: "), "{e:?}");
    assert!(e[2].starts_with("server.yaml:9:11: "), "{e:?}");
}

#[test]
fn webhook_section_is_read_and_a_route_may_name_it() {
    let src = format!(
        "{}webhook:\n  url: https://hooks.example.com/airlock\n  secret_file: /etc/airlock-server/hook.secret\n",
        with_routes("  - name: d\n    approvers: [sre]\n    channels: [cli, webhook]\n")
    );
    let c = parse(&src, "server.yaml").unwrap();
    assert_eq!(
        c.webhook,
        Some(Webhook {
            url: "https://hooks.example.com/airlock".into(),
            secret_file: "/etc/airlock-server/hook.secret".into(),
        })
    );
    assert_eq!(c.routes[0].channels, [Channel::Cli, Channel::Webhook]);
}

#[test]
fn webhook_errors_name_the_key_and_a_route_naming_an_unconfigured_webhook() {
    assert_eq!(
        errors(&format!(
            "{}webhook:\n  url: ftp://hooks.example.com/a\n",
            with_routes("  - name: d\n    approvers: [sre]\n")
        )),
        [
            "server.yaml:9:3: webhook: missing required key \"secret_file\"",
            "server.yaml:9:8: webhook.url: webhook URL \"ftp://hooks.example.com/a\": expected http://… or https://…",
        ]
    );
    assert_eq!(
        errors(&with_routes(
            "  - name: d\n    approvers: [sre]\n    channels: [cli, webhook]\n"
        )),
        [
            "server.yaml:8:21: routes[0].channels[1]: channel webhook needs a top-level `webhook:` section"
        ]
    );
}

#[test]
fn http_listen_is_an_address() {
    let c = parse("http_listen: \"127.0.0.1:7480\"\n", "server.yaml").unwrap();
    assert_eq!(c.http_listen.as_deref(), Some("127.0.0.1:7480"));
    assert_eq!(parse("{}", "server.yaml").unwrap().http_listen, None);
    assert_eq!(
        errors("http_listen: localhost\n"),
        [
            "server.yaml:1:14: http_listen: invalid listen address \"localhost\" (expected IP:PORT, e.g. 127.0.0.1:7443 or [::]:7443)"
        ]
    );
}

#[test]
fn metrics_listen_is_an_address() {
    let c = parse("metrics_listen: \"127.0.0.1:9464\"\n", "server.yaml").unwrap();
    assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
    assert_eq!(parse("{}", "server.yaml").unwrap().metrics_listen, None);
    assert_eq!(
        errors("listen: 127.0.0.1:7443\nmetrics_listen: :9464\n"),
        [
            "server.yaml:2:17: metrics_listen: invalid listen address \":9464\" (expected IP:PORT, e.g. 127.0.0.1:7443 or [::]:7443)"
        ]
    );
}
