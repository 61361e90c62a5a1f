//! airlock-server's Prometheus metrics: one registry per [`crate::broker::Broker`], its
//! metric families, and the hooks the broker, the hub and the channels call. Served on
//! `GET /metrics` of a listener of its own (`metrics_listen:` in server.yaml or
//! `--metrics-listen`; never the public HTTP listener), see [`listen`].
//!
//! | metric | type | labels | counted where |
//! |---|---|---|---|
//! | `airlock_server_hosts_connected` | gauge | | host streams attached to this process's hub |
//! | `airlock_server_requests_opened_total` | counter | `route` (`-`: no route matched) | a request new to the store opened through this process |
//! | `airlock_server_channel_requests_total` | counter | `channel` | per channel its route lists, for each request opened |
//! | `airlock_server_requests_closed_total` | counter | `state` | a host reported the outcome (first report only) |
//! | `airlock_server_votes_total` | counter | `channel`, `result`: accepted, refused | every vote through the broker |
//! | `airlock_server_decisions_total` | counter | `route`, `release`: allow, deny | a vote completed the decision |
//! | `airlock_server_channel_delivery_errors_total` | counter | `channel`: webhook, teams, slack | each failed POST or API call (retried or not) |
//! | `airlock_server_channel_delivery_failures_total` | counter | `channel` | a message given up (retries spent, or an answer a retry would repeat) |
//! | `airlock_server_audit_batches_total` | counter | `result`: acked, refused | each `AuditAck` sent to a host |
//!
//! Label values are bounded: route names come from the config, channels, states and
//! results from fixed sets. Never a request id, a host or a principal.
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_approval::{Release, RequestState};
use airlock_proto::v1 as pb;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::config::{Channel, Route};

/// Labels with values from a fixed set.
type Fixed<const N: usize> = [(&'static str, &'static str); N];
/// A route's name and a fixed label (`release`), or the route alone.
type RouteLabels = Vec<(&'static str, String)>;

/// `Content-Type` of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of a request no route matched.
pub const NO_ROUTE: &str = "-";

/// The registry and its families (one set per broker: replicas in one test process do not
/// mix their counts).
pub struct Metrics {
    registry: Registry,
    /// Set by the hub as streams attach and detach (it holds a clone).
    pub hosts_connected: Gauge,
    requests_opened: Family<RouteLabels, Counter>,
    channel_requests: Family<Fixed<1>, Counter>,
    requests_closed: Family<Fixed<1>, Counter>,
    votes: Family<Fixed<2>, Counter>,
    decisions: Family<RouteLabels, Counter>,
    delivery_errors: Family<Fixed<1>, Counter>,
    delivery_failures: Family<Fixed<1>, Counter>,
    audit_batches: Family<Fixed<1>, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A channel's config name, or `other` for a name that is none (never a caller's text).
fn channel_name(via: &str) -> &'static str {
    Channel::ALL
        .iter()
        .find(|c| c.as_str() == via)
        .map_or("other", |c| c.as_str())
}

