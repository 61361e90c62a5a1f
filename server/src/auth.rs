//! Who is calling: approvers present an API token (`authorization: Bearer …`), hosts their
//! client certificate (checked in `link.rs`).
//!
//! Tokens are 32 random bytes shown once at `airlock-server tokens issue`; the database keeps
//! only their SHA-256, an expiry and a revocation time, so a copy of the database does not
//! hand out working tokens.
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::Fault;
use crate::store::{Store, TokenRow};

/// Prefix of API tokens, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "airlock_tok_";

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of `s`, lowercase hex.
pub fn sha256_hex(s: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, s).as_ref())
}

/// Random bytes from the system RNG.
pub fn random<const N: usize>() -> Result<[u8; N], Fault> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Fault::Internal("the system random number generator failed".into()))?;
    Ok(b)
}

/// A new API token for `principal`, valid for `ttl_ms`. Returns the secret (shown once) and
/// the row stored.
pub async fn issue(
    store: &Store,
    principal: &str,
    ttl_ms: u64,
    now: u64,
) -> Result<(String, TokenRow), Fault> {
    let secret = format!("{TOKEN_PREFIX}{}", hex(&random::<32>()?));
    let row = TokenRow {
        id: hex(&random::<4>()?),
        principal: principal.to_string(),
        created_unix_ms: now,
        expires_unix_ms: now.saturating_add(ttl_ms),
        revoked_unix_ms: None,
    };
    store
        .add_token(&row, &sha256_hex(secret.as_bytes()))
        .await?;
    Ok((secret, row))
}

/// Who an approver's call comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The principal the token was issued to.
    pub principal: String,
    /// The token's public id: a vote made with it is refused when the token was revoked or
    /// expired by the time the vote is stored (see [`Store::vote`]).
    pub token_id: String,
    /// SHA-256 of the secret, so a long call (watch) can check the token again
    /// ([`still_valid`]) without keeping the secret.
    pub token_sha256: String,
}

/// The caller behind the bearer token in `meta`, if the token is known, unexpired and
/// unrevoked. Errors say which of those failed, never anything about other tokens.
///
/// A token found valid is remembered by the store ([`Store::lookup_token`]), so an approver's
/// later calls cost no database read: expiry is still checked here at every call, a
/// revocation through this server's store is seen at once, and one made elsewhere (`tokens
/// revoke`, another replica) within [`crate::link::HOST_CHECK`]; a vote checks the token
/// again in its own transaction, so a revoked token never votes.
pub async fn principal(
    store: &Store,
    meta: &tonic::metadata::MetadataMap,
    now: u64,
) -> Result<Caller, Fault> {
    let Some(v) = meta.get("authorization") else {
        return Err(Fault::Unauthenticated(
            "no API token: pass --token or AIRLOCK_TOKEN (airlock-server tokens issue PRINCIPAL)"
                .into(),
        ));
    };
    let v = v
        .to_str()
        .map_err(|_| Fault::Unauthenticated("authorization header is not text".into()))?;
    let Some(token) = v.strip_prefix("Bearer ") else {
        return Err(Fault::Unauthenticated(
            "authorization header: expected `Bearer TOKEN`".into(),
        ));
    };
    token_caller(store, token, now).await
}

/// The caller behind an API token's secret (the web page's token sign-in, the bearer header
/// of the approvals API), if it is known, unexpired and unrevoked.
pub async fn token_caller(store: &Store, token: &str, now: u64) -> Result<Caller, Fault> {
    if token.len() > 256 {
        return Err(Fault::Unauthenticated(
            "API token longer than 256 bytes".into(),
        ));
    }
    let hash = sha256_hex(token.trim().as_bytes());
    let Some(row) = store.lookup_token(&hash, now).await? else {
        return Err(Fault::Unauthenticated("unknown API token".into()));
    };
    usable(row, hash, now)
}

/// The caller behind a token whose secret hashes to `token_sha256` (a web session signed in
/// with a token keeps only the hash), checked like [`token_caller`].
pub async fn token_caller_by_hash(
    store: &Store,
    token_sha256: &str,
    now: u64,
) -> Result<Caller, Fault> {
    let Some(row) = store.lookup_token(token_sha256, now).await? else {
        return Err(Fault::Unauthenticated(
            "the API token this session signed in with no longer exists".into(),
        ));
    };
    usable(row, token_sha256.to_string(), now)
}

/// Checks again, at `now`, the token a call authenticated with: a stream that outlives the
/// token's expiry or revocation (watch) ends with the same error a new call would get. The
/// lookup is answered from the replica's memory while the token stays valid, so this costs
/// no database read per check.
pub async fn still_valid(store: &Store, caller: &Caller, now: u64) -> Result<(), Fault> {
    let Some(row) = store.lookup_token(&caller.token_sha256, now).await? else {
        return Err(Fault::Unauthenticated(format!(
            "API token {} no longer exists",
            caller.token_id
        )));
    };
    usable(row, caller.token_sha256.clone(), now).map(|_| ())
}

/// The caller behind a stored token row, unless it is revoked or expired at `now`.
fn usable(row: TokenRow, token_sha256: String, now: u64) -> Result<Caller, Fault> {
    if row.revoked_unix_ms.is_some() {
        return Err(Fault::Unauthenticated(format!(
            "API token {} was revoked",
            row.id
        )));
    }
    if now >= row.expires_unix_ms {
        return Err(Fault::Unauthenticated(format!(
            "API token {} expired",
            row.id
        )));
    }
    Ok(Caller {
        principal: row.principal,
        token_id: row.id,
        token_sha256,
    })
}
