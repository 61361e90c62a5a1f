//! Sessions of the page: cookies, the signed-in principal, CSRF and origin checks.
use axum::http::{HeaderMap, header};

use super::App;
use crate::auth::{hex, random, sha256_hex};
use crate::broker::now_ms;
use crate::config::Web;
use crate::error::Fault;
use crate::store::WebSession;

/// Why a page call is refused before it reaches the broker.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The config has no `web:` section.
    #[error("the web page is not configured on this server (no web: section)")]
    NotConfigured,
    /// No session cookie, or one the store does not know (expired, signed out).
    #[error("not signed in")]
    SignedOut,
    /// The session's API token was revoked or expired.
    #[error("{0}")]
    TokenGone(String),
    /// A form without the session's CSRF token, or with another.
    #[error("the form's CSRF token does not match this session; reload the page and retry")]
    Csrf,
    /// A POST from another origin.
    #[error("request from origin {found:?}, not from this page ({expected})")]
    Origin { found: String, expected: String },
    /// The store failed.
    #[error(transparent)]
    Fault(#[from] Fault),
}

impl SessionError {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            SessionError::NotConfigured => 404,
            SessionError::SignedOut | SessionError::TokenGone(_) => 401,
            SessionError::Csrf | SessionError::Origin { .. } => 403,
            SessionError::Fault(f) => crate::error::http_status(f.code()),
        }
    }
}

/// A signed-in browser.
#[derive(Clone, Debug)]
pub(crate) struct Signed {
    pub session: WebSession,
    /// The API token's public id when signed in with one: votes check it in their
    /// transaction.
    pub token_id: Option<String>,
}

/// The session cookie's name: `__Host-` (Secure, host-only, path /) on https.
pub(crate) fn cookie_name(web: &Web, base: &'static str) -> String {
    if secure(web) {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

fn secure(web: &Web) -> bool {
    web.public_url.starts_with("https://")
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the provider's redirect back is a top-level
/// GET that must carry the login cookie), Secure on https.
pub(crate) fn set_cookie(web: &Web, base: &'static str, value: &str, max_age_s: u64) -> String {
    let secure = if secure(web) { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}",
        cookie_name(web, base)
    )
}

/// The value of cookie `name` in the request, if any.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A new random secret for a cookie or form (32 bytes, hex).
pub(crate) fn secret() -> Result<String, Fault> {
    Ok(hex(&random::<32>()?))
}

/// The `web:` section, or [`SessionError::NotConfigured`].
pub(crate) fn web(app: &App) -> Result<Web, SessionError> {
    app.broker
        .config()
        .web
        .clone()
        .ok_or(SessionError::NotConfigured)
}

/// The browser's session, checked now: present, unexpired, its API token (if any) still
/// valid.
pub(crate) async fn signed_in(app: &App, headers: &HeaderMap) -> Result<Signed, SessionError> {
    let web = web(app)?;
    let id =
        cookie(headers, &cookie_name(&web, "airlock_session")).ok_or(SessionError::SignedOut)?;
    let now = now_ms();
    let session = app
        .broker
        .store
        .session(&sha256_hex(id.as_bytes()), now)
        .await
        .map_err(Fault::from)?
        .ok_or(SessionError::SignedOut)?;
    let token_id = match &session.token_sha256 {
        Some(h) => Some(
            crate::auth::token_caller_by_hash(&app.broker.store, h, now)
                .await
                .map_err(|f| SessionError::TokenGone(f.to_string()))?
                .token_id,
        ),
        None => None,
    };
    Ok(Signed { session, token_id })
}

/// Starts a session for `principal`; returns the `Set-Cookie` value.
pub(crate) async fn start(
    app: &App,
    web: &Web,
    principal: &str,
    groups: Vec<String>,
    via: &str,
    token_sha256: Option<String>,
) -> Result<String, Fault> {
    let id = secret()?;
    let now = now_ms();
    let ttl = web.session.as_millis() as u64;
    let s = WebSession {
        principal: principal.to_string(),
        groups,
        via: via.to_string(),
        token_sha256,
        csrf: secret()?,
        created_unix_ms: now,
        expires_unix_ms: now + ttl,
    };
    app.broker
        .store
        .add_session(&sha256_hex(id.as_bytes()), &s)
        .await?;
    Ok(set_cookie(web, "airlock_session", &id, ttl / 1000))
}

/// Ends the browser's session if it has one; returns the `Set-Cookie` that clears it.
pub(crate) async fn end(app: &App, web: &Web, headers: &HeaderMap) -> Result<String, Fault> {
    if let Some(id) = cookie(headers, &cookie_name(web, "airlock_session")) {
        app.broker
            .store
            .end_session(&sha256_hex(id.as_bytes()))
            .await?;
    }
    Ok(set_cookie(web, "airlock_session", "", 0))
}

/// Constant-time equality of two form tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Refuses a POST whose `Origin` (or, without one, `Sec-Fetch-Site`) says it came from
/// another site. Browsers send `Origin` with every form POST; the CSRF token is the main
/// defence, this one catches a leaked token used from another page.
pub(crate) fn check_origin(web: &Web, headers: &HeaderMap) -> Result<(), SessionError> {
    let expected = origin_of(&web.public_url);
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if o != expected {
            return Err(SessionError::Origin {
                found: o.to_string(),
                expected,
            });
        }
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") | Some("none") | None => Ok(()),
        Some(other) => Err(SessionError::Origin {
            found: format!("(sec-fetch-site: {other})"),
            expected,
        }),
    }
}

/// `scheme://host[:port]` of the page's URL.
pub(crate) fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
        None => url.to_string(),
    }
}

/// A local path to return to after sign-in: `/…` but not `//…` (another host) or with a
/// backslash (which browsers read as a slash).
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from URLs (`/\t/evil` becomes `//evil`): only
        // printable ASCII without spaces passes.
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/requests/01J")), "/requests/01J");
        assert_eq!(local_path(Some("//evil.example/x")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        // Browsers strip tabs and newlines: `/\t/evil.example` would become `//evil.example`.
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/\n/evil.example")), "/");
        assert_eq!(local_path(Some("/ /evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn form_tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let web = Web {
            public_url: "https://airlock.example.com".into(),
            session: std::time::Duration::from_secs(3600),
            oidc: None,
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            "https://airlock.example.com".parse().unwrap(),
        );
        assert!(check_origin(&web, &h).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(matches!(
            check_origin(&web, &h),
            Err(SessionError::Origin { .. })
        ));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_origin(&web, &h).is_err());
    }

    #[test]
    fn https_pages_get_host_prefixed_secure_cookies() {
        let mut web = Web {
            public_url: "https://a.example".into(),
            session: std::time::Duration::from_secs(3600),
            oidc: None,
        };
        let c = set_cookie(&web, "airlock_session", "v", 60);
        assert!(c.starts_with("__Host-airlock_session=v;"), "{c}");
        assert!(c.contains("; Secure") && c.contains("HttpOnly") && c.contains("SameSite=Lax"));
        web.public_url = "http://127.0.0.1:8080".into();
        let c = set_cookie(&web, "airlock_session", "v", 60);
        assert!(
            c.starts_with("airlock_session=v;") && !c.contains("Secure"),
            "{c}"
        );
    }
}
