//! `airlock-server serve --dir DIR [--database URL] [--listen ADDR]`: runs the server until
//! SIGTERM or SIGINT; SIGHUP reloads server.yaml (a config with errors is refused and the one
//! in force stays).
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::broker::Broker;

/// Largest message accepted from a host or a client (a request's context is a few KiB; the
/// bound keeps a broken or hostile peer from making the server buffer megabytes).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Arguments of `airlock-server serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub dir: super::DirArgs,
    /// Listen address [default: from server.yaml].
    #[arg(long, env = "AIRLOCK_LISTEN")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics on this address (IP:PORT, `GET /metrics`, plain HTTP)
    /// [default: `metrics_listen` from server.yaml, else none].
    #[arg(long, env = "AIRLOCK_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Runs the server.
pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        let (cfg, store) = a.dir.open().await?;
        crate::webhook::check(&cfg, &a.dir.dir)?;
        crate::slack::check(&cfg, &a.dir.dir)?;
        crate::teams::check(&cfg, &a.dir.dir)?;
        for n in &cfg.notes {
            tracing::warn!(note = %n, "config");
        }
        let listen = a
            .listen
            .clone()
            .or_else(|| cfg.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:7443".into());
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen address {listen:?}: expected IP:PORT"))?;
        let tls =
            crate::pki::server_tls(&a.dir.dir).context("loading the server's TLS identity")?;
        let ca = Arc::new(crate::pki::Ca::load(&a.dir.dir).context("loading the CA")?);
        let broker = Broker::new(store.clone(), cfg);
        let _webhook = crate::webhook::spawn(&broker, a.dir.dir.clone());
        let _slack = crate::slack::spawn(&broker, a.dir.dir.clone());
        let _teams = crate::teams::spawn(&broker, a.dir.dir.clone());
        let _remind = crate::remind::spawn(&broker)?;
        let _prune = crate::collector::spawn_pruner(&broker);
        let _http = match broker.config().http_listen.clone() {
            Some(h) => {
                let addr: SocketAddr = h
                    .parse()
                    .with_context(|| format!("http_listen {h:?}: expected IP:PORT"))?;
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the HTTP listener {addr}"))?;
                tracing::info!(%addr, "HTTP listener (channel callbacks)");
                let router = crate::http::router(broker.clone(), a.dir.dir.clone());
                Some(tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, router).await {
                        tracing::error!(error = %e, "HTTP listener stopped");
                    }
                }))
            }
            None => None,
        };
        let metrics_listen = a
            .metrics_listen
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| broker.config().metrics_listen.clone());
        let _metrics = match metrics_listen {
            Some(m) => Some(crate::metrics::listen(&m, broker.clone()).await?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr()?;
        serve(broker, ca, tls, listener, a.dir.dir.clone(), Services::All).await?;
        tracing::info!(%bound, "stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// What a server process serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Services {
    /// Everything: the host link, approvals, enrolment (`airlock-server serve`).
    All,
    /// The audit collector alone (`airlock-server collector`): the host link carries audit
    /// batches only, the Approvals service answers audit queries only, and there is no
    /// enrolment (hosts enrol with the approval server, whose CA and store this shares).
    Collector,
}

/// Serves on `listener` until SIGTERM/SIGINT. Public for tests and benchmarks that start the
/// server in-process.
pub async fn serve(
    broker: Arc<Broker>,
    ca: Arc<crate::pki::Ca>,
    tls: tonic::transport::ServerTlsConfig,
    listener: tokio::net::TcpListener,
    dir: std::path::PathBuf,
    services: Services,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let reload_broker = broker.clone();
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let path = super::config_path(&dir);
            let loaded = crate::config::load(&path)
                .map_err(anyhow::Error::from)
                .and_then(|c| {
                    crate::webhook::check(&c, &dir)?;
                    crate::slack::check(&c, &dir)?;
                    crate::teams::check(&c, &dir)?;
                    Ok(c)
                });
            match loaded {
                Ok(c) => {
                    reload_broker.set_config(c);
                    tracing::info!(path = %path.display(), "config reloaded");
                    reload_broker
                        .record(
                            "admin",
                            "signal",
                            "config_reload",
                            None,
                            tonic::Code::Ok,
                            "reloaded",
                        )
                        .await;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "config reload refused; the config in force stays");
                    reload_broker
                        .record(
                            "admin",
                            "signal",
                            "config_reload",
                            None,
                            tonic::Code::InvalidArgument,
                            &e.to_string(),
                        )
                        .await;
                }
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping");
    };
    tracing::info!(%addr, ?services, "airlock-server listening");
    // tonic's `tcp_nodelay` applies only to listeners it binds itself: set it on each accepted
    // connection, or Nagle delays small replies (measured: ~49 ms per round trip instead of ~4).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |r| {
            r.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    router(broker, ca, tls, services)?
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving")?;
    reloader.abort();
    Ok(())
}

/// The gRPC services behind TLS.
pub fn router(
    broker: Arc<Broker>,
    ca: Arc<crate::pki::Ca>,
    tls: tonic::transport::ServerTlsConfig,
    services: Services,
) -> anyhow::Result<tonic::transport::server::Router> {
    let collector_only = services == Services::Collector;
    // The link carries audit batches too, bounded by the collector.
    let link = airlock_proto::HostLinkServer::new(crate::link::LinkService {
        broker: broker.clone(),
        collector_only,
    })
    .max_decoding_message_size(crate::collector::MAX_LINK_MESSAGE);
    let approvals = airlock_proto::ApprovalsServer::new(crate::approvals::ApprovalsService {
        broker: broker.clone(),
        collector_only,
    })
    .max_decoding_message_size(MAX_MESSAGE);
    let router = tonic::transport::Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .add_service(link)
        .add_service(approvals);
    // Enrolment (which signs host certificates) stays with the approval server alone.
    let enroll = (!collector_only).then(|| {
        airlock_proto::EnrollmentServer::new(crate::enroll::EnrollService {
            store: broker.store.clone(),
            ca,
        })
        .max_decoding_message_size(MAX_MESSAGE)
    });
    Ok(router.add_optional_service(enroll))
}
