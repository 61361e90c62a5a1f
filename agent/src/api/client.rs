//! Client side: a tonic channel over airlockd's Unix socket.
use std::path::Path;

use airlock_proto::ApprovalsClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::error::ApiError;

/// Connects to the approvals API on `socket`. Errors name the socket and the likely cause
/// (airlockd not running, no permission on the socket).
pub async fn connect(socket: &Path) -> Result<ApprovalsClient<Channel>, ApiError> {
    Ok(ApprovalsClient::new(connect_channel(socket).await?))
}

/// A channel to airlockd's socket (for clients that wrap it, see `remote.rs`).
pub async fn connect_channel(socket: &Path) -> Result<Channel, ApiError> {
    // The URI only fills HTTP/2's :authority; the connector below ignores it and dials the
    // socket (tonic's Unix socket pattern).
    let endpoint = Endpoint::from_static("http://[::]:50051");
    let path = socket.to_path_buf();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| ApiError::connect(socket, &e))?;
    Ok(channel)
}
