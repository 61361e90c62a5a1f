//! Voting: the one place where a decision is made, in one transaction.
use airlock_approval::{DecisionRecord, Release, Vote};

use super::attempts::insert_attempt;
use super::requests::{REQUEST_COLS, request_from_row, votes_of};
use super::{
    Attempt, DbKind, Store, StoreError, StoredRequest, VoteResult, from_name, ms, ms_out, to_json,
};

impl Store {
    /// Casts `vote` on request `id` and, when `tally` says the votes so far decide it, stores
    /// the decision, all in ONE transaction:
    ///
    /// 1. `UPDATE requests SET version = version + 1 … WHERE id = $1 AND state = 'pending' AND
    ///    decision IS NULL`: this first write serialises concurrent voters, also across
    ///    replicas (PostgreSQL: the row lock, and a waiter re-checks the WHERE against the
    ///    committed row; SQLite: the database write lock). When the request had no votes
    ///    yet (version 0), the same statement stores `tally(&[vote])`, the decision this vote
    ///    makes alone (threshold 1, or a deny). With `token`, the statement also requires
    ///    that API token to be unrevoked and unexpired at `now`, so a token revoked in another
    ///    process cannot vote even while a replica still remembers it as valid. No row →
    ///    [`StoreError::TokenRevoked`], [`StoreError::TokenExpired`],
    ///    [`StoreError::NotFound`] or [`StoreError::Closed`] (state `decided` for a decided
    ///    request its host has not closed yet).
    /// 2. Insert the vote; one per (request, principal), else [`StoreError::AlreadyVoted`]
    ///    and nothing changed.
    /// 3. Earlier votes only: read every vote, call `tally(&votes)`; `Some(decision)` is
    ///    stored on the request.
    /// 4. Record the accepted attempt (who, channel, "allow"/"deny", "decided" or "vote
    ///    counted"): it commits with the vote or not at all.
    ///
    /// On PostgreSQL, a request's first vote does all of this in one statement instead (see
    /// [`Store::first_vote_pg`]); the transaction runs when that statement matched nothing.
    ///
    /// Returns the request with its votes (and decision), and `decided` when this vote made
    /// the decision. `tally` may run twice (on this vote alone before the transaction, and on
    /// every vote inside it): keep it a pure function of the votes.
    pub async fn vote(
        &self,
        id: &str,
        vote: &Vote,
        token: Option<&str>,
        now: u64,
        tally: impl Fn(&[Vote]) -> Option<DecisionRecord> + Send,
    ) -> Result<VoteResult, StoreError> {
        let alone = tally(std::slice::from_ref(vote));
        if self.kind == DbKind::Postgres
            && let Some(request) = self.first_vote_pg(id, vote, token, now, &alone).await?
        {
            return Ok(VoteResult {
                request,
                decided: alone,
            });
        }
        let token_ok = if token.is_some() {
            " AND EXISTS (SELECT 1 FROM api_tokens WHERE id = $4 AND revoked_ms IS NULL \
             AND expires_ms > $2)"
        } else {
            ""
        };
        let turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        // SET expressions read the row as it was: `version = 0` means no vote before this one.
        let sql = format!(
            "UPDATE requests SET version = version + 1, updated_ms = $2, \
             decision = CASE WHEN version = 0 THEN $3 ELSE decision END \
             WHERE id = $1 AND state = 'pending' AND decision IS NULL{token_ok} \
             RETURNING {REQUEST_COLS}, version"
        );
        let mut update = sqlx::query(&sql)
            .bind(id)
            .bind(ms(now))
            .bind(alone.as_ref().map(to_json));
        // Bound only when the statement names it: PostgreSQL refuses extra parameters.
        if let Some(t) = token {
            update = update.bind(t);
        }
        let row = update.fetch_optional(&mut *tx).await?;
        let Some(row) = row else {
            tx.rollback().await?;
            drop(turn);
            return Err(self.why_not_votable(id, token, now).await?);
        };
        let mut request = request_from_row(&row)?;
        let seq: i64 = sqlx::Row::try_get(&row, "version")?;
        // DO NOTHING instead of catching the unique violation: an error would abort the
        // PostgreSQL transaction and its code differs per database; a count does not.
        let insert = sqlx::query(
            "INSERT INTO votes (request_id, seq, principal, verdict, for_ms, deny_always, reason, via, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (request_id, principal) DO NOTHING",
        );
        let inserted = bind_vote(insert.bind(id).bind(seq), vote)
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
        // while it is pending). The first vote needs no read of the others, and its decision,
        // if it makes one alone, was stored by the UPDATE above.
        let decided = if seq == 1 {
            request.votes = vec![vote.clone()];
            alone
        } else {
            request.votes = votes_of(&mut tx, id).await?;
            let decided = tally(&request.votes);
            if let Some(d) = &decided {
                sqlx::query("UPDATE requests SET decision = $2 WHERE id = $1")
                    .bind(id)
                    .bind(to_json(d))
                    .execute(&mut *tx)
                    .await?;
                request.decision = Some(d.clone());
            }
            decided
        };
        let attempt = Attempt {
            at_unix_ms: vote.at_unix_ms,
            who: vote.principal.clone(),
            channel: vote.via.clone(),
            request_id: Some(id.to_string()),
            action: release_name(vote.release).to_string(),
            result: "OK".to_string(),
            message: attempt_message(decided.is_some()).to_string(),
        };
        insert_attempt(&mut tx, &attempt).await?;
        tx.commit().await?;
        Ok(VoteResult { request, decided })
    }

