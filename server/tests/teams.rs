//! The Microsoft Teams channel against a fake Workflows trigger on loopback: the exact
//! Adaptive Card posted when a request of a `teams` route opens (facts of its context, one
//! `Action.OpenUrl` to its web page), the follow-up card for each outcome, retries after
//! 500s, and a final failure recorded with the URL's origin only.
mod receiver;

use std::time::Duration;

use airlock_proto::v1 as pb;
use airlock_server::broker::utc;
use airlock_server::testing::{
    DEFAULT_CONFIG, FakeHost, Options, TestServer, approve, closed_by, deny, new_id, request,
    wait_stored,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
/// The path and query of the fake trigger: the query's `sig` is the credential.
const TRIGGER: &str = "/workflows/abc123/triggers/manual/paths/invoke?api-version=1&sig=SeCrEt";
const PAGE: &str = "https://airlock.example.com";

/// DEFAULT_CONFIG with the web page and Teams, its default route announcing on Teams.
fn config() -> String {
    format!(
        "http_listen: \"127.0.0.1:0\"\nweb:\n  public_url: {PAGE}\nteams:\n  webhook_url_file: teams.url\n{}",
        DEFAULT_CONFIG.replace(
            "    approvers: [sre, bots]\n",
            "    approvers: [sre, bots]\n    channels: [cli, teams, web]\n"
        )
    )
}

/// A server whose Teams URL file points at a fake trigger answering `statuses` first.
async fn setup(
    statuses: Vec<u16>,
) -> (
    TestServer,
    FakeHost,
    tokio::sync::mpsc::UnboundedReceiver<receiver::Post>,
    String,
) {
    let (base, posts) = receiver::start(statuses).await;
    let srv = TestServer::with(Options {
        config: config(),
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("teams.url"), format!("{base}{TRIGGER}\n")).unwrap();
    let host = srv.host("web-1").await.unwrap();
    (srv, host, posts, base)
}

/// The Workflows envelope around one card.
fn envelope(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": card,
        }]
    })
}

fn card(title: &str, lines: &[&str], facts: Value, button: &str, id: &str) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": title, "wrap": true,
    })];
    for l in lines {
        body.push(json!({ "type": "TextBlock", "text": l, "wrap": true }));
    }
    body.push(json!({ "type": "FactSet", "facts": facts }));
    envelope(json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [{
            "type": "Action.OpenUrl",
            "title": button,
            "url": format!("{PAGE}/requests/{id}"),
        }],
    }))
}

