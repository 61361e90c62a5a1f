//! Sign-in with OpenID Connect: the authorization code flow with PKCE (S256), `state` bound
//! to the browser by a cookie, a `nonce` in the ID token, and the ID token's signature checked
//! against the provider's published keys (RS256, ES256 or EdDSA, with `ring`).
//!
//! The provider's discovery document and keys are read at sign-in and kept for an hour; an ID
//! token signed with a key id not in the kept set makes one fresh read (key rotation).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature;
use serde::Deserialize;

use super::App;
use super::pages::{CHANNEL, login_page, signed_in_redirect};
use super::session;
use crate::auth::sha256_hex;
use crate::broker::now_ms;
use crate::config::{Oidc, Web};
use crate::store::WebLogin;

/// How long a sign-in may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long discovery and keys are kept.
const KEEP: Duration = Duration::from_secs(3600);
/// Clock skew allowed on `exp`, `iat`, `nbf`.
const SKEW_S: u64 = 60;

/// Errors of an OIDC sign-in.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider at {url}: {why}")]
    Provider { url: String, why: String },
    #[error("identity provider answered: {0}")]
    Denied(String),
    #[error("sign-in state is unknown, used or expired; start again")]
    BadState,
    #[error("ID token: {0}")]
    Token(String),
    #[error(transparent)]
    Secret(#[from] crate::secret_file::SecretFileError),
    #[error("{0} is not an approver here: not in the server config and no mapped group")]
    NotAnApprover(String),
    #[error(
        "{who} looks like principal {principal} of the server config (same name or host user): \
         one person may not be two approvers; name the principal {who} in the config instead"
    )]
    LooksLike { who: String, principal: String },
    #[error("the page is not configured for OIDC sign-in")]
    NotConfigured,
}

/// What a verified ID token says about the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdToken {
    /// The `principal_claim`'s value, lowercased.
    pub principal: String,
    /// The `groups_claim`'s values (unmapped).
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// A published key (only the fields the supported algorithms need).
#[derive(Clone, Debug, Deserialize)]
pub struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

struct Kept {
    issuer: String,
    at: Instant,
    discovery: Discovery,
    keys: Vec<Jwk>,
}

/// The provider's discovery and keys, kept between sign-ins.
pub(crate) struct Provider {
    client: Option<reqwest::Client>,
    kept: Mutex<Option<Kept>>,
}

