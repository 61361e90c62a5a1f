//! An airlock-server in the test's own process, and fake hosts and approvers to drive it: what
//! the integration tests (`server/tests/`) and the benchmark (`airlock-e2e --bench`) use.
//!
//! ```text
//!  FakeHost ── mTLS HostLink stream ──▶ TestServer (127.0.0.1:0, real router, real TLS,
//!  approver ── TLS + bearer token ────▶   real store: SQLite temp file or PostgreSQL)
//! ```
//!
//! - [`TestServer`] builds everything `airlock-server serve` builds (CA, server certificate,
//!   config, store, broker, the gRPC router) in a temporary directory and serves on a free
//!   loopback port until dropped. Two of them can share one database and one CA directory,
//!   as two replicas do ([`Options::pki_dir`], [`Options::database`]).
//! - [`FakeHost`] is a host with an enrolled certificate ([`enroll`]) holding the HostLink
//!   stream: it sends `Hello`, `Opened`, `Outcome` or any raw [`pb::HostMessage`] and reads
//!   what the server sends, with timeouts.
//! - [`approvals_client`] is an approver (a bearer token, and optionally a client certificate
//!   to check that hosts are refused).
//! - [`request`] and [`context`] make realistic requests the way airlockd does (through
//!   `airlock_approval`'s types and converters).
//! - [`pg`] starts a throwaway PostgreSQL cluster.
//! - [`audit`] chains a host's audit records and signs its checkpoints (airlock-audit), and
//!   ships them as a [`FakeHost`] (`Hello.audit_key`, `AuditBatch` → `AuditAck`).
//!
//! Nothing here is used by the server itself.
pub mod audit;
pub mod oidc;
pub mod pg;
pub mod slack;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_approval::convert as ac;
use airlock_approval::{Ancestor, Launcher, OnTimeout, Op, RequestContext};
use airlock_proto::v1 as pb;
use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Status, Streaming};

use crate::broker::{Broker, now_ms};
use crate::pki::Ca;
use crate::store::{Store, TokenRow};

/// The config a [`TestServer`] runs with unless told otherwise.
///
/// - `alice` and `bob` are in `sre`; alice is host user `alice` everywhere (so she may not
///   approve requests of agents launched by `alice`).
/// - `carol` is in `dba`, which approves nothing.
/// - `bot` is in `bots` (the benchmark's auto-approver).
/// - Route `pair` (requests whose policy rule matches `pair-*`) needs 2 of sre; route
///   `default` takes everything else, decided by one of sre or bots.
pub const DEFAULT_CONFIG: &str = "\
principals:
  alice:
    groups: [sre]
    host_users: [alice]
  bob: { groups: [sre] }
  carol: { groups: [dba] }
  bot: { groups: [bots] }
routes:
  - name: pair
    match:
      rules: [\"pair-*\"]
    approvers: [sre]
    threshold: 2
  - name: default
    approvers: [sre, bots]
";

/// The `airlockd` version [`FakeHost`] reports in its `Hello`.
pub const FAKE_VERSION: &str = "fake-host/0";

/// A directory removed (recursively) on drop, under the system's temporary directory unless
/// created with [`TempDir::new_in`].
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory (mode 0700) `PREFIX.PID.N` in the system's temporary directory.
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        TempDir::new_in(&std::env::temp_dir(), prefix)
    }

    /// A new directory (mode 0700) `PREFIX.PID.N` in `base` (created if missing).
    pub fn new_in(base: &Path, prefix: &str) -> std::io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(base)?;
        loop {
            let salt = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let p = base.join(format!("{prefix}.{}.{n}.{salt:08x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `dir` a server directory as `airlock-server init` would: a new CA, the server's
/// certificate (for localhost, 127.0.0.1 and ::1) and `server.yaml` holding `config`.
pub fn init_dir(dir: &Path, config: &str) -> anyhow::Result<Arc<Ca>> {
    let ca = Ca::create(dir).context("creating the CA")?;
    ca.issue_server(dir, &[])
        .context("issuing the server certificate")?;
    std::fs::write(crate::cli::config_path(dir), config).context("writing server.yaml")?;
    Ok(Arc::new(ca))
}

/// How to start a [`TestServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// `server.yaml` text ([`DEFAULT_CONFIG`] by default); `{http_url}` in it is replaced by
    /// the HTTP listener's `http://127.0.0.1:PORT` (for `web.public_url`).
    pub config: String,
    /// Database URL; `None`: a SQLite file in the server's temporary directory.
    pub database: Option<String>,
    /// Reuse the CA and server certificate of this directory (another [`TestServer`]'s
    /// [`TestServer::pki_dir`]: a second replica); `None`: a new CA.
    pub pki_dir: Option<PathBuf>,
    /// Where the temporary directory goes; `None`: the system's temporary directory.
    pub base: Option<PathBuf>,
    /// What it serves ([`Services::All`] by default; a collector with a replica's
    /// [`Options::pki_dir`] and [`Options::database`] is `airlock-server collector`).
    pub services: crate::cli::serve::Services,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            config: DEFAULT_CONFIG.to_string(),
            database: None,
            pki_dir: None,
            base: None,
            services: crate::cli::serve::Services::All,
        }
    }
}

