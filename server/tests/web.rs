//! The web page over real HTTP (loopback), without a browser: sign-in with an API token and
//! with OIDC (a fake provider with PKCE), sessions, CSRF and origin checks, votes under the
//! route rules, history filters, live events, security headers. The browser tests (headless
//! Chromium clicking approve / deny on a held process) are in the host tier (tests/src/web.rs).
use std::collections::HashMap;
use std::time::Duration;

use airlock_server::testing::oidc::{CLIENT_ID, CLIENT_SECRET, FakeIdp};
use airlock_server::testing::{
    Options, TestServer, context, new_id, request, request_with, wait_stored,
};

const T: Duration = Duration::from_secs(10);

/// DEFAULT_CONFIG's principals, routes taking `web` votes, the page, and OIDC when `issuer`.
fn config(issuer: Option<&str>) -> String {
    let base = airlock_server::testing::DEFAULT_CONFIG
        .replace(
            "    approvers: [sre, bots]\n",
            "    approvers: [sre, bots]\n    channels: [cli, web]\n",
        )
        .replace(
            "    threshold: 2\n",
            "    threshold: 2\n    channels: [cli]\n",
        );
    let oidc = issuer
        .map(|i| {
            format!(
                "  oidc:\n    issuer: {i}\n    client_id: {CLIENT_ID}\n    client_secret_file: oidc.secret\n    \
                 groups:\n      oncall: sre\n"
            )
        })
        .unwrap_or_default();
    format!("{base}http_listen: 127.0.0.1:0\nweb:\n  public_url: {{http_url}}\n{oidc}")
}

async fn server(issuer: Option<&str>) -> TestServer {
    let srv = TestServer::with(Options {
        config: config(issuer),
        ..Options::default()
    })
    .await
    .unwrap();
    std::fs::write(srv.dir().join("oidc.secret"), CLIENT_SECRET).unwrap();
    srv
}

/// A browser without JavaScript: keeps cookies, follows nothing by itself.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let res = req
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        for c in res.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let kv = c.split(';').next().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            if c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: res.status().as_u16(),
            location: res
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string()),
            body: res.text().await.unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.http.get(self.url(path));
        self.send(r).await
    }

    /// A form POST from the page itself (Origin: the page's).
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, form, &origin).await
    }

    async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: &str) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let r = self
            .http
            .post(self.url(path))
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(r).await
    }
}

/// The value of the first `name="csrf"` hidden input in `html`.
fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Signs `b` in with a new API token of `principal`.
async fn sign_in_with_token(srv: &TestServer, b: &mut Browser, principal: &str) -> Page {
    let token = srv.issue_token(principal).await.unwrap();
    let login = b.get("/login?next=/history").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let c = csrf(&login.body);
    b.post(
        "/login/token",
        &[("csrf", &c), ("token", &token), ("next", "/history")],
    )
    .await
}

