//! The daemon's side of holds: turns held events into requests (with context), runs timeouts,
//! restores pending requests after a restart, and writes every request's opening and outcome
//! to the audit log.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_policy::CompiledPolicy;
use tokio::sync::mpsc;

use super::records::{Record, Records, RequestChange};
use crate::agents::AgentSet;
use crate::backend::BackendKind;
use crate::event::{DecidedBy, GateEvent, Verdict};
use crate::hold::context::{Sources, gather};
use crate::hold::store::Store;
use crate::hold::table::{HoldTable, Opening};
use crate::hold::{
    Approvals, DEFAULT_TIMEOUT, Gate, HoldKey, HoldKind, Holder, OnTimeout, RunRecordFile, Update,
};

/// Requests and their bookkeeping.
pub(crate) struct Holds {
    pub approvals: Approvals,
    /// Lines on the held processes' stderr (see `notice.rs`).
    pub notices: Arc<super::notice::Notices>,
    /// Every request update, losslessly (the table's journal): records and the server link.
    pub journal: mpsc::UnboundedReceiver<Update>,
    /// The daemon's metrics (requests are counted from the journal, in [`Holds::on_update`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    host: String,
    state_dir: PathBuf,
}

fn thread_alive(h: &Holder) -> bool {
    crate::proc::has_thread(h.tgid, h.tid)
}

