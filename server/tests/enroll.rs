//! The server's CA (`pki`) and the Enrollment service (`enroll`), called in process. The
//! end-to-end enrolment over TLS, with the host side, is in `agent/tests/enroll.rs`.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use airlock_proto::Enrollment as _;
use airlock_proto::v1::EnrollRequest;
use airlock_server::enroll::EnrollService;
use airlock_server::pki::{self, Ca, EnrollmentToken, PkiError};
use airlock_server::store::Store;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::prelude::*;

const NOW: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A CSR for a fresh key of `alg` that asks for another name than the one enrolled.
fn csr(alg: &'static rcgen::SignatureAlgorithm) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "evil.example");
    params.distinguished_name = dn;
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

/// DNS names and IP addresses of the subjectAltName extension, as text.
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let ext = cert.subject_alternative_name().unwrap().unwrap().value;
    ext.general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(s) => s.to_string(),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
            }
            GeneralName::IPAddress(b) => {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
            }
            other => other.to_string(),
        })
        .collect()
}

fn cn(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn ca_files_have_private_key_modes_and_are_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let ca = Ca::create(&dir).unwrap();
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.pem")), 0o644);
    assert_eq!(mode(&dir), 0o700);
    let key_before = std::fs::read(dir.join("ca.key")).unwrap();
    assert!(matches!(Ca::create(&dir), Err(PkiError::Exists { .. })));
    assert_eq!(
        std::fs::read(dir.join("ca.key")).unwrap(),
        key_before,
        "the CA key is untouched"
    );
    let loaded = Ca::load(&dir).unwrap();
    assert_eq!(loaded.sha256_hex(), ca.sha256_hex());
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(ca.sha256_hex(), pki::fingerprint(ca.cert_der()));
    assert!(
        !format!("{ca:?}").contains("PRIVATE"),
        "Debug never prints the key"
    );
}

#[test]
fn server_certificate_chain_holds_the_ca_and_always_covers_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path()).unwrap();
    ca.issue_server(tmp.path(), &["airlock.example".into(), "10.1.2.3".into()])
        .unwrap();
    assert_eq!(mode(&tmp.path().join("server.key")), 0o600);
    let pem = std::fs::read(tmp.path().join("server.pem")).unwrap();
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
        .map(Result::unwrap)
        .collect();
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(chain[1].as_ref(), ca.cert_der());
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(
        sans(&leaf),
        [
            "airlock.example",
            "10.1.2.3",
            "localhost",
            "127.0.0.1",
            "::1"
        ]
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(matches!(
        ca.issue_server(tmp.path(), &["bad name".into()]),
        Err(PkiError::BadName(_))
    ));
    // Re-issuing replaces the files (renewal) and leaves no temporary file behind.
    ca.issue_server(tmp.path(), &[]).unwrap();
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp"))
    );
    pki::server_tls(tmp.path()).unwrap();
}

#[test]
fn host_certificates_are_named_after_the_enrolled_host_not_the_csr() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path()).unwrap();
    let (key, der) = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    let issued = ca.sign_host(&der, "web-1", NOW).unwrap();
    assert_eq!(issued.sha256_hex, pki::fingerprint(&issued.cert_der));
    let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();
    assert_eq!(cn(&cert), "web-1");
    assert_eq!(sans(&cert), ["web-1"]);
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(!cert.is_ca());
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    let (from, to) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    assert!(
        from <= (NOW / 1000) as i64 && to - (NOW / 1000) as i64 == 365 * 24 * 3600,
        "{from} {to}"
    );
    // Random serials: two certificates for the same CSR differ.
    let again = ca.sign_host(&der, "web-1", NOW).unwrap();
    let (_, cert2) = X509Certificate::from_der(&again.cert_der).unwrap();
    assert_ne!(cert.raw_serial(), cert2.raw_serial());
    // Ed25519 keys are accepted too.
    ca.sign_host(&csr(&rcgen::PKCS_ED25519).1, "web-2", NOW)
        .unwrap();
}

#[test]
fn csrs_with_other_key_types_or_a_broken_signature_are_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path()).unwrap();
    let (_, p384) = csr(&rcgen::PKCS_ECDSA_P384_SHA384);
    assert!(
        matches!(ca.sign_host(&p384, "web-1", NOW), Err(PkiError::InvalidCsr(m)) if m.contains("P-256"))
    );
    let (_, mut tampered) = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    // Flip a byte of the subject ("evil.example"): the self-signature no longer matches.
    let at = tampered.windows(4).position(|w| w == b"evil").unwrap();
    tampered[at] ^= 1;
    assert!(matches!(
        ca.sign_host(&tampered, "web-1", NOW),
        Err(PkiError::InvalidCsr(_))
    ));
    assert!(matches!(
        ca.sign_host(b"garbage", "web-1", NOW),
        Err(PkiError::InvalidCsr(_))
    ));
    let (_, ok) = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(matches!(
        ca.sign_host(&ok, "web 1", NOW),
        Err(PkiError::BadHostName(_))
    ));
}

