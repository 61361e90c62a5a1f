//! The local approvals API: gRPC (`airlock.v1.Approvals`, crate `airlock-proto`) over a Unix
//! socket in airlockd's state directory.
//!
//! - [`serve`] binds the socket (mode 0660, optionally group-owned so non-root approvers can
//!   use it) and serves [`crate::hold::Approvals`] in a tokio task; [`ApiServer`] stops it.
//! - [`connect`] is the client side the `airlock` CLI uses.
//!
//! Access control is the socket's mode and group, plus one rule the kernel's peer credentials
//! let us enforce: a process inside an agent cgroup may not list, inspect or decide requests,
//! whatever its uid (an agent running as root must not approve its own actions). See `peer.rs`.
//! The wire contract, including error codes, is documented in `proto/airlock/v1/approvals.proto`.
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::ApprovalsServer;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;

mod client;
pub mod convert;
mod error;
mod peer;
pub mod remote;
mod service;

pub use client::{connect, connect_channel};
pub use error::ApiError;
pub use peer::{Classify, PeerInfo};

/// Mode of the socket: owner and group may connect (connecting needs write permission).
pub const SOCKET_MODE: u32 = 0o660;

/// How long [`ApiServer::shutdown`] lets in-flight calls finish before cutting connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where and for whom to serve.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Socket path (see [`crate::paths::socket`]).
    pub socket: PathBuf,
    /// Group given access to the socket (mode 0660); `None`: only the daemon's user (root).
    pub group: Option<String>,
    /// Whether decisions on this socket are allowed, and how they are recorded (shared with
    /// the server link, which applies the server's break-glass setting).
    pub local: LocalPolicy,
}

/// The current [`LocalDecisions`], shared between the API and the server link.
#[derive(Clone, Debug, Default)]
pub struct LocalPolicy(Arc<std::sync::atomic::AtomicU8>);

impl LocalPolicy {
    /// A policy starting at `d`.
    pub fn new(d: LocalDecisions) -> LocalPolicy {
        let p = LocalPolicy::default();
        p.set(d);
        p
    }

    /// The policy now.
    pub fn get(&self) -> LocalDecisions {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => LocalDecisions::Primary,
            1 => LocalDecisions::BreakGlass,
            _ => LocalDecisions::Forbidden,
        }
    }

    /// Changes it.
    pub fn set(&self, d: LocalDecisions) {
        let v = match d {
            LocalDecisions::Primary => 0,
            LocalDecisions::BreakGlass => 1,
            LocalDecisions::Forbidden => 2,
        };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Decisions made on the host's own socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalDecisions {
    /// No server link: the socket is where decisions are made (recorded `via: "cli"`).
    #[default]
    Primary,
    /// The host is linked to airlock-server: a local decision is break-glass (for when the
    /// server is unreachable), recorded `via: "cli-break-glass"` and reported to the server.
    BreakGlass,
    /// The host is linked and break-glass is forbidden: local Decide calls are refused with
    /// PERMISSION_DENIED (listing and watching still work).
    Forbidden,
}

/// A running approvals server. Dropping it stops serving at once (open connections are cut)
/// and removes the socket; [`ApiServer::shutdown`] stops gracefully.
pub struct ApiServer {
    socket: PathBuf,
    /// (dev, ino) of the socket we bound, so we never remove a socket another server made since.
    identity: (u64, u64),
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl ApiServer {
    /// The socket being served.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops accepting, ends Watch streams with UNAVAILABLE, lets other in-flight calls finish
    /// (at most a few seconds), and removes the socket.
    pub async fn shutdown(mut self) -> Result<(), ApiError> {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        let res = match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ApiError::Serve(e.to_string())),
            Ok(Err(join)) => Err(ApiError::Serve(join.to_string())),
            Err(_elapsed) => {
                task.abort();
                tracing::warn!(
                    "approvals API: calls still running after {SHUTDOWN_GRACE:?}; cut off"
                );
                Ok(())
            }
        };
        self.remove_socket();
        res
    }

    fn remove_socket(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.socket)
            && (m.dev(), m.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = self.stop.send(true);
            task.abort();
            self.remove_socket();
        }
    }
}

