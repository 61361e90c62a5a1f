//! End-to-end enrolment over TLS on loopback: the real airlock-server CA, store and Enrollment
//! service on one side, `airlock_agent::link::enroll` on the other. No root needed.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airlock_agent::link::enroll::{EnrollError, enroll};
use airlock_agent::link::identity::Identity;
use airlock_agent::link::tls::TlsError;
use airlock_proto::v1::{EnrollRequest, EnrollResponse};
use airlock_proto::{Enrollment, EnrollmentClient, EnrollmentServer};
use airlock_server::enroll::EnrollService;
use airlock_server::pki::{self, Ca};
use airlock_server::store::Store;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};
use tonic::{Request, Response, Status};

/// Counts the calls that reach the service, to prove a refused handshake sent nothing.
struct Counting {
    inner: EnrollService,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Enrollment for Counting {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.enroll(req).await
    }
}

/// Answers with the fingerprint of the client certificate the server saw (or "none").
struct Echo;

#[tonic::async_trait]
impl Enrollment for Echo {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let host = pki::peer_fingerprint(&req).unwrap_or_else(|| "none".into());
        Ok(Response::new(EnrollResponse {
            host,
            ..Default::default()
        }))
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    ca: Arc<Ca>,
    store: Store,
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Serves `svc` with the server's TLS config from `pki_dir` on `ip`, port chosen by the OS.
async fn serve<S: Enrollment>(pki_dir: &Path, ip: &str, svc: S) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .tls_config(pki::server_tls(pki_dir).unwrap())
        .unwrap()
        .add_service(EnrollmentServer::new(svc));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn fixture_on(ip: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    let ca = Arc::new(Ca::create(&pki_dir).unwrap());
    ca.issue_server(&pki_dir, &[]).unwrap();
    let store = Store::open(&Store::sqlite_url(&tmp.path().join("db")))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = Counting {
        inner: EnrollService {
            store: store.clone(),
            ca: ca.clone(),
        },
        calls: calls.clone(),
    };
    let addr = serve(&pki_dir, ip, svc).await;
    Fixture {
        tmp,
        ca,
        store,
        addr,
        calls,
    }
}

async fn fixture() -> Fixture {
    fixture_on("127.0.0.1").await
}

impl Fixture {
    async fn token(&self, host: &str, expires_unix_ms: u64) -> String {
        let (token, hash) = pki::new_enrollment_token(&self.ca).unwrap();
        self.store
            .add_enrollment(host, &BTreeMap::new(), &hash, expires_unix_ms, now_ms())
            .await
            .unwrap();
        token
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn dir(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn refused_code(r: Result<impl std::fmt::Debug, EnrollError>) -> tonic::Code {
    match r {
        Err(EnrollError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const HOUR_MS: u64 = 3600 * 1000;

#[tokio::test]
async fn enrolment_writes_a_private_identity_named_after_the_token_not_the_csr() {
    let f = fixture().await;
    let token = f.token("web-1", now_ms() + HOUR_MS).await;
    let dir = f.dir("identity");
    // The CSR asks for the local host name; the certificate must name the enrolled host.
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "web-1"
    );
    let out = enroll(&f.url(), &token, &dir).await.unwrap();
    assert_eq!(out.host, "web-1");
    assert_eq!(out.dir, dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("host.key")), 0o600);
    for f in ["host.pem", "ca.pem", "server"] {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ca.pem", "host.key", "host.pem", "server"],
        "no temporary files left"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("server")).unwrap(),
        format!("{}\n", f.url())
    );

    let id = Identity::load(&dir).unwrap();
    assert_eq!(id.host, "web-1");
    assert_eq!(id.server.as_deref(), Some(f.url().as_str()));
    let stored = f.store.host("web-1").await.unwrap().unwrap();
    assert_eq!(stored.cert_sha256.as_deref(), Some(id.cert_sha256.as_str()));
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_used_token_is_refused_unauthenticated_and_writes_nothing() {
    let f = fixture().await;
    let token = f.token("web-1", now_ms() + HOUR_MS).await;
    enroll(&f.url(), &token, &f.dir("first")).await.unwrap();
    let again = f.dir("second");
    assert_eq!(
        refused_code(enroll(&f.url(), &token, &again).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(std::fs::read_dir(&again).unwrap().count(), 0);
}

#[tokio::test]
async fn an_expired_token_is_refused_unauthenticated() {
    let f = fixture().await;
    let token = f.token("web-1", now_ms() - 1).await;
    assert_eq!(
        refused_code(enroll(&f.url(), &token, &f.dir("id")).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        f.store.host("web-1").await.unwrap().unwrap().cert_sha256,
        None
    );
}

#[tokio::test]
async fn a_token_pinning_another_ca_fails_tls_before_the_token_is_sent() {
    let f = fixture().await;
    let token = f.token("web-1", now_ms() + HOUR_MS).await;
    let other = Ca::create(&f.dir("other-pki")).unwrap();
    let forged = token.replace(&f.ca.sha256_hex(), &other.sha256_hex());
    assert_ne!(forged, token);
    let r = enroll(&f.url(), &forged, &f.dir("id")).await;
    assert!(
        matches!(r, Err(EnrollError::Connect(TlsError::PinMismatch { .. }))),
        "{r:?}"
    );
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        0,
        "no RPC reached the server"
    );
    // The token was never seen, so it still works.
    enroll(&f.url(), &token, &f.dir("id")).await.unwrap();
}

#[tokio::test]
async fn a_server_certificate_without_the_dialled_name_fails_tls_despite_the_right_ca() {
    // 127.0.0.2 is loopback too, but not in the server certificate's names.
    let f = fixture_on("127.0.0.2").await;
    let token = f.token("web-1", now_ms() + HOUR_MS).await;
    let r = enroll(&f.url(), &token, &f.dir("id")).await;
    assert!(
        matches!(r, Err(EnrollError::Connect(TlsError::Handshake { .. }))),
        "{r:?}"
    );
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("not valid for name"), "{msg}");
    assert_eq!(f.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_client_certificate_the_server_sees_is_the_one_stored_at_redeem() {
    let f = fixture().await;
    let token = f.token("web-1", now_ms() + HOUR_MS).await;
    let dir = f.dir("identity");
    enroll(&f.url(), &token, &dir).await.unwrap();
    let id = Identity::load(&dir).unwrap();
    let echo = serve(&f.dir("pki"), "127.0.0.1", Echo).await;
    let call = |tls: ClientTlsConfig| async move {
        let ch = Endpoint::from_shared(format!("https://{echo}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        EnrollmentClient::new(ch)
            .enroll(EnrollRequest::default())
            .await
            .unwrap()
            .into_inner()
            .host
    };
    let seen = call(id.client_tls("localhost")).await;
    let stored = f
        .store
        .host("web-1")
        .await
        .unwrap()
        .unwrap()
        .cert_sha256
        .unwrap();
    assert_eq!(seen, stored);
    assert_eq!(
        f.store.host_by_cert(&seen).await.unwrap().unwrap().name,
        "web-1"
    );
    // Without a client certificate the same port still answers (client auth is optional).
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let anonymous = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(ca_pem));
    assert_eq!(call(anonymous).await, "none");
}

#[tokio::test]
async fn an_identity_whose_certificate_is_not_for_its_key_does_not_load() {
    let f = fixture().await;
    for (host, dir) in [("web-1", "a"), ("web-2", "b")] {
        let token = f.token(host, now_ms() + HOUR_MS).await;
        enroll(&f.url(), &token, &f.dir(dir)).await.unwrap();
    }
    std::fs::copy(f.dir("b").join("host.key"), f.dir("a").join("host.key")).unwrap();
    let r = Identity::load(&f.dir("a"));
    assert!(
        matches!(
            r,
            Err(airlock_agent::link::identity::IdentityError::KeyMismatch { .. })
        ),
        "{r:?}"
    );
}
