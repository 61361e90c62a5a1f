//! A fake OpenID Connect provider on 127.0.0.1 for tests and the demo: discovery, an
//! authorization page with one "Sign in" button, a token endpoint that checks the code, the
//! redirect URI, the client secret and PKCE (S256) the way a real provider does, and keys
//! (ES256, made fresh at start). ID tokens carry the claims set with [`FakeIdp::sign_in_as`].
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

use crate::broker::now_ms;

/// The fake provider's client registration.
pub const CLIENT_ID: &str = "airlock-test";
/// Its client secret.
pub const CLIENT_SECRET: &str = "fake-idp-secret";

struct Pending {
    redirect_uri: String,
    challenge: String,
    nonce: String,
    claims: serde_json::Value,
}

struct Idp {
    issuer: String,
    key: EcdsaKeyPair,
    jwk: serde_json::Value,
    claims: Mutex<serde_json::Value>,
    codes: Mutex<HashMap<String, Pending>>,
    /// Token requests refused, with why (tests assert none or some).
    pub refusals: Mutex<Vec<String>>,
}

/// A running fake provider; stops when dropped.
pub struct FakeIdp {
    idp: Arc<Idp>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIdp {
    /// Starts a provider on a free loopback port; the next sign-in is `claims`' user
    /// (`{"email": "alice@example.com", "groups": ["oncall"]}`).
    pub async fn start(claims: serde_json::Value) -> anyhow::Result<FakeIdp> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", l.local_addr()?);
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("ECDSA key generation failed"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("ECDSA key rejected"))?;
        let pt = key.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "fake-1", "alg": "ES256", "use": "sig",
            "x": B64.encode(&pt[1..33]), "y": B64.encode(&pt[33..65]),
        });
        let idp = Arc::new(Idp {
            issuer,
            key,
            jwk,
            claims: Mutex::new(claims),
            codes: Mutex::default(),
            refusals: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/authorize/done", post(authorized))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(idp.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Ok(FakeIdp { idp, task })
    }

    /// The issuer URL (for `web.oidc.issuer`).
    pub fn issuer(&self) -> &str {
        &self.idp.issuer
    }

    /// Who the next sign-in is.
    pub fn sign_in_as(&self, claims: serde_json::Value) {
        *self.idp.claims.lock().unwrap_or_else(|e| e.into_inner()) = claims;
    }

    /// Token requests the provider refused so far, and why.
    pub fn refusals(&self) -> Vec<String> {
        self.idp
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A signed ID token with `claims` (for tests of the verifier).
    pub fn id_token(&self, claims: &serde_json::Value) -> String {
        sign(&self.idp, claims)
    }

    /// The provider's key set, as `/jwks` serves it.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.idp.jwk] })
    }
}

fn sign(idp: &Idp, claims: &serde_json::Value) -> String {
    let h = B64.encode(br#"{"alg":"ES256","typ":"JWT","kid":"fake-1"}"#);
    let p = B64.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let sig = idp
        .key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("ECDSA signing");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Response {
    let i = &idp.issuer;
    axum::Json(serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    axum::Json(serde_json::json!({ "keys": [idp.jwk] })).into_response()
}

/// The authorization page: checks the client and PKCE parameters, then shows one button.
async fn authorize(Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != CLIENT_ID
        || get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || get("state").is_empty()
        || get("nonce").is_empty()
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let hidden: String = ["redirect_uri", "state", "nonce", "code_challenge"]
        .iter()
        .map(|k| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                get(k).replace('&', "&amp;").replace('"', "&quot;")
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><title>Fake IdP</title><form method=\"post\" action=\"/authorize/done\">{hidden}\
         <button id=\"idp-sign-in\" type=\"submit\">Sign in</button></form>"
    ))
    .into_response()
}

async fn authorized(
    State(idp): State<Arc<Idp>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let code = B64.encode(crate::auth::random::<16>().unwrap_or([7; 16]));
    let claims = idp.claims.lock().unwrap_or_else(|e| e.into_inner()).clone();
    idp.codes.lock().unwrap_or_else(|e| e.into_inner()).insert(
        code.clone(),
        Pending {
            redirect_uri: get("redirect_uri"),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            claims,
        },
    );
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .finish();
    Redirect::to(&format!("{}?{q}", get("redirect_uri"))).into_response()
}

async fn token(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let refuse = |why: &str| {
        idp.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(why.to_string());
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return refuse("client authentication failed");
    }
    if get("grant_type") != "authorization_code" {
        return refuse("grant_type");
    }
    let Some(p) = idp
        .codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&get("code"))
    else {
        return refuse("unknown or used code");
    };
    if p.redirect_uri != get("redirect_uri") {
        return refuse("redirect_uri differs");
    }
    let verifier = get("code_verifier");
    let s256 = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    if s256 != p.challenge {
        return refuse("PKCE verifier does not match the challenge");
    }
    let now = now_ms() / 1000;
    let mut claims = p.claims.clone();
    if let Some(m) = claims.as_object_mut() {
        m.insert("iss".into(), idp.issuer.clone().into());
        m.insert("aud".into(), CLIENT_ID.into());
        m.insert("iat".into(), now.into());
        m.insert("exp".into(), (now + 300).into());
        m.insert("nonce".into(), p.nonce.into());
        m.entry("sub").or_insert_with(|| "fake-subject".into());
        m.entry("email_verified").or_insert(true.into());
    }
    axum::Json(serde_json::json!({
        "access_token": "fake-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": sign(&idp, &claims),
    }))
    .into_response()
}
