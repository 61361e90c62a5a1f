//! The webhook channel against a receiver on loopback: one signed POST when a request of a
//! `webhook` route opens and one when its host reports the outcome; a failed POST is retried.
use std::time::Duration;

use airlock_server::signing::{WEBHOOK_HEADER, verify_webhook};
use airlock_server::testing::{
    Options, TestServer, approve, closed_by, new_id, request, wait_stored,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "s3cret-for-tests";

/// One POST as the receiver saw it.
#[derive(Debug)]
struct Post {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Post {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A minimal HTTP/1.1 receiver: answers the n-th request with `statuses[n]` (200 past the
/// end), one request per connection, and hands each request over.
async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Post>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let k = c.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i);
                }
            };
            let Some(i) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = buf[i + 4..].to_vec();
            while body.len() < len {
                let k = c.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..k]);
            }
            let status = statuses.get(n).copied().unwrap_or(200);
            n += 1;
            let _ = c
                .write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
            let _ = tx.send(Post { headers, body });
        }
    });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Post>) -> Post {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a POST within 10 s")
        .expect("receiver running")
}

fn now_s() -> u64 {
    airlock_server::broker::now_ms() / 1000
}

fn config(url: &str) -> String {
    format!(
        "{}webhook:\n  url: \"{url}\"\n  secret_file: hook.secret\n",
        airlock_server::testing::DEFAULT_CONFIG.replace(
            "    approvers: [sre, bots]\n",
            "    approvers: [sre, bots]\n    channels: [cli, webhook]\n"
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_route_posts_signed_opened_and_closed_events_and_retries_a_failure() {
    // The first POST fails with a 503: it must come again.
    let (url, mut posts) = receiver(vec![503]).await;
    let srv = TestServer::with(Options {
        config: config(&url),
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("hook.secret"), format!("{SECRET}\n")).unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();

    let failed = next(&mut posts).await;
    let again = next(&mut posts).await;
    for p in [&failed, &again] {
        assert_eq!(p.header("X-Airlock-Event"), Some("opened"));
        assert_eq!(p.header("Content-Type"), Some("application/json"));
        verify_webhook(
            SECRET.as_bytes(),
            p.header(WEBHOOK_HEADER),
            &p.body,
            now_s(),
        )
        .expect("a signature the documented scheme verifies");
    }
    assert_eq!(failed.body, again.body, "a retry posts the same event");
    let v = again.json();
    assert_eq!(v["event"], "opened");
    assert_eq!(v["request"]["id"], r.id.as_str());
    assert_eq!(v["request"]["host"], "web-1");
    assert_eq!(v["request"]["route"], "default");
    assert_eq!(v["request"]["state"], "pending");
    assert!(v["request"]["context"].is_object(), "{v}");
    // A changed body does not verify.
    let mut forged = again.body.clone();
    forged.extend_from_slice(b" ");
    assert!(
        verify_webhook(
            SECRET.as_bytes(),
            again.header(WEBHOOK_HEADER),
            &forged,
            now_s()
        )
        .is_err()
    );

    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice.decide(approve(&r.id)).await.unwrap();
    let d = host.decision(T).await.unwrap();
    host.outcome(closed_by(&r, &d)).unwrap();
    let closed = next(&mut posts).await;
    verify_webhook(
        SECRET.as_bytes(),
        closed.header(WEBHOOK_HEADER),
        &closed.body,
        now_s(),
    )
    .unwrap();
    let v = closed.json();
    assert_eq!(v["event"], "closed");
    assert_eq!(v["request"]["id"], r.id.as_str());
    assert_eq!(v["request"]["state"], "approved");
    assert_eq!(v["request"]["decision"]["by"]["principal"], "alice");
    assert_eq!(v["request"]["votes"][0]["principal"], "alice");
    // Metrics: the 503 was one delivery error, nothing was given up (`airlock_server::metrics`).
    let m = srv.broker.metrics.encode(false);
    for line in [
        "airlock_server_channel_requests_total{channel=\"webhook\"} 1",
        "airlock_server_channel_delivery_errors_total{channel=\"webhook\"} 1",
        "airlock_server_requests_closed_total{state=\"approved\"} 1",
        "airlock_server_channel_delivery_failures_total{channel=\"webhook\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_the_webhook_channel_posts_nothing() {
    let (url, mut posts) = receiver(vec![]).await;
    // The webhook is configured, but no route names it.
    let cfg = format!(
        "{}webhook:\n  url: \"{url}\"\n  secret_file: hook.secret\n",
        airlock_server::testing::DEFAULT_CONFIG
    );
    let srv = TestServer::with(Options {
        config: cfg,
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("hook.secret"), SECRET).unwrap();
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), posts.recv()).await;
    assert!(got.is_err(), "posted for a route without webhook: {got:?}");
}
