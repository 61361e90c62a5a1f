//! The host's tamper-evident audit stream (airlock-audit): every record the one writer
//! (`records.rs`) writes is also sealed into this host's hash chain and appended, fsynced, to
//! the spool in `<audit_dir>/<host>/` (see `crate::paths::audit_dir`), with Ed25519 checkpoints signed by the host's audit
//! key. The link ships the spool to airlock-server's collector ([`Shipper`]); acknowledged
//! records are deleted.
//!
//! Every record carries top-level `agent`, `op`, `decision` and `approver` strings where they
//! apply, so the collector can filter without knowing each kind's body.
//!
//! When the spool is full, records of an `approve` rule's request (held events, requests,
//! outcomes) cannot be written and the request is denied (fail closed: an action nobody can
//! account for does not happen); other records are dropped, counted, and the count is itself
//! recorded (`audit.dropped`) once there is room again.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use airlock_audit::{Draft, Kind, Priority, SigningKey, Spool, SpoolConfig, SpoolError};
use serde_json::{Value, json};

use super::records::{Record, RequestChange};
use crate::event::Verdict;
use crate::hold::approvals::now_unix_ms;

/// The audit key's file name (in the identity directory when enrolled, else the state
/// directory).
pub const AUDIT_KEY: &str = "audit.key";