/// airlock-server serving on `127.0.0.1:PORT` in this process (the real router: TLS, the
/// host link, approvals, enrolment). Dropping it stops accepting, shuts down every open
/// connection (streams end) and removes its directory.
pub struct TestServer {
    /// `https://127.0.0.1:PORT`; the certificate is for `localhost` and 127.0.0.1.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The HTTP listener's address (channel callbacks, see `crate::http`; always on here,
    /// on an ephemeral loopback port).
    pub http_addr: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
    /// The metrics listener's address (`GET /metrics`; always on here, on an ephemeral
    /// loopback port).
    pub metrics_addr: SocketAddr,
    _metrics: crate::metrics::Listener,
    /// The CA certificate (PEM): what hosts and approvers trust.
    pub ca_pem: String,
    /// The CA (signs host certificates in [`TestServer::enroll`]).
    pub ca: Arc<Ca>,
    /// The broker the services share (its hub, its config).
    pub broker: Arc<Broker>,
    /// The server's store (a pool of its own).
    pub store: Store,
    /// The database URL.
    pub database: String,
    pki_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Duplicates of accepted sockets, shut down on drop so that open streams end.
    conns: Arc<Mutex<Vec<OwnedFd>>>,
    dir: TempDir,
}

impl TestServer {
    /// A server with [`DEFAULT_CONFIG`] on a new SQLite file.
    pub async fn start() -> anyhow::Result<TestServer> {
        TestServer::with(Options::default()).await
    }

