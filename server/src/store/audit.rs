//! The audit collector's tables (migration `0004_audit.sql`): each host's audit key (trust on
//! first use), its verified records and checkpoints, the collector's alerts, and retention.
//!
//! Rows are numbered by a cursor from a counter (see the migration's `audit_counters`). On
//! SQLite, and for alerts, a transaction that adds rows starts by bumping its counter, which
//! holds the counter row until it commits: cursors in commit order. On PostgreSQL a batch of
//! records reserves its cursors in a transaction of its own and stores them in another
//! (`audit_copy.rs`, migration 0006); readers stay below the lowest open reservation, which
//! gives them the same guarantee: no record commits later with a cursor they have passed.
use std::collections::BTreeMap;

use airlock_audit::{Anchor, Hash};
use sqlx::any::{Any, AnyRow};
use sqlx::{AnyConnection, Row};

use super::{DbKind, Store, StoreError, from_name, ms, ms_out};

/// A host's audit key as the collector keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditKey {
    /// Signed-note verifier key (`NAME+KEYID+BASE64`).
    pub key: String,
    /// When the collector first saw it.
    pub first_seen_unix_ms: u64,
}

/// Filters of [`Store::audit_records`] and [`Store::audit_alerts`]; `None` matches anything.
/// Alerts use only `host`, the times, `after_cursor` and `limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub host: Option<String>,
    pub agent: Option<String>,
    /// At or after (the record's `at_unix_ms`, an alert's time).
    pub since_unix_ms: Option<u64>,
    /// Before.
    pub until_unix_ms: Option<u64>,
    pub op: Option<String>,
    pub decision: Option<String>,
    pub approver: Option<String>,
    pub kind: Option<String>,
    /// Only rows stored after this cursor.
    pub after_cursor: u64,
    /// At most this many rows.
    pub limit: u32,
}

/// A stored record, as a query returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub host: String,
    pub seq: u64,
    /// Storage order; pass the last one as [`AuditFilter::after_cursor`] to go on.
    pub cursor: u64,
    pub at_unix_ms: u64,
    pub kind: String,
    /// The canonical JSON the host sent.
    pub record: String,
}

/// An alert of the collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditAlert {
    pub cursor: u64,
    pub host: String,
    pub at_unix_ms: u64,
    pub message: String,
}

/// What [`Store::prune_audit`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: u64,
    pub checkpoints: u64,
    pub alerts: u64,
}

/// A parameter of a query assembled at run time.
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// Cursors are BIGINT; one past `i64::MAX` is never given out.
pub(super) fn cursor_in(c: u64) -> i64 {
    i64::try_from(c).unwrap_or(i64::MAX)
}

fn hash_out(host: &str, text: &str) -> Result<Hash, StoreError> {
    from_name("audit hash", host, text)
}

/// The two queries of [`head_on`] (also run on the COPY path's PostgreSQL connection, see
/// `audit_copy.rs`): `host`'s last stored record, and the last one retention deleted.
pub(super) const LAST_RECORD_SQL: &str =
    "SELECT seq, hash FROM audit_records WHERE host = $1 ORDER BY seq DESC LIMIT 1";
/// [`LAST_RECORD_SQL`] among the records before seq `$2`: the COPY path checks the head
/// after copying the batch's own records, which its transaction already sees.
pub(super) const LAST_RECORD_BELOW_SQL: &str =
    "SELECT seq, hash FROM audit_records WHERE host = $1 AND seq < $2 ORDER BY seq DESC LIMIT 1";
pub(super) const PRUNED_ANCHOR_SQL: &str =
    "SELECT pruned_seq, pruned_hash FROM audit_hosts WHERE host = $1";

/// The head of `host`'s stored chain on `conn`: its last stored record, else the last one
/// retention deleted, else the start of the chain.
pub(super) async fn head_on(conn: &mut AnyConnection, host: &str) -> Result<Anchor, StoreError> {
    let last = sqlx::query_as(LAST_RECORD_SQL)
        .bind(host)
        .fetch_optional(&mut *conn)
        .await?;
    let pruned = sqlx::query_as(PRUNED_ANCHOR_SQL)
        .bind(host)
        .fetch_optional(&mut *conn)
        .await?;
    head_of(host, [last, pruned])
}

