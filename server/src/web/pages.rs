//! The page's handlers: pending requests, one request and its vote form, history, sign-in
//! with a token, sign-out, live updates.
use std::time::Duration;

use airlock_approval::{Decision, RequestState};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::App;
use super::session::{self, SessionError, Signed};
use super::view::RequestView;
use crate::broker::now_ms;
use crate::error::Fault;
use crate::store::RequestFilter;

/// The channel name in records and votes.
pub(super) const CHANNEL: &str = "web";
/// Rows the history shows.
const HISTORY_ROWS: u32 = 200;
/// How often a live stream checks that its session still stands.
const RECHECK: Duration = Duration::from_secs(5);
/// Live streams one replica serves at once.
pub(super) const MAX_STREAMS: usize = 1024;

#[derive(Template)]
#[template(path = "index.html")]
struct Index {
    me: String,
    csrf: String,
    requests: Vec<RequestView>,
}

#[derive(Template)]
#[template(path = "pending.html")]
struct Pending {
    csrf: String,
    requests: Vec<RequestView>,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    me: String,
    csrf: String,
    r: RequestView,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "card.html")]
struct Card {
    csrf: String,
    r: RequestView,
}

#[derive(Template)]
#[template(path = "history.html")]
struct History {
    me: String,
    csrf: String,
    rows: Vec<RequestView>,
    f: Filters,
    states: Vec<&'static str>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct Login {
    pub oidc: bool,
    pub csrf: String,
    pub next: String,
    pub next_q: String,
    pub error: Option<String>,
}

/// Renders `t` with `status`.
pub(super) fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web page: template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A plain-text refusal with the status of `e`.
fn refuse(e: &SessionError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, e.to_string()).into_response()
}

/// For page GETs: the session, or a redirect to the sign-in page that comes back to `path`.
pub(super) async fn page_session(
    app: &App,
    headers: &HeaderMap,
    path: &str,
) -> Result<Signed, Response> {
    match session::signed_in(app, headers).await {
        Ok(s) => Ok(s),
        Err(SessionError::SignedOut | SessionError::TokenGone(_)) => Err(Redirect::to(&format!(
            "/login?next={}",
            form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
        ))
        .into_response()),
        Err(e) => Err(refuse(&e)),
    }
}

async fn pending_views(app: &App) -> Result<Vec<RequestView>, Fault> {
    Ok(app
        .broker
        .pending(None, None)
        .await?
        .iter()
        .filter(|r| r.decision.is_none())
        .map(RequestView::of)
        .collect())
}

pub(super) fn fault_page(f: Fault) -> Response {
    let status = StatusCode::from_u16(crate::error::http_status(f.code()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, tonic::Status::from(f).message().to_string()).into_response()
}

pub(super) async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    let s = match page_session(&app, &headers, "/").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match pending_views(&app).await {
        Ok(requests) => render(
            StatusCode::OK,
            &Index {
                me: s.session.principal,
                csrf: s.session.csrf,
                requests,
            },
        ),
        Err(f) => fault_page(f),
    }
}

pub(super) async fn pending_fragment(State(app): State<App>, headers: HeaderMap) -> Response {
    let s = match session::signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(e) => return refuse(&e),
    };
    match pending_views(&app).await {
        Ok(requests) => render(
            StatusCode::OK,
            &Pending {
                csrf: s.session.csrf,
                requests,
            },
        ),
        Err(f) => fault_page(f),
    }
}

async fn one(app: &App, id: &str) -> Result<RequestView, Response> {
    match app.broker.store.request(id).await {
        Ok(Some(r)) => Ok(RequestView::of(&r)),
        Ok(None) => {
            Err((StatusCode::NOT_FOUND, format!("no request with id {id:?}")).into_response())
        }
        Err(e) => Err(fault_page(e.into())),
    }
}

pub(super) async fn request(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match page_session(&app, &headers, &format!("/requests/{id}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match one(&app, &id).await {
        Ok(r) => render(
            StatusCode::OK,
            &RequestPage {
                me: s.session.principal,
                csrf: s.session.csrf,
                r,
                error: None,
            },
        ),
        Err(resp) => resp,
    }
}

pub(super) async fn request_fragment(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match session::signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(e) => return refuse(&e),
    };
    match one(&app, &id).await {
        Ok(r) => render(
            StatusCode::OK,
            &Card {
                csrf: s.session.csrf,
                r,
            },
        ),
        Err(resp) => resp,
    }
}

