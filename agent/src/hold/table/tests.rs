use super::*;
use crate::event::Op;
use crate::hold::{HoldKind, MAX_GRANT, RequestContext};

use crate::hold::testing::FakeGate;

fn key(tgid: u32) -> HoldKey {
    HoldKey {
        tgid,
        op: Op::Exec,
        dev: 8 << 20,
        ino: 42,
        argv_hash: 7,
    }
}

fn holder(tid: u32, tgid: u32) -> Holder {
    Holder {
        tid,
        tgid,
        how: HoldKind::Restart,
    }
}

fn ctx(cgroup_id: u64) -> RequestContext {
    crate::hold::testing::context(cgroup_id)
}

fn opening(timeout_ms: u64, on_timeout: OnTimeout) -> Opening {
    Opening {
        context: ctx(99),
        timeout: Duration::from_millis(timeout_ms),
        on_timeout,
    }
}

fn who() -> Approver {
    Approver {
        uid: 0,
        pid: 1,
        user: Some("root".into()),
        via: "cli".into(),
        principal: None,
    }
}

fn table() -> (HoldTable, Arc<FakeGate>) {
    let g = Arc::new(FakeGate::default());
    (HoldTable::new(g.clone(), None), g)
}

#[test]
fn restarts_and_threads_of_one_process_make_one_request() {
    let (mut t, _) = table();
    let a = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    let b = t.on_held(key(10), holder(10, 10), 1, || {
        panic!("joining must not gather context again")
    });
    let c = t.on_held(key(10), holder(11, 10), 2, || {
        panic!("another thread joins too")
    });
    assert!(a.opened && !b.opened && !c.opened);
    assert_eq!((a.id.clone(), a.id.clone()), (b.id, c.id));
    let p = t.pending();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].attempts, 3);
    assert_eq!(
        p[0].holders.len(),
        2,
        "one holder per thread, not per attempt"
    );
}

#[test]
fn different_process_object_or_arguments_open_separate_requests() {
    let (mut t, _) = table();
    t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    t.on_held(key(11), holder(11, 11), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    t.on_held(
        HoldKey {
            argv_hash: 8,
            ..key(10)
        },
        holder(10, 10),
        0,
        || opening(1000, OnTimeout::Deny),
    );
    t.on_held(HoldKey { ino: 43, ..key(10) }, holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    assert_eq!(t.pending().len(), 4);
}

#[test]
fn approve_once_releases_every_holder_and_writes_no_standing_grant() {
    let (mut t, g) = table();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    t.on_held(key(10), holder(11, 10), 0, || unreachable!());
    let r = t
        .decide(&j.id, Decision::Approve { for_: None }, who(), 5, 0)
        .unwrap();
    assert_eq!(r.state, RequestState::Approved);
    let rel = g.released.lock().unwrap();
    assert_eq!(rel.len(), 1);
    assert_eq!(rel[0].1.len(), 2);
    assert_eq!(rel[0].2, Release::Allow);
    assert!(g.standing.lock().unwrap().is_empty());
    assert!(t.pending().is_empty());
}

#[test]
fn a_new_attempt_after_a_decision_is_a_new_request() {
    let (mut t, _) = table();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    t.decide(
        &j.id,
        Decision::Deny {
            always: false,
            reason: None,
        },
        who(),
        5,
        0,
    )
    .unwrap();
    let k = t.on_held(key(10), holder(10, 10), 6, || {
        opening(1000, OnTimeout::Deny)
    });
    assert!(k.opened);
    assert_ne!(j.id, k.id);
}

#[test]
fn approve_for_writes_an_expiring_grant_for_this_cgroup_only() {
    let (mut t, g) = table();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    let r = t
        .decide(
            &j.id,
            Decision::Approve {
                for_: Some(Duration::from_secs(60)),
            },
            who(),
            5,
            1_000,
        )
        .unwrap();
    assert_eq!(r.decision.unwrap().for_ms, Some(60_000));
    let s = g.standing.lock().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].cgroup_id, 99);
    assert_eq!(s[0].until_boot_ns, Some(1_000 + 60_000_000_000));
    assert_eq!(s[0].release, Release::Allow);
}

#[test]
fn deny_always_writes_a_grant_that_never_expires() {
    let (mut t, g) = table();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    let r = t
        .decide(
            &j.id,
            Decision::Deny {
                always: true,
                reason: Some("no".into()),
            },
            who(),
            5,
            0,
        )
        .unwrap();
    assert_eq!(r.state, RequestState::Denied);
    assert_eq!(r.decision.as_ref().unwrap().reason.as_deref(), Some("no"));
    let s = g.standing.lock().unwrap();
    assert_eq!((s[0].release, s[0].until_boot_ns), (Release::Deny, None));
}

