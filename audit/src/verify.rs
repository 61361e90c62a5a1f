//! Verification: does a sequence of records and checkpoints form one unbroken chain whose
//! heads the host signed, and if not, where does it first go wrong?
//!
//! [`ChainVerifier`] is incremental, for the collector (resume from the last head it stored,
//! feed each arriving batch). [`verify_entries`], [`verify_export`] and [`verify_spool_dir`]
//! run it over a whole input and also tell a deleted record from two swapped ones.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::keys::VerifierKey;
use crate::note::{NoteError, SignedCheckpoint, origin_for};
use crate::read::ReadRecord;
use crate::record::{Anchor, Hash, Record, SCHEMA_VERSION};
use crate::spool::SpoolError;

/// How many recent record hashes are kept to check a checkpoint that arrives after later
/// records (rows read from separate tables); older ones are counted as skipped.
const RECENT: usize = 65_536;

/// One item of an audit stream: a record, or a checkpoint note.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Record(Record),
    Checkpoint(SignedCheckpoint),
}

impl Entry {
    /// The export (JSON Lines) form, without the newline: a record in canonical JSON, a
    /// checkpoint as `{"checkpoint":"<note text>"}`.
    pub fn to_line(&self) -> String {
        match self {
            Entry::Record(r) => {
                let bytes = r
                    .to_canonical()
                    .expect("chained records always have a canonical form");
                String::from_utf8(bytes).expect("canonical JSON is UTF-8")
            }
            Entry::Checkpoint(c) => serde_json::json!({ "checkpoint": c.text() }).to_string(),
        }
    }

    /// Parses one export line.
    pub fn parse_line(line: &str) -> Result<Entry, EntryError> {
        let v: Value = serde_json::from_str(line).map_err(|e| EntryError::Json {
            line: e.line() as u64,
            column: e.column() as u64,
        })?;
        if let Some(text) = v.get("checkpoint") {
            let text = text
                .as_str()
                .filter(|_| v.as_object().is_some_and(|o| o.len() == 1));
            let text = text.ok_or(EntryError::NotAnEntry)?;
            return SignedCheckpoint::parse(text)
                .map(Entry::Checkpoint)
                .map_err(EntryError::Note);
        }
        serde_json::from_value(v)
            .map(Entry::Record)
            .map_err(|_| EntryError::NotAnEntry)
    }
}

/// Why an item of the input is not an entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not JSON (line {line}, column {column} of the item)")]
    Json { line: u64, column: u64 },
    /// JSON, but neither a v1 record (unknown or missing fields) nor a checkpoint line.
    #[error("neither a record nor a checkpoint")]
    NotAnEntry,
    #[error("checkpoint: {0}")]
    Note(NoteError),
    /// A spool frame that is bad before the end of the spool.
    #[error("bad spool frame at byte {offset}")]
    BadFrame { offset: u64 },
    /// The last spool segment ends in an incomplete frame (an interrupted write): the end
    /// of the input, not a problem.
    #[error("torn write at byte {offset} ({bytes} bytes)")]
    TornTail { offset: u64, bytes: u64 },
}

