//! `airlock-server audit verify`: the collector's store checked again, as a security team
//! would after the fact. Guarded: a whole store verifies with counts; a record changed,
//! deleted or dropped from the tail directly in the database is reported with the first bad
//! sequence number, and only for the host whose chain was touched.
use std::time::Duration;

use airlock_server::audit_verify::verify_store;
use airlock_server::testing::audit::{HostChain, batch};
use airlock_server::testing::{FakeHost, TestServer};

const T: Duration = Duration::from_secs(5);

/// A server holding `n` records of `web-1` and of `web-2`, each chain with a checkpoint at
/// its head; and a raw connection to its database.
async fn filled(n: usize) -> (TestServer, sqlx::AnyPool) {
    let srv = TestServer::start().await.unwrap();
    for name in ["web-1", "web-2"] {
        let mut chain = HostChain::new(name);
        let id = srv.enroll(name).await.unwrap();
        let mut host =
            FakeHost::connect_with_audit_key(&srv.url, &srv.ca_pem, &id, &chain.verifier_key())
                .await
                .unwrap();
        let records = chain.records(n);
        let ack = host
            .audit(batch(&records, &[chain.checkpoint()]), T)
            .await
            .unwrap();
        assert_eq!(ack.refused, "");
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&srv.database).await.unwrap();
    (srv, pool)
}

async fn exec(pool: &sqlx::AnyPool, sql: &str) {
    let done = sqlx::query(sql).execute(pool).await.unwrap();
    assert!(done.rows_affected() > 0, "{sql}: nothing changed");
}

/// `(host, first bad seq)` of each broken chain, and the records checked per host.
async fn verdicts(srv: &TestServer) -> (Vec<(String, u64)>, Vec<u64>) {
    let reports = verify_store(&srv.store, None).await.unwrap();
    let broken = reports
        .iter()
        .filter_map(|r| Some((r.host.clone(), r.problem.as_ref()?.first_bad_seq())))
        .collect();
    (broken, reports.iter().map(|r| r.counts.records).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_store_verifies_with_its_checkpoints() {
    let (srv, _pool) = filled(12).await;
    let reports = verify_store(&srv.store, None).await.unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.problem, None, "{r:?}");
        assert_eq!(r.counts.records, 12);
        assert_eq!(r.counts.checkpoints_verified, 1);
        assert!(r.counts.anchored);
    }
    let one = verify_store(&srv.store, Some("web-2")).await.unwrap();
    assert_eq!(one.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_in_the_database_is_named_by_seq() {
    let (srv, pool) = filled(12).await;
    exec(
        &pool,
        "UPDATE audit_records SET record = REPLACE(record, '\"event.allowed\"', '\"event.denied\"') \
         WHERE host = 'web-1' AND seq = 7",
    )
    .await;
    let (broken, _) = verdicts(&srv).await;
    assert_eq!(broken, [("web-1".to_string(), 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_in_the_database_is_named_by_seq() {
    let (srv, pool) = filled(12).await;
    exec(
        &pool,
        "DELETE FROM audit_records WHERE host = 'web-2' AND seq = 4",
    )
    .await;
    let (broken, _) = verdicts(&srv).await;
    assert_eq!(broken, [("web-2".to_string(), 4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_records_dropped_in_the_database_are_caught_by_the_checkpoint() {
    let (srv, pool) = filled(12).await;
    exec(
        &pool,
        "DELETE FROM audit_records WHERE host = 'web-1' AND seq > 9",
    )
    .await;
    let (broken, counts) = verdicts(&srv).await;
    assert_eq!(broken, [("web-1".to_string(), 10)]);
    assert_eq!(counts, [9, 12]);
}