/// Looks the socket group up before anything touches the filesystem, so a typo in the
/// configuration leaves no half-set-up socket behind.
fn resolve_group(group: &str) -> Result<nix::unistd::Gid, ApiError> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(ApiError::UnknownGroup {
            group: group.to_string(),
        }),
        Err(source) => Err(ApiError::GroupLookup {
            group: group.to_string(),
            source,
        }),
    }
}

/// Removes a socket left by a previous airlockd, refusing to touch anything else: a regular
/// file at the path, or a socket someone still serves on.
fn remove_stale(socket: &Path) -> Result<(), ApiError> {
    let m = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ApiError::Socket {
                socket: socket.into(),
                step: "stat",
                source,
            });
        }
    };
    if !m.file_type().is_socket() {
        return Err(ApiError::NotASocket {
            socket: socket.into(),
        });
    }
    // Blocking connect on a Unix socket is immediate (refused, or queued in the backlog).
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(ApiError::InUse {
            socket: socket.into(),
        });
    }
    std::fs::remove_file(socket).map_err(|source| ApiError::Socket {
        socket: socket.into(),
        step: "removing stale socket",
        source,
    })
}

/// Binds `cfg.socket` and serves `approvals` on it in a tokio task (call from inside a tokio
/// runtime). `classify(pid)` names the agent a pid runs in (`None`: not an agent); such callers
/// are refused with PERMISSION_DENIED.
///
/// The socket is created with the process umask (0755 under the usual 022: nobody else can
/// connect yet), then set to 0660 and, when `cfg.group` is given, to that group; the owner
/// stays the daemon's user (root in production).
pub async fn serve(
    cfg: ApiConfig,
    approvals: crate::hold::Approvals,
    classify: Arc<dyn Fn(u32) -> Option<String> + Send + Sync>,
) -> Result<ApiServer, ApiError> {
    let socket = cfg.socket;
    let gid = cfg.group.as_deref().map(resolve_group).transpose()?;
    remove_stale(&socket)?;
    let listener = UnixListener::bind(&socket).map_err(|source| ApiError::Socket {
        socket: socket.clone(),
        step: "bind",
        source,
    })?;
    // From here on, a failure must not leave the socket behind.
    let setup = || -> Result<(u64, u64), ApiError> {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
            |source| ApiError::Socket {
                socket: socket.clone(),
                step: "chmod 0660",
                source,
            },
        )?;
        if let (Some(gid), Some(group)) = (gid, &cfg.group) {
            nix::unistd::chown(&socket, None, Some(gid)).map_err(|source| ApiError::Chown {
                socket: socket.clone(),
                group: group.clone(),
                source,
            })?;
        }
        let m = std::fs::symlink_metadata(&socket).map_err(|source| ApiError::Socket {
            socket: socket.clone(),
            step: "stat",
            source,
        })?;
        Ok((m.dev(), m.ino()))
    };
    let identity = match setup() {
        Ok(id) => id,
        Err(e) => {
            drop(listener);
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };

    let (stop, stop_rx) = watch::channel(false);
    let svc = service::Service {
        approvals,
        classify: classify.clone(),
        stop: stop_rx.clone(),
        local: cfg.local,
    };
    let incoming = UnixListenerStream::new(listener)
        .map(move |s| s.map(|s| peer::PeerStream::accept(s, &classify)));
    let mut stop_server = stop_rx;
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ApprovalsServer::new(svc))
            .serve_with_incoming_shutdown(incoming, async move {
                // Err: the handle is gone, which means stop as well.
                let _ = stop_server.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(socket = %socket.display(), group = ?cfg.group, "approvals API listening");
    Ok(ApiServer {
        socket,
        identity,
        stop,
        task: Some(task),
    })
}

#[cfg(test)]
mod tests;
