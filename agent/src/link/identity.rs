//! The host's identity towards airlock-server, as files in one directory (0700):
//!
//! | file       | mode | what |
//! |------------|------|------|
//! | `host.key` | 0600 | the host's private key (PEM); made on this host, never sent anywhere |
//! | `host.pem` | 0644 | the host's certificate (PEM), issued by the server's CA at enrolment |
//! | `ca.pem`   | 0644 | the server's CA (PEM): the only root the host trusts for the server |
//! | `server`   | 0644 | the server URL given at enrolment (one line), `airlockd --server`'s default |
//!
//! Every file is written through a temporary file created with its final mode and renamed into
//! place, so a reader never sees half a file and the key is never readable by others.
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tonic::transport::{Certificate, ClientTlsConfig};
use x509_parser::prelude::FromDer as _;

/// Private key file.
pub const HOST_KEY: &str = "host.key";
/// Certificate file.
pub const HOST_CERT: &str = "host.pem";
/// Server CA file.
pub const CA_CERT: &str = "ca.pem";
/// Server URL file.
pub const SERVER: &str = "server";

/// Errors reading or writing the identity directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory or a file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The directory or a file cannot be written.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {why}")]
    Bad { path: PathBuf, why: String },
    /// `host.pem` is not the certificate of `host.key` (half-replaced identity?).
    #[error("{cert} does not certify the key in {key}; enrol this host again")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// An enrolled host's identity, loaded from its directory.
#[derive(Clone)]
pub struct Identity {
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// The host name: the common name of the certificate (the name the server enrolled).
    pub host: String,
    /// The server URL saved at enrolment, if any.
    pub server: Option<String>,
    /// SHA-256 (lowercase hex) of the certificate: how the server recognises this host.
    pub cert_sha256: String,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("dir", &self.dir)
            .field("host", &self.host)
            .field("server", &self.server)
            .field("cert_sha256", &self.cert_sha256)
            .finish_non_exhaustive()
    }
}

/// What [`write`] puts in the directory.
pub struct NewIdentity<'a> {
    /// The host's private key (PEM).
    pub key_pem: &'a str,
    /// The host's certificate (DER).
    pub cert_der: &'a [u8],
    /// The server's CA certificate (DER).
    pub ca_der: &'a [u8],
    /// The server URL used to enrol (normal form `https://HOST:PORT`).
    pub server: &'a str,
}

impl Identity {
    /// The default directory, `/var/lib/airlock/identity`.
    pub fn dir_default() -> PathBuf {
        PathBuf::from("/var/lib/airlock/identity")
    }

    /// Loads and cross-checks the identity in `dir`: the certificate must certify the key.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let key_path = dir.join(HOST_KEY);
        let cert_path = dir.join(HOST_CERT);
        let key_pem = read(&key_path)?;
        let cert_pem = read(&cert_path)?;
        let ca_pem = read(&dir.join(CA_CERT))?;
        let server = match fs::read_to_string(dir.join(SERVER)) {
            Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(IdentityError::Read {
                    path: dir.join(SERVER),
                    source,
                });
            }
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| bad(&key_path, format!("not a private key: {e}")))?;
        let cert_der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| bad(&cert_path, "no CERTIFICATE block"))?
            .map_err(|e| bad(&cert_path, format!("bad PEM: {e}")))?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| bad(&cert_path, e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(IdentityError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let host = common_name(&cert)
            .ok_or_else(|| bad(&cert_path, "the certificate has no common name"))?;
        Ok(Identity {
            dir: dir.to_path_buf(),
            host,
            server,
            cert_sha256: sha256_hex(&cert_der),
            key_pem,
            cert_pem,
            ca_pem,
        })
    }

    /// TLS for the host link: trust only the server's CA, present the host certificate.
    /// `server_name` is the name the server's certificate must hold (the server URL's host).
    pub fn client_tls(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .domain_name(server_name)
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}

/// Creates `dir` (0700; missing parents with the default mode) if missing and checks that this
/// process can write in it, so enrolment fails before spending a token rather than after. An
/// existing directory keeps its mode (it may be one the operator chose); the key file is 0600
/// whatever the directory's mode.
pub fn prepare_dir(dir: &Path) -> Result<(), IdentityError> {
    let werr = |source| IdentityError::Write {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| IdentityError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(werr(e)),
    }
    let probe = dir.join(".write-probe");
    let _ = fs::remove_file(&probe);
    create_with_mode(&probe, b"", 0o600)?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Writes a new identity into `dir` (see [`prepare_dir`]). All files go to temporary names
/// first and are renamed into place only when every one is written, so a failure leaves the
/// previous identity (if any) untouched.
pub fn write(dir: &Path, id: &NewIdentity<'_>) -> Result<(), IdentityError> {
    prepare_dir(dir)?;
    let files: [(&str, Vec<u8>, u32); 4] = [
        (CA_CERT, pem("CERTIFICATE", id.ca_der).into_bytes(), 0o644),
        (HOST_KEY, id.key_pem.as_bytes().to_vec(), 0o600),
        (
            HOST_CERT,
            pem("CERTIFICATE", id.cert_der).into_bytes(),
            0o644,
        ),
        (
            SERVER,
            format!("{}\n", id.server.trim()).into_bytes(),
            0o644,
        ),
    ];
    let tmp = |name: &str| dir.join(format!("{name}.tmp"));
    for (name, bytes, mode) in &files {
        let _ = fs::remove_file(tmp(name));
        if let Err(e) = create_with_mode(&tmp(name), bytes, *mode) {
            for (n, _, _) in &files {
                let _ = fs::remove_file(tmp(n));
            }
            return Err(e);
        }
    }
    for (name, _, _) in &files {
        fs::rename(tmp(name), dir.join(name)).map_err(|source| IdentityError::Write {
            path: dir.join(name),
            source,
        })?;
    }
    Ok(())
}

fn create_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

fn read(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, why: impl Into<String>) -> IdentityError {
    IdentityError::Bad {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// The first common name of a certificate's subject.
pub(crate) fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// SHA-256 of `der`, lowercase hex (the server's fingerprint format).
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PEM encoding (RFC 7468: base64, 64-character lines).
fn pem(label: &str, der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for c in der.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            b64.push(if i <= c.len() {
                T[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn pem_round_trips_through_the_pem_parser() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 300] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let text = pem("CERTIFICATE", &der);
            assert!(text.lines().all(|l| l.len() <= 64), "{text}");
            if len > 0 {
                let back = CertificateDer::pem_slice_iter(text.as_bytes())
                    .next()
                    .unwrap()
                    .unwrap();
                assert_eq!(back.as_ref(), der.as_slice(), "len {len}");
            }
        }
    }

    #[test]
    fn prepare_dir_makes_a_private_directory_and_leaves_no_probe() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/identity");
        prepare_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        prepare_dir(&d).unwrap();
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            0,
            "the write probe is removed"
        );
    }
}
