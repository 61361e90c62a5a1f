//! The hash chain: turns drafts into numbered, linked records.

use crate::canon::CanonError;
use crate::record::{Anchor, Draft, Record, SCHEMA_VERSION};

/// Why a draft could not be chained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The body has no canonical encoding (a float).
    #[error("record body: {0}")]
    Canon(#[from] CanonError),
    /// The host name is empty or holds whitespace or `+` (it becomes part of the checkpoint
    /// origin and the signing key's name).
    #[error("bad host name {0:?}")]
    BadHost(String),
}

/// The head of one host's chain and the means to extend it. It holds no records: the
/// caller stores what [`Chain::seal`] returns (the spool does).
#[derive(Clone, Debug)]
pub struct Chain {
    host: String,
    head: Anchor,
}

/// Whether `host` can name a chain: non-empty, printable ASCII or UTF-8 without whitespace,
/// and no `+` (signed-note key names forbid it).
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 200
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

impl Chain {
    /// A new chain for `host`, before record 1.
    pub fn new(host: impl Into<String>) -> Result<Chain, ChainError> {
        Chain::resume(host, Anchor::GENESIS)
    }

    /// Continues a chain whose last record is `head` (recovered from disk).
    pub fn resume(host: impl Into<String>, head: Anchor) -> Result<Chain, ChainError> {
        let host = host.into();
        if !valid_host(&host) {
            return Err(ChainError::BadHost(host));
        }
        Ok(Chain { host, head })
    }

    /// The host this chain belongs to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The last record's number and hash (seq 0 before the first).
    pub fn head(&self) -> Anchor {
        self.head
    }

    /// Chains `draft` as the next record and advances the head.
    pub fn seal(&mut self, draft: Draft) -> Result<Record, ChainError> {
        let mut r = Record {
            v: SCHEMA_VERSION,
            seq: self.head.seq + 1,
            host: self.host.clone(),
            at_unix_ms: draft.at_unix_ms,
            kind: draft.kind,
            corr: draft.corr,
            body: draft.body,
            prev: self.head.hash,
            hash: crate::Hash::ZERO,
        };
        r.hash = r.compute_hash()?;
        self.head = Anchor {
            seq: r.seq,
            hash: r.hash,
        };
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hash, Kind};
    use serde_json::json;

    #[test]
    fn records_link_and_number_from_one() {
        let mut c = Chain::new("h1").unwrap();
        let a = c
            .seal(Draft::new(1, Kind::DaemonStart, json!({"version": "0.1"})))
            .unwrap();
        let b = c
            .seal(Draft::new(2, Kind::EventHeld, json!({"op": "exec"})).corr("r1"))
            .unwrap();
        assert_eq!((a.seq, a.prev), (1, Hash::ZERO));
        assert_eq!((b.seq, b.prev), (2, a.hash));
        assert_eq!(b.compute_hash().unwrap(), b.hash);
        assert_eq!(
            c.head(),
            Anchor {
                seq: 2,
                hash: b.hash
            }
        );
    }

    #[test]
    fn the_hash_is_sha256_of_prev_and_the_canonical_text() {
        let mut c = Chain::new("h").unwrap();
        let r = c
            .seal(Draft::new(7, Kind::LinkUp, json!({"b": 1, "a": "x"})))
            .unwrap();
        let text = br#"{"at_unix_ms":7,"body":{"a":"x","b":1},"host":"h","kind":"link.up","prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":1,"v":1}"#;
        let mut input = vec![0u8; 32];
        input.extend_from_slice(text);
        assert_eq!(r.hash, Hash::of(&input));
    }

    #[test]
    fn floats_and_bad_hosts_are_refused() {
        let mut c = Chain::new("h").unwrap();
        assert!(matches!(
            c.seal(Draft::new(1, Kind::Vote, json!({"x": 0.5}))),
            Err(ChainError::Canon(_))
        ));
        assert_eq!(c.head(), Anchor::GENESIS);
        assert!(Chain::new("a b").is_err());
        assert!(Chain::new("a+b").is_err());
        assert!(Chain::new("").is_err());
    }
}