/// The head from the `(seq, hash)` rows of [`LAST_RECORD_SQL`] and [`PRUNED_ANCHOR_SQL`]:
/// the later of the two, else [`Anchor::GENESIS`].
pub(super) fn head_of(host: &str, rows: [Option<(i64, String)>; 2]) -> Result<Anchor, StoreError> {
    let mut head = Anchor::GENESIS;
    for (seq, hash) in rows.into_iter().flatten() {
        let seq = ms_out(seq);
        if seq > head.seq {
            head = Anchor {
                seq,
                hash: hash_out(host, &hash)?,
            };
        }
    }
    Ok(head)
}

/// [`reserve`]'s statement (also run on the COPY path's connection): bumps counter `$2` by
/// `$1`, returning the new value.
pub(super) const RESERVE_SQL: &str =
    "UPDATE audit_counters SET value = value + $1 WHERE name = $2 RETURNING value";

/// Bumps counter `name` by `n` as the transaction's first write (see the migration) and
/// returns the first of the `n` cursors it reserved.
pub(super) async fn reserve(
    conn: &mut AnyConnection,
    name: &str,
    n: usize,
) -> Result<u64, StoreError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let (end,): (i64,) = sqlx::query_as(RESERVE_SQL)
        .bind(n)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(first_reserved(end, n))
}

/// The first of the `n` cursors a counter bumped to `end` reserved.
pub(super) fn first_reserved(end: i64, n: i64) -> u64 {
    ms_out(end - n + 1)
}

fn row_of(row: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        host: row.try_get("host")?,
        seq: ms_out(row.try_get("seq")?),
        cursor: ms_out(row.try_get("cursor")?),
        at_unix_ms: ms_out(row.try_get("at_ms")?),
        kind: row.try_get("kind")?,
        record: row.try_get("record")?,
    })
}

fn alert_of(row: &AnyRow) -> Result<AuditAlert, StoreError> {
    Ok(AuditAlert {
        cursor: ms_out(row.try_get("cursor")?),
        host: row.try_get("host")?,
        at_unix_ms: ms_out(row.try_get("at_ms")?),
        message: row.try_get("message")?,
    })
}

/// Runs `sql` with `args` and reads every row with `read`.
async fn select<T>(
    store: &Store,
    sql: &str,
    args: Vec<Arg>,
    read: fn(&AnyRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    bound::<Any>(sql, args)
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(read)
        .collect()
}

/// `sql` with `args` bound, on any driver (the store's pool; tests' native connections).
pub(super) fn bound<'q, DB: sqlx::Database>(
    sql: &'q str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s),
            Arg::Int(i) => q.bind(i),
        };
    }
    q
}

/// The WHERE clause (cursor, host, time) both queries share, with its parameters.
fn common_conds(f: &AuditFilter, time_col: &str) -> (Vec<String>, Vec<Arg>) {
    let mut args = vec![Arg::Int(cursor_in(f.after_cursor))];
    let mut conds = vec!["cursor > $1".to_string()];
    if let Some(h) = &f.host {
        args.push(Arg::Text(h.clone()));
        conds.push(format!("host = ${}", args.len()));
    }
    if let Some(t) = f.since_unix_ms {
        args.push(Arg::Int(ms(t)));
        conds.push(format!("{time_col} >= ${}", args.len()));
    }
    if let Some(t) = f.until_unix_ms {
        args.push(Arg::Int(ms(t)));
        conds.push(format!("{time_col} < ${}", args.len()));
    }
    (conds, args)
}

