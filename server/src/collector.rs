//! The audit collector: stores the hash-chained audit records hosts ship over the link
//! (`AuditBatch`), after checking that they continue the chain the server already has and
//! that the host's signed checkpoints agree with them.
//!
//! ```text
//!  Hello.audit_key ──▶ trust on first use: the first key a host presents is kept (under the
//!                      name of its certificate); another key later → alert, batches refused
//!  AuditBatch ──▶ bounds ─▶ stored head ─▶ verify (airlock_audit::ChainVerifier::resume from
//!                 it; records already stored must be identical) ─▶ one transaction ─▶ AuditAck
//!                 any problem: alert + attempt, nothing stored, AuditAck{stored head, refused}
//! ```
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
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_audit::{
    Anchor, ChainVerifier, Hash, KeyError, NoteError, Problem, Record, SignedCheckpoint,
    VerifierKey,
};
use airlock_proto::v1 as pb;

use crate::broker::{Broker, now_ms};
use crate::error::Fault;
use crate::store::{NewAuditRecord, Pruned, Store, StoreError};

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
}

/// An `AuditAck`.
/// What a collector-only process answers to anything but the audit stream and its queries.
pub const COLLECTOR_ONLY: &str = "this airlock-server runs as an audit collector only (airlock-server collector): requests, decisions and settings are served by airlock-server serve";

fn ack(up_to_seq: u64, refused: String) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::AuditAck(pb::AuditAck {
            up_to_seq,
            refused,
        })),
    }
}

