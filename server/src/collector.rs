//! The audit collector: stores the hash-chained audit records hosts ship over the link
//! (`AuditBatch`), after checking that they continue the chain the server already has and
//! that the host's signed checkpoints agree with them.
//!
//! ```text
//!  Hello.audit_key ──▶ trust on first use: the first key a host presents is kept (under the
//!                      name of its certificate); another key later → alert, batches refused
//!  AuditBatch ──▶ bounds ─▶ stored head ─▶ verify (airlock_audit::ChainVerifier::resume from
//!                 it; records already stored must be identical) ─▶ one transaction, run by a
//!                 task of its own ─▶ AuditAck once it committed
//!                 any problem: alert + attempt, nothing stored, AuditAck{stored head, refused}
//! ```
//!
//! Each link's audit stream is handled by a task of its own beside the link's session
//! (`collector/pipe.rs`), so the session goes on reading and delivering decisions while a batch
//! waits for the database.
//!
//! Batches are pipelined: a host may send the next batch before the previous one's
//! acknowledgement. While a batch commits, the next one is read and verified against the
//! last record of the one committing (it continues that one or is handled after it
//! committed); it is stored only once that commit succeeded, in the next transaction.
//! Acknowledgements go out in batch order, each only after its own commit (durable: SQLite
//! `synchronous = FULL`, PostgreSQL `synchronous_commit` on). A batch that starts right after
//! a refused (or failed) one, beyond the stored head, was sent before the host heard of the
//! refusal: it is refused without an alert, and the host resends from the stored head.
//!
//! A resend after a lost acknowledgement is the common duplicate: records at or below the
//! stored head are compared with what is stored (by hash, the record itself re-hashed) and
//! skipped when identical; those retention deleted are skipped unchecked. Checkpoints are
//! checked with the host's key: one over a stored record against that record's hash, one
//! over records of the batch when the records reach it (a checkpoint beyond the batch's last
//! record is refused: the proto sends them "within or before" the batch).
//!
//! The host's chain must be named after its enrolled name (records' `host`, checkpoints'
//! origin `airlock/<host>`): a host cannot file records under another's name.
mod check;
mod pipe;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use airlock_audit::{Anchor, KeyError, NoteError, Problem, VerifierKey};
use airlock_proto::v1 as pb;

use crate::broker::{Broker, now_ms};
use crate::error::Fault;
use crate::store::{AuditFollow, AuditTurn, Pruned, Store, StoreError};

pub use check::{Verified, verify};
pub use pipe::{AuditInput, AuditPipe};

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 4096;
/// Most bytes of records and checkpoints in one batch.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Most checkpoints in one batch.
pub const MAX_BATCH_CHECKPOINTS: usize = 256;
/// The host link's largest message: a full batch and its protobuf framing.
pub const MAX_LINK_MESSAGE: usize = MAX_BATCH_BYTES + (64 << 10);
/// How often retention runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why a batch (or a Hello's key) was refused. Its text is the `AuditAck.refused` the host
/// gets and the alert the collector records.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("batch of {records} records: at most {MAX_BATCH_RECORDS} per batch")]
    TooManyRecords { records: usize },
    #[error("batch of {bytes} bytes: at most {MAX_BATCH_BYTES} per batch")]
    TooManyBytes { bytes: usize },
    #[error("batch of {checkpoints} checkpoints: at most {MAX_BATCH_CHECKPOINTS} per batch")]
    TooManyCheckpoints { checkpoints: usize },
    /// A batch before any key: the host's Hello had none and none is stored.
    #[error("no audit key for this host: send audit_key in Hello")]
    NoKey,
    #[error("audit_key in Hello: {0}")]
    BadKey(#[source] KeyError),
    #[error("a stored audit key is unreadable: {0}")]
    StoredKey(#[source] KeyError),
    /// Trust on first use: the host presented another key than the one kept.
    #[error(
        "audit key {presented} is not the key {trusted} this host first presented (at {since} ms); \
         audit batches are refused"
    )]
    KeyChanged {
        presented: String,
        trusted: String,
        since: u64,
    },
    #[error("first_seq is {first_seq} but the first record is {seq}")]
    FirstSeq { first_seq: u64, seq: u64 },
    #[error("record {index} of the batch is not a v1 record: {source}")]
    Malformed {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    /// The text is a record but not in the canonical encoding the chain hashes.
    #[error("record {seq} is not sent in its canonical encoding")]
    NotCanonical { seq: u64 },
    #[error("checkpoint {index} of the batch: {source}")]
    BadNote {
        index: usize,
        #[source]
        source: NoteError,
    },
    /// A validly signed checkpoint over a stored record names another hash than it has.
    #[error("checkpoint at {size} names another head than the record stored for {size}")]
    CheckpointDisagrees { size: u64 },
    /// The chain is broken (changed, missing, reordered, inserted record; bad checkpoint).
    #[error("{0}")]
    Chain(#[from] Problem),
    /// Sent before the host heard that an earlier batch was refused or not stored: it does not
    /// continue the stored chain. Not an alert; the host resends from the stored head.
    #[error(
        "batch from {first_seq} does not continue the stored head {head}: a batch before it was not stored; resend"
    )]
    Behind { first_seq: u64, head: u64 },
    /// The verification task was cancelled (the runtime is stopping).
    #[error("airlock-server is shutting down; resend")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one host's link session knows about its audit key.
