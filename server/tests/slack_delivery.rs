//! The Slack channel's delivery against fake Slacks on loopback: a post retried through an
//! outage (5xx, 429 with Retry-After, a retryable error) while the CLI decides; a replica
//! starting later posts what was never posted, and updates use the stored message; the store's
//! message table on SQLite and PostgreSQL.
use std::time::Duration;

use airlock_approval::RequestState;
use airlock_server::testing::slack::{Failure, FakeSlack};
use airlock_server::testing::{
    Options, TempDir, TestServer, closed_by, new_id, request, wait_stored,
};

// Shared with the store suites; not every helper is used here.
#[allow(dead_code)]
#[macro_use]
mod common;
mod slack_support;
use slack_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_that_fails_is_retried_until_slack_answers_and_the_cli_decides_meanwhile() {
    let fake = FakeSlack::start().await.unwrap();
    fake.fail("chat.postMessage", 2, Failure::Status(500, None));
    fake.fail("chat.postMessage", 1, Failure::Status(429, Some(1)));
    fake.fail("chat.postMessage", 1, Failure::Error("service_unavailable"));
    let tokens = TempDir::new("airlock-slack-tokens").unwrap();
    let srv = TestServer::with(Options {
        config: config(&fake, &tokens, Mode::Socket, false),
        ..Options::default()
    })
    .await
    .unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    wait_recorded(
        &srv,
        Some(&r.id),
        "server UNAVAILABLE message not posted, retrying",
    )
    .await;
    let calls = fake
        .wait_calls("chat.postMessage", 5, Duration::from_secs(20))
        .await;
    // Every attempt posts the same message.
    assert!(calls.iter().all(|c| c.body == calls[0].body));
    let ts = ts_of(&srv.store, &r.id).await;
    assert!(!ts.is_empty());
    // The 429 asked for a second: the attempt after it waited at least that.
    assert!(calls[3].at - calls[2].at >= Duration::from_secs(1));

    // Meanwhile and after, the CLI decides as always.
    let token = srv.issue_token("bob").await.unwrap();
    let mut cli = srv.approver(&token).await.unwrap();
    cli.decide(airlock_server::testing::approve(&r.id))
        .await
        .unwrap();
    let d = host.decision(T).await.unwrap();
    host.outcome(closed_by(&r, &d)).unwrap();
    let up = fake.wait_calls("chat.update", 1, T).await;
    assert_eq!(up[0].body["ts"], ts.as_str());
    assert_eq!(
        fake.calls("chat.postMessage")
            .iter()
            .filter(|c| c.body.get("thread_ts").is_none())
            .count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_starting_posts_what_was_never_posted_and_updates_use_the_stored_message() {
    // Replica A cannot reach its Slack; B, started later on the same database, can.
    let fake_a = FakeSlack::start().await.unwrap();
    fake_a.fail("chat.postMessage", 10_000, Failure::Status(503, None));
    let tokens_a = TempDir::new("airlock-slack-tokens").unwrap();
    let a = TestServer::with(Options {
        config: config(&fake_a, &tokens_a, Mode::Socket, false),
        ..Options::default()
    })
    .await
    .unwrap();
    let mut host = a.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&a.store, &r.id, T).await.unwrap();
    fake_a.wait_calls("chat.postMessage", 1, T).await;

    let fake_b = FakeSlack::start().await.unwrap();
    let tokens_b = TempDir::new("airlock-slack-tokens").unwrap();
    let b = TestServer::with(Options {
        config: config(&fake_b, &tokens_b, Mode::Socket, false),
        database: Some(a.database.clone()),
        pki_dir: Some(a.pki_dir().to_path_buf()),
        ..Options::default()
    })
    .await
    .unwrap();
    let posted = fake_b
        .wait_calls("chat.postMessage", 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        posted[0].body["blocks"][5]["elements"][0]["value"],
        r.id.as_str()
    );
    let ts = ts_of(&b.store, &r.id).await;
    // A stops trying once the message exists.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = fake_a.calls("chat.postMessage").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake_a.calls("chat.postMessage").len(), tries);
    assert_eq!(fake_b.calls("chat.postMessage").len(), 1);

    // Closed on A (where its host is linked): A updates the message B posted.
    let token = b.issue_token("bob").await.unwrap();
    b.approver(&token)
        .await
        .unwrap()
        .decide(airlock_server::testing::approve(&r.id))
        .await
        .unwrap();
    let d = host.decision(T).await.unwrap();
    host.outcome(closed_by(&r, &d)).unwrap();
    let up = fake_a.wait_calls("chat.update", 1, T).await;
    assert_eq!(
        (up[0].body["channel"].as_str(), up[0].body["ts"].as_str()),
        (Some(CHANNEL), Some(ts.as_str()))
    );
}

cases!(claims_are_exclusive_released_and_the_backlog_lists_what_is_left);

/// The message table on both databases: one poster at a time, a released or stale claim can
/// be taken again, a posted message is final, and the backlog finds unposted pending requests
/// and posted messages of closed ones.
async fn claims_are_exclusive_released_and_the_backlog_lists_what_is_left(db: common::Db) {
    let s = db.open().await;
    let now = airlock_server::broker::now_ms();
    let open_one = |id: String| {
        let s = s.clone();
        async move {
            let p = airlock_server::wire::stored_from_opened("web-1", request("web-1", &id), now)
                .unwrap();
            let mut row = p.request;
            row.route = Some("default".into());
            s.upsert_opened(&row).await.unwrap();
            id
        }
    };
    let a = open_one(new_id()).await;
    let b = open_one(new_id()).await;
    assert!(s.slack_claim(&a, now, now - 60_000).await.unwrap());
    assert!(
        !s.slack_claim(&a, now + 1, now - 60_000).await.unwrap(),
        "claimed twice"
    );
    // A claim older than the stale mark is taken over (its replica died mid-post).
    assert!(s.slack_claim(&a, now + 2, now + 1).await.unwrap());
    s.slack_release(&a).await.unwrap();
    let (unposted, _) = s.slack_backlog(now - 60_000, 100).await.unwrap();
    // Both opened in the same millisecond: their order between themselves is the ids' random
    // part, so compare as sets.
    let mut listed: Vec<&str> = unposted.iter().map(|(id, _)| id.as_str()).collect();
    listed.sort_unstable();
    let mut want = [a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(listed, want);
    assert!(
        unposted
            .iter()
            .all(|(_, r)| r.as_deref() == Some("default"))
    );
    assert!(s.slack_claim(&a, now + 3, now - 60_000).await.unwrap());
    s.slack_posted(&a, CHANNEL, "1700000000.000100", now + 4)
        .await
        .unwrap();
    assert!(
        !s.slack_claim(&a, now + 5, now + 100_000).await.unwrap(),
        "posted is final"
    );
    let m = s.slack_message(&a).await.unwrap().unwrap();
    assert_eq!(
        (m.channel.as_str(), m.ts.as_str(), m.closed_unix_ms),
        (CHANNEL, "1700000000.000100", None)
    );
    assert_eq!(s.slack_message(&b).await.unwrap(), None);
    let (unposted, unfinished) = s.slack_backlog(now - 60_000, 100).await.unwrap();
    assert_eq!(
        unposted
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        [b.as_str()]
    );
    assert!(unfinished.is_empty());
    s.close(&a, "web-1", RequestState::Abandoned, None, now + 6)
        .await
        .unwrap();
    let (_, unfinished) = s.slack_backlog(now - 60_000, 100).await.unwrap();
    assert_eq!(unfinished, std::slice::from_ref(&a));
    s.slack_closed(&a, now + 7).await.unwrap();
    let (_, unfinished) = s.slack_backlog(now - 60_000, 100).await.unwrap();
    assert!(unfinished.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reminders_and_escalations_are_thread_replies_and_escalations_mention_the_group() {
    let env = start(Mode::Socket, false).await;
    let host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    open(&env, &host, &r).await;
    let ts = ts_of(&env.srv.store, &r.id).await;
    let stored = env.srv.store.request(&r.id).await.unwrap().unwrap();
    let hub = &env.srv.broker.hub;
    hub.publish(airlock_server::broker::Change::Reminder(stored.clone()));
    let replies = env.fake.wait_calls("chat.postMessage", 2, T).await;
    assert_eq!(replies[1].body["thread_ts"], ts.as_str());
    let text = replies[1].body["text"].as_str().unwrap();
    assert!(text.starts_with(":alarm_clock: Reminder:"), "{text}");
    hub.publish(airlock_server::broker::Change::Escalated {
        request: stored,
        to: vec!["dba".into()],
    });
    let replies = env.fake.wait_calls("chat.postMessage", 3, T).await;
    assert_eq!(
        replies[2].body["text"],
        ":rotating_light: Escalated: members of dba may decide now: <@U0CAROL>"
    );
    assert_eq!(replies[2].body["thread_ts"], ts.as_str());
}
