//! The Slack channel's messages (`slack_messages`, migration 0003): which request was posted
//! where, who is posting one right now, and whether its message shows the outcome yet.
use sqlx::Row;

use super::{Store, StoreError, ms, ms_out};

/// A request's posted Slack message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackMessage {
    pub request_id: String,
    /// The conversation id Slack answered with.
    pub channel: String,
    /// The message's timestamp (its id within the conversation).
    pub ts: String,
    pub posted_unix_ms: u64,
    /// When the message was updated to show the outcome; `None` while it shows the buttons.
    pub closed_unix_ms: Option<u64>,
}

impl Store {
    /// Claims the posting of request `id`'s message at `now`: true when this caller may post
    /// it (nobody posted it, and nobody claimed it after `stale_before`). Claim, post, then
    /// [`Store::slack_posted`] or [`Store::slack_release`].
    pub async fn slack_claim(
        &self,
        id: &str,
        now: u64,
        stale_before: u64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "INSERT INTO slack_messages (request_id, claimed_ms) VALUES ($1, $2) \
             ON CONFLICT (request_id) DO UPDATE SET claimed_ms = $2 \
             WHERE slack_messages.ts IS NULL AND slack_messages.claimed_ms < $3 \
             RETURNING request_id",
        )
        .bind(id)
        .bind(ms(now))
        .bind(ms(stale_before))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Gives up a claim (the post failed): another attempt, or another replica, may claim it.
    pub async fn slack_release(&self, id: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE slack_messages SET claimed_ms = 0 WHERE request_id = $1 AND ts IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that request `id`'s message is `ts` in `channel`.
    pub async fn slack_posted(
        &self,
        id: &str,
        channel: &str,
        ts: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO slack_messages (request_id, channel, ts, claimed_ms, posted_ms) \
             VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT (request_id) DO UPDATE SET channel = $2, ts = $3, claimed_ms = 0, \
             posted_ms = $4",
        )
        .bind(id)
        .bind(channel)
        .bind(ts)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that request `id`'s message shows its outcome.
    pub async fn slack_closed(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE slack_messages SET closed_ms = $2 WHERE request_id = $1")
            .bind(id)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Request `id`'s posted message, if it has one.
    pub async fn slack_message(&self, id: &str) -> Result<Option<SlackMessage>, StoreError> {
        let row = sqlx::query(
            "SELECT request_id, channel, ts, posted_ms, closed_ms FROM slack_messages \
             WHERE request_id = $1 AND ts IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(SlackMessage {
                request_id: row.try_get("request_id")?,
                channel: row.try_get("channel")?,
                ts: row.try_get("ts")?,
                posted_unix_ms: ms_out(row.try_get::<Option<i64>, _>("posted_ms")?.unwrap_or(0)),
                closed_unix_ms: row.try_get::<Option<i64>, _>("closed_ms")?.map(ms_out),
            })
        })
        .transpose()
    }

    /// What a restart (or the periodic sweep) must catch up on: pending requests with no
    /// message and no live claim (claimed before `stale_before`), as (id, route), oldest
    /// first; and requests that closed while their message still shows the buttons.
    #[allow(clippy::type_complexity)]
    pub async fn slack_backlog(
        &self,
        stale_before: u64,
        limit: u32,
    ) -> Result<(Vec<(String, Option<String>)>, Vec<String>), StoreError> {
        let unposted = sqlx::query(
            "SELECT r.id, r.route FROM requests r \
             LEFT JOIN slack_messages m ON m.request_id = r.id \
             WHERE r.state = 'pending' \
             AND (m.request_id IS NULL OR (m.ts IS NULL AND m.claimed_ms < $1)) \
             ORDER BY r.created_ms, r.id LIMIT $2",
        )
        .bind(ms(stale_before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("route")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
        let unfinished = sqlx::query(
            "SELECT m.request_id FROM slack_messages m JOIN requests r ON r.id = m.request_id \
             WHERE m.closed_ms IS NULL AND m.ts IS NOT NULL AND r.state <> 'pending' \
             ORDER BY m.request_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok(row.try_get("request_id")?))
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((unposted, unfinished))
    }
}
