//! Chain and verify round trips, and every kind of tampering caught at the right seq.

use airlock_audit::{
    Anchor, Chain, ChainVerifier, Checkpoint, Draft, Entry, Hash, Kind, NoteError, Problem, Record,
    SignedCheckpoint, SigningKey, VerifierKey, VerifyOptions, verify_entries, verify_export,
};
use serde_json::json;

const HOST: &str = "web-1";

/// 20 records with a checkpoint after every 5th, in stream order.
fn stream(key: &SigningKey) -> Vec<Entry> {
    let mut chain = Chain::new(HOST).unwrap();
    let mut out = Vec::new();
    for i in 1..=20u64 {
        let kind = if i % 3 == 0 {
            Kind::EventHeld
        } else {
            Kind::Vote
        };
        let r = chain
            .seal(Draft::new(1_700_000_000_000 + i, kind, json!({"op": "exec", "i": i})).corr("r"))
            .unwrap();
        out.push(Entry::Record(r));
        if i % 5 == 0 {
            let cp = Checkpoint::for_head(HOST, chain.head()).sign(key);
            out.push(Entry::Checkpoint(cp));
        }
    }
    out
}

fn ok(entries: Vec<Entry>) -> Vec<Result<Entry, airlock_audit::EntryError>> {
    entries.into_iter().map(Ok).collect()
}

fn run(key: &SigningKey, entries: Vec<Entry>) -> airlock_audit::Report {
    verify_entries(&key.verifier(), &VerifyOptions::default(), ok(entries))
}

fn position(entries: &[Entry], seq: u64) -> usize {
    entries
        .iter()
        .position(|e| matches!(e, Entry::Record(r) if r.seq == seq))
        .unwrap()
}

fn record(entries: &[Entry], seq: u64) -> Record {
    match &entries[position(entries, seq)] {
        Entry::Record(r) => r.clone(),
        Entry::Checkpoint(_) => unreachable!(),
    }
}

fn first_bad(report: &airlock_audit::Report) -> u64 {
    report.problem.as_ref().expect("a problem").first_bad_seq()
}

#[test]
fn an_untouched_stream_verifies_with_counts() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let rep = run(&key, stream(&key));
    assert!(rep.is_ok(), "{:?}", rep.problem);
    assert_eq!(rep.counts.records, 20);
    assert_eq!(rep.counts.checkpoints_verified, 4);
    assert_eq!(
        (rep.counts.first_seq, rep.counts.last_seq),
        (Some(1), Some(20))
    );
    assert!(rep.counts.anchored);
    assert_eq!(rep.head.unwrap().seq, 20);
}

#[test]
fn export_lines_round_trip_and_a_changed_body_byte_is_caught() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let lines: Vec<String> = stream(&key).iter().map(Entry::to_line).collect();
    let text = lines.join("\n") + "\n";
    let rep = verify_export(&key.verifier(), &VerifyOptions::default(), text.as_bytes()).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problem);
    assert_eq!(rep.counts.records, 20);

    // One byte of record 8's body: "i":8 → "i":9.
    let changed = text.replacen(r#""i":8,"#, r#""i":9,"#, 1);
    assert_ne!(changed, text);
    let rep = verify_export(
        &key.verifier(),
        &VerifyOptions::default(),
        changed.as_bytes(),
    )
    .unwrap();
    assert_eq!(rep.problem, Some(Problem::Altered { seq: 8 }));
    assert_eq!(rep.counts.records, 7);

    // A line that is not an entry.
    let broken = text.replacen(r#"{"at_unix_ms":1700000000003,"#, "{oops", 1);
    let rep = verify_export(
        &key.verifier(),
        &VerifyOptions::default(),
        broken.as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        rep.problem,
        Some(Problem::Malformed { after_seq: 2, .. })
    ));
    assert_eq!(first_bad(&rep), 3);
}

#[test]
fn a_deleted_record_is_missing() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let mut s = stream(&key);
    s.remove(position(&s, 8));
    let rep = run(&key, s);
    assert_eq!(rep.problem, Some(Problem::Missing { seq: 8, found: 9 }));
    assert_eq!(first_bad(&rep), 8);
}

#[test]
fn swapped_records_are_reordered() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let mut s = stream(&key);
    let (a, b) = (position(&s, 8), position(&s, 9));
    s.swap(a, b);
    let rep = run(&key, s);
    assert_eq!(rep.problem, Some(Problem::Reordered { seq: 8 }));
    assert_eq!(first_bad(&rep), 8);
}