#[test]
fn bad_id_and_closed_request_are_errors_that_change_nothing() {
    let (mut t, g) = table();
    assert!(matches!(
        t.decide("nope", Decision::Approve { for_: None }, who(), 0, 0),
        Err(HoldError::NotFound { .. })
    ));
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    t.decide(
        &j.id,
        Decision::Deny {
            always: false,
            reason: None,
        },
        who(),
        1,
        0,
    )
    .unwrap();
    let err = t
        .decide(&j.id, Decision::Approve { for_: None }, who(), 2, 0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            HoldError::Closed {
                state: "denied",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        t.get(&j.id).unwrap().state,
        RequestState::Denied,
        "still denied"
    );
    assert_eq!(
        g.released.lock().unwrap().len(),
        1,
        "nothing released twice"
    );
}

#[test]
fn zero_or_huge_durations_are_refused_and_the_request_stays_pending() {
    let (mut t, g) = table();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    for d in [Duration::ZERO, MAX_GRANT + Duration::from_secs(1)] {
        let e = t
            .decide(&j.id, Decision::Approve { for_: Some(d) }, who(), 1, 0)
            .unwrap_err();
        assert!(matches!(e, HoldError::BadDuration { .. }), "{e}");
    }
    assert_eq!(t.pending().len(), 1);
    assert!(g.released.lock().unwrap().is_empty() && g.standing.lock().unwrap().is_empty());
}

#[test]
fn a_failing_gate_leaves_the_request_pending() {
    let (mut t, g) = table();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    *g.fail.lock().unwrap() = true;
    assert!(matches!(
        t.decide(&j.id, Decision::Approve { for_: None }, who(), 1, 0),
        Err(HoldError::Gate(_))
    ));
    assert_eq!(t.get(&j.id).unwrap().state, RequestState::Pending);
    *g.fail.lock().unwrap() = false;
    t.decide(&j.id, Decision::Approve { for_: None }, who(), 2, 0)
        .unwrap();
}

#[test]
fn timeout_releases_per_on_timeout() {
    let (mut t, g) = table();
    let a = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    let b = t.on_held(key(11), holder(11, 11), 0, || {
        opening(3000, OnTimeout::Allow)
    });
    assert!(t.tick(999, |_| true).is_empty());
    let closed = t.tick(1000, |_| true);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (closed[0].id.as_str(), closed[0].state),
        (a.id.as_str(), RequestState::TimedOut)
    );
    let closed = t.tick(3000, |_| true);
    assert_eq!(closed[0].id, b.id);
    let rel = g.released.lock().unwrap();
    assert_eq!(
        rel.iter().map(|r| r.2).collect::<Vec<_>>(),
        [Release::Deny, Release::Allow]
    );
}

#[test]
fn holders_that_died_abandon_the_request() {
    let (mut t, g) = table();
    let a = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    let closed = t.tick(1, |_| false);
    assert_eq!(
        (closed[0].id.as_str(), closed[0].state),
        (a.id.as_str(), RequestState::Abandoned)
    );
    assert!(g.released.lock().unwrap().is_empty());
}

#[test]
fn watchers_see_requests_open_and_close() {
    let (mut t, _) = table();
    let mut rx = t.subscribe();
    let j = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    t.decide(&j.id, Decision::Approve { for_: None }, who(), 1, 0)
        .unwrap();
    assert!(matches!(rx.try_recv().unwrap(), Update::Opened(r) if r.id == j.id));
    assert!(
        matches!(rx.try_recv().unwrap(), Update::Closed(r) if r.id == j.id && r.state == RequestState::Approved)
    );
}

