//! The web page's sign-ins: sessions (by the SHA-256 of the cookie's secret) and OIDC logins
//! under way (by the SHA-256 of their `state`). Expired rows are deleted as new ones are made.
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, from_json, ms, ms_out, to_json};

/// Most OIDC sign-ins under way at once (each lives 10 minutes).
pub const MAX_LOGINS: i64 = 10_000;

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub principal: String,
    /// Approver groups from the provider's groups claim (mapped by `web.oidc.groups`), on top
    /// of the principal's groups in the config.
    pub groups: Vec<String>,
    /// `oidc` or `token`.
    pub via: String,
    /// SHA-256 of the API token signed in with: every page and vote checks it is still
    /// valid, so revoking the token ends its sessions.
    pub token_sha256: Option<String>,
    /// The session's form token.
    pub csrf: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
}

/// An OIDC sign-in under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebLogin {
    pub browser_sha256: String,
    pub verifier: String,
    pub nonce: String,
    /// The page to return to (a local path).
    pub next_path: String,
    pub expires_unix_ms: u64,
}

fn session_from_row(row: &AnyRow) -> Result<WebSession, StoreError> {
    let principal: String = row.try_get("principal")?;
    let groups: String = row.try_get("groups")?;
    Ok(WebSession {
        groups: from_json("session groups", &principal, &groups)?,
        principal,
        via: row.try_get("via")?,
        token_sha256: row.try_get("token_sha256")?,
        csrf: row.try_get("csrf")?,
        created_unix_ms: ms_out(row.try_get("created_ms")?),
        expires_unix_ms: ms_out(row.try_get("expires_ms")?),
    })
}

impl Store {
    /// Stores a session under the hash of its cookie secret; expired sessions and logins go.
    pub async fn add_session(&self, id_sha256: &str, s: &WebSession) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_sha256, principal, groups, via, token_sha256, csrf, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id_sha256)
        .bind(&s.principal)
        .bind(to_json(&s.groups))
        .bind(&s.via)
        .bind(&s.token_sha256)
        .bind(&s.csrf)
        .bind(ms(s.created_unix_ms))
        .bind(ms(s.expires_unix_ms))
        .execute(&mut *tx)
        .await?;
        let now = ms(s.created_unix_ms);
        sqlx::query("DELETE FROM web_sessions WHERE expires_ms <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM web_logins WHERE expires_ms <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session whose cookie secret hashes to `id_sha256`, unless it expired by `now`.
    pub async fn session(
        &self,
        id_sha256: &str,
        now: u64,
    ) -> Result<Option<WebSession>, StoreError> {
        let row = sqlx::query(
            "SELECT principal, groups, via, token_sha256, csrf, created_ms, expires_ms \
             FROM web_sessions WHERE id_sha256 = $1 AND expires_ms > $2",
        )
        .bind(id_sha256)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Ends a session (sign-out); ending one that is gone is not an error.
    pub async fn end_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM web_sessions WHERE id_sha256 = $1")
            .bind(id_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores an OIDC sign-in under way, after deleting expired ones. Anyone can start a
    /// sign-in, so at most [`MAX_LOGINS`] may be under way at once
    /// ([`StoreError::TooMany`] past it).
    pub async fn add_login(
        &self,
        state_sha256: &str,
        l: &WebLogin,
        now: u64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM web_logins WHERE expires_ms <= $1")
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM web_logins")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= MAX_LOGINS {
            return Err(StoreError::TooMany {
                what: "OIDC sign-ins under way",
            });
        }
        sqlx::query(
            "INSERT INTO web_logins (state_sha256, browser_sha256, verifier, nonce, next_path, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(state_sha256)
        .bind(&l.browser_sha256)
        .bind(&l.verifier)
        .bind(&l.nonce)
        .bind(&l.next_path)
        .bind(ms(l.expires_unix_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes (reads and deletes) the sign-in with this state, so a state is used once;
    /// `None` when unknown or expired at `now`.
    pub async fn take_login(
        &self,
        state_sha256: &str,
        now: u64,
    ) -> Result<Option<WebLogin>, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "DELETE FROM web_logins WHERE state_sha256 = $1 \
             RETURNING browser_sha256, verifier, nonce, next_path, expires_ms",
        )
        .bind(state_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let l = WebLogin {
            browser_sha256: row.try_get("browser_sha256")?,
            verifier: row.try_get("verifier")?,
            nonce: row.try_get("nonce")?,
            next_path: row.try_get("next_path")?,
            expires_unix_ms: ms_out(row.try_get("expires_ms")?),
        };
        Ok((l.expires_unix_ms > now).then_some(l))
    }
}
