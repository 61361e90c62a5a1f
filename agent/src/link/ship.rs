//! Shipping the host's audit spool over the link (at least once): one batch in flight at a
//! time, from the oldest record the collector has not acknowledged; the collector's
//! `AuditAck` lets the spool delete what is stored and sends the next batch. After a
//! reconnect or a restart, shipping resumes from the spool's last acknowledgement, so a batch
//! whose ack was lost is sent again (the collector skips records it already has).
//!
//! Checkpoints travel with the records they follow. One the idle timer signs after its
//! records were acknowledged (a host gone quiet) goes alone, in a batch without records, so
//! the collector holds a signature over every record a quiet host wrote.
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
    /// The largest checkpoint size in the batch in flight.
    checkpoint_in_flight: u64,
    /// The largest checkpoint size the collector acknowledged (since this process started;
    /// after a restart the next checkpoint covers everything before it anyway).
    checkpoint_acked: u64,
    retry_at: Option<Instant>,
}

impl Ship {
    pub fn new(shipper: Shipper) -> Ship {
        Ship {
            shipper,
            in_flight: None,
            checkpoint_in_flight: 0,
            checkpoint_acked: 0,
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
        let Some((first, last)) = batch.range() else {
            let (msg, acked, size) = idle_checkpoint(&spool, self.checkpoint_acked)?;
            self.in_flight = Some(acked);
            self.checkpoint_in_flight = size;
            return Some(msg);
        };
        drop(spool);
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
        self.checkpoint_in_flight = batch
            .checkpoints
            .iter()
            .map(|c| c.claimed().size)
            .max()
            .unwrap_or(0);
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
        if a.refused.is_empty() {
            self.checkpoint_acked = self.checkpoint_acked.max(self.checkpoint_in_flight);
        } else {
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

/// A batch of the spool's latest checkpoint alone, when it covers only acknowledged records
/// and is larger than `checkpoint_acked`; with the acknowledged seq and the checkpoint's size.
fn idle_checkpoint(
    spool: &airlock_audit::Spool,
    checkpoint_acked: u64,
) -> Option<(pb::HostMessage, u64, u64)> {
    let cp = spool.latest_checkpoint()?;
    let size = cp.claimed().size;
    let acked = spool.acked();
    if size <= checkpoint_acked || size > acked {
        return None;
    }
    let msg = pb::HostMessage {
        body: Some(pb::host_message::Body::Audit(pb::AuditBatch {
            first_seq: acked + 1,
            records: Vec::new(),
            checkpoints: vec![cp.text().to_string()],
        })),
    };
    Some((msg, acked, size))
}

#[cfg(test)]
mod tests {
    use airlock_audit::{CheckpointPolicy, Draft, Kind, Priority, SpoolConfig};

    use super::*;
    use crate::daemon::audit::AuditLog;

    fn batch_of(m: pb::HostMessage) -> pb::AuditBatch {
        match m.body {
            Some(pb::host_message::Body::Audit(b)) => b,
            other => panic!("not an audit batch: {other:?}"),
        }
    }

    fn ack(up_to_seq: u64, refused: &str) -> pb::AuditAck {
        pb::AuditAck {
            up_to_seq,
            refused: refused.into(),
        }
    }

    #[tokio::test]
    async fn a_checkpoint_signed_after_its_records_were_acked_is_shipped_alone_once() {
        let dir = tempfile::tempdir().unwrap();
        // No checkpoint rides with the records: the time rule is far off.
        let cfg = SpoolConfig {
            checkpoints: CheckpointPolicy {
                every_records: 1_000,
                every_ms: 3_600_000,
            },
            ..SpoolConfig::default()
        };
        let log = AuditLog::open_with(dir.path(), dir.path(), "host-1", cfg).unwrap();
        let mut ship = Ship::new(log.shipper());
        for i in 0..3 {
            ship.shipper
                .spool()
                .append(
                    Draft::new(1_000 + i, Kind::DaemonStart, serde_json::json!({ "i": i })),
                    Priority::AuditOnly,
                )
                .unwrap();
        }
        let b = batch_of(ship.next().unwrap());
        assert_eq!((b.first_seq, b.records.len()), (1, 3));
        assert!(b.checkpoints.is_empty());
        assert!(ship.next().is_none(), "one batch in flight");
        ship.on_ack(ack(3, ""));
        assert!(ship.next().is_none(), "nothing new, no checkpoint yet");

        // The host goes quiet; its idle timer signs the head.
        let cp = ship.shipper.spool().checkpoint_now(9_000).unwrap();
        assert_eq!(cp.claimed().size, 3);
        let b = batch_of(ship.next().unwrap());
        assert_eq!(b.first_seq, 4);
        assert!(b.records.is_empty());
        assert_eq!(b.checkpoints, [cp.text().to_string()]);

        // Refused: sent again after the wait.
        ship.on_ack(ack(3, "store unavailable"));
        assert!(!ship.idle());
        ship.clear_retry();
        let again = batch_of(ship.next().unwrap());
        assert_eq!(again.checkpoints, [cp.text().to_string()]);

        // Stored: never sent again.
        ship.on_ack(ack(3, ""));
        assert!(ship.next().is_none());
    }
}
