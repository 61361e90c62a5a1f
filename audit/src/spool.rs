//! The host's durable, bounded spool of chained records and checkpoints: the one place the
//! audit stream lives until the collector acknowledges it. See the crate documentation for
//! the on-disk layout, the framing and what happens when it is full.

mod frame;
mod recover;
mod state;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

pub use recover::read_dir;
pub use state::Dropped;

use crate::chain::{Chain, ChainError};
use crate::keys::SigningKey;
use crate::note::{Checkpoint, CheckpointPolicy, CheckpointSchedule, SignedCheckpoint};
use crate::record::{Anchor, Draft, Kind, Priority, Record};
use crate::verify::Entry;
use frame::Stop;

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process has the spool open.
    #[error("{}: the spool is in use by another process", path.display())]
    Locked { path: PathBuf },
    #[error("{}: unreadable spool state", path.display())]
    BadState { path: PathBuf },
    /// A must-write record (or a checkpoint) does not fit: the caller must fail closed.
    #[error("the audit spool is full: {needed} bytes needed, {available} free of the limit")]
    Full { needed: u64, available: u64 },
    /// A frame before the tail is bad, or complete frames do not form one chain: not what a
    /// torn write leaves, so the spool is not repaired silently.
    #[error("{}: damaged at byte {offset}: {why}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: Damage,
    },
    /// The spool's records belong to another host.
    #[error("the spool holds records of host {found:?}, not {expected:?}")]
    HostMismatch { expected: String, found: String },
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// An acknowledgement beyond the last record written.
    #[error("cannot acknowledge seq {acked}: the last record is {head}")]
    AckBeyondHead { acked: u64, head: u64 },
    /// Records before `first_available` were acknowledged and deleted.
    #[error("seq {from} is gone; the spool starts at {first_available}")]
    Gone { from: u64, first_available: u64 },
    /// A checkpoint was asked for but the spool has no signing key.
    #[error("the spool has no checkpoint signing key")]
    NoSigningKey,
    /// A write failed and the torn bytes could not be cut off; reopen the spool (recovery
    /// cuts them).
    #[error("an earlier write failed and could not be undone; reopen the spool")]
    Poisoned,
}

/// What is wrong in a damaged spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("bad frame in a segment that is not the last")]
    BadFrame,
    #[error("a frame whose checksum holds does not decode")]
    BadPayload,
    #[error("record {seq} does not continue the chain")]
    BrokenChain { seq: u64 },
    #[error("record {seq}'s hash does not match its content")]
    BadHash { seq: u64 },
}

/// Sizes and checkpoint schedule of a spool.
#[derive(Clone, Copy, Debug)]
pub struct SpoolConfig {
    /// Upper bound of all segment files together.
    pub max_bytes: u64,
    /// A segment is closed once it reaches this size; acknowledgements delete whole closed
    /// segments, so this is also the granularity of freeing space.
    pub segment_bytes: u64,
    pub checkpoints: CheckpointPolicy,
}

impl Default for SpoolConfig {
    /// 64 MiB in 1 MiB segments, the default checkpoint policy.
    fn default() -> SpoolConfig {
        SpoolConfig {
            max_bytes: 64 << 20,
            segment_bytes: 1 << 20,
            checkpoints: CheckpointPolicy::default(),
        }
    }
}

/// What one append did.
// Returned once per append and consumed right away, never stored in bulk: boxing the
// records would only add allocations to the write path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Appended {
    /// Written and synced; `notice` is the `audit.dropped` record written right before it.
    Written {
        notice: Option<Record>,
        record: Record,
    },
    /// An audit-only record that did not fit; `pending` counts the drops not yet reported.
    Dropped { pending: u64 },
}

/// What reopening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records found on disk.
    pub records: u64,
    /// Bytes cut from the last segment (a torn write) and the segment.
    pub torn_bytes: u64,
    pub torn_segment: Option<PathBuf>,
    /// Segments an interrupted acknowledgement had left behind, now deleted.
    pub finished_ack_deletions: usize,
}

/// Records (and the checkpoints among them) read for shipping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub records: Vec<Record>,
    pub checkpoints: Vec<SignedCheckpoint>,
}

impl Batch {
    /// First and last seq of the records, if any.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.records.first()?.seq, self.records.last()?.seq))
    }
}

/// What an acknowledgement freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckOutcome {
    pub segments_deleted: usize,
    pub bytes_freed: u64,
}

struct Segment {
    path: PathBuf,
    len: u64,
    first: Option<u64>,
    last: Option<Anchor>,
}

