//! The record of attempts (accepted and refused), newest first.
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Attempt, Store, StoreError, ms, ms_out};

fn attempt_from_row(row: &AnyRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        at_unix_ms: ms_out(row.try_get("at_ms")?),
        who: row.try_get("who")?,
        channel: row.try_get("channel")?,
        request_id: row.try_get("request_id")?,
        action: row.try_get("action")?,
        result: row.try_get("result")?,
        message: row.try_get("message")?,
    })
}

impl Store {
    /// Appends an attempt to the record.
    pub async fn record_attempt(&self, a: &Attempt) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        insert_attempt(&mut conn, a).await
    }

    /// The newest `limit` attempts, newest first.
    pub async fn attempts(&self, limit: u32) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, who, channel, request_id, action, result, message FROM attempts \
             ORDER BY at_ms DESC, seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(attempt_from_row).collect()
    }
}

/// Inserts `a` on `conn` (a transaction's, when the attempt must commit with what it records:
/// an accepted vote is recorded in the vote's own transaction).
pub(super) async fn insert_attempt(
    conn: &mut sqlx::AnyConnection,
    a: &Attempt,
) -> Result<(), StoreError> {
    // `seq` orders attempts of the same millisecond (see the migration); the MAX is one
    // probe of the `attempts_seq` index.
    sqlx::query(
        "INSERT INTO attempts (seq, at_ms, who, channel, request_id, action, result, message) \
         VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts), $1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(ms(a.at_unix_ms))
    .bind(&a.who)
    .bind(&a.channel)
    .bind(a.request_id.as_deref())
    .bind(&a.action)
    .bind(&a.result)
    .bind(&a.message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
