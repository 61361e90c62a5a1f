//! The audit collector's storage (`store/audit.rs`) on both databases, like
//! `store_suite.rs`: each case runs as `sqlite::CASE` and `postgres::CASE` (a throwaway
//! cluster; SKIP when PostgreSQL is not installed).
//!
//! What is guarded: the first audit key is kept; a batch is stored whole or not at all and
//! only on the head it was verified against; cursors are unique and increase in commit order
//! across two pools (two replicas); filters; retention keeps the anchor of the pruned chain.
//! PostgreSQL stores a batch's records with COPY (`store/audit_copy.rs`), SQLite with INSERTs:
//! any text comes back byte for byte, and a batch repeating a stored record fails the same
//! way on both.

// `record_of` is for the vote suites.
#[allow(dead_code)]
#[macro_use]
mod common;

use airlock_audit::{Anchor, Kind};
use airlock_server::store::{AuditFilter, NewAuditRecord, Store, StoreError};
use airlock_server::testing::audit::HostChain;
use common::Db;
use serde_json::json;

const NOW: u64 = 1_700_000_000_000;

cases!(
    audit_key_first_one_is_kept,
    audit_batch_is_whole_and_only_on_the_verified_head,
    audit_cursors_are_unique_and_in_commit_order_across_two_pools,
    audit_query_filters,
    audit_prune_keeps_the_anchor_and_alerts_are_pruned,
    audit_text_of_every_kind_is_stored_byte_identical,
    audit_batch_repeating_a_stored_record_stores_nothing,
    audit_nul_in_a_filter_field_is_stored_not_refused_forever,
);

/// `n` rows of `chain` ready to store.
fn rows(chain: &mut HostChain, n: usize) -> Vec<NewAuditRecord> {
    (0..n)
        .map(|i| {
            let (r, text) = chain.seal(
                Kind::Decision,
                Some("r1"),
                json!({"agent": "claude", "op": "exec", "decision": "approved", "approver": format!("p{i}")}),
            );
            NewAuditRecord::new(&r, text)
        })
        .collect()
}

fn head_of(rows: &[NewAuditRecord]) -> Anchor {
    let last = rows.last().unwrap();
    Anchor {
        seq: last.seq,
        hash: last.hash,
    }
}

async fn all(s: &Store, host: &str) -> Vec<(u64, u64)> {
    let f = AuditFilter {
        host: Some(host.into()),
        limit: 10_000,
        ..Default::default()
    };
    let rows = s.audit_records(&f).await.unwrap();
    rows.iter().map(|r| (r.seq, r.cursor)).collect()
}

async fn audit_key_first_one_is_kept(db: Db) {
    let s = db.open().await;
    assert_eq!(s.audit_key("web-1").await.unwrap(), None);
    let k = s
        .set_audit_key_if_absent("web-1", "key-a", NOW)
        .await
        .unwrap();
    assert_eq!((k.key.as_str(), k.first_seen_unix_ms), ("key-a", NOW));
    let again = s
        .set_audit_key_if_absent("web-1", "key-b", NOW + 1)
        .await
        .unwrap();
    assert_eq!(again, k, "the first key stays");
    assert_eq!(s.audit_head("web-1").await.unwrap(), Anchor::GENESIS);
}

