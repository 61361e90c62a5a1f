//! Routing and voting against one config with a route per match criterion: which route takes
//! a request, who may vote on it (groups, escalation, the launcher), and when the votes decide.
use airlock_approval::Launcher;

use super::*;
use crate::config::parse;

const CONFIG: &str = r#"
principals:
  alice: { groups: [sre], host_users: [alice] }
  bob: { groups: [sre], host_users: ["bob@build-*"] }
  carol: { groups: [oncall] }
  dave: { groups: [dba] }
routes:
  - name: by-host
    match: { hosts: ["web-*"] }
    approvers: [sre]
  - name: by-label
    match: { labels: { env: prod, tier: db } }
    approvers: [dba]
  - name: by-agent
    match: { agents: ["claude*"] }
    approvers: [sre]
    threshold: 2
    deny_requires_reason: true
    escalation: { after: 5m, to: [oncall] }
  - name: by-rule
    match: { rules: ["etc-*"] }
    approvers: [sre]
  - name: by-op
    match: { operations: [unlink, rmdir] }
    approvers: [sre]
  - name: by-path
    match: { paths: ["/srv/**"] }
    approvers: [sre]
  - name: by-binary
    match: { binaries: ["/usr/bin/kubectl"] }
    approvers: [sre]
  - name: all-of
    match: { hosts: ["db-*"], operations: [chmod] }
    approvers: [dba]
"#;

fn cfg() -> ServerConfig {
    parse(CONFIG, "server.yaml").unwrap()
}

/// A plain open_write of /tmp/x by an unnamed agent under no rule: matches no route above.
fn ctx() -> RequestContext {
    RequestContext {
        host: "reported-name".into(),
        agent: None,
        agent_cgroup: None,
        cgroup_id: 1,
        unit: None,
        launched_by: None,
        pid: 10,
        tgid: 10,
        uid: 1000,
        euid: 1000,
        comm: "sh".into(),
        exe: Some("/usr/bin/sh".into()),
        ancestry: Vec::new(),
        argv: Vec::new(),
        argv_truncated: false,
        cwd: None,
        op: Op::OpenWrite,
        target_path: Some("/tmp/x".into()),
        target_dev: 0,
        target_ino: 0,
        rule: None,
        policy: None,
        reason: None,
        backend: "lsm".into(),
    }
}

fn launched_by(user: &str, sudo_user: Option<&str>) -> Option<Launcher> {
    Some(Launcher {
        uid: 0,
        user: Some(user.into()),
        sudo_user: sudo_user.map(Into::into),
        reason: None,
    })
}

/// The name of the route `context` on `host` with `labels` takes.
fn routed(host: &str, labels: &[(&str, &str)], context: &RequestContext) -> Option<String> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = Subject {
        host,
        labels: &labels,
        context,
    };
    cfg().route_for(&s).map(|r| r.name.clone())
}

fn vote(principal: &str, release: Release) -> Vote {
    Vote {
        principal: principal.into(),
        release,
        for_ms: None,
        always: false,
        reason: None,
        via: "cli".into(),
        at_unix_ms: 1,
    }
}

fn approve(principal: &str, for_ms: Option<u64>) -> Vote {
    Vote {
        for_ms,
        ..vote(principal, Release::Allow)
    }
}

fn deny(principal: &str, reason: Option<&str>) -> Vote {
    Vote {
        reason: reason.map(Into::into),
        ..vote(principal, Release::Deny)
    }
}

/// `check_vote` on route `route` of [`CONFIG`] for a request on `host` with `context`,
/// opened at 0, at `now_ms`.
fn check(
    route: &str,
    host: &str,
    context: &RequestContext,
    v: &Vote,
    now_ms: u64,
) -> Result<(), Refusal> {
    let c = cfg();
    let r = c.routes.iter().find(|r| r.name == route).unwrap();
    let labels = BTreeMap::new();
    let s = Subject {
        host,
        labels: &labels,
        context,
    };
    check_vote(&c, r, &v.principal, v, &s, 0, now_ms)
}

