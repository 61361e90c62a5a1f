//! The metrics listener end to end: a `TestServer`'s `GET /metrics` over loopback follows
//! hosts linking and dropping, requests opening by route, and votes by channel.
use std::time::{Duration, Instant};

use airlock_server::testing::{TestServer, approve, new_id, request, wait_stored};

const T: Duration = Duration::from_secs(5);

async fn scrape(srv: &TestServer) -> String {
    let res = reqwest::get(format!("http://{}/metrics", srv.metrics_addr))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    res.text().await.unwrap()
}

/// Scrapes until the exposition has the sample line `line`, failing after [`T`].
async fn until(srv: &TestServer, line: &str) {
    let start = Instant::now();
    loop {
        let text = scrape(srv).await;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            start.elapsed() < T,
            "no line {line:?} within {T:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_hosts_requests_and_votes() {
    let srv = TestServer::start().await.unwrap();
    until(&srv, "airlock_server_hosts_connected 0").await;
    let host = srv.host("web-1").await.unwrap();
    until(&srv, "airlock_server_hosts_connected 1").await;

    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    until(
        &srv,
        "airlock_server_requests_opened_total{route=\"default\"} 1",
    )
    .await;
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice.decide(approve(&r.id)).await.unwrap();
    assert!(alice.decide(approve(&new_id())).await.is_err());
    let text = scrape(&srv).await;
    for line in [
        "airlock_server_votes_total{channel=\"cli\",result=\"accepted\"} 1",
        "airlock_server_votes_total{channel=\"cli\",result=\"refused\"} 1",
        "airlock_server_decisions_total{route=\"default\",release=\"allow\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // No request id, host or principal in any label.
    for unbounded in [r.id.as_str(), "web-1", "alice"] {
        assert!(!text.contains(unbounded), "{unbounded} in:\n{text}");
    }

    drop(host);
    until(&srv, "airlock_server_hosts_connected 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_get_metrics_only() {
    let srv = TestServer::start().await.unwrap();
    let c = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", srv.metrics_addr);
    let om = c
        .get(url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        om.headers()["content-type"],
        airlock_server::metrics::OPENMETRICS
    );
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
    let post = c.post(url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    let other = c.get(url("/")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    // Not the public HTTP listener's business.
    let public = c
        .get(format!("{}/metrics", srv.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
}
