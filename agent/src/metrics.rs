//! airlockd's Prometheus metrics: one registry, its metric families, and the hooks the daemon
//! calls where things happen. Served on `GET /metrics` of an opt-in listener
//! (`airlockd --metrics-listen ADDR`, [`serve`]); nothing is gathered for it beyond what the
//! daemon already knows: most values are copied from [`Status`] once a second.
//!
//! | metric | type | labels | from |
//! |---|---|---|---|
//! | `airlock_requests_opened_total` | counter | | the hold table's journal (`Update::Opened`) |
//! | `airlock_requests_closed_total` | counter | `state`: approved, denied, timed_out, abandoned | the journal (`Update::Closed`); timeouts are `state="timed_out"` |
//! | `airlock_request_decision_seconds` | histogram | `state`: approved, denied, timed_out | request opened → decision applied (`created_unix_ms` → `decision.at_unix_ms`) |
//! | `airlock_request_release_seconds` | histogram | | decision → the backend's release of the holders returned ([`MeteredGate`]) |
//! | `airlock_requests_pending` | gauge | | held requests waiting for a decision |
//! | `airlock_kernel_events_total` | counter | | events the backend reported |
//! | `airlock_kernel_events_lost_total` | counter | | events the kernel could not hand over (ring full) |
//! | `airlock_audit_spool_records` | gauge | | records in the spool not acknowledged by a collector |
//! | `airlock_audit_spool_bytes` | gauge | | bytes of the spool's segments |
//! | `airlock_link_up` | gauge | `link`: server, collector | 1 while the stream is up |
//! | `airlock_link_reconnects_total` | counter | `link` | the stream came up again after its first time |
//! | `airlock_backend` | gauge | `backend`: lsm, fanotify | 1 for the backend in use |
//! | `airlock_policy_generation` | gauge | | policies applied since start (1 = the one loaded at start) |
//!
//! No label carries a request id, a host, an agent or a principal: every label value comes
//! from a fixed set, so the number of series stays bounded whatever the agents do.
//!
//! "Decision → resumed" is measured up to the moment the backend's release returned: on the
//! fanotify fallback that answer is what lets the held syscall go on; on BPF LSM the release
//! writes the once-grant and sends SIGCONT, and the restarted syscall runs when the
//! scheduler next runs the thread (not observed here). The decision time is the table's
//! wall clock in whole milliseconds, so a value may be up to 1 ms too long.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::daemon::Status;
use crate::daemon::records::LinkChange;
use crate::hold::{Gate, GateError, HoldKey, Holder, Release, Standing, Update};

mod serve;

pub use serve::{MetricsError, MetricsListener, serve};

/// One label whose value comes from a fixed set.
type Label = [(&'static str, &'static str); 1];

/// A histogram family's constructor (the buckets are fixed per family).
type Histograms = Family<Label, Histogram, fn() -> Histogram>;

/// Open → decision: people take seconds to hours; a rule's timeout is at most a day.
const DECISION_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Decision → release: milliseconds (the decision time has millisecond resolution).
const RELEASE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Releases remembered for the next `Closed` update: bounded so that releases whose close
/// never comes through the journal (tests, a table without one) cannot grow it.
const MAX_RELEASES: usize = 4096;

