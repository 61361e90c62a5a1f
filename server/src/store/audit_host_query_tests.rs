//! Numbering and reading one host's records (migration 0007): a batch stored in several
//! statements gets its cursors from the counter in chain order (`audit_batch.rs`), and a
//! query of one host, read from the primary key `(host, seq)` in seq order, returns exactly
//! what a filter of every record by host and cursor would, after any cursor: one of its own
//! records, another host's, one of no record, one retention deleted.
use airlock_audit::{Anchor, Kind};
use serde_json::json;

use super::audit::{HOST_NEAR, PRUNE_CUTS_SQL, records_sql};
use super::audit_pending_tests::{postgres, sqlite};
use super::{AuditFilter, AuditRow, DbKind, NewAuditRecord, Store};
use crate::testing::audit::HostChain;
use crate::testing::pg::PgCluster;

const NOW: u64 = 1_700_000_000_000;

/// Stores `n` more records of `chain` (host `host`, head `head`) at `now`; returns the new head.
async fn store(
    s: &Store,
    host: &str,
    chain: &mut HostChain,
    head: Anchor,
    n: usize,
    now: u64,
) -> Anchor {
    let rows: Vec<NewAuditRecord> = (0..n)
        .map(|i| {
            let (r, text) = chain.seal(Kind::EventHeld, None, json!({"op": "exec", "i": i}));
            NewAuditRecord::new(&r, text)
        })
        .collect();
    s.store_audit_batch(host, head, &rows, &[], now)
        .await
        .unwrap()
}

