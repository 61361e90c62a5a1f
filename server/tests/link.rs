//! The server end to end over its real transport, in process: hosts on the mTLS HostLink
//! stream (`FakeHost`), approvers on the Approvals API with bearer tokens, one server
//! (`TestServer`, SQLite in a temporary directory, TLS on 127.0.0.1). No root needed.
//!
//! What is guarded: decisions reach the host that holds the request, and only through the
//! rules (routes, thresholds, the launcher rule, tokens, host certificates); a revoked host is
//! cut off; whatever a host sends that is malformed or not its business is refused with the
//! code `link.proto` documents, changes nothing in the store and is recorded as an attempt.
use std::time::{Duration, Instant};

use airlock_approval::RequestState;
use airlock_proto::v1 as pb;
use airlock_server::broker::now_ms;
use airlock_server::store::{HostRow, RequestFilter, Store, StoredRequest};
use airlock_server::testing::{
    self, FakeHost, TestServer, approvals_client, approve, closed_by, context, deny, new_id,
    request, request_with, wait_stored,
};
use pb::decide_request::Decision as D;
use tonic::Code;

/// Longest wait for something that should happen at once.
const T: Duration = Duration::from_secs(5);
/// How long "nothing happens" is watched.
const QUIET: Duration = Duration::from_millis(400);

/// Everything the store holds besides attempts: requests (with votes and decisions) and hosts.
async fn snapshot(s: &Store) -> (Vec<StoredRequest>, Vec<HostRow>) {
    (
        s.list_requests(&RequestFilter::default()).await.unwrap(),
        s.hosts().await.unwrap(),
    )
}

/// Asserts that an attempt by `who` doing `action` (on `id`, when given) was recorded with
/// `result`, and returns its message.
async fn recorded(s: &Store, who: &str, action: &str, id: Option<&str>, result: &str) -> String {
    let all = s.attempts(200).await.unwrap();
    all.iter()
        .find(|a| {
            a.who == who
                && a.action == action
                && a.result == result
                && (id.is_none() || a.request_id.as_deref() == id)
        })
        .unwrap_or_else(|| panic!("no attempt {who} {action} {id:?} {result} among {all:#?}"))
        .message
        .clone()
}

fn code_of(r: &pb::Rejected) -> Code {
    Code::from_i32(r.code)
}

