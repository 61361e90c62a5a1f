//! Why one RPC failed, and the one place where that becomes a gRPC status code.
//!
//! Every service (host link, enrolment, approvals) returns [`Fault`]; its `From` impl below is
//! the only mapping to [`tonic::Status`], so the codes documented in `link.proto` and
//! `approvals.proto` are decided here.
use tonic::{Code, Status};

use crate::collector::CollectError;
use crate::route::Refusal;
use crate::store::StoreError;

/// Why one call (or one message on the host link) was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// No credential, or one this server does not know (token, client certificate).
    #[error("{0}")]
    Unauthenticated(String),
    /// Known caller, not allowed to do this (revoked host, host credential on the approvals API).
    #[error("{0}")]
    Forbidden(String),
    /// The approver rules refuse this vote (not an approver, self-approval, reason required).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// A malformed request; `field` is the proto field path.
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    /// A message that is valid on its own but not now (e.g. an outcome before the request, a
    /// second Hello).
    #[error("{0}")]
    OutOfOrder(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A watcher fell behind.
    #[error(
        "watch fell behind and {missed} events were dropped; list pending requests and watch again"
    )]
    Lagged { missed: u64 },
    /// The server is stopping.
    #[error("airlock-server is shutting down")]
    ShuttingDown,
    /// The audit collector refused a batch or a host's audit key.
    #[error(transparent)]
    Audit(CollectError),
    /// Something on this side broke (certificate signing, encoding).
    #[error("{0}")]
    Internal(String),
    /// This process does not serve that (`airlock-server collector` serves the audit stream
    /// and its queries only).
    #[error("{0}")]
    NotServed(String),
}

impl Fault {
    /// A malformed field.
    pub fn invalid(field: &'static str, why: impl Into<String>) -> Fault {
        Fault::Invalid {
            field,
            why: why.into(),
        }
    }

    /// The status code of a store error.
    fn store_code(e: &StoreError) -> Code {
        match e {
            StoreError::NotFound { .. } | StoreError::NoSuch { .. } => Code::NotFound,
            StoreError::Closed { .. } | StoreError::AlreadyVoted { .. } => Code::FailedPrecondition,
            // Another host's request id: the caller may not even learn it exists.
            StoreError::OtherHost { .. } => Code::PermissionDenied,
            StoreError::TooMany { .. } => Code::ResourceExhausted,
            // Another stream of the host stored a batch meanwhile: resending works.
            StoreError::AuditHeadMoved { .. } | StoreError::AuditAheadFailed { .. } => {
                Code::Aborted
            }
            StoreError::AuditStoreTimeout { .. } => Code::Unavailable,
            StoreError::BadEnrollment
            | StoreError::TokenRevoked { .. }
            | StoreError::TokenExpired { .. } => Code::Unauthenticated,
            _ => Code::Internal,
        }
    }

    /// The status code this fault maps to.
    pub fn code(&self) -> Code {
        match self {
            Fault::Unauthenticated(_) => Code::Unauthenticated,
            Fault::Forbidden(_) => Code::PermissionDenied,
            Fault::Refused(r) => match r {
                Refusal::ReasonRequired { .. } => Code::InvalidArgument,
                Refusal::NoRoute => Code::FailedPrecondition,
                _ => Code::PermissionDenied,
            },
            Fault::Invalid { .. } => Code::InvalidArgument,
            Fault::OutOfOrder(_) => Code::FailedPrecondition,
            Fault::Audit(e) => collect_code(e),
            Fault::Store(e) => Fault::store_code(e),
            Fault::Lagged { .. } => Code::DataLoss,
            Fault::ShuttingDown => Code::Unavailable,
            Fault::Internal(_) => Code::Internal,
            Fault::NotServed(_) => Code::Unimplemented,
        }
    }
}

/// The code of a collector refusal (recorded with the refused attempt).
pub fn collect_code(e: &CollectError) -> Code {
    match e {
        CollectError::TooManyRecords { .. }
        | CollectError::TooManyBytes { .. }
        | CollectError::TooManyCheckpoints { .. } => Code::ResourceExhausted,
        CollectError::NoKey
        | CollectError::BadKey(_)
        | CollectError::FirstSeq { .. }
        | CollectError::Malformed { .. }
        | CollectError::NotCanonical { .. }
        | CollectError::BadNote { .. } => Code::InvalidArgument,
        CollectError::KeyChanged { .. } => Code::PermissionDenied,
        // A chain that does not hold: records changed, lost or inserted.
        CollectError::Chain(_) | CollectError::CheckpointDisagrees { .. } => Code::DataLoss,
        CollectError::StoredKey(_) => Code::Internal,
        CollectError::ShuttingDown => Code::Unavailable,
        // Behind a refused batch: sent again once the host hears of the refusal.
        CollectError::Behind { .. } => Code::Aborted,
        CollectError::Store(s) => Fault::store_code(s),
    }
}

/// The HTTP status of a gRPC code, for the HTTP listener (`http.rs`): the one mapping of
/// faults to HTTP, next to the one to gRPC.
pub fn http_status(c: Code) -> u16 {
    match c {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// The code's name as recorded with refused attempts ("PERMISSION_DENIED").
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<CollectError> for Fault {
    fn from(e: CollectError) -> Fault {
        match e {
            CollectError::Store(s) => Fault::Store(s),
            e => Fault::Audit(e),
        }
    }
}

impl From<Fault> for Status {
    fn from(f: Fault) -> Status {
        // Internal details (SQL errors) are logged, not sent to callers.
        if let Fault::Store(e) = &f
            && f.code() == Code::Internal
        {
            tracing::error!(error = %e, "store failure");
            return Status::internal(
                "airlock-server could not read or write its database; nothing changed, retry",
            );
        }
        Status::new(f.code(), f.to_string())
    }
}
