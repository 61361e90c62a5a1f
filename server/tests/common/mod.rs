//! What the store-level suites share: one database per case, SQLite or PostgreSQL, and the
//! [`cases!`] macro that runs each case on both.
use std::sync::Arc;

use airlock_approval::{Approver, DecisionRecord, Vote};
use airlock_server::store::{DbKind, Store};
use airlock_server::testing::pg::PgCluster;

/// One database for one case; keeps its file or cluster alive.
pub struct Db {
    pub url: String,
    pub kind: DbKind,
    _keep: Keep,
}

/// Held only for its `Drop` (deletes the file / releases the cluster).
#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Pg(Arc<PgCluster>),
}

impl Db {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = Store::sqlite_url(&dir.path().join("airlock.db"));
        Db {
            url,
            kind: DbKind::Sqlite,
            _keep: Keep::Dir(dir),
        }
    }

    /// A new database on the shared throwaway cluster; `None` (after a SKIP line) when
    /// PostgreSQL is not installed.
    pub fn postgres() -> Option<Db> {
        let c = PgCluster::shared()?;
        Some(Db {
            url: c.create_database(),
            kind: DbKind::Postgres,
            _keep: Keep::Pg(c),
        })
    }

    /// A new pool on this database (a second call = a second replica, or an admin command's
    /// process).
    pub async fn open(&self) -> Store {
        let s = Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url));
        assert_eq!(s.kind, self.kind);
        s
    }
}

/// The decision the server records when `v` decides, at `at`.
pub fn record_of(v: &Vote, at: u64) -> DecisionRecord {
    DecisionRecord {
        votes: Vec::new(),
        release: v.release,
        for_ms: v.for_ms,
        always: v.always,
        reason: v.reason.clone(),
        by: Some(Approver {
            uid: 0,
            pid: 0,
            user: None,
            via: "server".to_string(),
            principal: Some(v.principal.clone()),
        }),
        at_unix_ms: at,
    }
}

/// Runs each case (an `async fn(Db)` of the calling file) on both databases, as tests named
/// `sqlite::CASE` and `postgres::CASE`.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::common::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(db) = $crate::common::Db::postgres() else { return };
                    super::$case(db).await;
                }
            )*
        }
    };
}
