//! The server's certificate authority: the CA itself, the server's TLS certificate, host
//! certificates issued at enrolment, and the one-time enrolment tokens.
//!
//! Keys are ECDSA P-256 (rcgen with ring). Files in the PKI directory:
//! `ca.pem` (0644), `ca.key` (0600), `server.pem` (chain: leaf then CA, 0644), `server.key`
//! (0600). Private keys are created with mode 0600 from the start (never chmod-ed after), so
//! there is no window in which another user could open them.
//!
//! Enrolment token: `airlock1.<SECRET>.<CA_SHA256>`, both parts lowercase hex. SECRET is 32
//! random bytes and authenticates the host to the server; the server stores only the SHA-256 of
//! the SECRET text. CA_SHA256 is the SHA-256 of the CA certificate (DER) and lets the host
//! authenticate the server before it has the CA (like kubeadm's discovery hash).
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer as _;

/// CA certificate file (PEM), given to hosts at enrolment.
pub const CA_CERT: &str = "ca.pem";
/// CA private key file (PEM, 0600).
pub const CA_KEY: &str = "ca.key";
/// Server certificate chain file (PEM: leaf, then CA).
pub const SERVER_CERT: &str = "server.pem";
/// Server private key file (PEM, 0600).
pub const SERVER_KEY: &str = "server.key";
/// Prefix (and format version) of enrolment tokens.
pub const TOKEN_PREFIX: &str = "airlock1";

/// The CA outlives many host certificates; rotating it means re-enrolling every host.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Renewed by running `issue_server` again (the file is replaced atomically).
const SERVER_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
const HOST_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start an hour in the past so a host whose clock is a little behind accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing a file (or creating the directory) failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `Ca::create` found a CA already there.
    #[error("{path} already exists; refusing to overwrite a CA (every enrolled host trusts it)")]
    Exists { path: PathBuf },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {why}")]
    BadFile { path: PathBuf, why: String },
    /// A server name that cannot go into a certificate.
    #[error("server name {0:?} is not a DNS name or an IP address")]
    BadName(String),
    /// A host name that cannot go into a certificate.
    #[error("host name {0:?}: expected 1-253 characters of a-z, A-Z, 0-9, '.', '-' and '_'")]
    BadHostName(String),
    /// The CSR does not parse, its self-signature is wrong, or its key type is not accepted.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The server's certificate authority (key in memory, certificate as DER).
pub struct Ca {
    key: KeyPair,
    cert_der: CertificateDer<'static>,
    /// `ca.pem` as written (appended to `server.pem` to make the chain).
    cert_pem: String,
}

