//! The metrics listener: just enough HTTP/1.1 for a scraper. `GET /metrics` gets the
//! exposition; another method gets 405, another path 404, a malformed or oversized request
//! 400. One request per connection (then it is closed), a few connections at a time, each
//! bounded in time and size: the listener must never cost the daemon more than a scrape.
//!
//! A whole HTTP server (axum, hyper's server side) would be more code in airlockd than this,
//! which is all a scraper needs.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Metrics;

/// Largest request head read (request line and headers).
const MAX_HEAD: usize = 8192;
/// Longest a connection may take from accept to the answer written.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more are closed at accept.
const MAX_CONNS: usize = 8;

/// `Content-Type` of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors starting the listener.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound (in use, not local, not permitted).
    #[error("metrics listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running listener; dropping it stops accepting (answers in progress finish).
#[derive(Debug)]
pub struct MetricsListener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsListener {
    /// The bound address (the port chosen when the given one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (and only it) and serves `metrics` there from a task of the current runtime.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<MetricsListener, MetricsError> {
    let bind = |source| MetricsError::Bind { addr, source };
    let l = TcpListener::bind(addr).await.map_err(bind)?;
    let addr = l.local_addr().map_err(bind)?;
    tracing::info!(%addr, "metrics listening (GET /metrics)");
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    let task = tokio::spawn(async move {
        loop {
            let s = match l.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin on it.
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CONN_TIMEOUT, answer(s, &m)).await;
                drop(slot);
            });
        }
    });
    Ok(MetricsListener { addr, task })
}

async fn answer(mut s: TcpStream, m: &Metrics) -> std::io::Result<()> {
    let head = read_head(&mut s).await?;
    let out = respond(head.as_deref(), m);
    s.write_all(&out).await?;
    s.shutdown().await
}

/// The request head up to its blank line; `None` when it ends early or is too long.
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(String::from_utf8(buf).ok());
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The whole response to a request head (`None`: unreadable).
fn respond(head: Option<&str>, m: &Metrics) -> Vec<u8> {
    let Some(head) = head else {
        return response("400 Bad Request", "text/plain", &[], "bad request\n");
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (method, target) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m, t),
        _ => return response("400 Bad Request", "text/plain", &[], "bad request\n"),
    };
    if method != "GET" {
        return response(
            "405 Method Not Allowed",
            "text/plain",
            &[("Allow", "GET")],
            "only GET\n",
        );
    }
    if target.split('?').next() != Some("/metrics") {
        return response(
            "404 Not Found",
            "text/plain",
            &[],
            "not found; try /metrics\n",
        );
    }
    // Prometheus asks for OpenMetrics in its Accept header; anything else (curl) gets the
    // classic text format.
    let openmetrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    let ct = if openmetrics {
        OPENMETRICS
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    response("200 OK", ct, &[], &m.encode(openmetrics))
}

fn response(status: &str, content_type: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}
