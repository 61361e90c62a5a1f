//! What a page of one host's records costs to read, whatever cursor it starts after: a
//! page, not every record of the host. Counted, not timed: SQLite's virtual machine steps
//! (its progress handler) and PostgreSQL's buffers and plans (`EXPLAIN`), on stores of
//! 300,000 records of three hosts, interleaved.
//!
//! Regression guard: a host's first page (cursor 0) used to read back all of the host's
//! records to find where to start (2.6 s for a host of 250,000 on this VM's SQLite), and a
//! cursor of another host's record all of the host's records after it.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{ConnectOptions, Row};

use super::audit::{HOST_NEAR, bound, records_sql};
use super::audit_pending_tests::{postgres, sqlite};
use super::{AuditFilter, DbKind, Store};

/// Records in the stores below, of [`HOSTS`] hosts taking turns: record `x` (from 0) is
/// host `web-{x % HOSTS}`'s, cursor `x + 1`.
const RECORDS: u64 = 300_000;
const HOSTS: u64 = 3;

/// Fills `s` with the rows [`RECORDS`] describes, without the collector's checks (a query
/// does not look at them), and gives PostgreSQL its statistics.
async fn fill(s: &Store, kind: DbKind) {
    let cols = "INSERT INTO audit_records (host, seq, hash, kind, corr, at_ms, agent, op, \
                decision, approver, record, cursor, stored_ms)";
    let row = format!(
        "SELECT 'web-' || (x % {HOSTS}), x / {HOSTS} + 1, 'h', 'k', NULL, x, NULL, NULL, NULL, \
         NULL, {}, x + 1, 0",
        match kind {
            DbKind::Sqlite => "hex(zeroblob(300))",
            DbKind::Postgres => "repeat('x', 600)",
        }
    );
    let last = RECORDS - 1;
    let sql = match kind {
        DbKind::Sqlite => format!(
            "WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < {last}) \
             {cols} {row} FROM g"
        ),
        DbKind::Postgres => format!("{cols} {row} FROM generate_series(0, {last}) AS g(x)"),
    };
    sqlx::query(&sql).execute(&s.pool).await.unwrap();
    if kind == DbKind::Postgres {
        sqlx::query("ANALYZE audit_records")
            .execute(&s.pool)
            .await
            .unwrap();
    }
}

/// Records retention deleted before the last case of [`starts`].
const PRUNED: u64 = 100_000;

/// The cursors a query of host `web-1` may start after, each with the first cursor it must
/// return (0: none): the host's first page; a page token (its own record); another host's
/// record just after one of its own; one past every record; and, once retention has
/// deleted the first [`PRUNED`] records, a token whose record it deleted (the last case).
const STARTS: [(&str, u64, u64); 5] = [
    ("first page", 0, 2),
    ("own record", 150_002, 150_005),
    ("another host's record", 150_003, 150_005),
    ("past every record", RECORDS + 1, 0),
    ("a deleted record", 50_002, PRUNED + 1),
];

/// Deletes the first [`PRUNED`] records, as retention would.
async fn prune(s: &Store, kind: DbKind) {
    sqlx::query("DELETE FROM audit_records WHERE cursor <= $1")
        .bind(PRUNED as i64)
        .execute(&s.pool)
        .await
        .unwrap();
    if kind == DbKind::Postgres {
        // As autovacuum would: until then every index scan steps over the deleted rows'
        // entries, whatever the query (measured here: the query).
        sqlx::query("VACUUM audit_records")
            .execute(&s.pool)
            .await
            .unwrap();
    }
}

fn filter(after: u64) -> AuditFilter {
    AuditFilter {
        host: Some("web-1".into()),
        after_cursor: after,
        limit: 50,
        ..Default::default()
    }
}

fn check_first(what: &str, cursors: &[u64], first: u64) {
    match first {
        0 => assert!(cursors.is_empty(), "{what}: {cursors:?}"),
        f => assert_eq!(cursors.first(), Some(&f), "{what}: {cursors:?}"),
    }
}