#[derive(Debug)]
enum KeyState {
    /// Not decided yet (no key in Hello, or the store failed): read the stored one at the
    /// next batch.
    Unknown,
    Trusted(VerifierKey),
    /// The Hello's key was refused (changed, unreadable); every batch is refused with this.
    Refused(String),
}

/// The collector's side of one host's link session.
#[derive(Debug)]
pub struct HostAudit {
    host: String,
    key: KeyState,
    /// The verified batches being stored, oldest first: at most [`MAX_STORING`], each
    /// continuing the one before it.
    storing: VecDeque<Storing>,
    /// After a batch of this session was refused or not stored: the seq right after its last
    /// record, where a batch the host sent behind it (before hearing of the refusal) starts.
    /// Such a batch is refused as [`CollectError::Behind`], without an alert.
    behind: Option<u64>,
}

/// Most batches of one host storing at once: one committing while the next copies its
/// records beside it (PostgreSQL; on SQLite the next one waits, see `store::AuditTurn`).
/// More would only queue at the database: a host has at most two batches in flight.
const MAX_STORING: usize = 2;

/// A verified batch committing in a task of its own.
#[derive(Debug)]
struct Storing {
    first_seq: u64,
    /// The head it was verified against: the stored head, or the last record of the batch
    /// stored ahead of it (`ahead`).
    from: Anchor,
    /// Started while the batch before it was still storing: `from` is stored only if that
    /// one committed.
    ahead: bool,
    /// What the store of the next batch follows.
    follow: AuditFollow,
    /// Its last record: the head once it is stored, which the next batch is verified against.
    tip: Anchor,
    task: tokio::task::JoinHandle<Result<Anchor, StoreError>>,
}

/// How the store of a batch ended, from [`HostAudit::stored`], for [`HostAudit::acknowledge`].
#[derive(Debug)]
pub struct StoreOutcome {
    storing: Storing,
    result: Result<Anchor, CollectError>,
}

/// What a collector-only process answers to anything but the audit stream and its queries.
pub const COLLECTOR_ONLY: &str = "this airlock-server runs as an audit collector only (airlock-server collector): requests, decisions and settings are served by airlock-server serve";

/// An `AuditAck`.
fn ack(up_to_seq: u64, refused: String) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::AuditAck(pb::AuditAck {
            up_to_seq,
            refused,
        })),
    }
}

/// A batch's verification or store result: `Ok(Some(head))` when nothing was left to store
/// (acknowledged at once), `Ok(None)` when its store started (acknowledged when it ends),
/// `Err` with the stored head for the refusal's `up_to_seq`.
type Handled = Result<Option<Anchor>, (u64, CollectError)>;

impl HostAudit {
    /// The collector of `host` (the name from its certificate).
    pub fn new(host: &str) -> HostAudit {
        HostAudit {
            host: host.to_string(),
            key: KeyState::Unknown,
            storing: VecDeque::new(),
            behind: None,
        }
    }

    /// The host's Hello: keeps `audit_key` if it is the host's first, checks it against the
    /// kept one otherwise. Empty: the host ships no records (a batch then uses the kept key).
    pub async fn hello(&mut self, b: &Broker, audit_key: &str) {
        if audit_key.is_empty() {
            return;
        }
        self.key = match self.trust(b, audit_key).await {
            Ok(k) => KeyState::Trusted(k),
            Err(CollectError::Store(e)) => {
                tracing::warn!(host = %self.host, error = %e, "reading the audit key failed");
                KeyState::Unknown
            }
            Err(e) => {
                let why = e.to_string();
                self.alert(b, &e, &why).await;
                KeyState::Refused(why)
            }
        };
    }

