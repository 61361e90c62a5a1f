//! The record schema (`v: 1`): what one line of the audit stream holds, and how its hash is
//! computed.

use std::fmt;
use std::str::FromStr;

use ring::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::canon::{self, CanonError};

/// The schema version this crate writes and verifies.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a text is not a record hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Hashes are written as exactly 64 lowercase hex digits.
    #[error("a hash is 64 lowercase hex digits")]
    BadHash,
    /// A kind is lowercase letters, digits, `.` and `_`, 1 to 64 characters.
    #[error("bad record kind {0:?}")]
    BadKind(String),
}

/// A SHA-256 value: a record's `hash`, its `prev`, a checkpoint's head.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev` of record 1: 32 zero bytes (64 `0` digits).
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Hash {
        let d = digest::digest(&digest::SHA256, data);
        let mut h = [0; 32];
        h.copy_from_slice(d.as_ref());
        Hash(h)
    }
}

impl Hash {
    /// The 64 lowercase hex digits (what `Display` writes), without a formatter: records
    /// are written and checked by the thousand, and `{:02x}` per byte costs more than the
    /// SHA-256 itself.
    pub fn hex(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = RecordError;

    /// Parses 64 lowercase hex digits; uppercase is refused so that a hash has one spelling
    /// (the record's canonical encoding contains `prev` as text).
    fn from_str(s: &str) -> Result<Hash, RecordError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(RecordError::BadHash);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(RecordError::BadHash),
        };
        let mut h = [0; 32];
        for (i, out) in h.iter_mut().enumerate() {
            *out = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
        }
        Ok(Hash(h))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a record is about. Written as its dotted name (`"event.held"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A kernel event that was let through (rule action allow or audit).
    EventAllowed,
    /// A kernel event that was refused (deny, or a refused hold).
    EventDenied,
    /// A kernel event that was held for a decision.
    EventHeld,
    /// An approval request was opened.
    RequestOpened,
    /// One approver's vote.
    Vote,
    /// The request's decision (approved or denied, by whom, by which channel).
    Decision,
    /// What the held operation did once released (completed, refused, abandoned).
    Outcome,
    /// A policy was loaded and applied.
    PolicyLoaded,
    /// A policy was refused (invalid); the previous one stays.
    PolicyRejected,
    /// airlockd started.
    DaemonStart,
    /// airlockd stopped.
    DaemonStop,
    /// The enforcement backend in use and why (LSM, fanotify fallback).
    Backend,
    /// The kernel lost events (ring buffer full).
    EventsLost,
    /// The link to airlock-server came up.
    LinkUp,
    /// The link to airlock-server went down.
    LinkDown,
    /// The local API refused a caller (for example one inside an agent cgroup).
    ApiRefused,
    /// Audit-only records were dropped because the spool was full (body: `count`).
    AuditDropped,
    /// A kind this version does not know (written by a newer airlockd). Kept verbatim so
    /// that its hash still verifies.
    Other(String),
}

impl Kind {
    /// Every kind this version names, for documentation and tests.
    pub const KNOWN: [Kind; 17] = [
        Kind::EventAllowed,
        Kind::EventDenied,
        Kind::EventHeld,
        Kind::RequestOpened,
        Kind::Vote,
        Kind::Decision,
        Kind::Outcome,
        Kind::PolicyLoaded,
        Kind::PolicyRejected,
        Kind::DaemonStart,
        Kind::DaemonStop,
        Kind::Backend,
        Kind::EventsLost,
        Kind::LinkUp,
        Kind::LinkDown,
        Kind::ApiRefused,
        Kind::AuditDropped,
    ];

    /// The dotted name written in records.
    pub fn as_str(&self) -> &str {
        match self {
            Kind::EventAllowed => "event.allowed",
            Kind::EventDenied => "event.denied",
            Kind::EventHeld => "event.held",
            Kind::RequestOpened => "request.opened",
            Kind::Vote => "vote",
            Kind::Decision => "decision",
            Kind::Outcome => "outcome",
            Kind::PolicyLoaded => "policy.loaded",
            Kind::PolicyRejected => "policy.rejected",
            Kind::DaemonStart => "daemon.start",
            Kind::DaemonStop => "daemon.stop",
            Kind::Backend => "backend",
            Kind::EventsLost => "events.lost",
            Kind::LinkUp => "link.up",
            Kind::LinkDown => "link.down",
            Kind::ApiRefused => "api.refused",
            Kind::AuditDropped => "audit.dropped",
            Kind::Other(s) => s,
        }
    }

    /// How a spool treats this kind when it is full, unless the caller says otherwise: the
    /// lifecycle of a held action (held event, request, votes, decision, outcome) exists only
    /// for `approve` rules and must be written; everything else is audit-only.
    pub fn default_priority(&self) -> Priority {
        match self {
            Kind::EventHeld | Kind::RequestOpened | Kind::Vote | Kind::Decision | Kind::Outcome => {
                Priority::MustWrite
            }
            _ => Priority::AuditOnly,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Kind, RecordError> {
        if let Some(k) = Kind::KNOWN.iter().find(|k| k.as_str() == s) {
            return Ok(k.clone());
        }
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'_');
        if ok {
            Ok(Kind::Other(s.to_owned()))
        } else {
            Err(RecordError::BadKind(s.to_owned()))
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a full spool does with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// The append fails when there is no room, so the caller can fail closed (deny the held
    /// action rather than let it through unrecorded).
    MustWrite,
    /// Dropped and counted when there is no room; the next record written is preceded by an
    /// `audit.dropped` record with the count.
    AuditOnly,
}

/// A record before it is chained: what the caller supplies.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    /// Wall-clock time of the fact, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub kind: Kind,
    /// Correlation id joining a kernel event, its request, votes, decision and outcome
    /// (airlock uses the request id).
    pub corr: Option<String>,
    /// Free JSON; integers only (see [`crate::canon`]).
    pub body: Value,
}

impl Draft {
    /// A draft with no correlation id.
    pub fn new(at_unix_ms: u64, kind: Kind, body: Value) -> Draft {
        Draft {
            at_unix_ms,
            kind,
            corr: None,
            body,
        }
    }

    /// Sets the correlation id.
    pub fn corr(mut self, corr: impl Into<String>) -> Draft {
        self.corr = Some(corr.into());
        self
    }
}

/// One chained record: a line of the export, a frame of the spool, a row at the collector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Per-host sequence number: 1, 2, … without gaps.
    pub seq: u64,
    /// The host that wrote it.
    pub host: String,
    pub at_unix_ms: u64,
    pub kind: Kind,
    /// Absent (not `null`) when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corr: Option<String>,
    pub body: Value,
    /// `hash` of record `seq - 1`; [`Hash::ZERO`] for seq 1.
    pub prev: Hash,
    /// SHA-256(prev's 32 bytes || canonical encoding of this record without `hash`).
    pub hash: Hash,
}

impl Record {
    /// The record as a JSON object without `hash` — what the hash covers.
    pub fn unhashed_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("v".into(), Value::from(self.v));
        m.insert("seq".into(), Value::from(self.seq));
        m.insert("host".into(), Value::from(self.host.clone()));
        m.insert("at_unix_ms".into(), Value::from(self.at_unix_ms));
        m.insert("kind".into(), Value::from(self.kind.as_str()));
        if let Some(c) = &self.corr {
            m.insert("corr".into(), Value::from(c.clone()));
        }
        m.insert("body".into(), self.body.clone());
        m.insert("prev".into(), Value::from(self.prev.to_string()));
        Value::Object(m)
    }

    /// Recomputes the hash from the record's content (ignores the stored `hash`).
    pub fn compute_hash(&self) -> Result<Hash, CanonError> {
        let mut input = Vec::with_capacity(512);
        input.extend_from_slice(&self.prev.0);
        self.write_canonical(&mut input, false)?;
        Ok(Hash::of(&input))
    }

    /// The whole record (with `hash`) in canonical encoding: the spool's frame payload and
    /// an export line (without its newline).
    pub fn to_canonical(&self) -> Result<Vec<u8>, CanonError> {
        let mut out = Vec::with_capacity(512);
        self.write_canonical(&mut out, true)?;
        Ok(out)
    }

    /// Appends the canonical encoding of the record, with `hash` or without it (what the
    /// hash covers), and returns where the `hash` member starts (or would start), counted
    /// from the record's first byte. The same bytes as [`canon::write`] of [`Record::unhashed_value`] (plus
    /// `hash`), written field by field instead of through a copy of the record as a JSON
    /// value: the members in their sorted order (`at_unix_ms`, `body`, `corr`, `hash`,
    /// `host`, `kind`, `prev`, `seq`, `v`), where `hash` is never first or last.
    pub(crate) fn write_canonical(
        &self,
        out: &mut Vec<u8>,
        with_hash: bool,
    ) -> Result<usize, CanonError> {
        let start = out.len();
        out.extend_from_slice(b"{\"at_unix_ms\":");
        out.extend_from_slice(self.at_unix_ms.to_string().as_bytes());
        out.extend_from_slice(b",\"body\":");
        canon::write(&self.body, out)?;
        if let Some(c) = &self.corr {
            out.extend_from_slice(b",\"corr\":");
            canon::write_str(c, out);
        }
        out.push(b',');
        let hash_at = out.len() - start;
        if with_hash {
            out.extend_from_slice(HASH_MEMBER);
            out.extend_from_slice(&self.hash.hex());
            out.extend_from_slice(b"\",");
        }
        out.extend_from_slice(b"\"host\":");
        canon::write_str(&self.host, out);
        out.extend_from_slice(b",\"kind\":");
        canon::write_str(self.kind.as_str(), out);
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(&self.prev.hex());
        out.extend_from_slice(b"\",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"v\":");
        out.extend_from_slice(self.v.to_string().as_bytes());
        out.push(b'}');
        Ok(hash_at)
    }
}

/// The start of a record's `hash` member in its canonical encoding.
pub(crate) const HASH_MEMBER: &[u8] = b"\"hash\":\"";

/// A trusted point of a chain: record `seq` had hash `hash` (seq 0 with [`Hash::ZERO`] is
/// the start of every chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: u64,
    pub hash: Hash,
}

impl Anchor {
    /// Before record 1.
    pub const GENESIS: Anchor = Anchor {
        seq: 0,
        hash: Hash::ZERO,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_text_round_trip_is_strict() {
        let h = Hash::of(b"x");
        assert_eq!(h.to_string().parse::<Hash>().unwrap(), h);
        assert!(h.to_string().to_uppercase().parse::<Hash>().is_err());
        assert!("00".parse::<Hash>().is_err());
        assert_eq!(Hash::ZERO.to_string(), "0".repeat(64));
    }

    fn sealed(corr: Option<&str>, body: Value) -> Record {
        let mut c = crate::Chain::new("h\u{e9}st").unwrap();
        let mut d = Draft::new(u64::MAX, Kind::Other("x.y_1".into()), body);
        d.corr = corr.map(str::to_owned);
        c.seal(d).unwrap()
    }

    /// The field-by-field writer gives the bytes of the generic encoder over the record as
    /// a JSON value (the definition of the hash input and of the canonical text).
    #[test]
    fn field_writer_matches_the_canonical_encoder() {
        let bodies = [
            serde_json::json!({"b": [1, -2, {"z": null, "a": "q\"\\\n\u{1}"}], "a": true, "": 0}),
            serde_json::json!("just a string"),
            serde_json::json!(null),
            serde_json::json!({"hash": "x", "host": 1}),
        ];
        for body in bodies {
            for corr in [None, Some("r-1\t\u{7f}")] {
                let r = sealed(corr, body.clone());
                let mut unhashed = r.prev.0.to_vec();
                canon::write(&r.unhashed_value(), &mut unhashed).unwrap();
                assert_eq!(r.hash, Hash::of(&unhashed));
                assert_eq!(r.compute_hash().unwrap(), r.hash);
                let mut full = r.unhashed_value();
                if let Value::Object(m) = &mut full {
                    m.insert("hash".into(), Value::from(r.hash.to_string()));
                }
                assert_eq!(r.to_canonical().unwrap(), canon::to_vec(&full).unwrap());
            }
        }
    }

    #[test]
    fn kinds_round_trip_and_unknown_kinds_are_kept() {
        for k in Kind::KNOWN {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert_eq!(
            "link.refused".parse::<Kind>().unwrap(),
            Kind::Other("link.refused".into())
        );
        assert!("Bad Kind".parse::<Kind>().is_err());
    }
}
