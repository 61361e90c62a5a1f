//! The spool: torn writes at any byte, the full-spool choice, acknowledgements, restarts.

use std::path::{Path, PathBuf};

use airlock_audit::{
    Appended, CheckpointPolicy, Draft, Kind, Priority, Record, SigningKey, Spool, SpoolConfig,
    SpoolError, VerifyOptions, verify_spool_dir,
};
use serde_json::json;

const HOST: &str = "db-1";

/// xorshift64*: a small deterministic PRNG, so a failing case can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn cfg(max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        segment_bytes,
        checkpoints: CheckpointPolicy {
            every_records: 4,
            every_ms: 60_000,
        },
    }
}

fn draft(i: u64, pad: usize) -> Draft {
    Draft::new(
        i,
        Kind::EventAllowed,
        json!({"op": "open_write", "i": i, "pad": "x".repeat(pad)}),
    )
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (end offset, is a record) of every frame of a segment, by the documented framing.
fn frame_ends(bytes: &[u8]) -> Vec<(usize, bool)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let is_record = bytes[at + 4] == 1;
        at += 9 + len;
        out.push((at, is_record));
    }
    out
}

fn all_records(spool: &Spool, from: u64) -> Vec<Record> {
    spool.read_from(from, usize::MAX).unwrap().records
}

#[test]
fn torn_writes_at_random_bytes_keep_every_complete_record() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..150 {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("airlock/db-1").unwrap();
        let v = key.verifier();
        let mut spool = Spool::open(dir.path(), HOST, cfg(1 << 20, 700), Some(key), 0).unwrap();
        let n = 1 + rng.below(30);
        let mut written = Vec::new();
        let mut i = 0;
        while i < n {
            // Single appends and small group commits.
            let k = (1 + rng.below(3)).min(n - i);
            let items = (i..i + k)
                .map(|j| (draft(j, rng.below(120) as usize), Priority::AuditOnly))
                .collect();
            for a in spool.append_many(items).unwrap() {
                let Appended::Written { record, .. } = a else {
                    panic!("room for all")
                };
                written.push(record);
            }
            i += k;
        }
        drop(spool);

        let segs = segments(dir.path());
        let last = segs.last().unwrap();
        let bytes = std::fs::read(last).unwrap();
        let in_earlier: usize = segs[..segs.len() - 1]
            .iter()
            .map(|p| {
                frame_ends(&std::fs::read(p).unwrap())
                    .iter()
                    .filter(|f| f.1)
                    .count()
            })
            .sum();
        let mode = rng.below(3);
        let expect_kept = if bytes.is_empty() || mode == 2 {
            // A frame torn on its way in: a prefix of a valid frame after the last one.
            let mut extra = bytes.clone();
            let partial = 1 + rng.below(60) as usize;
            extra.extend_from_slice(&(500u32).to_le_bytes());
            extra.push(1);
            extra.extend(std::iter::repeat_n(b'{', partial));
            std::fs::write(last, &extra).unwrap();
            written.len()
        } else {
            let at = rng.below(bytes.len() as u64) as usize;
            if mode == 0 {
                std::fs::write(last, &bytes[..at]).unwrap();
            } else {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << rng.below(8);
                std::fs::write(last, &bad).unwrap();
            }
            let before = frame_ends(&bytes)
                .iter()
                .filter(|&&(end, rec)| rec && end <= at)
                .count();
            in_earlier + before
        };

        let mut spool = Spool::open(dir.path(), HOST, cfg(1 << 20, 700), None, 0).unwrap();
        let back = all_records(&spool, 1);
        assert_eq!(
            back.len(),
            expect_kept,
            "case {case}: complete records before the tear"
        );
        assert_eq!(
            back[..],
            written[..expect_kept],
            "case {case}: nothing changed or invented"
        );
        assert_eq!(spool.head().seq, expect_kept as u64, "case {case}");
        let more = spool.append(draft(99, 3), Priority::MustWrite).unwrap();
        let Appended::Written { record, .. } = more else {
            panic!()
        };
        assert_eq!(
            record.seq,
            expect_kept as u64 + 1,
            "case {case}: the chain continues"
        );
        if let Some(prev) = back.last() {
            assert_eq!(record.prev, prev.hash);
        }
        drop(spool);
        let rep = verify_spool_dir(&v, &VerifyOptions::default(), dir.path()).unwrap();
        assert!(rep.is_ok(), "case {case}: {:?}", rep.problem);
        assert_eq!(rep.counts.records, expect_kept as u64 + 1);
    }
}

