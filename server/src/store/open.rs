//! Connecting: the URL, SQLite's pragmas, the pools, the migrations.
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor};

use super::{DbKind, Store, StoreError, audit_copy};

/// `server/migrations/`, embedded at build time and applied by [`Store::open`].
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a SQLite writer waits for another process's write lock before failing. Writes
/// are a few statements long, so this is only reached when something holds the file for
/// far longer than any request should wait (a backup tool, a stuck replica).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// Connections per pool. SQLite has one writer at a time anyway (readers run beside it in
/// WAL mode); PostgreSQL gets enough for the link's polls plus concurrent votes.
const SQLITE_POOL: u32 = 8;
const POSTGRES_POOL: u32 = 16;
/// PostgreSQL connections for [`Store::upsert_opened`] (see `Store::relaxed`).
const RELAXED_POSTGRES_POOL: u32 = 4;

/// Run on every new SQLite connection (these settings are per connection):
/// - `synchronous = FULL` (`NORMAL` for the relaxed pool, see `Store::relaxed`): in WAL mode,
///   NORMAL only syncs the WAL at checkpoints, so a committed decision could be lost to a power cut while the host has already been told to
///   release (or the approver told "decided"). FULL syncs the WAL at every commit: one fsync
///   per write transaction, which the store's transactions are few and short enough to afford.
/// - `busy_timeout`: see [`SQLITE_BUSY_TIMEOUT_MS`].
/// - `foreign_keys = ON`: SQLite leaves them off unless asked, per connection (sqlx already
///   asks; repeated here so the setting does not depend on the driver's defaults).
/// - `wal_autocheckpoint`: see [`BACKSTOP_CHECKPOINT_PAGES`].
/// - `cache_size`: see [`SQLITE_CACHE_KIB`].
fn sqlite_pragmas(synchronous: &str) -> String {
    format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}; PRAGMA cache_size = -{SQLITE_CACHE_KIB};"
    )
}

/// Page cache of each SQLite connection, in KiB (SQLite's default is 2000). A full audit
/// batch writes about 4 MiB of new table and index pages in one transaction; with the
/// default cache SQLite spills them to the WAL while its INSERTs run, and the batch's
/// statements took about a third longer (measured with `cargo xtask bench`). Pages are
/// allocated as they are used, so a connection that reads little holds little.
const SQLITE_CACHE_KIB: u32 = 16 * 1024;

/// How often the checkpointer (see [`checkpointer`]) copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// SQLite's own checkpoint, run by whichever connection commits past this many WAL pages, as
/// a backstop only: by default (1000 pages) it runs inside a committing write, which then
/// copies megabytes and fsyncs the database file before its caller hears back, a spike of
/// several milliseconds every hundred or so decisions. The checkpointer keeps the WAL far
/// below this; the backstop bounds it (about 40 MB) should the checkpointer fall behind.
const BACKSTOP_CHECKPOINT_PAGES: u32 = 10_000;