/// For a query of one host (`$2`) after cursor `$1`: the seq of the host's last record at or
/// before that cursor (0 when none), so the query reads the host's records after it from
/// the primary key `(host, seq)`, in seq order, which for one host is cursor order (its
/// batches reserve their cursors in chain order, `audit_order.rs`). Migration 0007 dropped
/// the index on `(host, cursor)` this replaces: every stored record paid for it.
///
/// Without that index no one lookup finds the seq for any cursor, so the cases are tried in
/// turn, cheapest first (COALESCE stops at the first that finds one; both databases leave
/// the later subqueries unevaluated):
/// 1. a page token, the cursor of the last row of the page before, is a record of this
///    host: found through the cursor's unique index;
/// 2. the cursor is below the host's oldest stored record (0: a first page; a token whose
///    record retention deleted): the host's first record, from the primary key, says so;
/// 3. the host has a record among the [`HOST_NEAR`] records at or before the cursor (a
///    cursor of another host's record while both were writing): read back through the
///    cursor index;
/// 4. else (the host stored nothing among the [`HOST_NEAR`] records before the cursor, which
///    only another query's cursor can be) the host's records are read back from its newest
///    to the first at or before the cursor: as many as it stored after the cursor.
///
/// With cases 1 and 4 alone, a host's first page read back every record of the host: 2.6 s
/// on this VM for a SQLite store of 1,000,000 records of four hosts, 0.8 ms now (the tests
/// `*_a_host_query_reads_a_page_not_the_whole_host` guard it).
fn host_seq_after_cursor() -> String {
    format!(
        "COALESCE(\
         (SELECT seq FROM audit_records WHERE cursor = $1 AND host = $2), \
         (SELECT 0 WHERE $1 < \
          (SELECT cursor FROM audit_records WHERE host = $2 ORDER BY seq LIMIT 1)), \
         (SELECT MAX(CASE WHEN host = $2 THEN seq END) FROM (SELECT host, seq \
          FROM audit_records WHERE cursor <= $1 ORDER BY cursor DESC LIMIT {HOST_NEAR}) AS near), \
         (SELECT seq FROM audit_records WHERE host = $2 AND cursor <= $1 \
          ORDER BY seq DESC LIMIT 1), \
         0)"
    )
}

/// How far back before a foreign cursor case 3 of [`host_seq_after_cursor`] looks for the
/// host's record: a batch's worth, read in a few milliseconds.
pub(super) const HOST_NEAR: u64 = 4096;

/// Retention: each host's last record before cursor `$1` (its greatest seq there: a host's
/// records are in chain order), read from the rows about to be deleted, through the cursor
/// index. `$2` is `i64::MAX`: a subquery with a LIMIT is not merged into the grouping query,
/// which SQLite would otherwise answer by reading the whole primary key in host order.
pub(super) const PRUNE_CUTS_SQL: &str = "SELECT host, MAX(seq) AS cut FROM \
     (SELECT host, seq FROM audit_records WHERE cursor < $1 ORDER BY cursor LIMIT $2) AS deleted \
     GROUP BY host ORDER BY host";

/// PostgreSQL: the reservations (`audit_pending`, migration 0006) of batches whose
/// transaction was still running when the statement's snapshot was taken. Those of
/// transactions that ended without deleting theirs (rolled back, their process gone) are
/// not. Evaluated in the reader's own statement, against that statement's snapshot.
const OPEN_RESERVATION: &str = "NOT pg_visible_in_snapshot(xid::text::xid8, pg_current_snapshot())";

/// [`Store::audit_records`]'s statement on a database of `kind`, and its parameters.
pub(super) fn records_sql(f: &AuditFilter, kind: DbKind) -> (String, Vec<Arg>) {
    let (mut conds, mut args) = common_conds(f, "at_ms");
    for (col, v) in [
        ("agent", &f.agent),
        ("op", &f.op),
        ("decision", &f.decision),
        ("approver", &f.approver),
        ("kind", &f.kind),
    ] {
        if let Some(v) = v {
            args.push(Arg::Text(v.clone()));
            conds.push(format!("{col} = ${}", args.len()));
        }
    }
    if kind == DbKind::Postgres {
        // Only below the lowest open reservation (of this host, when the query names one:
        // a host's batches commit in cursor order), read in the same statement, so a
        // reader never moves past a cursor whose records commit later. SQLite commits
        // one batch at a time, in cursor order.
        let host = match &f.host {
            // `common_conds` binds the host second.
            Some(_) => "host = $2 AND ",
            None => "",
        };
        conds.push(format!(
            "cursor < (SELECT COALESCE(MIN(first_cursor), {}) FROM audit_pending \
             WHERE {host}{OPEN_RESERVATION})",
            i64::MAX
        ));
    }
    let order = match &f.host {
        Some(_) => {
            conds.push(format!("seq > {}", host_seq_after_cursor()));
            // The cursor bounds stay (the seq bound is exact, but they are the guarantee),
            // as `cursor + 0`, which no index serves: with the bounds' values unknown when it
            // plans, PostgreSQL would otherwise take the cursor index and filter every
            // later record of every host by host, then sort, rather than read this host's
            // next `limit` records from the primary key.
            for c in &mut conds {
                if let Some(rest) = c.strip_prefix("cursor ") {
                    *c = format!("cursor + 0 {rest}");
                }
            }
            "seq"
        }
        None => "cursor",
    };
    args.push(Arg::Int(i64::from(f.limit)));
    let sql = format!(
        "SELECT host, seq, cursor, at_ms, kind, record FROM audit_records WHERE {} \
         ORDER BY {order} LIMIT ${}",
        conds.join(" AND "),
        args.len()
    );
    (sql, args)
}