    /// A server as `o` says. Needs a Tokio runtime (the server runs in a task of it).
    pub async fn with(o: Options) -> anyhow::Result<TestServer> {
        let dir = match &o.base {
            Some(b) => TempDir::new_in(b, "airlock-test-server")?,
            None => TempDir::new("airlock-test-server")?,
        };
        // Bound first: a config may name the page's address (`{http_url}`, for `web:`).
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?;
        let o = Options {
            config: o
                .config
                .replace("{http_url}", &format!("http://{http_addr}")),
            ..o
        };
        let (ca, pki_dir) = match &o.pki_dir {
            Some(p) => (
                Arc::new(Ca::load(p).context("loading the shared CA")?),
                p.clone(),
            ),
            None => (init_dir(dir.path(), &o.config)?, dir.path().to_path_buf()),
        };
        let tls = crate::pki::server_tls(&pki_dir).context("server TLS")?;
        let config = crate::config::parse(&o.config, "server.yaml")
            .map_err(|e| anyhow::anyhow!("test config: {e}"))?;
        let database = o
            .database
            .clone()
            .unwrap_or_else(|| Store::sqlite_url(&dir.path().join("airlock.db")));
        let store = Store::open(&database)
            .await
            .with_context(|| format!("opening {database}"))?;
        let broker = Broker::new(store.clone(), config);
        let _webhook = crate::webhook::spawn(&broker, dir.path().to_path_buf());
        let _slack = crate::slack::spawn(&broker, dir.path().to_path_buf());
        let _teams = crate::teams::spawn(&broker, dir.path().to_path_buf());
        let _remind = crate::remind::spawn(&broker)?;
        let _prune = crate::collector::spawn_pruner(&broker);
        let http_router = crate::http::router(broker.clone(), dir.path().to_path_buf());
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http, http_router).await;
        });
        let metrics = crate::metrics::listen("127.0.0.1:0", broker.clone()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Vec<OwnedFd>>> = Arc::default();
        let seen = conns.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |r| {
            r.inspect(|s| {
                // tonic ignores its builder's `tcp_nodelay(true)` for connections it did not
                // accept itself (`serve_with_incoming*`), so it is set here: without it every
                // small HTTP/2 frame can wait ~40 ms for a delayed ACK (Nagle).
                let _ = s.set_nodelay(true);
                if let Ok(fd) = s.as_fd().try_clone_to_owned() {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(fd);
                }
            })
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let router = crate::cli::serve::router(broker.clone(), ca.clone(), tls, o.services)?;
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.await;
        }));
        let ca_pem = std::fs::read_to_string(pki_dir.join(crate::pki::CA_CERT))?;
        Ok(TestServer {
            url: format!("https://{addr}"),
            addr,
            http_addr,
            http_task,
            metrics_addr: metrics.addr,
            _metrics: metrics,
            ca_pem,
            ca,
            broker,
            store,
            database,
            pki_dir,
            stop: Some(stop),
            task: Some(task),
            conns,
            dir,
        })
    }

    /// The directory holding the CA and the server certificate (for a second replica's
    /// [`Options::pki_dir`]).
    pub fn pki_dir(&self) -> &Path {
        &self.pki_dir
    }

    /// `http://127.0.0.1:PORT` of the HTTP listener.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The server's temporary directory (its SQLite file, unless another database is used).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Enrols host `name` (no labels) in this server's store and CA; see [`enroll`].
    pub async fn enroll(&self, name: &str) -> anyhow::Result<HostIdentity> {
        enroll(&self.store, &self.ca, name, &BTreeMap::new()).await
    }

    /// Enrols `name` and links it (Hello sent, Settings received).
    pub async fn host(&self, name: &str) -> anyhow::Result<FakeHost> {
        let id = self.enroll(name).await?;
        Ok(FakeHost::connect(&self.url, &self.ca_pem, &id).await?)
    }

    /// An API token for `principal`, valid for an hour.
    pub async fn issue_token(&self, principal: &str) -> anyhow::Result<String> {
        Ok(self.issue_token_at(principal, 3_600_000, now_ms()).await?.0)
    }

    /// An API token for `principal` issued at `now` (Unix ms) for `ttl_ms` (an expired one:
    /// a `now` in the past); the secret and its row (for revoking it by id).
    pub async fn issue_token_at(
        &self,
        principal: &str,
        ttl_ms: u64,
        now: u64,
    ) -> anyhow::Result<(String, TokenRow)> {
        crate::auth::issue(&self.store, principal, ttl_ms, now)
            .await
            .map_err(|e| anyhow::anyhow!("issuing a token: {e}"))
    }

    /// An approvals client presenting `token`.
    pub async fn approver(&self, token: &str) -> anyhow::Result<ApproverClient> {
        Ok(approvals_client(&self.url, &self.ca_pem, None, Some(token)).await?)
    }

    /// Stops the server and waits (up to 5 s) for its task to end.
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(t) = self.task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for fd in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            // SAFETY: shutdown(2) of a socket descriptor we own (a dup of the accepted one);
            // it ends the connection for every descriptor of the socket.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.http_task.abort();
        self.shutdown();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A host's enrolled identity: its name, its certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct HostIdentity {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the certificate (what the store keeps).
    pub cert_sha256: String,
}

/// Enrols host `name` the way `airlock-server hosts enroll` + `airlock enroll` do, without
/// the network: stores a one-time token, signs a CSR made for a fresh P-256 key (as airlockd
/// makes it, with rcgen) and redeems the token with the certificate's fingerprint.
pub async fn enroll(
    store: &Store,
    ca: &Ca,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<HostIdentity> {
    let now = now_ms();
    let (_token, hash) = crate::pki::new_enrollment_token(ca)?;
    store
        .add_enrollment(name, labels, &hash, now + 3_600_000, now)
        .await?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::new(vec![name.to_string()])?.serialize_request(&key)?;
    let issued = ca.sign_host(csr.der(), name, now)?;
    store
        .redeem_enrollment(&hash, &issued.sha256_hex, now)
        .await?;
    Ok(HostIdentity {
        name: name.to_string(),
        cert_pem: pem("CERTIFICATE", &issued.cert_der),
        key_pem: key.serialize_pem(),
        cert_sha256: issued.sha256_hex,
    })
}

/// PEM armour of `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A TLS channel to `url` trusting `ca_pem` (server name `localhost`), presenting `identity`'s
/// certificate when given.
pub async fn channel(
    url: &str,
    ca_pem: &str,
    identity: Option<&HostIdentity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &id.cert_pem,
            &id.key_pem,
        ));
    }
    Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
}