/// SQLite: a connection of its own that checkpoints the WAL every [`CHECKPOINT_EVERY`]
/// (`PASSIVE`: it never takes the write lock or waits for readers, so writers go on meanwhile
/// and only this task waits for the database file's fsync). Stops when the last clone of its
/// `Store` is dropped, or at [`Store::close_pool`].
pub(super) struct Checkpointer {
    conn: sqlx::AnyPool,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    async fn start(url: &str) -> Result<Checkpointer, StoreError> {
        let conn = pool_with(url, 1, sqlite_pragmas("FULL")).await?;
        let c = conn.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once; the file was just opened, with nothing to copy.
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&c)
                    .await
                {
                    // The backstop checkpoints instead; a failing database shows in the
                    // writes' own errors.
                    tracing::debug!(error = %e, "WAL checkpoint failed");
                }
            }
        });
        Ok(Checkpointer { conn, task })
    }

    async fn stop(&self) {
        self.task.abort();
        self.conn.close().await;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pooled connection idle for longer than this is pinged before it is handed out (see
/// [`pool_with`]).
const PING_IF_IDLE: Duration = Duration::from_secs(60);

/// A pool of `size` connections running `setup` first.
///
/// sqlx pings every connection it hands out unless told otherwise: one more round trip to
/// the database before every statement and transaction, three on the way from a request to
/// its decision. A connection in steady use is alive; a dead one fails its statement with an
/// error, which the caller sees as any other database failure, and sqlx drops it when it
/// comes back (it tests every returned connection), so the next statement gets a working
/// one. Only connections idle for [`PING_IF_IDLE`], the ones a database restart or a
/// middlebox dropping quiet TCP flows may have killed, are checked first; one that fails the
/// ping is replaced before anyone uses it.
async fn pool_with(url: &str, size: u32, setup: String) -> Result<sqlx::AnyPool, StoreError> {
    let setup: Arc<str> = setup.into();
    Ok(pool_options::<sqlx::Any>(size)
        .after_connect(move |conn, _meta| {
            let setup = setup.clone();
            Box::pin(async move {
                if !setup.is_empty() {
                    conn.execute(&*setup).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// Options of a pool of `size` connections, each pinged before it is handed out only when
/// it was idle for [`PING_IF_IDLE`] (see [`pool_with`]). Generic for the COPY path's
/// PostgreSQL pool (`audit_copy.rs`), which is not an Any pool.
pub(super) fn pool_options<DB: sqlx::Database>(size: u32) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .before_acquire(|conn: &mut DB::Connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

impl Store {
    /// Opens `sqlite://PATH` (the file is created when missing, and put in WAL mode) or
    /// `postgres://…` / `postgresql://…`, and applies the migrations that are not applied yet.
    ///
    /// Several servers may open one PostgreSQL database at once (the migrator takes an
    /// advisory lock). SQLite serves one server process, plus the admin commands: two
    /// `Store`s on one file work (the tests do it), and two first opens racing on the
    /// migration are sorted out by retrying it (see `migrate`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        // Idempotent (a `Once` inside sqlx).
        sqlx::any::install_default_drivers();
        let kind = kind_of(url)?;
        let (pool, relaxed, writer, copy) = match kind {
            DbKind::Sqlite => {
                let url = with_create_mode(url);
                prepare_sqlite(&url).await?;
                (
                    pool_with(&url, SQLITE_POOL, sqlite_pragmas("FULL")).await?,
                    // Writes are one at a time anyway (the write turn).
                    pool_with(&url, 1, sqlite_pragmas("NORMAL")).await?,
                    Some(Arc::new(tokio::sync::Mutex::new(()))),
                    None,
                )
            }
            DbKind::Postgres => (
                pool_with(url, POSTGRES_POOL, String::new()).await?,
                pool_with(
                    url,
                    RELAXED_POSTGRES_POOL,
                    "SET synchronous_commit = off".into(),
                )
                .await?,
                None,
                Some(audit_copy::open_pool(url).await?),
            ),
        };
        migrate(&pool, kind).await?;
        let checkpointer = match kind {
            DbKind::Sqlite => Some(Arc::new(Checkpointer::start(&with_create_mode(url)).await?)),
            DbKind::Postgres => None,
        };
        Ok(Store {
            pool,
            relaxed,
            copy,
            kind,
            writer,
            token_cache: Arc::default(),
            checkpointer,
        })
    }

    /// The URL of a SQLite file, for [`Store::open`]. Characters a URL would misread (`%`,
    /// `?`, `#`, spaces, non-ASCII) are percent-encoded; sqlx decodes them again.
    pub fn sqlite_url(path: &Path) -> String {
        let text = path.to_string_lossy();
        let mut enc = String::with_capacity(text.len());
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                enc.push(char::from(b));
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        // `sqlite://rel.db` would make `rel.db` the URL's host: relative paths use the
        // `sqlite:PATH` form, which sqlx reads the same way.
        if path.is_absolute() {
            format!("sqlite://{enc}")
        } else {
            format!("sqlite:{enc}")
        }
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all (on
    /// SQLite the last one checkpoints the WAL).
    pub async fn close_pool(&self) {
        if let Some(c) = &self.checkpointer {
            c.stop().await;
        }
        if let Some(copy) = &self.copy {
            copy.close().await;
        }
        self.relaxed.close().await;
        self.pool.close().await;
    }
}

/// Applies the migrations. PostgreSQL: the migrator's advisory lock serialises servers. SQLite
/// has no such lock, and the admin commands (`hosts enroll`, `tokens issue`) open the file
/// while `serve` may be opening it too: the loser of that race fails its migration with "table
/// already exists" (its transaction rolled back whole), and a retry sees the migration
/// applied. Retried a few times, then the error is reported.
async fn migrate(pool: &sqlx::AnyPool, kind: DbKind) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if kind == DbKind::Sqlite && attempt < 10 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced with another process; retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The database a URL names. In-memory SQLite is refused: the Any driver re-reads the URL for
/// every pooled connection, so each would get its own empty database.
pub(super) fn kind_of(url: &str) -> Result<DbKind, StoreError> {
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::BadUrl(url.to_string()));
        }
        Ok(DbKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DbKind::Postgres)
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}

/// Adds `mode=rwc` (create when missing) unless the URL chose a mode.
pub(super) fn with_create_mode(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_string(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

/// Creates the file if needed and switches it to WAL (a property of the file, so once is
/// enough; readers then never block the writer). Done on a plain SQLite connection because
/// the Any driver builds its SQLite options from the URL alone, which cannot ask for WAL.
async fn prepare_sqlite(url: &str) -> Result<(), StoreError> {
    let conn = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS)))
        .connect()
        .await?;
    conn.close().await?;
    Ok(())
}
