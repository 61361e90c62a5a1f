//! Host side of enrolment: make a key and a CSR here, trade the token for a certificate over TLS
//! pinned to the CA hash in the token, check what came back, write the identity files.
//!
//! Token format (made by airlock-server's `pki::new_enrollment_token`):
//! `airlock1.<SECRET: 64 hex>.<CA_SHA256: 64 hex>`. The host uses CA_SHA256 to authenticate
//! the server before it has the CA; SECRET authenticates the host to the server.
use std::path::{Path, PathBuf};

use airlock_proto::EnrollmentClient;
use airlock_proto::v1::EnrollRequest;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::prelude::FromDer as _;

use super::identity::{self, IdentityError, NewIdentity};
use super::tls::{self, ServerUrl, TlsError};

/// Prefix (and format version) of enrolment tokens.
pub const TOKEN_PREFIX: &str = "airlock1";

/// Errors of enrolment, each naming the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token is not `airlock1.SECRET.CA_SHA256`.
    #[error(
        "enrolment token is malformed: expected airlock1.SECRET.CA_SHA256 as printed by `airlock-server hosts enroll`"
    )]
    BadToken,
    /// The identity directory cannot be prepared or written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Making the key or the CSR failed.
    #[error("making the host key and CSR: {0}")]
    Key(#[from] rcgen::Error),
    /// Connecting to the server failed (including a server that does not hold the pinned CA).
    #[error(transparent)]
    Connect(#[from] TlsError),
    /// The server refused (bad, used or expired token: UNAUTHENTICATED; malformed CSR:
    /// INVALID_ARGUMENT).
    #[error("airlock-server refused the enrolment ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
    /// The server answered with a CA other than the one the token pins.
    #[error(
        "the server returned a CA whose SHA-256 is not the one in the token; nothing was written"
    )]
    CaMismatch,
    /// The returned certificate does not parse, is not for our key, or is not signed by the CA.
    #[error("the server returned an unusable certificate ({0}); nothing was written")]
    BadCertificate(String),
}

/// What [`enroll`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollOutcome {
    /// The name the server enrolled this host as.
    pub host: String,
    /// Where the identity files are.
    pub dir: PathBuf,
}

/// An enrolment token taken apart.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// The whole token as sent to the server.
    pub token: String,
    /// SHA-256 of the server's CA certificate (DER).
    pub ca_sha256: [u8; 32],
}

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("EnrollToken")
            .field("ca_sha256", &hex(&self.ca_sha256))
            .finish_non_exhaustive()
    }
}

impl EnrollToken {
    /// Parses `airlock1.<64 hex>.<64 hex>` (surrounding whitespace ignored).
    pub fn parse(token: &str) -> Result<EnrollToken, EnrollError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(TOKEN_PREFIX), Some(secret), Some(ca), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EnrollError::BadToken);
        };
        let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret) || !is_hex(ca) {
            return Err(EnrollError::BadToken);
        }
        let mut ca_sha256 = [0u8; 32];
        for (i, b) in ca_sha256.iter_mut().enumerate() {
            *b =
                u8::from_str_radix(&ca[2 * i..2 * i + 2], 16).map_err(|_| EnrollError::BadToken)?;
        }
        Ok(EnrollToken {
            token: token.to_string(),
            ca_sha256,
        })
    }
}

/// Enrols this host with the server at `server_url` using `token`, writing the identity into
/// `dir` (see [`identity`]). The key is made here and never leaves the host. Nothing is written
/// unless the server proved it holds the pinned CA and returned a certificate for our key
/// signed by that CA.
pub async fn enroll(
    server_url: &str,
    token: &str,
    dir: &Path,
) -> Result<EnrollOutcome, EnrollError> {
    let token = EnrollToken::parse(token)?;
    let server = ServerUrl::parse(server_url)?;
    // Fail on an unwritable directory now, not after the token is spent.
    identity::prepare_dir(dir)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    // Informational only: the server names the certificate after the token, not this.
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, local_hostname());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;

    let channel = tls::connect_pinned(&server, token.ca_sha256).await?;
    let resp = EnrollmentClient::new(channel)
        .enroll(EnrollRequest {
            token: token.token.clone(),
            csr_der: csr.der().to_vec(),
        })
        .await
        .map_err(|s| EnrollError::Refused {
            code: s.code(),
            message: s.message().to_string(),
        })?
        .into_inner();

    if ring::digest::digest(&ring::digest::SHA256, &resp.ca_der).as_ref() != token.ca_sha256 {
        return Err(EnrollError::CaMismatch);
    }
    check_certificate(&resp.certificate_der, &resp.ca_der, &key, &resp.host)?;
    identity::write(
        dir,
        &NewIdentity {
            key_pem: &key.serialize_pem(),
            cert_der: &resp.certificate_der,
            ca_der: &resp.ca_der,
            server: &server.url(),
        },
    )?;
    Ok(EnrollOutcome {
        host: resp.host,
        dir: dir.to_path_buf(),
    })
}

/// The certificate must be for our key, signed by the CA, and named after the host the server
/// says it enrolled.
fn check_certificate(
    cert_der: &[u8],
    ca_der: &[u8],
    key: &KeyPair,
    host: &str,
) -> Result<(), EnrollError> {
    let bad = |why: String| EnrollError::BadCertificate(why);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| bad(format!("certificate: {e}")))?;
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(ca_der)
        .map_err(|e| bad(format!("CA: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(
            "it certifies another key than the one this host made".into()
        ));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| bad(format!("not signed by the CA: {e}")))?;
    match identity::common_name(&cert) {
        Some(cn) if cn == host && !host.is_empty() => Ok(()),
        other => Err(bad(format!(
            "its common name {other:?} is not the enrolled host {host:?}"
        ))),
    }
}

fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h.is_ascii())
        .unwrap_or_else(|| "airlock-host".to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const CA: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn tokens_parse_into_the_ca_pin() {
        let t = EnrollToken::parse(&format!(" airlock1.{SECRET}.{CA}\n")).unwrap();
        assert_eq!(hex(&t.ca_sha256), CA);
        assert_eq!(
            t.token,
            format!("airlock1.{SECRET}.{CA}"),
            "whitespace trimmed"
        );
        assert!(!format!("{t:?}").contains(SECRET), "Debug hides the secret");
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_connection() {
        for bad in [
            String::new(),
            format!("airlock2.{SECRET}.{CA}"),
            format!("airlock1.{SECRET}"),
            format!("airlock1.{SECRET}.{CA}.x"),
            format!("airlock1.{}.{CA}", &SECRET[1..]),
            format!("airlock1.{SECRET}.{}g", &CA[1..]),
        ] {
            assert!(
                matches!(EnrollToken::parse(&bad), Err(EnrollError::BadToken)),
                "{bad:?}"
            );
        }
    }
}
