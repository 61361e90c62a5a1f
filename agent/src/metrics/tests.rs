use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::event::Op;
use crate::hold::table::{HoldTable, Opening};
use crate::hold::testing::{FakeGate, context};
use crate::hold::{Approver, Decision, HoldKind, OnTimeout};

fn key(tgid: u32) -> HoldKey {
    HoldKey {
        tgid,
        op: Op::Exec,
        dev: 8 << 20,
        ino: 42,
        argv_hash: 7,
    }
}

fn holder(tgid: u32) -> Holder {
    Holder {
        tid: tgid,
        tgid,
        how: HoldKind::Restart,
    }
}

fn opening(timeout_ms: u64) -> Opening {
    Opening {
        context: context(99),
        timeout: Duration::from_millis(timeout_ms),
        on_timeout: OnTimeout::Deny,
    }
}

fn who() -> Approver {
    Approver {
        uid: 0,
        pid: 1,
        user: Some("root".into()),
        via: "cli".into(),
        principal: None,
    }
}

/// Asserts that `text` has the sample line `line` (name, labels and value).
#[track_caller]
fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

fn now_ms() -> u64 {
    crate::hold::approvals::now_unix_ms()
}

#[test]
fn request_lifecycle_is_counted_from_the_journal() {
    let m = Arc::new(Metrics::new());
    let gate = MeteredGate::wrap(Arc::new(FakeGate::default()), m.clone());
    let mut t = HoldTable::new(gate, None);
    let (tx, mut journal) = mpsc::unbounded_channel();
    t.set_journal(tx);
    let now = now_ms();
    // Opened 2.5 s ago; approved now.
    let a = t.on_held(key(10), holder(10), now - 2500, || opening(60_000));
    // Opened 40 s ago; denied now.
    let d = t.on_held(key(11), holder(11), now - 40_000, || opening(60_000));
    // Opened 2 s ago with a 1 s timeout: times out at the tick.
    t.on_held(key(12), holder(12), now - 2000, || opening(1000));
    // Its holder is gone: abandoned at the tick.
    t.on_held(key(13), holder(13), now, || opening(60_000));
    // Joins the first request: no second opening.
    t.on_held(key(10), holder(10), now, || opening(60_000));
    t.decide(&a.id, Decision::Approve { for_: None }, who(), now, 0)
        .unwrap();
    t.decide(
        &d.id,
        Decision::Deny {
            always: false,
            reason: None,
        },
        who(),
        now,
        0,
    )
    .unwrap();
    t.tick(now, |h| h.tgid != 13);
    while let Ok(u) = journal.try_recv() {
        m.on_update(&u, t.pending_count());
    }
    let text = m.encode(false);
    has(&text, "airlock_requests_opened_total 4");
    has(&text, "airlock_requests_closed_total{state=\"approved\"} 1");
    has(&text, "airlock_requests_closed_total{state=\"denied\"} 1");
    has(
        &text,
        "airlock_requests_closed_total{state=\"timed_out\"} 1",
    );
    has(
        &text,
        "airlock_requests_closed_total{state=\"abandoned\"} 1",
    );
    has(&text, "airlock_requests_pending 0");
    // Open → decision per final state; the abandoned request had none.
    has(
        &text,
        "airlock_request_decision_seconds_sum{state=\"approved\"} 2.5",
    );
    has(
        &text,
        "airlock_request_decision_seconds_bucket{state=\"approved\",le=\"2.5\"} 1",
    );
    has(
        &text,
        "airlock_request_decision_seconds_bucket{state=\"approved\",le=\"1\"} 0",
    );
    has(
        &text,
        "airlock_request_decision_seconds_sum{state=\"denied\"} 40.0",
    );
    has(
        &text,
        "airlock_request_decision_seconds_count{state=\"timed_out\"} 1",
    );
    assert!(!text.contains("decision_seconds_count{state=\"abandoned\"}"));
    // Three releases (approve, deny, timeout), each measured from its decision.
    has(&text, "airlock_request_release_seconds_count 3");
    has(&text, "airlock_request_release_seconds_bucket{le=\"5\"} 3");
    assert!(m.lock_released().is_empty(), "each close took its release");
}

