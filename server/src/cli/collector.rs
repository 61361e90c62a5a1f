//! `airlock-server collector --dir DIR [--database URL] [--listen ADDR]`: the audit collector
//! alone, for a security team that keeps the audit store apart from the approval server's
//! replicas. It shares the approval server's CA and database (hosts enrol there and present
//! the same certificate here), verifies and stores each host's audit batches, answers
//! `airlock audit query` and prunes by `audit.retention`. It opens no request, counts no
//! vote, sends no decision or setting, signs no certificate and runs no channel. airlockd
//! ships to it with `--collector https://ADDR`.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::serve::{Services, serve};
use crate::broker::Broker;

/// Arguments of `airlock-server collector`.
#[derive(clap::Args, Debug)]
pub struct CollectorArgs {
    #[command(flatten)]
    pub dir: super::DirArgs,
    /// Listen address.
    #[arg(
        long,
        env = "AIRLOCK_COLLECTOR_LISTEN",
        default_value = "127.0.0.1:7444"
    )]
    pub listen: String,
    /// Serve Prometheus metrics on this address (IP:PORT, `GET /metrics`, plain HTTP);
    /// default: none (server.yaml's `metrics_listen` is the approval server's).
    #[arg(long, env = "AIRLOCK_COLLECTOR_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Runs the collector until SIGTERM or SIGINT (SIGHUP reloads server.yaml, as `serve`).
pub fn run(a: CollectorArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        let (cfg, store) = a.dir.open().await?;
        let addr: SocketAddr = a
            .listen
            .parse()
            .with_context(|| format!("--listen {:?}: expected IP:PORT", a.listen))?;
        let tls =
            crate::pki::server_tls(&a.dir.dir).context("loading the server's TLS identity")?;
        let ca = Arc::new(crate::pki::Ca::load(&a.dir.dir).context("loading the CA")?);
        let broker = Broker::new(store, cfg);
        let _prune = crate::collector::spawn_pruner(&broker);
        let _metrics = match a.metrics_listen.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => Some(crate::metrics::listen(m, broker.clone()).await?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        serve(
            broker,
            ca,
            tls,
            listener,
            a.dir.dir.clone(),
            Services::Collector,
        )
        .await?;
        tracing::info!(%addr, "collector stopped");
        Ok(ExitCode::SUCCESS)
    })
}
