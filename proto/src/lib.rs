//! airlock's gRPC contract, generated from `airlock/v1/{approvals,link}.proto` at build time.
//!
//! The `.proto` file is the source of truth (it documents compatibility rules and error codes);
//! this crate only holds the generated code so the daemon, the CLI and a future remote broker
//! share one definition.

/// Package `airlock.v1`: messages, [`v1::approvals_client::ApprovalsClient`] and
/// [`v1::approvals_server::ApprovalsServer`].
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("airlock.v1");
}

pub use v1::approvals_client::ApprovalsClient;
pub use v1::approvals_server::{Approvals, ApprovalsServer};
pub use v1::enrollment_client::EnrollmentClient;
pub use v1::enrollment_server::{Enrollment, EnrollmentServer};
pub use v1::host_link_client::HostLinkClient;
pub use v1::host_link_server::{HostLink, HostLinkServer};
