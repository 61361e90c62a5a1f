//! Storing a verified audit batch (`Store::store_audit_batch`): on SQLite its records in
//! multi-row INSERTs and its checkpoints, in one transaction after the counter that gives out
//! cursors (see `audit.rs` and migration 0004), one batch at a time. On PostgreSQL the
//! records go in by one COPY, and batches store side by side (`audit_copy.rs`, migration
//! 0006); `audit_order.rs` keeps one host's batches in chain order either way.
use std::fmt::Write as _;

use airlock_audit::{Anchor, Hash, ReadRecord, Record};
use serde_json::Value;
use sqlx::any::Any;

use super::audit::{cursor_in, head_on, reserve};
use super::audit_order::AuditTurn;
use super::{Store, StoreError, audit_copy, ms};

/// Most rows per INSERT statement: 1 + 1024 × 12 = 12289 parameters, under SQLite's limit
/// (32766 since 3.32). Fewer statements per batch mean fewer trips to sqlx's SQLite worker thread;
/// larger ones buy little more.
const INSERT_CHUNK: usize = 1024;
/// Columns of one row of `audit_records` (all but the cursor are parameters of an INSERT).
const ROW_PARAMS: usize = 13;

/// The columns of `audit_records` a batch fills, in the order of the INSERT's and the COPY's
/// rows (`audit_copy.rs`): the cursor last, as the INSERT computes it and the COPY fills it
/// in once the batch has its cursors.
pub(super) const RECORD_COLUMNS: &str = "host, seq, hash, kind, corr, at_ms, agent, op, \
     decision, approver, record, stored_ms, cursor";

/// Stores one verified checkpoint `($1 host, $2 size, $3 note, $4 stored_ms)`; one already
/// stored for its size is left as it is.
pub(super) const CHECKPOINT_SQL: &str = "INSERT INTO audit_checkpoints (host, size, note, stored_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (host, size) DO NOTHING";

/// A verified record, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditRecord {
    pub seq: u64,
    pub hash: Hash,
    pub kind: String,
    pub corr: Option<String>,
    pub at_unix_ms: u64,
    /// The body's top-level `agent`, `op`, `decision` and `approver` strings, for filters.
    pub agent: Option<String>,
    pub op: Option<String>,
    pub decision: Option<String>,
    pub approver: Option<String>,
    /// The canonical JSON the host sent.
    pub record: String,
}

impl NewAuditRecord {
    /// The row of `r`, whose canonical text is `text`.
    pub fn new(r: &Record, text: String) -> NewAuditRecord {
        // Best effort: a body without these fields (or with non-string ones) is stored all
        // the same and matches no filter on them.
        let field = |name: &str| match &r.body {
            Value::Object(m) => m
                .get(name)
                .and_then(Value::as_str)
                .map(|v| column_text(v.to_owned())),
            _ => None,
        };
        let [agent, op, decision, approver] = BODY_FIELDS.map(field);
        NewAuditRecord {
            seq: r.seq,
            hash: r.hash,
            agent,
            op,
            decision,
            approver,
            kind: r.kind.as_str().to_owned(),
            corr: r.corr.clone().map(column_text),
            at_unix_ms: r.at_unix_ms,
            record: text,
        }
    }
}