impl HostAudit {
    /// The collector of `host` (the name from its certificate).
    pub fn new(host: &str) -> HostAudit {
        HostAudit {
            host: host.to_string(),
            key: KeyState::Unknown,
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

    /// Handles one batch; returns the `AuditAck` to send.
    pub async fn batch(&mut self, b: &Broker, batch: pb::AuditBatch) -> pb::ServerMessage {
        let first_seq = batch.first_seq;
        if let KeyState::Refused(why) = &self.key {
            // Alerted once, at the Hello; the host retries each batch later.
            let why = why.clone();
            let head = b.store.audit_head(&self.host).await.map_or(0, |h| h.seq);
            return ack(head, why);
        }
        match self.store(b, batch).await {
            Ok(head) => ack(head.seq, String::new()),
            // Not the host's doing: no alert; the host resends later.
            Err((head, CollectError::Store(e))) => {
                tracing::warn!(host = %self.host, first_seq, error = %e, "storing an audit batch failed");
                let f = Fault::Store(e);
                let code = f.code();
                // Through the one mapping: database details are logged, not sent.
                let shown = tonic::Status::from(f).message().to_string();
                let who = format!("host:{}", self.host);
                b.record(&who, "link", "audit", None, code, &shown).await;
                ack(head, shown)
            }
            Err((head, e)) => {
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

    /// Verifies and stores; Err carries the stored head for the refusal's `up_to_seq`.
    async fn store(
        &mut self,
        b: &Broker,
        batch: pb::AuditBatch,
    ) -> Result<Anchor, (u64, CollectError)> {
        let store = &b.store;
        let head = store
            .audit_head(&self.host)
            .await
            .map_err(|e| (0, e.into()))?;
        let fail = |e: CollectError| (head.seq, e);
        check_bounds(&batch).map_err(fail)?;
        let key = self.key(b).await.map_err(fail)?;
        let notes = parse_notes(&batch.checkpoints).map_err(fail)?;
        let stored = stored_hashes(store, &self.host, head, &batch, &notes)
            .await
            .map_err(|e| fail(e.into()))?;
        let host = self.host.clone();
        let verified = tokio::task::spawn_blocking(move || {
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
            Err(_) => fail(CollectError::ShuttingDown),
        })?
        .map_err(fail)?;
        if verified.records.is_empty() && verified.checkpoints.is_empty() {
            return Ok(head);
        }
        store
            .store_audit_batch(
                &self.host,
                head,
                &verified.records,
                &verified.checkpoints,
                now_ms(),
            )
            .await
            .map_err(|e| fail(e.into()))
    }
}

/// The batch's size bounds, checked before anything is parsed.
fn check_bounds(batch: &pb::AuditBatch) -> Result<(), CollectError> {
    if batch.records.len() > MAX_BATCH_RECORDS {
        return Err(CollectError::TooManyRecords {
            records: batch.records.len(),
        });
    }
    if batch.checkpoints.len() > MAX_BATCH_CHECKPOINTS {
        return Err(CollectError::TooManyCheckpoints {
            checkpoints: batch.checkpoints.len(),
        });
    }
    let bytes: usize = batch.records.iter().map(String::len).sum::<usize>()
        + batch.checkpoints.iter().map(String::len).sum::<usize>();
    if bytes > MAX_BATCH_BYTES {
        return Err(CollectError::TooManyBytes { bytes });
    }
    Ok(())
}

fn parse_notes(texts: &[String]) -> Result<Vec<SignedCheckpoint>, CollectError> {
    texts
        .iter()
        .enumerate()
        .map(|(index, t)| {
            SignedCheckpoint::parse(t).map_err(|source| CollectError::BadNote { index, source })
        })
        .collect()
}

/// The stored hashes the batch's duplicates and its checkpoints over stored records are
/// compared with.
async fn stored_hashes(
    store: &Store,
    host: &str,
    head: Anchor,
    batch: &pb::AuditBatch,
    notes: &[SignedCheckpoint],
) -> Result<BTreeMap<u64, Hash>, StoreError> {
    let mut out = BTreeMap::new();
    if !batch.records.is_empty() && batch.first_seq <= head.seq {
        let last = batch
            .first_seq
            .saturating_add(batch.records.len() as u64 - 1);
        out = store
            .audit_hashes(host, batch.first_seq, last.min(head.seq))
            .await?;
    }
    for n in notes {
        let size = n.claimed().size;
        if size < head.seq && !out.contains_key(&size) {
            out.extend(store.audit_hashes(host, size, size).await?);
        }
    }
    out.insert(head.seq, head.hash);
    Ok(out)
}

/// What a batch adds once verified.
#[derive(Debug, Default)]
pub struct Verified {
    /// Records after the stored head, in order.
    pub records: Vec<NewAuditRecord>,
    /// Checkpoints `(size, note)` that verified against a record.
    pub checkpoints: Vec<(u64, String)>,
}

/// Verifies a batch of `host`'s chain against the stored `head` with `key`. `stored`: hashes
/// of stored records (those the batch repeats and those its checkpoints name, and the head).
pub fn verify(
    host: &str,
    key: &VerifierKey,
    head: Anchor,
    first_seq: u64,
    texts: Vec<String>,
    notes: Vec<SignedCheckpoint>,
    stored: &BTreeMap<u64, Hash>,
) -> Result<Verified, CollectError> {
    let mut records = Vec::with_capacity(texts.len());
    for (index, text) in texts.into_iter().enumerate() {
        let r: Record = serde_json::from_str(&text)
            .map_err(|source| CollectError::Malformed { index, source })?;
        // The stored text is what queries return and exports re-verify: it must be the
        // encoding the hash covers, byte for byte.
        match r.to_canonical() {
            Ok(c) if c == text.as_bytes() => {}
            Ok(_) => return Err(CollectError::NotCanonical { seq: r.seq }),
            Err(_) => return Err(Problem::NotCanonical { seq: r.seq }.into()),
        }
        records.push((r, text));
    }
    if let Some((r, _)) = records.first()
        && r.seq != first_seq
    {
        return Err(CollectError::FirstSeq {
            first_seq,
            seq: r.seq,
        });
    }
    contiguous(&records)?;
    let mut v = ChainVerifier::resume(key.clone(), host, head);
    let mut out = Verified::default();
    for n in &notes {
        v.checkpoint(n)?;
        let size = n.claimed().size;
        if size <= head.seq {
            match stored.get(&size) {
                Some(h) if *h != n.claimed().hash => {
                    return Err(CollectError::CheckpointDisagrees { size });
                }
                Some(_) => out.checkpoints.push((size, n.text().to_string())),
                // Over a record retention deleted: its signature verified, nothing to
                // compare it with, not kept.
                None => {}
            }
        }
    }
    for (r, text) in records {
        if r.seq <= head.seq {
            // A record the collector has: skipped when it is the same record.
            match r.compute_hash() {
                Ok(h) if h == r.hash => {}
                _ => return Err(Problem::Altered { seq: r.seq }.into()),
            }
            if r.host != host {
                return Err(Problem::WrongHost {
                    seq: r.seq,
                    expected: host.to_string(),
                    found: r.host,
                }
                .into());
            }
            if stored.get(&r.seq).is_some_and(|h| *h != r.hash) {
                return Err(Problem::Altered { seq: r.seq }.into());
            }
            continue;
        }
        v.record(&r)?;
        out.records.push(NewAuditRecord::new(&r, text));
    }
    v.finish()?;
    for n in &notes {
        let size = n.claimed().size;
        if size > head.seq {
            out.checkpoints.push((size, n.text().to_string()));
        }
    }
    Ok(out)
}

/// The batch's records are numbered one after another; names the first that is not: one
/// that belongs later or earlier in the batch is out of order, one whose number was seen
/// already is repeated, and a number that never comes is missing.
fn contiguous(records: &[(Record, String)]) -> Result<(), Problem> {
    let Some((first, _)) = records.first() else {
        return Ok(());
    };
    for (i, (r, _)) in records.iter().enumerate() {
        let expected = first.seq + i as u64;
        if r.seq < expected {
            let seen = records[..i].iter().any(|(x, _)| x.seq == r.seq);
            return Err(if seen {
                Problem::Repeated { seq: r.seq }
            } else {
                Problem::Reordered { seq: r.seq }
            });
        }
        if r.seq > expected {
            let later = records[i..].iter().any(|(x, _)| x.seq == expected);
            return Err(if later {
                Problem::Reordered { seq: expected }
            } else {
                Problem::Missing {
                    seq: expected,
                    found: r.seq,
                }
            });
        }
    }
    Ok(())
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
