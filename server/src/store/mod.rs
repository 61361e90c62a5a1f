//! Server state in SQL: SQLite (one file, WAL) by default, PostgreSQL for several replicas.
//! One code path (sqlx's Any driver, runtime queries with `$N` parameters, portable DDL in
//! `server/migrations/`, applied at start).
//!
//! Deciding is one transaction that first writes the request's row (`UPDATE … SET version =
//! version + 1 WHERE id = $1 AND state = 'pending' AND decision IS NULL`): in PostgreSQL that
//! takes the row lock, in SQLite the database write lock, so concurrent votes on two replicas
//! are serialised and exactly one of them can complete the decision.
//!
//! Conventions of every query here:
//! - Parameters are `$1`, `$2`, …: PostgreSQL's native form, and SQLite reads `$NNN` as the
//!   parameter named `$NNN`, which sqlx binds to argument NNN (`sqlx-sqlite`'s
//!   `arguments.rs`; checked by the `placeholders` test of `tests/store_suite.rs`). Never write
//!   a PostgreSQL cast on a parameter (`$1::text`): SQLite would take `$1::text` as one
//!   parameter name. On SQLite an unbound `$N` is NULL rather than an error.
//! - Only TEXT and BIGINT columns, because the Any driver carries only a few value types:
//!   times are Unix milliseconds (u64 saturated into i64), JSON is TEXT, flags are 0/1.
//! - A write transaction starts with its write (never a read), so SQLite takes the write lock
//!   at its first statement, where the busy timeout applies, instead of failing with
//!   `SQLITE_BUSY_SNAPSHOT` when upgrading a read snapshot.
//!
//! The methods live by topic, one file each: `open.rs` (connecting, pragmas, migrations),
//! `hosts.rs` (enrolment, hosts), `tokens.rs`, `requests.rs`, `votes.rs`, `attempts.rs`, `web.rs` (the web page's sign-ins),
//! `audit.rs` (the audit collector's records, checkpoints, alerts and retention),
//! `audit_batch.rs` (storing a verified batch of them), `audit_copy.rs` (the same with
//! PostgreSQL's COPY),
//! `audit_hosts.rs` (the hosts with a chain, for verifying the store).
mod attempts;
mod audit;
mod audit_batch;
mod audit_copy;
#[cfg(test)]
mod audit_host_query_cost_tests;
#[cfg(test)]
mod audit_host_query_tests;
mod audit_hosts;
mod audit_order;
#[cfg(test)]
mod audit_pending_tests;
mod hosts;
mod open;
mod requests;
mod slack;
mod tokens;
mod votes;
mod web;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_approval::{DecisionRecord, RequestState, Vote};

