//! The storage layer (`airlock_server::store`) against both databases: every case below runs
//! once on SQLite (a temporary file) and once on a real PostgreSQL (a throwaway cluster,
//! `airlock_server::testing::pg`, one fresh database per case). Test names are `sqlite::CASE` and
//! `postgres::CASE`.
//!
//! The replica cases open two `Store`s (two pools) on one database, as two server replicas
//! would, and race votes through both.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use airlock_approval::{Approver, DecisionRecord, Release, RequestState, Vote};
use airlock_server::store::{
    Attempt, RequestFilter, Store, StoreError, StoredRequest, TokenRow, Upserted,
};
use airlock_server::testing::pg::PgCluster;
use common::{Db, record_of};

const NOW: u64 = 1_700_000_000_000;

cases!(
    placeholders,
    migrations_idempotent,
    enrollment,
    host_revoke_and_reenroll,
    tokens,
    upsert_idempotent_and_other_host,
    list_filters,
    votes_and_already_voted,
    vote_on_decided_or_closed,
    close_idempotent,
    attempts_recorded,
    replica_conflict_first_vote_decides,
    replica_two_of_two,
    round_trip_timing,
);

/// The harness itself: a test that panics while holding a cluster leaves no server and no
/// directory behind.
#[test]
fn pg_cluster_is_removed_when_a_test_panics() {
    let caught = std::panic::catch_unwind(|| {
        let Some(c) = PgCluster::start() else { return };
        let at = (c.dir().to_path_buf(), c.port());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", at.1)).is_ok(),
            "server up"
        );
        std::panic::panic_any(at);
    });
    let Err(payload) = caught else { return }; // skipped: not installed
    let (dir, port) = *payload
        .downcast::<(std::path::PathBuf, u16)>()
        .expect("the test's own panic");
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening on {port}"
    );
}

