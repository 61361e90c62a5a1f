use airlock_approval::{OnTimeout, RequestState};

use super::*;
use crate::daemon::records::{LinkChange, Records};
use crate::hold::{HoldKey, Request};

fn request(id: &str) -> Request {
    let context = crate::hold::testing::context(7);
    Request {
        id: id.into(),
        state: RequestState::Pending,
        key: HoldKey {
            tgid: 1,
            op: context.op,
            dev: context.target_dev,
            ino: context.target_ino,
            argv_hash: 0,
        },
        holders: vec![],
        attempts: 1,
        created_unix_ms: 1,
        deadline_unix_ms: 2,
        on_timeout: OnTimeout::Deny,
        context,
        decision: None,
    }
}

/// The spool of `host-1` under `dir` verifies with the key beside it.
fn assert_spool_verifies(dir: &Path) {
    let key = SigningKey::load(&dir.join(AUDIT_KEY)).unwrap();
    let report =
        airlock_audit::verify_spool_dir(&key.verifier(), &Default::default(), &dir.join("host-1"))
            .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

fn records(dir: &Path, cfg: SpoolConfig) -> Records {
    let mut r = Records::open(&dir.join("events.jsonl")).unwrap();
    r.audit = Some(AuditLog::open_with(dir, dir, "host-1", cfg).unwrap());
    r
}

#[test]
fn what_the_one_writer_writes_is_in_a_chain_that_verifies_with_the_hosts_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = records(dir.path(), SpoolConfig::default());
    let down = LinkChange::Down {
        server: "https://s".into(),
        error: "refused".into(),
        retry_in_ms: 5,
    };
    assert!(r.write(&Record::Link {
        at_unix_ms: 1,
        change: &down
    }));
    let req = request("01TEST");
    assert!(r.write(&Record::Request {
        change: RequestChange::Opened,
        request: &req
    }));
    let a = r.audit.as_mut().unwrap();
    a.tick();
    let spool = a.shipper();
    let head = spool.spool().head().seq;
    assert_eq!(
        head, 2,
        "the link record waited for the must-write request's commit"
    );
    assert_spool_verifies(dir.path());
    let batch = spool.spool().read_from(1, 10).unwrap();
    let opened = &batch.records[1];
    assert_eq!(opened.kind, Kind::RequestOpened);
    assert_eq!(opened.corr.as_deref(), Some("01TEST"));
    assert_eq!(opened.body["agent"], "a");
    assert_eq!(opened.body["op"], "exec");
    assert_eq!(opened.body["request"]["id"], "01TEST");
}

#[test]
fn a_server_decision_is_recorded_as_each_vote_then_the_decision_then_the_outcome() {
    use airlock_approval::{Approver, DecisionRecord, Release, Vote};
    let dir = tempfile::tempdir().unwrap();
    let mut r = records(dir.path(), SpoolConfig::default());
    let vote = |who: &str, at| Vote {
        principal: who.into(),
        release: Release::Allow,
        for_ms: Some(900_000),
        always: false,
        reason: Some(format!("{who} checked it")),
        via: "web".into(),
        at_unix_ms: at,
    };
    let mut req = request("01VOTED");
    req.state = RequestState::Approved;
    req.decision = Some(DecisionRecord {
        release: Release::Allow,
        for_ms: Some(900_000),
        always: false,
        reason: None,
        by: Some(Approver {
            uid: 0,
            pid: 0,
            user: None,
            via: "server".into(),
            principal: Some("bob".into()),
        }),
        at_unix_ms: 30,
        votes: vec![vote("alice", 10), vote("bob", 20)],
    });
    assert!(r.write(&Record::Request {
        change: RequestChange::Closed,
        request: &req
    }));
    assert_spool_verifies(dir.path());
    let a = r.audit.as_ref().unwrap();
    let batch = a.shipper().spool().read_from(1, 10).unwrap();
    let kinds: Vec<&Kind> = batch.records.iter().map(|r| &r.kind).collect();
    assert_eq!(
        kinds,
        [&Kind::Vote, &Kind::Vote, &Kind::Decision, &Kind::Outcome]
    );
    assert!(
        batch
            .records
            .iter()
            .all(|r| r.corr.as_deref() == Some("01VOTED")),
        "one correlation id joins votes, decision and outcome"
    );
    let (alice, bob, decision) = (&batch.records[0], &batch.records[1], &batch.records[2]);
    assert_eq!(alice.body["approver"], "alice");
    assert_eq!(alice.body["decision"], "approve");
    assert_eq!(alice.body["vote"]["via"], "web");
    assert_eq!(alice.body["vote"]["reason"], "alice checked it");
    assert_eq!(bob.body["vote"]["at_unix_ms"], 20);
    assert_eq!(decision.body["approver"], "bob");
    assert_eq!(decision.body["decision"], "approved");
    assert_eq!(decision.body["decision_record"]["for_ms"], 900_000);
    assert!(decision.body["decision_record"].get("votes").is_none());
}