#[test]
fn damage_before_the_last_segment_is_not_repaired_silently() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), HOST, cfg(1 << 20, 300), None, 0).unwrap();
    for i in 0..10 {
        spool.append(draft(i, 50), Priority::AuditOnly).unwrap();
    }
    drop(spool);
    let first = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    assert!(matches!(
        Spool::open(dir.path(), HOST, cfg(1 << 20, 300), None, 0),
        Err(SpoolError::Corrupt { .. })
    ));
}

#[test]
fn a_full_spool_fails_must_write_and_counts_dropped_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("airlock/db-1").unwrap();
    let v = key.verifier();
    let c = cfg(2000, 600);
    let mut spool = Spool::open(dir.path(), HOST, c, None, 0).unwrap();
    let mut i = 0;
    while matches!(
        spool.append(draft(i, 100), Priority::AuditOnly).unwrap(),
        Appended::Written { .. }
    ) {
        i += 1;
    }
    let head = spool.head();
    assert!(spool.used_bytes() <= 2000);
    assert_eq!(spool.dropped().count, 1);
    let held = Draft::new(
        500,
        Kind::EventHeld,
        json!({"op": "exec", "pad": "y".repeat(100)}),
    );
    assert!(matches!(
        spool.append(held.clone(), Priority::MustWrite),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(
        spool.append(draft(501, 100), Priority::AuditOnly).unwrap(),
        Appended::Dropped { pending: 2 }
    );
    assert_eq!(spool.head(), head, "nothing written while full");

    // The count survives a restart.
    drop(spool);
    let mut spool = Spool::open(dir.path(), HOST, c, Some(key), 0).unwrap();
    assert_eq!(spool.dropped().count, 2);

    // The collector acknowledges everything: closed segments go, room comes back.
    let freed = spool.ack(head.seq).unwrap();
    assert!(freed.segments_deleted > 0);
    let Appended::Written { notice, record } = spool.append(held, Priority::MustWrite).unwrap()
    else {
        panic!("room after the ack")
    };
    let notice = notice.expect("an audit.dropped record first");
    assert_eq!(notice.kind, Kind::AuditDropped);
    assert_eq!(notice.body["count"], 2);
    assert_eq!(notice.body["first_at_unix_ms"], i);
    assert_eq!(notice.body["last_at_unix_ms"], 501);
    assert_eq!((notice.seq, record.seq), (head.seq + 1, head.seq + 2));
    assert_eq!(record.prev, notice.hash);
    assert_eq!(spool.dropped().count, 0);
    spool.checkpoint_now(1000).unwrap();
    drop(spool);
    let spool = Spool::open(dir.path(), HOST, c, None, 0).unwrap();
    assert_eq!(
        spool.dropped().count,
        0,
        "reported drops are not reported twice"
    );
    drop(spool);
    let rep = verify_spool_dir(&v, &VerifyOptions::default(), dir.path()).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problem);
    assert!(!rep.counts.anchored, "the acknowledged prefix is gone");
    assert_eq!(rep.counts.checkpoints_verified, 1);
}

#[test]
fn a_must_write_batch_that_does_not_fit_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), HOST, cfg(900, 600), None, 0).unwrap();
    let items = (0..10)
        .map(|i| (draft(i, 100), Priority::MustWrite))
        .collect();
    assert!(matches!(
        spool.append_many(items),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.head().seq, 0);
    assert_eq!(spool.used_bytes(), 0);
}