#[test]
fn a_request_no_route_matches_has_no_route() {
    assert_eq!(routed("other", &[], &ctx()), None);
}

#[test]
fn hosts_match_the_enrolled_name_not_the_reported_one() {
    assert_eq!(routed("web-1", &[], &ctx()).as_deref(), Some("by-host"));
    let c = RequestContext {
        host: "web-1".into(),
        ..ctx()
    };
    assert_eq!(routed("other", &[], &c), None);
}

#[test]
fn labels_must_all_be_present_and_equal() {
    let both = [("env", "prod"), ("tier", "db"), ("extra", "x")];
    assert_eq!(routed("h", &both, &ctx()).as_deref(), Some("by-label"));
    assert_eq!(routed("h", &[("env", "prod")], &ctx()), None);
    assert_eq!(routed("h", &[("env", "dev"), ("tier", "db")], &ctx()), None);
}

#[test]
fn agents_match_by_glob_and_an_unnamed_agent_matches_none() {
    let c = RequestContext {
        agent: Some("claude-code".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c).as_deref(), Some("by-agent"));
    let c = RequestContext {
        agent: Some("codex".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c), None);
}

#[test]
fn rules_match_by_glob() {
    let c = RequestContext {
        rule: Some("etc-writes".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c).as_deref(), Some("by-rule"));
    let c = RequestContext {
        rule: Some("var-writes".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c), None);
}

#[test]
fn operations_match_any_listed() {
    let c = RequestContext {
        op: Op::Rmdir,
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c).as_deref(), Some("by-op"));
}

#[test]
fn paths_match_the_target_with_double_star_crossing_directories() {
    let c = RequestContext {
        target_path: Some("/srv/app/conf/x.yaml".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c).as_deref(), Some("by-path"));
    let c = RequestContext {
        target_path: None,
        ..ctx()
    };
    assert_eq!(routed("h", &[], &c), None);
}

#[test]
fn binaries_match_exec_requests_only_by_target_or_exe() {
    let exec = RequestContext {
        op: Op::Exec,
        target_path: Some("/usr/bin/kubectl".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &exec).as_deref(), Some("by-binary"));
    let by_exe = RequestContext {
        op: Op::Exec,
        target_path: None,
        exe: Some("/usr/bin/kubectl".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &by_exe).as_deref(), Some("by-binary"));
    // kubectl writing a file is not "running kubectl".
    let write = RequestContext {
        exe: Some("/usr/bin/kubectl".into()),
        ..ctx()
    };
    assert_eq!(routed("h", &[], &write), None);
}

#[test]
fn all_given_criteria_must_match() {
    let c = RequestContext {
        op: Op::Chmod,
        ..ctx()
    };
    assert_eq!(routed("db-1", &[], &c).as_deref(), Some("all-of"));
    assert_eq!(routed("db-1", &[], &ctx()), None);
    assert_eq!(routed("app-1", &[], &c), None);
}

#[test]
fn first_matching_route_wins() {
    // Matches by-host, by-agent and by-op; by-host is first.
    let c = RequestContext {
        agent: Some("claude".into()),
        op: Op::Unlink,
        ..ctx()
    };
    assert_eq!(routed("web-1", &[], &c).as_deref(), Some("by-host"));
    assert_eq!(routed("other", &[], &c).as_deref(), Some("by-agent"));
}

#[test]
fn a_catch_all_takes_what_nothing_above_took() {
    let text = format!("{CONFIG}  - name: default\n    approvers: [sre]\n");
    let c = parse(&text, "server.yaml").unwrap();
    let labels = BTreeMap::new();
    let context = ctx();
    let s = Subject {
        host: "other",
        labels: &labels,
        context: &context,
    };
    assert_eq!(c.route_for(&s).unwrap().name, "default");
    let s = Subject { host: "web-2", ..s };
    assert_eq!(c.route_for(&s).unwrap().name, "by-host");
}