/// Adds `authorization: Bearer TOKEN` to every call (when it has a token).
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// For `token` (`None`: no header).
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// An approvals client as [`approvals_client`] makes it.
pub type ApproverClient = pb::approvals_client::ApprovalsClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

/// An approvals client for `url`: `token` as the bearer token, and `identity`'s certificate
/// as client certificate when given (the server must refuse that: hosts never decide).
pub async fn approvals_client(
    url: &str,
    ca_pem: &str,
    identity: Option<&HostIdentity>,
    token: Option<&str>,
) -> Result<ApproverClient, tonic::transport::Error> {
    let ch = channel(url, ca_pem, identity).await?;
    Ok(pb::approvals_client::ApprovalsClient::with_interceptor(
        ch,
        Bearer::new(token),
    ))
}

/// Why [`FakeHost::recv`] returned no message.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing arrived in time.
    Timeout,
    /// The server ended the stream cleanly (status OK).
    Ended,
    /// The server ended the stream with this status (or the connection broke).
    Status(Status),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Timeout => write!(f, "nothing from the server in time"),
            RecvError::Ended => write!(f, "the server ended the stream (OK)"),
            RecvError::Status(s) => write!(
                f,
                "the server ended the stream: {:?} {}",
                s.code(),
                s.message()
            ),
        }
    }
}

impl std::error::Error for RecvError {}

/// A host holding its HostLink stream.
pub struct FakeHost {
    /// The enrolled name (from the certificate).
    pub name: String,
    /// The last `Settings` the server sent.
    pub settings: Option<pb::Settings>,
    tx: mpsc::UnboundedSender<pb::HostMessage>,
    rx: Streaming<pb::ServerMessage>,
}

