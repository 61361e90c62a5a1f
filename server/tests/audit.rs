//! The audit collector end to end: hosts (`FakeHost`) ship hash-chained records over the
//! real link, approvers read them back through `AuditQuery`. SQLite in a temporary directory
//! (one case on PostgreSQL too, which stores records another way).
//!
//! What is guarded: a batch is stored only when it continues the chain the server has, under
//! the key the host presented first; anything else (a changed, missing, reordered record, a
//! bad checkpoint, another key) is refused with the stored head, alerted, and stores nothing,
//! and the host can go on from the stored head afterwards. A resend is harmless; records and
//! the chain survive a restart and retention.
use std::time::Duration;

use airlock_audit::{Kind, Record, SigningKey};
use airlock_proto::v1 as pb;
use airlock_server::broker::now_ms;
use airlock_server::store::{AuditFilter, Store};
use airlock_server::testing::audit::{HostChain, batch, canonical};
use airlock_server::testing::{self, FakeHost, Options, TempDir, TestServer};
use serde_json::json;
use tokio_stream::StreamExt as _;
use tonic::Code;

const T: Duration = Duration::from_secs(5);

/// A server and host `web-1` linked with its audit key.
async fn linked() -> (TestServer, FakeHost, HostChain) {
    let srv = TestServer::start().await.unwrap();
    let (host, chain) = link(&srv, "web-1").await;
    (srv, host, chain)
}

async fn link(srv: &TestServer, name: &str) -> (FakeHost, HostChain) {
    let chain = HostChain::new(name);
    let id = srv.enroll(name).await.unwrap();
    let host = FakeHost::connect_with_audit_key(&srv.url, &srv.ca_pem, &id, &chain.verifier_key())
        .await
        .unwrap();
    (host, chain)
}