#[test]
fn members_of_the_approver_groups_may_vote() {
    assert_eq!(
        check("by-host", "h", &ctx(), &approve("alice", None), 0),
        Ok(())
    );
    assert_eq!(check("by-host", "h", &ctx(), &deny("bob", None), 0), Ok(()));
}

#[test]
fn non_members_are_refused_naming_the_groups_that_may() {
    let e = check("by-host", "h", &ctx(), &approve("dave", None), 0).unwrap_err();
    assert_eq!(
        e,
        Refusal::NotAnApprover {
            principal: "dave".into(),
            route: "by-host".into(),
            groups: vec!["sre".into()],
        }
    );
    assert_eq!(
        e.to_string(),
        "dave may not vote on requests of route by-host: only members of sre may"
    );
}

#[test]
fn unknown_principals_are_refused() {
    let e = check("by-host", "h", &ctx(), &approve("mallory", None), 0).unwrap_err();
    assert_eq!(
        e,
        Refusal::UnknownPrincipal {
            principal: "mallory".into()
        }
    );
}

#[test]
fn a_vote_must_be_cast_as_the_caller() {
    let c = cfg();
    let labels = BTreeMap::new();
    let context = ctx();
    let s = Subject {
        host: "h",
        labels: &labels,
        context: &context,
    };
    let e = check_vote(&c, &c.routes[0], "alice", &approve("bob", None), &s, 0, 0).unwrap_err();
    assert!(matches!(e, Refusal::NotOwnVote { .. }), "{e}");
}

#[test]
fn escalation_groups_may_vote_only_after_the_delay() {
    let five_min = 300_000;
    let e = check(
        "by-agent",
        "h",
        &ctx(),
        &approve("carol", None),
        five_min - 90_500,
    )
    .unwrap_err();
    assert_eq!(
        e,
        Refusal::NotYetEscalated {
            principal: "carol".into(),
            route: "by-agent".into(),
            wait_ms: 90_500
        }
    );
    assert_eq!(
        e.to_string(),
        "carol may vote on requests of route by-agent only after escalation, in 1m31s"
    );
    assert_eq!(
        check("by-agent", "h", &ctx(), &approve("carol", None), five_min),
        Ok(())
    );
    assert_eq!(
        check(
            "by-agent",
            "h",
            &ctx(),
            &approve("carol", None),
            five_min + 1
        ),
        Ok(())
    );
    // Someone in neither group stays refused, and is told who may vote by now.
    let e = check("by-agent", "h", &ctx(), &approve("dave", None), five_min).unwrap_err();
    assert!(
        matches!(&e, Refusal::NotAnApprover { groups, .. } if *groups == ["sre", "oncall"]),
        "{e:?}"
    );
}

