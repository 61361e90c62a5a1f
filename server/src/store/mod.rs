//! Server state in SQL: SQLite (one file, WAL) by default, PostgreSQL for several replicas.
//! One code path (sqlx's Any driver, runtime queries with `$N` parameters, portable DDL in
//! `server/migrations/`, applied at start).
//!
//! Deciding is one transaction that first writes the request's row (`UPDATE … SET version =
//! version + 1 WHERE id = $1 AND state = 'pending' AND decision IS NULL`): in PostgreSQL that
//! takes the row lock, in SQLite the database write lock, so concurrent votes on two replicas
//! are serialised and exactly one of them can complete the decision.
//!
//! SKELETON (lead engineer): signatures are the contract other modules code against; the
//! storage helper fills the bodies and may add functions, not change these without telling.
use std::collections::BTreeMap;

use airlock_approval::{DecisionRecord, RequestState, Vote};

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
    Corrupt { what: &'static str, id: String, source: serde_json::Error },
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
}

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, Default)]
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

/// The server's database.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: sqlx::AnyPool,
    pub kind: DbKind,
}