/// Every stored record of `host`.
async fn stored(s: &Store, host: &str) -> Vec<u64> {
    let f = AuditFilter {
        host: Some(host.into()),
        limit: 10_000,
        ..Default::default()
    };
    s.audit_records(&f)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

async fn alerts(s: &Store) -> Vec<String> {
    let f = AuditFilter {
        limit: 10_000,
        ..Default::default()
    };
    let a = s.audit_alerts(&f).await.unwrap();
    a.into_iter().map(|a| a.message).collect()
}

fn seqs(r: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    r.collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_batch_is_stored_with_its_checkpoint_and_acked() {
    let (srv, mut host, mut chain) = linked().await;
    let records = chain.records(3);
    let cp = chain.checkpoint();
    let ack = host
        .audit(batch(&records, std::slice::from_ref(&cp)), T)
        .await
        .unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (3, ""));
    assert_eq!(stored(&srv.store, "web-1").await, [1, 2, 3]);
    assert_eq!(
        srv.store.audit_checkpoints("web-1").await.unwrap(),
        [(3, cp)]
    );
    let rows = srv
        .store
        .audit_records(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows[0].record, records[0], "stored as sent");
    // A checkpoint-only batch (an idle host signs its head again) is acked.
    let ack = host
        .audit(batch(&[], &[chain.checkpoint()]), T)
        .await
        .unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (3, ""));
    assert!(alerts(&srv.store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_hosts_checkpoint_over_stored_records_is_kept_and_a_forged_one_alerted() {
    let (srv, mut host, mut chain) = linked().await;
    let records = chain.records(4);
    let ack = host.audit(batch(&records, &[]), T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (4, ""));
    assert!(
        srv.store
            .audit_checkpoints("web-1")
            .await
            .unwrap()
            .is_empty()
    );
    // As airlockd's shipper sends it: no records, first_seq after what was acknowledged.
    let cp = chain.checkpoint();
    let idle = pb::AuditBatch {
        first_seq: 5,
        records: Vec::new(),
        checkpoints: vec![cp.clone()],
    };
    let ack = host.audit(idle, T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (4, ""));
    assert_eq!(
        srv.store.audit_checkpoints("web-1").await.unwrap(),
        [(4, cp)]
    );
    // Signed by another key: refused and alerted, nothing kept.
    let forged = chain.checkpoint_by(&SigningKey::generate("airlock-web-1").unwrap());
    let ack = host
        .audit(
            pb::AuditBatch {
                first_seq: 5,
                records: Vec::new(),
                checkpoints: vec![forged],
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack.up_to_seq, 4);
    assert!(!ack.refused.is_empty());
    assert_eq!(srv.store.audit_checkpoints("web-1").await.unwrap().len(), 1);
    assert_eq!(alerts(&srv.store).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_a_lost_ack_is_acked_and_stores_nothing_twice() {
    let (srv, host, chain) = linked().await;
    resend_and_overlap(srv, host, chain).await;
}

/// The same on PostgreSQL, whose store COPYs a batch's records (`store/audit_copy.rs`)
/// where SQLite INSERTs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_resend_and_an_overlap_store_each_record_once() {
    let Some(pg) = testing::pg::PgCluster::shared() else {
        return;
    };
    let srv = TestServer::with(Options {
        database: Some(pg.create_database()),
        ..Options::default()
    })
    .await
    .unwrap();
    let (host, chain) = link(&srv, "web-1").await;
    resend_and_overlap(srv, host, chain).await;
}

async fn resend_and_overlap(srv: TestServer, mut host: FakeHost, mut chain: HostChain) {
    let records = chain.records(5);
    let first = batch(&records[..3], &[]);
    assert_eq!(host.audit(first.clone(), T).await.unwrap().up_to_seq, 3);
    // The ack was lost: the host sends the same batch again, then one overlapping it.
    let again = host.audit(first, T).await.unwrap();
    assert_eq!((again.up_to_seq, again.refused.as_str()), (3, ""));
    let overlap = host.audit(batch(&records[1..], &[]), T).await.unwrap();
    assert_eq!((overlap.up_to_seq, overlap.refused.as_str()), (5, ""));
    assert_eq!(stored(&srv.store, "web-1").await, seqs(1..=5));
    // Text that needs escaping somewhere on its way, resent overlapping: stored once, as sent.
    let awkward = [
        r"C:\path\n \N \.",
        "tab\t nl\n cr\r",
        "quote \" ' | , ;",
        "é 中文 🦀 \u{2028} e\u{301}",
        "\u{1}\u{1f}\u{7f}",
    ];
    // NUL only where the collector keeps no column of its own: PostgreSQL's TEXT cannot hold
    // it (the record's JSON escapes it).
    let more: Vec<String> = awkward
        .iter()
        .map(|a| chain.record(Kind::EventAllowed, json!({"op": a, "argv": [a, "\u{0}"]})))
        .collect();
    let ack = host.audit(batch(&more[..3], &[]), T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (8, ""));
    let ack = host.audit(batch(&more, &[]), T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (10, ""));
    assert_eq!(stored(&srv.store, "web-1").await, seqs(1..=10));
    let rows = srv
        .store
        .audit_records(&AuditFilter {
            host: Some("web-1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let texts: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
    let sent: Vec<&str> = records.iter().chain(&more).map(String::as_str).collect();
    assert_eq!(texts, sent, "stored as sent");
    assert!(alerts(&srv.store).await.is_empty());
}

/// Sends `bad` (which must be refused with `why` in its message, the head at 2, an alert
/// and nothing stored), then checks that the next good batch is still accepted.
async fn refused(srv: &TestServer, host: &mut FakeHost, bad: pb::AuditBatch, why: &str) {
    let before = alerts(&srv.store).await.len();
    let ack = host.audit(bad, T).await.unwrap();
    assert_eq!(ack.up_to_seq, 2, "{ack:?}");
    assert!(
        ack.refused.contains(why),
        "{:?} does not say {why:?}",
        ack.refused
    );
    let now = alerts(&srv.store).await;
    assert_eq!(now.len(), before + 1, "{now:#?}");
    assert!(now.last().unwrap().contains(why), "{now:#?}");
    assert_eq!(
        stored(&srv.store, "web-1").await,
        [1, 2],
        "something was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_batches_are_refused_alerted_and_store_nothing_then_the_host_goes_on() {
    let (srv, mut host, mut chain) = linked().await;
    let good = chain.records(2);
    assert_eq!(host.audit(batch(&good, &[]), T).await.unwrap().up_to_seq, 2);
    let next = chain.records(3); // seq 3, 4, 5

    // A record changed after it was written (hash kept).
    let mut r: Record = serde_json::from_str(&next[1]).unwrap();
    r.body = json!({"op": "exec", "i": 99});
    let changed = vec![next[0].clone(), canonical(&r), next[2].clone()];
    refused(
        &srv,
        &mut host,
        batch(&changed, &[]),
        "record 4 was changed",
    )
    .await;
    // A gap: record 4 left out.
    let gap = vec![next[0].clone(), next[2].clone()];
    refused(&srv, &mut host, batch(&gap, &[]), "record 4 is missing").await;
    // The batch starts after a gap.
    refused(
        &srv,
        &mut host,
        batch(&next[1..], &[]),
        "record 3 is missing",
    )
    .await;
    // A reordered pair.
    let swapped = vec![next[1].clone(), next[0].clone(), next[2].clone()];
    let mut b = batch(&swapped, &[]);
    b.first_seq = 4;
    refused(&srv, &mut host, b, "record 3 is out of order").await;
    // A stored record resent with other content.
    let mut r: Record = serde_json::from_str(&good[1]).unwrap();
    r.body = json!({"op": "exec", "i": 7});
    r.hash = r.compute_hash().unwrap();
    let rewritten = vec![canonical(&r)];
    refused(
        &srv,
        &mut host,
        batch(&rewritten, &[]),
        "record 2 was changed",
    )
    .await;
    // A checkpoint whose signature does not verify (one byte of it flipped).
    let cp = chain.checkpoint();
    let (body, sig) = cp.rsplit_once(' ').unwrap();
    // Past the 4-byte key id (the first 6 base64 digits) and away from the padding.
    let mut sig = sig.trim_end().to_string();
    let at = sig.len() / 2;
    let flip = if &sig[at..=at] == "A" { "B" } else { "A" };
    sig.replace_range(at..=at, flip);
    let forged = format!("{body} {sig}\n");
    refused(&srv, &mut host, batch(&next, &[forged]), "does not verify").await;
    // A checkpoint signed by another key.
    let other = SigningKey::generate("web-1").unwrap();
    let cp = chain.checkpoint_by(&other);
    refused(&srv, &mut host, batch(&next, &[cp]), "no signature by key").await;
    // Records of another host's name.
    let mut stranger = HostChain::new("db-1");
    refused(
        &srv,
        &mut host,
        batch(&stranger.records(1), &[]),
        "record 1",
    )
    .await;

    // The host goes on from the stored head.
    let ack = host
        .audit(batch(&next, &[chain.checkpoint()]), T)
        .await
        .unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (5, ""));
    assert_eq!(stored(&srv.store, "web-1").await, seqs(1..=5));
    let attempts = srv.store.attempts(100).await.unwrap();
    assert!(
        attempts
            .iter()
            .any(|a| a.who == "host:web-1" && a.action == "audit" && a.result == "DATA_LOSS"),
        "{attempts:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_bounds_are_refused_naming_the_limit() {
    let (srv, mut host, mut chain) = linked().await;
    let many = chain.records(4097);
    let ack = host.audit(batch(&many, &[]), T).await.unwrap();
    assert_eq!(ack.up_to_seq, 0);
    assert!(ack.refused.contains("at most 4096"), "{ack:?}");
    assert!(stored(&srv.store, "web-1").await.is_empty());
    let ack = host.audit(batch(&many[..4096], &[]), T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (4096, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_presenting_another_audit_key_is_refused_and_alerted() {
    let srv = TestServer::start().await.unwrap();
    let id = srv.enroll("web-1").await.unwrap();
    let mut chain = HostChain::new("web-1");
    let mut host =
        FakeHost::connect_with_audit_key(&srv.url, &srv.ca_pem, &id, &chain.verifier_key())
            .await
            .unwrap();
    assert_eq!(
        host.audit(batch(&chain.records(2), &[]), T)
            .await
            .unwrap()
            .up_to_seq,
        2
    );
    drop(host);

    // The same certificate, another key (a reinstalled spool, or someone else's).
    let mut other = HostChain::new("web-1");
    let mut host =
        FakeHost::connect_with_audit_key(&srv.url, &srv.ca_pem, &id, &other.verifier_key())
            .await
            .unwrap();
    let ack = host.audit(batch(&other.records(1), &[]), T).await.unwrap();
    assert_eq!(ack.up_to_seq, 2);
    assert!(ack.refused.contains("is not the key"), "{ack:?}");
    // Records of the first key's chain are refused on this stream too: the key is refused.
    let ack = host.audit(batch(&chain.records(1), &[]), T).await.unwrap();
    assert!(ack.refused.contains("is not the key"), "{ack:?}");
    assert_eq!(stored(&srv.store, "web-1").await, [1, 2]);
    let a = alerts(&srv.store).await;
    assert_eq!(a.len(), 1, "alerted once, at the Hello: {a:#?}");
    assert!(a[0].contains(&other.verifier_key()), "{a:#?}");
    let kept = srv.store.audit_key("web-1").await.unwrap().unwrap();
    assert_eq!(kept.key, chain.verifier_key());
    let attempts = srv.store.attempts(100).await.unwrap();
    assert!(
        attempts.iter().any(|a| a.who == "host:web-1"
            && a.action == "audit"
            && a.result == "PERMISSION_DENIED"),
        "{attempts:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_restart_and_the_chain_continues() {
    let keep = TempDir::new("airlock-audit-restart").unwrap();
    let pki = keep.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    testing::init_dir(&pki, testing::DEFAULT_CONFIG).unwrap();
    let opts = Options {
        database: Some(Store::sqlite_url(&keep.path().join("airlock.db"))),
        pki_dir: Some(pki.clone()),
        ..Options::default()
    };
    let a = TestServer::with(opts.clone()).await.unwrap();
    let id = a.enroll("web-1").await.unwrap();
    let mut chain = HostChain::new("web-1");
    let key = chain.verifier_key();
    let mut host = FakeHost::connect_with_audit_key(&a.url, &a.ca_pem, &id, &key)
        .await
        .unwrap();
    let first = chain.records(3);
    assert_eq!(
        host.audit(batch(&first, &[]), T).await.unwrap().up_to_seq,
        3
    );
    drop(host);
    a.stop().await;

    let b = TestServer::with(opts).await.unwrap();
    let mut host = FakeHost::connect_with_audit_key(&b.url, &b.ca_pem, &id, &key)
        .await
        .unwrap();
    let more = chain.records(2);
    let ack = host
        .audit(batch(&more, &[chain.checkpoint()]), T)
        .await
        .unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (5, ""));
    assert_eq!(stored(&b.store, "web-1").await, seqs(1..=5));
    // Another chain for the same host is not a continuation.
    let mut fresh = HostChain::new("web-1");
    fresh.at_unix_ms += 1;
    let ack = host.audit(batch(&fresh.records(1), &[]), T).await.unwrap();
    assert_eq!(ack.up_to_seq, 5);
    assert!(!ack.refused.is_empty());
}

/// Stores, for `web-1` and `db-1`, records of several kinds with agent, op, decision and
/// approver bodies; returns the server and the hosts' chains (heads at 4 and 2).
async fn fleet() -> (TestServer, FakeHost, HostChain) {
    let srv = TestServer::start().await.unwrap();
    let (mut web, mut wc) = link(&srv, "web-1").await;
    let (mut db, mut dc) = link(&srv, "db-1").await;
    let r = [
        wc.seal(
            Kind::EventHeld,
            Some("r1"),
            json!({"agent": "claude", "op": "exec"}),
        )
        .1,
        wc.seal(
            Kind::RequestOpened,
            Some("r1"),
            json!({"agent": "claude", "op": "exec"}),
        )
        .1,
        wc.seal(
            Kind::Decision,
            Some("r1"),
            json!({"agent": "claude", "op": "exec", "decision": "approved", "approver": "alice"}),
        )
        .1,
        wc.seal(
            Kind::Outcome,
            Some("r1"),
            json!({"agent": "claude", "decision": "approved"}),
        )
        .1,
    ];
    assert_eq!(web.audit(batch(&r, &[]), T).await.unwrap().up_to_seq, 4);
    dc.at_unix_ms = 1_800_000_000_000;
    let d = [
        dc.seal(
            Kind::EventDenied,
            None,
            json!({"agent": "codex", "op": "open_write"}),
        )
        .1,
        dc.seal(
            Kind::Decision,
            Some("r2"),
            json!({"agent": "codex", "op": "unlink", "decision": "denied", "approver": "bob"}),
        )
        .1,
    ];
    assert_eq!(db.audit(batch(&d, &[]), T).await.unwrap().up_to_seq, 2);
    (srv, web, wc)
}

async fn query(
    srv: &TestServer,
    q: pb::AuditQueryRequest,
) -> Result<Vec<pb::AuditEntry>, tonic::Status> {
    let mut c = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    let mut s = c.audit_query(q).await?.into_inner();
    let mut out = Vec::new();
    while let Some(e) = s.next().await {
        out.push(e?);
    }
    Ok(out)
}

fn hs(es: &[pb::AuditEntry]) -> Vec<(String, u64)> {
    es.iter().map(|e| (e.host.clone(), e.seq)).collect()
}

fn at(h: &str, seq: u64) -> (String, u64) {
    (h.to_string(), seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_query_filters_by_host_kind_agent_time_approver_and_pages_by_cursor() {
    let (srv, _web, _wc) = fleet().await;
    let q = pb::AuditQueryRequest::default;
    let all = query(&srv, q()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "storage order"
    );
    let by = |q| query(&srv, q);
    let host = by(pb::AuditQueryRequest {
        host: "db-1".into(),
        ..q()
    })
    .await
    .unwrap();
    assert_eq!(hs(&host), [at("db-1", 1), at("db-1", 2)]);
    let kind = by(pb::AuditQueryRequest {
        kind: "decision".into(),
        ..q()
    })
    .await
    .unwrap();
    assert_eq!(hs(&kind), [at("web-1", 3), at("db-1", 2)]);
    let agent = by(pb::AuditQueryRequest {
        agent: "codex".into(),
        ..q()
    })
    .await
    .unwrap();
    assert_eq!(hs(&agent), [at("db-1", 1), at("db-1", 2)]);
    let since = by(pb::AuditQueryRequest {
        since_unix_ms: 1_800_000_000_000,
        ..q()
    });
    assert_eq!(hs(&since.await.unwrap()), [at("db-1", 1), at("db-1", 2)]);
    let until = by(pb::AuditQueryRequest {
        until_unix_ms: 1_700_000_002_000,
        ..q()
    });
    assert_eq!(hs(&until.await.unwrap()), [at("web-1", 1), at("web-1", 2)]);
    let approver = by(pb::AuditQueryRequest {
        approver: "alice".into(),
        ..q()
    })
    .await
    .unwrap();
    assert_eq!(hs(&approver), [at("web-1", 3)]);
    let both = pb::AuditQueryRequest {
        operation: "exec".into(),
        decision: "approved".into(),
        ..q()
    };
    assert_eq!(hs(&by(both).await.unwrap()), [at("web-1", 3)]);
    // Pages: a limit, then on from the last cursor.
    let page = by(pb::AuditQueryRequest { limit: 4, ..q() }).await.unwrap();
    assert_eq!(page.len(), 4);
    let rest = pb::AuditQueryRequest {
        after_cursor: page[3].cursor,
        ..q()
    };
    assert_eq!(hs(&by(rest).await.unwrap()), hs(&all[4..]));
    // The record is the host's canonical JSON.
    let r: Record = serde_json::from_str(&approver[0].record).unwrap();
    assert_eq!(r.corr.as_deref(), Some("r1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_query_needs_a_token_and_a_bounded_limit() {
    let srv = TestServer::start().await.unwrap();
    let mut anon = testing::approvals_client(&srv.url, &srv.ca_pem, None, None)
        .await
        .unwrap();
    let e = anon
        .audit_query(pb::AuditQueryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let big = pb::AuditQueryRequest {
        limit: 10_001,
        ..Default::default()
    };
    let e = query(&srv, big).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("limit:"), "{e:?}");
    let mixed = pb::AuditQueryRequest {
        alerts: true,
        kind: "vote".into(),
        ..Default::default()
    };
    assert_eq!(
        query(&srv, mixed).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_sees_records_stored_after_it_started_and_ends_when_its_token_is_revoked() {
    let (srv, mut web, mut wc) = fleet().await;
    let (token, row) = srv
        .issue_token_at("alice", 3_600_000, now_ms())
        .await
        .unwrap();
    let mut c = srv.approver(&token).await.unwrap();
    let q = pb::AuditQueryRequest {
        host: "web-1".into(),
        follow: true,
        ..Default::default()
    };
    let mut tail = c.audit_query(q).await.unwrap().into_inner();
    for seq in 1..=4 {
        let e = tokio::time::timeout(T, tail.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.seq, seq);
    }
    let more = wc.records(2);
    assert_eq!(web.audit(batch(&more, &[]), T).await.unwrap().up_to_seq, 6);
    for seq in 5..=6 {
        let e = tokio::time::timeout(T, tail.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((e.host.as_str(), e.seq), ("web-1", seq));
    }
    srv.store.revoke_token(&row.id, now_ms()).await.unwrap();
    let end = tokio::time::timeout(T, tail.next()).await.unwrap();
    let e = end.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_query_returns_the_collectors_alerts() {
    let (srv, mut host, mut chain) = linked().await;
    let records = chain.records(3);
    let ack = host.audit(batch(&records[1..], &[]), T).await.unwrap();
    assert!(!ack.refused.is_empty());
    let q = pb::AuditQueryRequest {
        alerts: true,
        host: "web-1".into(),
        ..Default::default()
    };
    let a = query(&srv, q).await.unwrap();
    assert_eq!(a.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&a[0].record).unwrap();
    assert_eq!(v["host"], "web-1");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("record 1 is missing"),
        "{v}"
    );
    assert!(v["at_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(a[0].seq, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_and_the_chain_continues_from_the_pruned_anchor() {
    let (srv, mut host, mut chain) = linked().await;
    let first = chain.records(4);
    assert_eq!(
        host.audit(batch(&first, &[chain.checkpoint()]), T)
            .await
            .unwrap()
            .up_to_seq,
        4
    );
    let later = now_ms() + 3_600_000;
    let p = airlock_server::collector::prune(&srv.store, Duration::from_secs(60), later)
        .await
        .unwrap();
    assert_eq!((p.records, p.checkpoints), (4, 0));
    assert!(stored(&srv.store, "web-1").await.is_empty());
    assert_eq!(srv.store.audit_head("web-1").await.unwrap().seq, 4);
    // A resend of pruned records is skipped; the chain goes on from record 4.
    let next = chain.records(2);
    let mut resend = first[2..].to_vec();
    resend.extend(next.iter().cloned());
    let ack = host
        .audit(batch(&resend, &[chain.checkpoint()]), T)
        .await
        .unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (6, ""));
    assert_eq!(stored(&srv.store, "web-1").await, [5, 6]);
    // A record 7 that does not link to 6 is still refused.
    let mut fork = HostChain::new("web-1");
    let mut r: Record = serde_json::from_str(&fork.records(7)[6]).unwrap();
    r.seq = 7;
    r.hash = r.compute_hash().unwrap();
    let ack = host.audit(batch(&[canonical(&r)], &[]), T).await.unwrap();
    assert_eq!(ack.up_to_seq, 6);
    assert!(ack.refused.contains("does not link"), "{ack:?}");
}
