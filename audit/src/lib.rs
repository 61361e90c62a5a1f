//! airlock's tamper-evident audit core: every record a host writes is numbered and
//! hash-chained, the host signs its chain head in checkpoints, records wait in a crash-safe
//! bounded spool until the collector acknowledges them, and a verifier names the first
//! record that was changed, deleted, inserted, reordered or cut off.
//!
//! # Records (schema `v: 1`)
//!
//! One JSON object per record ([`Record`]):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `v` | integer | schema version, `1` |
//! | `seq` | integer | per-host sequence number, 1, 2, … without gaps |
//! | `host` | string | the host that wrote it (no whitespace, no `+`) |
//! | `at_unix_ms` | integer | wall-clock time, milliseconds since the Unix epoch |
//! | `kind` | string | [`Kind`]: `event.allowed`, `event.denied`, `event.held`, `request.opened`, `vote`, `decision`, `outcome`, `policy.loaded`, `policy.rejected`, `daemon.start`, `daemon.stop`, `backend`, `events.lost`, `link.up`, `link.down`, `api.refused`, `audit.dropped` (other dotted lowercase names are kept verbatim) |
//! | `corr` | string, optional | correlation id joining kernel event → request → votes → decision → outcome (absent, not `null`, when none) |
//! | `body` | any JSON | free; integers only, no floats |
//! | `prev` | string | `hash` of record `seq - 1`, 64 lowercase hex digits; 64 `0`s for seq 1 |
//! | `hash` | string | see below, 64 lowercase hex digits |
//!
//! No other fields are allowed in v1. [`ocsf`] maps the kinds with a natural OCSF class
//! (Process Activity 1007 for exec, File System Activity 1001 for writes, …) and gives the
//! disposition (held → Delayed, approved, denied → Blocked).
//!
//! # Hash
//!
//! `hash = SHA-256( prev as 32 raw bytes || canonical(record without "hash") )`, written as
//! lowercase hex. The canonical encoding ([`canon`]) is JSON with no whitespace, object keys
//! sorted by their UTF-8 bytes at every depth, integers in plain decimal (floats refused),
//! and strings escaping only `"`, `\` and control characters (`\b \t \n \f \r`, else
//! `\u00xx` lowercase), everything else as raw UTF-8. Another implementation recomputes a
//! hash by parsing the record, removing `hash`, re-encoding canonically and hashing with the
//! previous hash's bytes in front. Example for seq 1 (`prev` shortened here):
//! `SHA-256(32 zero bytes || {"at_unix_ms":7,"body":{"a":"x","b":1},"host":"h","kind":"link.up","prev":"000…000","seq":1,"v":1})`.
//!
//! # Checkpoints
//!
//! Every N records, or T after the last checkpoint when records wait (also when idle: the
//! writer's timer calls [`Spool::tick`]; the rule itself is [`CheckpointSchedule`]), the
//! host signs its chain head as a C2SP signed note ([`note`]):
//!
//! ```text
//! airlock/<host>
//! <seq of the head>
//! <base64 of the head hash>
//!
//! — <key name> <base64(4-byte key id || Ed25519 signature of the three lines)>
//! ```
//!
//! The key id is the first 4 bytes of SHA-256(key name || `\n` || 0x01 || public key), as
//! signed-note defines for Ed25519; the public key's text form is
//! `<name>+<hex key id>+<base64(0x01 || public key)>` ([`VerifierKey`]), the same as a Go
//! `note` verifier key. Keys are made with ring and stored in a 0600 file ([`keys`]).
//!
//! # Spool
//!
//! A directory (mode 0700, locked by `flock` on `lock` while open) of segment files named
//! by the first seq they were opened for (`00000000000000000042.seg`), plus `state.json`
//! (acknowledged seq, the last deleted record's seq and hash, the pending drop count).
//! A segment is a run of frames:
//!
//! ```text
//! u32 LE payload length | u8 type (1 record, 2 checkpoint) | u32 LE CRC-32 of the 5 header
//! bytes and the payload | payload (a record in canonical JSON, or a checkpoint note's text)
//! ```
//!
//! A record is written when [`Spool::append`] (one record) or [`Spool::append_many`] (group
//! commit: one write, one `fdatasync`) returns. Reopening reads every segment, checks each
//! frame's checksum and that the records form one chain (seq, `prev`, `hash`), and cuts the
//! last segment at its first incomplete or bad frame: a write torn at any byte (kill -9,
//! power loss) loses only the record it was writing, and the chain resumes from the last
//! complete record. A bad frame in an earlier segment, or complete frames that do not chain,
//! are not what a crash leaves and fail the open ([`SpoolError::Corrupt`]).
//!
//! Segments close at `segment_bytes`; [`Spool::ack`] records the collector's
//! acknowledgement and deletes the closed segments whose records are all acknowledged
//! (never the open one, never part of a segment). [`Spool::read_from`] returns batches
//! for shipping; after a restart shipping resumes at [`Spool::acked`]` + 1`.
//!
//! ## When the spool is full
//!
//! All segments together stay under `max_bytes`. A record that does not fit is handled by
//! its [`Priority`] (by default [`Kind::default_priority`]): a **must-write** record (the
//! lifecycle of an `approve` rule's request: held event, request, votes, decision, outcome)
//! makes the append fail with [`SpoolError::Full`], so the caller fails closed (the held
//! action is denied rather than allowed unrecorded); an **audit-only** record is dropped and
//! counted (the count survives restarts), and the next record that is written is preceded by
//! an `audit.dropped` record with the count and the time span of the drops.
//!
//! # Verifying
//!
//! [`verify_entries`] / [`verify_export`] / [`verify_spool_dir`] (or the incremental
//! [`ChainVerifier`] on the collector) take the host's [`VerifierKey`], optionally a trusted
//! head and the last checkpoint the collector acknowledged, and report counts and the first
//! [`Problem`] with its sequence number ([`Problem::first_bad_seq`]). Without a signed
//! checkpoint, a writer with disk access could rewrite the tail and recompute every hash
//! after it; checkpoints, and above all the acknowledged checkpoint kept by the collector,
//! are what pin the history.

pub mod bench;
pub mod canon;
pub mod chain;
pub mod keys;
pub mod note;
pub mod ocsf;
pub mod read;
pub mod record;
pub mod spool;
pub mod verify;

pub use bench::{bench_append, bench_append_many};
pub use chain::{Chain, ChainError};
pub use keys::{KeyError, SigningKey, VerifierKey};
pub use note::{Checkpoint, CheckpointPolicy, CheckpointSchedule, NoteError, SignedCheckpoint};
pub use read::{ReadError, ReadRecord};
pub use record::{Anchor, Draft, Hash, Kind, Priority, Record, RecordError, SCHEMA_VERSION};
pub use spool::{AckOutcome, Appended, Batch, Recovery, Spool, SpoolConfig, SpoolError};
pub use verify::{
    ChainVerifier, Counts, Entry, EntryError, Problem, Report, VerifyError, VerifyOptions,
    verify_entries, verify_export, verify_spool_dir,
};