/// The first thing found wrong. Each names the sequence number where the stream stops
/// being trustworthy ([`Problem::first_bad_seq`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Item `index` of the input (0-based) is not an entry.
    #[error("item {index} after seq {after_seq}: {error}")]
    Malformed {
        after_seq: u64,
        index: u64,
        error: EntryError,
    },
    #[error("record {seq} has schema version {v}")]
    UnsupportedVersion { seq: u64, v: u32 },
    #[error("record {seq} is from host {found:?}, not {expected:?}")]
    WrongHost {
        seq: u64,
        expected: String,
        found: String,
    },
    /// The record's content does not match its own hash (changed after it was written).
    #[error("record {seq} was changed")]
    Altered { seq: u64 },
    /// The record holds a value with no canonical form (a float): not written by airlock.
    #[error("record {seq} is not canonical")]
    NotCanonical { seq: u64 },
    /// Record `seq` is absent: the stream goes on with `found`.
    #[error("record {seq} is missing (next is {found})")]
    Missing { seq: u64, found: u64 },
    /// Record `seq` is present, but later than records after it.
    #[error("record {seq} is out of order")]
    Reordered { seq: u64 },
    /// A second record claims `seq`: one of them was inserted.
    #[error("a second record claims seq {seq}")]
    Repeated { seq: u64 },
    /// Record `seq`'s `prev` is not the hash of the record before it (or of the trusted
    /// anchor): a record before it was replaced, or it was inserted.
    #[error("record {seq} does not link to the record before it")]
    BrokenLink { seq: u64 },
    /// A checkpoint whose signature by the trusted key is missing or does not verify.
    #[error("checkpoint at {size}: {error}")]
    BadCheckpoint { size: u64, error: NoteError },
    /// A checkpoint of another log than this host's.
    #[error("checkpoint at {size} has origin {origin:?}")]
    WrongOrigin { size: u64, origin: String },
    /// A validly signed checkpoint names another head than the records have: something
    /// after `last_good_seq` (the last point a checkpoint or anchor confirmed) was rewritten.
    #[error("checkpoint at {checkpoint_seq} names another head; last confirmed {last_good_seq}")]
    HeadMismatch {
        checkpoint_seq: u64,
        last_good_seq: u64,
    },
    /// Two validly signed checkpoints of one size with different heads: the host's key
    /// signed two histories.
    #[error("two checkpoints at {size} name different heads")]
    ConflictingCheckpoints { size: u64 },
    /// The records end at `last_seq` but a checkpoint (or the acknowledged one) says the
    /// chain reached `checkpoint_seq`.
    #[error("records end at {last_seq} but a checkpoint covers {checkpoint_seq}")]
    Truncated { last_seq: u64, checkpoint_seq: u64 },
}

impl Problem {
    /// The first sequence number that cannot be trusted.
    pub fn first_bad_seq(&self) -> u64 {
        match self {
            Problem::Malformed { after_seq, .. } => after_seq + 1,
            Problem::UnsupportedVersion { seq, .. }
            | Problem::WrongHost { seq, .. }
            | Problem::Altered { seq }
            | Problem::NotCanonical { seq }
            | Problem::Missing { seq, .. }
            | Problem::Reordered { seq }
            | Problem::Repeated { seq }
            | Problem::BrokenLink { seq } => *seq,
            Problem::BadCheckpoint { size, .. }
            | Problem::WrongOrigin { size, .. }
            | Problem::ConflictingCheckpoints { size } => *size,
            Problem::HeadMismatch { last_good_seq, .. } => last_good_seq + 1,
            Problem::Truncated { last_seq, .. } => last_seq + 1,
        }
    }
}

/// What was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    /// Checkpoints whose signature verified and whose head matched a record (or anchor).
    pub checkpoints_verified: u64,
    /// Checkpoints that verified but lie before the first record checked (nothing to
    /// compare them with).
    pub checkpoints_skipped: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Whether the first record was tied to a trusted point (seq 1, the given anchor, or a
    /// signed checkpoint right before it). When false, records before `first_seq` could
    /// have been rewritten along with it without this run noticing.
    pub anchored: bool,
    /// Bytes of a torn write at the end of a spool (not a problem: never acknowledged).
    pub torn_tail_bytes: u64,
}

/// The outcome of a run: the counts, the first problem if any, the verified head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub counts: Counts,
    pub problem: Option<Problem>,
    pub head: Option<Anchor>,
}

impl Report {
    /// No problem found.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// What a verifier trusts besides the key.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The host whose chain this is; by default the first record's or checkpoint's.
    pub host: Option<String>,
    /// A head known good (the collector's stored head): records continue after it.
    pub anchor: Option<Anchor>,
    /// The last checkpoint the collector acknowledged: the records must reach it (a
    /// truncated tail is caught) and it anchors the record right after it.
    pub acknowledged: Option<SignedCheckpoint>,
}

/// Failures to read the input at all (as opposed to [`Problem`]s found in it).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The incremental verifier of one host's chain.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    key: VerifierKey,
    host: Option<String>,
    head: Option<Anchor>,
    /// The last seq a checkpoint or the anchor confirmed.
    confirmed: u64,
    /// Verified checkpoint claims by size.
    claims: BTreeMap<u64, Hash>,
    /// The largest claimed size not reached yet (truncation check).
    must_reach: u64,
    recent: VecDeque<Anchor>,
    counts: Counts,
}

impl ChainVerifier {
    /// A verifier of `host`'s chain (or of whichever host the input names first), starting
    /// at whatever seq the input starts at.
    pub fn new(key: VerifierKey, host: Option<&str>) -> ChainVerifier {
        ChainVerifier {
            key,
            host: host.map(str::to_owned),
            head: None,
            confirmed: 0,
            claims: BTreeMap::new(),
            must_reach: 0,
            recent: VecDeque::new(),
            counts: Counts::default(),
        }
    }

