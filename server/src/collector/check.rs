//! Checking a batch before anything of it is stored: its bounds, its checkpoints' and
//! records' texts, and that it continues the host's chain from a given head
//! (`airlock_audit::ChainVerifier::resume`).
use std::collections::BTreeMap;

use airlock_audit::{
    Anchor, ChainVerifier, Hash, Problem, ReadError, ReadRecord, Record, SignedCheckpoint,
    VerifierKey,
};
use airlock_proto::v1 as pb;

use super::{CollectError, MAX_BATCH_BYTES, MAX_BATCH_CHECKPOINTS, MAX_BATCH_RECORDS};
use crate::store::{BODY_FIELDS, NewAuditRecord, Store, StoreError};

/// The batch's size bounds, checked before anything is parsed.
pub(super) fn check_bounds(batch: &pb::AuditBatch) -> Result<(), CollectError> {
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

/// The batch's checkpoints, parsed (their signatures are checked by the chain verifier).
pub(super) fn parse_notes(texts: &[String]) -> Result<Vec<SignedCheckpoint>, CollectError> {
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
pub(super) async fn stored_hashes(
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
    let read = read_all(&texts);
    let mut records = Vec::with_capacity(texts.len());
    for (index, (text, r)) in texts.into_iter().zip(read).enumerate() {
        // The stored text is what queries return and exports re-verify: it must be the
        // encoding the hash covers, byte for byte (`read_canonical` checks it).
        let r = r.map_err(|e| match e {
            ReadError::Malformed(source) => CollectError::Malformed { index, source },
            ReadError::NotCanonical { seq } => CollectError::NotCanonical { seq },
            ReadError::NoCanonicalForm { seq } => Problem::NotCanonical { seq }.into(),
        })?;
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
    let seqs: Vec<u64> = records.iter().map(|(r, _)| r.seq).collect();
    contiguous(&seqs)?;
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
            if !r.hash_matches() {
                return Err(Problem::Altered { seq: r.seq }.into());
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
        v.record_read(&r)?;
        out.records.push(NewAuditRecord::from_read(r, text));
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
fn contiguous(seqs: &[u64]) -> Result<(), Problem> {
    let Some(first) = seqs.first() else {
        return Ok(());
    };
    for (i, &seq) in seqs.iter().enumerate() {
        let expected = first + i as u64;
        if seq < expected {
            let seen = seqs[..i].contains(&seq);
            return Err(if seen {
                Problem::Repeated { seq }
            } else {
                Problem::Reordered { seq }
            });
        }
        if seq > expected {
            let later = seqs[i..].contains(&expected);
            return Err(if later {
                Problem::Reordered { seq: expected }
            } else {
                Problem::Missing {
                    seq: expected,
                    found: seq,
                }
            });
        }
    }
    Ok(())
}

/// Records read per thread, at the least: below this a thread costs more than it saves.
const READ_PER_THREAD: usize = 256;

/// [`Record::read_canonical`] of every text, in order. Each record's parse, canonical check
/// and hash depend on its text alone, so a large batch is split across the machine's cores;
/// the chain (links, numbering, checkpoints) is then checked in order by the caller.
fn read_all(texts: &[String]) -> Vec<Result<ReadRecord, ReadError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(texts.len() / READ_PER_THREAD)
        .max(1);
    let read = |part: &[String]| -> Vec<_> {
        part.iter()
            .map(|t| Record::read_canonical(t, &BODY_FIELDS))
            .collect()
    };
    if threads == 1 {
        return read(texts);
    }
    let per = texts.len().div_ceil(threads);
    std::thread::scope(|s| {
        let rest: Vec<_> = texts
            .chunks(per)
            .skip(1)
            .map(|part| s.spawn(move || read(part)))
            .collect();
        let mut out = read(&texts[..per]);
        for h in rest {
            out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}