/// A string for a filter column: NUL becomes U+FFFD. PostgreSQL's TEXT cannot hold NUL, and
/// a batch refused for it would be refused again on every resend, so the host's spool would
/// never drain. Only the filter columns change; the record's canonical JSON (NUL escaped as
/// `\u0000`) is stored as sent and still verifies.
/// Takes the string by value: the collector's fast path moves each field in, and only the
/// rare one with a NUL is copied.
fn column_text(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

/// The body's top-level string fields kept in columns of their own, for filters, in the
/// order of [`NewAuditRecord::from_read`]'s `body_strings`.
pub const BODY_FIELDS: [&str; 4] = ["agent", "op", "decision", "approver"];

impl NewAuditRecord {
    /// The row of a record read by [`Record::read_canonical`] with [`BODY_FIELDS`], whose
    /// canonical text is `text`.
    pub fn from_read(r: ReadRecord, text: String) -> NewAuditRecord {
        let [agent, op, decision, approver] = <[Option<String>; 4]>::try_from(r.body_strings)
            .unwrap_or([None, None, None, None])
            .map(|f| f.map(column_text));
        NewAuditRecord {
            seq: r.seq,
            hash: r.hash,
            kind: r.kind.as_str().to_owned(),
            corr: r.corr.map(column_text),
            at_unix_ms: r.at_unix_ms,
            agent,
            op,
            decision,
            approver,
            record: text,
        }
    }
}

/// Rows in the next INSERT of a batch with `left` rows to go: [`INSERT_CHUNK`] while that
/// many remain, then the largest power of two that fits. Every statement is prepared once
/// per connection and kept in sqlx's statement cache, so only these 11 shapes ever exist
/// rather than one per batch length.
fn chunk_len(left: usize) -> usize {
    if left >= INSERT_CHUNK {
        INSERT_CHUNK
    } else {
        1 << left.ilog2()
    }
}

/// `INSERT INTO audit_records … SELECT … FROM (VALUES (…), …)` for `rows` rows, for SQLite.
///
/// A row's cursor is not a parameter: it is the records counter, as the transaction's
/// reservation left it, plus a parameter bound first (the chunk's place in the batch, less
/// the batch's length) plus the row's place in the chunk (a literal of each VALUES row). So
/// a batch's statements are bound before its turn to write comes, while the batch ahead of
/// it commits, and the database's one writer does not wait for a row's parameters being
/// bound. The counter's scalar subquery is evaluated once per statement.
///
/// Anonymous `?` parameters, not the `$N` of every other query here: SQLite keeps
/// named parameters (`$N` is one) in a list it searches linearly, both when it prepares the
/// statement and when sqlx asks each parameter's name to bind it, so a statement of thousands
/// of `$N` costs quadratic time (that search was a third of the collector's CPU time).
/// Anonymous parameters are numbered in order without a name.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(320 + rows * (ROW_PARAMS * 3 + 8));
    let _ = write!(sql, "INSERT INTO audit_records ({RECORD_COLUMNS}) SELECT ");
    for j in 1..ROW_PARAMS {
        let _ = write!(sql, "column{j}, ");
    }
    let _ = write!(
        sql,
        "(SELECT value FROM audit_counters WHERE name = 'records') + ? + column{ROW_PARAMS} FROM (VALUES "
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for _ in 1..ROW_PARAMS {
            sql.push_str("?, ");
        }
        let _ = write!(sql, "{i})");
    }
    sql.push(')');
    sql
}

/// Binds the parameters of `r`'s row in [`insert_sql`], all but its cursor.
fn bind_row<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    host: &'q str,
    r: &'q NewAuditRecord,
    stored_ms: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    q.bind(host)
        .bind(ms(r.seq))
        .bind(r.hash.to_string())
        .bind(r.kind.as_str())
        .bind(r.corr.as_deref())
        .bind(ms(r.at_unix_ms))
        .bind(r.agent.as_deref())
        .bind(r.op.as_deref())
        .bind(r.decision.as_deref())
        .bind(r.approver.as_deref())
        .bind(r.record.as_str())
        .bind(stored_ms)
}

/// The INSERTs of `records` (see [`insert_sql`]), bound but for nothing.
fn bound_inserts<'q>(
    sqls: &'q [(String, &'q [NewAuditRecord])],
    host: &'q str,
    stored_ms: i64,
    total: usize,
) -> Vec<sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>> {
    let mut offset = 0;
    sqls.iter()
        .map(|(sql, chunk)| {
            // The counter ends at the batch's last cursor: row i of this chunk is number
            // offset + i of the batch, whose cursor is end - (total - 1) + offset + i.
            let delta = cursor_in(offset as u64) - cursor_in(total as u64) + 1;
            let mut q = sqlx::query::<Any>(sql).bind(delta);
            for r in *chunk {
                q = bind_row(q, host, r, stored_ms);
            }
            offset += chunk.len();
            q
        })
        .collect()
}

