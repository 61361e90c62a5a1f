//! Shipping the host's audit spool over the link (at least once): one batch in flight at a
//! time, from the oldest record the collector has not acknowledged; the collector's
//! `AuditAck` lets the spool delete what is stored and sends the next batch. After a
//! reconnect or a restart, shipping resumes from the spool's last acknowledgement, so a batch
//! whose ack was lost is sent again (the collector skips records it already has).
use std::time::Duration;

use airlock_proto::v1 as pb;
use tokio::time::Instant;

use crate::daemon::audit::Shipper;

/// Records per batch.
const BATCH: usize = 512;
/// After a refused batch (or a spool read error), wait this long before sending again.
const RETRY: Duration = Duration::from_secs(5);

/// The shipping state of one stream.
pub(super) struct Ship {
    pub shipper: Shipper,
    /// The last seq of the batch sent and not yet acknowledged.
    in_flight: Option<u64>,
    retry_at: Option<Instant>,
}

impl Ship {
    pub fn new(shipper: Shipper) -> Ship {
        Ship {
            shipper,
            in_flight: None,
            retry_at: None,
        }
    }

    /// Whether a batch may be sent now (none in flight, no retry pending).
    pub fn idle(&self) -> bool {
        self.in_flight.is_none() && self.retry_at.is_none()
    }

    /// Resolves when it is time to try again after a refusal (never when none is pending).
    pub async fn retry_due(&self) {
        match self.retry_at {
            Some(t) if self.in_flight.is_none() => tokio::time::sleep_until(t).await,
            _ => std::future::pending().await,
        }
    }

    /// Ends a retry wait (its time came).
    pub fn clear_retry(&mut self) {
        self.retry_at = None;
    }

    /// The next batch to send, if there are unacknowledged records and nothing is in flight.
    pub fn next(&mut self) -> Option<pb::HostMessage> {
        if self.in_flight.is_some() {
            return None;
        }
        self.retry_at = None;
        let spool = self.shipper.spool();
        let from = spool.acked() + 1;
        let batch = match spool.read_from(from, BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, from, "audit spool unreadable; shipping retries");
                drop(spool);
                self.retry_at = Some(Instant::now() + RETRY);
                return None;
            }
        };
        drop(spool);
        let (first, last) = batch.range()?;
        let mut records = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            match r.to_canonical() {
                Ok(bytes) => records.push(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) => {
                    tracing::error!(seq = r.seq, error = %e, "audit record cannot be encoded");
                    self.retry_at = Some(Instant::now() + RETRY);
                    return None;
                }
            }
        }
        self.in_flight = Some(last);
        Some(pb::HostMessage {
            body: Some(pb::host_message::Body::Audit(pb::AuditBatch {
                first_seq: first,
                records,
                checkpoints: batch
                    .checkpoints
                    .iter()
                    .map(|c| c.text().to_string())
                    .collect(),
            })),
        })
    }

    /// The collector's answer to the batch in flight.
    pub fn on_ack(&mut self, a: pb::AuditAck) {
        self.in_flight = None;
        if !a.refused.is_empty() {
            tracing::warn!(refused = %a.refused, stored_up_to = a.up_to_seq, "airlock-server refused an audit batch; retrying later");
            self.retry_at = Some(Instant::now() + RETRY);
        }
        if a.up_to_seq == 0 {
            return;
        }
        let mut spool = self.shipper.spool();
        let head = spool.head().seq;
        match spool.ack(a.up_to_seq.min(head)) {
            Ok(out) if out.segments_deleted > 0 => {
                tracing::debug!(
                    up_to = a.up_to_seq,
                    freed = out.bytes_freed,
                    "audit records acknowledged"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "audit acknowledgement not recorded"),
        }
    }
}