/// A host certificate issued by [`Ca::sign_host`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// [`fingerprint`] of `cert_der`: what the store keeps to recognise the host.
    pub sha256_hex: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca")
            .field("sha256", &self.sha256_hex())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new CA in `dir` (created 0700 if missing): `ca.key` (0600) and `ca.pem` (0644).
    /// Refuses to overwrite either file.
    pub fn create(dir: &Path) -> Result<Ca, PkiError> {
        make_dir(dir)?;
        for f in [CA_KEY, CA_CERT] {
            let path = dir.join(f);
            if path.symlink_metadata().is_ok() {
                return Err(PkiError::Exists { path });
            }
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = cn("airlock-server CA");
        // pathlen 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, SystemTime::now(), CA_VALIDITY);
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key)?;
        // Key first, with create_new: if someone raced us to it, we stop before writing a
        // certificate that does not match the key on disk.
        write_new(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        if let Err(e) = write_new(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644) {
            let _ = fs::remove_file(dir.join(CA_KEY));
            return Err(e);
        }
        Ok(Ca {
            key,
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
        })
    }

    /// Loads the CA from `dir` (`ca.pem`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT);
        let cert_pem = read_string(&cert_path)?;
        let cert_der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| bad_file(&cert_path, "no CERTIFICATE block"))?
            .map_err(|e| bad_file(&cert_path, format!("bad PEM: {e}")))?;
        let key_path = dir.join(CA_KEY);
        let key_pem = read_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| bad_file(&key_path, format!("not a private key: {e}")))?;
        Ok(Ca {
            key,
            cert_der,
            cert_pem,
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 (lowercase hex) of the CA certificate: the pin in enrolment tokens.
    pub fn sha256_hex(&self) -> String {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// Issues the server's TLS certificate for `names` (DNS names or IP addresses; `localhost`,
    /// 127.0.0.1 and ::1 are always added) and writes `server.pem` (leaf + CA: the host's
    /// enrolment-time verifier finds the CA in the chain) and `server.key` (0600). Replaces
    /// earlier files atomically.
    pub fn issue_server(&self, dir: &Path, names: &[String]) -> Result<(), PkiError> {
        make_dir(dir)?;
        let mut sans: Vec<SanType> = Vec::new();
        let defaults = ["localhost", "127.0.0.1", "::1"].map(String::from);
        for name in names.iter().chain(defaults.iter()) {
            let name = name.trim();
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if valid_dns_name(name) => SanType::DnsName(
                    name.try_into()
                        .map_err(|_| PkiError::BadName(name.to_string()))?,
                ),
                Err(_) => return Err(PkiError::BadName(name.to_string())),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let first = names.first().map(|s| s.trim()).unwrap_or("localhost");
        let now = SystemTime::now();
        let params = leaf(
            first,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            now,
            SERVER_VALIDITY,
        )?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let chain = format!("{}{}", cert.pem(), self.cert_pem);
        write_atomic(&dir.join(SERVER_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&dir.join(SERVER_CERT), chain.as_bytes(), 0o644)
    }

    /// Signs a host certificate from a PKCS#10 CSR (DER). The CSR's self-signature is checked
    /// (proof the host holds the key) and its key must be ECDSA P-256 or Ed25519; the subject
    /// and SANs it asks for are ignored: the certificate is for `host` (CN and DNS SAN), client
    /// authentication only, valid one year from `now_unix_ms`, with a random serial.
    pub fn sign_host(
        &self,
        csr_der: &[u8],
        host: &str,
        now_unix_ms: u64,
    ) -> Result<Issued, PkiError> {
        if !valid_host_name(host) {
            return Err(PkiError::BadHostName(host.to_string()));
        }
        let csr = check_csr(csr_der)?;
        let san = host
            .try_into()
            .map_err(|_| PkiError::BadHostName(host.to_string()))?;
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_unix_ms);
        let eku = ExtendedKeyUsagePurpose::ClientAuth;
        let params = leaf(host, vec![SanType::DnsName(san)], eku, now, HOST_VALIDITY)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        let cert_der = cert.der().to_vec();
        Ok(Issued {
            sha256_hex: fingerprint(&cert_der),
            cert_der,
        })
    }
}

/// Parses a CSR, verifying its self-signature, and checks its key type. Everything that can be
/// wrong with a CSR is found here, before anything is signed or any token is spent.
fn check_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, PkiError> {
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
            .map_err(|e| PkiError::InvalidCsr(format!("not a DER PKCS#10 request: {e}")))?;
    // rcgen encodes the key with the algorithm of the CSR's *signature*, which says nothing
    // about the curve (ecdsa-with-SHA256 fits a P-384 key), so the key itself is checked here.
    let alg = &parsed.certification_request_info.subject_pki.algorithm;
    let p256 = alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|c| c == OID_EC_P256);
    let ed25519 = alg.algorithm == OID_SIG_ED25519;
    if !p256 && !ed25519 {
        return Err(PkiError::InvalidCsr(format!(
            "key type {} is not ECDSA P-256 or Ed25519",
            alg.algorithm
        )));
    }
    let csr = CertificateSigningRequestParams::from_der(&csr_der.into())
        .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
    // The signature algorithm must be the key's usual one too: rcgen encodes the key with it.
    let want = if p256 {
        &PKCS_ECDSA_P256_SHA256
    } else {
        &rcgen::PKCS_ED25519
    };
    if csr.public_key.algorithm() != want {
        let why = "signature algorithm is not ecdsa-with-SHA256 (P-256 key) or Ed25519";
        return Err(PkiError::InvalidCsr(why.into()));
    }
    Ok(csr)
}

/// SHA-256 of `der`, lowercase hex: how the store identifies certificates.
pub fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The TLS configuration of the server's one port: identity from `server.pem`/`server.key`,
/// client certificates verified against `ca.pem` but optional — Enrollment is called without
/// one and the CLI uses a bearer token; HostLink checks for the certificate itself.
pub fn server_tls(dir: &Path) -> Result<tonic::transport::ServerTlsConfig, PkiError> {
    let chain = read_string(&dir.join(SERVER_CERT))?;
    let key = read_string(&dir.join(SERVER_KEY))?;
    let ca = read_string(&dir.join(CA_CERT))?;
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(chain, key))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca))
        .client_auth_optional(true))
}