#[test]
fn an_abandoned_request_has_an_outcome_and_no_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = records(dir.path(), SpoolConfig::default());
    let mut req = request("01GONE");
    req.state = RequestState::Abandoned;
    assert!(r.write(&Record::Request {
        change: RequestChange::Closed,
        request: &req
    }));
    let a = r.audit.as_ref().unwrap();
    let batch = a.shipper().spool().read_from(1, 10).unwrap();
    let kinds: Vec<&Kind> = batch.records.iter().map(|r| &r.kind).collect();
    assert_eq!(kinds, [&Kind::Outcome]);
    assert_eq!(batch.records[0].body["decision"], "abandoned");
}

#[test]
fn a_request_whose_record_cannot_be_written_is_reported_for_failing_closed() {
    let dir = tempfile::tempdir().unwrap();
    // Room for a few records only.
    let cfg = SpoolConfig {
        max_bytes: 4096,
        segment_bytes: 4096,
        ..SpoolConfig::default()
    };
    let mut r = records(dir.path(), cfg);
    let mut refused = 0;
    for i in 0..20 {
        if !r.write(&Record::Request {
            change: RequestChange::Opened,
            request: &request(&format!("01R{i}")),
        }) {
            refused += 1;
        }
    }
    assert!(refused > 0, "a full spool must refuse must-write records");
    let a = r.audit.as_ref().unwrap();
    assert!(a.failed >= refused);
    // What was written still verifies.
    assert_spool_verifies(dir.path());
}

#[test]
fn a_standalone_spool_rotates_instead_of_refusing_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        max_bytes: 32 << 10,
        segment_bytes: 4 << 10,
        ..SpoolConfig::default()
    };
    let mut r = records(dir.path(), cfg);
    r.audit.as_mut().unwrap().set_standalone();
    for i in 0..200 {
        assert!(
            r.write(&Record::Request {
                change: RequestChange::Opened,
                request: &request(&format!("01R{i}")),
            }),
            "request {i} refused by a standalone spool"
        );
    }
    let a = r.audit.as_ref().unwrap();
    let spool = a.shipper();
    let s = spool.spool();
    assert!(s.used_bytes() <= 32 << 10, "{}", s.used_bytes());
    assert!(s.head().seq >= 200 && s.acked() > 0);
    drop(s);
    // What is kept still verifies, from the first record kept.
    assert_spool_verifies(dir.path());
}

#[test]
fn the_audit_key_is_made_once_root_only_and_kept() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_KEY);
    let k1 = load_or_make_key(&path, "airlock-h").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let k2 = load_or_make_key(&path, "airlock-h").unwrap();
    assert_eq!(k1.verifier().to_string(), k2.verifier().to_string());
}

/// Regression: with the spool moved to /var/lib/airlock/audit, a first start under the
/// packaged unit found no audit directory and airlockd exited (seen booting the package).
#[test]
fn a_first_start_makes_the_missing_audit_directory_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("var/lib/airlock/audit");
    let log = AuditLog::open(&audit, &audit, "host-1").expect("opens on a fresh machine");
    drop(log);
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(audit.join(AUDIT_KEY).is_file());
    assert!(audit.join("host-1").is_dir());
}
