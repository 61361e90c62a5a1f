//! API tokens remembered by a replica (`Store::lookup_token`): a token found valid is answered
//! from memory, yet expiry is enforced at every use, and a revocation made elsewhere (`tokens
//! revoke` in another process, another replica) never lets the token vote: the vote's own
//! transaction checks it. Reads (list, show, watch) stop working once the replica's periodic
//! refresh sees the revocation.
//!
//! Each case runs on SQLite (a temporary file) and on PostgreSQL (a throwaway cluster, see
//! `airlock_server::testing::pg`; SKIP when PostgreSQL is not installed). "Elsewhere" is a
//! second `Store` on the same database, as `airlock-server tokens revoke` opens one.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use airlock_approval::{DecisionRecord, Release, RequestState, Vote};
use airlock_proto::v1 as pb;
use airlock_server::auth;
use airlock_server::broker::now_ms;
use airlock_server::store::{Store, StoreError, StoredRequest};
use airlock_server::testing::{Options, TestServer, approve, new_id, request, wait_stored};
use common::{Db, record_of};
use tonic::Code;

const NOW: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

cases!(
    a_revoked_token_cannot_vote_even_while_remembered,
    an_expired_remembered_token_is_refused,
    an_expired_token_cannot_vote,
    a_revocation_elsewhere_reaches_a_running_server,
    an_expiring_token_ends_its_open_watch,
);

fn pending(id: &str) -> StoredRequest {
    StoredRequest {
        id: id.to_string(),
        host: "web-1".to_string(),
        agent: None,
        state: RequestState::Pending,
        created_unix_ms: NOW,
        deadline_unix_ms: NOW + HOUR,
        route: Some("default".to_string()),
        threshold: 1,
        body: "{}".to_string(),
        decision: None,
        votes: Vec::new(),
        updated_unix_ms: NOW,
    }
}

fn allow(principal: &str, at: u64) -> Vote {
    Vote {
        principal: principal.to_string(),
        release: Release::Allow,
        for_ms: None,
        always: false,
        reason: None,
        via: "cli".to_string(),
        at_unix_ms: at,
    }
}

/// Decides on the first vote.
fn first_decides(votes: &[Vote]) -> Option<DecisionRecord> {
    votes.last().map(|v| record_of(v, v.at_unix_ms))
}

/// Alice's vote on request `r1` through `token` at `at`, which must be refused without
/// changing anything; the error.
async fn refused_vote(server: &Store, token: &str, at: u64) -> StoreError {
    let e = server
        .vote("r1", &allow("alice", at), Some(token), at, first_decides)
        .await
        .expect_err("the vote must be refused");
    let r = server.request("r1").await.unwrap().unwrap();
    assert!(r.votes.is_empty() && r.decision.is_none(), "{r:?}");
    e
}

/// Request metadata presenting `secret` as a bearer token.
fn bearer(secret: &str) -> tonic::metadata::MetadataMap {
    let mut m = tonic::metadata::MetadataMap::new();
    m.insert("authorization", format!("Bearer {secret}").parse().unwrap());
    m
}

async fn a_revoked_token_cannot_vote_even_while_remembered(db: Db) {
    let (server, elsewhere) = (db.open().await, db.open().await);
    server.upsert_opened(&pending("r1")).await.unwrap();
    let (secret, alice) = auth::issue(&server, "alice", HOUR, NOW).await.unwrap();
    let meta = bearer(&secret);
    assert_eq!(
        auth::principal(&server, &meta, NOW + 1)
            .await
            .unwrap()
            .principal,
        "alice"
    );
    elsewhere.revoke_token(&alice.id, NOW + 2).await.unwrap();
    // This replica has not heard of the revocation yet: the token still authenticates (from
    // memory; the store says revoked)...
    let caller = auth::principal(&server, &meta, NOW + 3).await.unwrap();
    assert_eq!(caller.token_id, alice.id);
    // ... but its vote is refused by the vote's own transaction, and changes nothing.
    let e = refused_vote(&server, &caller.token_id, NOW + 3).await;
    assert!(
        matches!(&e, StoreError::TokenRevoked { token } if *token == alice.id),
        "{e:?}"
    );
    assert!(server.attempts(10).await.unwrap().is_empty());

    // A valid token's vote on the same request goes through: the check is the token's.
    let (_, bob) = auth::issue(&server, "bob", HOUR, NOW).await.unwrap();
    let res = server
        .vote(
            "r1",
            &allow("bob", NOW + 4),
            Some(&bob.id),
            NOW + 4,
            first_decides,
        )
        .await
        .unwrap();
    assert!(res.decided.is_some());

    // The periodic refresh makes the replica forget the token: then every call is refused.
    server.refresh_revoked_tokens(NOW + 5).await.unwrap();
    let e = auth::principal(&server, &meta, NOW + 5).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.to_string().contains("revoked"), "{e}");
}

