//! Requests: opened by hosts, listed, read with their votes, closed by the host's outcome.
use airlock_approval::{DecisionRecord, RequestState, Vote};
use sqlx::any::{Any, AnyRow};
use sqlx::{AnyConnection, Row};

use super::{
    CloseResult, RequestFilter, Store, StoreError, StoredRequest, Upserted, from_json, from_name,
    ms, ms_out, to_json,
};

/// The request columns [`request_from_row`] reads (also usable in `RETURNING`).
pub(super) const REQUEST_COLS: &str =
    "id, host, agent, state, created_ms, deadline_ms, route, threshold, body, decision, updated_ms";

/// The vote columns [`vote_from_row`] reads. None of them is also a request column, so a join
/// of both can be read by column name.
pub(super) const VOTE_COLS: &str = "principal, verdict, for_ms, deny_always, reason, via, at_ms";

/// A parameter of a query assembled at run time.
enum Arg {
    Text(String),
    Int(i64),
}

/// Reads a request row; `votes` is left empty.
pub(super) fn request_from_row(row: &AnyRow) -> Result<StoredRequest, StoreError> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let body: String = row.try_get("body")?;
    let decision: Option<String> = row.try_get("decision")?;
    let threshold: i64 = row.try_get("threshold")?;
    Ok(StoredRequest {
        host: row.try_get("host")?,
        agent: row.try_get("agent")?,
        state: from_name("state", &id, &state)?,
        created_unix_ms: ms_out(row.try_get("created_ms")?),
        deadline_unix_ms: ms_out(row.try_get("deadline_ms")?),
        route: row.try_get("route")?,
        threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
        body,
        decision: decision
            .map(|d| from_json::<DecisionRecord>("decision", &id, &d))
            .transpose()?,
        votes: Vec::new(),
        updated_unix_ms: ms_out(row.try_get("updated_ms")?),
        id,
    })
}

/// Reads a vote row, or `None` for the all-NULL side of a LEFT JOIN (a request without votes).
pub(super) fn vote_from_row(row: &AnyRow, request_id: &str) -> Result<Option<Vote>, StoreError> {
    let Some(principal) = row.try_get::<Option<String>, _>("principal")? else {
        return Ok(None);
    };
    let verdict: String = row.try_get("verdict")?;
    let for_ms: Option<i64> = row.try_get("for_ms")?;
    let always: i64 = row.try_get("deny_always")?;
    Ok(Some(Vote {
        principal,
        release: from_name("vote", request_id, &verdict)?,
        for_ms: for_ms.map(ms_out),
        always: always != 0,
        reason: row.try_get("reason")?,
        via: row.try_get("via")?,
        at_unix_ms: ms_out(row.try_get("at_ms")?),
    }))
}

/// The SELECT of [`select_requests`]: requests matching `cond` (a WHERE clause over
/// `requests`, or empty), oldest first, at most `limit` (a parameter number), joined with
/// their votes.
#[cfg(test)]
fn select_sql(cond: &str, limit: Option<usize>) -> String {
    select_sql_ordered(cond, limit, "")
}

/// [`select_sql`] with the requests in `dir` order of creation (`""` or `" DESC"`).
fn select_sql_ordered(cond: &str, limit: Option<usize>, dir: &str) -> String {
    let limit = limit.map(|n| format!(" LIMIT ${n}")).unwrap_or_default();
    format!(
        "SELECT r.*, v.principal, v.verdict, v.for_ms, v.deny_always, v.reason, v.via, v.at_ms \
         FROM (SELECT {REQUEST_COLS} FROM requests {cond} ORDER BY created_ms{dir}, id{dir}{limit}) r \
         LEFT JOIN votes v ON v.request_id = r.id \
         ORDER BY r.created_ms{dir}, r.id{dir}, v.seq"
    )
}

/// The WHERE clause and parameters of a [`RequestFilter`]. `decided_undelivered` is spelled
/// literally, not as parameters, so that SQLite (which only uses a partial index when the
/// query's terms match the index's) and PostgreSQL use `requests_undelivered`: the link polls
/// it per host, several times a second.
fn filter_sql(f: &RequestFilter) -> (String, Vec<Arg>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args = Vec::new();
    if let Some(h) = &f.host {
        args.push(Arg::Text(h.clone()));
        conds.push(format!("host = ${}", args.len()));
    }
    if let Some(a) = &f.agent {
        args.push(Arg::Text(a.clone()));
        conds.push(format!("agent = ${}", args.len()));
    }
    if let Some(s) = f.state {
        args.push(Arg::Text(s.as_str().to_string()));
        conds.push(format!("state = ${}", args.len()));
    }
    if f.decided_undelivered {
        conds.push("state = 'pending' AND decision IS NOT NULL".to_string());
    }
    let cond = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (cond, args)
}