async fn audit_batch_is_whole_and_only_on_the_verified_head(db: Db) {
    let s = db.open().await;
    let mut c = HostChain::new("web-1");
    s.set_audit_key_if_absent("web-1", &c.verifier_key(), NOW)
        .await
        .unwrap();
    let first = rows(&mut c, 3);
    let cp = (3, c.checkpoint());
    let head = s
        .store_audit_batch(
            "web-1",
            Anchor::GENESIS,
            &first,
            std::slice::from_ref(&cp),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(head, head_of(&first));
    assert_eq!(s.audit_head("web-1").await.unwrap(), head);
    assert_eq!(s.audit_checkpoints("web-1").await.unwrap(), [cp]);
    let hashes = s.audit_hashes("web-1", 2, 3).await.unwrap();
    assert_eq!(hashes.keys().copied().collect::<Vec<_>>(), [2, 3]);
    assert_eq!(hashes[&3], head.hash);

    // Verified against a head that is no longer the stored one: nothing of it is stored.
    let next = rows(&mut c, 2);
    let e = s
        .store_audit_batch("web-1", Anchor::GENESIS, &next, &[], NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::AuditHeadMoved {
                expected: 0,
                found: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(all(&s, "web-1").await.len(), 3);
    // A duplicate seq fails the whole statement: the first record of the batch is not kept.
    let mut dup = next.clone();
    dup.push(next[0].clone());
    assert!(
        s.store_audit_batch("web-1", head, &dup, &[], NOW)
            .await
            .is_err()
    );
    assert_eq!(all(&s, "web-1").await.len(), 3);
    let head = s
        .store_audit_batch("web-1", head, &next, &[], NOW)
        .await
        .unwrap();
    assert_eq!(head.seq, 5);
}

async fn audit_cursors_are_unique_and_in_commit_order_across_two_pools(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let mut chains = [HostChain::new("web-1"), HostChain::new("web-2")];
    let mut heads = [Anchor::GENESIS; 2];
    for round in 0..5 {
        let mut tasks = Vec::new();
        for (i, c) in chains.iter_mut().enumerate() {
            let store = if (round + i) % 2 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            let batch = rows(c, 7);
            let (host, head) = (c_host(i), heads[i]);
            heads[i] = head_of(&batch);
            tasks.push(tokio::spawn(async move {
                store
                    .store_audit_batch(host, head, &batch, &[], NOW)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let mut cursors: Vec<u64> = Vec::new();
    for h in ["web-1", "web-2"] {
        let got = all(&a, h).await;
        assert_eq!(got.len(), 35);
        // A host's records are stored in chain order, so their cursors increase with seq.
        assert!(
            got.windows(2)
                .all(|w| w[0].0 + 1 == w[1].0 && w[0].1 < w[1].1),
            "{got:?}"
        );
        cursors.extend(got.iter().map(|r| r.1));
    }
    cursors.sort_unstable();
    cursors.dedup();
    assert_eq!(cursors.len(), 70, "cursors are unique");
    // Each batch took a contiguous block: 10 batches, 70 cursors, none lost.
    assert_eq!((cursors[0], cursors[69]), (1, 70));
}

fn c_host(i: usize) -> &'static str {
    ["web-1", "web-2"][i]
}

async fn audit_query_filters(db: Db) {
    let s = db.open().await;
    let mut c = HostChain::new("web-1");
    let batch = rows(&mut c, 4);
    s.store_audit_batch("web-1", Anchor::GENESIS, &batch, &[], NOW)
        .await
        .unwrap();
    let q = |f: AuditFilter| {
        let s = s.clone();
        async move {
            let r = s
                .audit_records(&AuditFilter { limit: 100, ..f })
                .await
                .unwrap();
            r.iter().map(|r| r.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(q(AuditFilter::default()).await, [1, 2, 3, 4]);
    let approver = AuditFilter {
        approver: Some("p2".into()),
        ..Default::default()
    };
    assert_eq!(q(approver).await, [3]);
    let kind = AuditFilter {
        kind: Some("decision".into()),
        agent: Some("claude".into()),
        op: Some("exec".into()),
        decision: Some("approved".into()),
        since_unix_ms: Some(batch[1].at_unix_ms),
        until_unix_ms: Some(batch[3].at_unix_ms),
        ..Default::default()
    };
    assert_eq!(q(kind).await, [2, 3]);
    let other = AuditFilter {
        host: Some("db-1".into()),
        ..Default::default()
    };
    assert!(q(other).await.is_empty());
    let rows = s
        .audit_records(&AuditFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let after = AuditFilter {
        after_cursor: rows[1].cursor,
        ..Default::default()
    };
    assert_eq!(q(after).await, [3, 4]);
}

async fn audit_prune_keeps_the_anchor_and_alerts_are_pruned(db: Db) {
    let s = db.open().await;
    let mut c = HostChain::new("web-1");
    s.set_audit_key_if_absent("web-1", &c.verifier_key(), NOW)
        .await
        .unwrap();
    let old = rows(&mut c, 3);
    let cp = (3, "note at 3".to_string());
    let h = s
        .store_audit_batch("web-1", Anchor::GENESIS, &old, &[cp], NOW)
        .await
        .unwrap();
    let new = rows(&mut c, 2);
    let h2 = s
        .store_audit_batch("web-1", h, &new, &[], NOW + 10_000)
        .await
        .unwrap();
    let first = s.add_audit_alert("web-1", "old alert", NOW).await.unwrap();
    let second = s
        .add_audit_alert("web-1", "new alert", NOW + 10_000)
        .await
        .unwrap();
    assert!(second > first);

    let p = s.prune_audit(NOW + 5_000).await.unwrap();
    assert_eq!((p.records, p.checkpoints, p.alerts), (3, 0, 1));
    assert_eq!(
        all(&s, "web-1")
            .await
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(s.audit_head("web-1").await.unwrap(), h2);
    let alerts = s
        .audit_alerts(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let messages: Vec<&str> = alerts.iter().map(|a| a.message.as_str()).collect();
    assert_eq!(messages, ["new alert"]);
    // Everything pruned: the head is the anchor of the last deleted record.
    let p = s.prune_audit(NOW + 20_000).await.unwrap();
    assert_eq!((p.records, p.checkpoints), (2, 1));
    assert!(all(&s, "web-1").await.is_empty());
    assert_eq!(s.audit_head("web-1").await.unwrap(), h2);
    let more = rows(&mut c, 1);
    let h3 = s
        .store_audit_batch("web-1", h2, &more, &[], NOW + 30_000)
        .await
        .unwrap();
    assert_eq!(h3.seq, 6);
}

/// Text that a COPY (or any statement) could garble: the escapes of JSON and of COPY's text
/// format, raw control characters, quotes and delimiters, COPY's end-of-data marker, the
/// binary format's signature, non-ASCII. (Not NUL: PostgreSQL's TEXT cannot hold it, whatever
/// the statement; the canonical JSON of a record escapes it.)
const AWKWARD: [&str; 11] = [
    "",
    r"back\slash \\ \N \. \t \n \r \x41 \101 \u00e9 \",
    "tab\there\t",
    "line\nfeed\r\ncrlf\rcr\n",
    "\\.\n\\.\r\n\\.",
    "quotes ' \" `, commas, | pipes; semicolons \u{0}",
    "control \u{1} \u{7} \u{8} \u{b} \u{c} \u{1b} \u{7f} \u{80} \u{9f}",
    "unicode é ß 中文 🦀 \u{200b} \u{2028} \u{2029} \u{feff} e\u{301} עברית \u{10ffff}",
    "sql '); DROP TABLE audit_records; --",
    "PGCOPY\n\u{ff}\r\n\u{0}",
    "{\"json\": \"in \\\"json\\\"\\n\", \"n\": [1, -2.5e3]}",
];

/// Every column of `host`'s stored records, by seq, as stored.
type StoredRow = (
    String,
    i64,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

async fn stored_rows(db: &Db, host: &str) -> Vec<StoredRow> {
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT host, seq, hash, kind, corr, at_ms, agent, op, decision, approver, record \
         FROM audit_records WHERE host = $1 ORDER BY seq",
    )
    .bind(host)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

fn row_of(host: &str, r: &NewAuditRecord) -> StoredRow {
    let i = |v: u64| i64::try_from(v).unwrap();
    (
        host.to_string(),
        i(r.seq),
        r.hash.to_string(),
        r.kind.clone(),
        r.corr.clone(),
        i(r.at_unix_ms),
        r.agent.clone(),
        r.op.clone(),
        r.decision.clone(),
        r.approver.clone(),
        r.record.clone(),
    )
}

async fn audit_text_of_every_kind_is_stored_byte_identical(db: Db) {
    let s = db.open().await;
    let mut c = HostChain::new("web-1");
    let mut batch = Vec::new();
    for (i, text) in AWKWARD.iter().enumerate() {
        // NUL aside (see AWKWARD), in every text column, and escaped in the record's JSON.
        let raw = text.replace('\u{0}', "");
        let (r, canonical) = c.seal(
            Kind::Decision,
            Some(&raw),
            json!({"agent": raw, "op": raw, "decision": raw, "approver": raw, "text": text, "i": i}),
        );
        let row = NewAuditRecord::new(&r, canonical);
        assert_eq!(row.agent.as_deref(), Some(raw.as_str()));
        // Raw in the record column too: the store keeps whatever text it is given.
        let mut raw_record = row.clone();
        raw_record.record = raw.clone();
        batch.push(if i % 2 == 0 { row } else { raw_record });
    }
    // NULL columns stay NULL, next to the empty strings above.
    let (r, text) = c.seal(Kind::EventAllowed, None, json!({"n": 1}));
    batch.push(NewAuditRecord::new(&r, text));
    assert_eq!(batch.last().unwrap().agent, None);
    let head = s
        .store_audit_batch("web-1", Anchor::GENESIS, &batch, &[], NOW)
        .await
        .unwrap();
    assert_eq!(head, head_of(&batch));
    let want: Vec<StoredRow> = batch.iter().map(|r| row_of("web-1", r)).collect();
    let got = stored_rows(&db, "web-1").await;
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "stored as given, byte for byte");
    }
    // The filters find each exact value.
    for r in &batch {
        let f = AuditFilter {
            agent: r.agent.clone(),
            approver: r.approver.clone(),
            limit: 100,
            ..Default::default()
        };
        let found: Vec<u64> = s
            .audit_records(&f)
            .await
            .unwrap()
            .iter()
            .map(|x| x.seq)
            .collect();
        if r.agent.is_some() {
            assert_eq!(found, [r.seq], "{:?}", r.agent);
        }
    }
}

async fn audit_batch_repeating_a_stored_record_stores_nothing(db: Db) {
    let s = db.open().await;
    let mut c = HostChain::new("web-1");
    let first = rows(&mut c, 4);
    let head = s
        .store_audit_batch("web-1", Anchor::GENESIS, &first, &[], NOW)
        .await
        .unwrap();
    let cursors = all(&s, "web-1").await;
    let more = rows(&mut c, 3);
    let unique = |e: StoreError| match e {
        StoreError::Db(sqlx::Error::Database(d)) => d.is_unique_violation(),
        _ => false,
    };
    // The collector skips the records it has before storing a batch; one that gets here
    // anyway (overlapping, or the whole stored batch again) fails whole on both databases.
    let overlapping: Vec<_> = first[2..].iter().chain(&more).cloned().collect();
    for again in [overlapping, first.clone()] {
        let cp = (7, "note".to_string());
        let e = s
            .store_audit_batch("web-1", head, &again, &[cp], NOW)
            .await
            .unwrap_err();
        assert!(unique(e), "a unique violation");
        assert_eq!(
            all(&s, "web-1").await,
            cursors,
            "nothing stored, nothing renumbered"
        );
        assert!(s.audit_checkpoints("web-1").await.unwrap().is_empty());
        assert_eq!(s.audit_head("web-1").await.unwrap(), head);
    }
    // The connection that failed goes on (PostgreSQL: out of COPY mode, rolled back).
    for _ in 0..3 {
        assert_eq!(s.audit_head("web-1").await.unwrap(), head);
    }
    let end = s
        .store_audit_batch("web-1", head, &more, &[], NOW)
        .await
        .unwrap();
    assert_eq!(end, head_of(&more));
    let stored: Vec<u64> = all(&s, "web-1").await.iter().map(|r| r.0).collect();
    assert_eq!(stored, [1, 2, 3, 4, 5, 6, 7], "each record once");
}

/// Regression: a NUL in a record's `agent` (or `op`, `decision`, `approver`, or its
/// correlation id) failed the batch on PostgreSQL, whose TEXT cannot hold NUL, so the host's
/// resends failed the same way forever. The filter columns take U+FFFD instead; the record's
/// JSON (NUL escaped) is stored as sent.
async fn audit_nul_in_a_filter_field_is_stored_not_refused_forever(db: Db) {
    let s = db.open().await;
    let mut c = HostChain::new("web-1");
    let (r, text) = c.seal(
        Kind::Decision,
        Some("r\u{0}1"),
        json!({"agent": "a\u{0}b", "op": "\u{0}", "decision": "ok", "approver": "p\u{0}"}),
    );
    let row = NewAuditRecord::new(&r, text.clone());
    assert_eq!(row.agent.as_deref(), Some("a\u{fffd}b"));
    assert_eq!(row.corr.as_deref(), Some("r\u{fffd}1"));
    assert!(text.contains("a\\u0000b"), "{text}");
    let batch = [row];
    s.store_audit_batch("web-1", Anchor::GENESIS, &batch, &[], NOW)
        .await
        .expect("stored on every database");
    let got = stored_rows(&db, "web-1").await;
    assert_eq!(got, [row_of("web-1", &batch[0])]);
    assert_eq!(got[0].10, text, "the record's JSON as sent");
}