async fn an_expired_remembered_token_is_refused(db: Db) {
    let (server, elsewhere) = (db.open().await, db.open().await);
    let (secret, alice) = auth::issue(&server, "alice", 60_000, NOW).await.unwrap();
    let meta = bearer(&secret);
    auth::principal(&server, &meta, NOW + 1).await.unwrap();
    // Revoked elsewhere, so that only a remembered token can still be accepted below.
    elsewhere.revoke_token(&alice.id, NOW + 2).await.unwrap();
    auth::principal(&server, &meta, NOW + 59_999)
        .await
        .expect("remembered and not expired yet");
    // Expiry is checked at use, remembered or not.
    let e = auth::principal(&server, &meta, NOW + 60_000)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.to_string().contains("expired"), "{e}");
}

async fn an_expired_token_cannot_vote(db: Db) {
    let server = db.open().await;
    server.upsert_opened(&pending("r1")).await.unwrap();
    let (secret, alice) = auth::issue(&server, "alice", 60_000, NOW).await.unwrap();
    auth::principal(&server, &bearer(&secret), NOW + 1)
        .await
        .unwrap();
    // A vote whose transaction runs past the token's expiry (the caller authenticated just
    // before it) is refused there.
    let e = refused_vote(&server, &alice.id, NOW + 60_000).await;
    assert!(
        matches!(&e, StoreError::TokenExpired { token } if *token == alice.id),
        "{e:?}"
    );
}

/// End to end: a running server, the revocation made through another `Store`. The vote is
/// refused at once (whichever check refuses it), and reads stop within the refresh period.
async fn a_revocation_elsewhere_reaches_a_running_server(db: Db) {
    let srv = TestServer::with(Options {
        database: Some(db.url.clone()),
        ..Options::default()
    })
    .await
    .unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, Duration::from_secs(5))
        .await
        .unwrap();
    let (token, row) = srv.issue_token_at("alice", HOUR, now_ms()).await.unwrap();
    let mut alice = srv.approver(&token).await.unwrap();
    alice
        .list_pending(pb::ListPendingRequest::default())
        .await
        .unwrap();
    // A watch opened before the revocation.
    let mut watch = alice
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let elsewhere = Store::open(&srv.database).await.unwrap();
    elsewhere.revoke_token(&row.id, now_ms()).await.unwrap();
    let revoked_at = Instant::now();
    let e = alice.decide(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert!(s.decision.is_none() && s.votes.is_empty(), "{s:?}");
    assert!(
        host.quiet(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none()
    );
    // Reads: refused once the store watch's refresh (every second) saw the revocation.
    loop {
        match alice.list_pending(pb::ListPendingRequest::default()).await {
            Err(e) => {
                assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
                break;
            }
            Ok(_) => assert!(
                revoked_at.elapsed() < Duration::from_millis(2500),
                "a revoked token still lists after {:?}",
                revoked_at.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open watch ends with the same refusal, within the recheck period (one for the
    // store's refresh to see the revocation, one for the watch's own check).
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch of a revoked token was still open 5 s after the revocation");
    let e = end.expect_err("the watch ended without saying why");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    assert!(
        revoked_at.elapsed() < Duration::from_millis(3500),
        "the watch ended {:?} after the revocation",
        revoked_at.elapsed()
    );
    srv.stop().await;
}

/// A watch opened with a token that expires while it is open ends with "expired", like any
/// new call would, and the attempt is recorded.
async fn an_expiring_token_ends_its_open_watch(db: Db) {
    let srv = TestServer::with(Options {
        database: Some(db.url.clone()),
        ..Options::default()
    })
    .await
    .unwrap();
    let (token, _row) = srv.issue_token_at("alice", 1_500, now_ms()).await.unwrap();
    let mut alice = srv.approver(&token).await.unwrap();
    let mut watch = alice
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch outlived its token by more than 3.5 s")
        .expect_err("the watch ended without saying why");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("expired"), "{e:?}");
    let attempts = srv.store.attempts(100).await.unwrap();
    assert!(
        attempts
            .iter()
            .any(|a| a.action == "watch" && a.message.contains("expired")),
        "{attempts:?}"
    );
    srv.stop().await;
}