/// Virtual machine steps of one page of `web-1` after `after`, and the page's cursors.
async fn sqlite_steps(conn: &mut sqlx::SqliteConnection, after: u64) -> (u64, Vec<u64>) {
    let (sql, args) = records_sql(&filter(after), DbKind::Sqlite);
    let steps = Arc::new(AtomicU64::new(0));
    let counter = steps.clone();
    // The handler runs every 100 steps.
    conn.lock_handle()
        .await
        .unwrap()
        .set_progress_handler(100, move || {
            counter.fetch_add(100, Ordering::Relaxed);
            true
        });
    let rows = bound(&sql, args).fetch_all(&mut *conn).await.unwrap();
    conn.lock_handle().await.unwrap().remove_progress_handler();
    let cursors = rows
        .iter()
        .map(|r| r.get::<i64, _>("cursor") as u64)
        .collect();
    (steps.load(Ordering::Relaxed), cursors)
}

#[tokio::test]
async fn sqlite_a_host_query_reads_a_page_not_the_whole_host() {
    let (dir, s) = sqlite().await;
    fill(&s, DbKind::Sqlite).await;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("s.db"))
        .connect()
        .await
        .unwrap();
    // Reading the HOST_NEAR records back from another host's cursor takes about 14 steps
    // each; a page of 50 records a few hundred more. Reading the host's 100,000 records
    // back from its newest took 501,000 for the first page.
    let most = 20 * HOST_NEAR;
    for (i, (what, after, first)) in STARTS.into_iter().enumerate() {
        if i == STARTS.len() - 1 {
            prune(&s, DbKind::Sqlite).await;
        }
        let (steps, cursors) = sqlite_steps(&mut conn, after).await;
        check_first(what, &cursors, first);
        assert!(steps < most, "{what}: {steps} steps");
    }
}

/// PostgreSQL's plan of one page of `web-1` after `after`, with `options`.
async fn postgres_plan(s: &Store, after: u64, options: &str) -> String {
    let (sql, args) = records_sql(&filter(after), DbKind::Postgres);
    let explain = format!("EXPLAIN ({options}) {sql}");
    let rows = bound(&explain, args).fetch_all(&s.pool).await.unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    lines.join("\n")
}

/// Buffers (8 KiB pages) a plan run with `ANALYZE, BUFFERS` touched: its first `Buffers:`
/// line is the top node's, whose counts include every node below it, subqueries too.
fn buffers(plan: &str) -> u64 {
    let top = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Buffers: shared "))
        .unwrap_or_else(|| panic!("no buffers in\n{plan}"));
    top.split([' ', ','])
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| ["hit", "read"].contains(k))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn postgres_a_host_query_reads_a_page_not_the_whole_host() {
    let Some((_c, s)) = postgres().await else {
        return;
    };
    fill(&s, DbKind::Postgres).await;
    // The HOST_NEAR records before another host's cursor are read from about 420 pages (the
    // index and the rows); a page of 50 from a few dozen. Reading the host's records back
    // from its newest, 50,000 of them after another host's cursor, touched 14,045.
    let most = 1_000;
    for (i, (what, after, first)) in STARTS.into_iter().enumerate() {
        if i == STARTS.len() - 1 {
            prune(&s, DbKind::Postgres).await;
        }
        let plan = postgres_plan(&s, after, "ANALYZE, BUFFERS").await;
        let n = buffers(&plan);
        assert!(n < most, "{what}: {n} buffers\n{plan}");
        let rows = s.audit_records(&filter(after)).await.unwrap();
        let cursors: Vec<u64> = rows.iter().map(|r| r.cursor).collect();
        check_first(what, &cursors, first);
    }
}

/// PostgreSQL plans: a host's next page comes from the primary key in order, whatever the
/// page token, not from every later record of every host through the cursor index (then
/// sorted), which PostgreSQL chose while the cursor bounds could serve as an index
/// condition.
#[tokio::test]
async fn postgres_a_host_query_reads_its_next_records_from_the_primary_key() {
    let Some((_c, s)) = postgres().await else {
        return;
    };
    fill(&s, DbKind::Postgres).await;
    for after in [0_u64, 10, 150_000, 299_990] {
        let plan = postgres_plan(&s, after, "COSTS ON").await;
        assert!(
            plan.contains("Index Scan using audit_records_pkey on audit_records  ("),
            "after {after}:\n{plan}"
        );
        assert!(
            !plan.contains("Sort Key: audit_records.seq"),
            "after {after}:\n{plan}"
        );
    }
}
