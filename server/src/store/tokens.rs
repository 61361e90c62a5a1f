//! Approvers' API tokens (only the SHA-256 of a secret is stored), and the replica's memory
//! of the ones found valid ([`TokenCache`]).
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, TokenRow, ms, ms_out, opt_ms_out};

/// Most tokens [`TokenCache`] keeps; past it, the map is emptied and lookups read the store
/// again (a server has far fewer approvers than this).
const TOKEN_CACHE: usize = 1024;

/// API tokens this replica found valid, by the SHA-256 of their secret, so that an approver's
/// calls do not each read `api_tokens`. Only tokens that were known, unrevoked and unexpired
/// when read are kept (a wrong secret is looked up every time). Expiry is checked at every
/// use by the caller; revocation is seen at once when it is made through this `Store`
/// ([`Store::revoke_token`]), and within [`Store::refresh_revoked_tokens`]'s period when it
/// is made elsewhere (`tokens revoke`, another replica). Votes do not depend on that delay:
/// [`Store::vote`] checks the token in the vote's own transaction.
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    inner: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    by_hash: HashMap<String, TokenRow>,
    /// Bumped by every eviction. A row read from the store before an eviction is not kept
    /// after it: it may be the row the eviction was about, read before its revocation.
    epoch: u64,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the tokens `gone` selects.
    fn evict(&self, gone: impl Fn(&TokenRow) -> bool) {
        let mut c = self.lock();
        c.by_hash.retain(|_, row| !gone(row));
        c.epoch += 1;
    }
}

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
        self.token_cache.evict(|row| row.id == id);
        Ok(())
    }

    /// [`Store::token_by_hash`] through the replica's memory of valid tokens (shared by the
    /// clones of this `Store`): a token found known, unrevoked and unexpired at `now` is kept,
    /// and answered from memory until a revocation evicts it ([`Store::revoke_token`] at once,
    /// [`Store::refresh_revoked_tokens`] for one made elsewhere). A kept token past its expiry
    /// is dropped and returned as it is, for the caller to refuse (its expiry says so).
    pub async fn lookup_token(
        &self,
        token_sha256: &str,
        now: u64,
    ) -> Result<Option<TokenRow>, StoreError> {
        let epoch = {
            let mut c = self.token_cache.lock();
            if let Some(row) = c.by_hash.get(token_sha256) {
                let row = row.clone();
                if now >= row.expires_unix_ms {
                    c.by_hash.remove(token_sha256);
                }
                return Ok(Some(row));
            }
            c.epoch
        };
        let row = self.token_by_hash(token_sha256).await?;
        if let Some(r) = &row
            && r.revoked_unix_ms.is_none()
            && now < r.expires_unix_ms
        {
            let mut c = self.token_cache.lock();
            if c.epoch == epoch {
                if c.by_hash.len() >= TOKEN_CACHE {
                    c.by_hash.clear();
                }
                c.by_hash.insert(token_sha256.to_string(), r.clone());
            }
        }
        Ok(row)
    }

    /// Drops from the replica's memory of valid tokens (see [`Store::lookup_token`]) every
    /// token that is revoked in the store: the way revocations made elsewhere (`tokens
    /// revoke` in another process, another replica) reach this one. One query, none while
    /// nothing is kept; the server runs it every [`crate::link::HOST_CHECK`].
    pub async fn refresh_revoked_tokens(&self, now: u64) -> Result<(), StoreError> {
        {
            let mut c = self.token_cache.lock();
            if c.by_hash.is_empty() {
                // Nothing to drop, but a lookup reading the store right now may have read a
                // token before its revocation: it must not keep it.
                c.epoch += 1;
                return Ok(());
            }
        }
        // Expired tokens are refused at use whether revoked or not, so only unexpired
        // revoked ones matter: the answer stays small however many tokens were revoked over
        // the years.
        let revoked: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM api_tokens WHERE revoked_ms IS NOT NULL AND expires_ms > $1",
        )
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        let revoked: HashSet<String> = revoked.into_iter().collect();
        self.token_cache.evict(|row| revoked.contains(&row.id));
        Ok(())
    }
}
