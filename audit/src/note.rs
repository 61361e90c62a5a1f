//! Checkpoints: the host's signature over its chain head, as a C2SP signed note
//! (<https://c2sp.org/signed-note>, body as in <https://c2sp.org/tlog-checkpoint>), and the
//! policy that says when to write one.
//!
//! ```text
//! airlock/<host>
//! <seq of the head record, decimal>
//! <base64 (standard, padded) of the head record's 32-byte hash>
//!
//! — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>
//! ```
//!
//! The signature covers the body: the three lines, each ending in `\n`, without the blank
//! line. The key id is [`crate::keys::key_id`]. A chain's "tree size" is its last `seq`: the
//! number of records written since seq 1.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::keys::{SigningKey, VerifierKey};
use crate::record::{Anchor, Hash};

/// The em dash and space that start every signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Notes with more signature lines than this are refused (as Go's note package does), so a
/// hostile note cannot make a verifier loop.
const MAX_SIGNATURES: usize = 100;

/// Why a checkpoint note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// No blank line separating body and signatures, a body not ending in a newline, or a
    /// signature line that is not `— name base64`.
    #[error("not a signed note")]
    Malformed,
    /// The body is not `origin`, `size`, `base64 hash` lines.
    #[error("not a checkpoint body")]
    BadBody,
    #[error("more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// No signature line carries the verifier key's name and id.
    #[error("no signature by key {0}")]
    NoSignatureByKey(String),
    /// A signature line names the key but its signature does not verify.
    #[error("the signature by key {0} does not verify")]
    BadSignature(String),
}

/// The origin line of `host`'s checkpoints.
pub fn origin_for(host: &str) -> String {
    format!("airlock/{host}")
}

/// What a checkpoint asserts: the chain of `origin` has `size` records and the last one's
/// hash is `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub hash: Hash,
}

impl Checkpoint {
    /// The checkpoint of `host`'s chain at `head`.
    pub fn for_head(host: &str, head: Anchor) -> Checkpoint {
        Checkpoint {
            origin: origin_for(host),
            size: head.seq,
            hash: head.hash,
        }
    }

    /// The signed body text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.hash.0)
        )
    }

    /// Signs the checkpoint with `key`.
    pub fn sign(&self, key: &SigningKey) -> SignedCheckpoint {
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key.verifier().id().to_be_bytes());
        blob.extend_from_slice(&sig);
        let text = format!("{body}\n{SIG_PREFIX}{} {}\n", key.name(), B64.encode(blob));
        SignedCheckpoint {
            checkpoint: self.clone(),
            body_len: body.len(),
            signatures: vec![NoteSignature {
                name: key.name().to_owned(),
                id: key.verifier().id(),
                sig: sig.to_vec(),
            }],
            text,
        }
    }

    fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = body.split_terminator('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::BadBody)?;
        let size = lines.next().ok_or(NoteError::BadBody)?;
        // Decimal without sign or leading zeros: one spelling per size.
        if size.is_empty()
            || !size.bytes().all(|c| c.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::BadBody);
        }
        let size = size.parse().map_err(|_| NoteError::BadBody)?;
        let raw = lines
            .next()
            .and_then(|h| B64.decode(h).ok())
            .ok_or(NoteError::BadBody)?;
        let hash = Hash(raw.try_into().map_err(|_| NoteError::BadBody)?);
        // Further lines are tlog-checkpoint extension lines: signed, ignored here.
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            hash,
        })
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub id: u32,
    pub sig: Vec<u8>,
}

/// A checkpoint note as written or received: its exact text and what it says. Parsing does
/// not verify; [`SignedCheckpoint::verify`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    text: String,
    body_len: usize,
    signatures: Vec<NoteSignature>,
}

impl SignedCheckpoint {
    /// Parses a note's text (the whole note, ending in a newline).
    pub fn parse(text: &str) -> Result<SignedCheckpoint, NoteError> {
        let split = text.rfind("\n\n").ok_or(NoteError::Malformed)?;
        let body = &text[..split + 1];
        let sigs = &text[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed);
        }
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed)?;
            let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed)?;
            let blob = B64.decode(b64).map_err(|_| NoteError::Malformed)?;
            if name.is_empty() || blob.len() < 5 {
                return Err(NoteError::Malformed);
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                id: u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]),
                sig: blob[4..].to_vec(),
            });
        }
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint::parse_body(body)?,
            text: text.to_owned(),
            body_len: body.len(),
            signatures,
        })
    }

    /// The note text, byte for byte as signed or received.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What the note claims, not yet verified.
    pub fn claimed(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Checks the signature of `key` (lines of other keys are ignored, as the signed-note
    /// spec requires) and returns the checkpoint.
    pub fn verify(&self, key: &VerifierKey) -> Result<&Checkpoint, NoteError> {
        let body = &self.text.as_bytes()[..self.body_len];
        let mut named = false;
        for s in &self.signatures {
            if s.name == key.name() && s.id == key.id() {
                named = true;
                if key.verify(body, &s.sig) {
                    return Ok(&self.checkpoint);
                }
            }
        }
        if named {
            Err(NoteError::BadSignature(key.to_string()))
        } else {
            Err(NoteError::NoSignatureByKey(key.to_string()))
        }
    }
}

/// When to write a checkpoint: after `every_records` records, or once `every_ms` has passed
/// since the last one while records are waiting (so a host that goes quiet still gets its
/// last records signed within `every_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_records: u64,
    pub every_ms: u64,
}