async fn recorded(srv: &TestServer) -> Vec<String> {
    srv.store
        .attempts(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.channel == "web")
        .map(|a| format!("{} {} {} {}", a.who, a.action, a.result, a.message))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_browsers_are_sent_to_sign_in_and_live_parts_answer_401() {
    let srv = server(None).await;
    let mut b = Browser::new(&srv.http_url());
    let p = b.get("/requests/01ABC").await;
    assert_eq!(p.status, 303);
    assert_eq!(
        p.location.as_deref(),
        Some("/login?next=%2Frequests%2F01ABC")
    );
    for path in ["/fragment/pending", "/events"] {
        assert_eq!(b.get(path).await.status, 401, "{path}");
    }
    let login = b.get("/login").await;
    assert!(login.body.contains("Sign in with a token"));
    assert!(!login.body.contains("single sign-on"), "no OIDC configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sign_in_and_a_click_on_approve_release_the_hosts_request() {
    let srv = server(None).await;
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let mut b = Browser::new(&srv.http_url());
    let p = sign_in_with_token(&srv, &mut b, "bob").await;
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/history")));
    let cookie = b.cookies.keys().cloned().collect::<Vec<_>>();
    assert!(
        cookie.contains(&"airlock_session".to_string()),
        "{cookie:?}"
    );
    assert!(
        !cookie.contains(&"airlock_pre".to_string()),
        "pre-session cookie cleared"
    );

    let page = b.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&r.id) && page.body.contains("web-1"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("id=\"me\">bob<"),
        "the page says who is signed in"
    );
    let c = csrf(&page.body);
    let done = b
        .post(
            &format!("/requests/{}/decide", r.id),
            &[
                ("csrf", &c),
                ("action", "approve_for"),
                ("for", "1h"),
                ("reason", ""),
            ],
        )
        .await;
    assert_eq!(
        (done.status, done.location.clone()),
        (303, Some(format!("/requests/{}", r.id))),
        "{}",
        done.body
    );
    let d = host.decision(T).await.unwrap();
    assert_eq!(d.by.unwrap().principal.as_deref(), Some("bob"));
    use airlock_proto::v1::decide_request::Decision as D;
    match d.decide.and_then(|x| x.decision) {
        Some(D::Approve(a)) => assert_eq!(a.for_ms, Some(3_600_000)),
        other => panic!("not an approval: {other:?}"),
    }
    assert_eq!(d.votes[0].via, "web");
    let after = b.get(&format!("/requests/{}", r.id)).await;
    assert!(
        after.body.contains("approved for 1h by bob via server"),
        "{}",
        after.body
    );
    assert!(
        !after.body.contains("action=\"/requests/"),
        "no vote form once decided"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forms_and_ineligible_votes_are_refused_with_the_reason_and_recorded() {
    let srv = server(None).await;
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "carol").await;
    let page = b.get(&format!("/requests/{}", r.id)).await;
    let good = csrf(&page.body);
    let path = format!("/requests/{}/decide", r.id);
    // Another session's token (or none): refused before any vote.
    let p = b
        .post(&path, &[("csrf", "0000"), ("action", "approve")])
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    // A page of another site posting with a leaked token.
    let p = b
        .post_from(
            &path,
            &[("csrf", &good), ("action", "approve")],
            "https://evil.example",
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    // carol (dba) is no approver of this route: the page says why.
    let p = b
        .post(&path, &[("csrf", &good), ("action", "approve")])
        .await;
    assert_eq!(p.status, 403);
    assert!(
        p.body
            .contains("carol may not vote on requests of route default"),
        "{}",
        p.body
    );
    // A bad duration names the field.
    let p = b
        .post(
            &path,
            &[
                ("csrf", &good),
                ("action", "approve_for"),
                ("for", "forever"),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("for:"), "{}", p.body);
    host.quiet(Duration::from_millis(300)).await.unwrap();
    let rec = recorded(&srv).await;
    for want in [
        "CSRF",
        "origin \"https://evil.example\"",
        "carol decide PERMISSION_DENIED",
        "INVALID_ARGUMENT for:",
    ] {
        assert!(
            rec.iter().any(|l| l.contains(want)),
            "{want} not in {rec:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_launcher_cannot_approve_from_the_page_and_a_route_without_web_refuses_it() {
    // dave launched the agent (testing::context); make dave an sre with that host user.
    let cfg = config(None).replace(
        "  bot: { groups: [bots] }\n",
        "  bot: { groups: [bots] }\n  dave:\n    groups: [sre]\n    host_users: [dave]\n",
    );
    let srv = TestServer::with(Options {
        config: cfg,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "dave").await;
    let c = csrf(&b.get("/").await.body);
    let p = b
        .post(
            &format!("/requests/{}/decide", r.id),
            &[("csrf", &c), ("action", "approve")],
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("dave launched this agent"), "{}", p.body);
    // A request of route pair (channels: [cli]) cannot be decided from the page.
    let mut ctx = context("web-1");
    ctx.rule = Some("pair-deploy".into());
    let pair = request_with(&new_id(), &ctx);
    host.opened(pair.clone()).unwrap();
    wait_stored(&srv.store, &pair.id, T).await.unwrap();
    let p = b
        .post(
            &format!("/requests/{}/decide", pair.id),
            &[("csrf", &c), ("action", "deny"), ("reason", "no")],
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(
        p.body
            .contains("route pair does not take decisions from the web channel"),
        "{}",
        p.body
    );
    host.quiet(Duration::from_millis(300)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_api_token_ends_the_pages_session_and_signing_out_ends_it_too() {
    let srv = server(None).await;
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "bob").await;
    assert_eq!(b.get("/").await.status, 200);
    for t in srv.store.tokens().await.unwrap() {
        srv.store
            .revoke_token(&t.id, airlock_server::broker::now_ms())
            .await
            .unwrap();
    }
    let p = b.get("/").await;
    assert_eq!(p.status, 303, "a revoked token's session is over");
    assert_eq!(b.get("/fragment/pending").await.status, 401);

    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "alice").await;
    let page = b.get("/").await;
    let stolen = b.cookies.clone();
    // Sign-out needs the session's own form token.
    assert_eq!(b.post("/logout", &[("csrf", "x")]).await.status, 403);
    let out = b.post("/logout", &[("csrf", &csrf(&page.body))]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/login")));
    // The old cookie is worthless once signed out.
    let mut replay = Browser::new(&srv.http_url());
    replay.cookies = stolen;
    assert_eq!(replay.get("/").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_signed_out() {
    let srv = server(None).await;
    let now = airlock_server::broker::now_ms();
    let s = airlock_server::store::WebSession {
        principal: "bob".into(),
        groups: vec![],
        via: "oidc".into(),
        token_sha256: None,
        csrf: "c".into(),
        created_unix_ms: now - 10_000,
        expires_unix_ms: now - 1,
    };
    let secret = "0123456789abcdef";
    srv.store
        .add_session(&airlock_server::auth::sha256_hex(secret.as_bytes()), &s)
        .await
        .unwrap();
    let mut b = Browser::new(&srv.http_url());
    b.cookies.insert("airlock_session".into(), secret.into());
    assert_eq!(b.get("/").await.status, 303);
}

/// Follows the OIDC sign-in through the fake provider; returns the final redirect.
async fn oidc_sign_in(b: &mut Browser) -> Page {
    let start = b.get("/login/oidc?next=/history").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let auth = start.location.unwrap();
    assert!(
        auth.contains("code_challenge_method=S256") && auth.contains("nonce="),
        "{auth}"
    );
    let page = b.get(&auth).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The provider's page: post its hidden fields back, as its button does.
    let idp = auth.split("/authorize").next().unwrap().to_string();
    let mut form = Vec::new();
    for part in page.body.split("<input type=\"hidden\" ").skip(1) {
        let name = part
            .split("name=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value = part
            .split("value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        form.push((
            name.to_string(),
            value.replace("&amp;", "&").replace("&quot;", "\""),
        ));
    }
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let back = b
        .post_from(&format!("{idp}/authorize/done"), &pairs, &idp)
        .await;
    assert_eq!(back.status, 303);
    let cb = back.location.unwrap();
    b.get(&cb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_with_pkce_maps_the_providers_groups_to_approver_groups() {
    let idp = FakeIdp::start(
        serde_json::json!({"email": "erin@example.com", "groups": ["oncall", "staff"]}),
    )
    .await
    .unwrap();
    let srv = server(Some(idp.issuer())).await;
    let mut host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    wait_stored(&srv.store, &r.id, T).await.unwrap();

    let mut b = Browser::new(&srv.http_url());
    assert!(b.get("/login").await.body.contains("single sign-on"));
    let done = oidc_sign_in(&mut b).await;
    assert_eq!(
        (done.status, done.location.as_deref()),
        (303, Some("/history")),
        "{}",
        done.body
    );
    assert!(idp.refusals().is_empty(), "{:?}", idp.refusals());
    // erin is not in the config: the provider's group oncall maps to sre, which approves.
    let page = b.get("/").await;
    assert!(
        page.body.contains("id=\"me\">erin@example.com<"),
        "{}",
        page.body
    );
    let c = csrf(&page.body);
    let p = b
        .post(
            &format!("/requests/{}/decide", r.id),
            &[
                ("csrf", &c),
                ("action", "deny"),
                ("reason", "not during the freeze"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let d = host.decision(T).await.unwrap();
    assert_eq!(d.by.unwrap().principal.as_deref(), Some("erin@example.com"));
    // erin has no host user of record and this agent's launcher (dave) is no principal:
    // nobody can tell it is not erin's own agent, so she may deny but not approve.
    let r2 = request("web-1", &new_id());
    host.opened(r2.clone()).unwrap();
    wait_stored(&srv.store, &r2.id, T).await.unwrap();
    let p = b
        .post(
            &format!("/requests/{}/decide", r2.id),
            &[("csrf", &c), ("action", "approve")],
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(
        p.body.contains("self-approval rule cannot be checked"),
        "{}",
        p.body
    );
    use airlock_proto::v1::decide_request::Decision as D;
    match d.decide.and_then(|x| x.decision) {
        Some(D::Deny(x)) => assert_eq!(x.reason, "not during the freeze"),
        other => panic!("not a deny: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_callbacks_from_another_browser_replayed_or_for_strangers_sign_nobody_in() {
    let idp =
        FakeIdp::start(serde_json::json!({"email": "erin@example.com", "groups": ["oncall"]}))
            .await
            .unwrap();
    let srv = server(Some(idp.issuer())).await;
    // Login CSRF: the callback reaches a browser that did not start the sign-in.
    let mut a = Browser::new(&srv.http_url());
    let start = a.get("/login/oidc").await;
    let auth = start.location.unwrap();
    let page = a.get(&auth).await;
    let field = |n: &str| {
        page.body
            .split(&format!("name=\"{n}\" value=\""))
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&")
    };
    let idp_url = idp.issuer().to_string();
    let back = a
        .post_from(
            &format!("{idp_url}/authorize/done"),
            &[
                ("redirect_uri", &field("redirect_uri")),
                ("state", &field("state")),
                ("nonce", &field("nonce")),
                ("code_challenge", &field("code_challenge")),
            ],
            &idp_url,
        )
        .await;
    let cb = back.location.unwrap();
    let mut other = Browser::new(&srv.http_url());
    let p = other.get(&cb).await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(!other.cookies.contains_key("airlock_session"));
    // The state was used up by that attempt: the right browser cannot replay it either.
    let p = a.get(&cb).await;
    assert_eq!(p.status, 401);
    assert!(
        p.body.contains("state is unknown, used or expired"),
        "{}",
        p.body
    );

    // alice of the config signing in as alice@example.com through a mapped group would be a
    // second principal for one person (two votes towards N of M): refused.
    idp.sign_in_as(serde_json::json!({"email": "alice@example.com", "groups": ["oncall"]}));
    let mut twin = Browser::new(&srv.http_url());
    let p = oidc_sign_in(&mut twin).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("looks like principal alice"), "{}", p.body);
    assert!(!twin.cookies.contains_key("airlock_session"));

    // A provider user with no mapped group and no principal entry is not an approver.
    idp.sign_in_as(serde_json::json!({"email": "stranger@example.com", "groups": ["staff"]}));
    let mut s = Browser::new(&srv.http_url());
    let p = oidc_sign_in(&mut s).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(!s.cookies.contains_key("airlock_session"));
    let rec = recorded(&srv).await;
    assert!(
        rec.iter()
            .any(|l| l.starts_with("stranger@example.com sign-in PERMISSION_DENIED")),
        "{rec:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_by_host_state_and_approver_and_names_a_bad_filter() {
    let srv = server(None).await;
    let mut host = srv.host("web-1").await.unwrap();
    let (r1, r2) = (request("web-1", &new_id()), request("web-1", &new_id()));
    for r in [&r1, &r2] {
        host.opened(r.clone()).unwrap();
        wait_stored(&srv.store, &r.id, T).await.unwrap();
    }
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "bob").await;
    let c = csrf(&b.get("/").await.body);
    b.post(
        &format!("/requests/{}/decide", r1.id),
        &[("csrf", &c), ("action", "approve")],
    )
    .await;
    host.decision(T).await.unwrap();
    let by_bob = b.get("/history?approver=bob").await;
    assert!(
        by_bob.body.contains(&r1.id) && !by_bob.body.contains(&r2.id),
        "{}",
        by_bob.body
    );
    let pending = b.get("/history?state=pending&host=web-1").await;
    assert!(pending.body.contains(&r1.id) && pending.body.contains(&r2.id));
    let none = b.get("/history?host=web-2").await;
    assert!(none.body.contains("No request matches"));
    let bad = b.get("/history?state=done").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("state: &#34;done&#34; is not one of")
            || bad.body.contains("state: \"done\" is not one of"),
        "{}",
        bad.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_announces_a_new_request_and_pages_carry_strict_headers() {
    let srv = server(None).await;
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "bob").await;
    let page = b
        .http
        .get(b.url("/"))
        .header("Cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    let h = page.headers();
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    assert_eq!(h.get("referrer-policy").unwrap(), "same-origin");

    let mut events = b
        .http
        .get(b.url("/events"))
        .header("Cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(
        events.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let host = srv.host("web-1").await.unwrap();
    let r = request("web-1", &new_id());
    host.opened(r.clone()).unwrap();
    let mut got = String::new();
    let t0 = std::time::Instant::now();
    while !got.contains(&format!("event: change\ndata: {}", r.id)) {
        assert!(t0.elapsed() < T, "no change event: {got:?}");
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(T, events.chunk()).await {
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_live_stream_of_that_session() {
    let srv = server(None).await;
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "bob").await;
    let page = b.get("/").await;
    let mut events = b
        .http
        .get(b.url("/events"))
        .header("Cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let out = b.post("/logout", &[("csrf", &csrf(&page.body))]).await;
    assert_eq!(out.status, 303);
    let mut got = String::new();
    let t0 = std::time::Instant::now();
    while !got.contains("event: ended") {
        assert!(
            t0.elapsed() < Duration::from_secs(12),
            "stream still open: {got:?}"
        );
        match tokio::time::timeout(Duration::from_secs(12), events.chunk()).await {
            Ok(Ok(Some(chunk))) => got.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("stream ended without saying so: {other:?} {got:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_searches_the_collectors_records_of_the_fleet() {
    use airlock_audit::Kind;
    use airlock_server::testing::audit::{HostChain, batch};
    let srv = server(None).await;
    let mut chain = HostChain::new("web-1");
    // Within the page's default window (the last 24 hours).
    chain.at_unix_ms = airlock_server::broker::now_ms() - 60_000;
    let id = srv.enroll("web-1").await.unwrap();
    let mut host = airlock_server::testing::FakeHost::connect_with_audit_key(
        &srv.url,
        &srv.ca_pem,
        &id,
        &chain.verifier_key(),
    )
    .await
    .unwrap();
    let records = vec![
        chain.record(
            Kind::RequestOpened,
            serde_json::json!({"agent": "claude", "op": "exec", "request": {"context": {"target_path": "/usr/bin/apt"}}}),
        ),
        chain.record(
            Kind::Outcome,
            serde_json::json!({"agent": "claude", "op": "exec", "decision": "denied", "approver": "bob"}),
        ),
        chain.record(Kind::LinkUp, serde_json::json!({"server": "s"})),
    ];
    let ack = host.audit(batch(&records, &[]), T).await.unwrap();
    assert_eq!(ack.refused, "");
    let mut b = Browser::new(&srv.http_url());
    sign_in_with_token(&srv, &mut b, "bob").await;
    let all = b.get("/audit").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let kind = |k: &str| format!("class=\"kind\">{k}<");
    for want in [
        kind("request.opened"),
        kind("outcome"),
        kind("link.up"),
        "exec /usr/bin/apt".to_string(),
    ] {
        assert!(
            all.body.contains(&want),
            "{want} not on the page: {}",
            all.body
        );
    }
    let denied = b.get("/audit?decision=denied&approver=bob").await;
    assert!(
        denied.body.contains(&kind("outcome")) && !denied.body.contains(&kind("link.up")),
        "{}",
        denied.body
    );
    // They are a minute old: the last hour holds them.
    let old = b.get("/audit?since=1h&kind=link.up").await;
    assert!(old.body.contains(&kind("link.up")));
    let none = b.get("/audit?host=web-2").await;
    assert!(none.body.contains("No record matches") && !none.body.contains(&kind("outcome")));
    let bad = b.get("/audit?since=forever").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("since:"), "{}", bad.body);
}
