//! PostgreSQL only: storing a verified audit batch with `COPY audit_records (…) FROM STDIN`
//! (binary format) instead of `audit_batch.rs`'s multi-row INSERTs, in two transactions so
//! that batches store side by side.
//!
//! COPY: for an INSERT PostgreSQL parses and binds 13 parameters per row; COPY reads the rows
//! as one stream, in the binary format without any text to parse or escape. On a 2-core VM
//! that stored a batch of 4096 records 20–30 % faster (COPY's text format was no faster than
//! the INSERTs). sqlx's Any driver cannot run COPY, so this runs on the store's small native
//! pool (`Store::copy`).
//!
//! Two transactions (migration 0006): the batch's own transaction learns its id; a short one
//! beside it reserves the batch's cursors, records the reservation with that id, and commits
//! at once; the batch's transaction then copies the records, waits for the batch ahead of it
//! (`audit_order.rs`), checks the stored head, adds the checkpoints, deletes the reservation
//! and commits durably (the server's `synchronous_commit`) before the caller acks. The counter row is held for the reservation only, so a host's next batch (and other
//! hosts' batches) copy their records while one commits; a single PostgreSQL backend copying
//! 4096 indexed rows was the collector's bottleneck. Readers stay below the lowest open
//! reservation (`Store::audit_records`), so none skips a record that commits later with a
//! smaller cursor. All or nothing: a record already stored fails the COPY with a unique
//! violation (the collector skips those it has before it stores a batch), and the batch is
//! rolled back, as on SQLite.
use std::time::Duration;

use airlock_audit::Anchor;
use sqlx::postgres::{PgConnection, PgPool};

use super::audit::{
    LAST_RECORD_BELOW_SQL, PRUNED_ANCHOR_SQL, RESERVE_SQL, cursor_in, first_reserved, head_of,
};
use super::audit_batch::{CHECKPOINT_SQL, NewAuditRecord, RECORD_COLUMNS};
use super::audit_order::AuditTurn;
use super::open::pool_options;
use super::{StoreError, ms};

/// Connections of the COPY pool: a host's batch storing while the next one copies its records
/// beside it (see `audit_order.rs`), and another host's batch.
const COPY_POOL: u32 = 4;

/// The longest a batch's store may take from its reservation to its commit; it is rolled back
/// past that ([`StoreError::AuditStoreTimeout`]): readers wait below an open reservation, so
/// a batch stuck (on a lock, a stalled database) must not hold them for longer.
pub(super) const STORE_TIMEOUT: Duration = Duration::from_secs(120);

/// Columns of a row: [`RECORD_COLUMNS`].
const COLUMNS: i16 = 13;

/// The binary COPY format's header: signature, flags (no OIDs), no header extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY format's trailer: a field count of -1.
const BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Adds a reservation (`$1` its first cursor, `$2` the host, `$3` the storing transaction's
/// id) to `audit_pending`.
const PENDING_SQL: &str = "INSERT INTO audit_pending (first_cursor, host, xid) VALUES ($1, $2, $3)";
/// The transaction's id (assigned now if it has none yet), as a BIGINT.
const XID_SQL: &str = "SELECT pg_current_xact_id()::text::bigint";
/// Deletes the reservation whose first cursor is `$1`.
const UNPENDING_SQL: &str = "DELETE FROM audit_pending WHERE first_cursor = $1";

/// Opens the COPY pool on `url` (a PostgreSQL URL).
pub(super) async fn open_pool(url: &str) -> Result<PgPool, StoreError> {
    Ok(pool_options::<sqlx::Postgres>(COPY_POOL)
        .connect(url)
        .await?)
}

/// `Store::store_audit_batch_in_turn` on PostgreSQL (see migration 0006). The batch's
/// transaction (`pool`, the native COPY pool) learns its id; a short transaction of its own
/// on the store's `any` pool reserves the cursors and records the reservation with that id,
/// and commits at once; the batch's transaction then copies the records, waits for the batch
/// ahead of it to commit, checks the stored head, adds the checkpoints, deletes the
/// reservation and commits (durably) before the caller acks. So the batches of one host, and
/// those of other hosts, copy their records side by side: the counter row is held only for
/// the reservation, not through a batch's copy and commit. (The reservation uses the other
/// pool so that batches holding every COPY connection never wait for one another's.)
/// All or nothing: a record already stored fails the COPY with a unique violation (the
/// collector skips those it has before it stores a batch), and the batch is rolled back.
#[allow(clippy::too_many_arguments)]
pub(super) async fn store_batch(
    pool: &PgPool,
    any: &sqlx::AnyPool,
    host: &str,
    expected: Anchor,
    records: &[NewAuditRecord],
    checkpoints: &[(u64, String)],
    now: u64,
    mut turn: AuditTurn,
) -> Result<Anchor, StoreError> {
    // Encoded before anything waits; the cursors are written in once reserved.
    let rows = BinaryRows::new(host, records, now)?;
    turn.ahead_reserved(host).await?;
    let mut tx = pool.begin().await?;
    let first = match records.len() {
        0 => None,
        n => {
            let (xid,): (i64,) = sqlx::query_as(XID_SQL).fetch_one(&mut *tx).await?;
            Some(reserve(any, host, n, xid).await?)
        }
    };
    turn.reserved();
    let batch = Batch {
        host,
        expected,
        below: records.first().map_or(expected.seq + 1, |r| r.seq),
        checkpoints,
        now,
    };
    let stored = tokio::time::timeout(STORE_TIMEOUT, batch.store(tx, rows, first, &mut turn))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::AuditStoreTimeout {
                host: host.to_string(),
                seconds: STORE_TIMEOUT.as_secs(),
            })
        });
    match &stored {
        Ok(_) => turn.committed(),
        Err(_) => {
            if let Some(first) = first {
                // Readers already ignore it (its transaction ended); only tidying up.
                if let Err(e) = sqlx::query(UNPENDING_SQL)
                    .bind(cursor_in(first))
                    .execute(any)
                    .await
                {
                    tracing::debug!(host, first_cursor = first, error = %e,
                        "deleting a failed audit batch's reservation failed; retention deletes it");
                }
            }
        }
    }
    stored.map(|()| {
        records.last().map_or(expected, |r| Anchor {
            seq: r.seq,
            hash: r.hash,
        })
    })
}