#[test]
fn tokens_pin_the_ca_and_only_the_secret_hash_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path()).unwrap();
    let (token, hash) = pki::new_enrollment_token(&ca).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "airlock1");
    assert_eq!(parts[2], ca.sha256_hex());
    let t = EnrollmentToken::parse(&format!("  {token}\n")).unwrap();
    assert_eq!(t.secret, parts[1]);
    assert_eq!(t.secret_hash(), hash);
    assert_eq!(hash, pki::fingerprint(parts[1].as_bytes()));
    assert!(!token.contains(&hash));
    assert!(
        !format!("{t:?}").contains(&t.secret),
        "Debug hides the secret"
    );
    let (token2, _) = pki::new_enrollment_token(&ca).unwrap();
    assert_ne!(token, token2);
    for bad in [
        "",
        "airlock1..",
        &token.replace("airlock1", "airlock2"),
        &format!("{token}.x"),
        &token[..token.len() - 1],
    ] {
        assert!(EnrollmentToken::parse(bad).is_none(), "{bad:?}");
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    svc: EnrollService,
    ca: Arc<Ca>,
    store: Store,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::create(&tmp.path().join("pki")).unwrap());
    let store = Store::open(&Store::sqlite_url(&tmp.path().join("db")))
        .await
        .unwrap();
    Fixture {
        svc: EnrollService {
            store: store.clone(),
            ca: ca.clone(),
        },
        ca,
        store,
        _tmp: tmp,
    }
}

impl Fixture {
    async fn token(&self, host: &str, expires: u64) -> String {
        let (token, hash) = pki::new_enrollment_token(&self.ca).unwrap();
        self.store
            .add_enrollment(host, &BTreeMap::new(), &hash, expires, NOW)
            .await
            .unwrap();
        token
    }

    async fn call(
        &self,
        token: &str,
        csr_der: Vec<u8>,
    ) -> Result<airlock_proto::v1::EnrollResponse, tonic::Status> {
        let req = EnrollRequest {
            token: token.to_string(),
            csr_der,
        };
        self.svc
            .enroll(tonic::Request::new(req))
            .await
            .map(|r| r.into_inner())
    }
}

#[tokio::test]
async fn a_bad_csr_is_invalid_argument_and_does_not_burn_the_token() {
    let f = fixture().await;
    let token = f.token("web-1", u64::MAX / 2).await;
    let (_, p384) = csr(&rcgen::PKCS_ECDSA_P384_SHA384);
    let e = f.call(&token, p384).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("csr_der"), "{}", e.message());
    let ok = f
        .call(&token, csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap();
    assert_eq!(ok.host, "web-1");
    assert_eq!(ok.ca_der, f.ca.cert_der());
    let host = f.store.host("web-1").await.unwrap().unwrap();
    assert_eq!(
        host.cert_sha256,
        Some(pki::fingerprint(&ok.certificate_der))
    );
    let attempts = f.store.attempts(10).await.unwrap();
    let summary: Vec<(&str, &str, &str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a.who.as_str(),
                a.channel.as_str(),
                a.action.as_str(),
                a.result.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("host:web-1", "enroll", "enroll", "OK"),
            ("host:web-1", "enroll", "enroll", "INVALID_ARGUMENT")
        ]
    );
}

#[tokio::test]
async fn used_expired_unknown_and_malformed_tokens_are_unauthenticated_and_recorded() {
    let f = fixture().await;
    let token = f.token("web-1", u64::MAX / 2).await;
    f.call(&token, csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap();
    let again = f
        .call(&token, csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unauthenticated, "{again:?}");
    // The token is valid while now < expires; the service uses the real clock.
    let expired = f.token("web-2", NOW + DAY_MS).await;
    let e = f
        .call(&expired, csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        f.store.host("web-2").await.unwrap().unwrap().cert_sha256,
        None
    );
    let unknown = pki::new_enrollment_token(&f.ca).unwrap().0;
    assert_eq!(
        f.call(&unknown, csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    let e = f
        .call("airlock1.nope", csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("malformed"), "{}", e.message());
    let attempts = f.store.attempts(10).await.unwrap();
    let refused: Vec<&str> = attempts
        .iter()
        .filter(|a| a.result != "OK")
        .map(|a| a.who.as_str())
        .collect();
    assert_eq!(refused, vec!["unknown"; 4], "{attempts:?}");
}

#[tokio::test]
async fn oversized_inputs_are_invalid_argument_naming_the_field() {
    let f = fixture().await;
    let token = f.token("web-1", u64::MAX / 2).await;
    let e = f
        .call(&"a".repeat(257), csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("token"), "{}", e.message());
    let e = f.call(&token, vec![0x30; 16 * 1024 + 1]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("csr_der"), "{}", e.message());
    // Neither spent the token.
    f.call(&token, csr(&rcgen::PKCS_ECDSA_P256_SHA256).1)
        .await
        .unwrap();
}
