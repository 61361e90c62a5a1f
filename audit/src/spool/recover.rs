//! Reading segments back: recovery at open (cut a torn tail, check the chain) and the
//! read-only scan that verification uses.

use std::path::{Path, PathBuf};

use super::frame::{self, Stop};
use super::{Damage, Recovery, Segment, SpoolError, io, state};
use crate::record::{Anchor, Record};
use crate::verify::{Entry, EntryError};

/// What recovery found on disk.
pub(super) struct Scanned {
    pub segments: Vec<Segment>,
    pub head: Option<Anchor>,
    pub last_checkpoint: u64,
    pub recovery: Recovery,
}

/// The segment files of `dir` in chain order.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = n.strip_suffix(".seg")
            && stem.len() == 20
            && let Ok(first) = stem.parse::<u64>()
        {
            found.push((first, p));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Reads every segment of `dir`, checks frames and chain, and cuts a torn tail off the last
/// segment.
pub(super) fn scan(dir: &Path, host: &str, st: &state::State) -> Result<Scanned, SpoolError> {
    let mut recovery = Recovery::default();
    let paths = list_segments(dir)?;
    let mut segments = Vec::new();
    let mut head: Option<Anchor> = None;
    let mut last_checkpoint = 0;
    for (i, path) in paths.iter().enumerate() {
        let is_last = i + 1 == paths.len();
        let bytes = std::fs::read(path).map_err(io(path))?;
        let mut seg = Segment {
            path: path.clone(),
            len: 0,
            first: None,
            last: None,
        };
        let mut at = 0usize;
        loop {
            let corrupt = |offset: usize, why| SpoolError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                why,
            };
            match frame::decode_at(&bytes, at) {
                Ok(None) => break,
                Ok(Some(d)) => {
                    match d.entry {
                        Entry::Record(r) => {
                            check_continues(&r, st, &mut head).map_err(|w| corrupt(at, w))?;
                            if r.host != host {
                                return Err(SpoolError::HostMismatch {
                                    expected: host.to_owned(),
                                    found: r.host,
                                });
                            }
                            seg.first.get_or_insert(r.seq);
                            seg.last = Some(Anchor {
                                seq: r.seq,
                                hash: r.hash,
                            });
                            recovery.records += 1;
                        }
                        Entry::Checkpoint(c) => {
                            last_checkpoint = last_checkpoint.max(c.claimed().size);
                        }
                    }
                    at = d.end as usize;
                }
                Err(Stop::BadPayload) => return Err(corrupt(at, Damage::BadPayload)),
                Err(Stop::Short | Stop::BadFrame) if is_last => {
                    // A torn write: cut it and whatever follows it.
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io(path))?;
                    f.set_len(at as u64).map_err(io(path))?;
                    f.sync_all().map_err(io(path))?;
                    recovery.torn_bytes = (bytes.len() - at) as u64;
                    recovery.torn_segment = Some(path.clone());
                    break;
                }
                Err(Stop::Short | Stop::BadFrame) => {
                    return Err(corrupt(at, Damage::BadFrame));
                }
            }
        }
        seg.len = at as u64;
        segments.push(seg);
    }
    Ok(Scanned {
        segments,
        head,
        last_checkpoint,
        recovery,
    })
}

pub(super) fn read_prefix(path: &Path, len: u64) -> Result<Vec<u8>, SpoolError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut bytes).map_err(io(path))?;
    Ok(bytes)
}

/// Checks that `r` continues the chain recovered so far (`head`), or starts it at the
/// acknowledged base.
fn check_continues(r: &Record, st: &state::State, head: &mut Option<Anchor>) -> Result<(), Damage> {
    if r.compute_hash().ok() != Some(r.hash) {
        return Err(Damage::BadHash { seq: r.seq });
    }
    let expected = match *head {
        Some(h) => Some(h),
        // Records at or below the base belong to segments an interrupted ack left; the first
        // record after the base must link to it.
        None if r.seq <= st.base.seq => None,
        None => Some(st.base),
    };
    if let Some(h) = expected
        && (r.seq != h.seq + 1 || r.prev != h.hash)
    {
        return Err(Damage::BrokenChain { seq: r.seq });
    }
    if expected.is_none() && r.seq == st.base.seq && r.hash != st.base.hash {
        return Err(Damage::BrokenChain { seq: r.seq });
    }
    if expected.is_some() || r.seq == st.base.seq {
        *head = Some(Anchor {
            seq: r.seq,
            hash: r.hash,
        });
    }
    Ok(())
}

/// Reads a spool directory without opening it for writing (no lock, no repair), as
/// `airlock audit verify` does: every entry in order, then, if the last segment ends in a
/// torn frame, [`EntryError::TornTail`].
pub fn read_dir(dir: &Path) -> Result<impl Iterator<Item = Result<Entry, EntryError>>, SpoolError> {
    let paths = list_segments(dir)?;
    let mut all = Vec::new();
    let n = paths.len();
    for (i, path) in paths.into_iter().enumerate() {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut at = 0;
        loop {
            match frame::decode_at(&bytes, at) {
                Ok(None) => break,
                Ok(Some(d)) => {
                    at = d.end as usize;
                    all.push(Ok(d.entry));
                }
                Err(stop) => {
                    let offset = at as u64;
                    all.push(Err(match stop {
                        Stop::Short | Stop::BadFrame if i + 1 == n => EntryError::TornTail {
                            offset,
                            bytes: (bytes.len() - at) as u64,
                        },
                        _ => EntryError::BadFrame { offset },
                    }));
                    break;
                }
            }
        }
    }
    Ok(all.into_iter())
}