impl Metrics {
    /// Every family registered, all at zero.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            hosts_connected: Gauge::default(),
            requests_opened: Family::default(),
            channel_requests: Family::default(),
            requests_closed: Family::default(),
            votes: Family::default(),
            decisions: Family::default(),
            delivery_errors: Family::default(),
            delivery_failures: Family::default(),
            audit_batches: Family::default(),
        };
        let mut r = Registry::with_prefix("airlock_server");
        r.register(
            "hosts_connected",
            "Host streams connected to this process",
            m.hosts_connected.clone(),
        );
        r.register(
            "requests_opened",
            "Requests opened, by route",
            m.requests_opened.clone(),
        );
        r.register(
            "channel_requests",
            "Requests opened on a route that lists the channel",
            m.channel_requests.clone(),
        );
        r.register(
            "requests_closed",
            "Requests whose outcome a host reported, by final state",
            m.requests_closed.clone(),
        );
        r.register(
            "votes",
            "Votes cast, by channel and whether they were accepted",
            m.votes.clone(),
        );
        r.register(
            "decisions",
            "Decisions the votes completed, by route and release",
            m.decisions.clone(),
        );
        r.register(
            "channel_delivery_errors",
            "Failed deliveries to a channel (each attempt)",
            m.delivery_errors.clone(),
        );
        r.register(
            "channel_delivery_failures",
            "Messages a channel gave up delivering",
            m.delivery_failures.clone(),
        );
        r.register(
            "audit_batches",
            "Audit batches answered, by result",
            m.audit_batches.clone(),
        );
        // The fixed-label series exist from the start (at 0), so that a rate over the first
        // scrapes sees the first event.
        for c in Channel::ALL {
            let _ = m
                .votes
                .get_or_create(&[("channel", c.as_str()), ("result", "accepted")]);
            let _ = m
                .votes
                .get_or_create(&[("channel", c.as_str()), ("result", "refused")]);
        }
        for c in [Channel::Webhook, Channel::Teams, Channel::Slack] {
            let _ = m.delivery_errors.get_or_create(&[("channel", c.as_str())]);
            let _ = m
                .delivery_failures
                .get_or_create(&[("channel", c.as_str())]);
        }
        for result in ["acked", "refused"] {
            let _ = m.audit_batches.get_or_create(&[("result", result)]);
        }
        Metrics { registry: r, ..m }
    }

    /// The exposition: OpenMetrics text when `openmetrics`, else the Prometheus text format.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let r = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// A request new to the store opened through this process, on `route` (`None`: none
    /// matched).
    pub fn opened(&self, route: Option<&Route>) {
        let name = route.map_or(NO_ROUTE, |r| r.name.as_str());
        self.requests_opened
            .get_or_create(&vec![("route", name.to_string())])
            .inc();
        for c in route.map(|r| r.channels.as_slice()).unwrap_or_default() {
            self.channel_requests
                .get_or_create(&[("channel", c.as_str())])
                .inc();
        }
    }

    /// A host reported a request's outcome (the first time).
    pub fn closed(&self, state: RequestState) {
        self.requests_closed
            .get_or_create(&[("state", state.as_str())])
            .inc();
    }

    /// A vote through `via` (a channel's name) was accepted or refused.
    pub fn vote(&self, via: &str, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.votes
            .get_or_create(&[("channel", channel_name(via)), ("result", result)])
            .inc();
    }

    /// A vote completed the decision of a request on `route`.
    pub fn decided(&self, route: &str, release: Release) {
        let release = match release {
            Release::Allow => "allow",
            Release::Deny => "deny",
        };
        self.decisions
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("release", release.into()),
            ])
            .inc();
    }

    /// One delivery attempt to `channel` failed.
    pub fn delivery_error(&self, channel: &str) {
        self.delivery_errors
            .get_or_create(&[("channel", channel_name(channel))])
            .inc();
    }

    /// `channel` gave up delivering a message.
    pub fn delivery_failed(&self, channel: &str) {
        self.delivery_failures
            .get_or_create(&[("channel", channel_name(channel))])
            .inc();
    }

    /// A message to a host: an `AuditAck` counts as an audit batch acked or refused.
    pub fn sent(&self, m: &pb::ServerMessage) {
        if let Some(pb::server_message::Body::AuditAck(a)) = &m.body {
            let result = if a.refused.is_empty() {
                "acked"
            } else {
                "refused"
            };
            self.audit_batches
                .get_or_create(&[("result", result)])
                .inc();
        }
    }
}

/// Errors starting the metrics listener.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Not an `IP:PORT`.
    #[error("metrics listen address {0:?}: expected IP:PORT")]
    Address(String),
    /// The address could not be bound.
    #[error("binding the metrics listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// `GET /metrics` (any other path 404, another method 405).
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(broker)
}

async fn metrics(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    // Prometheus asks for OpenMetrics in its Accept header; curl gets the classic format.
    let openmetrics = headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let ct = if openmetrics {
        OPENMETRICS
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct)],
        b.metrics.encode(openmetrics),
    )
        .into_response()
}