    async fn trust(&self, b: &Broker, text: &str) -> Result<VerifierKey, CollectError> {
        let presented: VerifierKey = text.parse().map_err(CollectError::BadKey)?;
        let kept = b
            .store
            .set_audit_key_if_absent(&self.host, &presented.to_string(), now_ms())
            .await?;
        let trusted: VerifierKey = kept.key.parse().map_err(CollectError::StoredKey)?;
        if trusted != presented {
            return Err(CollectError::KeyChanged {
                presented: presented.to_string(),
                trusted: kept.key,
                since: kept.first_seen_unix_ms,
            });
        }
        Ok(trusted)
    }

    /// The key batches are verified with.
    async fn key(&mut self, b: &Broker) -> Result<VerifierKey, CollectError> {
        match &self.key {
            KeyState::Trusted(k) => Ok(k.clone()),
            // `batch` answers with the reason before asking.
            KeyState::Refused(_) => Err(CollectError::NoKey),
            KeyState::Unknown => {
                let kept = b
                    .store
                    .audit_key(&self.host)
                    .await?
                    .ok_or(CollectError::NoKey)?;
                let k: VerifierKey = kept.key.parse().map_err(CollectError::StoredKey)?;
                self.key = KeyState::Trusted(k.clone());
                Ok(k)
            }
        }
    }

    /// Handles one batch; returns the `AuditAck`s to send now, in order: the one of the batch
    /// that was being stored when this one had to wait for it, and this batch's own when it
    /// is refused or has nothing to store. A batch whose store starts is acknowledged through
    /// [`HostAudit::stored`] and [`HostAudit::acknowledge`].
    pub async fn batch(&mut self, b: &Broker, batch: pb::AuditBatch) -> Vec<pb::ServerMessage> {
        let first_seq = batch.first_seq;
        let end = after_last(&batch);
        let mut out = Vec::new();
        if let KeyState::Refused(why) = &self.key {
            // Alerted once, at the Hello; the host retries each batch later.
            let why = why.clone();
            self.finish(b, &mut out).await;
            let head = b.store.audit_head(&self.host).await.map_or(0, |h| h.seq);
            out.push(ack(head, why));
            return out;
        }
        let handled = match self.storing.back().map(|s| s.tip) {
            Some(tip) if continues(&batch, tip) => {
                self.after_storing(b, batch, tip, &mut out).await
            }
            _ => {
                self.finish(b, &mut out).await;
                self.after_stored(b, batch).await
            }
        };
        match handled {
            Ok(Some(head)) => out.push(ack(head.seq, String::new())),
            Ok(None) => {}
            Err((head, e)) => out.push(self.refuse(b, first_seq, end, head, e).await),
        }
        out
    }

    /// Whether a batch is being stored (then [`HostAudit::stored`] ends).
    pub fn storing(&self) -> bool {
        !self.storing.is_empty()
    }

    /// Waits until the oldest batch being stored is committed or failed (forever when none
    /// is). Cancel-safe: a link polls it beside its other work, then passes the outcome to
    /// [`HostAudit::acknowledge`].
    pub async fn stored(&mut self) -> StoreOutcome {
        let result = match self.storing.front_mut() {
            Some(s) => joined((&mut s.task).await),
            None => return std::future::pending().await,
        };
        // No await from here on: the batch leaves with its outcome or not at all.
        match self.storing.pop_front() {
            Some(storing) => StoreOutcome { storing, result },
            None => std::future::pending().await,
        }
    }

    /// The `AuditAck` of the batch whose store ended with `outcome`.
    pub async fn acknowledge(&mut self, b: &Broker, outcome: StoreOutcome) -> pb::ServerMessage {
        self.answer(b, &outcome.storing, outcome.result).await
    }

    /// Waits for the oldest batch being stored, if any, and returns its `AuditAck`.
    async fn finish_one(&mut self, b: &Broker) -> Option<pb::ServerMessage> {
        let mut s = self.storing.pop_front()?;
        let outcome = joined((&mut s.task).await);
        Some(self.answer(b, &s, outcome).await)
    }

    /// Waits for every batch being stored, adding their `AuditAck`s to `out` in order.
    async fn finish(&mut self, b: &Broker, out: &mut Vec<pb::ServerMessage>) {
        while let Some(m) = self.finish_one(b).await {
            out.push(m);
        }
    }

