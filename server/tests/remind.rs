//! Reminders and escalation notices (`remind.rs`) on a real server with short delays: a
//! reminder comes once, and not for a decided request; an escalation comes once and its
//! groups may vote from then on; the webhook channel posts both; a request whose host moved
//! to another replica is reminded once in the fleet.
mod receiver;

use std::time::Duration;

use airlock_server::broker::{Change, now_ms};
use airlock_server::testing::{
    DEFAULT_CONFIG, FakeHost, Options, TestServer, approve, new_id, request, wait_stored,
};
use tokio::sync::broadcast;

const T: Duration = Duration::from_secs(10);

/// DEFAULT_CONFIG whose default route has `extra` (indented route keys), with a webhook.
fn config(extra: &str, webhook_url: &str) -> String {
    format!(
        "{}webhook:\n  url: \"{webhook_url}\"\n  secret_file: hook.secret\n",
        DEFAULT_CONFIG.replace(
            "    approvers: [sre, bots]\n",
            &format!("    approvers: [sre, bots]\n    channels: [cli, webhook]\n{extra}"),
        )
    )
}

async fn server(extra: &str, webhook_url: &str) -> TestServer {
    let srv = TestServer::with(Options {
        config: config(extra, webhook_url),
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("hook.secret"), "s3cret").unwrap();
    srv
}

/// A request of `host` opened now that times out `wait` from now.
fn request_waiting(host: &str, wait: Duration) -> airlock_proto::v1::HoldRequest {
    let mut r = request(host, &new_id());
    r.created_unix_ms = now_ms();
    r.deadline_unix_ms = r.created_unix_ms + wait.as_millis() as u64;
    r
}

/// Reminders and escalations seen on `rx` within `t`, as (kind, id, escalation groups).
async fn notices(
    rx: &mut broadcast::Receiver<Change>,
    t: Duration,
) -> Vec<(&'static str, String, Vec<String>)> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + t;
    while let Ok(Ok(c)) = tokio::time::timeout_at(end, rx.recv()).await {
        match c {
            Change::Reminder(r) => out.push(("reminder", r.id, Vec::new())),
            Change::Escalated { request, to } => out.push(("escalated", request.id, to)),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_comes_once_before_the_deadline_and_never_for_a_decided_request() {
    let (url, mut posts) = receiver::start(vec![]).await;
    let srv = server("    reminder: 2s\n", &format!("{url}/hook")).await;
    let mut changes = srv.broker.hub.subscribe();
    let host = srv.host("web-1").await.unwrap();
    // Both time out in 3 s: their reminders are due 1 s after opening.
    let waiting = request_waiting("web-1", Duration::from_secs(3));
    let decided = request_waiting("web-1", Duration::from_secs(3));
    host.opened(waiting.clone()).unwrap();
    host.opened(decided.clone()).unwrap();
    wait_stored(&srv.store, &decided.id, T).await.unwrap();
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice.decide(approve(&decided.id)).await.unwrap();

    // Watched past the deadline: one reminder, for the undecided request only.
    let seen = notices(&mut changes, Duration::from_millis(4000)).await;
    assert_eq!(seen, [("reminder", waiting.id.clone(), vec![])]);

    // The webhook posted it as event "reminder" (after the two "opened").
    let mut events = Vec::new();
    for _ in 0..3 {
        let p = receiver::next(&mut posts, T).await;
        events.push((
            p.header("x-airlock-event").unwrap().to_string(),
            p.json()["request"]["id"].as_str().unwrap().to_string(),
        ));
    }
    events.sort();
    let mut want = vec![
        ("opened".to_string(), waiting.id.clone()),
        ("opened".to_string(), decided.id.clone()),
        ("reminder".to_string(), waiting.id.clone()),
    ];
    want.sort();
    assert_eq!(events, want);
    receiver::none_within(&mut posts, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_comes_once_and_then_its_groups_may_vote() {
    let (url, mut posts) = receiver::start(vec![]).await;
    let srv = server(
        "    escalation: { after: 1s, to: [dba] }\n",
        &format!("{url}/hook"),
    )
    .await;
    let mut changes = srv.broker.hub.subscribe();
    let mut host = srv.host("web-1").await.unwrap();
    let r = request_waiting("web-1", Duration::from_secs(60));
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    // carol is in dba only: not yet.
    let mut carol = srv
        .approver(&srv.issue_token("carol").await.unwrap())
        .await
        .unwrap();
    let early = carol.decide(approve(&r.id)).await.unwrap_err();
    assert!(
        early.message().contains("only after escalation"),
        "{early:?}"
    );

    let seen = notices(&mut changes, Duration::from_millis(2500)).await;
    assert_eq!(seen, [("escalated", r.id.clone(), vec!["dba".to_string()])]);
    let opened = receiver::next(&mut posts, T).await;
    assert_eq!(opened.header("x-airlock-event"), Some("opened"));
    let escalated = receiver::next(&mut posts, T).await;
    assert_eq!(escalated.header("x-airlock-event"), Some("escalated"));
    assert_eq!(escalated.json()["request"]["id"], r.id.as_str());

    carol.decide(approve(&r.id)).await.unwrap();
    let d = host.decision(T).await.unwrap();
    assert_eq!(d.by.unwrap().principal.as_deref(), Some("carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_host_moved_to_another_replica_is_reminded_once_in_the_fleet() {
    let a = server("    reminder: 2s\n", "http://127.0.0.1:9/unused").await;
    let b = TestServer::with(Options {
        config: config("    reminder: 2s\n", "http://127.0.0.1:9/unused"),
        database: Some(a.database.clone()),
        pki_dir: Some(a.pki_dir().to_path_buf()),
        ..Options::default()
    })
    .await
    .unwrap();
    let (mut on_a, mut on_b) = (a.broker.hub.subscribe(), b.broker.hub.subscribe());
    let id = a.enroll("web-1").await.unwrap();
    let host = FakeHost::connect(&a.url, &a.ca_pem, &id).await.unwrap();
    let r = request_waiting("web-1", Duration::from_secs(3));
    host.opened(r.clone()).unwrap();
    wait_stored(&a.store, &r.id, T).await.unwrap();
    // The host moves to replica B and re-sends its pending request there.
    drop(host);
    let moved = FakeHost::connect_with_pending(&b.url, &b.ca_pem, &id, vec![r.id.clone()])
        .await
        .unwrap();
    moved.opened(r.clone()).unwrap();

    let (seen_a, seen_b) = tokio::join!(
        notices(&mut on_a, Duration::from_millis(3500)),
        notices(&mut on_b, Duration::from_millis(3500))
    );
    assert_eq!(seen_a, [], "replica A no longer has the host");
    assert_eq!(seen_b, [("reminder", r.id.clone(), vec![])]);
}