/// [`fingerprint`] of the client's leaf certificate, if it presented one. rustls has already
/// verified the chain against our CA by the time a request arrives.
pub fn peer_fingerprint<T>(req: &tonic::Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    certs.first().map(|c| fingerprint(c))
}

/// Makes a new enrolment token for `ca`: `(token, sha256 hex of its secret)`. Print the token
/// once; store only the hash.
pub fn new_enrollment_token(ca: &Ca) -> Result<(String, String), PkiError> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| PkiError::Random)?;
    let secret = hex(&secret);
    let hash = token_secret_hash(&secret);
    Ok((format!("{TOKEN_PREFIX}.{secret}.{}", ca.sha256_hex()), hash))
}

/// An enrolment token taken apart.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// The secret part (64 lowercase hex digits).
    pub secret: String,
    /// SHA-256 (lowercase hex) of the CA certificate the token was made under.
    pub ca_sha256_hex: String,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("ca_sha256_hex", &self.ca_sha256_hex)
            .finish_non_exhaustive()
    }
}

impl EnrollmentToken {
    /// Parses `airlock1.<64 hex>.<64 hex>` (surrounding whitespace ignored); `None` if malformed.
    pub fn parse(token: &str) -> Option<EnrollmentToken> {
        let mut parts = token.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(secret), Some(ca), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret) || !is_hex(ca) {
            return None;
        }
        Some(EnrollmentToken {
            secret: secret.to_ascii_lowercase(),
            ca_sha256_hex: ca.to_ascii_lowercase(),
        })
    }

    /// What the store keeps for this token: [`token_secret_hash`] of the secret.
    pub fn secret_hash(&self) -> String {
        token_secret_hash(&self.secret)
    }
}

/// SHA-256 (lowercase hex) of a token's secret part (its text, as printed).
pub fn token_secret_hash(secret: &str) -> String {
    fingerprint(secret.as_bytes())
}

fn cn(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// A leaf certificate's parameters: `name` as CN, these SANs, one extended key usage.
fn leaf(
    name: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = cn(name);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, lifetime);
    params.serial_number = Some(serial()?);
    Ok(params)
}

fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

/// 16 random bytes, top bit clear so the DER INTEGER is positive without padding.
fn serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Random)?;
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&b))
}

fn valid_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn valid_dns_name(s: &str) -> bool {
    valid_host_name(s) && rustls_pki_types::DnsName::try_from(s).is_ok()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bad_file(path: &Path, why: impl Into<String>) -> PkiError {
    PkiError::BadFile {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn make_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Creates `path` with `mode` (never replacing an existing file).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AlreadyExists => PkiError::Exists {
            path: path.to_path_buf(),
        },
        _ => PkiError::Write {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

/// Writes `path` through a temporary file created with `mode`, then renames it over `path`, so
/// readers see the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash would make create_new fail; it holds nothing we need.
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        PkiError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}