    /// A verifier that continues after a head already verified (the collector's).
    pub fn resume(key: VerifierKey, host: &str, anchor: Anchor) -> ChainVerifier {
        let mut v = ChainVerifier::new(key, Some(host));
        v.head = Some(anchor);
        v.confirmed = anchor.seq;
        v.counts.anchored = true;
        v
    }

    /// The last record verified (or the anchor).
    pub fn head(&self) -> Option<Anchor> {
        self.head
    }

    /// What was checked so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Checks the next record.
    pub fn record(&mut self, r: &Record) -> Result<(), Problem> {
        self.check(r.v, r.seq, &r.host, r.prev, r.hash, || {
            match r.compute_hash() {
                Ok(h) if h == r.hash => Ok(()),
                Ok(_) => Err(Problem::Altered { seq: r.seq }),
                Err(_) => Err(Problem::NotCanonical { seq: r.seq }),
            }
        })
    }

    /// [`ChainVerifier::record`] of a record read by [`Record::read_canonical`], which
    /// already hashed it (perhaps on another thread): the same checks in the same order.
    pub fn record_read(&mut self, r: &ReadRecord) -> Result<(), Problem> {
        self.check(r.v, r.seq, &r.host, r.prev, r.hash, || {
            if r.hash_matches() {
                Ok(())
            } else {
                Err(Problem::Altered { seq: r.seq })
            }
        })
    }

    /// Checks record `seq`: its version, its host, its own hash (`hash_ok`), then its place
    /// in the chain (`prev`) and the checkpoints that name it (`hash`).
    fn check(
        &mut self,
        v: u32,
        seq: u64,
        host: &str,
        prev: Hash,
        hash: Hash,
        hash_ok: impl FnOnce() -> Result<(), Problem>,
    ) -> Result<(), Problem> {
        if v != SCHEMA_VERSION {
            return Err(Problem::UnsupportedVersion { seq, v });
        }
        let expected = self.host.get_or_insert_with(|| host.to_owned());
        if host != expected {
            return Err(Problem::WrongHost {
                seq,
                expected: expected.clone(),
                found: host.to_owned(),
            });
        }
        hash_ok()?;
        let head = match self.head {
            Some(h) => h,
            None => self.first_head(seq, prev)?,
        };
        let expected = head.seq + 1;
        if seq > expected {
            return Err(Problem::Missing {
                seq: expected,
                found: seq,
            });
        }
        if seq < expected {
            return Err(Problem::Repeated { seq });
        }
        if prev != head.hash {
            return Err(Problem::BrokenLink { seq });
        }
        let now = Anchor { seq, hash };
        self.head = Some(now);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.counts.records += 1;
        self.counts.first_seq.get_or_insert(seq);
        self.counts.last_seq = Some(seq);
        if let Some(claimed) = self.claims.get(&seq) {
            if *claimed != hash {
                return Err(Problem::HeadMismatch {
                    checkpoint_seq: seq,
                    last_good_seq: self.confirmed,
                });
            }
            self.confirmed = seq;
            self.counts.checkpoints_verified += 1;
        }
        Ok(())
    }

    /// The head before the first record: seq 1 starts at zero, a checkpoint right before it
    /// anchors it, otherwise its own `prev` is taken on trust (and `anchored` stays false).
    fn first_head(&mut self, seq: u64, prev: Hash) -> Result<Anchor, Problem> {
        let before = seq.saturating_sub(1);
        let skipped = self.claims.range(..before).count() as u64;
        self.counts.checkpoints_skipped += skipped;
        let trusted = if seq <= 1 {
            Some(Hash::ZERO)
        } else if let Some(h) = self.claims.get(&before) {
            self.counts.checkpoints_verified += 1;
            Some(*h)
        } else {
            None
        };
        self.counts.anchored = trusted.is_some();
        if let Some(h) = trusted {
            self.confirmed = before;
            if prev != h {
                return Err(Problem::BrokenLink { seq });
            }
        }
        Ok(Anchor {
            seq: before,
            hash: prev,
        })
    }

