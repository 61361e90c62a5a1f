//! airlockd's main loop: load and compile the policy, pick a backend, keep agent cgroups in
//! step with the cgroup tree, record every event, reload on SIGHUP.
//!
//! A policy that fails to load at start stops the daemon with the policy's diagnostics; one
//! that fails on reload is logged and the policy in force stays in force.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_policy::CompiledPolicy;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::agents::{AgentMatcher, AgentSet, CgroupWatcher};
use crate::backend::exec_context::{ExecContextProbe, ExecRecord};
use crate::backend::fanotify::FanotifyBackend;
use crate::backend::lsm::{LsmBackend, LsmError};
use crate::backend::{Backend, BackendError, BackendKind};
use crate::event::GateEvent;
use crate::hold::Gate;

pub mod audit;
mod holds;
mod notice;
pub mod policy_watch;
pub mod records;
mod self_protect;
mod watchdog;

use records::{EventRecord, Record, Records};
use watchdog::sd_notify;

/// Which backend to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// BPF LSM when the kernel allows it, else the fanotify fallback.
    Auto,
    Lsm,
    Fanotify,
}

/// What airlockd needs to start.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Policy files or directories.
    pub policy_paths: Vec<PathBuf>,
    pub backend: BackendChoice,
    /// Status file, event log, request store, run records.
    pub state_dir: PathBuf,
    /// bpffs directory the LSM programs (and the fallback's exec backstop) are pinned under,
    /// so that gating outlives this process.
    pub pin_dir: PathBuf,
    /// Unix socket of the local approvals API.
    pub socket: PathBuf,
    /// Group that may use the socket (mode 0660); `None` leaves it root's.
    pub socket_group: Option<String>,
    /// airlock-server to link to; `None`: decisions are made on this host's socket only.
    pub link: Option<crate::link::client::LinkConfig>,
    /// A separate audit collector (`airlock-server collector`) to ship the audit spool to
    /// instead of over `link`; same identity.
    pub collector: Option<crate::link::client::LinkConfig>,
    /// With a link: whether a decision on the local socket (break-glass) is allowed.
    pub break_glass: bool,
    /// The audit spool's directory (`HOST/` below it) and the unenrolled host's audit key:
    /// on disk by default, see [`crate::paths::audit_dir`].
    pub audit_dir: PathBuf,
    /// Most bytes the audit spool keeps unacknowledged (see `daemon/audit.rs`).
    pub audit_spool_max: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`, see `crate::metrics`); `None`: no
    /// listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("policy rejected:\n{0}")]
    Policy(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("agent cgroups: {0}")]
    Agents(#[from] crate::agents::AgentsError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("watching the cgroup tree: {0}")]
    Watch(#[from] crate::agents::WatchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::hold::store::StoreError),
    #[error("approvals API: {0}")]
    Api(#[from] crate::api::ApiError),
    /// The audit stream could not be opened (key, spool); gating does not start without it.
    #[error("audit stream: {0}")]
    Audit(#[from] audit::AuditLogError),
    #[error("record stream: {0}")]
    Records(#[from] records::RecordsError),
    #[error("server link: {0}")]
    Link(#[from] crate::link::client::LinkError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads and compiles the policy files; the error text is the policy's diagnostics.
pub fn load_policy(paths: &[PathBuf]) -> Result<CompiledPolicy, DaemonError> {
    airlock_policy::load_and_compile(paths, &airlock_policy::HostResolver)
        .map(|c| c.compiled)
        .map_err(|d| DaemonError::Policy(d.to_string()))
}

/// What `airlock status` shows; rewritten by the daemon every second.
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct Status {
    pub pid: u32,
    pub backend: String,
    /// Why this backend (e.g. why BPF LSM could not be used).
    pub backend_reason: String,
    pub policy_paths: Vec<String>,
    pub policies: Vec<String>,
    pub rules: usize,
    pub gated_binaries: usize,
    pub protected_paths: usize,
    pub agents: Vec<StatusAgent>,
    pub notes: Vec<String>,
    pub events: u64,
    pub lost: u64,
    pub started_unix: u64,
    pub updated_unix: u64,
    /// Whether exec context (tp_btf `sched_process_exec`) is recorded, or why not.
    pub exec_context: String,
    /// Set when the last reload failed (the previous policy stays in force).
    pub last_reload_error: Option<String>,
    /// Requests waiting for a decision.
    #[serde(default)]
    pub pending_requests: usize,
    /// The approvals socket.
    #[serde(default)]
    pub socket: String,
    /// The link to airlock-server, when configured.
    #[serde(default)]
    pub link: Option<StatusLink>,
    /// Records that could not be written to the record stream.
    #[serde(default)]
    pub records_failed: u64,
    /// Policies applied since start (1: the one loaded at start; each reload adds one).
    #[serde(default)]
    pub policy_generation: u64,
    /// The audit spool, when this daemon writes one.
    #[serde(default)]
    pub audit: Option<StatusAudit>,
    /// Whether the separate collector's link is up, when one is configured.
    #[serde(default)]
    pub collector_connected: Option<bool>,
}

/// The audit spool in [`Status`].
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct StatusAudit {
    /// The last record written.
    pub head_seq: u64,
    /// The last record the collector acknowledged (0 standalone or before the first ack).
    pub acked_seq: u64,
    /// Bytes the spool holds, and may hold.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Records that could not be written (full spool, I/O errors).
    pub failed: u64,
}

/// The server link in [`Status`].
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct StatusLink {
    pub server: String,
    pub connected: bool,
    /// Local decisions: "break-glass" or "forbidden".
    pub local_decisions: String,
}

/// One agent cgroup in [`Status`].
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct StatusAgent {
    pub agent: String,
    pub cgroup: String,
    pub id: u64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts the backend the config asks for; with `auto`, falls back to fanotify when the kernel
/// cannot run BPF LSM programs, and returns the reason.
/// A started backend, the gate that releases its holds, and why it was chosen.
pub type Started = (Box<dyn Backend>, std::sync::Arc<dyn Gate>, String);

/// Starts the backend the config asks for; with `auto`, falls back to fanotify when the kernel
/// cannot run BPF LSM programs, and returns the reason.
pub fn start_backend(
    choice: BackendChoice,
    tx: crate::backend::EventSender,
    pin_dir: &Path,
) -> Result<Started, DaemonError> {
    let lsm = |b: LsmBackend, why: &str| -> Started {
        let gate = b.gate();
        let why = if b.adopted() {
            format!(
                "{why}; adopted the programs pinned in {}",
                pin_dir.display()
            )
        } else {
            why.to_string()
        };
        (Box::new(b), gate, why)
    };
    let fan = |b: FanotifyBackend, why: String| -> Started {
        let gate = b.gate();
        (Box::new(b), gate, why)
    };
    match choice {
        BackendChoice::Lsm => Ok(lsm(
            LsmBackend::start(tx, pin_dir).map_err(BackendError::from)?,
            "requested with --backend lsm",
        )),
        BackendChoice::Fanotify => Ok(fan(
            FanotifyBackend::start(tx).map_err(BackendError::from)?,
            "requested with --backend fanotify".into(),
        )),
        BackendChoice::Auto => match LsmBackend::start(tx.clone(), pin_dir) {
            Ok(b) => Ok(lsm(b, "BPF LSM programs load and attach on this kernel")),
            Err(LsmError::Unavailable(why)) => {
                let b = FanotifyBackend::start(tx).map_err(BackendError::from)?;
                Ok(fan(b, format!("fallback: {why}")))
            }
            Err(e) => Err(BackendError::from(e).into()),
        },
    }
}

/// Starts the exec-context tracepoint. On the fanotify fallback it is pinned under `dir` and
/// armed as the exec backstop (execs of gated binaries that no daemon allowed are stopped or
/// killed before their first instruction, also while airlockd is down); the backend records
/// the execs it allows before the first apply. On the LSM backend the pinned LSM programs are
/// the fail-closed part: a backstop left pinned by an earlier fallback run is removed.
fn start_exec_probe(
    kind: BackendKind,
    exec_tx: mpsc::Sender<ExecRecord>,
    events: crate::backend::EventSender,
    dir: &Path,
    policy: &CompiledPolicy,
    agents: &AgentSet,
    backend: &dyn Backend,
) -> (Option<ExecContextProbe>, String) {
    let started = match kind {
        BackendKind::Lsm => {
            if let Err(e) = crate::backend::exec_context::remove_pins(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a stale exec backstop");
            }
            ExecContextProbe::start(exec_tx).and_then(|mut p| {
                p.set_agents(agents)
                    .map(|()| (p, "recorded (tp_btf sched_process_exec)".to_string()))
            })
        }
        BackendKind::Fanotify => ExecContextProbe::start_pinned(exec_tx, dir).and_then(|mut p| {
            p.set_agents(agents)?;
            p.set_rules(policy)?;
            let allow = p.arm_backstop(events)?;
            backend.set_backstop(Some(allow));
            let how = if p.adopted() { "adopted" } else { "pinned" };
            Ok((
                p,
                format!(
                    "recorded (tp_btf sched_process_exec); exec backstop armed, {how} in {}",
                    dir.display()
                ),
            ))
        }),
    };
    match started {
        Ok((p, what)) => (Some(p), what),
        Err(e) => (None, format!("not recorded: {e}")),
    }
}

struct State {
    cfg: DaemonConfig,
    policy: CompiledPolicy,
    /// First path each rule names, for event records (computed once per policy, not per event).
    rule_targets: std::collections::HashMap<u32, String>,
    matcher: AgentMatcher,
    agents: AgentSet,
    /// The agent set as the approvals API sees it (callers inside agents are refused).
    shared_agents: std::sync::Arc<std::sync::RwLock<AgentSet>>,
    holds: holds::Holds,
    backend: Box<dyn Backend>,
    exec_probe: Option<ExecContextProbe>,
    exec_rx: mpsc::Receiver<ExecRecord>,
    /// Last exec per process (tgid); bounded by clearing when it grows past a limit.
    exes: std::collections::HashMap<u32, ExecRecord>,
    status: Status,
    records: Records,
    link: Option<crate::link::client::LinkHandle>,
    /// The link to a separate collector, when configured.
    collector: Option<crate::link::client::LinkHandle>,
}

const MAX_EXES: usize = 65536;

impl State {
    fn note_exec(&mut self, r: ExecRecord) {
        if self.exes.len() >= MAX_EXES {
            self.exes.clear();
        }
        tracing::debug!(pid = r.pid, file = %r.filename, "agent exec");
        self.exes.insert(r.tgid, r);
    }

    fn record(&mut self, ev: &GateEvent) {
        // Exec records come on their own channel: read the kernel's ring now (it wakes nobody
        // per exec) and take what is queued, so the event sees its process's latest exec.
        if let Some(p) = &self.exec_probe {
            p.drain_now();
        }
        while let Ok(r) = self.exec_rx.try_recv() {
            self.note_exec(r);
        }
        let exe = self.exes.get(&ev.tgid).map(|r| r.filename.clone());
        let rule = self.policy.rules.get(ev.rule_id as usize);
        // Self-protection is no rule of any policy (see ebpf-programs/src/guard.rs).
        let builtin = ev.rule_id == airlock_common::SELF_RULE;
        // The cgroup the kernel saw decides; the pid's cgroup now is only a shortcut to it (the
        // process may have exited or moved since).
        let m = self
            .agents
            .classify_pid(ev.pid)
            .filter(|m| ev.cgroup_id == 0 || m.cgroup_id == ev.cgroup_id)
            .or_else(|| self.agents.classify_cgroup_id(ev.cgroup_id));
        let rule_target = self.rule_targets.get(&ev.rule_id).cloned();
        let request = self
            .holds
            .on_event(ev, &self.policy, &self.agents, m.clone(), exe.clone());
        if request.is_some() {
            let waited = crate::hold::approvals::now_boot_ns().saturating_sub(ev.ktime_ns);
            tracing::debug!(us = waited / 1000, "held event to request");
        }
        let rec = EventRecord {
            request: request.as_deref(),
            event: ev,
            rule: if builtin {
                Some(SELF_PROTECTION)
            } else {
                rule.map(|r| r.name.as_str())
            },
            policy: if builtin {
                Some("builtin")
            } else {
                rule.map(|r| r.policy.as_str())
            },
            agent: m.as_ref().map(|m| m.root.agent.as_str()),
            agent_cgroup: m.as_ref().map(|m| m.cgroup_path.as_str()),
            exe: exe.as_deref(),
            rule_target,
        };
        tracing::info!(
            target: "airlock::event",
            op = ?ev.op, verdict = ?ev.verdict, action = ?ev.action, pid = ev.pid, comm = %ev.comm,
            target = %ev.target_path.as_deref().unwrap_or(&ev.target_name),
            rule = rec.rule.unwrap_or("?"), agent = rec.agent.unwrap_or("?"), monitor = ev.monitor,
            request = request.as_deref().unwrap_or(""),
            "flagged"
        );
        // A held event whose audit record failed is refused when its request opens (the
        // request's own record fails too, and `record_update` denies it).
        let _ = self.records.write(&Record::Event(rec));
    }

    fn drain_updates(&mut self) {
        let link = self.link.as_ref().map(|l| &l.updates);
        self.holds.drain_updates(&mut self.records, link);
    }

    fn link_change(&mut self, change: records::LinkChange) {
        self.holds.metrics.on_link_change(&change);
        match &change {
            records::LinkChange::Up { server, resent } => {
                tracing::info!(server = %server, resent, "server link up")
            }
            records::LinkChange::Down {
                server,
                error,
                retry_in_ms,
            } => {
                tracing::warn!(server = %server, error = %error, retry_in_ms, "server link down")
            }
            _ => {}
        }
        let _ = self.records.write(&Record::Link {
            at_unix_ms: crate::hold::approvals::now_unix_ms(),
            change: &change,
        });
        self.refresh_status();
    }

    fn refresh_status(&mut self) {
        let s = self.backend.stats();
        self.status.events = s.events;
        let lost = s.lost + self.exec_probe.as_ref().map_or(0, |p| p.lost());
        if lost > self.status.lost
            && let Some(a) = self.records.audit.as_mut()
        {
            // Kernel events that never reached userspace are part of the record too.
            a.note(
                airlock_audit::Kind::EventsLost,
                serde_json::json!({"lost": lost - self.status.lost, "lost_total": lost}),
            );
        }
        self.status.lost = lost;
        self.status.updated_unix = now_unix();
        self.status.pending_requests = self.holds.approvals.pending_count();
        self.status.records_failed = self.records.failed;
        self.status.audit = self.records.audit.as_ref().map(|a| {
            let sh = a.shipper();
            let sp = sh.spool();
            StatusAudit {
                head_seq: sp.head().seq,
                acked_seq: sp.acked(),
                bytes: sp.used_bytes(),
                max_bytes: self.cfg.audit_spool_max,
                failed: a.failed,
            }
        });
        self.status.collector_connected = self.collector.as_ref().map(|c| *c.connected.borrow());
        if let (Some(l), Some(s)) = (&self.link, self.status.link.as_mut()) {
            s.connected = *l.connected.borrow();
            s.local_decisions = match l.local.get() {
                crate::api::LocalDecisions::Forbidden => "forbidden",
                _ => "break-glass",
            }
            .to_string();
        }
        self.status.agents = {
            let mut v: Vec<StatusAgent> = self
                .agents
                .roots
                .values()
                .map(|c| StatusAgent {
                    agent: c.agent.clone(),
                    cgroup: c.path.clone(),
                    id: c.id,
                })
                .collect();
            v.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
            v
        };
        self.status.rules = self.policy.rules.len();
        self.status.gated_binaries = self.policy.exec.len();
        self.status.protected_paths = self.policy.protected.len();
        self.status.notes = self.policy.notes.clone();
        self.status.policies = {
            let mut v: Vec<String> = self.policy.rules.iter().map(|r| r.policy.clone()).collect();
            v.dedup();
            v
        };
        self.holds
            .metrics
            .refresh(&self.status, self.records.audit.as_ref());
        let path = crate::paths::status_file(&self.cfg.state_dir);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&self.status).unwrap_or_default();
        if std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            tracing::warn!(path = %path.display(), "cannot write the status file");
        }
    }

    /// Re-resolves agent cgroups; applies them when they changed. The status file is rewritten
    /// at once so that `airlock run` sees its new cgroup gated without waiting for a tick.
    fn rescan_agents(&mut self) {
        match AgentSet::resolve_with(self.agents.mount.clone(), &self.matcher) {
            Ok(new) if new.roots != self.agents.roots => {
                let diff = new.diff(&self.agents);
                match self.backend.apply(&self.policy, &new) {
                    Ok(()) => {
                        self.sync_exec_probe(&new);
                        for c in &diff.added {
                            tracing::info!(agent = %c.agent, cgroup = %c.path, id = c.id, "agent cgroup gated");
                        }
                        for c in &diff.removed {
                            tracing::info!(agent = %c.agent, cgroup = %c.path, id = c.id, "agent cgroup gone");
                        }
                        self.set_agents(new);
                        self.refresh_status();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "applying new agent cgroups failed; previous set stays")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescanning agent cgroups failed"),
        }
    }

    fn set_agents(&mut self, a: AgentSet) {
        *self
            .shared_agents
            .write()
            .unwrap_or_else(|e| e.into_inner()) = a.clone();
        self.agents = a;
    }

    fn sync_exec_probe(&mut self, agents: &AgentSet) {
        if let Some(p) = self.exec_probe.as_mut()
            && let Err(e) = p.set_agents(agents)
        {
            tracing::warn!(error = %e, "exec context: cannot update agent cgroups");
        }
    }

    fn sync_exec_rules(&mut self) {
        if self.backend.kind() == BackendKind::Fanotify
            && let Some(p) = self.exec_probe.as_mut()
            && let Err(e) = p.set_rules(&self.policy)
        {
            tracing::warn!(error = %e, "exec backstop: cannot update gated binaries");
        }
    }

    /// Loads the policy again (`trigger`: what asked, for the log and the record) and
    /// switches to it only when all of it compiled and applied.
    fn reload(&mut self, trigger: &str) {
        let result = load_policy(&self.cfg.policy_paths).and_then(|p| {
            let p = self_protect::protect_self(p, &self.cfg, self.backend.kind());
            let matcher = AgentMatcher::new(&p.agents)?;
            let agents = AgentSet::resolve_with(self.agents.mount.clone(), &matcher)?;
            self.backend.apply(&p, &agents)?;
            Ok((p, matcher, agents))
        });
        match result {
            Ok((p, m, a)) => {
                self.status.policy_generation += 1;
                tracing::info!(
                    rules = p.rules.len(),
                    trigger,
                    generation = self.status.policy_generation,
                    "policy reloaded"
                );
                if let Some(au) = self.records.audit.as_mut() {
                    au.note(
                        airlock_audit::Kind::PolicyLoaded,
                        serde_json::json!({"rules": p.rules.len(), "paths": self.status.policy_paths, "trigger": trigger, "generation": self.status.policy_generation}),
                    );
                }
                self.sync_exec_probe(&a);
                self.rule_targets = rule_targets(&p);
                self.holds.notices.set_policy(&p);
                self.policy = p;
                self.sync_exec_rules();
                self.matcher = m;
                self.set_agents(a);
                self.status.last_reload_error = None;
            }
            Err(e) => {
                tracing::error!(error = %e, trigger, "policy reload failed; the previous policy stays in force");
                if let Some(au) = self.records.audit.as_mut() {
                    au.note(
                        airlock_audit::Kind::PolicyRejected,
                        serde_json::json!({"error": e.to_string(), "trigger": trigger, "generation_in_force": self.status.policy_generation}),
                    );
                }
                self.status.last_reload_error = Some(e.to_string());
            }
        }
    }
}

/// The rule name events of airlock's self-protection are recorded under.
pub const SELF_PROTECTION: &str = "self-protection";

fn rule_targets(p: &CompiledPolicy) -> std::collections::HashMap<u32, String> {
    let mut m = std::collections::HashMap::new();
    let exec = p
        .exec
        .iter()
        .chain(&p.connect)
        .map(|t| (t.rule.rule_id, &t.canonical));
    let protected = p
        .protected
        .iter()
        .filter(|t| t.rule.rule_id != airlock_common::SELF_RULE)
        .map(|t| (t.rule.rule_id, &t.canonical));
    let wild = p.connect_wild.iter().map(|t| (t.rule.rule_id, &t.path));
    for (id, path) in exec.chain(protected).chain(wild) {
        m.entry(id).or_insert_with(|| path.display().to_string());
    }
    m
}

/// The host's audit stream: under the enrolled name with the key beside the host's identity
/// when linked, else under this machine's host name with the key in the audit directory.
fn open_audit(cfg: &DaemonConfig) -> Result<audit::AuditLog, DaemonError> {
    let (host, key_dir) = match cfg.link.as_ref().or(cfg.collector.as_ref()) {
        Some(l) => {
            let id = crate::link::identity::Identity::load(&l.identity_dir)
                .map_err(audit::AuditLogError::from)?;
            (id.host, l.identity_dir.clone())
        }
        None => {
            let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let h = if airlock_audit::chain::valid_host(&h) {
                h
            } else {
                "localhost".to_string()
            };
            (h, cfg.audit_dir.clone())
        }
    };
    let spool = airlock_audit::SpoolConfig {
        max_bytes: cfg.audit_spool_max,
        // Segments are the unit acknowledgements free: small enough that a small spool still
        // has several.
        segment_bytes: (cfg.audit_spool_max / 8).clamp(4096, 1 << 20),
        ..Default::default()
    };
    let mut log = audit::AuditLog::open_with(&cfg.audit_dir, &key_dir, &host, spool)?;
    if cfg.link.is_none() && cfg.collector.is_none() {
        log.set_standalone();
    }
    Ok(log)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let policy = load_policy(&cfg.policy_paths)?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(io_err(&cfg.state_dir))?;
    let mut records = Records::open(&crate::paths::event_log(&cfg.state_dir))?;
    records.audit = Some(open_audit(&cfg)?);
    let mount = crate::cgroup::cgroup2_mount()?;
    // Watch before the first resolve so that no cgroup created in between goes unnoticed.
    let mut watcher = CgroupWatcher::spawn(mount.clone())?;
    // Empty scopes of `airlock run`s that are gone (SIGKILLed, say) are removed (agents/reap.rs).
    let _reaper = crate::agents::ScopeReaper::spawn(mount.clone(), cfg.state_dir.clone())?;
    let matcher = AgentMatcher::new(&policy.agents)?;
    let agents = AgentSet::resolve_with(mount, &matcher)?;
    let (tx, mut rx) = mpsc::channel::<GateEvent>(65536);
    let (mut backend, gate, reason) = start_backend(cfg.backend, tx.clone(), &cfg.pin_dir)?;
    let kind: BackendKind = backend.kind();
    let policy = self_protect::protect_self(policy, &cfg, kind);
    let (exec_tx, exec_rx) = mpsc::channel::<ExecRecord>(65536);
    let (exec_probe, exec_context) = start_exec_probe(
        kind,
        exec_tx,
        tx,
        &cfg.pin_dir.join("exec"),
        &policy,
        &agents,
        backend.as_ref(),
    );
    backend.apply(&policy, &agents)?;
    let (metrics, _metrics_listener) = crate::metrics::start(&cfg).await?;
    let holds = holds::Holds::start(&cfg.state_dir, gate, kind, metrics)?;
    holds.notices.set_policy(&policy);
    if kind == BackendKind::Lsm {
        let n = holds::rewake_stopped_agents(&agents);
        if n > 0 {
            tracing::info!(
                processes = n,
                "stopped agent processes woken to re-enter the gate"
            );
        }
    }
    let shared_agents = std::sync::Arc::new(std::sync::RwLock::new(agents.clone()));
    let classify = {
        let a = shared_agents.clone();
        std::sync::Arc::new(move |pid: u32| {
            a.read()
                .unwrap_or_else(|e| e.into_inner())
                .classify_pid(pid)
                .map(|m| m.root.agent)
        })
    };
    let local = crate::api::LocalPolicy::new(match (&cfg.link, cfg.break_glass) {
        (None, _) => crate::api::LocalDecisions::Primary,
        (Some(_), true) => crate::api::LocalDecisions::BreakGlass,
        (Some(_), false) => crate::api::LocalDecisions::Forbidden,
    });
    let shipper = records.audit.as_ref().map(|a| a.shipper());
    // With a separate collector, the spool goes there and the server link carries approvals.
    let collector = match (&cfg.collector, &shipper) {
        (Some(c), Some(s)) => Some(crate::link::client::spawn_collector(
            c.clone(),
            holds.approvals.clone(),
            s.clone(),
        )?),
        _ => None,
    };
    let shipper = shipper.filter(|_| collector.is_none());
    let link = cfg
        .link
        .clone()
        .map(|l| {
            crate::link::client::spawn(
                l,
                holds.approvals.clone(),
                local.clone(),
                cfg.break_glass,
                shipper,
            )
        })
        .transpose()?;
    let api = crate::api::serve(
        crate::api::ApiConfig {
            socket: cfg.socket.clone(),
            group: cfg.socket_group.clone(),
            local,
        },
        holds.approvals.clone(),
        classify,
    )
    .await?;
    tracing::info!(socket = %cfg.socket.display(), "approvals API listening");
    tracing::info!(backend = kind.as_str(), reason = %reason, "backend running");
    for note in &policy.notes {
        tracing::info!(note = %note, "policy note");
    }
    tracing::info!(exec_context = %exec_context, "exec context");
    let status = Status {
        policy_generation: 1,
        exec_context,
        pid: std::process::id(),
        backend: kind.as_str().to_string(),
        backend_reason: reason,
        policy_paths: cfg
            .policy_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        started_unix: now_unix(),
        socket: cfg.socket.display().to_string(),
        link: cfg.link.as_ref().map(|l| StatusLink {
            server: l.server.clone(),
            connected: false,
            local_decisions: if cfg.break_glass {
                "break-glass"
            } else {
                "forbidden"
            }
            .to_string(),
        }),
        ..Status::default()
    };
    if let Some(a) = records.audit.as_mut() {
        a.note(
            airlock_audit::Kind::DaemonStart,
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "policy": cfg.policy_paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            }),
        );
        a.note(
            airlock_audit::Kind::Backend,
            serde_json::json!({"backend": kind.as_str(), "reason": status.backend_reason}),
        );
    }
    let mut st = State {
        cfg,
        rule_targets: rule_targets(&policy),
        policy,
        matcher,
        agents,
        shared_agents,
        holds,
        backend,
        exec_probe,
        exec_rx,
        exes: Default::default(),
        status,
        records,
        link,
        collector,
    };
    st.refresh_status();
    sd_notify("READY=1\nSTATUS=gating");

    let mut hup = signal(SignalKind::hangup()).map_err(io_err(Path::new("SIGHUP")))?;
    // Without the watch, SIGHUP still reloads.
    let mut watch = match policy_watch::PolicyWatch::new(&st.cfg.policy_paths) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "policy files are not watched; reload with SIGHUP");
            None
        }
    };
    let mut term = signal(SignalKind::terminate()).map_err(io_err(Path::new("SIGTERM")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err(Path::new("SIGINT")))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Timeouts are checked 5 times a second: a rule's timeout is met within 200 ms.
    let mut hold_tick = tokio::time::interval(Duration::from_millis(200));
    // Pinged from the tick below, so a stuck loop stops pinging (see daemon/watchdog.rs).
    let mut dog = watchdog::Watchdog::from_env();
    loop {
        let link_change = async {
            match st.link.as_mut() {
                Some(l) => l.changes.recv().await,
                None => std::future::pending().await,
            }
        };
        let policy_changed = async {
            match watch.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        let collector_change = async {
            match st.collector.as_mut() {
                Some(l) => l.changes.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(ev) = rx.recv() => {
                st.record(&ev);
                st.drain_updates();
            }
            Some(u) = st.holds.journal.recv() => {
                let link = st.link.as_ref().map(|l| &l.updates);
                st.holds.on_update(u, &mut st.records, link);
            }
            Some(ch) = link_change => st.link_change(ch),
            Some(ch) = collector_change => st.link_change(ch),
            _ = hold_tick.tick() => {
                st.holds.tick();
                st.drain_updates();
                if let Some(a) = st.records.audit.as_mut() {
                    let _ = a.flush();
                }
            }
            Some(r) = st.exec_rx.recv() => st.note_exec(r),
            _ = hup.recv() => st.reload("SIGHUP"),
            () = policy_changed => st.reload("policy files changed"),
            _ = term.recv() => break,
            _ = int.recv() => break,
            Ok(_) = watcher.changed() => st.rescan_agents(),
            _ = tick.tick() => {
                if let Some(a) = st.records.audit.as_mut() {
                    a.tick();
                }
                st.refresh_status();
                dog.tick(std::time::Instant::now(), &[
                    ("backend event reader", st.backend.is_alive()),
                    ("cgroup watcher", watcher.is_alive()),
                ]);
            }
        }
    }
    // Shutdown starts here: tell systemd first, so it stops expecting watchdog pings.
    sd_notify("STOPPING=1");
    while let Ok(ev) = rx.try_recv() {
        st.record(&ev);
    }
    if let Some(a) = st.records.audit.as_mut() {
        a.note(
            airlock_audit::Kind::DaemonStop,
            serde_json::json!({"pid": std::process::id()}),
        );
        let _ = a.flush();
    }
    if let Err(e) = api.shutdown().await {
        tracing::warn!(error = %e, "approvals API did not stop cleanly");
    }
    st.drain_updates();
    st.refresh_status();
    match kind {
        BackendKind::Lsm => tracing::info!(
            pins = %st.cfg.pin_dir.display(),
            "stopping; the pinned programs keep gating and held processes stay held until airlockd runs again"
        ),
        BackendKind::Fanotify => tracing::info!(
            "stopping; fanotify gating ends with this process (the pinned exec backstop stays)"
        ),
    }
    Ok(())
}
