//! The webhook's decision callback (`POST /v1/webhook/decision` on the HTTP listener): a signed
//! call by the receiver decides for a principal under the same rules as every channel; bad
//! or stale signatures, bad bodies, ineligible principals and decisions on closed requests
//! are refused with the right status and recorded; a retried call changes nothing.
use std::time::Duration;

use airlock_server::signing::{WEBHOOK_HEADER, sign_webhook};
use airlock_server::testing::{Options, TestServer, closed_by, new_id, request, wait_stored};

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "callback-secret";

/// DEFAULT_CONFIG with a webhook; its default route takes webhook decisions when
/// `channel` is set.
fn config(channel: bool) -> String {
    let base = airlock_server::testing::DEFAULT_CONFIG;
    let routes = if channel {
        base.replace(
            "    approvers: [sre, bots]\n",
            "    approvers: [sre, bots]\n    channels: [cli, webhook]\n",
        )
    } else {
        base.to_string()
    };
    format!("{routes}webhook:\n  url: \"http://127.0.0.1:9/unused\"\n  secret_file: hook.secret\n")
}

async fn server() -> TestServer {
    server_with(true).await
}

async fn server_with(channel: bool) -> TestServer {
    let srv = TestServer::with(Options {
        config: config(channel),
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("hook.secret"), SECRET).unwrap();
    srv
}

fn now_s() -> u64 {
    airlock_server::broker::now_ms() / 1000
}

/// POSTs `body` signed with `secret` at `t`; returns (status, JSON answer).
async fn call(srv: &TestServer, body: &str, secret: &str, t: u64) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/webhook/decision", srv.http_url()))
        .header(
            WEBHOOK_HEADER,
            sign_webhook(secret.as_bytes(), body.as_bytes(), t),
        )
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, v)
}

async fn recorded(srv: &TestServer, id: Option<&str>) -> Vec<String> {
    srv.store
        .attempts(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.channel == "webhook" && a.request_id.as_deref() == id)
        .map(|a| format!("{} {} {}", a.who, a.result, a.message))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_callback_decides_for_an_eligible_principal_and_a_retry_changes_nothing() {
    let srv = server().await;
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();

    let body = format!(
        r#"{{"id":"{}","principal":"bob","decision":"deny","reason":"not now"}}"#,
        r.id
    );
    let (status, v) = call(&srv, &body, SECRET, now_s()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decided"], true);
    let d = host.decision(T).await.unwrap();
    let by = d.by.clone().unwrap();
    assert_eq!(
        (by.principal.as_deref(), by.via.as_str()),
        (Some("bob"), "server")
    );
    // The vote says which channel it came through.
    assert_eq!(
        d.votes
            .iter()
            .map(|v| (v.principal.as_str(), v.via.as_str()))
            .collect::<Vec<_>>(),
        [("bob", "webhook")]
    );

    // The receiver retries the same call (it did not see the answer): same answer, no change.
    let (status, again) = call(&srv, &body, SECRET, now_s()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["votes"].as_array().unwrap().len(), 1);

    // Once the host closed it, another principal's decision is a conflict.
    host.outcome(closed_by(&r, &d)).unwrap();
    let t0 = std::time::Instant::now();
    while srv.store.request(&r.id).await.unwrap().unwrap().state
        == airlock_approval::RequestState::Pending
    {
        assert!(t0.elapsed() < T);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = format!(
        r#"{{"id":"{}","principal":"alice","decision":"approve"}}"#,
        r.id
    );
    let (status, v) = call(&srv, &late, SECRET, now_s()).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["code"], "FAILED_PRECONDITION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_bodies_and_principals_are_refused_and_recorded() {
    let srv = server().await;
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let ok = format!(
        r#"{{"id":"{}","principal":"alice","decision":"approve"}}"#,
        r.id
    );

    // Wrong secret, and a replay older than the window.
    assert_eq!(call(&srv, &ok, "other-secret", now_s()).await.0, 401);
    assert_eq!(call(&srv, &ok, SECRET, now_s() - 301).await.0, 401);
    // Not JSON of the documented shape.
    let (s, v) = call(
        &srv,
        r#"{"id":"x","principal":"alice","decision":"approve","extra":1}"#,
        SECRET,
        now_s(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("extra"), "{v}");
    let bad = format!(
        r#"{{"id":"{}","principal":"alice","decision":"maybe"}}"#,
        r.id
    );
    let (s, v) = call(&srv, &bad, SECRET, now_s()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("decision:"), "{v}");
    let bad_for = format!(
        r#"{{"id":"{}","principal":"alice","decision":"approve","for":"soon"}}"#,
        r.id
    );
    assert_eq!(call(&srv, &bad_for, SECRET, now_s()).await.0, 400);
    // carol is in no group the route names; nobody is unknown.
    let carol = format!(
        r#"{{"id":"{}","principal":"carol","decision":"approve"}}"#,
        r.id
    );
    assert_eq!(call(&srv, &carol, SECRET, now_s()).await.0, 403);
    let ghost = format!(
        r#"{{"id":"{}","principal":"nobody","decision":"approve"}}"#,
        r.id
    );
    assert_eq!(call(&srv, &ghost, SECRET, now_s()).await.0, 403);
    let unknown = r#"{"id":"01aaaaaaaaaaaaaaaaaaaaaaaa","principal":"alice","decision":"approve"}"#;
    assert_eq!(call(&srv, unknown, SECRET, now_s()).await.0, 404);

    // Nothing was decided, and every refusal is on record.
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert!(s.votes.is_empty() && s.decision.is_none(), "{s:?}");
    let anonymous = recorded(&srv, None).await;
    assert_eq!(
        anonymous
            .iter()
            .filter(|m| m.starts_with("unknown UNAUTHENTICATED signature"))
            .count(),
        2,
        "{anonymous:#?}"
    );
    let on_r = recorded(&srv, Some(&r.id)).await;
    assert!(
        on_r.iter()
            .any(|m| m.starts_with("carol PERMISSION_DENIED")),
        "{on_r:#?}"
    );
    assert!(
        on_r.iter()
            .any(|m| m.starts_with("alice INVALID_ARGUMENT decision:")),
        "{on_r:#?}"
    );
}

/// Guards the route's channel list: a route that leaves `webhook` out cannot be decided by
/// whoever holds the receiver's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_the_webhook_channel_refuses_its_callbacks() {
    let srv = server_with(false).await;
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let body = format!(
        r#"{{"id":"{}","principal":"alice","decision":"approve"}}"#,
        r.id
    );
    let (status, v) = call(&srv, &body, SECRET, now_s()).await;
    assert_eq!(status, 403, "{v}");
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert!(s.votes.is_empty(), "{s:?}");
    assert!(
        recorded(&srv, Some(&r.id))
            .await
            .iter()
            .any(|m| m.starts_with("alice PERMISSION_DENIED")),
    );
}

/// A repeat counts as the same call only when it says the same: approving for 15 minutes,
/// then for 8 hours, is a conflict, not a silent "done".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_with_a_different_duration_is_a_conflict() {
    let srv = server().await;
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let short = format!(
        r#"{{"id":"{}","principal":"alice","decision":"approve","for":"15m"}}"#,
        r.id
    );
    assert_eq!(call(&srv, &short, SECRET, now_s()).await.0, 200);
    assert_eq!(call(&srv, &short, SECRET, now_s()).await.0, 200);
    let long = format!(
        r#"{{"id":"{}","principal":"alice","decision":"approve","for":"8h"}}"#,
        r.id
    );
    let (status, v) = call(&srv, &long, SECRET, now_s()).await;
    assert_eq!(status, 409, "{v}");
}