    /// PostgreSQL, the first vote on a request (its version is 0): the whole of [`Store::vote`]
    /// for that case in ONE statement, so one round trip to the database instead of five
    /// (BEGIN, the update, the vote, the attempt, COMMIT), each of which cost 0.1 to 0.2 ms
    /// on loopback, on the way from a request to its decision. A statement is a transaction
    /// of its own (committed durably: this is the durable pool), and PostgreSQL runs every
    /// data-modifying part of a `WITH` to completion on one snapshot, or none of it.
    ///
    /// The update requires `version = 0` besides everything [`Store::vote`]'s update
    /// requires. A concurrent voter that changed the row first (the row lock serialises them;
    /// the waiter re-checks the WHERE against the committed row) leaves it at version 1 or
    /// decided, so this matches nothing. `None` then, and for every other case this does not
    /// cover (later votes, refusals): nothing changed, and [`Store::vote`] runs its
    /// transaction, which tallies the votes or finds why the vote is refused.
    ///
    /// Version 0 means no vote is stored, so the insert of the vote cannot conflict; if it
    /// did, the statement would fail whole and change nothing.
    async fn first_vote_pg(
        &self,
        id: &str,
        vote: &Vote,
        token: Option<&str>,
        now: u64,
        alone: &Option<DecisionRecord>,
    ) -> Result<Option<StoredRequest>, StoreError> {
        let token_ok = if token.is_some() {
            " AND EXISTS (SELECT 1 FROM api_tokens WHERE id = $12 AND revoked_ms IS NULL \
             AND expires_ms > $2)"
        } else {
            ""
        };
        let sql = format!(
            "WITH u AS (UPDATE requests SET version = 1, updated_ms = $2, decision = $3 \
             WHERE id = $1 AND state = 'pending' AND decision IS NULL AND version = 0{token_ok} \
             RETURNING {REQUEST_COLS}, version), \
             v AS (INSERT INTO votes (request_id, principal, seq, verdict, for_ms, deny_always, \
             reason, via, at_ms) SELECT u.id, $4, u.version, $5, $6, $7, $8, $9, $10 FROM u), \
             a AS (INSERT INTO attempts (seq, at_ms, who, channel, request_id, action, result, \
             message) SELECT (SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts), $10, $4, $9, u.id, \
             $5, 'OK', $11 FROM u) \
             SELECT * FROM u"
        );
        let q = sqlx::query(&sql)
            .bind(id)
            .bind(ms(now))
            .bind(alone.as_ref().map(to_json));
        let mut q = bind_vote(q, vote).bind(attempt_message(alone.is_some()));
        // Bound only when the statement names it: PostgreSQL refuses extra parameters.
        if let Some(t) = token {
            q = q.bind(t);
        }
        let Some(row) = q.fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let mut request = request_from_row(&row)?;
        request.votes = vec![vote.clone()];
        Ok(Some(request))
    }

    /// Why request `id` took no vote (through `token`, when given): the token is revoked or
    /// expired, or the request does not exist, is closed, or is decided.
    async fn why_not_votable(
        &self,
        id: &str,
        token: Option<&str>,
        now: u64,
    ) -> Result<StoreError, StoreError> {
        if let Some(token) = token {
            // The caller's credential first: a revoked token learns nothing about requests.
            let row: Option<(Option<i64>, i64)> =
                sqlx::query_as("SELECT revoked_ms, expires_ms FROM api_tokens WHERE id = $1")
                    .bind(token)
                    .fetch_optional(&self.pool)
                    .await?;
            let token = token.to_string();
            match row {
                // Tokens are never deleted; a missing one is refused like a revoked one.
                None | Some((Some(_), _)) => return Ok(StoreError::TokenRevoked { token }),
                Some((None, expires)) if now >= ms_out(expires) => {
                    return Ok(StoreError::TokenExpired { token });
                }
                Some(_) => {}
            }
        }
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

/// Binds the next seven parameters to `vote`'s columns, in this order: principal, verdict,
/// for_ms, deny_always, reason, via, at_ms.
fn bind_vote<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    vote: &'q Vote,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(&vote.principal)
        .bind(release_name(vote.release))
        .bind(vote.for_ms.map(ms))
        .bind(i64::from(vote.always))
        .bind(vote.reason.as_deref())
        .bind(&vote.via)
        .bind(ms(vote.at_unix_ms))
}

/// The recorded message of an accepted vote.
fn attempt_message(decided: bool) -> &'static str {
    if decided { "decided" } else { "vote counted" }
}

/// The `verdict` column's value: the serde name of [`Release`].
fn release_name(r: Release) -> &'static str {
    match r {
        Release::Allow => "allow",
        Release::Deny => "deny",
    }
}