impl Store {
    /// `host`'s audit key, if it ever presented one.
    pub async fn audit_key(&self, host: &str) -> Result<Option<AuditKey>, StoreError> {
        let row =
            sqlx::query("SELECT verifier_key, first_seen_ms FROM audit_hosts WHERE host = $1")
                .bind(host)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(AuditKey {
                key: r.try_get("verifier_key")?,
                first_seen_unix_ms: ms_out(r.try_get("first_seen_ms")?),
            })
        })
        .transpose()
    }

    /// Keeps `key` as `host`'s audit key unless it has one already (one atomic statement, so
    /// two replicas seeing the host's first Hello keep the same key); returns the key in force.
    pub async fn set_audit_key_if_absent(
        &self,
        host: &str,
        key: &str,
        now: u64,
    ) -> Result<AuditKey, StoreError> {
        {
            let _turn = self.write_turn().await;
            sqlx::query(
                "INSERT INTO audit_hosts (host, verifier_key, first_seen_ms, pruned_seq, pruned_hash) \
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT (host) DO NOTHING",
            )
            .bind(host)
            .bind(key)
            .bind(ms(now))
            .bind(Hash::ZERO.to_string())
            .execute(&self.pool)
            .await?;
        }
        // Rows of audit_hosts are never deleted.
        self.audit_key(host)
            .await?
            .ok_or_else(|| StoreError::NoSuch {
                what: "audit host",
                name: host.to_string(),
            })
    }

    /// The head of `host`'s stored chain: its last record, else the anchor of the history
    /// retention deleted, else [`Anchor::GENESIS`].
    pub async fn audit_head(&self, host: &str) -> Result<Anchor, StoreError> {
        let mut conn = self.pool.acquire().await?;
        head_on(&mut conn, host).await
    }

    /// The stored hashes of `host`'s records `from..=to` (those retention has not deleted).
    pub async fn audit_hashes(
        &self,
        host: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, Hash>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, hash FROM audit_records WHERE host = $1 AND seq >= $2 AND seq <= $3",
        )
        .bind(host)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let text: String = r.try_get("hash")?;
            out.insert(ms_out(r.try_get("seq")?), hash_out(host, &text)?);
        }
        Ok(out)
    }

    /// `host`'s stored checkpoints `(size, note)`, by size.
    pub async fn audit_checkpoints(&self, host: &str) -> Result<Vec<(u64, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT size, note FROM audit_checkpoints WHERE host = $1 ORDER BY size")
                .bind(host)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((ms_out(r.try_get("size")?), r.try_get("note")?)))
            .collect()
    }

    /// Records an alert of the collector about `host`; returns its cursor.
    pub async fn add_audit_alert(
        &self,
        host: &str,
        message: &str,
        now: u64,
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let cursor = reserve(&mut tx, "alerts", 1).await?;
        sqlx::query(
            "INSERT INTO audit_alerts (cursor, host, at_ms, message) VALUES ($1, $2, $3, $4)",
        )
        .bind(cursor_in(cursor))
        .bind(host)
        .bind(ms(now))
        .bind(message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(cursor)
    }

    /// Stored records matching every filter of `f`, in storage order (cursor), at most
    /// `f.limit`.
    pub async fn audit_records(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let (sql, args) = records_sql(f, self.kind);
        select(self, &sql, args, row_of).await
    }

    /// Alerts matching `f`'s host, times and cursor, oldest first, at most `f.limit`.
    pub async fn audit_alerts(&self, f: &AuditFilter) -> Result<Vec<AuditAlert>, StoreError> {
        let (conds, mut args) = common_conds(f, "at_ms");
        args.push(Arg::Int(i64::from(f.limit)));
        let sql = format!(
            "SELECT cursor, host, at_ms, message FROM audit_alerts WHERE {} ORDER BY cursor LIMIT ${}",
            conds.join(" AND "),
            args.len()
        );
        select(self, &sql, args, alert_of).await
    }

    /// Deletes the records and alerts the collector stored before `before_ms`, host by host
    /// (each in its own transaction), keeping for each host the last deleted record's seq and
    /// hash as the anchor its chain continues from. Records are deleted in storage order: all
    /// those before the first one stored at or after `before_ms` (by the storing replica's
    /// clock; one stored earlier behind it waits for a later run). A host's records are
    /// stored in chain order, so its deletion is always a prefix of its chain and the anchor
    /// is the record right before the oldest kept. Checkpoints below the anchor go too; the
    /// one at the anchor, if any, stays (it signs the anchor).
    ///
    /// Found through the cursor index (migration 0005 dropped the one on `stored_ms`, which
    /// every stored record paid for and only this hourly task used, and 0007 the one on
    /// `(host, cursor)`): the first query reads one row, the second the rows it is about to
    /// delete.
    pub async fn prune_audit(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        let keep = sqlx::query(
            "SELECT cursor FROM audit_records WHERE stored_ms >= $1 ORDER BY cursor LIMIT 1",
        )
        .bind(ms(before_ms))
        .fetch_optional(&self.pool)
        .await?;
        let keep: i64 = match keep {
            Some(row) => row.try_get("cursor")?,
            None => i64::MAX,
        };
        let cuts = sqlx::query(PRUNE_CUTS_SQL)
            .bind(keep)
            .bind(i64::MAX)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Pruned::default();
        for row in &cuts {
            let host: String = row.try_get("host")?;
            let cut: i64 = row.try_get("cut")?;
            let _turn = self.write_turn().await;
            let mut tx = self.pool.begin().await?;
            // First write: takes the records counter, so no batch of this host is stored
            // while its anchor moves (see the migration).
            reserve(&mut tx, "records", 0).await?;
            let hash = sqlx::query("SELECT hash FROM audit_records WHERE host = $1 AND seq = $2")
                .bind(&host)
                .bind(cut)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(hash) = hash else {
                // Pruned meanwhile by another replica.
                tx.rollback().await?;
                continue;
            };
            let hash: String = hash.try_get("hash")?;
            let anchored = sqlx::query(
                "UPDATE audit_hosts SET pruned_seq = $2, pruned_hash = $3 WHERE host = $1",
            )
            .bind(&host)
            .bind(cut)
            .bind(&hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if anchored != 1 {
                // Records without a key row are not written by the collector; keep them
                // rather than lose the anchor.
                tx.rollback().await?;
                continue;
            }
            out.records += sqlx::query("DELETE FROM audit_records WHERE host = $1 AND seq <= $2")
                .bind(&host)
                .bind(cut)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            out.checkpoints +=
                sqlx::query("DELETE FROM audit_checkpoints WHERE host = $1 AND size < $2")
                    .bind(&host)
                    .bind(cut)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            tx.commit().await?;
        }
        let _turn = self.write_turn().await;
        if self.kind == DbKind::Postgres {
            // Reservations of batches that ended without committing (readers ignore them).
            sqlx::query(&format!(
                "DELETE FROM audit_pending WHERE NOT ({OPEN_RESERVATION})"
            ))
            .execute(&self.pool)
            .await?;
        }
        out.alerts = sqlx::query("DELETE FROM audit_alerts WHERE at_ms < $1")
            .bind(ms(before_ms))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(out)
    }
}
