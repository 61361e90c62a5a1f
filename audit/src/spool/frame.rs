//! Spool framing: how entries sit in a segment file, and how a scan finds where a torn write
//! begins.
//!
//! ```text
//! offset 0  u32 LE   payload length L (at most MAX_PAYLOAD)
//! offset 4  u8       type: 1 record, 2 checkpoint
//! offset 5  u32 LE   CRC-32 (IEEE) of bytes 0..5 followed by the payload
//! offset 9  L bytes  payload: a record in canonical JSON, or a checkpoint note's text
//! ```
//!
//! The checksum covers the length and type too, so a tear inside the header (a length
//! written, the rest not) is caught like a tear in the payload.

use crate::note::SignedCheckpoint;
use crate::record::Record;
use crate::verify::Entry;

/// Bytes before the payload.
pub const HEADER: usize = 9;
/// Largest payload accepted. A longer length can only be a torn or damaged header, and
/// refusing it keeps a scan from allocating gigabytes for one.
pub const MAX_PAYLOAD: usize = 16 << 20;

const TYPE_RECORD: u8 = 1;
const TYPE_CHECKPOINT: u8 = 2;

fn crc(header5: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header5);
    h.update(payload);
    h.finalize()
}

fn push(out: &mut Vec<u8>, ty: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payloads are bounded by MAX_PAYLOAD");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.push(ty);
    let sum = crc(&out[start..start + 5], payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends the frame of a record's canonical encoding.
pub fn push_record(out: &mut Vec<u8>, canonical: &[u8]) {
    push(out, TYPE_RECORD, canonical);
}

/// Appends the frame of a checkpoint note.
pub fn push_checkpoint(out: &mut Vec<u8>, note: &SignedCheckpoint) {
    push(out, TYPE_CHECKPOINT, note.text().as_bytes());
}

/// Why a scan stopped before the end of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Fewer bytes than a header or than the header's length says: the tail of an
    /// interrupted write.
    Short,
    /// A header whose length or type cannot be, or a checksum mismatch.
    BadFrame,
    /// The checksum holds but the payload is not a record or a checkpoint: not a torn write
    /// (that would fail the checksum), so damage or a bug.
    BadPayload,
}

/// One decoded frame and where the next one starts.
pub struct Decoded {
    pub end: u64,
    pub entry: Entry,
}

/// Decodes the frame at `offset` of `bytes`: `Ok(None)` at the exact end.
pub fn decode_at(bytes: &[u8], offset: usize) -> Result<Option<Decoded>, Stop> {
    let rest = &bytes[offset..];
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < HEADER {
        return Err(Stop::Short);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let ty = rest[4];
    if len > MAX_PAYLOAD || !(ty == TYPE_RECORD || ty == TYPE_CHECKPOINT) {
        return Err(Stop::BadFrame);
    }
    if rest.len() < HEADER + len {
        return Err(Stop::Short);
    }
    let payload = &rest[HEADER..HEADER + len];
    let sum = u32::from_le_bytes([rest[5], rest[6], rest[7], rest[8]]);
    if crc(&rest[..5], payload) != sum {
        return Err(Stop::BadFrame);
    }
    let entry = if ty == TYPE_RECORD {
        Entry::Record(serde_json::from_slice::<Record>(payload).map_err(|_| Stop::BadPayload)?)
    } else {
        let text = std::str::from_utf8(payload).map_err(|_| Stop::BadPayload)?;
        Entry::Checkpoint(SignedCheckpoint::parse(text).map_err(|_| Stop::BadPayload)?)
    };
    Ok(Some(Decoded {
        end: (offset + HEADER + len) as u64,
        entry,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Chain, Draft, Kind};

    #[test]
    fn every_cut_and_every_flipped_byte_stops_the_scan() {
        let mut c = Chain::new("h").unwrap();
        let r = c
            .seal(Draft::new(
                1,
                Kind::Backend,
                serde_json::json!({"b": "lsm"}),
            ))
            .unwrap();
        let mut buf = Vec::new();
        push_record(&mut buf, &r.to_canonical().unwrap());
        let d = decode_at(&buf, 0).unwrap().unwrap();
        assert!(matches!(d.entry, Entry::Record(ref back) if *back == r));
        assert_eq!(d.end as usize, buf.len());
        for cut in 1..buf.len() {
            assert!(decode_at(&buf[..cut], 0).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x20;
            assert!(decode_at(&bad, 0).is_err(), "flip at {i}");
        }
    }
}