/// The vote form.
#[derive(Debug, Deserialize)]
pub(super) struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The decision a form asks for, or what is wrong with it.
fn form_decision(f: &DecideForm) -> Result<Decision, String> {
    match f.action.as_str() {
        "approve" => Ok(Decision::Approve { for_: None }),
        "approve_for" => {
            let s = f.for_.as_deref().unwrap_or("");
            let d = crate::cli::parse_duration(s).map_err(|e| format!("for: {e}"))?;
            airlock_approval::check_grant(d).map_err(|e| format!("for {s:?}: {e}"))?;
            Ok(Decision::Approve { for_: Some(d) })
        }
        "deny" => Ok(Decision::Deny {
            always: false,
            reason: f
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_string),
        }),
        other => Err(format!(
            "action: {other:?} is not approve, approve_for or deny"
        )),
    }
}

pub(super) async fn decide(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecideForm>,
) -> Response {
    let b = &app.broker;
    let s = match session::signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(e) => {
            b.record(
                "unknown",
                CHANNEL,
                "decide",
                Some(&id),
                tonic::Code::Unauthenticated,
                &e.to_string(),
            )
            .await;
            return refuse(&e);
        }
    };
    let who = s.session.principal.clone();
    let web = match session::web(&app) {
        Ok(w) => w,
        Err(e) => return refuse(&e),
    };
    let checked = session::check_origin(&web, &headers).and_then(|()| {
        if session::same_token(&form.csrf, &s.session.csrf) {
            Ok(())
        } else {
            Err(SessionError::Csrf)
        }
    });
    if let Err(e) = checked {
        b.record(
            &who,
            CHANNEL,
            "decide",
            Some(&id),
            tonic::Code::PermissionDenied,
            &e.to_string(),
        )
        .await;
        return refuse(&e);
    }
    let result = match form_decision(&form) {
        Ok(d) => b
            .vote_with(
                &who,
                &s.session.groups,
                s.token_id.as_deref(),
                CHANNEL,
                &id,
                d,
            )
            .await
            .map_err(|f| (f.code(), tonic::Status::from(f).message().to_string())),
        Err(msg) => Err((tonic::Code::InvalidArgument, msg)),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/requests/{id}")).into_response(),
        Err((code, msg)) => {
            b.record(&who, CHANNEL, "decide", Some(&id), code, &msg)
                .await;
            let status = StatusCode::from_u16(crate::error::http_status(code))
                .unwrap_or(StatusCode::BAD_REQUEST);
            match one(&app, &id).await {
                Ok(r) => render(
                    status,
                    &RequestPage {
                        me: who,
                        csrf: s.session.csrf,
                        r,
                        error: Some(msg),
                    },
                ),
                Err(resp) => resp,
            }
        }
    }
}

/// The history's filters, as typed (empty means any).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    host: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    approver: String,
}

pub(super) async fn history(
    State(app): State<App>,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Response {
    let s = match page_session(&app, &headers, "/history").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
    let states = vec!["pending", "approved", "denied", "timed_out", "abandoned"];
    let mut error = None;
    let state = match some(&f.state) {
        None => None,
        Some(st) => match RequestState::parse(&st) {
            Some(x) => Some(x),
            None => {
                error = Some(format!("state: {st:?} is not one of {}", states.join(", ")));
                None
            }
        },
    };
    let filter = RequestFilter {
        host: some(&f.host),
        agent: some(&f.agent),
        state,
        ..Default::default()
    };
    let rows = if error.is_some() {
        Vec::new()
    } else {
        match app
            .broker
            .store
            .recent_requests(&filter, some(&f.approver).as_deref(), HISTORY_ROWS)
            .await
        {
            Ok(rows) => rows.iter().map(RequestView::of).collect(),
            Err(e) => return fault_page(e.into()),
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        &History {
            me: s.session.principal,
            csrf: s.session.csrf,
            rows,
            f,
            states,
            error,
        },
    )
}

/// Live updates: an event `change` (data: the request id, or `*` after a gap) for every
/// request change on this replica; `ended` when the session expires or is ended (checked
/// every [`RECHECK`]: a signed-out browser or a revoked token stops hearing at once). Changes
/// made on other replicas reach this page when their host's outcome or a vote passes through
/// here; the page also refreshes on reconnect. At most [`MAX_STREAMS`] streams at once per
/// replica (a 503 past it; the browser's EventSource retries).
pub(super) async fn events(State(app): State<App>, headers: HeaderMap) -> Response {
    let s = match session::signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(e) => return refuse(&e),
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages are open on this server; retry later",
        )
            .into_response();
    };
    let rx = app.broker.hub.subscribe();
    let left = Duration::from_millis(s.session.expires_unix_ms.saturating_sub(now_ms()));
    let until = tokio::time::Instant::now() + left;
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.reset();
    let state = (rx, recheck, app, headers, permit);
    let ended = || Event::default().event("ended").data("signed out");
    let stream = futures_util::stream::unfold(Some(state), move |st| async move {
        let (mut rx, mut recheck, app, headers, permit) = st?;
        loop {
            let ev = tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => Event::default().event("change").data(c.request().id.clone()),
                    Err(RecvError::Lagged(_)) => Event::default().event("change").data("*"),
                    Err(RecvError::Closed) => return None,
                },
                () = tokio::time::sleep_until(until) => {
                    return Some((Ok::<_, std::convert::Infallible>(ended()), None));
                }
                _ = recheck.tick() => {
                    if session::signed_in(&app, &headers).await.is_err() {
                        return Some((Ok(ended()), None));
                    }
                    continue;
                }
            };
            return Some((Ok(ev), Some((rx, recheck, app, headers, permit))));
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
        .into_response()
}

/// `GET /login?next=…`: the sign-in page, with a pre-session CSRF cookie for its form.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Next {
    #[serde(default)]
    next: Option<String>,
}

