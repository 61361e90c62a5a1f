//! `Approvals.AuditQuery`: the collector's stored records (or its alerts), oldest first in
//! storage order, filtered; with `follow`, new rows as they are stored.
//!
//! Following polls the store every [`FOLLOW_POLL`] for rows after the last cursor sent, so a
//! tail on one replica sees what hosts linked to any replica shipped (cursors are given out
//! in commit order: see `store/audit.rs`). Like Watch, a follow ends with the error a new
//! call would get once the caller's token is revoked or expires, or its principal leaves the
//! config (checked every [`crate::link::HOST_CHECK`]).
use std::future::Future;
use std::time::Duration;

use airlock_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::broker::Broker;
use crate::error::Fault;
use crate::store::{AuditAlert, AuditFilter, AuditRow};

/// Rows sent when the request gives no limit.
pub const DEFAULT_LIMIT: u32 = 1000;
/// The largest limit a request may ask for.
pub const MAX_LIMIT: u32 = 10_000;
/// Rows read per query.
const PAGE: u64 = 1000;
/// How often a follow looks for new rows.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// A checked `AuditQueryRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    filter: AuditFilter,
    follow: bool,
    alerts: bool,
}

fn record_entry(r: AuditRow) -> pb::AuditEntry {
    pb::AuditEntry {
        host: r.host,
        seq: r.seq,
        record: r.record,
        cursor: r.cursor,
    }
}

fn alert_entry(a: AuditAlert) -> pb::AuditEntry {
    let record = serde_json::json!({
        "at_unix_ms": a.at_unix_ms,
        "host": a.host,
        "message": a.message,
    });
    pb::AuditEntry {
        host: a.host,
        seq: 0,
        record: record.to_string(),
        cursor: a.cursor,
    }
}

impl AuditQuery {
    /// Checks the request: the limit's bound, the time range, and no record filter on
    /// alerts (they have no agent, operation, decision, approver or kind).
    pub fn from_proto(q: &pb::AuditQueryRequest) -> Result<AuditQuery, Fault> {
        if q.limit > MAX_LIMIT {
            return Err(Fault::invalid(
                "limit",
                format!("{} is more than {MAX_LIMIT}", q.limit),
            ));
        }
        if q.since_unix_ms > 0 && q.until_unix_ms > 0 && q.until_unix_ms <= q.since_unix_ms {
            return Err(Fault::invalid(
                "until_unix_ms",
                "must be after since_unix_ms",
            ));
        }
        let record_filters = [&q.agent, &q.operation, &q.decision, &q.approver, &q.kind];
        if q.alerts && record_filters.iter().any(|f| !f.is_empty()) {
            return Err(Fault::invalid(
                "alerts",
                "alerts are filtered by host and time only (agent, operation, decision, \
                 approver and kind are fields of records)",
            ));
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let time = |t: u64| (t > 0).then_some(t);
        Ok(AuditQuery {
            filter: AuditFilter {
                host: text(&q.host),
                agent: text(&q.agent),
                since_unix_ms: time(q.since_unix_ms),
                until_unix_ms: time(q.until_unix_ms),
                op: text(&q.operation),
                decision: text(&q.decision),
                approver: text(&q.approver),
                kind: text(&q.kind),
                after_cursor: q.after_cursor,
                limit: if q.limit == 0 { DEFAULT_LIMIT } else { q.limit },
            },
            follow: q.follow,
            alerts: q.alerts,
        })
    }

    /// Sends the matching rows to `tx`, then (with follow) new ones until the client goes
    /// away or `still_allowed` fails. Ok: the stream ends cleanly; Err: it ends with that.
    pub async fn run<F, Fut>(
        mut self,
        b: &Broker,
        tx: &mpsc::Sender<Result<pb::AuditEntry, Status>>,
        still_allowed: F,
    ) -> Result<(), Fault>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), Fault>>,
    {
        let mut left = if self.follow {
            u64::MAX
        } else {
            u64::from(self.filter.limit)
        };
        let mut recheck = tokio::time::interval(crate::link::HOST_CHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            let page = PAGE.min(left);
            let mut f = self.filter.clone();
            f.limit = u32::try_from(page).unwrap_or(u32::MAX);
            let entries: Vec<pb::AuditEntry> = if self.alerts {
                let rows = b.store.audit_alerts(&f).await?;
                rows.into_iter().map(alert_entry).collect()
            } else {
                let rows = b.store.audit_records(&f).await?;
                rows.into_iter().map(record_entry).collect()
            };
            let n = entries.len() as u64;
            for e in entries {
                self.filter.after_cursor = e.cursor;
                if tx.send(Ok(e)).await.is_err() {
                    return Ok(());
                }
            }
            left -= n;
            if left == 0 {
                return Ok(());
            }
            if n == page {
                // More stored already.
                continue;
            }
            if !self.follow {
                return Ok(());
            }
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = recheck.tick() => still_allowed().await?,
            }
        }
    }
}