pub use audit::{AuditAlert, AuditFilter, AuditKey, AuditRow, Pruned};
pub use audit_batch::{BODY_FIELDS, NewAuditRecord};
pub use audit_hosts::AuditHost;
pub use audit_order::{AuditFollow, AuditTurn};
pub use slack::SlackMessage;
pub use web::{WebLogin, WebSession};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON column does not parse (written by a newer server?).
    #[error("stored {what} of {id} is unreadable: {source}")]
    Corrupt {
        what: &'static str,
        id: String,
        source: serde_json::Error,
    },
    /// The database URL is neither sqlite: nor postgres:.
    #[error("database URL {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// The request id belongs to another host.
    #[error("request {id} belongs to another host")]
    OtherHost { id: String },
    /// No such request.
    #[error("no request with id {id:?}")]
    NotFound { id: String },
    /// The request is closed, or already decided and waiting for its host.
    #[error("request {id} is already {state}; nothing changed")]
    Closed { id: String, state: String },
    /// This principal already voted on this request.
    #[error("{principal} already voted on request {id}")]
    AlreadyVoted { id: String, principal: String },
    /// An enrolment token that is unknown, used or expired.
    #[error("enrolment token is unknown, used or expired")]
    BadEnrollment,
    /// No such host / token.
    #[error("no {what} named {name:?}")]
    NoSuch { what: &'static str, name: String },
    /// [`Store::close`] was asked to close a request to `pending`, which is not an outcome
    /// (the host link refuses such messages before they get here).
    #[error("request {id}: pending is not an outcome")]
    NotAnOutcome { id: String },
    /// A table that anyone can add rows to is at its cap.
    #[error("too many {what}; retry later")]
    TooMany { what: &'static str },
    /// The API token a vote came with was revoked (or is gone) by the time the vote would
    /// have been stored; nothing changed.
    #[error("API token {token} was revoked")]
    TokenRevoked { token: String },
    /// The API token a vote came with expired by the time the vote would have been stored;
    /// nothing changed.
    #[error("API token {token} expired")]
    TokenExpired { token: String },
    /// An audit batch was verified against a head of `host`'s chain that is no longer the
    /// stored one (another stream of the host stored records meanwhile); nothing stored.
    #[error("the stored audit chain of {host} moved from {expected} to {found} meanwhile; resend")]
    AuditHeadMoved {
        host: String,
        expected: u64,
        found: u64,
    },
    /// A field of an audit record is longer than PostgreSQL's COPY can carry (2 GiB; the
    /// collector's batches are far smaller); nothing stored.
    #[error("audit record {seq} of {host} has a field too long to store")]
    AuditFieldTooLong { host: String, seq: u64 },
    /// The store of the audit batch of `host` right before this one (which it continues)
    /// failed, so this one was not stored either; nothing stored.
    #[error(
        "the audit batch of {host} before this one was not stored; resend from the stored head"
    )]
    AuditAheadFailed { host: String },
    /// An audit batch's store took longer than its bound (`audit_copy::STORE_TIMEOUT`); it
    /// was rolled back and nothing is stored.
    #[error(
        "storing an audit batch of {host} took longer than {seconds} s; nothing stored, resend"
    )]
    AuditStoreTimeout { host: String, seconds: u64 },
}

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A host: enrolled (certificate issued) or waiting for its enrolment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRow {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// SHA-256 (lowercase hex) of the host's certificate (DER); `None` until enrolled.
    pub cert_sha256: Option<String>,
    pub enrolled_unix_ms: Option<u64>,
    pub revoked_unix_ms: Option<u64>,
    pub last_seen_unix_ms: Option<u64>,
}

/// An API token (the secret itself is never stored: only its SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// Short public id, for listing and revoking.
    pub id: String,
    pub principal: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    pub revoked_unix_ms: Option<u64>,
}

/// A request as the server keeps it. `request` is the wire form the host sent (JSON of the
/// approval domain's fields, see `StoredRequest::body`).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRequest {
    pub id: String,
    pub host: String,
    pub agent: Option<String>,
    /// As last reported by the host (pending until the host's outcome arrives).
    pub state: RequestState,
    pub created_unix_ms: u64,
    pub deadline_unix_ms: u64,
    /// The route that matched when the request arrived.
    pub route: Option<String>,
    pub threshold: u32,
    /// The host's request (context etc.) as JSON (`airlock_approval` serde form), opaque here.
    pub body: String,
    /// The server's decision, once votes completed one (the host may not have applied it yet).
    pub decision: Option<DecisionRecord>,
    pub votes: Vec<Vote>,
    pub updated_unix_ms: u64,
}

/// Filters for [`Store::list_requests`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub host: Option<String>,
    pub agent: Option<String>,
    pub state: Option<RequestState>,
    /// Only requests that are pending and have a server decision (to deliver to the host).
    pub decided_undelivered: bool,
    pub limit: Option<u32>,
}

/// What [`Store::upsert_opened`] did.
#[derive(Clone, Debug, PartialEq)]
// One value per call, returned and matched at once, never kept in bulk: boxing would only add
// an allocation and change the type callers match on.
#[allow(clippy::large_enum_variant)]
pub enum Upserted {
    /// A new request.
    New,
    /// The same id from the same host was known already: nothing changed.
    Existing(StoredRequest),
}

