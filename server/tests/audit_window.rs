//! Pipelined audit batches: a host may send the next batch before the previous one's
//! `AuditAck` (airlockd keeps two in flight), and the collector stores a batch while the one
//! before it commits. Each case runs on SQLite (`sqlite::CASE`) and PostgreSQL
//! (`postgres::CASE`, where the two stores overlap in the database).
//!
//! What is guarded: acks come in batch order, each after its batch is stored; a batch sent
//! right behind a refused one is refused too (it does not continue the stored head) without an
//! alert of its own, nothing of either is stored, and the host goes on from the stored head;
//! a link whose audit batches wait for the database still delivers decisions (PostgreSQL,
//! where the test can hold the records table alone).
// Only `Db` and `cases!` are used here.
#[allow(dead_code)]
#[macro_use]
mod common;

use std::time::Duration;

use airlock_audit::Record;
use airlock_server::store::{AuditFilter, Store};
use airlock_server::testing::audit::{HostChain, batch, canonical};
use airlock_server::testing::{
    FakeHost, Options, TestServer, approve, new_id, request, wait_stored,
};
use common::Db;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

cases!(
    batches_in_flight_are_stored_and_acked_in_order,
    a_batch_behind_a_refused_one_is_refused_quietly_then_the_host_resends,
    a_resend_overlapping_the_batch_being_stored_waits_for_it,
);

async fn linked(db: &Db) -> (TestServer, FakeHost, HostChain) {
    let srv = TestServer::with(Options {
        database: Some(db.url.clone()),
        ..Options::default()
    })
    .await
    .unwrap();
    let chain = HostChain::new("web-1");
    let id = srv.enroll("web-1").await.unwrap();
    let host = FakeHost::connect_with_audit_key(&srv.url, &srv.ca_pem, &id, &chain.verifier_key())
        .await
        .unwrap();
    (srv, host, chain)
}

async fn stored(s: &Store) -> Vec<u64> {
    let f = AuditFilter {
        host: Some("web-1".into()),
        limit: 10_000,
        ..Default::default()
    };
    let rows = s.audit_records(&f).await.unwrap();
    rows.iter().map(|r| r.seq).collect()
}

async fn alerts(s: &Store) -> usize {
    let f = AuditFilter {
        limit: 10_000,
        ..Default::default()
    };
    s.audit_alerts(&f).await.unwrap().len()
}

async fn batches_in_flight_are_stored_and_acked_in_order(db: Db) {
    let (srv, mut host, mut chain) = linked(&db).await;
    let records = chain.records(40);
    let cp = chain.checkpoint();
    // Eight batches of five at once; the last carries a checkpoint over its last record.
    for (i, part) in records.chunks(5).enumerate() {
        let cps = if i == 7 { vec![cp.clone()] } else { Vec::new() };
        host.send_audit(batch(part, &cps)).unwrap();
    }
    for i in 1..=8 {
        let ack = host.audit_ack(T).await.unwrap();
        assert_eq!((ack.up_to_seq, ack.refused.as_str()), (5 * i, ""));
    }
    assert_eq!(stored(&srv.store).await, (1..=40).collect::<Vec<_>>());
    assert_eq!(
        srv.store.audit_checkpoints("web-1").await.unwrap(),
        [(40, cp)]
    );
    assert_eq!(alerts(&srv.store).await, 0);
}

async fn a_batch_behind_a_refused_one_is_refused_quietly_then_the_host_resends(db: Db) {
    let (srv, mut host, mut chain) = linked(&db).await;
    let good = chain.records(2);
    host.send_audit(batch(&good, &[])).unwrap();
    let next = chain.records(6); // seq 3..=8
    // Record 4 changed after it was written (hash kept), and the batch after it in flight.
    let mut r: Record = serde_json::from_str(&next[1]).unwrap();
    r.body = json!({"op": "exec", "i": 99});
    let changed = vec![next[0].clone(), canonical(&r), next[2].clone()];
    host.send_audit(batch(&changed, &[])).unwrap();
    host.send_audit(batch(&next[3..], &[])).unwrap();

    let ack = host.audit_ack(T).await.unwrap();
    assert_eq!((ack.up_to_seq, ack.refused.as_str()), (2, ""));
    let ack = host.audit_ack(T).await.unwrap();
    assert_eq!(ack.up_to_seq, 2);
    assert!(ack.refused.contains("record 4 was changed"), "{ack:?}");
    let behind = host.audit_ack(T).await.unwrap();
    assert_eq!(behind.up_to_seq, 2);
    assert!(behind.refused.contains("resend"), "{behind:?}");
    assert_eq!(stored(&srv.store).await, [1, 2]);
    assert_eq!(alerts(&srv.store).await, 1, "one alert: the changed record");

    // A batch that skips records is still a gap, and alerted, after the quiet refusal.
    let ack = host.audit(batch(&next[4..], &[]), T).await.unwrap();
    assert!(ack.refused.contains("record 3 is missing"), "{ack:?}");
    assert_eq!(alerts(&srv.store).await, 2);

    // The host resends from the stored head, two batches in flight.
    host.send_audit(batch(&next[..3], &[])).unwrap();
    host.send_audit(batch(&next[3..], &[])).unwrap();
    for up_to in [5, 8] {
        let ack = host.audit_ack(T).await.unwrap();
        assert_eq!((ack.up_to_seq, ack.refused.as_str()), (up_to, ""));
    }
    assert_eq!(stored(&srv.store).await, (1..=8).collect::<Vec<_>>());
}

async fn a_resend_overlapping_the_batch_being_stored_waits_for_it(db: Db) {
    let (srv, mut host, mut chain) = linked(&db).await;
    let records = chain.records(6);
    // The second batch repeats record 3 of the first: it is checked against the stored
    // record once the first is committed, not against the one in flight.
    host.send_audit(batch(&records[..3], &[])).unwrap();
    host.send_audit(batch(&records[2..], &[])).unwrap();
    for up_to in [3, 6] {
        let ack = host.audit_ack(T).await.unwrap();
        assert_eq!((ack.up_to_seq, ack.refused.as_str()), (up_to, ""));
    }
    assert_eq!(stored(&srv.store).await, (1..=6).collect::<Vec<_>>());
    assert_eq!(alerts(&srv.store).await, 0);
}

/// Regression: the link's session once verified and stored audit batches itself, so while a
/// batch waited for the database (here: behind two others, whose COPY waits for a lock) it
/// read nothing else: a decision for the host waited as long as the database did. The
/// batches now go to the link's audit task (`collector/pipe.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_decision_reaches_the_host_while_its_audit_batches_wait_for_the_database() {
    let Some(db) = Db::postgres() else {
        return;
    };
    let (srv, mut host, mut chain) = linked(&db).await;
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();

    // Another session holds the records table: every COPY into it waits.
    let mut lock = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE audit_records IN EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let records = chain.records(15);
    for part in records.chunks(5) {
        host.send_audit(batch(part, &[])).unwrap();
    }
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice.decide(approve(&r.id)).await.unwrap();
    let d = host.decision(T).await.unwrap();
    assert_eq!(
        d.decide.unwrap().id,
        r.id,
        "delivered while the batches wait"
    );
    assert_eq!(stored(&srv.store).await, Vec::<u64>::new());

    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    for up_to in [5, 10, 15] {
        let ack = host.audit_ack(T).await.unwrap();
        assert_eq!((ack.up_to_seq, ack.refused.as_str()), (up_to, ""));
    }
    assert_eq!(stored(&srv.store).await, (1..=15).collect::<Vec<_>>());
}