/// A server, a linked host `web-1` with one pending request stored, and that request.
async fn one_pending() -> (TestServer, FakeHost, pb::HoldRequest) {
    let srv = TestServer::start().await.unwrap();
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    (srv, host, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_through_the_server_reaches_the_host_as_a_decision() {
    let (srv, mut host, r) = one_pending().await;
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    let answered = alice.decide(approve(&r.id)).await.unwrap().into_inner();
    assert_eq!(answered.id, r.id);
    assert_eq!(answered.votes.len(), 1);
    assert_eq!(answered.route.as_deref(), Some("default"));
    assert!(
        answered.decision.is_some(),
        "a 1-of-M route is decided by one approval"
    );

    let d = host.decision(T).await.unwrap();
    let decide = d.decide.clone().unwrap();
    assert_eq!(decide.id, r.id);
    assert!(
        matches!(
            decide.decision,
            Some(D::Approve(pb::decide_request::Approve { for_ms: None }))
        ),
        "{decide:?}"
    );
    let by = d.by.clone().unwrap();
    assert_eq!(by.principal.as_deref(), Some("alice"));
    assert_eq!(by.via, "server");
    assert_eq!(
        d.votes
            .iter()
            .map(|v| v.principal.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );

    // The host applies it and reports the outcome: the request closes as approved.
    host.outcome(closed_by(&r, &d)).unwrap();
    let deadline = Instant::now() + T;
    loop {
        let s = srv.store.request(&r.id).await.unwrap().unwrap();
        if s.state == RequestState::Approved {
            assert_eq!(
                s.decision.unwrap().by.unwrap().principal.as_deref(),
                Some("alice")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outcome never closed the request: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorded(&srv.store, "alice", "allow", Some(&r.id), "OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_reaches_the_host_with_its_reason_and_principal() {
    let (srv, mut host, r) = one_pending().await;
    let mut bob = srv
        .approver(&srv.issue_token("bob").await.unwrap())
        .await
        .unwrap();
    bob.decide(deny(&r.id, "not during the freeze"))
        .await
        .unwrap();
    let d = host.decision(T).await.unwrap();
    let decide = d.decide.unwrap();
    assert_eq!(decide.id, r.id);
    match decide.decision {
        Some(D::Deny(n)) => {
            assert_eq!(n.reason, "not during the freeze");
            assert!(!n.always);
        }
        other => panic!("expected a deny, got {other:?}"),
    }
    assert_eq!(d.by.unwrap().principal.as_deref(), Some("bob"));
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert_eq!(s.decision.unwrap().release, airlock_approval::Release::Deny);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_of_two_route_needs_two_distinct_principals() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let mut c = context("web-1");
    c.rule = Some("pair-deploy".into());
    let r = request_with(&new_id(), &c);
    host.opened(r.clone()).unwrap();
    let stored = wait_stored(&srv.store, &r.id, T).await.unwrap();
    assert_eq!(
        (stored.route.as_deref(), stored.threshold),
        (Some("pair"), 2)
    );
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    let mut bob = srv
        .approver(&srv.issue_token("bob").await.unwrap())
        .await
        .unwrap();

    let first = alice.decide(approve(&r.id)).await.unwrap().into_inner();
    assert!(
        first.decision.is_none(),
        "one approval of two decided: {first:?}"
    );
    assert!(
        host.quiet(QUIET).await.unwrap().is_none(),
        "the host got a decision after one of two approvals"
    );
    // The same principal again is not a second approver.
    let again = alice.decide(approve(&r.id)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("already voted"), "{again:?}");
    assert!(
        host.quiet(QUIET).await.unwrap().is_none(),
        "the host got a decision after alice voted twice"
    );
    assert!(
        srv.store
            .request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .decision
            .is_none()
    );

    bob.decide(approve(&r.id)).await.unwrap();
    let d = host.decision(T).await.unwrap();
    assert_eq!(d.decide.unwrap().id, r.id);
    assert_eq!(d.by.unwrap().principal.as_deref(), Some("bob"));
    let mut who: Vec<_> = d.votes.iter().map(|v| v.principal.clone()).collect();
    who.sort();
    assert_eq!(who, ["alice", "bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_may_not_approve_their_own_agents_request() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let mut c = context("web-1");
    // alice's host_users say host user alice is her.
    c.launched_by.as_mut().unwrap().user = Some("alice".into());
    let r = request_with(&new_id(), &c);
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    let e = alice.decide(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("launched this agent"), "{e:?}");
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert!(
        s.decision.is_none() && s.votes.is_empty(),
        "a refused vote was stored: {s:?}"
    );
    recorded(
        &srv.store,
        "alice",
        "approve",
        Some(&r.id),
        "PERMISSION_DENIED",
    )
    .await;
    assert!(host.quiet(QUIET).await.unwrap().is_none());

    // Another approver may.
    let mut bob = srv
        .approver(&srv.issue_token("bob").await.unwrap())
        .await
        .unwrap();
    bob.decide(approve(&r.id)).await.unwrap();
    assert_eq!(
        host.decision(T)
            .await
            .unwrap()
            .by
            .unwrap()
            .principal
            .as_deref(),
        Some("bob")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_outside_the_routes_groups_is_refused() {
    let (srv, mut host, r) = one_pending().await;
    let before = snapshot(&srv.store).await;
    let mut carol = srv
        .approver(&srv.issue_token("carol").await.unwrap())
        .await
        .unwrap();
    for d in [approve(&r.id), deny(&r.id, "no")] {
        let e = carol.decide(d).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("only members of"), "{e:?}");
    }
    assert_eq!(snapshot(&srv.store).await, before);
    recorded(
        &srv.store,
        "carol",
        "approve",
        Some(&r.id),
        "PERMISSION_DENIED",
    )
    .await;
    recorded(
        &srv.store,
        "carol",
        "deny",
        Some(&r.id),
        "PERMISSION_DENIED",
    )
    .await;
    assert!(host.quiet(QUIET).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unknown_and_expired_tokens_are_unauthenticated() {
    let (srv, _host, r) = one_pending().await;
    let before = snapshot(&srv.store).await;
    // Issued two hours ago for one hour.
    let (expired, _) = srv
        .issue_token_at("alice", 3_600_000, now_ms() - 7_200_000)
        .await
        .unwrap();
    let cases = [
        (Some(expired.as_str()), "expired"),
        (
            Some("airlock_tok_0000000000000000000000000000000000000000000000000000000000000000"),
            "unknown API token",
        ),
        (None, "no API token"),
    ];
    for (token, why) in cases {
        let mut c = approvals_client(&srv.url, &srv.ca_pem, None, token)
            .await
            .unwrap();
        let e = c.decide(approve(&r.id)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{why}: {e:?}");
        assert!(e.message().contains(why), "{why}: {e:?}");
        let e = c
            .list_pending(pb::ListPendingRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{why}: {e:?}");
        let m = recorded(
            &srv.store,
            "unknown",
            "approve",
            Some(&r.id),
            "UNAUTHENTICATED",
        )
        .await;
        assert!(!m.is_empty());
    }
    assert_eq!(snapshot(&srv.store).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_on_an_open_connection() {
    let (srv, mut host, r) = one_pending().await;
    let (token, row) = srv
        .issue_token_at("alice", 3_600_000, now_ms())
        .await
        .unwrap();
    let mut alice = srv.approver(&token).await.unwrap();
    let listed = alice
        .list_pending(pb::ListPendingRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.requests.len(), 1);
    srv.store.revoke_token(&row.id, now_ms()).await.unwrap();
    let e = alice.decide(approve(&r.id)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert!(s.decision.is_none() && s.votes.is_empty());
    assert!(host.quiet(QUIET).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_host_is_cut_off_within_two_seconds_and_cannot_reconnect() {
    let srv = TestServer::start().await.unwrap();
    let id = srv.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect(&srv.url, &srv.ca_pem, &id).await.unwrap();
    let t = Instant::now();
    srv.store.revoke_host("web-1", now_ms()).await.unwrap();
    let end = host.ended(Duration::from_secs(3)).await.unwrap();
    let took = t.elapsed();
    let s = end.expect("the stream ended without a status");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(took < Duration::from_millis(2_200), "cut after {took:?}");
    recorded(&srv.store, "host:web-1", "link", None, "PERMISSION_DENIED").await;

    let e = FakeHost::connect(&srv.url, &srv.ca_pem, &id)
        .await
        .err()
        .expect("a revoked host linked again");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    assert!(srv.broker.hub.connected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_forbids_break_glass_reaches_every_linked_host_at_once() {
    let srv = TestServer::start().await.unwrap();
    let id = srv.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect(&srv.url, &srv.ca_pem, &id).await.unwrap();
    assert_eq!(host.settings.as_ref().map(|s| s.break_glass), Some(true));
    let text = format!(
        "break_glass: false\n{}",
        airlock_server::testing::DEFAULT_CONFIG
    );
    let cfg = airlock_server::config::parse(&text, "server.yaml").unwrap();
    srv.broker.set_config(cfg);
    // At once: no per-second re-read is involved any more.
    match host.recv_raw(Duration::from_millis(500)).await.unwrap() {
        pb::ServerMessage {
            body: Some(pb::server_message::Body::Settings(s)),
        } => assert!(!s.break_glass),
        other => panic!("expected Settings, got {other:?}"),
    }
    // A reload that changes nothing the host sees sends nothing.
    srv.broker
        .set_config(airlock_server::config::parse(&text, "server.yaml").unwrap());
    let next = host.recv_raw(Duration::from_millis(300)).await;
    assert!(
        matches!(next, Err(airlock_server::testing::RecvError::Timeout)),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_certificate_cannot_list_or_decide_even_with_a_valid_token() {
    let srv = TestServer::start().await.unwrap();
    let id = srv.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect(&srv.url, &srv.ca_pem, &id).await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let before = snapshot(&srv.store).await;
    let token = srv.issue_token("alice").await.unwrap();
    for token in [None, Some(token.as_str())] {
        let mut c = approvals_client(&srv.url, &srv.ca_pem, Some(&id), token)
            .await
            .unwrap();
        let e = c.decide(approve(&r.id)).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "token {}: {e:?}",
            token.is_some()
        );
        assert!(e.message().contains("host certificate"), "{e:?}");
        let e = c
            .list_pending(pb::ListPendingRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    assert_eq!(snapshot(&srv.store).await, before);
    let who = format!("cert:{}", &id.cert_sha256[..16]);
    recorded(
        &srv.store,
        &who,
        "approve",
        Some(&r.id),
        "PERMISSION_DENIED",
    )
    .await;
    assert!(host.quiet(QUIET).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_other_than_hello_ends_the_stream_invalid_argument() {
    let srv = TestServer::start().await.unwrap();
    let id = srv.enroll("web-1").await.unwrap();
    let mut host = FakeHost::connect_raw(&srv.url, &srv.ca_pem, &id)
        .await
        .unwrap();
    let before = snapshot(&srv.store).await;
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    let s = host
        .ended(T)
        .await
        .unwrap()
        .expect("the stream ended without a status");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("Hello"), "{s:?}");
    assert_eq!(snapshot(&srv.store).await, before);
    assert!(srv.store.request(&r.id).await.unwrap().is_none());
    recorded(
        &srv.store,
        "host:web-1",
        "message",
        None,
        "INVALID_ARGUMENT",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_is_rejected_and_the_stream_stays_usable() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let before = snapshot(&srv.store).await;
    host.hello(vec!["0123456789abcdefghjkmnpqrs".into()])
        .unwrap();
    let rej = host.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::FailedPrecondition, "{rej:?}");
    assert!(rej.message.contains("second Hello"), "{rej:?}");
    assert_eq!(snapshot(&srv.store).await, before);
    recorded(
        &srv.store,
        "host:web-1",
        "hello",
        None,
        "FAILED_PRECONDITION",
    )
    .await;
    // Still linked: a request opened now is stored and decided.
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let mut bob = srv
        .approver(&srv.issue_token("bob").await.unwrap())
        .await
        .unwrap();
    bob.decide(approve(&r.id)).await.unwrap();
    assert_eq!(host.decision(T).await.unwrap().decide.unwrap().id, r.id);
}

/// Sends `r` as Opened and expects it rejected with `code`, naming `field`, the stream still
/// open, nothing stored and the attempt recorded.
async fn opened_is_rejected(
    srv: &TestServer,
    host: &mut FakeHost,
    r: pb::HoldRequest,
    code: Code,
    field: &str,
) {
    let before = snapshot(&srv.store).await;
    host.opened(r.clone()).unwrap();
    let rej = host
        .rejected(T)
        .await
        .unwrap_or_else(|e| panic!("{field}: {e}"));
    assert_eq!(code_of(&rej), code, "{field}: {rej:?}");
    assert_eq!(rej.id, r.id, "{rej:?}");
    assert!(
        rej.message.contains(field),
        "message should name {field}: {rej:?}"
    );
    assert_eq!(
        snapshot(&srv.store).await,
        before,
        "{field}: the store changed"
    );
    let id = (!r.id.is_empty()).then_some(r.id.as_str());
    let m = recorded(
        &srv.store,
        &format!("host:{}", host.name),
        "opened",
        id,
        airlock_server::error::code_name(code),
    )
    .await;
    assert_eq!(m, rej.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_request_with_a_malformed_id_is_rejected() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    for bad in [
        "",
        "NOT-AN-ID",
        "0123456789abcdefghjkmnpqrs/../x",
        &"a".repeat(65),
    ] {
        let r = request("web-1", bad);
        opened_is_rejected(&srv, &mut host, r, Code::InvalidArgument, "request.id").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_request_without_context_or_request_is_rejected() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let mut r = request("web-1", &new_id());
    r.context = None;
    opened_is_rejected(&srv, &mut host, r, Code::InvalidArgument, "request.context").await;
    // An Opened without its request at all.
    let before = snapshot(&srv.store).await;
    host.send(pb::HostMessage {
        body: Some(pb::host_message::Body::Opened(pb::Opened { request: None })),
    })
    .unwrap();
    let rej = host.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::InvalidArgument);
    assert!(rej.message.contains("opened.request"), "{rej:?}");
    // And a message with no body (from a newer host).
    host.send(pb::HostMessage { body: None }).unwrap();
    let rej = host.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::InvalidArgument);
    assert_eq!(snapshot(&srv.store).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_request_with_an_unknown_enum_value_is_rejected() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let mut r = request("web-1", &new_id());
    r.context.as_mut().unwrap().op = 99;
    opened_is_rejected(&srv, &mut host, r, Code::InvalidArgument, "request.context").await;
    let mut r = request("web-1", &new_id());
    r.state = 42;
    opened_is_rejected(&srv, &mut host, r, Code::InvalidArgument, "request.state").await;
    let mut r = request("web-1", &new_id());
    r.on_timeout = 7;
    opened_is_rejected(
        &srv,
        &mut host,
        r,
        Code::InvalidArgument,
        "request.on_timeout",
    )
    .await;
    // Known values that make no sense for an opened request.
    let mut r = request("web-1", &new_id());
    r.state = pb::RequestState::Approved as i32;
    opened_is_rejected(&srv, &mut host, r, Code::InvalidArgument, "request.state").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opened_request_with_oversized_argv_is_rejected() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let mut r = request("web-1", &new_id());
    r.context.as_mut().unwrap().argv = (0..257).map(|i| format!("arg{i}")).collect();
    opened_is_rejected(
        &srv,
        &mut host,
        r,
        Code::InvalidArgument,
        "request.context.argv",
    )
    .await;
    let mut r = request("web-1", &new_id());
    r.context.as_mut().unwrap().argv.push("x".repeat(4097));
    opened_is_rejected(
        &srv,
        &mut host,
        r,
        Code::InvalidArgument,
        "request.context.argv",
    )
    .await;
    let mut r = request("web-1", &new_id());
    r.context.as_mut().unwrap().target_path = Some(format!("/{}", "p".repeat(4096)));
    opened_is_rejected(
        &srv,
        &mut host,
        r,
        Code::InvalidArgument,
        "request.context.target_path",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_for_an_unknown_request_is_rejected() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let before = snapshot(&srv.store).await;
    let r = request("web-1", &new_id());
    let mut closed = r.clone();
    closed.state = pb::RequestState::Abandoned as i32;
    host.outcome(closed).unwrap();
    let rej = host.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::FailedPrecondition, "{rej:?}");
    assert_eq!(rej.id, r.id);
    assert_eq!(snapshot(&srv.store).await, before);
    recorded(
        &srv.store,
        "host:web-1",
        "outcome",
        Some(&r.id),
        "FAILED_PRECONDITION",
    )
    .await;
    // A pending "outcome" is malformed whatever the id.
    let mut pending = r.clone();
    pending.id = new_id();
    host.outcome(pending).unwrap();
    let rej = host.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::InvalidArgument, "{rej:?}");
    assert!(rej.message.contains("request.state"), "{rej:?}");
    assert_eq!(snapshot(&srv.store).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_close_or_reopen_another_hosts_request() {
    let srv = TestServer::start().await.unwrap();
    let mut a = srv.host("web-1").await.unwrap();
    let mut b = srv.host("web-2").await.unwrap();
    let r = request("web-1", &new_id());
    a.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let before = snapshot(&srv.store).await;

    // web-2 claims web-1's request was approved (with a forged decision record).
    let forged = pb::Decision {
        decide: Some(approve(&r.id)),
        by: Some(pb::Approver {
            uid: 0,
            pid: 0,
            user: None,
            via: "server".into(),
            principal: Some("alice".into()),
        }),
        votes: vec![],
    };
    b.outcome(closed_by(&r, &forged)).unwrap();
    let rej = b.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::PermissionDenied, "{rej:?}");
    assert_eq!(rej.id, r.id);
    // ... and re-opens it as its own.
    b.opened(request("web-2", &r.id)).unwrap();
    let rej = b.rejected(T).await.unwrap();
    assert_eq!(code_of(&rej), Code::PermissionDenied, "{rej:?}");
    assert_eq!(
        snapshot(&srv.store).await,
        before,
        "another host's request changed"
    );
    recorded(
        &srv.store,
        "host:web-2",
        "outcome",
        Some(&r.id),
        "PERMISSION_DENIED",
    )
    .await;
    recorded(
        &srv.store,
        "host:web-2",
        "opened",
        Some(&r.id),
        "PERMISSION_DENIED",
    )
    .await;
    let s = srv.store.request(&r.id).await.unwrap().unwrap();
    assert_eq!(
        (s.host.as_str(), s.state, s.decision.is_none()),
        ("web-1", RequestState::Pending, true)
    );

    // web-1's request is still decided normally, and only web-1 hears about it.
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice.decide(approve(&r.id)).await.unwrap();
    assert_eq!(a.decision(T).await.unwrap().decide.unwrap().id, r.id);
    assert!(
        b.quiet(QUIET).await.unwrap().is_none(),
        "web-2 heard of web-1's decision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_ends_that_stream_and_the_server_keeps_serving_others() {
    let srv = TestServer::start().await.unwrap();
    let mut big = srv.host("web-1").await.unwrap();
    let mut other = srv.host("web-2").await.unwrap();
    let before = snapshot(&srv.store).await;
    let mut r = request("web-1", &new_id());
    // 300 KiB in one field: over the server's 256 KiB message bound.
    r.context.as_mut().unwrap().reason = Some("x".repeat(300 * 1024));
    big.opened(r.clone()).unwrap();
    let end = big.ended(T).await.unwrap();
    // tonic says OUT_OF_RANGE ("decoded message length too large").
    let s = end.expect("the oversized message's stream ended with OK");
    assert!(
        matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{s:?}"
    );
    assert_eq!(snapshot(&srv.store).await, before);
    let all = srv.store.attempts(50).await.unwrap();
    assert!(
        all.iter()
            .any(|a| a.who == "host:web-1" && a.action == "message" && a.result != "OK"),
        "no attempt recorded for the oversized message: {all:#?}"
    );

    // The other host's stream was not disturbed.
    let r2 = request("web-2", &new_id());
    other.opened(r2.clone()).unwrap();
    wait_stored(&srv.store, &r2.id, T).await.unwrap();
    let mut bob = srv
        .approver(&srv.issue_token("bob").await.unwrap())
        .await
        .unwrap();
    bob.decide(approve(&r2.id)).await.unwrap();
    assert_eq!(other.decision(T).await.unwrap().decide.unwrap().id, r2.id);
    // And the host whose stream ended can link again.
    let id = testing::enroll(&srv.store, &srv.ca, "web-3", &Default::default())
        .await
        .unwrap();
    FakeHost::connect(&srv.url, &srv.ca_pem, &id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_opened_request_is_the_same_request() {
    let srv = TestServer::start().await.unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    let mut watch = alice
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    let first = wait_stored(&srv.store, &r.id, T).await.unwrap();
    host.opened(r.clone()).unwrap();
    // A re-send with a different context changes nothing either (the first one counts).
    let mut changed = r.clone();
    changed.context.as_mut().unwrap().reason = Some("something else".into());
    host.opened(changed).unwrap();
    assert!(
        host.quiet(QUIET).await.unwrap().is_none(),
        "a re-sent Opened was answered"
    );
    let all = srv
        .store
        .list_requests(&RequestFilter::default())
        .await
        .unwrap();
    assert_eq!(all, vec![first], "a re-sent request changed the store");
    // Watchers heard of it once.
    let mut opened = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), watch.message())
        .await
        .unwrap_or(Ok(None))
    {
        if ev.kind == pb::watch_event::Kind::Opened as i32
            && ev.request.is_some_and(|q| q.id == r.id)
        {
            opened += 1;
        }
    }
    assert_eq!(opened, 1);
    alice.decide(approve(&r.id)).await.unwrap();
    assert_eq!(host.decision(T).await.unwrap().decide.unwrap().id, r.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_the_host_was_away_is_delivered_once_when_it_reconnects() {
    let srv = TestServer::start().await.unwrap();
    let id = srv.enroll("web-1").await.unwrap();
    let host = FakeHost::connect(&srv.url, &srv.ca_pem, &id).await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    drop(host);
    let deadline = Instant::now() + T;
    while !srv.broker.hub.connected().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the host's session outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut alice = srv
        .approver(&srv.issue_token("alice").await.unwrap())
        .await
        .unwrap();
    alice
        .decide(deny(&r.id, "while you were out"))
        .await
        .unwrap();

    // The host comes back, lists the request as pending and re-sends it, as airlockd does.
    let mut host = FakeHost::connect_with_pending(&srv.url, &srv.ca_pem, &id, vec![r.id.clone()])
        .await
        .unwrap();
    host.opened(r.clone()).unwrap();
    let d = host.decision(T).await.unwrap();
    let decide = d.decide.unwrap();
    assert_eq!(decide.id, r.id);
    assert!(
        matches!(&decide.decision, Some(D::Deny(n)) if n.reason == "while you were out"),
        "{decide:?}"
    );
    // Once: neither the re-sent Opened nor the poll for decisions made elsewhere repeats it.
    let extra = host.quiet(Duration::from_millis(700)).await.unwrap();
    assert!(
        extra.is_none(),
        "the decision was delivered twice: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_decision_reaches_its_host_exactly_once() {
    const HOSTS: usize = 20;
    const EACH: usize = 15;
    let srv = TestServer::start().await.unwrap();
    // A bot approves every request as soon as Watch announces it.
    let mut bot = srv
        .approver(&srv.issue_token("bot").await.unwrap())
        .await
        .unwrap();
    let mut watch = bot
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let approver = tokio::spawn(async move {
        while let Ok(Some(ev)) = watch.message().await {
            if ev.kind == pb::watch_event::Kind::Opened as i32
                && let Some(r) = ev.request
            {
                let mut c = bot.clone();
                tokio::spawn(async move { c.decide(approve(&r.id)).await.unwrap() });
            }
        }
    });
    let mut tasks = Vec::new();
    for i in 0..HOSTS {
        let mut h = srv.host(&format!("web-{i}")).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut repeats = Vec::new();
            for _ in 0..EACH {
                let r = request(&h.name, &new_id());
                h.opened(r.clone()).unwrap();
                let d = loop {
                    let d = h.decision(T).await.unwrap();
                    match d.decide.as_ref() {
                        Some(x) if x.id == r.id => break d,
                        other => repeats.push(other.map(|x| x.id.clone())),
                    }
                };
                h.outcome(closed_by(&r, &d)).unwrap();
            }
            if let Some(m) = h.quiet(QUIET).await.unwrap() {
                repeats.push(Some(format!("after the last: {m:?}")));
            }
            repeats
        }));
    }
    let mut repeats = Vec::new();
    for t in tasks {
        repeats.extend(t.await.unwrap());
    }
    approver.abort();
    assert!(
        repeats.is_empty(),
        "{} of {} decisions were delivered again: {repeats:?}",
        repeats.len(),
        HOSTS * EACH
    );
}