/// The SQL and parameters [`Store::list_requests`] runs (for the query-plan test).
#[cfg(test)]
pub(super) fn list_sql(f: &RequestFilter) -> (String, Vec<String>) {
    let (cond, mut args) = filter_sql(f);
    let limit = f.limit.map(|n| {
        args.push(Arg::Int(i64::from(n)));
        args.len()
    });
    let shown = args
        .into_iter()
        .map(|a| match a {
            Arg::Text(s) => s,
            Arg::Int(i) => i.to_string(),
        })
        .collect();
    (select_sql(&cond, limit), shown)
}

/// Requests matching `cond` (see [`select_sql`]) with their votes: ONE statement (the
/// limited request query joined with the votes), so a page costs the same whatever its
/// number of votes, and requests and votes come from one snapshot.
async fn select_requests(
    conn: &mut AnyConnection,
    cond: &str,
    args: Vec<Arg>,
    limit: Option<u32>,
) -> Result<Vec<StoredRequest>, StoreError> {
    select_requests_ordered(conn, cond, args, limit, "").await
}

/// [`select_requests`] in `dir` order of creation (`""` or `" DESC"`).
async fn select_requests_ordered(
    conn: &mut AnyConnection,
    cond: &str,
    mut args: Vec<Arg>,
    limit: Option<u32>,
    dir: &str,
) -> Result<Vec<StoredRequest>, StoreError> {
    let limit = limit.map(|n| {
        args.push(Arg::Int(i64::from(n)));
        args.len()
    });
    let sql = select_sql_ordered(cond, limit, dir);
    let mut q = sqlx::query::<Any>(&sql);
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s),
            Arg::Int(i) => q.bind(i),
        };
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut out: Vec<StoredRequest> = Vec::new();
    for row in &rows {
        let id: String = row.try_get("id")?;
        if out.last().is_none_or(|r| r.id != id) {
            out.push(request_from_row(row)?);
        }
        let cur = out.last_mut().expect("pushed above");
        if let Some(v) = vote_from_row(row, &id)? {
            cur.votes.push(v);
        }
    }
    Ok(out)
}