// ---------------------------------------------------------------------------------------
// Helpers

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn req(id: &str, host: &str, agent: Option<&str>, created: u64) -> StoredRequest {
    StoredRequest {
        id: id.to_string(),
        host: host.to_string(),
        agent: agent.map(str::to_string),
        state: RequestState::Pending,
        created_unix_ms: created,
        deadline_unix_ms: created + 60_000,
        route: Some("default".to_string()),
        threshold: 1,
        body: format!(r#"{{"id":"{id}","context":{{"argv":["rm","-rf","/"]}}}}"#),
        decision: None,
        votes: Vec::new(),
        updated_unix_ms: created,
    }
}

fn vote(principal: &str, release: Release, at: u64) -> Vote {
    Vote {
        principal: principal.to_string(),
        release,
        for_ms: if release == Release::Allow {
            Some(3_600_000)
        } else {
            None
        },
        always: release == Release::Deny,
        reason: (release == Release::Deny).then(|| "not today".to_string()),
        via: "cli".to_string(),
        at_unix_ms: at,
    }
}

/// Decides when `n` votes agree (the last vote's terms); never on fewer.
fn n_of(n: usize, at: u64) -> impl Fn(&[Vote]) -> Option<DecisionRecord> + Send {
    move |votes| {
        let last = votes.last()?;
        let agreeing = votes.iter().filter(|v| v.release == last.release).count();
        (agreeing >= n).then(|| record_of(last, at))
    }
}

fn ids(rs: &[StoredRequest]) -> Vec<&str> {
    rs.iter().map(|r| r.id.as_str()).collect()
}

// ---------------------------------------------------------------------------------------
// Cases

/// `$N` placeholders through the Any driver: out of order and repeated, on both databases.
async fn placeholders(db: Db) {
    sqlx::any::install_default_drivers();
    let store = db.open().await; // creates the SQLite file with the right options
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let (s,): (String,) = sqlx::query_as("SELECT $2 || '-' || $1 || '-' || $2")
        .bind("a")
        .bind("b")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(s, "b-a-b");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM hosts WHERE name = $2 OR name = $1")
        .bind("x")
        .bind("y")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    pool.close().await;
    store.close_pool().await;
}

async fn migrations_idempotent(db: Db) {
    let a = db.open().await;
    let row = TokenRow {
        id: "t1".into(),
        principal: "alice".into(),
        created_unix_ms: NOW,
        expires_unix_ms: NOW + 1000,
        revoked_unix_ms: None,
    };
    a.add_token(&row, "h1").await.unwrap();
    a.close_pool().await;
    // Opening again finds the schema applied and the data kept.
    let b = db.open().await;
    let c = db.open().await;
    assert_eq!(b.token_by_hash("h1").await.unwrap(), Some(row.clone()));
    assert_eq!(c.tokens().await.unwrap(), vec![row]);
    // Not a URL of ours.
    assert!(matches!(
        Store::open("mysql://x/y").await,
        Err(StoreError::BadUrl(_))
    ));
    assert!(matches!(
        Store::open("sqlite::memory:").await,
        Err(StoreError::BadUrl(_))
    ));
}

async fn enrollment(db: Db) {
    let s = db.open().await;
    let l = labels(&[("env", "prod")]);
    s.add_enrollment("web-1", &l, "tok-a", NOW + 1000, NOW)
        .await
        .unwrap();
    let h = s.host("web-1").await.unwrap().unwrap();
    assert_eq!(
        (h.cert_sha256.clone(), h.enrolled_unix_ms, h.labels.clone()),
        (None, None, l.clone())
    );

    // Unknown, expired (the expiry instant itself is expired), then good, then used.
    assert!(matches!(
        s.redeem_enrollment("nope", "c1", NOW).await,
        Err(StoreError::BadEnrollment)
    ));
    assert!(matches!(
        s.redeem_enrollment("tok-a", "c1", NOW + 1000).await,
        Err(StoreError::BadEnrollment)
    ));
    let h = s.redeem_enrollment("tok-a", "c1", NOW + 999).await.unwrap();
    assert_eq!(h.name, "web-1");
    assert_eq!(h.cert_sha256.as_deref(), Some("c1"));
    assert_eq!(h.enrolled_unix_ms, Some(NOW + 999));
    assert_eq!(h.labels, l);
    assert!(matches!(
        s.redeem_enrollment("tok-a", "c2", NOW + 1).await,
        Err(StoreError::BadEnrollment)
    ));
    assert_eq!(s.host_by_cert("c1").await.unwrap(), Some(h.clone()));
    assert_eq!(s.host_by_cert("c2").await.unwrap(), None);

    // A new token replaces the unused one; labels are updated.
    let l2 = labels(&[("env", "staging"), ("team", "db")]);
    s.add_enrollment("db-1", &l, "tok-b", NOW + 5000, NOW)
        .await
        .unwrap();
    s.add_enrollment("db-1", &l2, "tok-c", NOW + 5000, NOW)
        .await
        .unwrap();
    assert!(matches!(
        s.redeem_enrollment("tok-b", "c3", NOW).await,
        Err(StoreError::BadEnrollment)
    ));
    let h = s.redeem_enrollment("tok-c", "c3", NOW).await.unwrap();
    assert_eq!((h.name.as_str(), h.labels.clone()), ("db-1", l2));
    assert_eq!(ids_of(&s.hosts().await.unwrap()), vec!["db-1", "web-1"]);

    // A token redeemed on one replica is used on the other.
    s.add_enrollment("db-2", &l, "tok-d", NOW + 5000, NOW)
        .await
        .unwrap();
    let other = db.open().await;
    other.redeem_enrollment("tok-d", "c4", NOW).await.unwrap();
    assert!(matches!(
        s.redeem_enrollment("tok-d", "c5", NOW).await,
        Err(StoreError::BadEnrollment)
    ));
}

fn ids_of(hosts: &[airlock_server::store::HostRow]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

async fn host_revoke_and_reenroll(db: Db) {
    let s = db.open().await;
    s.add_enrollment("h", &labels(&[]), "t1", NOW + 1000, NOW)
        .await
        .unwrap();
    s.redeem_enrollment("t1", "cert-old", NOW).await.unwrap();
    s.touch_host("h", NOW + 5).await.unwrap();
    assert_eq!(
        s.host("h").await.unwrap().unwrap().last_seen_unix_ms,
        Some(NOW + 5)
    );
    assert!(matches!(
        s.touch_host("ghost", NOW).await,
        Err(StoreError::NoSuch { what: "host", .. })
    ));

    s.revoke_host("h", NOW + 10).await.unwrap();
    s.revoke_host("h", NOW + 20).await.unwrap(); // keeps the first time
    let h = s.host_by_cert("cert-old").await.unwrap().unwrap();
    assert_eq!(h.revoked_unix_ms, Some(NOW + 10));
    assert!(matches!(
        s.revoke_host("ghost", NOW).await,
        Err(StoreError::NoSuch { what: "host", .. })
    ));

    // Revoking deletes an unused token; a fresh enrolment brings the host back with a new
    // certificate, and the old certificate is unknown from then on.
    s.add_enrollment("h", &labels(&[]), "t2", NOW + 1000, NOW + 30)
        .await
        .unwrap();
    assert!(
        s.host("h")
            .await
            .unwrap()
            .unwrap()
            .revoked_unix_ms
            .is_some(),
        "revoked until redeemed"
    );
    s.revoke_host("h", NOW + 40).await.unwrap();
    assert!(matches!(
        s.redeem_enrollment("t2", "cert-new", NOW + 41).await,
        Err(StoreError::BadEnrollment)
    ));
    s.add_enrollment("h", &labels(&[]), "t3", NOW + 1000, NOW + 50)
        .await
        .unwrap();
    let h = s
        .redeem_enrollment("t3", "cert-new", NOW + 60)
        .await
        .unwrap();
    assert_eq!(
        (h.revoked_unix_ms, h.cert_sha256.as_deref()),
        (None, Some("cert-new"))
    );
    assert_eq!(s.host_by_cert("cert-old").await.unwrap(), None);
    assert_eq!(s.host_by_cert("cert-new").await.unwrap().unwrap().name, "h");
}

async fn tokens(db: Db) {
    let s = db.open().await;
    let t = |id: &str, p: &str, created: u64| TokenRow {
        id: id.into(),
        principal: p.into(),
        created_unix_ms: created,
        expires_unix_ms: created + 86_400_000,
        revoked_unix_ms: None,
    };
    s.add_token(&t("b2", "bob", NOW + 1), "hash-b")
        .await
        .unwrap();
    s.add_token(&t("a1", "alice", NOW), "hash-a").await.unwrap();
    assert_eq!(
        s.token_by_hash("hash-a").await.unwrap(),
        Some(t("a1", "alice", NOW))
    );
    assert_eq!(s.token_by_hash("hash-x").await.unwrap(), None);
    let all: Vec<String> = s
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, ["a1", "b2"]);
    // Same hash again: refused by the database.
    assert!(matches!(
        s.add_token(&t("c3", "carol", NOW), "hash-a").await,
        Err(StoreError::Db(_))
    ));

    s.revoke_token("a1", NOW + 7).await.unwrap();
    s.revoke_token("a1", NOW + 9).await.unwrap();
    assert_eq!(
        s.token_by_hash("hash-a")
            .await
            .unwrap()
            .unwrap()
            .revoked_unix_ms,
        Some(NOW + 7)
    );
    assert_eq!(
        s.token_by_hash("hash-b")
            .await
            .unwrap()
            .unwrap()
            .revoked_unix_ms,
        None
    );
    assert!(matches!(
        s.revoke_token("zz", NOW).await,
        Err(StoreError::NoSuch { what: "token", .. })
    ));
}

async fn upsert_idempotent_and_other_host(db: Db) {
    let s = db.open().await;
    let r = req("r1", "web-1", Some("claude"), NOW);
    assert_eq!(s.upsert_opened(&r).await.unwrap(), Upserted::New);
    assert_eq!(s.request("r1").await.unwrap(), Some(r.clone()));

    // Re-sent after a reconnect (with newer fields): nothing changes.
    let mut again = r.clone();
    again.updated_unix_ms = NOW + 99;
    again.body = "{}".into();
    assert_eq!(
        s.upsert_opened(&again).await.unwrap(),
        Upserted::Existing(r.clone())
    );

    // Another host using the id: refused, nothing changes.
    let mut stolen = r.clone();
    stolen.host = "evil".into();
    assert!(
        matches!(s.upsert_opened(&stolen).await, Err(StoreError::OtherHost { id }) if id == "r1")
    );
    assert_eq!(s.request("r1").await.unwrap(), Some(r.clone()));
    assert_eq!(s.request("nope").await.unwrap(), None);

    // A decided request re-sent: Existing carries the decision (to deliver again).
    s.vote(
        "r1",
        &vote("alice", Release::Allow, NOW + 1),
        None,
        NOW + 1,
        n_of(1, NOW + 1),
    )
    .await
    .unwrap();
    let Upserted::Existing(cur) = s.upsert_opened(&r).await.unwrap() else {
        panic!("expected Existing")
    };
    assert_eq!(cur.decision.unwrap().release, Release::Allow);
    assert_eq!(cur.votes.len(), 1);
}

async fn list_filters(db: Db) {
    let s = db.open().await;
    // Created out of order; r3 and r2 share a creation time (then ordered by id).
    for r in [
        req("r3", "web-1", Some("claude"), NOW + 10),
        req("r1", "web-1", Some("codex"), NOW),
        req("r2", "web-2", Some("claude"), NOW + 10),
        req("r4", "web-2", None, NOW + 20),
        req("r5", "web-1", Some("claude"), NOW + 30),
    ] {
        s.upsert_opened(&r).await.unwrap();
    }
    let all = RequestFilter::default();
    assert_eq!(
        ids(&s.list_requests(&all).await.unwrap()),
        ["r1", "r2", "r3", "r4", "r5"]
    );
    let f = |host: Option<&str>,
             agent: Option<&str>,
             state: Option<RequestState>,
             du: bool,
             limit: Option<u32>| RequestFilter {
        host: host.map(str::to_string),
        agent: agent.map(str::to_string),
        state,
        decided_undelivered: du,
        limit,
    };
    assert_eq!(
        ids(&s
            .list_requests(&f(Some("web-1"), None, None, false, None))
            .await
            .unwrap()),
        ["r1", "r3", "r5"]
    );
    assert_eq!(
        ids(&s
            .list_requests(&f(None, Some("claude"), None, false, None))
            .await
            .unwrap()),
        ["r2", "r3", "r5"]
    );
    assert_eq!(
        ids(&s
            .list_requests(&f(Some("web-1"), Some("claude"), None, false, Some(1)))
            .await
            .unwrap()),
        ["r3"]
    );
    assert_eq!(
        ids(&s
            .list_requests(&f(None, None, None, false, Some(2)))
            .await
            .unwrap()),
        ["r1", "r2"]
    );

    // r3: two votes of a 2-of-2, decided, undelivered. r5: one vote, undecided. r1 closed.
    s.vote(
        "r3",
        &vote("alice", Release::Allow, NOW + 40),
        None,
        NOW + 40,
        n_of(2, NOW + 40),
    )
    .await
    .unwrap();
    s.vote(
        "r3",
        &vote("bob", Release::Allow, NOW + 41),
        None,
        NOW + 41,
        n_of(2, NOW + 41),
    )
    .await
    .unwrap();
    s.vote(
        "r5",
        &vote("carol", Release::Deny, NOW + 42),
        None,
        NOW + 42,
        n_of(2, NOW + 42),
    )
    .await
    .unwrap();
    s.close("r1", "web-1", RequestState::Denied, None, NOW + 43)
        .await
        .unwrap();

    let pending = f(None, None, Some(RequestState::Pending), false, None);
    assert_eq!(
        ids(&s.list_requests(&pending).await.unwrap()),
        ["r2", "r3", "r4", "r5"]
    );
    let denied = f(None, None, Some(RequestState::Denied), false, None);
    assert_eq!(ids(&s.list_requests(&denied).await.unwrap()), ["r1"]);
    let undelivered = |h: &str| f(Some(h), None, None, true, None);
    let got = s.list_requests(&undelivered("web-1")).await.unwrap();
    assert_eq!(ids(&got), ["r3"]);
    assert!(
        s.list_requests(&undelivered("web-2"))
            .await
            .unwrap()
            .is_empty()
    );
    // Votes come along, in the order cast; a limit counts requests, not votes.
    let principals: Vec<&str> = got[0].votes.iter().map(|v| v.principal.as_str()).collect();
    assert_eq!(principals, ["alice", "bob"]);
    assert_eq!(got[0].votes[0], vote("alice", Release::Allow, NOW + 40));
    let page = s
        .list_requests(&f(Some("web-1"), None, None, false, Some(2)))
        .await
        .unwrap();
    assert_eq!((ids(&page), page[1].votes.len()), (vec!["r1", "r3"], 2));
    let r5 = s
        .list_requests(&f(None, None, None, false, None))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (r5.id.as_str(), r5.votes.len(), r5.decision.is_none()),
        ("r5", 1, true)
    );
    // Delivered (closed by the host): no longer listed as undelivered.
    s.close("r3", "web-1", RequestState::Approved, None, NOW + 50)
        .await
        .unwrap();
    assert!(
        s.list_requests(&undelivered("web-1"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn votes_and_already_voted(db: Db) {
    let s = db.open().await;
    let mut r = req("r1", "web-1", None, NOW);
    r.threshold = 2;
    s.upsert_opened(&r).await.unwrap();
    let a = vote("alice", Release::Allow, NOW + 1);
    let res = s
        .vote("r1", &a, None, NOW + 1, n_of(2, NOW + 1))
        .await
        .unwrap();
    assert_eq!(res.decided, None);
    assert_eq!(res.request.votes, vec![a.clone()]);
    assert_eq!(res.request.updated_unix_ms, NOW + 1);
    assert_eq!(res.request.threshold, 2);

    // The same principal again, even with other terms: refused, nothing changed.
    let again = vote("alice", Release::Deny, NOW + 2);
    assert!(matches!(
        s.vote("r1", &again, None, NOW + 2, |_| None).await,
        Err(StoreError::AlreadyVoted { id, principal }) if id == "r1" && principal == "alice"
    ));
    let cur = s.request("r1").await.unwrap().unwrap();
    assert_eq!(
        (cur.votes.clone(), cur.updated_unix_ms),
        (vec![a.clone()], NOW + 1)
    );

    // The tally sees every vote so far, in order (it is also asked about the new vote alone,
    // which only a first vote uses).
    let b = vote("bob", Release::Allow, NOW + 3);
    let seen = std::sync::Mutex::new(Vec::new());
    let res = s
        .vote("r1", &b, None, NOW + 3, |votes| {
            seen.lock().unwrap().push(votes.to_vec());
            n_of(2, NOW + 3)(votes)
        })
        .await
        .unwrap();
    assert_eq!(
        seen.into_inner().unwrap().last(),
        Some(&vec![a.clone(), b.clone()])
    );
    let d = res.decided.clone().expect("the second approval decides");
    assert_eq!(d, record_of(&b, NOW + 3));
    assert_eq!(res.request.decision, Some(d.clone()));
    assert_eq!(
        res.request.state,
        RequestState::Pending,
        "decided, not yet closed by the host"
    );
    assert_eq!(s.request("r1").await.unwrap().unwrap(), res.request);

    assert!(matches!(
        s.vote("nope", &a, None, NOW, |_| None).await,
        Err(StoreError::NotFound { id }) if id == "nope"
    ));
}

async fn vote_on_decided_or_closed(db: Db) {
    let s = db.open().await;
    s.upsert_opened(&req("d", "h", None, NOW)).await.unwrap();
    s.upsert_opened(&req("c", "h", None, NOW)).await.unwrap();
    s.vote(
        "d",
        &vote("alice", Release::Deny, NOW + 1),
        None,
        NOW + 1,
        n_of(1, NOW + 1),
    )
    .await
    .unwrap();
    let late = vote("bob", Release::Allow, NOW + 2);
    assert!(matches!(
        s.vote("d", &late, None, NOW + 2, |_| None).await,
        Err(StoreError::Closed { state, .. }) if state == "decided"
    ));
    s.close("c", "h", RequestState::TimedOut, None, NOW + 3)
        .await
        .unwrap();
    assert!(matches!(
        s.vote("c", &late, None, NOW + 4, |_| None).await,
        Err(StoreError::Closed { state, .. }) if state == "timed_out"
    ));
    // Refused votes left nothing behind.
    assert_eq!(s.request("d").await.unwrap().unwrap().votes.len(), 1);
    assert!(s.request("c").await.unwrap().unwrap().votes.is_empty());
}

async fn close_idempotent(db: Db) {
    let s = db.open().await;
    s.upsert_opened(&req("r1", "web-1", None, NOW))
        .await
        .unwrap();
    let server = s
        .vote(
            "r1",
            &vote("alice", Release::Allow, NOW + 1),
            None,
            NOW + 1,
            n_of(1, NOW + 1),
        )
        .await
        .unwrap();
    let decided = server.decided.unwrap();

    assert!(matches!(
        s.close("nope", "web-1", RequestState::Approved, None, NOW)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.close("r1", "evil", RequestState::Denied, None, NOW).await,
        Err(StoreError::OtherHost { .. })
    ));
    assert!(matches!(
        s.close("r1", "web-1", RequestState::Pending, None, NOW)
            .await,
        Err(StoreError::NotAnOutcome { .. })
    ));

    // No record from the host: the server's decision stays.
    let closed = s
        .close("r1", "web-1", RequestState::Approved, None, NOW + 5)
        .await
        .unwrap();
    assert!(closed.changed);
    let closed = closed.request;
    assert_eq!(
        (closed.state, closed.updated_unix_ms),
        (RequestState::Approved, NOW + 5)
    );
    assert_eq!(closed.decision, Some(decided));
    assert_eq!(closed.votes.len(), 1);
    // What the close returned (its UPDATE's row and the votes read after) is what is stored.
    assert_eq!(s.request("r1").await.unwrap().unwrap(), closed);
    // Same outcome again (a re-sent message): Ok, nothing changes.
    let again = s
        .close("r1", "web-1", RequestState::Approved, None, NOW + 9)
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.request, closed);
    // Another outcome for a closed request: refused.
    assert!(matches!(
        s.close("r1", "web-1", RequestState::Denied, None, NOW + 9).await,
        Err(StoreError::Closed { state, .. }) if state == "approved"
    ));

    // The host's own record (break-glass deny) replaces the server's.
    s.upsert_opened(&req("r2", "web-1", None, NOW))
        .await
        .unwrap();
    s.vote(
        "r2",
        &vote("alice", Release::Allow, NOW + 1),
        None,
        NOW + 1,
        n_of(1, NOW + 1),
    )
    .await
    .unwrap();
    let glass = DecisionRecord {
        votes: Vec::new(),
        release: Release::Deny,
        for_ms: None,
        always: false,
        reason: Some("break glass".into()),
        by: Some(Approver {
            uid: 0,
            pid: 42,
            user: Some("root".into()),
            via: "cli-break-glass".into(),
            principal: None,
        }),
        at_unix_ms: NOW + 2,
    };
    let closed = s
        .close("r2", "web-1", RequestState::Denied, Some(&glass), NOW + 3)
        .await
        .unwrap();
    assert_eq!(closed.request.decision, Some(glass));

    // Closed without a vote (timed out on the host): no votes to read.
    s.upsert_opened(&req("r3", "web-1", None, NOW))
        .await
        .unwrap();
    let closed = s
        .close("r3", "web-1", RequestState::TimedOut, None, NOW + 4)
        .await
        .unwrap();
    assert!(closed.changed);
    assert!(closed.request.votes.is_empty());
    assert_eq!(s.request("r3").await.unwrap().unwrap(), closed.request);
}

async fn attempts_recorded(db: Db) {
    let s = db.open().await;
    let a = |at: u64, who: &str, request_id: Option<&str>| Attempt {
        at_unix_ms: at,
        who: who.into(),
        channel: "cli".into(),
        request_id: request_id.map(str::to_string),
        action: "approve".into(),
        result: "PERMISSION_DENIED".into(),
        message: "not an approver".into(),
    };
    // Two in the same millisecond: the later-recorded one is newer.
    for x in [
        a(NOW, "alice", Some("r1")),
        a(NOW + 5, "bob", None),
        a(NOW + 5, "carol", Some("r2")),
    ] {
        s.record_attempt(&x).await.unwrap();
    }
    assert_eq!(
        s.attempts(2).await.unwrap(),
        vec![a(NOW + 5, "carol", Some("r2")), a(NOW + 5, "bob", None)]
    );
    let all = s.attempts(100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], a(NOW, "alice", Some("r1")));
    assert!(s.attempts(0).await.unwrap().is_empty());
}

/// Two replicas, N voters racing conflicting votes on one request, the first vote decides:
/// exactly one decision, every other vote Closed, and the stored decision is the reported one.
async fn replica_conflict_first_vote_decides(db: Db) {
    const ROUNDS: usize = 50;
    const VOTERS: usize = 6;
    let replicas = [db.open().await, db.open().await];
    for round in 0..ROUNDS {
        let id = format!("race-{round}");
        replicas[round % 2]
            .upsert_opened(&req(&id, "h", None, NOW))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..VOTERS {
            let s = replicas[i % 2].clone();
            let id = id.clone();
            let release = if i % 2 == 0 {
                Release::Allow
            } else {
                Release::Deny
            };
            let v = vote(&format!("p{i}"), release, NOW + i as u64);
            tasks.push(tokio::spawn(async move {
                s.vote(&id, &v, None, NOW + 1, n_of(1, NOW + 1)).await
            }));
        }
        let mut decided = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(res) => decided.push(res.decided.expect("an accepted vote here always decides")),
                Err(StoreError::Closed { state, .. }) => assert_eq!(state, "decided"),
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        assert_eq!(decided.len(), 1, "round {round}: exactly one vote decides");
        let stored = replicas[(round + 1) % 2]
            .request(&id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.decision.as_ref(), Some(&decided[0]), "round {round}");
        assert_eq!(
            stored.votes.len(),
            1,
            "round {round}: only the deciding vote is kept"
        );
        assert_eq!(stored.votes[0].release, decided[0].release);
    }
}

/// Two replicas, a 2-of-2 route, both approvers at once: decided exactly once, never left
/// pending with both votes in.
async fn replica_two_of_two(db: Db) {
    const ROUNDS: usize = 50;
    let replicas = [db.open().await, db.open().await];
    for round in 0..ROUNDS {
        let id = format!("pair-{round}");
        let mut r = req(&id, "h", None, NOW);
        r.threshold = 2;
        replicas[0].upsert_opened(&r).await.unwrap();
        let mut tasks = Vec::new();
        for (i, s) in replicas.iter().enumerate() {
            let s = s.clone();
            let id = id.clone();
            let v = vote(["alice", "bob"][i], Release::Allow, NOW + i as u64);
            tasks.push(tokio::spawn(async move {
                s.vote(&id, &v, None, NOW + 1, n_of(2, NOW + 1)).await
            }));
        }
        let mut decided = Vec::new();
        for t in tasks {
            let res = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            decided.extend(res.decided);
        }
        assert_eq!(decided.len(), 1, "round {round}: decided exactly once");
        let stored = replicas[1].request(&id).await.unwrap().unwrap();
        assert_eq!(stored.votes.len(), 2, "round {round}");
        assert_eq!(stored.decision.as_ref(), Some(&decided[0]), "round {round}");
    }
}

/// Not a benchmark, a tripwire: open → vote → close, one after another, reports the
/// per-cycle median and fails only when it is far off the 2 ms round-trip budget.
async fn round_trip_timing(db: Db) {
    const N: usize = 200;
    let s = db.open().await;
    let poll = RequestFilter {
        host: Some("h".into()),
        decided_undelivered: true,
        ..Default::default()
    };
    let mut cycle = Vec::with_capacity(N);
    let mut polls = Vec::with_capacity(N);
    for i in 0..N {
        let id = format!("t{i}");
        let t0 = Instant::now();
        s.upsert_opened(&req(&id, "h", None, NOW + i as u64))
            .await
            .unwrap();
        let res = s
            .vote(
                &id,
                &vote("alice", Release::Allow, NOW),
                None,
                NOW,
                n_of(1, NOW),
            )
            .await
            .unwrap();
        s.close(&id, "h", RequestState::Approved, res.decided.as_ref(), NOW)
            .await
            .unwrap();
        cycle.push(t0.elapsed());
        let t1 = Instant::now();
        assert!(s.list_requests(&poll).await.unwrap().is_empty());
        polls.push(t1.elapsed());
    }
    cycle.sort();
    polls.sort();
    eprintln!(
        "{:?}: open+vote+close p50 {:?} p90 {:?}; undelivered poll p50 {:?} p90 {:?} (over {N} requests)",
        db.kind,
        cycle[N / 2],
        cycle[N * 9 / 10],
        polls[N / 2],
        polls[N * 9 / 10]
    );
    assert!(
        cycle[N / 2].as_millis() < 50,
        "open+vote+close median {:?}",
        cycle[N / 2]
    );
}