/// The registry and its families. Cheap to share (`Arc`); every hook takes `&self`.
pub struct Metrics {
    registry: Registry,
    requests_opened: Counter,
    requests_closed: Family<Label, Counter>,
    decision_seconds: Histograms,
    release_seconds: Histogram,
    requests_pending: Gauge,
    kernel_events: Counter,
    kernel_lost: Counter,
    spool_records: Gauge,
    spool_bytes: Gauge,
    link_up: Family<Label, Gauge>,
    link_reconnects: Family<Label, Counter>,
    backend: Family<Label, Gauge>,
    policy_generation: Gauge,
    /// URLs of the configured server and collector links, to label link changes.
    links: Vec<(&'static str, String)>,
    /// Per link in `links`: it came up at least once (later ups are reconnects).
    seen_up: [AtomicBool; 2],
    /// When the gate last released each key (Unix µs), for the decision → release histogram.
    released: Mutex<HashMap<HoldKey, u64>>,
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

fn decision_histogram() -> Histogram {
    Histogram::new(DECISION_BUCKETS)
}

fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Metrics {
    /// Every family registered, without links (see [`Metrics::with_links`]).
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("airlock");
        let m = Metrics {
            requests_opened: Counter::default(),
            requests_closed: Family::default(),
            decision_seconds: Family::new_with_constructor(decision_histogram),
            release_seconds: Histogram::new(RELEASE_BUCKETS),
            requests_pending: Gauge::default(),
            kernel_events: Counter::default(),
            kernel_lost: Counter::default(),
            spool_records: Gauge::default(),
            spool_bytes: Gauge::default(),
            link_up: Family::default(),
            link_reconnects: Family::default(),
            backend: Family::default(),
            policy_generation: Gauge::default(),
            links: Vec::new(),
            seen_up: [AtomicBool::new(false), AtomicBool::new(false)],
            released: Mutex::default(),
            registry: Registry::default(),
        };
        r.register(
            "requests_opened",
            "Held actions that opened a request",
            m.requests_opened.clone(),
        );
        r.register(
            "requests_closed",
            "Requests closed, by final state (timed_out: no decision in time)",
            m.requests_closed.clone(),
        );
        r.register_with_unit(
            "request_decision",
            "Time from a request's opening to its decision, by final state",
            Unit::Seconds,
            m.decision_seconds.clone(),
        );
        r.register_with_unit(
            "request_release",
            "Time from a decision to the backend's release of the held syscalls",
            Unit::Seconds,
            m.release_seconds.clone(),
        );
        r.register(
            "requests_pending",
            "Requests waiting for a decision (holds in flight)",
            m.requests_pending.clone(),
        );
        r.register(
            "kernel_events",
            "Events the backend reported",
            m.kernel_events.clone(),
        );
        r.register(
            "kernel_events_lost",
            "Events the kernel could not hand to airlockd",
            m.kernel_lost.clone(),
        );
        r.register(
            "audit_spool_records",
            "Audit records in the spool not acknowledged by a collector",
            m.spool_records.clone(),
        );
        r.register_with_unit(
            "audit_spool",
            "Size of the audit spool's segments",
            Unit::Bytes,
            m.spool_bytes.clone(),
        );
        r.register(
            "link_up",
            "Whether the link's stream is up (1) or not (0)",
            m.link_up.clone(),
        );
        r.register(
            "link_reconnects",
            "Times the link's stream came up again after its first time",
            m.link_reconnects.clone(),
        );
        r.register("backend", "The backend in use (1)", m.backend.clone());
        r.register(
            "policy_generation",
            "Policies applied since start (1: the one loaded at start)",
            m.policy_generation.clone(),
        );
        // Every final state's series exists from the start (at 0), so that a rate over the
        // first scrapes sees the first request.
        for state in ["approved", "denied", "timed_out", "abandoned"] {
            let _ = m.requests_closed.get_or_create(&[("state", state)]);
            if state != "abandoned" {
                let _ = m.decision_seconds.get_or_create(&[("state", state)]);
            }
        }
        Metrics { registry: r, ..m }
    }

    /// Labels link changes by their URL: `server` (`--server`) and `collector`
    /// (`--collector`); a configured link starts as down.
    pub fn with_links(mut self, server: Option<&str>, collector: Option<&str>) -> Metrics {
        for (name, url) in [("server", server), ("collector", collector)] {
            if let Some(url) = url {
                self.link_up.get_or_create(&[("link", name)]).set(0);
                // Created now, so that the series exists (at 0) before the first reconnect.
                let _ = self.link_reconnects.get_or_create(&[("link", name)]);
                self.links.push((name, url.to_string()));
            }
        }
        self
    }

    /// The exposition: OpenMetrics text when `openmetrics`, else the Prometheus text format
    /// (0.0.4).
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a label value.
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

    /// One request update from the hold table's journal (every one passes here once);
    /// `pending`: requests pending after it.
    pub fn on_update(&self, u: &Update, pending: usize) {
        self.requests_pending.set(pending as i64);
        let r = match u {
            Update::Opened(_) => {
                self.requests_opened.inc();
                return;
            }
            Update::Closed(r) => r,
        };
        let state = r.state.as_str();
        self.requests_closed
            .get_or_create(&[("state", state)])
            .inc();
        let released = self.lock_released().remove(&r.key);
        let Some(d) = &r.decision else { return };
        let secs = d.at_unix_ms.saturating_sub(r.created_unix_ms) as f64 / 1e3;
        self.decision_seconds
            .get_or_create(&[("state", state)])
            .observe(secs);
        if let Some(us) = released {
            let secs = us.saturating_sub(d.at_unix_ms.saturating_mul(1000)) as f64 / 1e6;
            self.release_seconds.observe(secs);
        }
    }

    /// What the daemon gathered into its status (every second and on changes), and the
    /// audit spool's depth.
    pub fn refresh(&self, status: &Status, audit: Option<&crate::daemon::audit::AuditLog>) {
        self.requests_pending.set(status.pending_requests as i64);
        raise(&self.kernel_events, status.events);
        raise(&self.kernel_lost, status.lost);
        self.policy_generation.set(status.policy_generation as i64);
        if !status.backend.is_empty() {
            let name = match status.backend.as_str() {
                "lsm" => "lsm",
                "fanotify" => "fanotify",
                _ => "other",
            };
            self.backend.get_or_create(&[("backend", name)]).set(1);
        }
        if let Some(a) = audit {
            let shipper = a.shipper();
            let spool = shipper.spool();
            let depth = spool.head().seq.saturating_sub(spool.acked());
            self.spool_records.set(depth as i64);
            self.spool_bytes.set(spool.used_bytes() as i64);
        }
    }

    /// A link's stream went up or down.
    pub fn on_link_change(&self, change: &LinkChange) {
        let (server, up) = match change {
            LinkChange::Up { server, .. } => (server, true),
            LinkChange::Down { server, .. } => (server, false),
            _ => return,
        };
        let Some(i) = self.links.iter().position(|(_, url)| url == server) else {
            return;
        };
        let label = [("link", self.links[i].0)];
        self.link_up.get_or_create(&label).set(i64::from(up));
        if up && self.seen_up[i].swap(true, Ordering::Relaxed) {
            self.link_reconnects.get_or_create(&label).inc();
        }
    }

    fn lock_released(&self) -> std::sync::MutexGuard<'_, HashMap<HoldKey, u64>> {
        self.released.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_release(&self, key: &HoldKey) {
        let mut m = self.lock_released();
        if m.len() >= MAX_RELEASES {
            m.clear();
        }
        m.insert(*key, now_unix_us());
    }
}

/// Raises a counter to `total` (a running total kept elsewhere; never lowered).
fn raise(c: &Counter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}

/// The backend's [`Gate`], noting when each release returned (for
/// `airlock_request_release_seconds`); everything else passes through unchanged.
pub struct MeteredGate {
    inner: Arc<dyn Gate>,
    metrics: Arc<Metrics>,
}

impl MeteredGate {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn Gate>, metrics: Arc<Metrics>) -> Arc<dyn Gate> {
        Arc::new(MeteredGate { inner, metrics })
    }
}