impl Store {
    /// Stores a verified batch of `host`'s records (continuing `expected`, the head they were
    /// verified against) and its verified checkpoints `(size, note)`, in ONE transaction:
    /// all of it or nothing. Returns the new head.
    ///
    /// [`StoreError::AuditHeadMoved`] when the stored head is no longer `expected` (another
    /// stream of the host stored a batch meanwhile): nothing stored, verify again. A
    /// checkpoint already stored for its size is left as it is. A record already stored
    /// fails the whole batch (a unique violation), on either database: the collector skips
    /// those before it stores a batch.
    ///
    /// SQLite gets multi-row INSERTs in one transaction; PostgreSQL a reservation, then the
    /// records in one binary COPY (`audit_copy.rs`).
    pub async fn store_audit_batch(
        &self,
        host: &str,
        expected: Anchor,
        records: &[NewAuditRecord],
        checkpoints: &[(u64, String)],
        now: u64,
    ) -> Result<Anchor, StoreError> {
        let (turn, _) = AuditTurn::first();
        self.store_audit_batch_in_turn(host, expected, records, checkpoints, now, turn)
            .await
    }

    /// [`Store::store_audit_batch`] for a batch whose store may start before the one ahead
    /// of it (the same host's previous batch, which it continues) has committed: `turn`
    /// orders the two (see `audit_order.rs`). On PostgreSQL their records are copied side by
    /// side; on SQLite this one starts once the one ahead has ended. When the one ahead
    /// failed, nothing of this one is stored ([`StoreError::AuditAheadFailed`]).
    pub async fn store_audit_batch_in_turn(
        &self,
        host: &str,
        expected: Anchor,
        records: &[NewAuditRecord],
        checkpoints: &[(u64, String)],
        now: u64,
        mut turn: AuditTurn,
    ) -> Result<Anchor, StoreError> {
        if let Some(copy) = &self.copy {
            // PostgreSQL: reserved apart, then one COPY of the records (`audit_copy.rs`).
            return audit_copy::store_batch(
                copy,
                &self.pool,
                host,
                expected,
                records,
                checkpoints,
                now,
                turn,
            )
            .await;
        }
        // Made and bound before this batch's turn to write comes (see `insert_sql`).
        let mut chunks = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(chunk_len(rest.len()));
            chunks.push((insert_sql(chunk.len()), chunk));
            rest = after;
        }
        let inserts = bound_inserts(&chunks, host, ms(now), records.len());
        turn.ahead_committed(host).await?;
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        reserve(&mut tx, "records", records.len()).await?;
        let found = head_on(&mut tx, host).await?;
        if found != expected {
            tx.rollback().await?;
            return Err(StoreError::AuditHeadMoved {
                host: host.to_string(),
                expected: expected.seq,
                found: found.seq,
            });
        }
        for q in inserts {
            q.execute(&mut *tx).await?;
        }
        for (size, note) in checkpoints {
            sqlx::query(CHECKPOINT_SQL)
                .bind(host)
                .bind(ms(*size))
                .bind(note.as_str())
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        turn.committed();
        Ok(records.last().map_or(expected, |r| Anchor {
            seq: r.seq,
            hash: r.hash,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_statement_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for n in 1..=4096 {
            let (mut left, mut parts) = (n, 0);
            while left > 0 {
                let c = chunk_len(left);
                assert!(c <= left && c <= INSERT_CHUNK);
                shapes.insert(c);
                left -= c;
                parts += 1;
            }
            assert!(parts <= 4 + 10, "{n} rows in {parts} statements");
        }
        assert_eq!(shapes.len(), 11);
    }

    #[test]
    fn insert_statements_have_anonymous_parameters() {
        let sql = insert_sql(3);
        // One for the chunk's place in the batch, then all but the cursor of each row.
        assert_eq!(sql.matches('?').count(), 1 + 3 * (ROW_PARAMS - 1));
        assert!(!sql.contains('$'));
        assert!(sql.starts_with("INSERT INTO audit_records (host, seq,"));
        assert!(sql.ends_with(", ?, 2))"), "{sql}");
    }
}