/// The spool. One writer per directory (locked); every method that writes syncs before it
/// returns.
pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    chain: Chain,
    signer: Option<SigningKey>,
    schedule: CheckpointSchedule,
    /// The last checkpoint this process wrote: shipped on its own when it covers records
    /// already acknowledged (a host gone quiet), see [`Spool::latest_checkpoint`].
    latest: Option<SignedCheckpoint>,
    segments: Vec<Segment>,
    active: std::fs::File,
    total: u64,
    state: state::State,
    poisoned: bool,
    recovery: Recovery,
    _lock: state::Lock,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, SpoolError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` for `host`, recovering from a crash:
    /// a torn frame at the end of the last segment is cut off, everything before it is kept
    /// and the chain continues from the last complete record. `signer` signs checkpoints
    /// (none: no checkpoints); `now_ms` starts the checkpoint timer.
    pub fn open(
        dir: &Path,
        host: &str,
        cfg: SpoolConfig,
        signer: Option<SigningKey>,
        now_ms: u64,
    ) -> Result<Spool, SpoolError> {
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        let lock = state::lock(dir)?;
        let st = state::load(dir)?;
        let recover::Scanned {
            mut segments,
            head,
            last_checkpoint,
            mut recovery,
        } = recover::scan(dir, host, &st)?;
        // Segments wholly acknowledged whose deletion a crash interrupted.
        while segments.len() > 1 && segments[0].last.is_none_or(|l| l.seq <= st.base.seq) {
            let s = segments.remove(0);
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            recovery.finished_ack_deletions += 1;
        }
        if recovery.finished_ack_deletions > 0 {
            state::sync_dir(dir)?;
        }
        let head = head.unwrap_or(st.base);
        if segments.is_empty() {
            let path = dir.join(segment_name(head.seq + 1));
            open_append(&path)?;
            state::sync_dir(dir)?;
            segments.push(Segment {
                path,
                len: 0,
                first: None,
                last: None,
            });
        }
        let active = open_append(&segments.last().expect("one segment at least").path)?;
        let total = segments.iter().map(|s| s.len).sum();
        Ok(Spool {
            dir: dir.to_path_buf(),
            schedule: CheckpointSchedule::new(cfg.checkpoints, last_checkpoint, now_ms),
            cfg,
            latest: None,
            chain: Chain::resume(host, head)?,
            signer,
            segments,
            active,
            total,
            state: st,
            poisoned: false,
            recovery,
            _lock: lock,
        })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last record written (seq 0 before the first).
    pub fn head(&self) -> Anchor {
        self.chain.head()
    }

    /// The highest acknowledged seq: shipping resumes after it.
    pub fn acked(&self) -> u64 {
        self.state.acked
    }

    /// Audit-only records dropped and not yet reported by an `audit.dropped` record.
    pub fn dropped(&self) -> Dropped {
        self.state.dropped
    }

    /// Bytes of all segments.
    pub fn used_bytes(&self) -> u64 {
        self.total
    }

    /// What [`Spool::open`] found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The last checkpoint written since this spool was opened. A checkpoint the idle timer
    /// signs after its records were shipped covers no unacknowledged record, so
    /// [`Spool::read_from`] never returns it; the shipper sends it on its own.
    pub fn latest_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.latest.as_ref()
    }

    /// The checkpoint schedule (for the writer's idle timer: `next_due_ms`).
    pub fn schedule(&self) -> &CheckpointSchedule {
        &self.schedule
    }

    /// Appends one record and syncs it. See [`Spool::append_many`].
    pub fn append(&mut self, draft: Draft, priority: Priority) -> Result<Appended, SpoolError> {
        let mut v = self.append_many(vec![(draft, priority)])?;
        Ok(v.pop().expect("one result per draft"))
    }

    /// Appends records in order with one write and one sync (group commit); a record counts
    /// as written when this returns `Ok`. A checkpoint is added to the same write when the
    /// schedule says so (timed by the last record's `at_unix_ms`).
    ///
    /// When the spool is full: an [`Priority::AuditOnly`] record is dropped and counted
    /// ([`Appended::Dropped`]); a [`Priority::MustWrite`] record fails the whole call with
    /// [`SpoolError::Full`] and nothing of the call is written. Before the first record
    /// written after drops comes an `audit.dropped` record (`count`, `first_at_unix_ms`,
    /// `last_at_unix_ms`), and the pair is written only if both fit.
    pub fn append_many(
        &mut self,
        items: Vec<(Draft, Priority)>,
    ) -> Result<Vec<Appended>, SpoolError> {
        if self.poisoned {
            return Err(SpoolError::Poisoned);
        }
        let room = self.cfg.max_bytes.saturating_sub(self.total);
        let mut chain = self.chain.clone();
        let mut dropped = self.state.dropped;
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        let mut last_at = None;
        for (draft, priority) in items {
            let at = draft.at_unix_ms;
            let mut next = chain.clone();
            let mut frames = Vec::new();
            let notice = if dropped.count > 0 {
                let n = next.seal(Draft::new(
                    at,
                    Kind::AuditDropped,
                    json!({
                        "count": dropped.count,
                        "first_at_unix_ms": dropped.first_at_unix_ms,
                        "last_at_unix_ms": dropped.last_at_unix_ms,
                    }),
                ))?;
                frame::push_record(&mut frames, &n.to_canonical().map_err(ChainError::from)?);
                Some(n)
            } else {
                None
            };
            let record = next.seal(draft)?;
            frame::push_record(
                &mut frames,
                &record.to_canonical().map_err(ChainError::from)?,
            );
            let needed = (buf.len() + frames.len()) as u64;
            if needed <= room {
                buf.extend_from_slice(&frames);
                chain = next;
                if notice.is_some() {
                    dropped = Dropped::default();
                }
                last_at = Some(at);
                out.push(Appended::Written { notice, record });
            } else if priority == Priority::AuditOnly {
                if dropped.count == 0 {
                    dropped.first_at_unix_ms = at;
                }
                dropped.count += 1;
                dropped.last_at_unix_ms = at;
                out.push(Appended::Dropped {
                    pending: dropped.count,
                });
            } else {
                return Err(SpoolError::Full {
                    needed,
                    available: room,
                });
            }
        }
        let mut signed = None;
        if let (Some(at), Some(key)) = (last_at, &self.signer)
            && self.schedule.due(chain.head().seq, at)
        {
            let cp = Checkpoint::for_head(chain.host(), chain.head()).sign(key);
            let mut f = Vec::new();
            frame::push_checkpoint(&mut f, &cp);
            // A checkpoint that does not fit waits for the next append or tick.
            if (buf.len() + f.len()) as u64 <= room {
                buf.extend_from_slice(&f);
                signed = Some((cp, at));
            }
        }
        self.write_frames(&buf, &chain)?;
        self.chain = chain;
        if let Some((cp, at)) = signed {
            self.schedule.written(cp.claimed().size, at);
            self.latest = Some(cp);
        }
        if dropped != self.state.dropped {
            self.state.dropped = dropped;
            state::store(&self.dir, &self.state)?;
        }
        Ok(out)
    }

    /// Writes a checkpoint if the schedule says one is due at `now_ms` (the writer's timer
    /// calls this while idle).
    pub fn tick(&mut self, now_ms: u64) -> Result<Option<SignedCheckpoint>, SpoolError> {
        if self.signer.is_none() || !self.schedule.due(self.chain.head().seq, now_ms) {
            return Ok(None);
        }
        self.checkpoint_now(now_ms).map(Some)
    }

    /// Signs and writes a checkpoint of the current head now (for example at shutdown).
    pub fn checkpoint_now(&mut self, now_ms: u64) -> Result<SignedCheckpoint, SpoolError> {
        if self.poisoned {
            return Err(SpoolError::Poisoned);
        }
        let key = self.signer.as_ref().ok_or(SpoolError::NoSigningKey)?;
        let cp = Checkpoint::for_head(self.chain.host(), self.chain.head()).sign(key);
        let mut buf = Vec::new();
        frame::push_checkpoint(&mut buf, &cp);
        let room = self.cfg.max_bytes.saturating_sub(self.total);
        if buf.len() as u64 > room {
            return Err(SpoolError::Full {
                needed: buf.len() as u64,
                available: room,
            });
        }
        let chain = self.chain.clone();
        self.write_frames(&buf, &chain)?;
        self.schedule.written(cp.claimed().size, now_ms);
        self.latest = Some(cp.clone());
        Ok(cp)
    }

    /// Appends `buf` to the active segment (rotating first when it would grow past the
    /// segment size) and syncs; `chain` is the head after these frames. On failure the
    /// segment is cut back so no partial frame stays behind the next write.
    fn write_frames(&mut self, buf: &[u8], chain: &Chain) -> Result<(), SpoolError> {
        if buf.is_empty() {
            return Ok(());
        }
        let cur = self.segments.last().expect("one segment at least");
        if cur.len > 0 && cur.len + buf.len() as u64 > self.cfg.segment_bytes {
            let path = self.dir.join(segment_name(self.chain.head().seq + 1));
            let file = open_append(&path)?;
            state::sync_dir(&self.dir)?;
            self.active = file;
            self.segments.push(Segment {
                path,
                len: 0,
                first: None,
                last: None,
            });
        }
        let seg = self.segments.last_mut().expect("one segment at least");
        let written = self
            .active
            .write_all(buf)
            .and_then(|()| self.active.sync_data());
        if let Err(e) = written {
            // Cut back to the last synced length; if even that fails, refuse further writes
            // until a reopen (whose recovery cuts the torn frame).
            let undone = self
                .active
                .set_len(seg.len)
                .and_then(|()| self.active.sync_data());
            if undone.is_err() {
                self.poisoned = true;
            }
            return Err(io(&seg.path)(e));
        }
        seg.len += buf.len() as u64;
        self.total += buf.len() as u64;
        let head = chain.head();
        if head.seq > self.chain.head().seq {
            seg.first.get_or_insert(self.chain.head().seq + 1);
            seg.last = Some(head);
        }
        Ok(())
    }

    /// Records the collector's acknowledgement of everything up to `up_to_seq` and deletes
    /// the closed segments holding only acknowledged records. The active segment is never
    /// deleted, and a segment is deleted whole or not at all.
    pub fn ack(&mut self, up_to_seq: u64) -> Result<AckOutcome, SpoolError> {
        let head = self.chain.head().seq;
        if up_to_seq > head {
            return Err(SpoolError::AckBeyondHead {
                acked: up_to_seq,
                head,
            });
        }
        if up_to_seq <= self.state.acked {
            return Ok(AckOutcome::default());
        }
        self.state.acked = up_to_seq;
        let mut n = 0;
        while n + 1 < self.segments.len()
            && self.segments[n].last.is_none_or(|l| l.seq <= up_to_seq)
        {
            if let Some(l) = self.segments[n].last {
                self.state.base = l;
            }
            n += 1;
        }
        // The state goes first: a crash before the files are gone leaves segments that the
        // next open recognizes as acknowledged (at or below `base`) and deletes.
        state::store(&self.dir, &self.state)?;
        let mut out = AckOutcome::default();
        for s in self.segments.drain(..n) {
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            out.segments_deleted += 1;
            out.bytes_freed += s.len;
            self.total -= s.len;
        }
        if n > 0 {
            state::sync_dir(&self.dir)?;
        }
        Ok(out)
    }

    /// Up to `max_records` records from `from_seq` on, with the checkpoints written among
    /// them, for shipping. After a restart, ship from `acked() + 1`.
    pub fn read_from(&self, from_seq: u64, max_records: usize) -> Result<Batch, SpoolError> {
        let first_available = self
            .segments
            .iter()
            .find_map(|s| s.first)
            .unwrap_or(self.chain.head().seq + 1);
        if from_seq < first_available {
            return Err(SpoolError::Gone {
                from: from_seq,
                first_available,
            });
        }
        let mut batch = Batch::default();
        for seg in &self.segments {
            if seg.last.is_some_and(|l| l.seq < from_seq) {
                continue;
            }
            let bytes = recover::read_prefix(&seg.path, seg.len)?;
            let mut at = 0;
            while let Some(d) =
                frame::decode_at(&bytes, at).map_err(|stop| SpoolError::Corrupt {
                    path: seg.path.clone(),
                    offset: at as u64,
                    why: match stop {
                        Stop::BadPayload => Damage::BadPayload,
                        Stop::Short | Stop::BadFrame => Damage::BadFrame,
                    },
                })?
            {
                at = d.end as usize;
                match d.entry {
                    Entry::Record(r) if r.seq >= from_seq => {
                        if batch.records.len() == max_records {
                            return Ok(batch);
                        }
                        batch.records.push(r);
                    }
                    Entry::Record(_) => {}
                    Entry::Checkpoint(c) => {
                        if !batch.records.is_empty() || c.claimed().size >= from_seq {
                            batch.checkpoints.push(c);
                        }
                    }
                }
            }
        }
        Ok(batch)
    }

    /// Writes everything from `from_seq` on as JSON Lines (see [`Entry::to_line`]).
    pub fn export(&self, from_seq: u64, out: &mut dyn std::io::Write) -> Result<u64, SpoolError> {
        let batch = self.read_from(from_seq, usize::MAX)?;
        let path = self.dir.join("export");
        let mut cps = batch.checkpoints.iter().peekable();
        let mut lines = 0;
        for r in &batch.records {
            while let Some(c) = cps.next_if(|c| c.claimed().size < r.seq) {
                writeln!(out, "{}", Entry::Checkpoint(c.clone()).to_line()).map_err(io(&path))?;
                lines += 1;
            }
            writeln!(out, "{}", Entry::Record(r.clone()).to_line()).map_err(io(&path))?;
            lines += 1;
        }
        for c in cps {
            writeln!(out, "{}", Entry::Checkpoint(c.clone()).to_line()).map_err(io(&path))?;
            lines += 1;
        }
        Ok(lines)
    }
}
