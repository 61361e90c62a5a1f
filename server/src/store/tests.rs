//! What the shared suite (`tests/store_suite.rs`) cannot see from outside: SQLite's
//! per-connection settings, the plan of the link's poll, URL handling.
use sqlx::Row;

use super::{RequestFilter, Store, StoreError};

async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(&dir.path().join("s.db")))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn sqlite_pragmas_on_every_connection() {
    let (_dir, store) = temp_store().await;
    // Several connections at once, so more than the first one is checked.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(store.pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(
            (mode.as_str(), sync, busy, fk, cache),
            ("wal", 2, 10_000, 1, -16384),
            "journal, synchronous=FULL, busy ms, fk, cache (negative: KiB)"
        );
    }
}

#[tokio::test]
async fn undelivered_poll_uses_the_partial_index() {
    let (_dir, store) = temp_store().await;
    let f = RequestFilter {
        host: Some("h".into()),
        decided_undelivered: true,
        ..Default::default()
    };
    let (sql, args) = super::requests::list_sql(&f);
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for a in args {
        q = q.bind(a);
    }
    let plan: Vec<String> = q
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(3).unwrap())
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("requests_undelivered")),
        "plan: {plan:#?}"
    );
}

#[tokio::test]
async fn foreign_keys_are_enforced() {
    let (_dir, store) = temp_store().await;
    let err = sqlx::query("INSERT INTO enrollments (token_sha256, host, created_ms, expires_ms) VALUES ('t', 'ghost', 0, 1)")
        .execute(&store.pool)
        .await;
    assert!(
        err.is_err(),
        "an enrolment token of an unknown host must be refused"
    );
}

#[tokio::test]
async fn sqlite_url_survives_odd_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a b#c?d%e é.db");
    let url = Store::sqlite_url(&path);
    assert!(url.starts_with("sqlite:///"), "{url}");
    let store = Store::open(&url).await.unwrap();
    store.close_pool().await;
    assert!(
        path.is_file(),
        "{} was not created (url {url})",
        path.display()
    );
    assert_eq!(
        Store::sqlite_url(std::path::Path::new("rel/x.db")),
        "sqlite:rel/x.db"
    );
}

#[test]
fn urls() {
    assert_eq!(
        super::open::with_create_mode("sqlite:///x.db"),
        "sqlite:///x.db?mode=rwc"
    );
    assert_eq!(
        super::open::with_create_mode("sqlite:///x.db?cache=private"),
        "sqlite:///x.db?cache=private&mode=rwc"
    );
    assert_eq!(
        super::open::with_create_mode("sqlite:///x.db?mode=ro"),
        "sqlite:///x.db?mode=ro"
    );
    assert!(matches!(
        super::open::kind_of("mysql://x"),
        Err(StoreError::BadUrl(_))
    ));
    assert!(matches!(
        super::open::kind_of("sqlite::memory:"),
        Err(StoreError::BadUrl(_))
    ));
    assert_eq!(
        super::open::kind_of("postgresql://u@h/db").unwrap(),
        super::DbKind::Postgres
    );
}

/// Guards the checkpointer (`open::Checkpointer`): a commit reaches the database file itself
/// within a few checkpoint periods, so no write pays for copying the WAL. Without it SQLite
/// leaves a small commit in the WAL until 1,000 (here: `BACKSTOP_CHECKPOINT_PAGES`) pages
/// have piled up, and a later writer copies them all before its caller hears back.
#[tokio::test]
async fn commits_reach_the_database_file_without_a_write_checkpointing() {
    let (dir, store) = temp_store().await;
    store
        .add_enrollment(
            "h1",
            &Default::default(),
            "secret-sha",
            9_999_999_999_999,
            1,
        )
        .await
        .unwrap();
    // `immutable=1` reads the database file as it is and ignores the WAL.
    let file = format!(
        "{}?immutable=1",
        Store::sqlite_url(&dir.path().join("s.db"))
    );
    let in_file = || async {
        use sqlx::{Connection as _, sqlite::SqliteConnection};
        let mut c = SqliteConnection::connect(&file).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE name = 'h1'")
            .fetch_one(&mut c)
            .await
            .unwrap_or(0);
        n
    };
    let t = std::time::Instant::now();
    while in_file().await == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "the commit is still only in the WAL after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close_pool().await;
}
