//! The approval page (`web:` in server.yaml), served on the HTTP listener: pending requests
//! with their whole context, approve once / for a while / deny with a reason, recent
//! decisions with filters, live updates by server-sent events.
//!
//! ```text
//!  GET  /                         pending requests (signed in), live (GET /events, SSE)
//!  GET  /requests/{id}            one request; POST /requests/{id}/decide votes (channel web)
//!  GET  /history?host&agent&state&approver   recent requests, newest first
//!  GET  /audit?host&agent&kind&decision&approver&since   the collector's audit records
//!  GET  /login                    sign in: OIDC (GET /login/oidc → provider → /login/oidc/callback)
//!                                 or an API token (POST /login/token); POST /logout
//! ```
//!
//! Security: sessions live in the database (a cookie holds 32 random bytes, the database
//! their SHA-256), `HttpOnly`, `SameSite=Lax`, `Secure` with a `__Host-` name when
//! `public_url` is https; they end at `web.session` or at sign-out, and a session signed in
//! with an API token ends when the token is revoked or expires. Every form carries the
//! session's CSRF token (the login form a pre-session one, double-submitted), and a POST whose
//! `Origin` is not the page's is refused. Pages are sent with a strict Content-Security-Policy
//! (scripts and styles from the page only), `frame-ancestors 'none'`, `no-store` and
//! `Referrer-Policy: same-origin`. Votes go through the same rules as every channel (`Broker::vote_with`):
//! eligible groups, never the agent's launcher, N-of-M, a reason where the route asks one, and
//! a route must list `web` in its channels. Refusals are recorded (channel `web`).
mod assets;
mod audit;
mod oidc;
mod pages;
mod session;
mod view;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};

use crate::broker::Broker;

pub use oidc::{IdToken, OidcError, verify_id_token};
pub use session::SessionError;

/// Largest form body the page accepts.
const MAX_FORM: usize = 16 * 1024;

/// What every handler of the page shares.
#[derive(Clone)]
pub(crate) struct App {
    pub broker: Arc<Broker>,
    /// The server's directory (the OIDC client secret file is relative to it).
    pub dir: PathBuf,
    pub oidc: Arc<oidc::Provider>,
    /// Live streams open (`GET /events`), at most [`pages::MAX_STREAMS`].
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// The page's routes. They answer 404 while the config has no `web:` section (a reload can
/// add or remove it).
pub fn router(broker: Arc<Broker>, dir: PathBuf) -> Router {
    let app = App {
        broker,
        dir,
        oidc: Arc::new(oidc::Provider::new()),
        streams: Arc::new(tokio::sync::Semaphore::new(pages::MAX_STREAMS)),
    };
    Router::new()
        .route("/", get(pages::index))
        .route("/requests/{id}", get(pages::request))
        .route("/requests/{id}/decide", post(pages::decide))
        .route("/history", get(pages::history))
        .route("/audit", get(audit::page))
        .route("/fragment/pending", get(pages::pending_fragment))
        .route("/fragment/requests/{id}", get(pages::request_fragment))
        .route("/events", get(pages::events))
        .route("/login", get(pages::login))
        .route("/login/token", post(pages::login_token))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/logout", post(pages::logout))
        .route("/static/app.css", get(assets::css))
        .route("/static/app.js", get(assets::js))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Headers on every answer of the page.
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // The OIDC callback's URL carries the code: never send it to another site. Not
    // `no-referrer`: under it browsers send `Origin: null` with the page's own form POSTs,
    // which the origin check must refuse.
    set(h, header::REFERRER_POLICY, "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    res
}
