//! The CLI's client for airlock-server: the same `airlock.v1.Approvals` service as on the
//! host's socket, over TLS (the server's CA) with an API token in every call's metadata.
use std::path::Path;

use airlock_proto::ApprovalsClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Adds the API token (when there is one) to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// An approvals client, to a host's socket or to airlock-server.
pub type Client = ApprovalsClient<InterceptedService<Channel, Auth>>;

/// Errors reaching airlock-server.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("--server {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error(
        "--server needs an API token: pass --token or set AIRLOCK_TOKEN (airlock-server tokens issue PRINCIPAL)"
    )]
    NoToken,
    #[error("the API token contains characters that cannot be sent in a header")]
    BadToken,
    #[error("reading the server's CA certificate {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot reach airlock-server at {url}: {detail}")]
    Connect { url: String, detail: String },
}

/// The host socket's client: no token (the socket's peer credentials identify the caller).
pub fn local(channel: Channel) -> Client {
    ApprovalsClient::with_interceptor(channel, Auth(None))
}

/// The CA the CLI trusts for airlock-server: `--ca`, else the enrolled host's.
fn ca_file(ca: Option<&Path>) -> std::path::PathBuf {
    ca.map(Path::to_path_buf)
        .unwrap_or_else(|| crate::link::identity::Identity::dir_default().join("ca.pem"))
}

/// Connects to airlock-server at `url` (https://HOST:PORT) with `token`.
pub async fn connect_server(
    url: &str,
    token: Option<&str>,
    ca: Option<&Path>,
) -> Result<Client, RemoteError> {
    let bad = |why: &str| RemoteError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or(RemoteError::NoToken)?;
    let value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| RemoteError::BadToken)?;
    let uri: tonic::transport::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://"));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("no host name"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let path = ca_file(ca);
    let pem = std::fs::read(&path).map_err(|source| RemoteError::Ca {
        path: path.display().to_string(),
        source,
    })?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name(host);
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(|_| bad("not a URL"))?
        .tls_config(tls)
        .map_err(|e| RemoteError::Connect {
            url: url.to_string(),
            detail: e.to_string(),
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| RemoteError::Connect {
            url: url.to_string(),
            detail: error_chain(&e),
        })?;
    Ok(ApprovalsClient::with_interceptor(
        channel,
        Auth(Some(value)),
    ))
}

/// An error and its sources, joined with ": " (transport errors hide the useful part, e.g.
/// "connection refused" or a certificate problem, several sources deep).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
