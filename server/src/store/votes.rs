//! Voting: the one place where a decision is made, in one transaction.
use airlock_approval::{DecisionRecord, Release, Vote};

use super::attempts::insert_attempt;
use super::requests::{REQUEST_COLS, request_from_row, votes_of};
use super::{Attempt, Store, StoreError, StoredRequest, VoteResult, from_name, ms, to_json};

impl Store {
    /// Casts `vote` on request `id` and, when `tally` says the votes so far decide it, stores
    /// the decision, all in ONE transaction:
    ///
    /// 1. `UPDATE requests SET version = version + 1 … WHERE id = $1 AND state = 'pending' AND
    ///    decision IS NULL`: this first write serialises concurrent voters, also across
    ///    replicas (PostgreSQL: the row lock, and a waiter re-checks the WHERE against the
    ///    committed row; SQLite: the database write lock). No row →
    ///    [`StoreError::NotFound`] or [`StoreError::Closed`] (state `decided` for a decided
    ///    request its host has not closed yet).
    /// 2. Insert the vote; one per (request, principal), else [`StoreError::AlreadyVoted`]
    ///    and nothing changed.
    /// 3. Read every vote, call `tally(&request, &votes)`; `Some(decision)` is stored on the
    ///    request.
    /// 4. Record the accepted attempt (who, channel, "allow"/"deny", "decided" or "vote
    ///    counted"): it commits with the vote or not at all.
    ///
    /// Returns the request with its votes (and decision), and `decided` when this vote made
    /// the decision. `tally` runs inside the transaction: keep it a pure function.
    pub async fn vote(
        &self,
        id: &str,
        vote: &Vote,
        now: u64,
        tally: impl FnOnce(&StoredRequest, &[Vote]) -> Option<DecisionRecord> + Send,
    ) -> Result<VoteResult, StoreError> {
        let turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE requests SET version = version + 1, updated_ms = $2 \
             WHERE id = $1 AND state = 'pending' AND decision IS NULL RETURNING {REQUEST_COLS}, version"
        ))
        .bind(id)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            drop(turn);
            return Err(self.why_not_votable(id).await?);
        };
        let mut request = request_from_row(&row)?;
        let seq: i64 = sqlx::Row::try_get(&row, "version")?;
        // DO NOTHING instead of catching the unique violation: an error would abort the
        // PostgreSQL transaction and its code differs per database; a count does not.
        let inserted = sqlx::query(
            "INSERT INTO votes (request_id, principal, seq, verdict, for_ms, deny_always, reason, via, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (request_id, principal) DO NOTHING",
        )
        .bind(id)
        .bind(&vote.principal)
        .bind(seq)
        .bind(release_name(vote.release))
        .bind(vote.for_ms.map(ms))
        .bind(i64::from(vote.always))
        .bind(vote.reason.as_deref())
        .bind(&vote.via)
        .bind(ms(vote.at_unix_ms))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Err(StoreError::AlreadyVoted {
                id: id.to_string(),
                principal: vote.principal.clone(),
            });
        }
        // The request's version counts the votes committed before this one (only votes bump it
        // while it is pending): the first vote needs no read of the others.
        request.votes = if seq == 1 {
            vec![vote.clone()]
        } else {
            votes_of(&mut tx, id).await?
        };
        let decided = tally(&request, &request.votes);
        if let Some(d) = &decided {
            sqlx::query("UPDATE requests SET decision = $2 WHERE id = $1")
                .bind(id)
                .bind(to_json(d))
                .execute(&mut *tx)
                .await?;
            request.decision = Some(d.clone());
        }
        let attempt = Attempt {
            at_unix_ms: vote.at_unix_ms,
            who: vote.principal.clone(),
            channel: vote.via.clone(),
            request_id: Some(id.to_string()),
            action: release_name(vote.release).to_string(),
            result: "OK".to_string(),
            message: if decided.is_some() {
                "decided"
            } else {
                "vote counted"
            }
            .to_string(),
        };
        insert_attempt(&mut tx, &attempt).await?;
        tx.commit().await?;
        Ok(VoteResult { request, decided })
    }

    /// Why request `id` took no vote: it does not exist, is closed, or is decided.
    async fn why_not_votable(&self, id: &str) -> Result<StoreError, StoreError> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT state, decision FROM requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => StoreError::NotFound { id: id.to_string() },
            Some((state, decision)) => {
                let state: airlock_approval::RequestState = from_name("state", id, &state)?;
                if state.is_closed() {
                    StoreError::Closed {
                        id: id.to_string(),
                        state: state.as_str().to_string(),
                    }
                } else if decision.is_some() {
                    StoreError::Closed {
                        id: id.to_string(),
                        state: "decided".to_string(),
                    }
                } else {
                    // Pending and undecided now, yet the UPDATE matched nothing: decisions and
                    // closed states never revert, so the request was opened after the vote's
                    // statement ran. As far as that vote is concerned it did not exist.
                    StoreError::NotFound { id: id.to_string() }
                }
            }
        })
    }
}

/// The `verdict` column's value: the serde name of [`Release`].
fn release_name(r: Release) -> &'static str {
    match r {
        Release::Allow => "allow",
        Release::Deny => "deny",
    }
}