/// What a vote did.
#[derive(Clone, Debug, PartialEq)]
pub struct VoteResult {
    /// The request after the vote (with every vote so far).
    pub request: StoredRequest,
    /// Set when this vote completed the decision.
    pub decided: Option<DecisionRecord>,
}

/// What [`Store::close`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct CloseResult {
    /// The request as stored after the call, with its votes.
    pub request: StoredRequest,
    /// Whether this call closed it (false: it was closed to this state already, a re-sent
    /// outcome).
    pub changed: bool,
}

/// A refused or accepted attempt, for the record ("who, when, through which channel, why").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub at_unix_ms: u64,
    /// Principal name, `host:NAME`, or `unknown`.
    pub who: String,
    /// "cli", "link", "enroll", "web", ...
    pub channel: String,
    pub request_id: Option<String>,
    /// What was tried ("approve", "deny", "opened", "outcome", "enroll", "link").
    pub action: String,
    /// gRPC code name of the answer ("OK", "PERMISSION_DENIED", …).
    pub result: String,
    pub message: String,
}

/// The server's database. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: sqlx::AnyPool,
    /// Connections whose commits do not wait for the disk (SQLite `synchronous = NORMAL`,
    /// PostgreSQL `synchronous_commit = off`), for writes that a host sends again if they are
    /// lost: only [`Store::upsert_opened`] (a host re-sends every pending request when it
    /// links again). A lost commit can only be one of the last before a power cut or an OS
    /// crash of the database's machine, never one of a process crash, and every later durable
    /// commit (a vote) makes it durable too: both databases write their log in order.
    relaxed: sqlx::AnyPool,
    /// PostgreSQL only: a small pool of native (not Any) connections to the same database,
    /// used only by [`Store::store_audit_batch`], because the Any driver cannot run `COPY …
    /// FROM STDIN`, which stores a batch's records faster than INSERTs (see `audit_copy.rs`).
    copy: Option<sqlx::PgPool>,
    pub kind: DbKind,
    /// SQLite only: writers of this process queue here instead of in SQLite's busy handler,
    /// which polls with sleeps of 1 to 100 ms and would add them to the latency of every
    /// contended write. Other processes (or a second `Store` on the same file) still meet at
    /// SQLite's write lock, with the busy timeout.
    writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// API tokens found valid, shared by the clones of this `Store` (not by another `Store`
    /// on the same database: another replica or process keeps its own).
    token_cache: Arc<tokens::TokenCache>,
    /// SQLite only: checkpoints the WAL outside the writes (see `open::Checkpointer`).
    checkpointer: Option<Arc<open::Checkpointer>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Held around every write transaction (SQLite only; `None` on PostgreSQL, where the row
    /// locks do the queueing).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writer {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }
}

/// Milliseconds as stored: BIGINT is signed, so values past `i64::MAX` saturate (no clock or
/// deadline gets there).
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Milliseconds as read back (a negative value, which this code never writes, reads as 0).
fn ms_out(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// [`ms_out`] of a nullable column.
fn opt_ms_out(v: Option<i64>) -> Option<u64> {
    v.map(ms_out)
}

/// Parses a stored JSON column, naming what and whose it is when it does not parse.
fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    id: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what,
        id: id.to_string(),
        source,
    })
}

/// Parses a stored enum name (`RequestState`, `Release`) through its serde form, so the
/// error is the same `Corrupt` as for JSON columns.
fn from_name<T: serde::de::DeserializeOwned>(
    what: &'static str,
    id: &str,
    name: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|source| {
        StoreError::Corrupt {
            what,
            id: id.to_string(),
            source,
        }
    })
}

/// JSON of a value this crate defines; serialising those cannot fail.
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising a plain data type to JSON")
}
