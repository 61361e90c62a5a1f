//! Errors of the approvals API, and the one place where failures become gRPC status codes.
//!
//! [`ApiError`] is what setting up the server or connecting a client returns (local, operator
//! facing). [`Fault`] is why one RPC failed; its `From` impl is the only mapping to
//! [`tonic::Status`], so the codes documented in `approvals.proto` are decided here.
use std::io;
use std::path::{Path, PathBuf};

use tonic::{Code, Status};

use crate::hold::HoldError;

/// Errors starting the approvals server or connecting to it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `ApiConfig::group` names no group on this host.
    #[error(
        "socket group {group:?} does not exist (create it, or start airlockd without a socket group)"
    )]
    UnknownGroup { group: String },
    /// Looking up the socket group failed (NSS error).
    #[error("looking up socket group {group:?}: {source}")]
    GroupLookup { group: String, source: nix::Error },
    /// Something that is not a socket sits where the socket should be; it is left alone.
    #[error("{}: exists and is not a socket; refusing to replace it", socket.display())]
    NotASocket { socket: PathBuf },
    /// Another server answers on the socket (a second airlockd with the same state directory).
    #[error("{}: another process is serving on this socket (is a second airlockd running?)", socket.display())]
    InUse { socket: PathBuf },
    /// A filesystem step of setting up the socket failed.
    #[error("{} ({step}): {source}", socket.display())]
    Socket {
        socket: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    /// Changing the socket's group failed.
    #[error("{}: chown to group {group:?}: {source}", socket.display())]
    Chown {
        socket: PathBuf,
        group: String,
        source: nix::Error,
    },
    /// The server task failed or panicked.
    #[error("approvals server: {0}")]
    Serve(String),
    /// The client could not reach the server.
    #[error("{}", connect_message(socket, *kind, detail))]
    Connect {
        socket: PathBuf,
        kind: Option<io::ErrorKind>,
        detail: String,
    },
}

impl ApiError {
    /// Classifies a failed connection by the first I/O error in `err`'s source chain.
    pub(crate) fn connect(socket: &Path, err: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut kind = None;
        let mut detail = err.to_string();
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                kind = Some(io.kind());
                detail = io.to_string();
                break;
            }
            cur = e.source();
        }
        ApiError::Connect {
            socket: socket.to_path_buf(),
            kind,
            detail,
        }
    }
}

/// What the operator reads when the CLI cannot reach airlockd: which socket, and the likely fix.
fn connect_message(socket: &Path, kind: Option<io::ErrorKind>, detail: &str) -> String {
    let s = socket.display();
    match kind {
        Some(io::ErrorKind::PermissionDenied) => {
            format!(
                "permission denied on {s}: add yourself to the group airlockd uses or run as root"
            )
        }
        Some(io::ErrorKind::NotFound) => format!(
            "cannot connect to airlockd: {s} does not exist; is airlockd running? \
             (choose another socket with --socket or AIRLOCK_SOCKET)"
        ),
        Some(io::ErrorKind::ConnectionRefused) => {
            format!(
                "cannot connect to airlockd: nothing listens on {s}; is airlockd running? (stale socket)"
            )
        }
        _ => format!("cannot connect to airlockd at {s}: {detail}"),
    }
}

/// Why one RPC failed. Converted to a [`Status`] in exactly one place (the `From` impl below).
#[derive(Debug)]
pub(crate) enum Fault {
    /// The request table refused or failed.
    Hold(HoldError),
    /// A malformed request; `field` is the proto field path.
    Invalid { field: &'static str, why: String },
    /// The caller runs inside an agent cgroup.
    AgentCaller { pid: u32, agent: String },
    /// The transport gave no usable peer pid, so the caller cannot be told apart from an agent.
    NoCredentials { why: &'static str },
    /// A Watch stream fell behind the broadcast buffer.
    Lagged { missed: u64 },
    /// The server is stopping.
    ShuttingDown,
    /// The host is linked to airlock-server and local decisions (break-glass) are forbidden.
    BreakGlassForbidden,
}

impl Fault {
    pub(crate) fn invalid(field: &'static str, why: impl Into<String>) -> Fault {
        Fault::Invalid {
            field,
            why: why.into(),
        }
    }
}

impl From<HoldError> for Fault {
    fn from(e: HoldError) -> Fault {
        Fault::Hold(e)
    }
}

impl From<Fault> for Status {
    fn from(f: Fault) -> Status {
        match f {
            Fault::Hold(e) => {
                let code = match &e {
                    HoldError::NotFound { .. } => Code::NotFound,
                    HoldError::Closed { .. } => Code::FailedPrecondition,
                    HoldError::BadDuration { .. } => Code::InvalidArgument,
                    // The request stays pending; the caller may retry (see the .proto).
                    HoldError::Gate(_) | HoldError::Store(_) => Code::Internal,
                };
                Status::new(code, e.to_string())
            }
            Fault::Invalid { field, why } => Status::invalid_argument(format!("{field}: {why}")),
            Fault::AgentCaller { pid, agent } => Status::permission_denied(format!(
                "caller pid {pid} is in agent cgroup of agent {agent}: agents cannot approve or list requests"
            )),
            Fault::NoCredentials { why } => Status::permission_denied(format!(
                "cannot tell whether the caller is an agent ({why}); refusing"
            )),
            Fault::Lagged { missed } => Status::data_loss(format!(
                "watch fell behind and {missed} events were dropped; list pending requests and watch again"
            )),
            Fault::ShuttingDown => Status::unavailable("airlockd is shutting down"),
            Fault::BreakGlassForbidden => Status::permission_denied(
                "this host takes decisions from airlock-server and local break-glass decisions are forbidden \
                 (airlockd --break-glass=false); decide through the server",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_name_the_socket_and_the_likely_fix() {
        let s = Path::new("/run/airlock/airlock.sock");
        let denied = connect_message(s, Some(io::ErrorKind::PermissionDenied), "x");
        assert_eq!(
            denied,
            "permission denied on /run/airlock/airlock.sock: add yourself to the group airlockd uses or run as root"
        );
        let missing = connect_message(s, Some(io::ErrorKind::NotFound), "x");
        assert!(
            missing.contains("/run/airlock/airlock.sock")
                && missing.contains("is airlockd running"),
            "{missing}"
        );
        let refused = connect_message(s, Some(io::ErrorKind::ConnectionRefused), "x");
        assert!(
            refused.contains("nothing listens on /run/airlock/airlock.sock"),
            "{refused}"
        );
    }

    #[test]
    fn hold_errors_map_to_the_documented_codes() {
        let nf = Status::from(Fault::Hold(HoldError::NotFound { id: "abc".into() }));
        assert_eq!(nf.code(), Code::NotFound);
        assert!(nf.message().contains("abc"));
        let closed = Status::from(Fault::Hold(HoldError::Closed {
            id: "abc".into(),
            state: "denied",
        }));
        assert_eq!(closed.code(), Code::FailedPrecondition);
        assert_eq!(
            closed.message(),
            "request abc is already denied; nothing changed"
        );
        let bad = Status::from(Fault::Hold(HoldError::BadDuration {
            value: "0s".into(),
            why: "zero",
        }));
        assert_eq!(bad.code(), Code::InvalidArgument);
        let gate = Status::from(Fault::Hold(HoldError::Gate(
            crate::hold::GateError::NotParked { token: 1 },
        )));
        assert_eq!(gate.code(), Code::Internal);
    }
}