#[test]
fn status_spool_and_links_are_reported() {
    let m = Metrics::new().with_links(Some("https://s:1"), Some("https://c:2"));
    let before = m.encode(false);
    has(&before, "airlock_link_up{link=\"server\"} 0");
    has(
        &before,
        "airlock_link_reconnects_total{link=\"collector\"} 0",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut audit =
        crate::daemon::audit::AuditLog::open(dir.path(), dir.path(), "h").expect("audit log");
    audit.note(
        airlock_audit::Kind::DaemonStart,
        serde_json::json!({"pid": 1}),
    );
    audit.flush().unwrap();
    let (head, bytes) = {
        let sh = audit.shipper();
        let sp = sh.spool();
        (sp.head().seq, sp.used_bytes())
    };
    assert!(head > 0 && bytes > 0);
    let mut status = Status {
        backend: "lsm".into(),
        events: 10,
        lost: 2,
        policy_generation: 3,
        pending_requests: 5,
        ..Status::default()
    };
    m.refresh(&status, Some(&audit));
    status.events = 15;
    m.refresh(&status, Some(&audit));
    let up = |server: &str| LinkChange::Up {
        server: server.into(),
        resent: 0,
    };
    m.on_link_change(&up("https://s:1"));
    m.on_link_change(&LinkChange::Down {
        server: "https://s:1".into(),
        error: "gone".into(),
        retry_in_ms: 100,
    });
    m.on_link_change(&up("https://s:1"));
    m.on_link_change(&up("https://c:2"));
    m.on_link_change(&up("https://unknown:3"));
    let text = m.encode(false);
    has(&text, "airlock_kernel_events_total 15");
    has(&text, "airlock_kernel_events_lost_total 2");
    has(&text, "airlock_policy_generation 3");
    has(&text, "airlock_requests_pending 5");
    has(&text, "airlock_backend{backend=\"lsm\"} 1");
    has(&text, &format!("airlock_audit_spool_records {head}"));
    has(&text, &format!("airlock_audit_spool_bytes {bytes}"));
    has(&text, "airlock_link_up{link=\"server\"} 1");
    has(&text, "airlock_link_reconnects_total{link=\"server\"} 1");
    has(&text, "airlock_link_up{link=\"collector\"} 1");
    has(&text, "airlock_link_reconnects_total{link=\"collector\"} 0");
    assert!(!text.contains("unknown"));
    // OpenMetrics: the same samples, typed, with the closing EOF.
    let om = m.encode(true);
    has(&om, "# TYPE airlock_kernel_events counter");
    has(&om, "airlock_kernel_events_total 15");
    assert!(om.ends_with("# EOF\n"));
}

/// One raw HTTP exchange with the listener: the whole response.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn the_listener_serves_get_metrics_only() {
    let m = Arc::new(Metrics::new());
    m.on_update(
        &Update::Opened(crate::hold::Request {
            id: "r".into(),
            state: crate::hold::RequestState::Pending,
            key: key(1),
            holders: vec![holder(1)],
            attempts: 1,
            created_unix_ms: 0,
            deadline_unix_ms: 0,
            on_timeout: OnTimeout::Deny,
            context: context(1),
            decision: None,
        }),
        1,
    );
    let l = serve("127.0.0.1:0".parse().unwrap(), m).await.unwrap();
    let addr = l.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let get = |req: &'static str| tokio::task::spawn_blocking(move || exchange(addr, req));
    let plain = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(plain.starts_with("HTTP/1.1 200 OK\r\n"), "{plain}");
    assert!(
        plain.contains("Content-Type: text/plain; version=0.0.4"),
        "{plain}"
    );
    assert!(
        plain.contains("\nairlock_requests_opened_total 1\n"),
        "{plain}"
    );
    assert!(plain.contains("\nairlock_requests_pending 1\n"), "{plain}");
    let om = get(
        "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        om.contains(&format!("Content-Type: {}\r\n", serve::OPENMETRICS)),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let post = get("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET\r\n"), "{post}");
    let other = get("GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    let junk = get("hello\r\n\r\n").await.unwrap();
    assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    drop(l);
    // Dropped: no longer served (the accept task is aborted; give it a moment).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn a_taken_address_is_an_error() {
    let l = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new()))
        .await
        .unwrap();
    let e = serve(l.local_addr(), Arc::new(Metrics::new()))
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("metrics listener 127.0.0.1:"),
        "{e}"
    );
}

#[test]
fn metrics_listen_is_an_address_or_nothing() {
    use clap::Parser as _;
    let parse = |v: &[&str]| {
        crate::daemon_args::DaemonArgs::try_parse_from([&["airlockd"], v].concat()).map(|a| {
            a.into_config(crate::config::FileConfig::default())
                .metrics_listen
        })
    };
    assert_eq!(
        parse(&["--metrics-listen", "127.0.0.1:9464"]).unwrap(),
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(parse(&["--metrics-listen", ""]).unwrap(), None);
    let e = parse(&["--metrics-listen", "localhost"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected IP:PORT"), "{e}");
}

#[test]
fn final_states_are_reported_at_zero_before_any_request() {
    let text = Metrics::new().encode(false);
    for state in ["approved", "denied", "timed_out", "abandoned"] {
        has(
            &text,
            &format!("airlock_requests_closed_total{{state=\"{state}\"}} 0"),
        );
    }
    has(
        &text,
        "airlock_request_decision_seconds_count{state=\"timed_out\"} 0",
    );
    assert!(!text.contains("decision_seconds_count{state=\"abandoned\"}"));
}
