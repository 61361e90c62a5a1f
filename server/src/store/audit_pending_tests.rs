//! Overlapping stores of audit batches (`audit_order.rs`, `audit_copy.rs`, migration 0006),
//! through the store's own seams: turns the test holds, and the reservations table.
//!
//! What is guarded: a reader never moves past the cursors of a batch still storing, so it
//! cannot skip records that commit later with smaller cursors; a batch stored behind one that
//! failed stores nothing and holds no reader back; a reservation holds readers back only
//! while its batch's transaction runs (a query of one host, only for that host's batches),
//! and retention deletes one left behind.
use airlock_audit::{Anchor, Kind};
use serde_json::json;
use sqlx::Row;

use super::audit_order::AuditTurn;
use super::{AuditFilter, NewAuditRecord, Store, StoreError};
use crate::testing::audit::HostChain;
use crate::testing::pg::PgCluster;

const NOW: u64 = 1_700_000_000_000;

/// A store on a new database of the shared cluster (None: PostgreSQL is not installed, which
/// `PgCluster::start` refuses under CI=true).
pub(super) async fn postgres() -> Option<(std::sync::Arc<PgCluster>, Store)> {
    let c = PgCluster::shared()?;
    let s = Store::open(&c.create_database()).await.unwrap();
    Some((c, s))
}

/// A store on a new SQLite file.
pub(super) async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&Store::sqlite_url(&dir.path().join("s.db")))
        .await
        .unwrap();
    (dir, s)
}

fn rows(chain: &mut HostChain, n: usize) -> Vec<NewAuditRecord> {
    (0..n)
        .map(|i| {
            let (r, text) = chain.seal(Kind::EventHeld, None, json!({"op": "exec", "i": i}));
            NewAuditRecord::new(&r, text)
        })
        .collect()
}

fn tip(rows: &[NewAuditRecord]) -> Anchor {
    let r = rows.last().unwrap();
    Anchor {
        seq: r.seq,
        hash: r.hash,
    }
}

/// Every stored record as (host, seq), in cursor order.
async fn read(s: &Store) -> Vec<(String, u64)> {
    let f = AuditFilter {
        limit: 10_000,
        ..Default::default()
    };
    let got = s.audit_records(&f).await.unwrap();
    assert!(got.windows(2).all(|w| w[0].cursor < w[1].cursor));
    got.into_iter().map(|r| (r.host, r.seq)).collect()
}

fn seqs(host: &str, range: std::ops::RangeInclusive<u64>) -> Vec<(String, u64)> {
    range.map(|q| (host.to_string(), q)).collect()
}

