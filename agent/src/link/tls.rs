//! Enrolment-time TLS: the host does not have the server's CA yet, only its SHA-256 from the
//! enrolment token. [`PinnedCaVerifier`] finds the certificate with that hash among the ones the
//! server presents and verifies the server's certificate against it as the only trust root
//! (name check included), so only a server holding that CA's key passes — before the token is
//! sent.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long connecting and the TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors of the enrolment connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server URL does not parse.
    #[error("server URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// TCP connection failed.
    #[error("connecting to {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    /// The server's certificate chain does not contain the CA the token pins.
    #[error(
        "{server} did not present the CA pinned by the enrolment token (wrong server, or a token \
         made by another airlock-server); nothing was sent"
    )]
    PinMismatch { server: String },
    /// The handshake failed otherwise (name mismatch, expired certificate, ...).
    #[error("TLS handshake with {server}: {source}")]
    Handshake {
        server: String,
        source: std::io::Error,
    },
    /// The server did not agree to HTTP/2 (not an airlock-server?).
    #[error("{server} did not negotiate HTTP/2 (ALPN h2); is it an airlock-server?")]
    NoH2 { server: String },
    /// Connecting or the handshake took longer than [`CONNECT_TIMEOUT`].
    #[error("connecting to {server}: timed out after {CONNECT_TIMEOUT:?}")]
    Timeout { server: String },
    /// Setting up the gRPC channel over the connection failed.
    #[error("gRPC channel to {server}: {source}")]
    Channel {
        server: String,
        source: tonic::transport::Error,
    },
}

/// A server address: `https://HOST[:PORT]` or `HOST[:PORT]` (port 443 when left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// DNS name or IP address (IPv6 without brackets); also the name its certificate must hold.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerUrl {
    /// Parses a server URL; only `https` (or no scheme) is accepted: the link is always TLS.
    pub fn parse(url: &str) -> Result<ServerUrl, TlsError> {
        let bad = |why: &str| TlsError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let with_scheme = if url.contains("://") {
            url.to_string()
        } else {
            format!("https://{url}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(bad("expected no path: https://HOST[:PORT]"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        ServerName::try_from(host.as_str())
            .map_err(|_| bad("the host is not a DNS name or an IP address"))?;
        Ok(ServerUrl {
            host,
            port: uri.port_u16().unwrap_or(443),
        })
    }

    /// `HOST:PORT` (IPv6 in brackets), for messages and HTTP/2's :authority.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `https://HOST:PORT`: the normal form, as `airlockd --server` takes it.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority())
    }

    /// The name the server's certificate must hold.
    pub fn server_name(&self) -> ServerName<'static> {
        ServerName::try_from(self.host.clone()).expect("checked by ServerUrl::parse")
    }
}

/// Why the pinned verifier refused, carried inside rustls' error so the caller can tell it apart.
#[derive(Debug, thiserror::Error)]
#[error("no certificate presented by the server has the SHA-256 pinned by the enrolment token")]
pub struct PinMismatch;

/// A server certificate verifier trusting only the CA whose certificate has a given SHA-256.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    /// A verifier for the CA whose certificate (DER) has SHA-256 `pin`.
    pub fn new(pin: [u8; 32]) -> PinnedCaVerifier {
        PinnedCaVerifier {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| ring::digest::digest(&ring::digest::SHA256, c).as_ref() == self.pin)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PinMismatch),
                )))
            })?;
        // Hashing proves which CA this is; the webpki verification below proves the server
        // holds a certificate that CA issued for this name (the handshake signature then proves
        // it holds that certificate's key).
        let mut roots = RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("building the verifier: {e}")))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration trusting only the CA with SHA-256 `pin`, no client
/// certificate, ALPN h2.
pub fn pinned_client_config(pin: [u8; 32]) -> Arc<rustls::ClientConfig> {
    let verifier = PinnedCaVerifier::new(pin);
    let mut config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects to `server` over TLS pinned to the CA with SHA-256 `pin` and returns a gRPC channel
/// over that one connection. The handshake completes here, before any request can be sent, so
/// a wrong server never sees the token. The channel does not reconnect (enrolment is one call).
pub async fn connect_pinned(server: &ServerUrl, pin: [u8; 32]) -> Result<Channel, TlsError> {
    let name = server.authority();
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake(server, pin))
        .await
        .map_err(|_| TlsError::Timeout {
            server: name.clone(),
        })??;
    // tonic dials through the connector; hand it the connection we already verified.
    let slot = Arc::new(Mutex::new(Some(stream)));
    let endpoint =
        Endpoint::from_shared(format!("http://{name}")).map_err(|source| TlsError::Channel {
            server: name.clone(),
            source,
        })?;
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let s = slot.lock().expect("connector slot").take();
            async move {
                s.map(TokioIo::new).ok_or_else(|| {
                    std::io::Error::other("the enrolment connection closed; enrol again")
                })
            }
        }))
        .await
        .map_err(|source| TlsError::Channel {
            server: name,
            source,
        })
}

async fn handshake(
    server: &ServerUrl,
    pin: [u8; 32],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsError> {
    let name = server.authority();
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|source| TlsError::Connect {
            server: name.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(pinned_client_config(pin))
        .connect(server.server_name(), tcp)
        .await
        .map_err(|source| handshake_error(&name, source))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(TlsError::NoH2 { server: name });
    }
    Ok(tls)
}

/// Tells a pin mismatch (our verifier's [`PinMismatch`]) apart from other handshake failures.
fn handshake_error(server: &str, e: std::io::Error) -> TlsError {
    let pin = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(|r| {
        matches!(r, rustls::Error::InvalidCertificate(CertificateError::Other(o)) if o.0.is::<PinMismatch>())
    });
    if pin {
        TlsError::PinMismatch {
            server: server.to_string(),
        }
    } else {
        TlsError::Handshake {
            server: server.to_string(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_default_to_https_port_443_and_unbracket_ipv6() {
        let u = ServerUrl::parse("airlock.example:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("airlock.example", 8443));
        let u = ServerUrl::parse("https://airlock.example").unwrap();
        assert_eq!(u.port, 443);
        let u = ServerUrl::parse("https://[::1]:9000/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority().as_str()),
            ("::1", 9000, "[::1]:9000")
        );
    }

    #[test]
    fn server_urls_refuse_plain_http_and_paths() {
        assert!(matches!(
            ServerUrl::parse("http://a:1"),
            Err(TlsError::BadUrl { .. })
        ));
        assert!(matches!(
            ServerUrl::parse("https://a:1/x"),
            Err(TlsError::BadUrl { .. })
        ));
    }
}