impl Default for CheckpointPolicy {
    /// Every 1,000 records or 10 seconds.
    fn default() -> CheckpointPolicy {
        CheckpointPolicy {
            every_records: 1000,
            every_ms: 10_000,
        }
    }
}

/// The checkpoint policy's state: pure, driven by the caller's clock, so the writer's timer
/// and tests decide what "now" is.
#[derive(Clone, Debug)]
pub struct CheckpointSchedule {
    policy: CheckpointPolicy,
    last_size: u64,
    last_at_ms: u64,
}

impl CheckpointSchedule {
    /// A schedule whose last checkpoint covered `last_size` records at `last_at_ms` (on
    /// start: what the spool recovered, and the start time).
    pub fn new(policy: CheckpointPolicy, last_size: u64, last_at_ms: u64) -> CheckpointSchedule {
        CheckpointSchedule {
            policy,
            last_size,
            last_at_ms,
        }
    }

    /// The policy.
    pub fn policy(&self) -> CheckpointPolicy {
        self.policy
    }

    /// The size of the last checkpoint.
    pub fn last_size(&self) -> u64 {
        self.last_size
    }

    /// Whether a checkpoint of a chain whose head is `head_seq` is due at `now_ms`. Never
    /// when no record was written since the last one: an identical note proves nothing new.
    pub fn due(&self, head_seq: u64, now_ms: u64) -> bool {
        let waiting = head_seq.saturating_sub(self.last_size);
        waiting > 0
            && (waiting >= self.policy.every_records.max(1)
                || now_ms.saturating_sub(self.last_at_ms) >= self.policy.every_ms)
    }

    /// When the time rule will next make a checkpoint due, for the writer's idle timer;
    /// `None` while no record waits.
    pub fn next_due_ms(&self, head_seq: u64) -> Option<u64> {
        (head_seq > self.last_size).then(|| self.last_at_ms.saturating_add(self.policy.every_ms))
    }

    /// Notes that a checkpoint of size `size` was written at `now_ms`.
    pub fn written(&mut self, size: u64, now_ms: u64) {
        self.last_size = self.last_size.max(size);
        self.last_at_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_signature_format_is_go_sumdb_notes() {
        // golang.org/x/mod/sumdb/note's example: same body split, signature blob and key id.
        let key: VerifierKey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            .parse()
            .unwrap();
        let split = GO_NOTE.rfind("\n\n").unwrap();
        let blob = B64
            .decode(GO_NOTE[split + 2..].trim_end().rsplit(' ').next().unwrap())
            .unwrap();
        assert_eq!(u32::from_be_bytes(blob[..4].try_into().unwrap()), key.id());
        assert!(key.verify(&GO_NOTE.as_bytes()[..split + 1], &blob[4..]));
        // Its body is not a checkpoint, so the checkpoint parser refuses it.
        assert_eq!(SignedCheckpoint::parse(GO_NOTE), Err(NoteError::BadBody));
    }

    #[test]
    fn sign_parse_verify() {
        let k = SigningKey::generate("airlock/h1").unwrap();
        let cp = Checkpoint::for_head(
            "h1",
            Anchor {
                seq: 42,
                hash: Hash::of(b"x"),
            },
        );
        let signed = cp.sign(&k);
        assert!(signed.text().starts_with("airlock/h1\n42\n"));
        assert!(signed.text().contains("\n\n\u{2014} airlock/h1 "));
        let back = SignedCheckpoint::parse(signed.text()).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.verify(&k.verifier()).unwrap(), &cp);

        let other = SigningKey::generate("airlock/h1").unwrap();
        let forged = signed.text().replacen("\n42\n", "\n43\n", 1);
        let forged = SignedCheckpoint::parse(&forged).unwrap();
        assert!(matches!(
            forged.verify(&k.verifier()),
            Err(NoteError::BadSignature(_))
        ));
        // Same name, another key: another key id, so no line of it.
        assert!(matches!(
            back.verify(&other.verifier()),
            Err(NoteError::NoSignatureByKey(_))
        ));
        let stranger = SigningKey::generate("airlock/h2").unwrap();
        assert!(matches!(
            back.verify(&stranger.verifier()),
            Err(NoteError::NoSignatureByKey(_))
        ));
    }

    #[test]
    fn malformed_notes_are_refused() {
        for bad in [
            "",
            "airlock/h\n1\nAAAA\n",
            "airlock/h\n01\nAAAA\n\n\u{2014} k AAAAAAA=\n",
            "airlock/h\n1\n\n\u{2014} k AAAAAAA=\n",
            "airlock/h\n1\nAAAA\n\n- k AAAAAAA=\n",
        ] {
            assert!(SignedCheckpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schedule_counts_records_and_time_and_stays_quiet_when_idle() {
        let p = CheckpointPolicy {
            every_records: 3,
            every_ms: 1000,
        };
        let mut s = CheckpointSchedule::new(p, 0, 0);
        assert!(!s.due(0, 5000), "nothing written: nothing to sign");
        assert!(!s.due(2, 999));
        assert!(s.due(3, 1), "count rule");
        assert!(s.due(1, 1000), "time rule, also when idle");
        assert_eq!(s.next_due_ms(1), Some(1000));
        s.written(3, 10);
        assert!(!s.due(3, 100_000));
        assert_eq!(s.next_due_ms(3), None);
        assert_eq!(s.next_due_ms(4), Some(1010));
    }
}
