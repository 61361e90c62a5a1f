//! Who is calling: peer credentials of an accepted Unix connection, and whether the caller runs
//! inside an agent.
//!
//! The kernel records the connecting process's credentials (`SO_PEERCRED`) when it calls
//! `connect()`; tonic exposes them as [`UdsConnectInfo`]. The pid in them is only a number: by
//! the time an RPC arrives, the connecting process may have exited and its pid been reused by a
//! process outside any agent (an agent could fork, hand the socket to the child and exit). So
//! the caller is classified twice: when the connection is accepted (the closest we get to
//! `connect()` time) and again on every RPC, and refused if either says "agent". What remains
//! is the window between `connect()` and `accept()`; `SO_PEERPIDFD` (Linux 6.5) would close it.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::error::Fault;
use crate::hold::Approver;

/// Says whether a pid runs inside an agent cgroup, and which agent.
pub type Classify = Arc<dyn Fn(u32) -> Option<String> + Send + Sync>;

/// What the server knows about a connection's peer; found in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Peer credentials from the kernel, as tonic reports them for Unix sockets.
    pub uds: UdsConnectInfo,
    /// The agent the peer pid belonged to when the connection was accepted.
    pub agent_at_accept: Option<String>,
}

/// An accepted connection with its peer classified.
pub(crate) struct PeerStream {
    inner: UnixStream,
    info: PeerInfo,
}

impl PeerStream {
    /// Reads the peer credentials now and classifies the peer pid.
    pub(crate) fn accept(inner: UnixStream, classify: &Classify) -> PeerStream {
        let uds = inner.connect_info();
        let agent_at_accept = uds
            .peer_cred
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok())
            .and_then(|p| classify(p));
        PeerStream {
            inner,
            info: PeerInfo {
                uds,
                agent_at_accept,
            },
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The approver behind a request, or why it may not use the API. Fails closed: no credentials,
/// no pid (pid 0: the peer lives in a pid namespace we cannot see into) or an agent → refused.
pub(crate) fn caller(info: Option<&PeerInfo>, classify: &Classify) -> Result<Approver, Fault> {
    let info = info.ok_or(Fault::NoCredentials {
        why: "not a Unix socket connection",
    })?;
    let cred = info.uds.peer_cred.ok_or(Fault::NoCredentials {
        why: "no peer credentials",
    })?;
    let pid = cred
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or(Fault::NoCredentials { why: "no peer pid" })?;
    if let Some(agent) = info.agent_at_accept.clone().or_else(|| classify(pid)) {
        return Err(Fault::AgentCaller { pid, agent });
    }
    let uid = cred.uid();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    Ok(Approver {
        uid,
        pid,
        user,
        via: "cli".to_string(),
        principal: None,
    })
}