/// Reserves `n` cursors for `host`'s batch stored by transaction `xid` and records the
/// reservation, in a transaction of its own; returns the first cursor.
async fn reserve(any: &sqlx::AnyPool, host: &str, n: usize, xid: i64) -> Result<u64, StoreError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let mut tx = any.begin().await?;
    // Not waiting for the disk loses nothing: records with these cursors are stored only by
    // a later durable commit, which flushes the log up to and past this one.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let (end,): (i64,) = sqlx::query_as(RESERVE_SQL)
        .bind(n)
        .bind("records")
        .fetch_one(&mut *tx)
        .await?;
    let first = first_reserved(end, n);
    sqlx::query(PENDING_SQL)
        .bind(cursor_in(first))
        .bind(host)
        .bind(xid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(first)
}

/// What a batch's second transaction stores beside its records.
struct Batch<'a> {
    host: &'a str,
    /// The head the batch was verified against.
    expected: Anchor,
    /// The seq of its first record (without records: right after `expected`).
    below: u64,
    checkpoints: &'a [(u64, String)],
    now: u64,
}

impl Batch<'_> {
    /// The rest of the batch's transaction `tx`: rows numbered from `first` (None: no
    /// records).
    async fn store(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        rows: BinaryRows,
        first: Option<u64>,
        turn: &mut AuditTurn,
    ) -> Result<(), StoreError> {
        let host = self.host;
        if let Some(first) = first {
            let sql =
                format!("COPY audit_records ({RECORD_COLUMNS}) FROM STDIN WITH (FORMAT binary)");
            let mut copy = tx.copy_in_raw(&sql).await?;
            if let Err(e) = copy.send(rows.numbered(first)).await.map(|_| ()) {
                // The connection is most likely gone; if not, this takes it out of COPY mode
                // (the transaction is rolled back when dropped). Its own error adds nothing.
                let _ = copy.abort("sending the audit batch failed").await;
                return Err(e.into());
            }
            copy.finish().await?;
        }
        turn.ahead_committed(host).await?;
        // The head below this batch's own records, which this transaction already sees: a
        // record another stream stored at or after them made the COPY fail (unique).
        let found = head_below(&mut tx, host, self.below).await?;
        if found != self.expected {
            tx.rollback().await?;
            return Err(StoreError::AuditHeadMoved {
                host: host.to_string(),
                expected: self.expected.seq,
                found: found.seq,
            });
        }
        for (size, note) in self.checkpoints {
            sqlx::query(CHECKPOINT_SQL)
                .bind(host)
                .bind(ms(*size))
                .bind(note.as_str())
                .bind(ms(self.now))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(first) = first {
            sqlx::query(UNPENDING_SQL)
                .bind(cursor_in(first))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// `audit.rs`'s `head_on` on a native connection, from the records before seq `below`.
async fn head_below(conn: &mut PgConnection, host: &str, below: u64) -> Result<Anchor, StoreError> {
    let last = sqlx::query_as(LAST_RECORD_BELOW_SQL)
        .bind(host)
        .bind(ms(below))
        .fetch_optional(&mut *conn)
        .await?;
    let pruned = sqlx::query_as(PRUNED_ANCHOR_SQL)
        .bind(host)
        .fetch_optional(&mut *conn)
        .await?;
    head_of(host, [last, pruned])
}

/// A batch's rows in COPY's binary format, but for their cursors.
struct BinaryRows {
    data: Vec<u8>,
    /// Where each row's cursor (8 bytes) goes, in order.
    cursors: Vec<usize>,
}

impl BinaryRows {
    fn new(host: &str, records: &[NewAuditRecord], now: u64) -> Result<BinaryRows, StoreError> {
        // Each row: 13 lengths, the host, a hash in hex, 5 BIGINTs and short names.
        let size: usize = records.iter().map(|r| 300 + r.record.len()).sum();
        let mut out = Binary(Vec::with_capacity(BINARY_HEADER.len() + size + 2));
        let mut cursors = Vec::with_capacity(records.len());
        out.0.extend_from_slice(BINARY_HEADER);
        for r in records {
            let cursor =
                out.row(host, r, now)
                    .map_err(|TooLong| StoreError::AuditFieldTooLong {
                        host: host.to_string(),
                        seq: r.seq,
                    })?;
            cursors.push(cursor);
        }
        out.0.extend_from_slice(&BINARY_TRAILER);
        Ok(BinaryRows {
            data: out.0,
            cursors,
        })
    }

    /// The data with the rows' cursors numbered from `first`.
    fn numbered(mut self, first: u64) -> Vec<u8> {
        for (at, cursor) in self.cursors.into_iter().zip(first..) {
            self.data[at..at + 8].copy_from_slice(&cursor_in(cursor).to_be_bytes());
        }
        self.data
    }
}

/// A field longer than the binary format's 32-bit length can say.
struct TooLong;

/// Fields in COPY's binary format: a 32-bit big-endian length (-1: NULL), then the value in
/// its type's binary form (TEXT: the UTF-8 bytes, the connection's client encoding; BIGINT:
/// 8 bytes big-endian). No escaping: any text arrives as it is.
struct Binary(Vec<u8>);

impl Binary {
    fn text(&mut self, v: Option<&(impl AsRef<[u8]> + ?Sized)>) -> Result<(), TooLong> {
        match v {
            None => self.0.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                let v = v.as_ref();
                let len = i32::try_from(v.len()).map_err(|_| TooLong)?;
                self.0.extend_from_slice(&len.to_be_bytes());
                self.0.extend_from_slice(v);
            }
        }
        Ok(())
    }

    /// Appends `r`'s row, in [`RECORD_COLUMNS`]' order, with cursor 0; returns where the
    /// cursor's 8 bytes are.
    fn row(&mut self, host: &str, r: &NewAuditRecord, now: u64) -> Result<usize, TooLong> {
        self.0.extend_from_slice(&COLUMNS.to_be_bytes());
        self.text(Some(host))?;
        self.bigint(ms(r.seq));
        self.text(Some(&r.hash.hex()))?;
        self.text(Some(&r.kind))?;
        self.text(r.corr.as_deref())?;
        self.bigint(ms(r.at_unix_ms));
        self.text(r.agent.as_deref())?;
        self.text(r.op.as_deref())?;
        self.text(r.decision.as_deref())?;
        self.text(r.approver.as_deref())?;
        self.text(Some(&r.record))?;
        self.bigint(ms(now));
        let cursor = self.0.len() + 4;
        self.bigint(0);
        Ok(cursor)
    }

    fn bigint(&mut self, v: i64) {
        self.0.extend_from_slice(&8i32.to_be_bytes());
        self.0.extend_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use airlock_audit::Hash;

    use super::*;

    fn record(seq: u64, agent: Option<&str>, text: &str) -> NewAuditRecord {
        NewAuditRecord {
            seq,
            hash: Hash::ZERO,
            kind: "decision".into(),
            corr: None,
            at_unix_ms: 7,
            agent: agent.map(str::to_owned),
            op: None,
            decision: None,
            approver: None,
            record: text.into(),
        }
    }

    #[test]
    fn a_row_has_a_field_for_every_column() {
        assert_eq!(
            RECORD_COLUMNS.split(',').count(),
            usize::try_from(COLUMNS).unwrap()
        );
    }

    #[test]
    fn rows_are_encoded_as_the_binary_format_says_and_numbered_once_reserved() {
        let text = "tab\t\\ \u{1f980}";
        let rows = [record(1, Some(""), text), record(2, None, "x")];
        let data = BinaryRows::new("h", &rows, 9).unwrap().numbered(41);
        assert!(data.starts_with(BINARY_HEADER) && data.ends_with(&BINARY_TRAILER));
        let mut at = BINARY_HEADER.len();
        let mut take = |n: usize| {
            at += n;
            &data[at - n..at]
        };
        for (r, cursor) in rows.iter().zip(41i64..) {
            assert_eq!(take(2), COLUMNS.to_be_bytes());
            let mut field = || {
                let len = i32::from_be_bytes(take(4).try_into().unwrap());
                usize::try_from(len).ok().map(|n| take(n).to_vec())
            };
            let int = |v: i64| Some(v.to_be_bytes().to_vec());
            let text = |v: &str| Some(v.as_bytes().to_vec());
            let fields: Vec<_> = (0..COLUMNS).map(|_| field()).collect();
            let hex = text(&Hash::ZERO.to_string());
            let want = [
                text("h"),
                int(ms(r.seq)),
                hex,
                text("decision"),
                None,
                int(7),
                r.agent.as_deref().and_then(text),
                None,
                None,
                None,
                text(&r.record),
                int(9),
                int(cursor),
            ];
            assert_eq!(fields, want);
        }
        assert_eq!(take(2), BINARY_TRAILER);
        assert_eq!(at, data.len());
    }
}
