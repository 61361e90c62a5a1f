//! The Slack channel's clicks against a fake Slack on loopback (`testing::slack::FakeSlack`):
//! the message's exact shape, votes by button and modal over Socket Mode and HTTP
//! interactivity, refusals (ephemeral reply + record), the final update, web-only routes and
//! Socket Mode reconnects. Delivery through outages and restarts: `slack_delivery.rs`.
use std::time::Duration;

use airlock_server::slack::{APPROVE, APPROVE_15M, DENY};
use airlock_server::testing::slack::{FakeSlack, click, deny_submission};
use airlock_server::testing::{TestServer, closed_by, context, new_id, request, request_with};
use serde_json::{Value, json};

mod slack_support;
use slack_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_posted_with_its_context_and_buttons_and_approve_decides_it() {
    let env = start(Mode::Socket, false).await;
    let mut host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    let post = open(&env, &host, &r).await;
    assert_eq!(post.auth.as_deref(), Some("Bearer xoxb-test-bot"));
    let b = &post.body;
    assert_eq!(b["channel"], CHANNEL);
    assert_eq!(
        b["text"],
        "airlock: claude wants exec /usr/bin/kubectl on web-1"
    );
    assert_eq!(b["unfurl_links"], false);
    let kinds: Vec<&str> = b["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "header", "section", "section", "section", "context", "actions"
        ]
    );
    assert_eq!(
        b["blocks"][0]["text"],
        json!({"type": "plain_text", "text": "exec /usr/bin/kubectl"})
    );
    let fields: Vec<&str> = b["blocks"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields[..7],
        [
            "*Host*\nweb-1",
            "*Agent*\nclaude",
            "*Launched by*\ndave",
            "*Operation*\nexec",
            "*Target*\n/usr/bin/kubectl",
            "*Rule*\nkubectl-exec (policy prod)",
            "*Working directory*\n/home/dave/src/app",
        ]
    );
    assert!(
        fields[7].starts_with(&format!(
            "*Deadline*\n<!date^{}^",
            r.deadline_unix_ms / 1000
        )),
        "{}",
        fields[7]
    );
    assert_eq!(fields[8], "*Approvals needed*\n1");
    assert_eq!(
        b["blocks"][2]["text"]["text"],
        "*Command*\n```kubectl apply -f deploy/prod.yaml```"
    );
    assert_eq!(
        b["blocks"][3]["text"]["text"],
        "*Agent's reason*\nroll out the hotfix"
    );
    let actions = &b["blocks"][5];
    assert_eq!(actions["block_id"], "airlock_decide");
    assert_eq!(
        actions["elements"],
        json!([
            {"type": "button", "action_id": APPROVE, "text": {"type": "plain_text", "text": "Approve"}, "value": r.id, "style": "primary"},
            {"type": "button", "action_id": APPROVE_15M, "text": {"type": "plain_text", "text": "Approve 15m"}, "value": r.id},
            {"type": "button", "action_id": DENY, "text": {"type": "plain_text", "text": "Deny"}, "value": r.id, "style": "danger"},
        ])
    );
    let ts = ts_of(&env.srv.store, &r.id).await;

    let env_id = env
        .fake
        .interactive(click(BOB, APPROVE, &r.id, CHANNEL, &ts));
    let d = host.decision(T).await.unwrap();
    assert!(matches!(
        d.decide.as_ref().and_then(|x| x.decision.as_ref()),
        Some(airlock_proto::v1::decide_request::Decision::Approve(a)) if a.for_ms.is_none()
    ));
    assert_eq!(d.by.as_ref().unwrap().principal.as_deref(), Some("bob"));
    assert_eq!(
        d.votes.iter().map(|v| v.via.as_str()).collect::<Vec<_>>(),
        ["slack"]
    );
    // Acknowledged before anything else happened for it; the vote is posted in the thread.
    let acks = env.fake.wait_calls("ack", 1, T).await;
    assert_eq!(acks[0].body, json!({"envelope_id": env_id}));
    let replies = env.fake.wait_calls("chat.postMessage", 2, T).await;
    assert!(acks[0].seq < replies[1].seq);
    assert_eq!(
        replies[1].body,
        json!({"channel": CHANNEL, "thread_ts": ts, "text": "bob approved (via slack; 1 of 1 approvals)", "unfurl_links": false})
    );

    host.outcome(closed_by(&r, &d)).unwrap();
    let up = env.fake.wait_calls("chat.update", 1, T).await;
    let u = &up[0].body;
    assert_eq!(
        (u["channel"].as_str(), u["ts"].as_str()),
        (Some(CHANNEL), Some(ts.as_str()))
    );
    assert!(blocks_of(u, "actions").is_empty(), "buttons removed: {u}");
    let last = u["blocks"].as_array().unwrap().last().unwrap();
    assert_eq!(last["text"]["text"], ":white_check_mark: *Approved* by bob");
    let deadline = tokio::time::Instant::now() + T;
    while env
        .srv
        .store
        .slack_message(&r.id)
        .await
        .unwrap()
        .unwrap()
        .closed_unix_ms
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approve_15m_grants_fifteen_minutes_and_the_update_says_so() {
    let env = start(Mode::Socket, false).await;
    let mut host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    open(&env, &host, &r).await;
    let ts = ts_of(&env.srv.store, &r.id).await;
    env.fake
        .interactive(click(BOB, APPROVE_15M, &r.id, CHANNEL, &ts));
    let d = host.decision(T).await.unwrap();
    assert!(matches!(
        d.decide.as_ref().and_then(|x| x.decision.as_ref()),
        Some(airlock_proto::v1::decide_request::Decision::Approve(a)) if a.for_ms == Some(900_000)
    ));
    host.outcome(closed_by(&r, &d)).unwrap();
    let up = env.fake.wait_calls("chat.update", 1, T).await;
    let last = up[0].body["blocks"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["text"]["text"],
        ":white_check_mark: *Approved for 15m* by bob"
    );
    let replies = env.fake.wait_calls("chat.postMessage", 2, T).await;
    assert_eq!(
        replies[1].body["text"],
        "bob approved for 15m (via slack; 1 of 1 approvals)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deny_opens_a_modal_whose_submission_denies_with_the_reason() {
    let env = start(Mode::Socket, false).await;
    let mut host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    open(&env, &host, &r).await;
    let ts = ts_of(&env.srv.store, &r.id).await;
    env.fake.interactive(click(BOB, DENY, &r.id, CHANNEL, &ts));
    let views = env.fake.wait_calls("views.open", 1, T).await;
    let v = &views[0].body;
    assert_eq!(v["trigger_id"], "1234.5678.trigger");
    assert_eq!(v["view"]["type"], "modal");
    assert_eq!(v["view"]["callback_id"], airlock_server::slack::DENY_MODAL);
    let meta = v["view"]["private_metadata"].as_str().unwrap().to_string();
    assert_eq!(
        serde_json::from_str::<Value>(&meta).unwrap(),
        json!({"id": r.id, "channel": CHANNEL, "ts": ts})
    );
    let input = &v["view"]["blocks"][1];
    assert_eq!(
        (
            input["type"].as_str(),
            input["block_id"].as_str(),
            input["optional"].as_bool()
        ),
        (Some("input"), Some("reason"), Some(true))
    );
    assert_eq!(input["element"]["action_id"], "reason");
    // Opening the modal is not a vote.
    assert!(
        env.srv
            .store
            .request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .votes
            .is_empty()
    );

    env.fake
        .interactive(deny_submission(BOB, &meta, "not during the freeze"));
    let d = host.decision(T).await.unwrap();
    match d.decide.as_ref().and_then(|x| x.decision.as_ref()) {
        Some(airlock_proto::v1::decide_request::Decision::Deny(n)) => {
            assert_eq!(n.reason, "not during the freeze");
            assert!(!n.always);
        }
        other => panic!("expected a deny, got {other:?}"),
    }
    host.outcome(closed_by(&r, &d)).unwrap();
    let up = env.fake.wait_calls("chat.update", 1, T).await;
    let last = up[0].body["blocks"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["text"]["text"],
        ":no_entry: *Denied* by bob: not during the freeze"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmapped_users_self_approval_and_closed_requests_are_refused_ephemerally_and_recorded() {
    let env = start(Mode::Socket, false).await;
    let mut host = env.srv.host("web-1").await.unwrap();
    let mut ctx = context("web-1");
    ctx.launched_by.as_mut().unwrap().user = Some("alice".into());
    let r = request_with(&new_id(), &ctx);
    open(&env, &host, &r).await;
    let ts = ts_of(&env.srv.store, &r.id).await;

    env.fake
        .interactive(click("U0NOBODY", APPROVE, &r.id, CHANNEL, &ts));
    let m = wait_recorded(&env.srv, Some(&r.id), "U0NOBODY PERMISSION_DENIED").await;
    assert!(m.contains("not mapped to an airlock principal"), "{m}");
    let eph = env.fake.wait_calls("chat.postEphemeral", 1, T).await;
    assert_eq!(eph[0].body["channel"], CHANNEL);
    assert_eq!(eph[0].body["user"], "U0NOBODY");
    assert_eq!(eph[0].body["thread_ts"], ts.as_str());
    assert!(
        eph[0].body["text"]
            .as_str()
            .unwrap()
            .contains("is not mapped"),
        "{}",
        eph[0].body
    );

    // alice launched this agent: she may not approve it.
    env.fake
        .interactive(click(ALICE, APPROVE, &r.id, CHANNEL, &ts));
    let m = wait_recorded(&env.srv, Some(&r.id), "alice PERMISSION_DENIED").await;
    assert!(m.contains("launched this agent"), "{m}");
    let eph = env.fake.wait_calls("chat.postEphemeral", 2, T).await;
    assert_eq!(eph[1].body["user"], ALICE);
    assert!(
        eph[1].body["text"]
            .as_str()
            .unwrap()
            .contains("launched this agent")
    );
    assert!(
        env.srv
            .store
            .request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .votes
            .is_empty()
    );

    // Decided and closed from the CLI's side; a later click is refused.
    let d = {
        env.fake
            .interactive(click(BOB, APPROVE, &r.id, CHANNEL, &ts));
        host.decision(T).await.unwrap()
    };
    host.outcome(closed_by(&r, &d)).unwrap();
    wait_closed(&env.srv.store, &r.id).await;
    env.fake
        .interactive(click("U0CAROL", DENY, &r.id, CHANNEL, &ts));
    let m = wait_recorded(&env.srv, Some(&r.id), "carol FAILED_PRECONDITION").await;
    assert!(m.contains("already approved"), "{m}");
    let eph = env.fake.wait_calls("chat.postEphemeral", 3, T).await;
    assert_eq!(eph[2].body["user"], "U0CAROL");
    // A repeat of bob's own click (Slack redelivered it) changes nothing and is not refused.
    env.fake
        .interactive(click(BOB, APPROVE, &r.id, CHANNEL, &ts));
    env.fake.wait_calls("ack", 5, T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.fake.calls("chat.postEphemeral").len(), 3);
    assert!(views_none(&env.fake));
}

fn views_none(fake: &FakeSlack) -> bool {
    fake.calls("views.open").is_empty()
}

/// Signs `body` as Slack does at `t` with `secret`.
fn slack_signature(secret: &str, t: u64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{t}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// POSTs `payload` to the interactivity endpoint signed at `t` with `secret`; the status.
async fn interactivity(srv: &TestServer, payload: &Value, secret: &str, t: u64) -> u16 {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    reqwest::Client::new()
        .post(format!("{}/v1/slack/interactivity", srv.http_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", t.to_string())
        .header("X-Slack-Signature", slack_signature(secret, t, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn now_s() -> u64 {
    airlock_server::broker::now_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_interactivity_checks_slacks_signature_and_refuses_bad_and_replayed_ones() {
    let env = start(Mode::Http, false).await;
    let mut host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    open(&env, &host, &r).await;
    let ts = ts_of(&env.srv.store, &r.id).await;
    let approve = click(BOB, APPROVE, &r.id, CHANNEL, &ts);

    assert_eq!(
        interactivity(&env.srv, &approve, "not-the-secret", now_s()).await,
        401
    );
    assert_eq!(
        interactivity(&env.srv, &approve, SIGNING, now_s() - 301).await,
        401
    );
    let anonymous = recorded(&env.srv, None).await;
    assert_eq!(
        anonymous
            .iter()
            .filter(|m| m.starts_with("unknown UNAUTHENTICATED signature"))
            .count(),
        2,
        "{anonymous:#?}"
    );
    // Nobody named by an unauthenticated call is answered, and nothing was decided.
    assert!(env.fake.calls("chat.postEphemeral").is_empty());
    assert!(
        env.srv
            .store
            .request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .votes
            .is_empty()
    );

    assert_eq!(
        interactivity(&env.srv, &approve, SIGNING, now_s()).await,
        200
    );
    let d = host.decision(T).await.unwrap();
    assert_eq!(d.by.as_ref().unwrap().principal.as_deref(), Some("bob"));
    // Slack retries a click whose answer it missed: the same vote again changes nothing.
    assert_eq!(
        interactivity(&env.srv, &approve, SIGNING, now_s()).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.srv
            .store
            .request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .votes
            .len(),
        1
    );
    assert!(env.fake.calls("chat.postEphemeral").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_only_messages_link_to_the_page_without_buttons_and_refuse_forged_clicks() {
    let env = start(Mode::Socket, true).await;
    let host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    let post = open(&env, &host, &r).await;
    assert!(blocks_of(&post.body, "actions").is_empty(), "{}", post.body);
    let last = post.body["blocks"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["text"]["text"].as_str().unwrap(),
        format!(
            "Decide on the web page: <https://airlock.example.com/requests/{}|open request {}>",
            r.id, r.id
        )
    );
    let ts = ts_of(&env.srv.store, &r.id).await;
    env.fake
        .interactive(click(BOB, APPROVE, &r.id, CHANNEL, &ts));
    let m = wait_recorded(&env.srv, Some(&r.id), "bob PERMISSION_DENIED").await;
    assert!(m.contains("decided on the web page"), "{m}");
    let eph = env.fake.wait_calls("chat.postEphemeral", 1, T).await;
    assert_eq!(eph[0].body["user"], BOB);
    assert!(
        env.srv
            .store
            .request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .votes
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socket_mode_reconnects_with_a_fresh_url_when_told_to_and_after_a_cut() {
    let env = start(Mode::Socket, false).await;
    assert_eq!(
        env.fake.calls("apps.connections.open")[0].auth.as_deref(),
        Some("Bearer xapp-test-app")
    );
    env.fake.disconnect();
    env.fake.wait_connections(2, T).await;
    assert_eq!(env.fake.calls("apps.connections.open").len(), 2);
    env.fake.cut();
    env.fake.wait_connections(3, T).await;
    assert_eq!(env.fake.calls("apps.connections.open").len(), 3);
    // The new connection works: a click on it decides.
    let mut host = env.srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    open(&env, &host, &r).await;
    let ts = ts_of(&env.srv.store, &r.id).await;
    let id = env
        .fake
        .interactive(click(BOB, APPROVE, &r.id, CHANNEL, &ts));
    host.decision(T).await.unwrap();
    assert!(
        env.fake
            .calls("ack")
            .iter()
            .any(|a| a.body["envelope_id"] == id.as_str())
    );
}