impl FakeHost {
    /// Opens the stream (client certificate of `id`) without sending anything: the first
    /// message is the caller's. Err: the server refused the stream (or could not be reached:
    /// `UNAVAILABLE`).
    pub async fn connect_raw(
        url: &str,
        ca_pem: &str,
        id: &HostIdentity,
    ) -> Result<FakeHost, Status> {
        let ch = channel(url, ca_pem, Some(id))
            .await
            .map_err(|e| Status::unavailable(format!("connecting to {url}: {e:?}")))?;
        let mut client = pb::host_link_client::HostLinkClient::new(ch);
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = client
            .link(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(FakeHost {
            name: id.name.clone(),
            settings: None,
            tx,
            rx,
        })
    }

    /// Opens the stream, sends `Hello` (no pending requests) and waits for the server's
    /// `Settings` (the link is up and attached on the server when this returns).
    pub async fn connect(url: &str, ca_pem: &str, id: &HostIdentity) -> Result<FakeHost, Status> {
        FakeHost::connect_with_pending(url, ca_pem, id, Vec::new()).await
    }

    /// [`FakeHost::connect`] with `pending` ids in the `Hello` (a host reconnecting).
    pub async fn connect_with_pending(
        url: &str,
        ca_pem: &str,
        id: &HostIdentity,
        pending: Vec<String>,
    ) -> Result<FakeHost, Status> {
        let hello = pb::Hello {
            version: FAKE_VERSION.into(),
            pending,
            audit_key: String::new(),
        };
        FakeHost::connect_with_hello(url, ca_pem, id, hello).await
    }

    /// Opens the stream, sends `hello` and waits for the server's `Settings`.
    pub async fn connect_with_hello(
        url: &str,
        ca_pem: &str,
        id: &HostIdentity,
        hello: pb::Hello,
    ) -> Result<FakeHost, Status> {
        let mut h = FakeHost::connect_raw(url, ca_pem, id).await?;
        h.send(pb::HostMessage {
            body: Some(pb::host_message::Body::Hello(hello)),
        })
        .map_err(|e| Status::unavailable(e.to_string()))?;
        match h.recv_raw(Duration::from_secs(5)).await {
            Ok(pb::ServerMessage {
                body: Some(pb::server_message::Body::Settings(s)),
            }) => {
                h.settings = Some(s);
                Ok(h)
            }
            Ok(other) => Err(Status::internal(format!(
                "expected Settings first, got {other:?}"
            ))),
            Err(RecvError::Status(s)) => Err(s),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// Sends any message.
    pub fn send(&self, m: pb::HostMessage) -> anyhow::Result<()> {
        self.tx
            .send(m)
            .map_err(|_| anyhow::anyhow!("the link of {} is closed", self.name))
    }

    /// Sends `Hello` with `pending` ids.
    pub fn hello(&self, pending: Vec<String>) -> anyhow::Result<()> {
        self.send(pb::HostMessage {
            body: Some(pb::host_message::Body::Hello(pb::Hello {
                version: FAKE_VERSION.into(),
                pending,
                audit_key: String::new(),
            })),
        })
    }

    /// Sends `Opened` for `r`.
    pub fn opened(&self, r: pb::HoldRequest) -> anyhow::Result<()> {
        self.send(pb::HostMessage {
            body: Some(pb::host_message::Body::Opened(pb::Opened {
                request: Some(r),
            })),
        })
    }

    /// Sends `Outcome` for `r`.
    pub fn outcome(&self, r: pb::HoldRequest) -> anyhow::Result<()> {
        self.send(pb::HostMessage {
            body: Some(pb::host_message::Body::Outcome(pb::Outcome {
                request: Some(r),
            })),
        })
    }

    /// The next message, whatever it is.
    pub async fn recv_raw(&mut self, timeout: Duration) -> Result<pb::ServerMessage, RecvError> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Err(_) => Err(RecvError::Timeout),
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(RecvError::Ended),
            Ok(Err(s)) => Err(RecvError::Status(s)),
        }
    }

    /// The next message that is not `Settings` (those are kept in [`FakeHost::settings`]),
    /// waiting at most `timeout` in all.
    pub async fn recv(&mut self, timeout: Duration) -> Result<pb::ServerMessage, RecvError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_raw(left).await? {
                pb::ServerMessage {
                    body: Some(pb::server_message::Body::Settings(s)),
                } => self.settings = Some(s),
                m => return Ok(m),
            }
        }
    }

    /// The next message, which must be a `Decision`.
    pub async fn decision(&mut self, timeout: Duration) -> anyhow::Result<pb::Decision> {
        match self.recv(timeout).await? {
            pb::ServerMessage {
                body: Some(pb::server_message::Body::Decision(d)),
            } => Ok(d),
            other => anyhow::bail!("{}: expected a Decision, got {other:?}", self.name),
        }
    }

    /// The next message, which must be a `Rejected`.
    pub async fn rejected(&mut self, timeout: Duration) -> anyhow::Result<pb::Rejected> {
        match self.recv(timeout).await? {
            pb::ServerMessage {
                body: Some(pb::server_message::Body::Rejected(r)),
            } => Ok(r),
            other => anyhow::bail!("{}: expected a Rejected, got {other:?}", self.name),
        }
    }

    /// Waits for the stream to end, skipping messages: `Ok(None)` for a clean end,
    /// `Ok(Some(status))` for an error, `Err` if it is still open after `timeout`.
    pub async fn ended(&mut self, timeout: Duration) -> anyhow::Result<Option<Status>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_raw(left).await {
                Ok(_) => continue,
                Err(RecvError::Ended) => return Ok(None),
                Err(RecvError::Status(s)) => return Ok(Some(s)),
                Err(RecvError::Timeout) => {
                    anyhow::bail!("{}: the stream is still open after {timeout:?}", self.name)
                }
            }
        }
    }

    /// The first message other than `Settings` within `d`, if any (`Ok(None)`: silence).
    pub async fn quiet(&mut self, d: Duration) -> Result<Option<pb::ServerMessage>, RecvError> {
        match self.recv(d).await {
            Ok(m) => Ok(Some(m)),
            Err(RecvError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A new request id (as airlockd makes them).
pub fn new_id() -> String {
    airlock_approval::new_request_id(now_ms())
}

/// A realistic context: `kubectl apply` exec'd by agent `claude` on `host`, under rule
/// `kubectl-exec` of policy `prod`, launched by `dave` (not a principal).
pub fn context(host: &str) -> RequestContext {
    RequestContext {
        host: host.to_string(),
        agent: Some("claude".into()),
        agent_cgroup: Some("/agents.slice/claude-1234.scope".into()),
        cgroup_id: 4242,
        unit: Some("claude-1234.scope".into()),
        launched_by: Some(Launcher {
            uid: 1001,
            user: Some("dave".into()),
            sudo_user: None,
            reason: Some("deploy the fix".into()),
        }),
        pid: 31337,
        tgid: 31337,
        uid: 1001,
        euid: 1001,
        comm: "kubectl".into(),
        exe: Some("/usr/bin/kubectl".into()),
        ancestry: vec![
            Ancestor {
                pid: 31337,
                comm: "kubectl".into(),
                exe: Some("/usr/bin/kubectl".into()),
            },
            Ancestor {
                pid: 31300,
                comm: "bash".into(),
                exe: Some("/usr/bin/bash".into()),
            },
            Ancestor {
                pid: 31000,
                comm: "claude".into(),
                exe: Some("/usr/bin/node".into()),
            },
        ],
        argv: vec![
            "kubectl".into(),
            "apply".into(),
            "-f".into(),
            "deploy/prod.yaml".into(),
        ],
        argv_truncated: false,
        cwd: Some("/home/dave/src/app".into()),
        op: Op::Exec,
        target_path: Some("/usr/bin/kubectl".into()),
        target_dev: 0x0803,
        target_ino: 1_234_567,
        rule: Some("kubectl-exec".into()),
        policy: Some("prod".into()),
        reason: Some("roll out the hotfix".into()),
        backend: "fanotify".into(),
    }
}

/// A pending request `id` with [`context`] of `host`, as a host sends it in `Opened` (no
/// holders; `key.tgid` is the context's process).
pub fn request(host: &str, id: &str) -> pb::HoldRequest {
    request_with(id, &context(host))
}

/// A pending request `id` with context `c`, opened now, deadline in 5 minutes.
pub fn request_with(id: &str, c: &RequestContext) -> pb::HoldRequest {
    let now = now_ms();
    pb::HoldRequest {
        id: id.to_string(),
        state: pb::RequestState::Pending as i32,
        key: Some(pb::HoldKey {
            tgid: c.tgid,
            op: ac::op_to_proto(c.op) as i32,
            dev: c.target_dev,
            ino: c.target_ino,
            argv_hash: 0x5eed,
        }),
        holders: Vec::new(),
        attempts: 1,
        created_unix_ms: now,
        deadline_unix_ms: now + 300_000,
        on_timeout: ac::on_timeout_to_proto(OnTimeout::Deny) as i32,
        context: Some(ac::context_to_proto(c)),
        decision: None,
        votes: Vec::new(),
        route: None,
        threshold: 0,
    }
}

/// `r` as the host reports it closed after applying `d` (approved or denied, with the
/// decision record), for `Outcome`.
pub fn closed_by(r: &pb::HoldRequest, d: &pb::Decision) -> pb::HoldRequest {
    let allow = matches!(
        d.decide.as_ref().and_then(|x| x.decision.as_ref()),
        Some(pb::decide_request::Decision::Approve(_))
    );
    let (for_ms, always, reason) = match d.decide.as_ref().and_then(|x| x.decision.as_ref()) {
        Some(pb::decide_request::Decision::Approve(a)) => (a.for_ms, false, None),
        Some(pb::decide_request::Decision::Deny(n)) => (
            None,
            n.always,
            Some(n.reason.clone()).filter(|r| !r.is_empty()),
        ),
        None => (None, false, None),
    };
    pb::HoldRequest {
        state: if allow {
            pb::RequestState::Approved
        } else {
            pb::RequestState::Denied
        } as i32,
        decision: Some(pb::DecisionRecord {
            release: if allow {
                pb::Release::Allow
            } else {
                pb::Release::Deny
            } as i32,
            for_ms,
            always,
            reason,
            by: d.by.clone(),
            at_unix_ms: now_ms(),
        }),
        ..r.clone()
    }
}

/// An approve decision for `id`.
pub fn approve(id: &str) -> pb::DecideRequest {
    ac::decide_to_proto(id, &airlock_approval::Decision::Approve { for_: None })
}

/// A deny decision for `id` with `reason`.
pub fn deny(id: &str, reason: &str) -> pb::DecideRequest {
    ac::decide_to_proto(
        id,
        &airlock_approval::Decision::Deny {
            always: false,
            reason: Some(reason.to_string()),
        },
    )
}

/// Waits until `id` is in `store` (a host's `Opened` is handled asynchronously).
pub async fn wait_stored(
    store: &Store,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<crate::store::StoredRequest> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(r) = store.request(id).await? {
            return Ok(r);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("request {id} was not stored within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
