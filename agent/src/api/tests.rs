//! The approvals API end to end without root: a real server on a socket in a temporary
//! directory, a real request table behind it (releasing through a fake gate), the real client.
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airlock_proto::v1 as pb;
use pb::decide_request::{Approve, Decision as PbDecision, Deny};
use tonic::Code;

use super::convert::request_from_proto;
use super::*;
use crate::event::Op;
use crate::hold::table::{HoldTable, Opening};
use crate::hold::{
    Approvals, HoldKey, HoldKind, Holder, OnTimeout, Release, RequestContext, RequestState,
};

use crate::hold::testing::FakeGate;

fn ctx() -> RequestContext {
    RequestContext {
        argv: vec!["apt".into(), "install".into(), "x".into()],
        ..crate::hold::testing::context(99)
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    server: Option<ApiServer>,
    approvals: Approvals,
    gate: Arc<FakeGate>,
}

impl Fixture {
    async fn start(classify: Classify) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let socket = crate::paths::socket(dir.path());
        let gate = Arc::new(FakeGate::default());
        let approvals = Approvals::new(HoldTable::new(gate.clone(), None));
        let server = serve(
            ApiConfig {
                socket: socket.clone(),
                group: None,
                local: crate::api::LocalPolicy::default(),
            },
            approvals.clone(),
            classify,
        )
        .await
        .unwrap();
        Fixture {
            dir,
            socket,
            server: Some(server),
            approvals,
            gate,
        }
    }

    async fn plain() -> Fixture {
        Fixture::start(Arc::new(|_| None)).await
    }

    /// Opens a request as a held exec of process `tgid` would.
    fn hold(&self, tgid: u32) -> String {
        let key = HoldKey {
            tgid,
            op: Op::Exec,
            dev: 8 << 20,
            ino: 42,
            argv_hash: 7,
        };
        let holder = Holder {
            tid: tgid,
            tgid,
            how: HoldKind::Restart,
        };
        self.approvals
            .on_held(key, holder, || Opening {
                context: ctx(),
                timeout: Duration::from_secs(300),
                on_timeout: OnTimeout::Deny,
            })
            .id
    }

    async fn client(&self) -> airlock_proto::ApprovalsClient<tonic::transport::Channel> {
        connect(&self.socket).await.unwrap()
    }
}

fn approve(id: &str, for_ms: Option<u64>) -> pb::DecideRequest {
    pb::DecideRequest {
        id: id.into(),
        decision: Some(PbDecision::Approve(Approve { for_ms })),
    }
}

fn deny(id: &str, always: bool, reason: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        id: id.into(),
        decision: Some(PbDecision::Deny(Deny {
            always,
            reason: reason.into(),
        })),
    }
}

fn me() -> u32 {
    std::process::id()
}

#[tokio::test]
async fn list_pending_returns_every_waiting_request_oldest_first() {
    let f = Fixture::plain().await;
    let a = f.hold(10);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let b = f.hold(11);
    let got = f
        .client()
        .await
        .list_pending(pb::ListPendingRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = got.requests.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, [a.clone(), b.clone()]);
    let table = crate::cli::pending::table(
        &got.requests
            .into_iter()
            .map(|r| request_from_proto(r).unwrap())
            .collect::<Vec<_>>(),
        0,
        false,
    );
    assert!(
        table.starts_with("ID") && table.contains(&a) && table.contains("apt install x"),
        "{table}"
    );
}

#[tokio::test]
async fn get_request_returns_the_whole_request_as_the_table_has_it() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let got = f
        .client()
        .await
        .get_request(pb::GetRequestRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        request_from_proto(got).unwrap(),
        f.approvals.get(&id).unwrap()
    );
    let text = crate::cli::show::render(&f.approvals.get(&id).unwrap(), 0);
    assert!(
        text.contains("exec /usr/bin/apt") && text.contains("apt install x"),
        "{text}"
    );
}