impl Provider {
    pub fn new() -> Provider {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tracing::error!(error = %e, "OIDC: no HTTP client"))
            .ok();
        Provider {
            client,
            kept: Mutex::new(None),
        }
    }

    fn client(&self, url: &str) -> Result<&reqwest::Client, OidcError> {
        self.client.as_ref().ok_or_else(|| OidcError::Provider {
            url: url.into(),
            why: "no HTTP client".into(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let bad = |why: String| OidcError::Provider {
            url: url.into(),
            why,
        };
        let res = self
            .client(url)?
            .get(url)
            .send()
            .await
            .map_err(|e| bad(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(bad(format!("HTTP {}", res.status())));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| bad(e.without_url().to_string()))?;
        serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))
    }

    /// Discovery and keys of `issuer`, read again after [`KEEP`] or when `fresh`.
    async fn load(&self, issuer: &str, fresh: bool) -> Result<(Discovery, Vec<Jwk>), OidcError> {
        {
            let k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = k.as_ref()
                && !fresh
                && k.issuer == issuer
                && k.at.elapsed() < KEEP
            {
                return Ok((k.discovery.clone(), k.keys.clone()));
            }
        }
        let url = format!("{issuer}/.well-known/openid-configuration");
        let d: Discovery = self.get_json(&url).await?;
        if d.issuer != issuer {
            return Err(OidcError::Provider {
                url,
                why: format!("its issuer is {:?}, not {issuer:?}", d.issuer),
            });
        }
        let jwks: Jwks = self.get_json(&d.jwks_uri).await?;
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(Kept {
            issuer: issuer.to_string(),
            at: Instant::now(),
            discovery: d.clone(),
            keys: jwks.keys.clone(),
        });
        Ok((d, jwks.keys))
    }
}

fn oidc_of(web: &Web) -> Result<&Oidc, OidcError> {
    web.oidc.as_ref().ok_or(OidcError::NotConfigured)
}

fn redirect_uri(web: &Web) -> String {
    format!("{}/login/oidc/callback", web.public_url)
}

fn b64_random() -> Result<String, crate::error::Fault> {
    Ok(B64.encode(crate::auth::random::<32>()?))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /login/oidc`: sends the browser to the provider.
pub(super) async fn start(State(app): State<App>, Query(q): Query<StartQuery>) -> Response {
    let web = match session::web(&app) {
        Ok(w) => w,
        Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    let next = session::local_path(q.next.as_deref());
    match begin(&app, &web, &next).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC sign-in could not start");
            login_page(&web, &next, Some(e.to_string()), StatusCode::BAD_GATEWAY)
        }
    }
}

async fn begin(app: &App, web: &Web, next: &str) -> Result<Response, OidcError> {
    let o = oidc_of(web)?;
    let (d, _) = app.oidc.load(&o.issuer, false).await?;
    let fault = |f: crate::error::Fault| OidcError::Provider {
        url: o.issuer.clone(),
        why: f.to_string(),
    };
    let (state, verifier, nonce, browser) = (
        b64_random().map_err(fault)?,
        b64_random().map_err(fault)?,
        b64_random().map_err(fault)?,
        b64_random().map_err(fault)?,
    );
    let challenge = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let login = WebLogin {
        browser_sha256: sha256_hex(browser.as_bytes()),
        verifier,
        nonce: nonce.clone(),
        next_path: next.to_string(),
        expires_unix_ms: now_ms() + LOGIN_TTL.as_millis() as u64,
    };
    app.broker
        .store
        .add_login(&sha256_hex(state.as_bytes()), &login, now_ms())
        .await
        .map_err(|e| fault(e.into()))?;
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &o.client_id)
        .append_pair("redirect_uri", &redirect_uri(web))
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut res = Redirect::to(&format!("{}{sep}{q}", d.authorization_endpoint)).into_response();
    let c = session::set_cookie(web, "airlock_login", &browser, LOGIN_TTL.as_secs());
    if let Ok(v) = c.parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: the provider sends the browser back with a code.
pub(super) async fn callback(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let web = match session::web(&app) {
        Ok(w) => w,
        Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    match finish(&app, &web, &headers, &q).await {
        Ok((id, groups, next)) => {
            match session::start(&app, &web, &id, groups, "oidc", None).await {
                Ok(cookie) => {
                    let mut res = signed_in_redirect(&web, &next, &cookie);
                    if let Ok(v) = session::set_cookie(&web, "airlock_login", "", 0).parse() {
                        res.headers_mut().append(header::SET_COOKIE, v);
                    }
                    res
                }
                Err(f) => (StatusCode::INTERNAL_SERVER_ERROR, f.to_string()).into_response(),
            }
        }
        Err(e) => {
            let who = match &e {
                OidcError::NotAnApprover(p) | OidcError::LooksLike { who: p, .. } => p.clone(),
                _ => "unknown".into(),
            };
            let code = match &e {
                OidcError::NotAnApprover(_) | OidcError::LooksLike { .. } => {
                    tonic::Code::PermissionDenied
                }
                OidcError::Provider { .. } | OidcError::Secret(_) => tonic::Code::Unavailable,
                _ => tonic::Code::Unauthenticated,
            };
            app.broker
                .record(&who, CHANNEL, "sign-in", None, code, &e.to_string())
                .await;
            let status = StatusCode::from_u16(crate::error::http_status(code))
                .unwrap_or(StatusCode::UNAUTHORIZED);
            // The browser is not signed in: a server-side file's path stays in the log.
            let shown = match &e {
                OidcError::Secret(_) => {
                    tracing::error!(error = %e, "OIDC sign-in: client secret unusable");
                    "single sign-on is misconfigured on this server; see its log".to_string()
                }
                _ => e.to_string(),
            };
            login_page(&web, "/", Some(shown), status)
        }
    }
}

/// Checks the callback and redeems the code: the principal, its mapped groups, where to go.
async fn finish(
    app: &App,
    web: &Web,
    headers: &HeaderMap,
    q: &Callback,
) -> Result<(String, Vec<String>, String), OidcError> {
    let o = oidc_of(web)?;
    if let Some(e) = &q.error {
        // Anyone can send a browser here with any text: only the error code, clipped and
        // limited to its documented characters, is shown and recorded; the description goes
        // to the log.
        tracing::warn!(error = %clip(e), description = %clip(q.error_description.as_deref().unwrap_or("")), "OIDC provider refused the sign-in");
        let code: String = e
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        return Err(OidcError::Denied(code));
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return Err(OidcError::BadState);
    };
    let login = app
        .broker
        .store
        .take_login(&sha256_hex(state.as_bytes()), now_ms())
        .await
        .map_err(|e| OidcError::Provider {
            url: "(database)".into(),
            why: e.to_string(),
        })?
        .ok_or(OidcError::BadState)?;
    // The state must come back to the browser that started the sign-in (login CSRF).
    let browser = session::cookie(headers, &session::cookie_name(web, "airlock_login"));
    if browser.is_none_or(|b| sha256_hex(b.as_bytes()) != login.browser_sha256) {
        return Err(OidcError::BadState);
    }
    let (d, _) = app.oidc.load(&o.issuer, false).await?;
    let secret = match &o.client_secret_file {
        Some(f) => Some(crate::secret_file::read(&app.dir, f, "OIDC client secret")?),
        None => None,
    };
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", &redirect_uri(web)),
        ("client_id", &o.client_id),
        ("code_verifier", &login.verifier),
    ];
    let url = d.token_endpoint.clone();
    let bad = |why: String| OidcError::Provider {
        url: url.clone(),
        why,
    };
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let mut req = app
        .oidc
        .client(&url)?
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body);
    if let Some(s) = &secret {
        req = req.basic_auth(&o.client_id, Some(s));
    }
    let res = req
        .send()
        .await
        .map_err(|e| bad(e.without_url().to_string()))?;
    let status = res.status();
    let text = res.text().await.map_err(|e| bad(e.to_string()))?;
    if !status.is_success() {
        return Err(bad(format!(
            "token endpoint: HTTP {status}: {}",
            clip(&text)
        )));
    }
    #[derive(Deserialize)]
    struct TokenAnswer {
        id_token: String,
    }
    let t: TokenAnswer =
        serde_json::from_str(&text).map_err(|e| bad(format!("token endpoint answer: {e}")))?;
    let now_s = now_ms() / 1000;
    let (_, keys) = app.oidc.load(&o.issuer, false).await?;
    let id = match verify_id_token(&t.id_token, &keys, o, &login.nonce, now_s) {
        Err(OidcError::Token(why)) if why.contains("no published key") => {
            let (_, keys) = app.oidc.load(&o.issuer, true).await?;
            verify_id_token(&t.id_token, &keys, o, &login.nonce, now_s)?
        }
        r => r?,
    };
    let groups: Vec<String> = id
        .groups
        .iter()
        .filter_map(|g| o.groups.get(g).cloned())
        .collect();
    let cfg = app.broker.config();
    if cfg.principal(&id.principal).is_none() {
        if groups.is_empty() {
            return Err(OidcError::NotAnApprover(id.principal));
        }
        // A provider identity that looks like a principal of the config (alice@example.com
        // next to alice) would be a second principal for one person: two votes towards N of
        // M. Such a person signs in only as the config's principal (name it by the claim).
        let local = id.principal.split('@').next().unwrap_or("");
        if let Some((name, _)) = cfg.principals.iter().find(|(name, p)| {
            name.as_str() == local || p.host_users.iter().any(|h| h.user == local)
        }) {
            return Err(OidcError::LooksLike {
                who: id.principal,
                principal: name.clone(),
            });
        }
    }
    Ok((id.principal, groups, login.next_path))
}

fn clip(s: &str) -> String {
    s.chars().take(200).filter(|c| !c.is_control()).collect()
}

/// Verifies an ID token (compact JWS) against `keys`: signature, `iss`, `aud` (and `azp`),
/// `exp`/`nbf`/`iat` with [`SKEW_S`] of skew, and `nonce`. Returns the principal and groups
/// the config's claims name.
pub fn verify_id_token(
    jwt: &str,
    keys: &[Jwk],
    o: &Oidc,
    nonce: &str,
    now_s: u64,
) -> Result<IdToken, OidcError> {
    let bad = |s: &str| OidcError::Token(s.to_string());
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS (three dot-separated parts)"));
    };
    let header: serde_json::Value =
        serde_json::from_slice(&B64.decode(h).map_err(|_| bad("header is not base64url"))?)
            .map_err(|_| bad("header is not JSON"))?;
    let alg = header["alg"].as_str().unwrap_or("");
    let kid = header["kid"].as_str();
    let sig = B64
        .decode(sig)
        .map_err(|_| bad("signature is not base64url"))?;
    let signed = &jwt.as_bytes()[..h.len() + 1 + p.len()];
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .collect();
    if candidates.is_empty() {
        return Err(OidcError::Token(format!(
            "no published key has kid {:?}",
            kid.unwrap_or("")
        )));
    }
    let ok = candidates
        .iter()
        .any(|k| check_signature(alg, k, signed, &sig).unwrap_or(false));
    if !ok {
        if !matches!(alg, "RS256" | "ES256" | "EdDSA") {
            return Err(OidcError::Token(format!(
                "algorithm {alg:?} is not accepted (RS256, ES256, EdDSA)"
            )));
        }
        return Err(bad("signature does not verify"));
    }
    let c: serde_json::Value =
        serde_json::from_slice(&B64.decode(p).map_err(|_| bad("claims are not base64url"))?)
            .map_err(|_| bad("claims are not JSON"))?;
    if c["iss"].as_str() != Some(o.issuer.as_str()) {
        return Err(bad("iss is not the configured issuer"));
    }
    let aud_ok = match &c["aud"] {
        serde_json::Value::String(a) => a == &o.client_id,
        serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(&o.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(bad("aud does not include this client"));
    }
    if let Some(azp) = c["azp"].as_str()
        && azp != o.client_id
    {
        return Err(bad("azp is another client"));
    }
    let exp = c["exp"].as_u64().ok_or_else(|| bad("no exp"))?;
    if now_s > exp + SKEW_S {
        return Err(bad("expired"));
    }
    if c["nbf"].as_u64().is_some_and(|nbf| nbf > now_s + SKEW_S)
        || c["iat"].as_u64().is_some_and(|iat| iat > now_s + SKEW_S)
    {
        return Err(bad("issued in the future"));
    }
    if c["nonce"].as_str() != Some(nonce) {
        return Err(bad("nonce does not match this sign-in"));
    }
    let principal = c[o.principal_claim.as_str()]
        .as_str()
        .ok_or_else(|| OidcError::Token(format!("no string claim {:?}", o.principal_claim)))?
        .to_lowercase();
    // An address the provider has not verified may be anyone's (some providers let users set
    // it): it must be marked verified, not merely not marked unverified.
    if o.principal_claim == "email" && c["email_verified"] != serde_json::Value::Bool(true) {
        return Err(bad(
            "the provider does not say this email is verified (email_verified)",
        ));
    }
    let groups = match &c[o.groups_claim.as_str()] {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        serde_json::Value::String(g) => vec![g.clone()],
        _ => Vec::new(),
    };
    Ok(IdToken { principal, groups })
}

/// Whether `sig` over `signed` verifies with key `k` under `alg`; `None` when the key does
/// not fit the algorithm.
fn check_signature(alg: &str, k: &Jwk, signed: &[u8], sig: &[u8]) -> Option<bool> {
    let dec = |s: &Option<String>| s.as_deref().and_then(|v| B64.decode(v).ok());
    match (alg, k.kty.as_str()) {
        ("RS256", "RSA") => {
            let key = signature::RsaPublicKeyComponents {
                n: dec(&k.n)?,
                e: dec(&k.e)?,
            };
            Some(
                key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                    .is_ok(),
            )
        }
        ("ES256", "EC") if k.crv.as_deref() == Some("P-256") => {
            let mut point = vec![4u8];
            point.extend(dec(&k.x)?);
            point.extend(dec(&k.y)?);
            Some(
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, sig)
                    .is_ok(),
            )
        }
        ("EdDSA", "OKP") if k.crv.as_deref() == Some("Ed25519") => Some(
            signature::UnparsedPublicKey::new(&signature::ED25519, dec(&k.x)?)
                .verify(signed, sig)
                .is_ok(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