#[test]
fn ack_deletes_only_acknowledged_segments_and_reopen_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("airlock/db-1").unwrap();
    let v = key.verifier();
    let c = cfg(1 << 20, 400);
    let mut spool = Spool::open(dir.path(), HOST, c, Some(key), 0).unwrap();
    let mut written = Vec::new();
    for i in 0..40 {
        if let Appended::Written { record, .. } =
            spool.append(draft(i, 40), Priority::AuditOnly).unwrap()
        {
            written.push(record);
        }
    }
    let before = segments(dir.path()).len();
    assert!(before > 3);
    assert!(matches!(
        spool.ack(41),
        Err(SpoolError::AckBeyondHead { .. })
    ));

    let out = spool.ack(17).unwrap();
    let after = segments(dir.path());
    assert_eq!(after.len(), before - out.segments_deleted);
    // Every record after the acknowledgement is still there, in order.
    let rest = all_records(&spool, 18);
    assert_eq!(rest[..], written[17..]);
    // Whatever remains from before 18 is a whole segment that holds record 18's
    // predecessors, never a partial one.
    let first_available = spool.read_from(1, 1).err();
    let Some(SpoolError::Gone {
        first_available, ..
    }) = first_available
    else {
        panic!("the acknowledged prefix is gone")
    };
    assert!(first_available <= 18 && first_available > 1);
    assert_eq!(spool.acked(), 17);
    let batch = spool.read_from(18, 5).unwrap();
    assert_eq!(batch.range(), Some((18, 22)));
    assert!(batch.checkpoints.iter().all(|c| c.claimed().size <= 22));
    assert!(batch.checkpoints.iter().any(|c| c.claimed().size == 20));
    let head = spool.head();
    drop(spool);

    // Restart: the ack, the head and the data after the ack are all there.
    let mut spool = Spool::open(dir.path(), HOST, c, None, 0).unwrap();
    assert_eq!(spool.acked(), 17);
    assert_eq!(spool.head(), head);
    assert_eq!(all_records(&spool, spool.acked() + 1)[..], written[17..]);
    let Appended::Written { record, .. } = spool.append(draft(99, 1), Priority::MustWrite).unwrap()
    else {
        panic!()
    };
    assert_eq!((record.seq, record.prev), (41, head.hash));
    // The collector acknowledged the checkpoint at 20: it anchors and bounds the spool.
    let ack_cp = spool
        .read_from(18, 10)
        .unwrap()
        .checkpoints
        .into_iter()
        .find(|c| c.claimed().size == 20)
        .unwrap();
    drop(spool);
    let opts = VerifyOptions {
        acknowledged: Some(ack_cp),
        ..VerifyOptions::default()
    };
    let rep = verify_spool_dir(&v, &opts, dir.path()).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problem);
    assert_eq!(rep.counts.last_seq, Some(41));

    // Export → verify gives the same verdict.
    let spool = Spool::open(dir.path(), HOST, c, None, 0).unwrap();
    let mut out = Vec::new();
    let lines = spool.export(first_available, &mut out).unwrap();
    assert!(lines > 20);
    let rep = airlock_audit::verify_export(&v, &opts, out.as_slice()).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problem);
}

#[test]
fn the_spool_is_locked_and_idle_ticks_checkpoint_pending_records() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("airlock/db-1").unwrap();
    let mut spool = Spool::open(dir.path(), HOST, cfg(1 << 20, 1 << 16), Some(key), 1000).unwrap();
    assert!(matches!(
        Spool::open(dir.path(), HOST, SpoolConfig::default(), None, 0),
        Err(SpoolError::Locked { .. })
    ));
    assert_eq!(spool.tick(100_000).unwrap(), None, "nothing to sign");
    spool.append(draft(2000, 1), Priority::AuditOnly).unwrap();
    assert_eq!(spool.schedule().next_due_ms(spool.head().seq), Some(61_000));
    assert_eq!(spool.tick(60_999).unwrap(), None);
    let cp = spool.tick(61_000).unwrap().expect("due while idle");
    assert_eq!(cp.claimed().size, 1);
    assert_eq!(spool.tick(200_000).unwrap(), None, "signed already");
    drop(spool);
    assert!(matches!(
        Spool::open(dir.path(), "other-host", SpoolConfig::default(), None, 0),
        Err(SpoolError::HostMismatch { .. })
    ));
}

#[test]
fn bench_append_reports_rates() {
    let (rate, bytes) = airlock_audit::bench_append(50);
    assert!(rate > 0.0);
    assert!(bytes > 300.0 && bytes < 2000.0, "{bytes}");
}
