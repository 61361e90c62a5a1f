//! Shipping the host's audit spool over the link (at least once): up to [`WINDOW`] batches in
//! flight, from the oldest record the collector has not acknowledged, each starting after the
//! one sent before it (the collector verifies the next while the previous one commits, and
//! acknowledges them in order, each once stored); an `AuditAck` lets the spool delete what is
//! stored and makes room for the next batch. A refusal stops sending until the retry, which
//! starts again after the acknowledged head (a batch already sent behind the refused one is
//! refused too). After a reconnect or a restart, shipping resumes from the spool's last
//! acknowledgement, so a batch whose ack was lost is sent again (the collector skips records
//! it already has).
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
/// Batches sent and not yet acknowledged, at most.
const WINDOW: usize = 2;
/// After a refused batch (or a spool read error), wait this long before sending again.
const RETRY: Duration = Duration::from_secs(5);

/// The shipping state of one stream.
pub(super) struct Ship {
    pub shipper: Shipper,
    /// The batches sent and not yet acknowledged, oldest first: each one's last seq (the
    /// acknowledged seq for a checkpoint alone) and its largest checkpoint size.
    in_flight: std::collections::VecDeque<(u64, u64)>,
    /// The largest checkpoint size the collector acknowledged (since this process started;
    /// after a restart the next checkpoint covers everything before it anyway).
    checkpoint_acked: u64,
    retry_at: Option<Instant>,
}

impl Ship {
    pub fn new(shipper: Shipper) -> Ship {
        Ship {
            shipper,
            in_flight: std::collections::VecDeque::new(),
            checkpoint_acked: 0,
            retry_at: None,
        }
    }

    /// Whether a batch may be sent now (room in the window, no retry pending).
    pub fn idle(&self) -> bool {
        self.in_flight.len() < WINDOW && self.retry_at.is_none()
    }

    /// Resolves when it is time to try again after a refusal (never when none is pending).
    pub async fn retry_due(&self) {
        match self.retry_at {
            Some(t) if self.in_flight.is_empty() => tokio::time::sleep_until(t).await,
            _ => std::future::pending().await,
        }
    }

    /// Ends a retry wait (its time came).
    pub fn clear_retry(&mut self) {
        self.retry_at = None;
    }

    /// The next batch to send, if there are records after those sent and room in the window.
    pub fn next(&mut self) -> Option<pb::HostMessage> {
        if self.in_flight.len() >= WINDOW {
            return None;
        }
        self.retry_at = None;
        let spool = self.shipper.spool();
        let sent = self.in_flight.back().map_or(0, |f| f.0);
        let from = spool.acked().max(sent) + 1;
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
            if !self.in_flight.is_empty() {
                return None;
            }
            let (msg, acked, size) = idle_checkpoint(&spool, self.checkpoint_acked)?;
            self.in_flight.push_back((acked, size));
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
        let checkpoint = batch
            .checkpoints
            .iter()
            .map(|c| c.claimed().size)
            .max()
            .unwrap_or(0);
        self.in_flight.push_back((last, checkpoint));
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

    /// The collector's answer to the oldest batch in flight.
    pub fn on_ack(&mut self, a: pb::AuditAck) {
        let checkpoint = self.in_flight.pop_front().map_or(0, |f| f.1);
        if a.refused.is_empty() {
            self.checkpoint_acked = self.checkpoint_acked.max(checkpoint);
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
        assert!(ship.next().is_none(), "nothing more to send");
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

    #[tokio::test]
    async fn two_batches_go_in_flight_and_a_refusal_resends_from_the_acked_head() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            AuditLog::open_with(dir.path(), dir.path(), "host-1", SpoolConfig::default()).unwrap();
        let mut ship = Ship::new(log.shipper());
        let drafts = (0..BATCH as u64 * 2 + 10)
            .map(|i| {
                (
                    Draft::new(i, Kind::DaemonStart, serde_json::json!({ "i": i })),
                    Priority::AuditOnly,
                )
            })
            .collect();
        ship.shipper.spool().append_many(drafts).unwrap();
        let n = BATCH as u64;
        let first = batch_of(ship.next().unwrap());
        assert!(ship.idle(), "room for a second batch");
        let second = batch_of(ship.next().unwrap());
        assert_eq!((first.first_seq, second.first_seq), (1, n + 1));
        assert!(!ship.idle() && ship.next().is_none(), "the window is full");

        // The first is stored: room for the third, after the second.
        ship.on_ack(ack(n, ""));
        assert_eq!(batch_of(ship.next().unwrap()).first_seq, 2 * n + 1);
        // The second is refused, and so is the third sent behind it: nothing is sent until
        // the retry, which starts after the acknowledged head.
        ship.on_ack(ack(n, "record 600 was changed"));
        assert!(!ship.idle() && ship.next().is_none());
        ship.on_ack(ack(n, "resend"));
        ship.clear_retry();
        assert_eq!(batch_of(ship.next().unwrap()).first_seq, n + 1);
    }
}