#[test]
fn an_inserted_record_is_caught_even_with_valid_hashes() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let mut s = stream(&key);
    // The forger links a record after 7 correctly: seq 8, prev = hash of 7, own hash right.
    let seven = record(&s, 7);
    let mut forger = Chain::resume(
        HOST,
        Anchor {
            seq: 7,
            hash: seven.hash,
        },
    )
    .unwrap();
    let forged = forger
        .seal(Draft::new(
            1,
            Kind::Decision,
            json!({"disposition": "approved"}),
        ))
        .unwrap();
    s.insert(position(&s, 8), Entry::Record(forged));
    let rep = run(&key, s);
    assert_eq!(rep.problem, Some(Problem::Repeated { seq: 8 }));
    assert_eq!(first_bad(&rep), 8);

    // A naive insertion (hash not recomputed after editing a copy) is an altered record.
    let mut s = stream(&key);
    let mut copy = record(&s, 8);
    copy.body = json!({"op": "exec", "i": 999});
    s.insert(position(&s, 8), Entry::Record(copy));
    assert_eq!(run(&key, s).problem, Some(Problem::Altered { seq: 8 }));
}

#[test]
fn a_replaced_and_rehashed_record_breaks_the_link_after_it() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let mut s = stream(&key);
    let mut r = record(&s, 12);
    r.body = json!({"op": "exec", "i": 0});
    r.hash = r.compute_hash().unwrap();
    let at = position(&s, 12);
    s[at] = Entry::Record(r);
    assert_eq!(run(&key, s).problem, Some(Problem::BrokenLink { seq: 13 }));
}

#[test]
fn a_truncated_tail_is_caught_against_the_acknowledged_checkpoint() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let s = stream(&key);
    let Entry::Checkpoint(ack) = s.last().unwrap().clone() else {
        panic!("the stream ends with a checkpoint")
    };
    // Cut after record 17: the checkpoints at 20 go with it.
    let cut: Vec<Entry> = s[..=position(&s, 17)].to_vec();
    let plain = run(&key, cut.clone());
    assert!(
        plain.is_ok(),
        "without the acknowledged checkpoint a cut tail looks complete"
    );
    let opts = VerifyOptions {
        acknowledged: Some(ack),
        ..VerifyOptions::default()
    };
    let rep = verify_entries(&key.verifier(), &opts, ok(cut));
    assert_eq!(
        rep.problem,
        Some(Problem::Truncated {
            last_seq: 17,
            checkpoint_seq: 20
        })
    );
    assert_eq!(first_bad(&rep), 18);
}

#[test]
fn a_rewritten_tail_with_recomputed_hashes_fails_the_acknowledged_checkpoint() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let s = stream(&key);
    let Entry::Checkpoint(ack) = s.last().unwrap().clone() else {
        panic!()
    };
    // Keep 1..=11 (and checkpoints 5, 10), rewrite 12..=20 from scratch, drop later notes.
    let eleven = record(&s, 11);
    let mut kept: Vec<Entry> = s[..=position(&s, 11)].to_vec();
    let mut forger = Chain::resume(
        HOST,
        Anchor {
            seq: 11,
            hash: eleven.hash,
        },
    )
    .unwrap();
    for i in 12..=20 {
        kept.push(Entry::Record(
            forger.seal(Draft::new(i, Kind::Vote, json!({}))).unwrap(),
        ));
    }
    assert!(run(&key, kept.clone()).is_ok());
    let opts = VerifyOptions {
        acknowledged: Some(ack),
        ..VerifyOptions::default()
    };
    let rep = verify_entries(&key.verifier(), &opts, ok(kept));
    assert_eq!(
        rep.problem,
        Some(Problem::HeadMismatch {
            checkpoint_seq: 20,
            last_good_seq: 10
        })
    );
    assert_eq!(first_bad(&rep), 11);
}

#[test]
fn a_checkpoint_with_a_bad_signature_is_refused() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let mut s = stream(&key);
    let at = s
        .iter()
        .position(|e| matches!(e, Entry::Checkpoint(c) if c.claimed().size == 10))
        .unwrap();
    let Entry::Checkpoint(c) = &s[at] else {
        panic!()
    };
    // Flip one character of the signature's base64 (past the 4-byte key id).
    let text = c.text().to_owned();
    let sig_at = text.rfind(' ').unwrap() + 12;
    let mut bytes = text.into_bytes();
    bytes[sig_at] = if bytes[sig_at] == b'A' { b'B' } else { b'A' };
    let bad = SignedCheckpoint::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
    s[at] = Entry::Checkpoint(bad);
    let rep = run(&key, s);
    assert!(matches!(
        rep.problem,
        Some(Problem::BadCheckpoint {
            size: 10,
            error: NoteError::BadSignature(_)
        })
    ));
    assert_eq!(first_bad(&rep), 10);

    // Another key's verifier finds no signature by it at all.
    let other = SigningKey::generate("airlock/web-1").unwrap();
    let rep = verify_entries(
        &other.verifier(),
        &VerifyOptions::default(),
        ok(stream(&key)),
    );
    assert!(matches!(
        rep.problem,
        Some(Problem::BadCheckpoint {
            size: 5,
            error: NoteError::NoSignatureByKey(_)
        })
    ));
}