async fn all(s: &Store) -> Vec<AuditRow> {
    s.audit_records(&AuditFilter {
        limit: u32::MAX,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Batch sizes of web-1 and web-2, stored in turn: sizes that split into statements of
/// every shape (1500 = 1024 + 256 + 128 + 64 + 16 + 8 + 4), and a run of web-2's records
/// longer than [`HOST_NEAR`] (2 × 2100), after which web-1 stores again (a query of web-1
/// after a cursor late in that run reads back from web-1's newest record). The first two
/// rounds are stored an hour before the rest.
const ROUNDS: [(usize, usize); 7] = [
    (1500, 7),
    (3, 1),
    (5, 1500),
    (2, 9),
    (3, 2100),
    (0, 2100),
    (1, 1),
];

/// Two hosts' batches, interleaved as [`ROUNDS`] says.
async fn interleaved(s: &Store) {
    let (mut a, mut b) = (HostChain::new("web-1"), HostChain::new("web-2"));
    for (host, c) in [("web-1", &a), ("web-2", &b)] {
        s.set_audit_key_if_absent(host, &c.verifier_key(), NOW)
            .await
            .unwrap();
    }
    let (mut ha, mut hb) = (Anchor::GENESIS, Anchor::GENESIS);
    for (i, (na, nb)) in ROUNDS.into_iter().enumerate() {
        let now = if i < 2 { NOW } else { NOW + 3_600_000 };
        if na > 0 {
            ha = store(s, "web-1", &mut a, ha, na, now).await;
        }
        hb = store(s, "web-2", &mut b, hb, nb, now).await;
    }
}

async fn numbered_in_chain_order(s: Store) {
    interleaved(&s).await;
    let rows = all(&s).await;
    assert_eq!(rows.len(), ROUNDS.iter().map(|(a, b)| a + b).sum::<usize>());
    // Every cursor once, none skipped, and each host's records in chain order.
    let cursors: Vec<u64> = rows.iter().map(|r| r.cursor).collect();
    assert_eq!(cursors, (1..=rows.len() as u64).collect::<Vec<_>>());
    for host in ["web-1", "web-2"] {
        let seqs: Vec<u64> = rows
            .iter()
            .filter(|r| r.host == host)
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{host}");
    }
}

/// What a query of `host` after `after` must return: every record of the host with a
/// larger cursor, in cursor order, at most `limit`.
fn expected(rows: &[AuditRow], host: &str, after: u64, limit: usize) -> Vec<AuditRow> {
    rows.iter()
        .filter(|r| r.host == host && r.cursor > after)
        .take(limit)
        .cloned()
        .collect()
}

/// Cursors of web-2's records with no record of web-1 among the [`HOST_NEAR`] before them,
/// web-1 having records after them: a query of web-1 after one reads back from its newest.
fn far_from_web1(rows: &[AuditRow]) -> Vec<u64> {
    let last_web1 = rows
        .iter()
        .rev()
        .find(|r| r.host == "web-1")
        .map(|r| r.cursor);
    let mut before = None;
    let mut far = Vec::new();
    for r in rows {
        if r.host == "web-1" {
            before = Some(r.cursor);
        } else if let (Some(b), Some(l)) = (before, last_web1)
            && r.cursor - b > HOST_NEAR
            && l > r.cursor
        {
            far.push(r.cursor);
        }
    }
    far
}

async fn check_every_cursor(s: &Store, rows: &[AuditRow], what: &str) {
    let last = rows.last().map_or(0, |r| r.cursor);
    let far = far_from_web1(rows);
    assert!(far.len() > 90, "{what}: {far:?}");
    for host in ["web-1", "web-2"] {
        for (i, after) in (0..=last + 1)
            .step_by(7)
            .chain([0, 1, 1507, 1508, last, last + 1])
            .chain(far.iter().copied().step_by(3))
            .enumerate()
        {
            // Whole pages of thousands of rows only now and then: they are slow to check.
            let limits: &[u32] = if i % 16 == 0 {
                &[1, 50, 5000]
            } else {
                &[1, 50]
            };
            for &limit in limits {
                let got = s
                    .audit_records(&AuditFilter {
                        host: Some(host.into()),
                        after_cursor: after,
                        limit,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(
                    got,
                    expected(rows, host, after, limit as usize),
                    "{what}: {host} after {after}, limit {limit}"
                );
            }
        }
    }
}

async fn host_queries_after_any_cursor(s: Store) {
    interleaved(&s).await;
    let rows = all(&s).await;
    check_every_cursor(&s, &rows, "all stored").await;
    // Retention deletes the first half (stored an hour before the rest).
    let pruned = s.prune_audit(NOW + 1).await.unwrap();
    assert_eq!(pruned.records, 1500 + 7 + 3 + 1);
    let kept = all(&s).await;
    assert_eq!(kept.first().map(|r| r.cursor), Some(1500 + 7 + 3 + 1 + 1));
    check_every_cursor(&s, &kept, "after retention").await;
    // Each chain continues from the last record retention deleted.
    assert_eq!(
        s.audit_head("web-1").await.unwrap().seq,
        ROUNDS.iter().map(|(a, _)| *a as u64).sum::<u64>()
    );
}

#[tokio::test]
async fn sqlite_a_batch_in_several_statements_is_numbered_in_chain_order() {
    numbered_in_chain_order(sqlite().await.1).await;
}

#[tokio::test]
async fn postgres_a_batch_in_several_statements_is_numbered_in_chain_order() {
    let Some((_c, s)) = postgres().await else {
        return;
    };
    numbered_in_chain_order(s).await;
}

#[tokio::test]
async fn sqlite_a_host_query_returns_its_records_after_any_cursor() {
    host_queries_after_any_cursor(sqlite().await.1).await;
}

#[tokio::test]
async fn postgres_a_host_query_returns_its_records_after_any_cursor() {
    let Some((_c, s)) = postgres().await else {
        return;
    };
    host_queries_after_any_cursor(s).await;
}

/// SQLite's plan for `sql`, one line per step.
async fn plan(s: &Store, sql: &str) -> String {
    let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(&s.pool)
        .await
        .unwrap();
    rows.iter()
        .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn sqlite_host_queries_and_retention_read_through_indexes() {
    let (_dir, s) = sqlite().await;
    let f = AuditFilter {
        host: Some("web-1".into()),
        after_cursor: 10,
        limit: 50,
        ..Default::default()
    };
    let host = plan(&s, &records_sql(&f, DbKind::Sqlite).0).await;
    let lines: Vec<&str> = host.lines().collect();
    // The host's records from the primary key, after the seq found through the cursor index
    // (its page token, or the records just before the cursor) or the primary key (the
    // host's oldest, or read back from its newest).
    assert!(
        lines[0].contains("USING INDEX sqlite_autoindex_audit_records_1 (host=? AND seq>?)"),
        "{host}"
    );
    for index in ["(cursor=?)", "(cursor<?)"] {
        assert!(
            host.contains(&format!("USING INDEX audit_records_cursor {index}")),
            "{host}"
        );
    }
    // No table scan, nor an index built for one query.
    assert!(!host.contains("SCAN audit_records"), "{host}");
    assert!(!host.contains("AUTOMATIC"), "{host}");
    let cuts = plan(&s, PRUNE_CUTS_SQL).await;
    assert!(
        cuts.contains("USING INDEX audit_records_cursor (cursor<?)"),
        "{cuts}"
    );
    assert!(!cuts.contains("SCAN audit_records"), "{cuts}");
}

/// A store whose records were stored before migrations 0007 and 0008 (with the `prev`
/// column and the `(host, cursor)` index): they are read as before after the upgrade, and
/// the chain goes on from them.
async fn records_stored_before_0007_survive_the_upgrade(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let old = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            super::open::MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version <= 6)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    old.run(&pool).await.unwrap();
    let mut chain = HostChain::new("web-1");
    let sealed: Vec<_> = (0..3)
        .map(|i| chain.seal(Kind::EventHeld, None, json!({"op": "exec", "i": i})))
        .collect();
    sqlx::query(
        "INSERT INTO audit_hosts (host, verifier_key, first_seen_ms, pruned_seq, pruned_hash) \
         VALUES ('web-1', $1, 0, 0, $2)",
    )
    .bind(chain.verifier_key())
    .bind(airlock_audit::Hash::ZERO.to_string())
    .execute(&pool)
    .await
    .unwrap();
    for (r, text) in &sealed[..2] {
        sqlx::query(
            "INSERT INTO audit_records (host, seq, hash, prev, kind, corr, at_ms, agent, op, \
             decision, approver, record, cursor, stored_ms) \
             VALUES ('web-1', $1, $2, $3, $4, NULL, $5, NULL, 'exec', NULL, NULL, $6, $1, 0)",
        )
        .bind(i64::try_from(r.seq).unwrap())
        .bind(r.hash.to_string())
        .bind(r.prev.to_string())
        .bind(r.kind.as_str())
        .bind(i64::try_from(r.at_unix_ms).unwrap())
        .bind(text.as_str())
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE audit_counters SET value = 2 WHERE name = 'records'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let s = Store::open(url).await.unwrap();
    let head = s.audit_head("web-1").await.unwrap();
    assert_eq!(head.seq, 2);
    let (r, text) = &sealed[2];
    s.store_audit_batch(
        "web-1",
        head,
        &[NewAuditRecord::new(r, text.clone())],
        &[],
        NOW,
    )
    .await
    .unwrap();
    let got = s
        .audit_records(&AuditFilter {
            host: Some("web-1".into()),
            after_cursor: 1,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = got
        .iter()
        .map(|r| (r.seq, r.cursor, r.record.as_str()))
        .collect();
    assert_eq!(
        got,
        [(2, 2, sealed[1].1.as_str()), (3, 3, sealed[2].1.as_str())]
    );
}

#[tokio::test]
async fn sqlite_records_stored_before_0007_survive_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let url = Store::sqlite_url(&dir.path().join("old.db"));
    let url = if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    records_stored_before_0007_survive_the_upgrade(&url).await;
}

#[tokio::test]
async fn postgres_records_stored_before_0007_survive_the_upgrade() {
    let Some(c) = PgCluster::shared() else {
        return;
    };
    records_stored_before_0007_survive_the_upgrade(&c.create_database()).await;
}