#[test]
fn pending_requests_survive_a_restart_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("requests")).unwrap();
    let g = Arc::new(FakeGate::default());
    let mut t = HoldTable::new(g.clone(), Some(store.clone()));
    let a = t.on_held(key(10), holder(10, 10), 0, || {
        opening(60_000, OnTimeout::Deny)
    });
    let b = t.on_held(key(11), holder(11, 11), 0, || {
        opening(60_000, OnTimeout::Deny)
    });
    let c = t.on_held(key(12), holder(12, 12), 0, || {
        opening(60_000, OnTimeout::Deny)
    });
    t.decide(
        &c.id,
        Decision::Deny {
            always: false,
            reason: None,
        },
        who(),
        1,
        0,
    )
    .unwrap();
    drop(t);
    let loaded = store.load(std::time::SystemTime::now()).unwrap();
    assert_eq!(loaded.pending.len(), 2);
    assert_eq!(loaded.closed.len(), 1);
    let mut t2 = HoldTable::new(g.clone(), Some(store));
    // Thread 11 died while no daemon ran.
    t2.restore(loaded.pending, loaded.closed, 2, |h| h.tid != 11);
    assert_eq!(
        t2.pending()
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&a.id)
    );
    assert_eq!(t2.get(&b.id).unwrap().state, RequestState::Abandoned);
    assert_eq!(t2.get(&c.id).unwrap().state, RequestState::Denied);
    // The restored request still de-duplicates and can be decided.
    assert!(
        !t2.on_held(key(10), holder(10, 10), 3, || unreachable!())
            .opened
    );
    t2.decide(&a.id, Decision::Approve { for_: None }, who(), 4, 0)
        .unwrap();
}

#[test]
fn an_unreadable_record_is_kept_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    std::fs::write(dir.path().join("deadbeef.json"), b"{ not json").unwrap();
    let loaded = store.load(std::time::SystemTime::now()).unwrap();
    assert_eq!(loaded.errors.len(), 1);
    assert!(loaded.errors[0].to_string().contains("deadbeef.json"));
    assert!(
        dir.path().join("deadbeef.json.bad").exists(),
        "nothing recorded is deleted"
    );
}

/// Records what it is told, with how many releases the gate had made by then.
struct Ears {
    gate: Arc<FakeGate>,
    heard: std::sync::Mutex<Vec<(Update, usize)>>,
}

impl super::Herald for Ears {
    fn tell(&self, u: &Update) {
        let released = self.gate.released.lock().unwrap().len();
        self.heard.lock().unwrap().push((u.clone(), released));
    }
}

/// Guards the order that lets a held process read why it was released: the herald hears of
/// the decision (or the timeout) while the holders still wait, not after they were let go.
#[test]
fn the_herald_hears_of_a_close_before_the_holders_are_released() {
    let (mut t, g) = table();
    let ears = Arc::new(Ears {
        gate: g.clone(),
        heard: Default::default(),
    });
    t.set_herald(ears.clone());
    let a = t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    let reason = Some("not now".to_string());
    t.decide(
        &a.id,
        Decision::Deny {
            always: false,
            reason: reason.clone(),
        },
        who(),
        5,
        0,
    )
    .unwrap();
    t.on_held(key(11), holder(11, 11), 0, || {
        opening(1000, OnTimeout::Allow)
    });
    t.tick(2000, |_| true);
    let heard = ears.heard.lock().unwrap();
    let kinds: Vec<(&str, RequestState, usize)> = heard
        .iter()
        .map(|(u, n)| match u {
            Update::Opened(r) => ("opened", r.state, *n),
            Update::Closed(r) => ("closed", r.state, *n),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("opened", RequestState::Pending, 0),
            ("closed", RequestState::Denied, 0),
            ("opened", RequestState::Pending, 1),
            ("closed", RequestState::TimedOut, 1),
        ]
    );
    let Update::Closed(denied) = &heard[1].0 else {
        unreachable!()
    };
    assert_eq!(denied.decision.as_ref().unwrap().reason, reason);
    assert_eq!(g.released.lock().unwrap().len(), 2);
}

/// Guards against a line per tick: a timed-out request whose release keeps failing is
/// retried every tick, and its holders are told once.
#[test]
fn the_herald_hears_of_a_close_once_while_its_release_is_retried() {
    let (mut t, g) = table();
    let ears = Arc::new(Ears {
        gate: g.clone(),
        heard: Default::default(),
    });
    t.set_herald(ears.clone());
    t.on_held(key(10), holder(10, 10), 0, || {
        opening(1000, OnTimeout::Deny)
    });
    *g.fail.lock().unwrap() = true;
    assert!(t.tick(2000, |_| true).is_empty());
    assert!(t.tick(2200, |_| true).is_empty());
    *g.fail.lock().unwrap() = false;
    assert_eq!(t.tick(2400, |_| true).len(), 1);
    let closes = ears
        .heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(u, _)| matches!(u, Update::Closed(_)))
        .count();
    assert_eq!(closes, 1);
}