#[test]
fn a_checkpoint_for_a_different_head_is_a_mismatch() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let mut s = stream(&key);
    let at = s
        .iter()
        .position(|e| matches!(e, Entry::Checkpoint(c) if c.claimed().size == 10))
        .unwrap();
    let other_head = Checkpoint::for_head(
        HOST,
        Anchor {
            seq: 10,
            hash: Hash::of(b"another history"),
        },
    );
    s[at] = Entry::Checkpoint(other_head.sign(&key));
    let rep = run(&key, s);
    assert_eq!(
        rep.problem,
        Some(Problem::HeadMismatch {
            checkpoint_seq: 10,
            last_good_seq: 5
        })
    );
    assert_eq!(first_bad(&rep), 6);

    // The same size signed twice with different heads is a fork.
    let mut s = stream(&key);
    s.push(Entry::Checkpoint(other_head.sign(&key)));
    assert_eq!(
        run(&key, s).problem,
        Some(Problem::ConflictingCheckpoints { size: 10 })
    );

    // A checkpoint of another host's log.
    let mut s = stream(&key);
    let foreign = Checkpoint::for_head("web-2", Anchor::GENESIS).sign(&key);
    s.insert(0, Entry::Checkpoint(foreign));
    let opts = VerifyOptions {
        host: Some(HOST.into()),
        ..VerifyOptions::default()
    };
    assert!(matches!(
        verify_entries(&key.verifier(), &opts, ok(s)).problem,
        Some(Problem::WrongOrigin { size: 0, .. })
    ));
}

#[test]
fn the_collector_verifies_batches_incrementally_and_rows_in_any_table_order() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let s = stream(&key);
    let cut = position(&s, 10) + 2; // records 1..=10 and the checkpoint at 10
    let mut v = ChainVerifier::new(key.verifier(), Some(HOST));
    for e in &s[..cut] {
        match e {
            Entry::Record(r) => v.record(r).unwrap(),
            Entry::Checkpoint(c) => v.checkpoint(c).unwrap(),
        }
    }
    let stored = v.head().unwrap();
    assert_eq!(stored.seq, 10);

    // Later, a new verifier resumes from the stored head with the next batch.
    let mut v = ChainVerifier::resume(key.verifier(), HOST, stored);
    for e in &s[cut..] {
        match e {
            Entry::Record(r) => v.record(r).unwrap(),
            Entry::Checkpoint(c) => v.checkpoint(c).unwrap(),
        }
    }
    v.finish().unwrap();
    assert_eq!(v.counts().records, 10);
    assert_eq!(v.counts().checkpoints_verified, 2);
    assert!(v.counts().anchored);

    // Rows from two tables: all checkpoints first, then all records.
    let (cps, recs): (Vec<Entry>, Vec<Entry>) = s
        .into_iter()
        .partition(|e| matches!(e, Entry::Checkpoint(_)));
    let rep = run(&key, cps.into_iter().chain(recs).collect());
    assert!(rep.is_ok(), "{:?}", rep.problem);
    assert_eq!(rep.counts.checkpoints_verified, 4);
}

#[test]
fn a_suffix_is_anchored_by_the_checkpoint_before_it_and_verifier_keys_parse() {
    let key = SigningKey::generate("airlock/web-1").unwrap();
    let s = stream(&key);
    let from = position(&s, 10) + 1; // the checkpoint at 10, then records 11..
    let rep = run(&key, s[from..].to_vec());
    assert!(rep.is_ok(), "{:?}", rep.problem);
    assert!(rep.counts.anchored);
    assert_eq!(rep.counts.first_seq, Some(11));

    let unanchored = run(&key, s[from + 1..].to_vec());
    assert!(unanchored.is_ok());
    assert!(!unanchored.counts.anchored);

    let text = key.verifier().to_string();
    assert_eq!(text.parse::<VerifierKey>().unwrap(), key.verifier());
}