    async fn answer(
        &mut self,
        b: &Broker,
        s: &Storing,
        outcome: Result<Anchor, CollectError>,
    ) -> pb::ServerMessage {
        match outcome {
            Ok(head) => ack(head.seq, String::new()),
            Err(e) => {
                // Where a batch sent behind this one starts (none behind one without records:
                // the next batch still continues the stored head).
                let end = (s.tip.seq > s.from.seq).then_some(s.tip.seq + 1);
                // The refusal names the stored head, which the host keeps everything after:
                // `from` is it only for a batch with none ahead (the one ahead may have
                // failed). An unreadable head names 0, which takes nothing from the host.
                let head = if s.ahead {
                    b.store.audit_head(&self.host).await.map_or(0, |h| h.seq)
                } else {
                    s.from.seq
                };
                let e = match e {
                    // Sent and stored behind a batch that failed: not an alert.
                    CollectError::Store(StoreError::AuditAheadFailed { .. }) => {
                        CollectError::Behind {
                            first_seq: s.first_seq,
                            head,
                        }
                    }
                    e => e,
                };
                self.refuse(b, s.first_seq, end, head, e).await
            }
        }
    }

    /// The refusal of the batch from `first_seq` whose records end before `end` (the stored
    /// head is `head`): an alert and the attempt for problems of the host's chain; the
    /// attempt only for the store's failures; neither for a batch behind a refused one.
    async fn refuse(
        &mut self,
        b: &Broker,
        first_seq: u64,
        end: Option<u64>,
        head: u64,
        e: CollectError,
    ) -> pb::ServerMessage {
        self.behind = end;
        match e {
            e @ CollectError::Behind { .. } => {
                tracing::debug!(host = %self.host, error = %e, "audit batch sent behind a refused one");
                ack(head, e.to_string())
            }
            // Not the host's doing: no alert; the host resends later.
            CollectError::Store(e) => {
                tracing::warn!(host = %self.host, first_seq, error = %e, "storing an audit batch failed");
                let f = Fault::Store(e);
                let code = f.code();
                // Through the one mapping: database details are logged, not sent.
                let shown = tonic::Status::from(f).message().to_string();
                let who = format!("host:{}", self.host);
                b.record(&who, "link", "audit", None, code, &shown).await;
                ack(head, shown)
            }
            e => {
                let why = e.to_string();
                self.alert(b, &e, &format!("batch from {first_seq}: {why}"))
                    .await;
                ack(head, why)
            }
        }
    }

    /// Records an alert and the refused attempt.
    async fn alert(&self, b: &Broker, e: &CollectError, message: &str) {
        if let Err(s) = b.store.add_audit_alert(&self.host, message, now_ms()).await {
            tracing::error!(host = %self.host, error = %s, "cannot record an audit alert");
        }
        let code = crate::error::collect_code(e);
        b.record(
            &format!("host:{}", self.host),
            "link",
            "audit",
            None,
            code,
            message,
        )
        .await;
    }

    /// A batch with nothing being stored before it: verified against the stored head.
    async fn after_stored(&mut self, b: &Broker, batch: pb::AuditBatch) -> Handled {
        let store = &b.store;
        let head = store
            .audit_head(&self.host)
            .await
            .map_err(|e| (0, e.into()))?;
        let fail = |e: CollectError| (head.seq, e);
        check::check_bounds(&batch).map_err(fail)?;
        let key = self.key(b).await.map_err(fail)?;
        let notes = check::parse_notes(&batch.checkpoints).map_err(fail)?;
        // Right behind a refused batch and not continuing the stored head: sent before the
        // host heard of the refusal. Anything else is verified (a gap is alerted).
        if self.behind.take() == Some(batch.first_seq) && batch.first_seq > head.seq + 1 {
            return Err(fail(CollectError::Behind {
                first_seq: batch.first_seq,
                head: head.seq,
            }));
        }
        let stored = check::stored_hashes(store, &self.host, head, &batch, &notes)
            .await
            .map_err(|e| fail(e.into()))?;
        let verified = self
            .verify(key, head, batch, notes, stored)
            .await
            .map_err(fail)?;
        if verified.records.is_empty() && verified.checkpoints.is_empty() {
            return Ok(Some(head));
        }
        self.start_store(b, head, verified);
        Ok(None)
    }

