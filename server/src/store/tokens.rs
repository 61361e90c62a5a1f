//! Approvers' API tokens (only the SHA-256 of a secret is stored).
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, TokenRow, ms, ms_out, opt_ms_out};

/// The columns [`token_from_row`] reads.
const TOKEN_COLS: &str = "id, principal, created_ms, expires_ms, revoked_ms";

fn token_from_row(row: &AnyRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: row.try_get("id")?,
        principal: row.try_get("principal")?,
        created_unix_ms: ms_out(row.try_get("created_ms")?),
        expires_unix_ms: ms_out(row.try_get("expires_ms")?),
        revoked_unix_ms: opt_ms_out(row.try_get("revoked_ms")?),
    })
}

impl Store {
    /// Stores a new token. A duplicate id or hash is a database error (ids and secrets are
    /// random, so that means a bug or an astronomically unlucky draw: retry with new ones).
    pub async fn add_token(&self, row: &TokenRow, token_sha256: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO api_tokens (id, token_sha256, principal, created_ms, expires_ms, revoked_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(token_sha256)
        .bind(&row.principal)
        .bind(ms(row.created_unix_ms))
        .bind(ms(row.expires_unix_ms))
        .bind(row.revoked_unix_ms.map(ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token with this secret's hash, revoked and expired ones included (the caller says
    /// which it is).
    pub async fn token_by_hash(&self, token_sha256: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens WHERE token_sha256 = $1"
        ))
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens ORDER BY created_ms, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token by id; revoking again keeps the first time. Unknown id →
    /// [`StoreError::NoSuch`].
    pub async fn revoke_token(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = COALESCE(revoked_ms, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuch {
                what: "token",
                name: id.to_string(),
            });
        }
        Ok(())
    }
}