/// Errors opening the audit stream.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("audit key {path}: {source}")]
    Key {
        path: PathBuf,
        source: airlock_audit::KeyError,
    },
    /// The directory the key goes in could not be made.
    #[error("audit key directory {path}: {source}")]
    KeyDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit spool: {0}")]
    Spool(#[from] SpoolError),
    /// The enrolled identity names the host the chain is of.
    #[error("host identity: {0}")]
    Identity(#[from] crate::link::identity::IdentityError),
}

/// The spool and what the link needs to ship it.
#[derive(Clone)]
pub struct Shipper {
    spool: Arc<Mutex<Spool>>,
    /// Woken when records were appended.
    pub appended: Arc<tokio::sync::Notify>,
    /// The host's verifier key (signed-note verifier form), sent in Hello.
    pub key: String,
}

impl Shipper {
    /// The spool (shared by the writer and the link).
    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's side of the audit stream.
pub struct AuditLog {
    shipper: Shipper,
    /// Records waiting for the next group commit ([`AuditLog::flush`]: at the latest
    /// [`FLUSH_EVERY`] of them, the daemon's 200 ms tick, or the next request's record): one
    /// fsync for many events instead of one each on the daemon's loop.
    pending: Vec<(Draft, Priority)>,
    /// No collector will ever acknowledge this spool (airlockd runs without a server): it
    /// is then a rotating local log (see [`AuditLog::rotate`]).
    standalone: bool,
    /// Bytes the spool may hold.
    max_bytes: u64,
    /// Records that could not be written (spool full for a must-write record, I/O errors).
    pub failed: u64,
}

/// Audit-only records buffered before a group commit.
const FLUSH_EVERY: usize = 256;

/// Loads the host's audit key from `path`, making it (mode 0600) when absent.
pub fn load_or_make_key(path: &Path, name: &str) -> Result<SigningKey, AuditLogError> {
    let bad = |source| AuditLogError::Key {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return SigningKey::load(path).map_err(bad);
    }
    // A first start makes the audit directory too (owner-only: it holds the private key);
    // the packaged unit's StateDirectory= makes only /var/lib/airlock.
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AuditLogError::KeyDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let k = SigningKey::generate(name).map_err(bad)?;
    k.write_new(path).map_err(bad)?;
    Ok(k)
}

impl AuditLog {
    /// Opens the spool of `host` under `audit_dir`, with the key in `key_dir`.
    pub fn open(audit_dir: &Path, key_dir: &Path, host: &str) -> Result<AuditLog, AuditLogError> {
        Self::open_with(audit_dir, key_dir, host, SpoolConfig::default())
    }

    /// [`AuditLog::open`] with the spool's sizes given (tests fill a small one).
    pub fn open_with(
        audit_dir: &Path,
        key_dir: &Path,
        host: &str,
        cfg: SpoolConfig,
    ) -> Result<AuditLog, AuditLogError> {
        let key = load_or_make_key(&key_dir.join(AUDIT_KEY), &format!("airlock-{host}"))?;
        let verifier = key.verifier().to_string();
        let dir = audit_dir.join(host);
        let spool = Spool::open(&dir, host, cfg, Some(key), now_unix_ms())?;
        let r = spool.recovery();
        if r.torn_bytes > 0 {
            tracing::warn!(
                bytes = r.torn_bytes,
                segment = ?r.torn_segment,
                "audit spool: a torn write at the end was cut off (every complete record kept)"
            );
        }
        Ok(AuditLog {
            shipper: Shipper {
                spool: Arc::new(Mutex::new(spool)),
                appended: Arc::new(tokio::sync::Notify::new()),
                key: verifier,
            },
            pending: Vec::new(),
            standalone: false,
            max_bytes: cfg.max_bytes,
            failed: 0,
        })
    }

    /// Marks the spool as never shipped (no server): it rotates instead of filling up.
    pub fn set_standalone(&mut self) {
        self.standalone = true;
    }

    /// Without a collector nobody acknowledges records, and a spool that only fills would in
    /// the end refuse every approve rule's request. A standalone host keeps its spool as a
    /// rotating log instead: past three quarters full, the oldest quarter of its records is
    /// let go (whole segments; the chain stays verifiable from the first record kept, and
    /// the rotation is itself recorded as `audit.rotated`).
    fn rotate(&mut self) {
        if !self.standalone {
            return;
        }
        let mut spool = self.shipper.spool();
        if spool.used_bytes() * 4 < self.max_bytes * 3 {
            return;
        }
        let (acked, head) = (spool.acked(), spool.head().seq);
        let up_to = acked + (head - acked) / 4;
        match spool.ack(up_to) {
            Ok(out) if out.segments_deleted > 0 => {
                drop(spool);
                tracing::info!(
                    up_to,
                    freed = out.bytes_freed,
                    "standalone audit spool rotated"
                );
                self.pending.push((
                    Draft::new(
                        now_unix_ms(),
                        Kind::Other("audit.rotated".into()),
                        json!({"up_to_seq": up_to, "bytes_freed": out.bytes_freed}),
                    ),
                    Priority::AuditOnly,
                ));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit spool rotation failed"),
        }
    }

    /// What the link ships from.
    pub fn shipper(&self) -> Shipper {
        self.shipper.clone()
    }

    /// Appends `r`. A request's record is synced before this returns (with everything
    /// buffered before it, held events included: one fsync per request on the daemon's loop);
    /// `Err` only when it could not be written, and the caller fails closed. Other records
    /// wait for the next group commit.
    pub fn write(&mut self, r: &Record<'_>) -> Result<(), SpoolError> {
        let Some((draft, priority)) = draft(r) else {
            return Ok(());
        };
        if let Record::Request {
            change: RequestChange::Closed,
            request,
        } = r
        {
            self.pending.extend(decided(request));
        }
        self.pending.push((draft, priority));
        if matches!(r, Record::Request { .. }) || self.pending.len() >= FLUSH_EVERY {
            return self.flush();
        }
        Ok(())
    }

    /// Appends a record of `kind` made here (daemon start and stop, backend, policy), with the
    /// next group commit.
    pub fn note(&mut self, kind: Kind, body: Value) {
        self.pending
            .push((Draft::new(now_unix_ms(), kind, body), Priority::AuditOnly));
    }

    /// Writes (one fsync) every buffered record. `Err` when a must-write record among them
    /// could not be written (nothing of that call is then written; the audit-only records are
    /// counted as dropped).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.rotate();
        let items = std::mem::take(&mut self.pending);
        let n = items.len();
        // Kept for a second try: when the batch fails for want of room, its audit-only
        // records go again on their own, to be written or dropped and counted (never lost
        // uncounted along with the must-write record).
        let audit_only: Vec<(Draft, Priority)> = items
            .iter()
            .filter(|(_, p)| *p == Priority::AuditOnly)
            .cloned()
            .collect();
        let res = self.shipper.spool().append_many(items);
        if res.is_err() && !audit_only.is_empty() && audit_only.len() < n {
            let _ = self.shipper.spool().append_many(audit_only);
        }
        match res {
            Ok(done) => {
                let dropped = done
                    .iter()
                    .filter(|a| matches!(a, airlock_audit::Appended::Dropped { .. }))
                    .count();
                if dropped > 0 {
                    self.failed += dropped as u64;
                    tracing::warn!(
                        dropped,
                        "audit spool full: audit-only records dropped (counted)"
                    );
                }
                if dropped < n {
                    self.shipper.appended.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                self.failed += n as u64;
                tracing::error!(error = %e, records = n, "audit records not written");
                Err(e)
            }
        }
    }

    /// Signs a checkpoint when one is due (also when idle), after writing what is buffered.
    pub fn tick(&mut self) {
        let _ = self.flush();
        let r = self.shipper.spool().tick(now_unix_ms());
        match r {
            Ok(Some(_)) => self.shipper.appended.notify_one(),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit checkpoint not written"),
        }
    }
}

/// The records of how a closed request was decided, written before its outcome with the same
/// correlation id: a `vote` per vote a server counted (each approver, channel, grant and
/// reason as cast), then the `decision` (release, grant, reason, who; none for a request
/// abandoned before anyone decided).
fn decided(request: &crate::hold::Request) -> Vec<(Draft, Priority)> {
    let Some(d) = &request.decision else {
        return Vec::new();
    };
    let c = &request.context;
    let op = op_name(c.op);
    let now = now_unix_ms();
    let mut out = Vec::with_capacity(d.votes.len() + 1);
    for v in &d.votes {
        let Ok(vote) = serde_json::to_value(v) else {
            continue;
        };
        let mut body = json!({ "vote": vote });
        let word = match v.release {
            airlock_approval::Release::Allow => "approve",
            airlock_approval::Release::Deny => "deny",
        };
        summary(
            &mut body,
            c.agent.as_deref(),
            Some(&op),
            Some(word),
            Some(&v.principal),
        );
        out.push((
            Draft::new(now, Kind::Vote, body).corr(request.id.clone()),
            Priority::MustWrite,
        ));
    }
    let by =
        d.by.as_ref()
            .and_then(|b| b.principal.clone().or_else(|| b.user.clone()));
    // The votes went into their own records above.
    let mut record = d.clone();
    record.votes.clear();
    if let Ok(decision) = serde_json::to_value(&record) {
        let mut body = json!({ "decision_record": decision, "state": request.state.as_str() });
        summary(
            &mut body,
            c.agent.as_deref(),
            Some(&op),
            Some(request.state.as_str()),
            by.as_deref(),
        );
        out.push((
            Draft::new(now, Kind::Decision, body).corr(request.id.clone()),
            Priority::MustWrite,
        ));
    }
    out
}

/// The record `r` becomes, with its priority; `None` for nothing to record.
fn draft(r: &Record<'_>) -> Option<(Draft, Priority)> {
    match r {
        Record::Event(e) => {
            let ev = e.event;
            let kind = match ev.verdict {
                Verdict::Held => Kind::EventHeld,
                Verdict::Denied => Kind::EventDenied,
                Verdict::Allowed => Kind::EventAllowed,
            };
            let mut body = serde_json::to_value(e).ok()?;
            summary(&mut body, e.agent, Some(&op_name(ev.op)), None, None);
            let mut d = Draft::new(now_unix_ms(), kind, body);
            if let Some(id) = e.request {
                d = d.corr(id);
            }
            // Held events are part of an approve rule's request: fail closed.
            let p = if ev.verdict == Verdict::Held {
                Priority::MustWrite
            } else {
                Priority::AuditOnly
            };
            Some((d, p))
        }
        Record::Request { change, request } => {
            let c = &request.context;
            // Wrapped: the request's own `decision` is an object, the summary's a word.
            let mut body = json!({ "request": serde_json::to_value(request).ok()? });
            let (kind, decision, approver) = match change {
                RequestChange::Opened => (Kind::RequestOpened, None, None),
                RequestChange::Closed => {
                    let by = request.decision.as_ref().and_then(|d| d.by.as_ref());
                    (
                        Kind::Outcome,
                        Some(request.state.as_str().to_string()),
                        by.and_then(|b| b.principal.clone().or_else(|| b.user.clone())),
                    )
                }
            };
            summary(
                &mut body,
                c.agent.as_deref(),
                Some(&op_name(c.op)),
                decision.as_deref(),
                approver.as_deref(),
            );
            let d = Draft::new(now_unix_ms(), kind, body).corr(request.id.clone());
            Some((d, Priority::MustWrite))
        }
        Record::Link { at_unix_ms, change } => {
            use super::records::LinkChange;
            let kind = match change {
                LinkChange::Up { .. } => Kind::LinkUp,
                LinkChange::Down { .. } => Kind::LinkDown,
                LinkChange::DecisionRefused { .. } | LinkChange::Rejected { .. } => {
                    Kind::ApiRefused
                }
            };
            let body = serde_json::to_value(change).ok()?;
            Some((Draft::new(*at_unix_ms, kind, body), Priority::AuditOnly))
        }
    }
}

/// The operation's name as on the wire and in policies (`exec`, `open_write`).
fn op_name(op: airlock_approval::Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

/// Adds the top-level strings the collector filters on.
fn summary(
    body: &mut Value,
    agent: Option<&str>,
    op: Option<&str>,
    decision: Option<&str>,
    approver: Option<&str>,
) {
    if let Value::Object(m) = body {
        for (k, v) in [
            ("agent", agent),
            ("op", op),
            ("decision", decision),
            ("approver", approver),
        ] {
            if let Some(v) = v {
                m.insert(k.to_string(), json!(v));
            }
        }
    }
}

#[cfg(test)]
mod tests;