#[tokio::test]
async fn approve_once_releases_the_hold_and_records_the_caller_as_approver() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let r = f
        .client()
        .await
        .decide(approve(&id, None))
        .await
        .unwrap()
        .into_inner();
    let r = request_from_proto(r).unwrap();
    assert_eq!(r.state, RequestState::Approved);
    let by = r.decision.as_ref().unwrap().by.clone().unwrap();
    assert_eq!(
        (by.uid, by.pid, by.via.as_str()),
        (nix::unistd::getuid().as_raw(), me(), "cli")
    );
    let expected_user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map(|u| u.name);
    assert_eq!(by.user, expected_user);
    assert_eq!(f.gate.released.lock().unwrap()[0].2, Release::Allow);
    assert!(
        f.gate.standing.lock().unwrap().is_empty(),
        "once writes no standing grant"
    );
    assert_eq!(
        crate::cli::approve::said(&r),
        format!("approved {id} (once)")
    );
}

#[tokio::test]
async fn approve_for_writes_a_standing_grant_and_says_until_when() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let r = f
        .client()
        .await
        .decide(approve(&id, Some(600_000)))
        .await
        .unwrap()
        .into_inner();
    let r = request_from_proto(r).unwrap();
    assert_eq!(r.decision.as_ref().unwrap().for_ms, Some(600_000));
    let s = f.gate.standing.lock().unwrap();
    assert_eq!(
        (s.len(), s[0].release, s[0].cgroup_id),
        (1, Release::Allow, 99)
    );
    let said = crate::cli::approve::said(&r);
    assert!(
        said.starts_with(&format!(
            "approved {id} (for 10m: agent a may exec /usr/bin/apt until "
        )),
        "{said}"
    );
}

#[tokio::test]
async fn deny_with_reason_records_the_reason_and_fails_the_hold() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let r = f
        .client()
        .await
        .decide(deny(&id, false, "not today"))
        .await
        .unwrap()
        .into_inner();
    let r = request_from_proto(r).unwrap();
    assert_eq!(r.state, RequestState::Denied);
    assert_eq!(
        r.decision.as_ref().unwrap().reason.as_deref(),
        Some("not today")
    );
    assert_eq!(f.gate.released.lock().unwrap()[0].2, Release::Deny);
    assert_eq!(
        crate::cli::deny::said(&r),
        format!("denied {id} (once): not today")
    );
}

#[tokio::test]
async fn deny_always_writes_a_standing_denial() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let r = f
        .client()
        .await
        .decide(deny(&id, true, ""))
        .await
        .unwrap()
        .into_inner();
    let r = request_from_proto(r).unwrap();
    assert_eq!(f.gate.standing.lock().unwrap()[0].release, Release::Deny);
    assert_eq!(
        r.decision.as_ref().unwrap().reason,
        None,
        "an empty reason is no reason"
    );
    assert!(crate::cli::deny::said(&r).starts_with(&format!(
        "denied {id} (always: agent a may not exec /usr/bin/apt"
    )));
}