    /// A batch that continues the one being stored (see [`continues`]): verified against that
    /// one's last record while it commits, stored after it.
    async fn after_storing(
        &mut self,
        b: &Broker,
        batch: pb::AuditBatch,
        tip: Anchor,
        out: &mut Vec<pb::ServerMessage>,
    ) -> Handled {
        let first_seq = batch.first_seq;
        let checked = match (check::check_bounds(&batch), self.key(b).await) {
            (Ok(()), Ok(key)) => check::parse_notes(&batch.checkpoints).map(|n| (key, n)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let verified = match checked {
            Ok((key, notes)) => {
                // The only stored record a continuing batch can refer to.
                let stored = [(tip.seq, tip.hash)].into();
                self.verify(key, tip, batch, notes, stored).await
            }
            Err(e) => Err(e),
        };
        if verified.is_err() {
            // Refused: the ones storing are answered first, and their outcome decides the
            // head this refusal names (`tip` only once they all committed).
            self.finish(b, out).await;
        } else {
            // Its store starts behind the one before it, unless as many as can store are.
            while self.storing.len() >= MAX_STORING {
                out.extend(self.finish_one(b).await);
            }
        }
        if self.behind.take() == Some(first_seq) {
            // The batch before was not stored: this one does not continue the stored head.
            let head = b.store.audit_head(&self.host).await.map_or(0, |h| h.seq);
            return Err((head, CollectError::Behind { first_seq, head }));
        }
        let verified = verified.map_err(|e| (tip.seq, e))?;
        self.start_store(b, tip, verified);
        Ok(None)
    }

    /// Verifies a batch against `head` off the async threads.
    async fn verify(
        &self,
        key: VerifierKey,
        head: Anchor,
        batch: pb::AuditBatch,
        notes: Vec<airlock_audit::SignedCheckpoint>,
        stored: std::collections::BTreeMap<u64, airlock_audit::Hash>,
    ) -> Result<Verified, CollectError> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || {
            verify(
                &host,
                &key,
                head,
                batch.first_seq,
                batch.records,
                notes,
                &stored,
            )
        })
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(_) => CollectError::ShuttingDown,
        })?
    }

    /// Starts storing `verified` (which continues `head`) in a task of its own.
    fn start_store(&mut self, b: &Broker, head: Anchor, verified: Verified) {
        let tip = verified.records.last().map_or(head, |r| Anchor {
            seq: r.seq,
            hash: r.hash,
        });
        let first_seq = verified.records.first().map_or(0, |r| r.seq);
        let store = b.store.clone();
        let host = self.host.clone();
        let ahead = self.storing.back().map(|s| s.follow.clone());
        let (turn, follow) = match &ahead {
            Some(f) => AuditTurn::after(f),
            None => AuditTurn::first(),
        };
        let task = tokio::spawn(async move {
            store
                .store_audit_batch_in_turn(
                    &host,
                    head,
                    &verified.records,
                    &verified.checkpoints,
                    now_ms(),
                    turn,
                )
                .await
        });
        self.storing.push_back(Storing {
            first_seq,
            from: head,
            ahead: ahead.is_some(),
            follow,
            tip,
            task,
        });
    }
}

/// The seq right after the last record of `batch` (None without records).
fn after_last(batch: &pb::AuditBatch) -> Option<u64> {
    let n = u64::try_from(batch.records.len()).ok()?;
    (n > 0).then(|| batch.first_seq.saturating_add(n))
}

/// Whether `batch` can be verified while the batch ending at `tip` is stored: its records
/// start right after `tip`, and none of its checkpoints names an earlier record (whose hash
/// would have to be read from the store).
fn continues(batch: &pb::AuditBatch, tip: Anchor) -> bool {
    !batch.records.is_empty()
        && batch.first_seq == tip.seq + 1
        && batch.checkpoints.iter().all(|t| {
            airlock_audit::SignedCheckpoint::parse(t).is_ok_and(|n| n.claimed().size >= tip.seq)
        })
}

/// A store task's result.
fn joined(
    r: Result<Result<Anchor, StoreError>, tokio::task::JoinError>,
) -> Result<Anchor, CollectError> {
    match r {
        Ok(r) => r.map_err(CollectError::from),
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(_) => Err(CollectError::ShuttingDown),
        },
    }
}

/// Deletes what the collector stored longer than `retention` before `now`.
pub async fn prune(store: &Store, retention: Duration, now: u64) -> Result<Pruned, StoreError> {
    let before = now.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    store.prune_audit(before).await
}

/// Runs [`prune`] every [`PRUNE_EVERY`] with the config's `audit.retention` (read at each
/// run, so a reload applies; none: nothing is deleted). Ends when the broker is dropped.
pub fn spawn_pruner(b: &Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(b);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            let Some(retention) = b.config().audit.retention else {
                continue;
            };
            match prune(&b.store, retention, now_ms()).await {
                Ok(p) if p == Pruned::default() => {}
                Ok(p) => tracing::info!(
                    records = p.records,
                    checkpoints = p.checkpoints,
                    alerts = p.alerts,
                    "audit retention"
                ),
                Err(e) => tracing::warn!(error = %e, "audit retention failed"),
            }
        }
    })
}
