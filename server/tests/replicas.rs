//! Two server replicas on one database: replica A holds a host's link, replica B takes the
//! approvers' votes. Run on PostgreSQL (a throwaway cluster from `airlock_server::testing::pg`;
//! SKIP when PostgreSQL is not installed, a failure with `CI=true`) and on SQLite (two
//! servers sharing one file).
//!
//! What is guarded: a decision made on one replica reaches a host linked to the other within
//! a second (the link polls the store), and two conflicting votes cast at the same moment on
//! two replicas make exactly one decision: one vote wins, the other is refused, the store
//! keeps one decision and the host hears exactly one.
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_approval::Release;
use airlock_proto::v1 as pb;
use airlock_server::store::Store;
use airlock_server::testing::pg::PgCluster;
use airlock_server::testing::{
    FakeHost, Options, TempDir, TestServer, approve, deny, new_id, request, wait_stored,
};
use tonic::Code;

const T: Duration = Duration::from_secs(5);
/// Conflicting vote pairs per database.
const CONFLICTS: usize = 20;

/// One database shared by two replicas; holds the cluster or the file's directory.
struct Shared {
    url: String,
    _keep: (Option<Arc<PgCluster>>, Option<TempDir>),
}

impl Shared {
    fn postgres() -> Option<Shared> {
        let c = PgCluster::shared()?;
        Some(Shared {
            url: c.create_database(),
            _keep: (Some(c), None),
        })
    }

    fn sqlite() -> Shared {
        let d = TempDir::new("airlock-replicas").unwrap();
        Shared {
            url: Store::sqlite_url(&d.path().join("shared.db")),
            _keep: (None, Some(d)),
        }
    }

    /// Replica A (new CA) and replica B (A's CA and server certificate), one after the other
    /// (the first applies the migrations).
    async fn replicas(&self) -> (TestServer, TestServer) {
        let a = TestServer::with(Options {
            database: Some(self.url.clone()),
            ..Options::default()
        })
        .await
        .unwrap();
        let b = TestServer::with(Options {
            database: Some(self.url.clone()),
            pki_dir: Some(a.pki_dir().to_path_buf()),
            ..Options::default()
        })
        .await
        .unwrap();
        (a, b)
    }
}

async fn decision_on_b_reaches_host_on_a(db: Shared) {
    let (a, b) = db.replicas().await;
    let id = a.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect(&a.url, &a.ca_pem, &id).await.unwrap();
    assert_eq!(a.broker.hub.connected(), ["web-1"]);
    assert!(b.broker.hub.connected().is_empty());
    let mut bob = b
        .approver(&b.issue_token("bob").await.unwrap())
        .await
        .unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let r = request("web-1", &new_id());
        host.opened(r.clone()).unwrap();
        wait_stored(&b.store, &r.id, T).await.unwrap();
        let t = Instant::now();
        let decided = if i % 2 == 0 {
            bob.decide(approve(&r.id)).await
        } else {
            bob.decide(deny(&r.id, "no")).await
        };
        decided.unwrap();
        let d = host.decision(T).await.unwrap();
        let took = t.elapsed();
        assert_eq!(d.decide.unwrap().id, r.id);
        assert_eq!(d.by.unwrap().principal.as_deref(), Some("bob"));
        worst = worst.max(took);
        eprintln!("decision on B → host on A: {took:?}");
    }
    assert!(
        worst < Duration::from_secs(1),
        "slowest delivery across replicas took {worst:?}"
    );
    assert!(
        host.quiet(Duration::from_millis(700))
            .await
            .unwrap()
            .is_none(),
        "a decision was delivered twice"
    );
}

async fn conflicting_votes_on_two_replicas_make_one_decision(db: Shared) {
    let (a, b) = db.replicas().await;
    let id = a.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect(&a.url, &a.ca_pem, &id).await.unwrap();
    let mut alice = a
        .approver(&a.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    let mut bob = b
        .approver(&b.issue_token("bob").await.unwrap())
        .await
        .unwrap();
    let mut wins = [0usize; 2];
    let mut ids = Vec::new();
    for _ in 0..CONFLICTS {
        let r = request("web-1", &new_id());
        host.opened(r.clone()).unwrap();
        wait_stored(&a.store, &r.id, T).await.unwrap();
        let (ra, rb) = tokio::join!(
            alice.decide(approve(&r.id)),
            bob.decide(deny(&r.id, "conflict"))
        );
        let (winner, release) = match (&ra, &rb) {
            (Ok(_), Err(e)) => {
                assert_eq!(
                    e.code(),
                    Code::FailedPrecondition,
                    "the losing deny on B: {e:?}"
                );
                wins[0] += 1;
                ("alice", Release::Allow)
            }
            (Err(e), Ok(_)) => {
                assert_eq!(
                    e.code(),
                    Code::FailedPrecondition,
                    "the losing approve on A: {e:?}"
                );
                wins[1] += 1;
                ("bob", Release::Deny)
            }
            _ => panic!(
                "request {}: exactly one of two conflicting votes must win: A {ra:?}, B {rb:?}",
                r.id
            ),
        };
        let d = host.decision(T).await.unwrap();
        let decide = d.decide.unwrap();
        assert_eq!(
            decide.id, r.id,
            "a decision for an earlier request arrived again (delivered twice)"
        );
        let allow = matches!(
            decide.decision,
            Some(pb::decide_request::Decision::Approve(_))
        );
        assert_eq!(
            allow,
            release == Release::Allow,
            "the host got the losing vote's decision"
        );
        assert_eq!(d.by.unwrap().principal.as_deref(), Some(winner));
        let s = a.store.request(&r.id).await.unwrap().unwrap();
        let dec = s.decision.expect("no decision stored");
        assert_eq!(
            (dec.release, dec.by.unwrap().principal.as_deref()),
            (release, Some(winner))
        );
        assert_eq!(
            s.votes
                .iter()
                .map(|v| v.principal.as_str())
                .collect::<Vec<_>>(),
            [winner],
            "the losing vote was stored"
        );
        ids.push(r.id);
    }
    eprintln!(
        "{CONFLICTS} conflicts: approve on A won {}, deny on B won {}",
        wins[0], wins[1]
    );
    let extra = host.quiet(Duration::from_millis(700)).await.unwrap();
    assert!(extra.is_none(), "a decision was delivered twice: {extra:?}");
    // Both replicas read the same single decision for every request.
    for id in &ids {
        let (x, y) = (
            a.store.request(id).await.unwrap().unwrap(),
            b.store.request(id).await.unwrap().unwrap(),
        );
        assert_eq!(x.decision, y.decision);
        assert_eq!(x.votes.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_decision_on_replica_b_reaches_a_host_linked_to_replica_a_within_a_second() {
    let Some(db) = Shared::postgres() else { return };
    decision_on_b_reaches_host_on_a(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conflicting_votes_on_two_replicas_make_exactly_one_decision() {
    let Some(db) = Shared::postgres() else { return };
    conflicting_votes_on_two_replicas_make_one_decision(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_decision_on_replica_b_reaches_a_host_linked_to_replica_a_within_a_second() {
    decision_on_b_reaches_host_on_a(Shared::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conflicting_votes_on_two_replicas_make_exactly_one_decision() {
    conflicting_votes_on_two_replicas_make_one_decision(Shared::sqlite()).await;
}