impl Store {
    /// Insert if the id is new ([`Upserted::New`]). Same id from the same host: nothing
    /// changes, returns [`Upserted::Existing`] with the current row (hosts re-send pending
    /// requests after every reconnect). Same id from another host:
    /// [`StoreError::OtherHost`], nothing changes. `r.votes` is not stored (votes come
    /// through [`Store::vote`]).
    pub async fn upsert_opened(&self, r: &StoredRequest) -> Result<Upserted, StoreError> {
        let inserted = {
            let _turn = self.write_turn().await;
            // ON CONFLICT DO NOTHING makes "is it new?" and the insert one atomic statement,
            // so two replicas receiving the same re-sent request cannot both insert it.
            sqlx::query(&format!(
                "INSERT INTO requests ({REQUEST_COLS}, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0) ON CONFLICT (id) DO NOTHING"
            ))
            .bind(&r.id)
            .bind(&r.host)
            .bind(r.agent.as_deref())
            .bind(r.state.as_str())
            .bind(ms(r.created_unix_ms))
            .bind(ms(r.deadline_unix_ms))
            .bind(r.route.as_deref())
            .bind(i64::from(r.threshold))
            .bind(&r.body)
            .bind(r.decision.as_ref().map(to_json))
            .bind(ms(r.updated_unix_ms))
            // Relaxed durability: the host re-sends it if it is lost (see `Store::relaxed`).
            .execute(&self.relaxed)
            .await?
            .rows_affected()
                == 1
        };
        if inserted {
            return Ok(Upserted::New);
        }
        // Rows are never deleted, so the conflicting row is still there.
        let cur = self
            .request(&r.id)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: r.id.clone() })?;
        if cur.host != r.host {
            return Err(StoreError::OtherHost { id: r.id.clone() });
        }
        Ok(Upserted::Existing(cur))
    }

    /// One request with its votes.
    pub async fn request(&self, id: &str) -> Result<Option<StoredRequest>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut found = select_requests(
            &mut conn,
            "WHERE id = $1",
            vec![Arg::Text(id.to_string())],
            None,
        )
        .await?;
        Ok(found.pop())
    }

    /// Recent requests, newest first, at most `limit`: `f`'s filters, and when `approver` is
    /// given only requests that principal voted on (the web page's history).
    pub async fn recent_requests(
        &self,
        f: &RequestFilter,
        approver: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        let (mut cond, mut args) = filter_sql(f);
        if let Some(p) = approver {
            args.push(Arg::Text(p.to_string()));
            let voted = format!(
                "EXISTS (SELECT 1 FROM votes WHERE votes.request_id = requests.id AND votes.principal = ${})",
                args.len()
            );
            cond = if cond.is_empty() {
                format!("WHERE {voted}")
            } else {
                format!("{cond} AND {voted}")
            };
        }
        let mut conn = self.pool.acquire().await?;
        select_requests_ordered(&mut conn, &cond, args, Some(limit), " DESC").await
    }

    /// Requests matching every filter given, oldest first (created, id), with their votes.
    pub async fn list_requests(&self, f: &RequestFilter) -> Result<Vec<StoredRequest>, StoreError> {
        let (cond, args) = filter_sql(f);
        let mut conn = self.pool.acquire().await?;
        select_requests(&mut conn, &cond, args, f.limit).await
    }

    /// The host's outcome: sets the state and, when given, the decision record as the host
    /// applied it (which may be a break-glass or timeout record, and then replaces the
    /// server's; without one, the server's decision, if any, stays).
    ///
    /// Idempotent: closing again to the same state is Ok and changes nothing
    /// ([`CloseResult::changed`] false; hosts re-send outcomes they are unsure were received).
    /// Errors: [`StoreError::NotFound`]; [`StoreError::OtherHost`] (another host's id);
    /// [`StoreError::Closed`] when it is already closed to another state (closed states are
    /// final); [`StoreError::NotAnOutcome`] for `state` pending.
    ///
    /// The outcome commits on the durable pool, never the relaxed one: it is on disk when
    /// this returns, so the `Closed` change published after it keeps the README's promise
    /// that outcomes are committed to disk before anyone is told.
    pub async fn close(
        &self,
        id: &str,
        host: &str,
        state: RequestState,
        decision: Option<&DecisionRecord>,
        now: u64,
    ) -> Result<CloseResult, StoreError> {
        if !state.is_closed() {
            return Err(StoreError::NotAnOutcome { id: id.to_string() });
        }
        let row = {
            let _turn = self.write_turn().await;
            // Only a pending row of this host changes, and it comes back in the same round
            // trip; every other case is sorted out below from what is stored (a closed state
            // never changes again, so that read is stable).
            sqlx::query(&format!(
                "UPDATE requests SET state = $3, decision = COALESCE($4, decision), updated_ms = $5, \
                 version = version + 1 WHERE id = $1 AND host = $2 AND state = 'pending' \
                 RETURNING {REQUEST_COLS}, version"
            ))
            .bind(id)
            .bind(host)
            .bind(state.as_str())
            .bind(decision.map(to_json))
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await?
        };
        if let Some(row) = row {
            let mut request = request_from_row(&row)?;
            // While pending, only votes bump the version; this close bumped it once more. No
            // votes (break-glass, timeout, no route): nothing more to read. The votes of a
            // closed request never change, so reading them after the commit is exact.
            let version: i64 = row.try_get("version")?;
            if version > 1 {
                let mut conn = self.pool.acquire().await?;
                request.votes = votes_of(&mut conn, id).await?;
            }
            return Ok(CloseResult {
                request,
                changed: true,
            });
        }
        let cur = self
            .request(id)
            .await?
            .ok_or_else(|| StoreError::NotFound { id: id.to_string() })?;
        if cur.host != host {
            return Err(StoreError::OtherHost { id: id.to_string() });
        }
        if cur.state != state {
            return Err(StoreError::Closed {
                id: id.to_string(),
                state: cur.state.as_str().to_string(),
            });
        }
        Ok(CloseResult {
            request: cur,
            changed: false,
        })
    }
}

/// Reads every vote of one request, in the order they were cast.
pub(super) async fn votes_of(conn: &mut AnyConnection, id: &str) -> Result<Vec<Vote>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {VOTE_COLS} FROM votes WHERE request_id = $1 ORDER BY seq"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut votes = Vec::with_capacity(rows.len());
    for row in &rows {
        votes.extend(vote_from_row(row, id)?);
    }
    Ok(votes)
}
