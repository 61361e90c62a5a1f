//! The audit collector's storage (`store/audit.rs`) on both databases, like
//! `store_suite.rs`: each case runs as `sqlite::CASE` and `postgres::CASE` (a throwaway
//! cluster; SKIP when PostgreSQL is not installed).
//!
//! What is guarded: the first audit key is kept; a batch is stored whole or not at all and
//! only on the head it was verified against; cursors are unique and increase in commit order
//! across two pools (two replicas); filters; retention keeps the anchor of the pruned chain.

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