    /// Checks a checkpoint: its signature now, its head now or when the records reach it.
    pub fn checkpoint(&mut self, cp: &SignedCheckpoint) -> Result<(), Problem> {
        let size = cp.claimed().size;
        let origin = &cp.claimed().origin;
        let host = match &self.host {
            Some(h) => h.clone(),
            None => match origin.strip_prefix("airlock/") {
                Some(h) => {
                    self.host = Some(h.to_owned());
                    h.to_owned()
                }
                None => String::new(),
            },
        };
        if *origin != origin_for(&host) {
            return Err(Problem::WrongOrigin {
                size,
                origin: origin.clone(),
            });
        }
        let c = cp
            .verify(&self.key)
            .map_err(|error| Problem::BadCheckpoint { size, error })?;
        match self.claims.insert(size, c.hash) {
            Some(h) if h != c.hash => return Err(Problem::ConflictingCheckpoints { size }),
            Some(_) => return Ok(()),
            None => {}
        }
        let Some(head) = self.head else {
            // No record yet: checked when the records reach it.
            self.must_reach = self.must_reach.max(size);
            return Ok(());
        };
        let known = if size == head.seq {
            Some(head.hash)
        } else {
            self.recent.iter().find(|a| a.seq == size).map(|a| a.hash)
        };
        match known {
            Some(h) if h == c.hash => {
                self.confirmed = self.confirmed.max(size);
                self.counts.checkpoints_verified += 1;
            }
            Some(_) => {
                return Err(Problem::HeadMismatch {
                    checkpoint_seq: size,
                    last_good_seq: self.confirmed,
                });
            }
            None if size > head.seq => self.must_reach = self.must_reach.max(size),
            None => self.counts.checkpoints_skipped += 1,
        }
        Ok(())
    }

    /// Ends the input: every checkpoint seen must have been reached.
    pub fn finish(&self) -> Result<(), Problem> {
        let last = self.head.map_or(0, |h| h.seq);
        if self.must_reach > last {
            return Err(Problem::Truncated {
                last_seq: last,
                checkpoint_seq: self.must_reach,
            });
        }
        Ok(())
    }
}

/// Verifies a whole input: records and checkpoints in stream order (a spool, an export, or
/// all of a host's checkpoints followed by its records).
pub fn verify_entries<I>(key: &VerifierKey, opts: &VerifyOptions, entries: I) -> Report
where
    I: IntoIterator<Item = Result<Entry, EntryError>>,
{
    let mut v = ChainVerifier::new(key.clone(), opts.host.as_deref());
    if let Some(a) = opts.anchor {
        v.head = Some(a);
        v.confirmed = a.seq;
        v.counts.anchored = true;
    }
    let mut problem = None;
    if let Some(ack) = &opts.acknowledged {
        problem = v.checkpoint(ack).err();
    }
    let mut it = entries.into_iter().enumerate();
    while problem.is_none() {
        let Some((index, item)) = it.next() else {
            break;
        };
        let result = match item {
            Ok(Entry::Record(r)) => v.record(&r),
            Ok(Entry::Checkpoint(c)) => v.checkpoint(&c),
            Err(EntryError::TornTail { bytes, .. }) => {
                v.counts.torn_tail_bytes = bytes;
                break;
            }
            Err(error) => Err(Problem::Malformed {
                after_seq: v.head.map_or(0, |h| h.seq),
                index: index as u64,
                error,
            }),
        };
        problem = result.err();
    }
    // A missing seq that turns up later was moved, not deleted.
    if let Some(Problem::Missing { seq, .. }) = problem {
        let later = it.any(|(_, e)| matches!(e, Ok(Entry::Record(r)) if r.seq == seq));
        if later {
            problem = Some(Problem::Reordered { seq });
        }
    }
    if problem.is_none() {
        problem = v.finish().err();
    }
    Report {
        counts: v.counts.clone(),
        problem,
        head: v.head,
    }
}

/// Verifies an export file (JSON Lines of [`Entry::to_line`]; blank lines are ignored).
pub fn verify_export<R: BufRead>(
    key: &VerifierKey,
    opts: &VerifyOptions,
    reader: R,
) -> Result<Report, VerifyError> {
    let mut entries = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if !line.trim().is_empty() {
            entries.push(Entry::parse_line(&line));
        }
    }
    Ok(verify_entries(key, opts, entries))
}

/// Verifies a spool directory in place (read only; a torn tail is reported in the counts).
pub fn verify_spool_dir(
    key: &VerifierKey,
    opts: &VerifyOptions,
    dir: &Path,
) -> Result<Report, VerifyError> {
    Ok(verify_entries(key, opts, crate::spool::read_dir(dir)?))
}