pub(super) async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    let web = match session::web(&app) {
        Ok(w) => w,
        Err(e) => return refuse(&e),
    };
    let next = session::local_path(q.next.as_deref());
    if session::signed_in(&app, &headers).await.is_ok() {
        return Redirect::to(&next).into_response();
    }
    login_page(&web, &next, None, StatusCode::OK)
}

/// The sign-in page with a fresh pre-session CSRF cookie.
pub(super) fn login_page(
    web: &crate::config::Web,
    next: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let csrf = match session::secret() {
        Ok(c) => c,
        Err(f) => return fault_page(f),
    };
    let mut res = render(
        status,
        &Login {
            oidc: web.oidc.is_some(),
            csrf: csrf.clone(),
            next: next.to_string(),
            next_q: form_urlencoded::byte_serialize(next.as_bytes()).collect(),
            error,
        },
    );
    if let Ok(v) = session::set_cookie(web, "airlock_pre", &csrf, 3600).parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login/token`: signs in with an API token (`airlock-server tokens issue`).
pub(super) async fn login_token(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let web = match session::web(&app) {
        Ok(w) => w,
        Err(e) => return refuse(&e),
    };
    let next = session::local_path(form.next.as_deref());
    let pre = session::cookie(&headers, &session::cookie_name(&web, "airlock_pre"));
    let checked = session::check_origin(&web, &headers).and_then(|()| match pre {
        Some(p) if session::same_token(&p, &form.csrf) => Ok(()),
        _ => Err(SessionError::Csrf),
    });
    let b = &app.broker;
    if let Err(e) = checked {
        b.record(
            "unknown",
            CHANNEL,
            "sign-in",
            None,
            tonic::Code::PermissionDenied,
            &e.to_string(),
        )
        .await;
        return login_page(&web, &next, Some(e.to_string()), StatusCode::FORBIDDEN);
    }
    let caller = match crate::auth::token_caller(&b.store, form.token.trim(), now_ms()).await {
        Ok(c) => c,
        Err(f) => {
            let msg = f.to_string();
            b.record("unknown", CHANNEL, "sign-in", None, f.code(), &msg)
                .await;
            return login_page(&web, &next, Some(msg), StatusCode::UNAUTHORIZED);
        }
    };
    if b.config().principal(&caller.principal).is_none() {
        let msg = format!(
            "principal {:?} is not in the server config",
            caller.principal
        );
        b.record(
            &caller.principal,
            CHANNEL,
            "sign-in",
            None,
            tonic::Code::PermissionDenied,
            &msg,
        )
        .await;
        return login_page(&web, &next, Some(msg), StatusCode::FORBIDDEN);
    }
    match session::start(
        &app,
        &web,
        &caller.principal,
        Vec::new(),
        "token",
        Some(caller.token_sha256),
    )
    .await
    {
        Ok(cookie) => signed_in_redirect(&web, &next, &cookie),
        Err(f) => fault_page(f),
    }
}

/// The redirect after a sign-in: the session cookie set, the pre-session one cleared.
pub(super) fn signed_in_redirect(web: &crate::config::Web, next: &str, cookie: &str) -> Response {
    let mut res = Redirect::to(next).into_response();
    for c in [
        cookie.to_string(),
        session::set_cookie(web, "airlock_pre", "", 0),
    ] {
        if let Ok(v) = c.parse() {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

#[derive(Debug, Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`.
pub(super) async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let web = match session::web(&app) {
        Ok(w) => w,
        Err(e) => return refuse(&e),
    };
    // Only the session's own form may end it (a cross-site POST must not sign people out).
    match session::signed_in(&app, &headers).await {
        Ok(s) if session::same_token(&form.csrf, &s.session.csrf) => {}
        Ok(_) => return refuse(&SessionError::Csrf),
        Err(_) => return Redirect::to("/login").into_response(),
    }
    match session::end(&app, &web, &headers).await {
        Ok(c) => {
            let mut res = Redirect::to("/login").into_response();
            if let Ok(v) = c.parse() {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res
        }
        Err(f) => fault_page(f),
    }
}