impl Gate for MeteredGate {
    fn release(&self, key: &HoldKey, holders: &[Holder], how: Release) -> Result<(), GateError> {
        self.inner.release(key, holders, how)?;
        self.metrics.note_release(key);
        Ok(())
    }

    fn standing(&self, s: &Standing) -> Result<(), GateError> {
        self.inner.standing(s)
    }
}

/// The daemon's metrics for `cfg` (links labelled), and their listener when
/// `cfg.metrics_listen` is set (dropping it stops serving).
pub async fn start(
    cfg: &crate::daemon::DaemonConfig,
) -> Result<(Arc<Metrics>, Option<MetricsListener>), MetricsError> {
    let url = |l: &Option<crate::link::client::LinkConfig>| l.as_ref().map(|l| l.server.clone());
    let (server, collector) = (url(&cfg.link), url(&cfg.collector));
    let m = Arc::new(Metrics::new().with_links(server.as_deref(), collector.as_deref()));
    let listener = match cfg.metrics_listen {
        Some(addr) => Some(serve(addr, m.clone()).await?),
        None => None,
    };
    Ok((m, listener))
}

/// `--metrics-listen`: an `IP:PORT`, or empty for none (an unset `Environment=` line).
pub fn listen_arg(s: &str) -> Result<String, String> {
    match s.is_empty() || s.parse::<std::net::SocketAddr>().is_ok() {
        true => Ok(s.to_string()),
        false => Err("expected IP:PORT, e.g. 127.0.0.1:9464".into()),
    }
}

#[cfg(test)]
mod tests;