async fn keyed(s: &Store, chains: &[(&str, &HostChain)]) {
    for (host, c) in chains {
        s.set_audit_key_if_absent(host, &c.verifier_key(), NOW)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_stops_below_a_batch_still_storing_then_sees_it_in_cursor_order() {
    let Some((_c, s)) = postgres().await else {
        return;
    };
    let (mut a, mut b) = (HostChain::new("web-1"), HostChain::new("web-2"));
    keyed(&s, &[("web-1", &a), ("web-2", &b)]).await;
    let first = rows(&mut a, 2);
    let head = s
        .store_audit_batch("web-1", Anchor::GENESIS, &first, &[], NOW)
        .await
        .unwrap();
    // web-1's next batch is stored behind a batch the test holds: it reserves its cursors
    // and copies its records, then waits for that batch's commit.
    let (gate, gate_follow) = AuditTurn::first();
    let (turn, mut follow) = AuditTurn::after(&gate_follow);
    gate.reserved();
    let held = rows(&mut a, 3);
    let task = {
        let (s, held) = (s.clone(), held.clone());
        tokio::spawn(async move {
            s.store_audit_batch_in_turn("web-1", head, &held, &[], NOW, turn)
                .await
        })
    };
    assert!(
        follow.reserved().await,
        "the held batch reserved its cursors"
    );
    // web-2 stores a batch meanwhile: larger cursors, committed first.
    let other = rows(&mut b, 4);
    s.store_audit_batch("web-2", Anchor::GENESIS, &other, &[], NOW)
        .await
        .unwrap();
    assert_eq!(
        read(&s).await,
        seqs("web-1", 1..=2),
        "nothing past the reservation of the batch still storing"
    );
    gate.committed();
    assert_eq!(task.await.unwrap().unwrap(), tip(&held));
    let mut want = seqs("web-1", 1..=5);
    want.extend(seqs("web-2", 1..=4));
    assert_eq!(read(&s).await, want, "its records come before web-2's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_behind_one_that_failed_stores_nothing_and_holds_no_reader_back() {
    let pg = postgres().await;
    let lite = sqlite().await;
    let mut stores = vec![lite.1.clone()];
    stores.extend(pg.as_ref().map(|p| p.1.clone()));
    for s in stores {
        let (mut a, mut b) = (HostChain::new("web-1"), HostChain::new("web-2"));
        keyed(&s, &[("web-1", &a), ("web-2", &b)]).await;
        let ahead = rows(&mut a, 2);
        let behind = rows(&mut a, 2);
        let (gate, gate_follow) = AuditTurn::first();
        let (turn, _) = AuditTurn::after(&gate_follow);
        let task = {
            let s = s.clone();
            tokio::spawn(async move {
                s.store_audit_batch_in_turn("web-1", tip(&ahead), &behind, &[], NOW, turn)
                    .await
            })
        };
        gate.reserved();
        // The batch ahead fails (its turn is dropped without a commit).
        drop(gate);
        let e = task.await.unwrap().unwrap_err();
        assert!(
            matches!(e, StoreError::AuditAheadFailed { ref host } if host == "web-1"),
            "{e:?}"
        );
        assert_eq!(s.audit_head("web-1").await.unwrap(), Anchor::GENESIS);
        let other = rows(&mut b, 3);
        s.store_audit_batch("web-2", Anchor::GENESIS, &other, &[], NOW)
            .await
            .unwrap();
        assert_eq!(
            read(&s).await,
            seqs("web-2", 1..=3),
            "{:?}: the failed batch's reservation is gone",
            s.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_holds_readers_while_its_transaction_runs_not_once_it_ended() {
    let Some((_c, s)) = postgres().await else {
        return;
    };
    let (mut a, mut b) = (HostChain::new("web-1"), HostChain::new("web-2"));
    keyed(&s, &[("web-1", &a), ("web-2", &b)]).await;
    // A batch of web-1 that reserved cursor 1 and is still storing (its transaction open).
    sqlx::query("UPDATE audit_counters SET value = 5 WHERE name = 'records'")
        .execute(&s.pool)
        .await
        .unwrap();
    let mut storing = s.pool.begin().await.unwrap();
    let xid: i64 = sqlx::query("SELECT pg_current_xact_id()::text::bigint AS x")
        .fetch_one(&mut *storing)
        .await
        .unwrap()
        .try_get("x")
        .unwrap();
    sqlx::query("INSERT INTO audit_pending (first_cursor, host, xid) VALUES (1, 'web-1', $1)")
        .bind(xid)
        .execute(&s.pool)
        .await
        .unwrap();
    s.store_audit_batch("web-1", Anchor::GENESIS, &rows(&mut a, 2), &[], NOW)
        .await
        .unwrap();
    s.store_audit_batch("web-2", Anchor::GENESIS, &rows(&mut b, 2), &[], NOW)
        .await
        .unwrap();
    assert_eq!(read(&s).await, [], "held back while it runs");
    let only = |host: &str| AuditFilter {
        host: Some(host.into()),
        limit: 100,
        ..Default::default()
    };
    let n1 = s.audit_records(&only("web-1")).await.unwrap().len();
    let n2 = s.audit_records(&only("web-2")).await.unwrap().len();
    assert_eq!(
        (n1, n2),
        (0, 2),
        "a query of one host waits only for that host's batches"
    );
    // Its process dies: the transaction ends without committing or deleting the row.
    storing.rollback().await.unwrap();
    let mut want = seqs("web-1", 1..=2);
    want.extend(seqs("web-2", 1..=2));
    assert_eq!(read(&s).await, want, "ignored once its transaction ended");
    s.prune_audit(0).await.unwrap();
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_pending")
        .fetch_one(&s.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(left, 0, "retention deletes it");
}