/// A bound metrics listener; dropping it stops serving.
#[derive(Debug)]
pub struct Listener {
    /// The bound address (the port chosen when the given one was 0).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (`IP:PORT`) and serves the broker's metrics there from a task.
pub async fn listen(addr: &str, broker: Arc<Broker>) -> Result<Listener, MetricsError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| MetricsError::Address(addr.to_string()))?;
    let bind = |source| MetricsError::Bind {
        addr: parsed,
        source,
    };
    let l = tokio::net::TcpListener::bind(parsed).await.map_err(bind)?;
    let addr = l.local_addr().map_err(bind)?;
    tracing::info!(%addr, "metrics listener (GET /metrics)");
    let app = router(broker);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok(Listener { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }

    fn route(name: &str, channels: &[Channel]) -> Route {
        let cfg = crate::config::parse(
            &format!(
                "principals:\n  a: {{ groups: [g] }}\nroutes:\n  - name: {name}\n    approvers: [g]\n"
            ),
            "server.yaml",
        )
        .unwrap();
        Route {
            channels: channels.to_vec(),
            ..cfg.routes[0].clone()
        }
    }

    #[test]
    fn hooks_show_up_as_samples() {
        let m = Metrics::new();
        let prod = route("prod", &[Channel::Cli, Channel::Slack]);
        m.opened(Some(&prod));
        m.opened(Some(&prod));
        m.opened(None);
        m.closed(RequestState::Approved);
        m.vote("cli", true);
        m.vote("slack", false);
        m.vote("someone's text", true);
        m.decided("prod", Release::Deny);
        m.delivery_error("webhook");
        m.delivery_error("webhook");
        m.delivery_failed("webhook");
        m.hosts_connected.set(3);
        let ack = |refused: &str| pb::ServerMessage {
            body: Some(pb::server_message::Body::AuditAck(pb::AuditAck {
                up_to_seq: 1,
                refused: refused.into(),
            })),
        };
        m.sent(&ack(""));
        m.sent(&ack(""));
        m.sent(&ack("bad chain"));
        let t = m.encode(false);
        has(&t, "airlock_server_hosts_connected 3");
        has(&t, "airlock_server_requests_opened_total{route=\"prod\"} 2");
        has(&t, "airlock_server_requests_opened_total{route=\"-\"} 1");
        has(
            &t,
            "airlock_server_channel_requests_total{channel=\"slack\"} 2",
        );
        has(
            &t,
            "airlock_server_channel_requests_total{channel=\"cli\"} 2",
        );
        has(
            &t,
            "airlock_server_requests_closed_total{state=\"approved\"} 1",
        );
        has(
            &t,
            "airlock_server_votes_total{channel=\"cli\",result=\"accepted\"} 1",
        );
        has(
            &t,
            "airlock_server_votes_total{channel=\"slack\",result=\"refused\"} 1",
        );
        has(
            &t,
            "airlock_server_votes_total{channel=\"other\",result=\"accepted\"} 1",
        );
        has(
            &t,
            "airlock_server_decisions_total{route=\"prod\",release=\"deny\"} 1",
        );
        has(
            &t,
            "airlock_server_channel_delivery_errors_total{channel=\"webhook\"} 2",
        );
        has(
            &t,
            "airlock_server_channel_delivery_failures_total{channel=\"webhook\"} 1",
        );
        has(&t, "airlock_server_audit_batches_total{result=\"acked\"} 2");
        has(
            &t,
            "airlock_server_audit_batches_total{result=\"refused\"} 1",
        );
        assert!(!t.contains("someone"));
        // Fixed-label series exist before their first event.
        let fresh = Metrics::new().encode(false);
        has(
            &fresh,
            "airlock_server_votes_total{channel=\"teams\",result=\"refused\"} 0",
        );
        has(
            &fresh,
            "airlock_server_channel_delivery_failures_total{channel=\"slack\"} 0",
        );
        has(
            &fresh,
            "airlock_server_audit_batches_total{result=\"refused\"} 0",
        );
        let om = m.encode(true);
        has(&om, "# TYPE airlock_server_hosts_connected gauge");
        assert!(om.ends_with("# EOF\n"));
    }
}