impl Holds {
    /// Opens the request store and restores pending requests of a previous run. `kind` tells
    /// which holds can have survived: LSM holds (stopped threads, pinned programs) and backstop
    /// holds do; fanotify permission events were released by the kernel when the previous
    /// daemon's group closed. Releases are timed for `metrics` (see `crate::metrics`).
    pub fn start(
        state_dir: &Path,
        gate: Arc<dyn Gate>,
        kind: BackendKind,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Holds, crate::hold::store::StoreError> {
        let gate = crate::metrics::MeteredGate::wrap(gate, metrics.clone());
        let store = Store::open(&crate::paths::requests_dir(state_dir))?;
        let loaded = store.load(std::time::SystemTime::now())?;
        for e in &loaded.errors {
            tracing::error!(error = %e, "unreadable request record kept aside");
        }
        let mut table = HoldTable::new(gate, Some(store));
        let notices = Arc::new(super::notice::Notices::new(state_dir));
        table.set_herald(notices.clone());
        let (journal_tx, journal) = mpsc::unbounded_channel();
        table.set_journal(journal_tx);
        let n = loaded.pending.len();
        table.restore(
            loaded.pending,
            loaded.closed,
            crate::hold::approvals::now_unix_ms(),
            |h| match h.how {
                HoldKind::Restart => kind == BackendKind::Lsm && thread_alive(h),
                HoldKind::AfterExec => thread_alive(h),
                HoldKind::Parked { .. } => false,
            },
        );
        let approvals = Approvals::new(table);
        let still = approvals.pending_count();
        if n > 0 {
            tracing::info!(
                restored = still,
                abandoned = n - still,
                "pending requests from the previous run"
            );
        }
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Holds {
            approvals,
            notices,
            journal,
            metrics,
            host,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// A held event: joins or opens its request. Returns the request id.
    /// `agent` is the event's process classified by the caller (saves a second procfs walk).
    pub fn on_event(
        &self,
        ev: &GateEvent,
        policy: &CompiledPolicy,
        agents: &AgentSet,
        agent: Option<crate::agents::AgentMatch>,
        exe: Option<String>,
    ) -> Option<String> {
        if ev.verdict != Verdict::Held {
            return None;
        }
        let key = HoldKey {
            tgid: ev.tgid,
            op: ev.op,
            dev: ev.target_dev,
            ino: ev.target_ino,
            argv_hash: ev.argv_hash,
        };
        let how = match (ev.hold_token, ev.decided_by) {
            (Some(token), _) => HoldKind::Parked { token },
            (None, Some(DecidedBy::Backstop)) => HoldKind::AfterExec,
            _ => HoldKind::Restart,
        };
        let holder = Holder {
            tid: ev.pid,
            tgid: ev.tgid,
            how,
        };
        let joined = self.approvals.on_held(key, holder, || {
            let rule = policy.rules.get(ev.rule_id as usize);
            let launched_by = agent
                .as_ref()
                .and_then(|m| crate::hold::context::unit_of(&m.root.path))
                .and_then(|unit| RunRecordFile::read(&self.state_dir, &unit))
                .map(|f| f.launcher);
            let in_agent = |pid: u32| agents.classify_pid(pid).is_some();
            let context = gather(
                ev,
                &Sources {
                    host: &self.host,
                    agent: agent.as_ref(),
                    rule,
                    exe,
                    launched_by,
                    in_agent: &in_agent,
                },
            );
            let (timeout, on_timeout) = match rule.and_then(|r| r.approval) {
                Some(a) => (
                    a.timeout,
                    match a.on_timeout {
                        airlock_policy::OnTimeout::Allow => OnTimeout::Allow,
                        airlock_policy::OnTimeout::Deny => OnTimeout::Deny,
                    },
                ),
                None => (DEFAULT_TIMEOUT, OnTimeout::Deny),
            };
            Opening {
                context,
                timeout,
                on_timeout,
            }
        });
        Some(joined.id)
    }

    /// Timeouts and holders that died.
    pub fn tick(&self) {
        self.approvals.tick(thread_alive);
    }

    /// Writes every queued request update to the record stream and the log, and hands it to
    /// the server link when there is one.
    pub fn drain_updates(
        &mut self,
        records: &mut Records,
        link: Option<&mpsc::UnboundedSender<Update>>,
    ) {
        while let Ok(u) = self.journal.try_recv() {
            self.on_update(u, records, link);
        }
    }

    /// One request update: log line, record, link.
    pub fn on_update(
        &self,
        u: Update,
        records: &mut Records,
        link: Option<&mpsc::UnboundedSender<Update>>,
    ) {
        record_update(&u, records, &self.approvals);
        self.metrics.on_update(&u, self.approvals.pending_count());
        if let Some(l) = link {
            let _ = l.send(u);
        }
    }
}

/// One request update's log line and record.
fn record_update(u: &Update, records: &mut Records, approvals: &Approvals) {
    let (change, r) = match u {
        Update::Opened(r) => (RequestChange::Opened, r),
        Update::Closed(r) => (RequestChange::Closed, r),
    };
    let c = &r.context;
    let target = c
        .target_path
        .clone()
        .unwrap_or_else(|| format!("dev {} ino {}", c.target_dev, c.target_ino));
    match change {
        RequestChange::Opened => tracing::warn!(
            target: "airlock::request", id = %r.id, agent = c.agent.as_deref().unwrap_or("?"), op = ?c.op,
            target = %target, argv = ?c.argv, pid = c.pid,
            "held for approval: airlock approve {} | airlock deny {}", r.id, r.id
        ),
        RequestChange::Closed => tracing::info!(
            target: "airlock::request", id = %r.id, state = r.state.as_str(), op = ?c.op, target = %target,
            by = r.decision.as_ref().and_then(|d| d.by.as_ref()).and_then(|b| b.principal.clone().or_else(|| b.user.clone())).unwrap_or_default(),
            via = r.decision.as_ref().and_then(|d| d.by.as_ref()).map(|b| b.via.as_str()).unwrap_or(""),
            "request closed"
        ),
    }
    if !records.write(&Record::Request { change, request: r }) && change == RequestChange::Opened {
        // Fail closed: an action whose request cannot be in the audit stream does not happen.
        let by = airlock_approval::Approver {
            uid: 0,
            pid: std::process::id(),
            user: None,
            via: "airlockd-audit".to_string(),
            principal: None,
        };
        let deny = airlock_approval::Decision::Deny {
            always: false,
            reason: Some("the audit record of this request could not be written".into()),
        };
        if let Err(e) = approvals.decide(&r.id, deny, by) {
            tracing::error!(id = %r.id, error = %e, "could not deny a request whose audit record failed");
        }
    }
}

/// After a restart on the LSM backend: a thread held while no daemon ran, whose event was read
/// but never became a request, would stay stopped with nobody asking. SIGCONT to every stopped
/// process in an agent cgroup makes each held syscall restart into the gate, which holds it
/// again and reports it afresh (nothing of the action happens). Returns how many were woken.
pub(crate) fn rewake_stopped_agents(agents: &AgentSet) -> usize {
    let mut n = 0;
    for root in agents.roots.values() {
        let dir = crate::cgroup::cgroup_dir(&agents.mount, &root.path);
        for pid in crate::cgroup::procs_recursive(&dir) {
            if crate::proc::state(pid) == Some('T') {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
                n += 1;
            }
        }
    }
    n
}