/// The follow-up card of request `id` (testing::context's kubectl exec) with `outcome`.
fn closed_card(id: &str, outcome: &str) -> Value {
    card(
        &format!("exec /usr/bin/kubectl: {outcome}"),
        &[],
        json!([
            { "title": "Host", "value": "web-1" },
            { "title": "Agent", "value": "claude" },
            { "title": "Outcome", "value": outcome },
        ]),
        "Open request",
        id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_request_posts_the_exact_card_linking_to_its_page_and_retries_after_500s() {
    let (srv, mut host, mut posts, _) = setup(vec![500, 500]).await;
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();

    let expected = card(
        "Approval needed: exec /usr/bin/kubectl",
        &[],
        json!([
            { "title": "Host", "value": "web-1" },
            { "title": "Agent", "value": "claude" },
            { "title": "Launched by", "value": "dave: deploy the fix" },
            { "title": "Agent's reason", "value": "roll out the hotfix" },
            { "title": "Operation", "value": "exec" },
            { "title": "Target", "value": "/usr/bin/kubectl" },
            { "title": "Rule", "value": "kubectl-exec (policy prod)" },
            { "title": "Command", "value": "kubectl apply -f deploy/prod.yaml" },
            { "title": "Working directory", "value": "/home/dave/src/app" },
            { "title": "Deadline", "value": utc(r.deadline_unix_ms) },
            { "title": "Votes needed", "value": "1" },
        ]),
        "Open to approve",
        &r.id,
    );
    // Two 500s, then delivered: the same card three times, to the configured URL.
    for _ in 0..3 {
        let p = receiver::next(&mut posts, T).await;
        assert_eq!(p.uri, TRIGGER);
        assert_eq!(p.header("content-type"), Some("application/json"));
        assert_eq!(p.json(), expected);
    }
    receiver::none_within(&mut posts, Duration::from_millis(1500)).await;

    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice.decide(approve(&r.id)).await.unwrap();
    let d = host.decision(T).await.unwrap();
    host.outcome(closed_by(&r, &d)).unwrap();
    let p = receiver::next(&mut posts, T).await;
    assert_eq!(p.json(), closed_card(&r.id, "approved by alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_gets_a_follow_up_card_saying_who_decided_what() {
    let (srv, mut host, mut posts, _) = setup(vec![]).await;
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();

    // Approved for a duration.
    let a = request("web-1", &new_id());
    host.opened(a.clone()).unwrap();
    receiver::next(&mut posts, T).await;
    let mut d = approve(&a.id);
    if let Some(pb::decide_request::Decision::Approve(x)) = d.decision.as_mut() {
        x.for_ms = Some(15 * 60_000);
    }
    alice.decide(d).await.unwrap();
    let dec = host.decision(T).await.unwrap();
    host.outcome(closed_by(&a, &dec)).unwrap();
    assert_eq!(
        receiver::next(&mut posts, T).await.json(),
        closed_card(&a.id, "approved by alice for 15m")
    );

    // Denied with a reason.
    let b = request("web-1", &new_id());
    host.opened(b.clone()).unwrap();
    receiver::next(&mut posts, T).await;
    alice
        .decide(deny(&b.id, "not during the freeze"))
        .await
        .unwrap();
    let dec = host.decision(T).await.unwrap();
    host.outcome(closed_by(&b, &dec)).unwrap();
    assert_eq!(
        receiver::next(&mut posts, T).await.json(),
        closed_card(&b.id, "denied by alice: not during the freeze")
    );

    // Timed out and abandoned: the host reports them, nobody decided.
    for (state, outcome) in [
        (
            pb::RequestState::TimedOut,
            "timed out (denied per the rule)",
        ),
        (
            pb::RequestState::Abandoned,
            "abandoned (every held process is gone)",
        ),
    ] {
        let c = request("web-1", &new_id());
        host.opened(c.clone()).unwrap();
        receiver::next(&mut posts, T).await;
        host.outcome(pb::HoldRequest {
            state: state as i32,
            ..c.clone()
        })
        .unwrap();
        assert_eq!(
            receiver::next(&mut posts, T).await.json(),
            closed_card(&c.id, outcome)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_is_recorded_naming_the_urls_origin_only() {
    // 404: not worth retrying, so the failure is final at once.
    let (srv, host, mut posts, base) = setup(vec![404]).await;
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    receiver::next(&mut posts, T).await;
    let deadline = tokio::time::Instant::now() + T;
    let rec = loop {
        let all = srv.store.attempts(50).await.unwrap();
        if let Some(a) = all
            .into_iter()
            .find(|a| a.channel == "teams" && a.action == "deliver")
        {
            break a;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rec.request_id.as_deref(), Some(r.id.as_str()));
    assert_eq!(rec.result, "UNAVAILABLE");
    assert_eq!(
        rec.message,
        format!("opened not delivered to {base}: HTTP 404 Not Found")
    );
    assert!(!rec.message.contains("SeCrEt") && !rec.message.contains("workflows"));
    receiver::none_within(&mut posts, Duration::from_millis(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_teams_posts_no_card() {
    let (base, mut posts) = receiver::start(vec![]).await;
    // Teams configured, but no route names it.
    let cfg = config().replace("    channels: [cli, teams, web]\n", "");
    let srv = TestServer::with(Options {
        config: cfg,
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("teams.url"), format!("{base}{TRIGGER}")).unwrap();
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    receiver::none_within(&mut posts, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_and_an_escalation_each_post_a_card_linking_to_the_page() {
    let (base, mut posts) = receiver::start(vec![]).await;
    let cfg = config().replace(
        "    channels: [cli, teams, web]\n",
        "    channels: [cli, teams, web]\n    reminder: 2s\n    escalation: { after: 1s, to: [dba] }\n",
    );
    let srv = TestServer::with(Options {
        config: cfg,
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("teams.url"), format!("{base}{TRIGGER}")).unwrap();
    let host = srv.host("web-1").await.unwrap();
    let mut r = request("web-1", &new_id());
    // Times out 3 s from now: both notices are due after 1 s.
    r.created_unix_ms = airlock_server::broker::now_ms();
    r.deadline_unix_ms = r.created_unix_ms + 3000;
    host.opened(r.clone()).unwrap();
    let mut cards: Vec<Value> = Vec::new();
    for _ in 0..3 {
        cards.push(receiver::next(&mut posts, T).await.json());
    }
    let title = |v: &Value| v["attachments"][0]["content"]["body"][0]["text"].clone();
    cards.sort_by_key(|v| title(v).to_string());
    assert_eq!(
        title(&cards[0]),
        "Approval needed: exec /usr/bin/kubectl",
        "{cards:?}"
    );
    let facts = cards[0]["attachments"][0]["content"]["body"][1]["facts"].clone();
    assert_eq!(
        cards[1],
        card(
            "Escalated to dba: exec /usr/bin/kubectl",
            &["Nobody decided in time; members of dba may decide it now."],
            facts.clone(),
            "Open to approve",
            &r.id,
        )
    );
    assert_eq!(
        cards[2],
        card(
            "Reminder: still waiting for approval: exec /usr/bin/kubectl",
            &[&format!(
                "Undecided; the deadline is {}.",
                utc(r.deadline_unix_ms)
            )],
            facts,
            "Open to approve",
            &r.id,
        )
    );
    receiver::none_within(&mut posts, Duration::from_millis(2500)).await;
}