#[test]
fn the_launcher_may_not_approve_as_the_user() {
    let c = RequestContext {
        launched_by: launched_by("alice", None),
        ..ctx()
    };
    let e = check("by-host", "web-1", &c, &approve("alice", None), 0).unwrap_err();
    assert_eq!(
        e,
        Refusal::SelfApproval {
            principal: "alice".into(),
            launcher: "alice".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "alice launched this agent (as host user alice) and may not approve its requests; \
         another approver must"
    );
    // Another approver may.
    assert_eq!(
        check("by-host", "web-1", &c, &approve("bob", None), 0),
        Ok(())
    );
}

#[test]
fn the_launcher_may_not_approve_through_sudo() {
    let c = RequestContext {
        launched_by: launched_by("root", Some("alice")),
        ..ctx()
    };
    let e = check("by-host", "web-1", &c, &approve("alice", None), 0).unwrap_err();
    assert_eq!(
        e,
        Refusal::SelfApproval {
            principal: "alice".into(),
            launcher: "alice".into()
        }
    );
}

#[test]
fn a_host_glob_limits_who_counts_as_the_launcher() {
    let c = RequestContext {
        launched_by: launched_by("bob", None),
        ..ctx()
    };
    // bob is "bob@build-*": the launcher on build hosts, another person elsewhere.
    let e = check("by-agent", "build-7", &c, &approve("bob", None), 0).unwrap_err();
    assert!(matches!(e, Refusal::SelfApproval { .. }), "{e}");
    assert_eq!(
        check("by-agent", "web-1", &c, &approve("bob", None), 0),
        Ok(())
    );
}

#[test]
fn the_launcher_may_deny_its_own_agent() {
    let c = RequestContext {
        launched_by: launched_by("alice", None),
        ..ctx()
    };
    assert_eq!(
        check("by-host", "web-1", &c, &deny("alice", None), 0),
        Ok(())
    );
}

#[test]
fn launcher_principals_lists_everyone_the_launcher_is() {
    let c = cfg();
    let labels = BTreeMap::new();
    let context = RequestContext {
        launched_by: launched_by("bob", Some("alice")),
        ..ctx()
    };
    let s = Subject {
        host: "build-1",
        labels: &labels,
        context: &context,
    };
    assert_eq!(launcher_principals(&c, &s), ["alice", "bob"]);
    let s = Subject { host: "web-1", ..s };
    assert_eq!(launcher_principals(&c, &s), ["alice"]);
    let context = ctx();
    let s = Subject {
        context: &context,
        ..s
    };
    assert!(launcher_principals(&c, &s).is_empty());
}

#[test]
fn a_deny_needs_a_reason_where_the_route_says_so() {
    for reason in [None, Some(""), Some("  ")] {
        let e = check("by-agent", "h", &ctx(), &deny("alice", reason), 0).unwrap_err();
        assert_eq!(
            e,
            Refusal::ReasonRequired {
                route: "by-agent".into()
            }
        );
    }
    assert_eq!(
        check(
            "by-agent",
            "h",
            &ctx(),
            &deny("alice", Some("not in prod")),
            0
        ),
        Ok(())
    );
    // Approvals need none, and other routes ask none.
    assert_eq!(
        check("by-agent", "h", &ctx(), &approve("alice", None), 0),
        Ok(())
    );
    assert_eq!(
        check("by-host", "h", &ctx(), &deny("alice", None), 0),
        Ok(())
    );
}

#[test]
fn two_of_two_needs_two_distinct_principals() {
    let a = approve("alice", None);
    assert_eq!(tally(2, std::slice::from_ref(&a), 9), None);
    // The same principal twice is still one approver.
    assert_eq!(tally(2, &[a.clone(), a.clone()], 9), None);
    let d = tally(2, &[a.clone(), a, approve("bob", None)], 9).unwrap();
    assert_eq!(d.release, Release::Allow);
    assert_eq!(d.at_unix_ms, 9);
    assert_eq!(
        d.by,
        Some(Approver {
            uid: 0,
            pid: 0,
            user: None,
            via: "server".into(),
            principal: Some("bob".into()),
        })
    );
}

#[test]
fn one_approval_decides_a_one_of_m_route_and_no_votes_decide_nothing() {
    assert_eq!(tally(1, &[], 9), None);
    assert_eq!(
        tally(1, &[approve("alice", Some(60_000))], 9)
            .unwrap()
            .for_ms,
        Some(60_000)
    );
    // A threshold of 0 never decides without a vote.
    assert_eq!(tally(0, &[], 9), None);
    assert!(tally(0, &[approve("alice", None)], 9).is_some());
}

#[test]
fn one_deny_ends_the_request_with_its_always_and_reason() {
    let mut no = deny("bob", Some("not today"));
    no.always = true;
    let d = tally(3, &[approve("alice", None), no], 9).unwrap();
    assert_eq!(d.release, Release::Deny);
    assert!(d.always);
    assert_eq!(d.for_ms, None);
    assert_eq!(d.reason.as_deref(), Some("not today"));
    assert_eq!(d.by.unwrap().principal.as_deref(), Some("bob"));
}

#[test]
fn the_grant_is_the_most_conservative_asked_for() {
    let votes = [
        approve("alice", Some(3_600_000)),
        approve("bob", Some(600_000)),
    ];
    assert_eq!(tally(2, &votes, 9).unwrap().for_ms, Some(600_000));
    let votes = [approve("alice", Some(3_600_000)), approve("bob", None)];
    assert_eq!(tally(2, &votes, 9).unwrap().for_ms, None);
    let votes = [approve("alice", None), approve("bob", Some(600_000))];
    assert_eq!(tally(2, &votes, 9).unwrap().for_ms, None);
}

#[test]
fn approval_reasons_are_joined() {
    let mut a = approve("alice", None);
    a.reason = Some("checked the diff".into());
    let mut b = approve("bob", None);
    b.reason = Some(" ".into());
    let mut c = approve("carol", None);
    c.reason = Some("ok".into());
    assert_eq!(
        tally(3, &[a.clone(), b.clone(), c], 9)
            .unwrap()
            .reason
            .as_deref(),
        Some("checked the diff; ok")
    );
    assert_eq!(tally(1, &[b], 9).unwrap().reason, None);
    assert_eq!(
        tally(1, &[a], 9).unwrap().reason.as_deref(),
        Some("checked the diff")
    );
}

#[test]
fn refusals_say_who_and_why() {
    assert!(Refusal::NoRoute.to_string().contains("no route"));
    let r = Refusal::ReasonRequired {
        route: "prod".into(),
    };
    assert_eq!(
        r.to_string(),
        "route prod requires a reason to deny (the agent's operator sees it)"
    );
    assert_eq!(human(0), "0s");
    assert_eq!(human(3_600_000 + 1), "1h1s");
}

#[test]
fn votes_through_an_unknown_channel_or_slack_on_a_web_only_route_are_refused() {
    let mut c = cfg();
    let r = c.routes.iter_mut().find(|r| r.name == "by-host").unwrap();
    r.channels = vec![Channel::Cli, Channel::Slack, Channel::Web];
    r.web_only = true;
    let (c, labels) = (c, BTreeMap::new());
    let r = c.routes.iter().find(|r| r.name == "by-host").unwrap();
    let context = ctx();
    let s = Subject {
        host: "web-1",
        labels: &labels,
        context: &context,
    };
    let via = |ch: &str| Vote {
        via: ch.into(),
        ..approve("alice", None)
    };
    assert!(matches!(
        check_vote(&c, r, "alice", &via("slack"), &s, 0, 1),
        Err(Refusal::WebOnly { .. })
    ));
    assert!(matches!(
        check_vote(&c, r, "alice", &via("carrier-pigeon"), &s, 0, 1),
        Err(Refusal::UnknownChannel { .. })
    ));
    assert_eq!(check_vote(&c, r, "alice", &via("web"), &s, 0, 1), Ok(()));
}

#[test]
fn a_provider_only_principal_approves_only_when_the_launcher_is_a_known_other_principal() {
    let c = cfg();
    let r = c.routes.iter().find(|r| r.name == "by-host").unwrap();
    let labels = BTreeMap::new();
    let sre = ["sre".to_string()];
    let mut context = ctx();
    context.launched_by = Some(Launcher {
        uid: 1000,
        user: None,
        sudo_user: None,
        reason: None,
    });
    let run = |context: &RequestContext, v: &Vote| {
        let s = Subject {
            host: "web-1",
            labels: &labels,
            context,
        };
        check_vote_with(&c, r, "erin@example.com", &sre, v, &s, 0, 1)
    };
    // The launcher is alice (a principal): erin is someone else and may approve.
    context.launched_by.as_mut().unwrap().user = Some("alice".into());
    assert_eq!(run(&context, &approve("erin@example.com", None)), Ok(()));
    // The launcher is nobody the config knows: erin may deny, not approve.
    context.launched_by.as_mut().unwrap().user = Some("zed".into());
    assert!(matches!(
        run(&context, &approve("erin@example.com", None)),
        Err(Refusal::LauncherUnknown { .. })
    ));
    assert_eq!(run(&context, &deny("erin@example.com", None)), Ok(()));
    // erin launched it (host user erin, the name before @): refused as self-approval.
    context.launched_by.as_mut().unwrap().user = Some("erin".into());
    assert!(run(&context, &approve("erin@example.com", None)).is_err());
}