#[tokio::test]
async fn unknown_id_is_not_found_and_names_the_id() {
    let f = Fixture::plain().await;
    let mut c = f.client().await;
    let e = c.decide(approve("0000dead", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("0000dead"), "{}", e.message());
    let e = c
        .get_request(pb::GetRequestRequest {
            id: "0000dead".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn malformed_ids_and_decisions_are_invalid_arguments_naming_the_field() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let mut c = f.client().await;
    for (req, field) in [
        (approve("not-an-id!", None), "id:"),
        (approve("", None), "id:"),
        (
            pb::DecideRequest {
                id: id.clone(),
                decision: None,
            },
            "decision:",
        ),
        (approve(&id, Some(0)), "approve.for_ms:"),
    ] {
        let e = c.decide(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    let e = c
        .get_request(pb::GetRequestRequest { id: "XYZ".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Too long a grant is the table's to refuse (it owns the bound).
    let e = c
        .decide(approve(&id, Some(31 * 24 * 3600 * 1000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        f.approvals.get(&id).unwrap().state,
        RequestState::Pending,
        "nothing changed"
    );
}

#[tokio::test]
async fn deciding_a_closed_request_is_failed_precondition_and_changes_nothing() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    let mut c = f.client().await;
    c.decide(deny(&id, false, "")).await.unwrap();
    let e = c.decide(approve(&id, None)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        format!("request {id} is already denied; nothing changed")
    );
    assert_eq!(f.approvals.get(&id).unwrap().state, RequestState::Denied);
    assert_eq!(
        f.gate.released.lock().unwrap().len(),
        1,
        "released once only"
    );
}

#[tokio::test]
async fn a_failing_gate_is_internal_and_the_request_stays_pending() {
    let f = Fixture::plain().await;
    let id = f.hold(10);
    *f.gate.fail.lock().unwrap() = true;
    let e = f
        .client()
        .await
        .decide(approve(&id, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(f.approvals.get(&id).unwrap().state, RequestState::Pending);
}

async fn assert_every_rpc_refused(f: &Fixture, id: &str) {
    let mut c = f.client().await;
    let want = format!(
        "caller pid {} is in agent cgroup of agent evil: agents cannot approve or list requests",
        me()
    );
    let errs = [
        c.list_pending(pb::ListPendingRequest::default())
            .await
            .unwrap_err(),
        c.get_request(pb::GetRequestRequest { id: id.into() })
            .await
            .unwrap_err(),
        c.decide(approve(id, None)).await.unwrap_err(),
        c.decide(deny(id, true, "")).await.unwrap_err(),
        c.watch(pb::WatchRequest::default()).await.unwrap_err(),
    ];
    for e in errs {
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, want.as_str())
        );
    }
    assert_eq!(
        f.approvals.get(id).unwrap().state,
        RequestState::Pending,
        "nothing changed"
    );
    assert!(
        f.gate.released.lock().unwrap().is_empty() && f.gate.standing.lock().unwrap().is_empty()
    );
}

#[tokio::test]
async fn a_caller_inside_an_agent_cgroup_is_refused_every_rpc() {
    let f = Fixture::start(Arc::new(|pid| (pid == me()).then(|| "evil".to_string()))).await;
    let id = f.hold(10);
    assert_every_rpc_refused(&f, &id).await;
}

#[tokio::test]
async fn a_caller_classified_as_agent_when_it_connected_stays_refused() {
    // Guards against pid reuse: the connecting agent process exits and a non-agent process
    // gets its pid before the RPC is served. Only the first classification (at accept) says
    // "agent" here.
    let n = Arc::new(AtomicUsize::new(0));
    let f = Fixture::start(Arc::new(move |_| {
        (n.fetch_add(1, Ordering::SeqCst) == 0).then(|| "evil".to_string())
    }))
    .await;
    let id = f.hold(10);
    // Without the classification at accept, every RPC after the first would pass.
    assert_every_rpc_refused(&f, &id).await;
}

#[tokio::test]
async fn a_caller_that_became_an_agent_after_connecting_is_refused() {
    let n = Arc::new(AtomicUsize::new(0));
    let f = Fixture::start(Arc::new(move |_| {
        (n.fetch_add(1, Ordering::SeqCst) > 0).then(|| "evil".to_string())
    }))
    .await;
    let id = f.hold(10);
    assert_every_rpc_refused(&f, &id).await;
}

#[test]
fn a_request_without_peer_credentials_is_refused() {
    let classify: Classify = Arc::new(|_| None);
    let e = tonic::Status::from(peer::caller(None, &classify).unwrap_err());
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_socket_is_a_socket_with_mode_0660() {
    let f = Fixture::plain().await;
    let m = std::fs::symlink_metadata(&f.socket).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o7777, 0o660);
}

#[tokio::test]
async fn a_socket_group_is_applied_and_an_unknown_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = Approvals::new(HoldTable::new(Arc::new(FakeGate::default()), None));
    let socket = dir.path().join("g.sock");
    let cfg = |group: &str| ApiConfig {
        socket: socket.clone(),
        group: Some(group.to_string()),
        local: crate::api::LocalPolicy::default(),
    };
    let none: Classify = Arc::new(|_| None);
    let e = serve(
        cfg("airlock-no-such-group"),
        approvals.clone(),
        none.clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, ApiError::UnknownGroup { .. }));
    assert!(e.to_string().contains("\"airlock-no-such-group\""), "{e}");
    assert!(!socket.exists(), "nothing created for a bad configuration");
    // Our own group: chown to it needs no privilege.
    let gid = nix::unistd::getegid();
    let Some(own) = nix::unistd::Group::from_gid(gid).unwrap() else {
        return;
    };
    let server = serve(cfg(&own.name), approvals, none).await.unwrap();
    assert_eq!(
        std::fs::metadata(server.socket()).unwrap().gid(),
        gid.as_raw()
    );
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = Approvals::new(HoldTable::new(Arc::new(FakeGate::default()), None));
    let none: Classify = Arc::new(|_| None);
    let socket = dir.path().join("s.sock");
    let cfg = ApiConfig {
        socket: socket.clone(),
        group: None,
        local: crate::api::LocalPolicy::default(),
    };
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a dead listener leaves its socket file");
    let live = serve(cfg.clone(), approvals.clone(), none.clone())
        .await
        .unwrap();
    let e = serve(cfg.clone(), approvals.clone(), none.clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ApiError::InUse { .. }), "{e}");
    connect(&socket)
        .await
        .unwrap()
        .list_pending(pb::ListPendingRequest::default())
        .await
        .expect("the first server still serves");
    drop(live);
    assert!(!socket.exists(), "dropping the server removes its socket");
    std::fs::write(&socket, b"keep me").unwrap();
    let e = serve(cfg, approvals, none).await.err().unwrap();
    assert!(matches!(e, ApiError::NotASocket { .. }), "{e}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"keep me");
}

#[tokio::test]
async fn connecting_to_a_missing_socket_names_it_and_asks_whether_airlockd_runs() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let e = connect(&socket).await.err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains(&socket.display().to_string()) && msg.contains("is airlockd running"),
        "{msg}"
    );
}

async fn next(
    s: &mut tonic::Streaming<pb::WatchEvent>,
) -> Result<Option<pb::WatchEvent>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a watch event within 5s")
}

#[tokio::test]
async fn watch_reports_a_request_opening_then_closing() {
    let f = Fixture::plain().await;
    let mut c = f.client().await;
    let mut s = c
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let id = f.hold(10);
    let ev = next(&mut s).await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.request.as_ref().unwrap().id.as_str()),
        (pb::watch_event::Kind::Opened as i32, id.as_str())
    );
    c.decide(approve(&id, None)).await.unwrap();
    let ev = next(&mut s).await.unwrap().unwrap();
    assert_eq!(ev.kind, pb::watch_event::Kind::Closed as i32);
    let r = request_from_proto(ev.request.unwrap()).unwrap();
    assert_eq!(
        (r.id.as_str(), r.state),
        (id.as_str(), RequestState::Approved)
    );
    assert!(crate::cli::watch::closed(&r).contains(&format!(
        "closed   {id} agent=a exec /usr/bin/apt: approved by "
    )));
}

#[tokio::test]
async fn shutdown_ends_open_watches_with_unavailable_and_removes_the_socket() {
    let mut f = Fixture::plain().await;
    let mut s = f
        .client()
        .await
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let server = f.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), server.shutdown())
        .await
        .expect("no hang on open watches")
        .unwrap();
    let e = next(&mut s).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(!f.socket.exists());
    assert!(f.dir.path().exists());
}
