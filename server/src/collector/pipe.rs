//! One host link's audit stream, handled by a task beside the link's session rather than in
//! it.
//!
//! The session reads every message of the link; were it to verify and store audit batches
//! itself, it would read nothing else meanwhile. A decision for the host (from the hub) then
//! waited behind a batch's verification, or behind a commit when the batch had to wait for
//! the one before it (up to the store's timeout on a stuck database), and the next batch
//! stayed unread in the transport, whose flow control then held the host's sending back
//! until the session read again. The session now hands the Hello's key and each batch to
//! this task (in the order they came) and reads on; the task sends the acknowledgements.
use std::sync::Arc;

use airlock_proto::v1 as pb;
use tokio::sync::mpsc;

use super::HostAudit;
use crate::broker::Broker;

/// What the session hands over, in the link's order.
#[derive(Debug)]
pub enum AuditInput {
    /// The Hello's `audit_key` (empty: none).
    Hello(String),
    Batch(pb::AuditBatch),
}

/// Inputs waiting for the task: airlockd has at most two batches unacknowledged
/// (`agent/src/link/ship.rs`), so its session never waits here. A host sending more waits
/// for room: its own link reads no further meanwhile, and the memory a link holds in
/// batches stays bounded.
const QUEUED: usize = 2;

/// The session's handle on its audit task. Once the session has ended, the task finishes
/// the input in hand (so an alert being recorded is not cut short) and handles no further
/// batch; stores it started go on and commit (the host resends what it did not hear
/// acknowledged, and the collector skips what is stored).
#[derive(Debug)]
pub struct AuditPipe {
    tx: mpsc::Sender<AuditInput>,
}

impl AuditPipe {
    /// Starts the audit task of `host`'s session; its acknowledgements go to `out`. The task
    /// holds `out` weakly: the link's outbound stream ends with its session, not with this
    /// task (acknowledgements after that have nobody to reach).
    pub fn start(
        b: Arc<Broker>,
        host: &str,
        out: &mpsc::UnboundedSender<pb::ServerMessage>,
    ) -> AuditPipe {
        let (tx, rx) = mpsc::channel(QUEUED);
        tokio::spawn(run(b, HostAudit::new(host), rx, out.downgrade()));
        AuditPipe { tx }
    }

    /// Hands `input` to the task, waiting while [`QUEUED`] inputs are waiting already.
    pub async fn send(&self, input: AuditInput) {
        // The task ends only once this handle is dropped.
        let _ = self.tx.send(input).await;
    }
}

/// The task: handles inputs in order and acknowledges each stored batch as its commit ends,
/// in batch order.
async fn run(
    b: Arc<Broker>,
    mut audit: HostAudit,
    mut rx: mpsc::Receiver<AuditInput>,
    out: mpsc::WeakUnboundedSender<pb::ServerMessage>,
) {
    let send = |m: pb::ServerMessage| {
        if let Some(out) = out.upgrade() {
            b.metrics.sent(&m);
            let _ = out.send(m);
        }
    };
    loop {
        tokio::select! {
            // An acknowledgement first: the host sends its next batch when it hears it.
            biased;
            o = audit.stored(), if audit.storing() => send(audit.acknowledge(&b, o).await),
            input = rx.recv() => match input {
                None => break,
                Some(AuditInput::Hello(key)) => audit.hello(&b, &key).await,
                // The session ended: nobody hears this batch's acknowledgement, and the host
                // resends it on its next link, which a store from here would only race.
                Some(AuditInput::Batch(_)) if out.upgrade().is_none() => break,
                Some(AuditInput::Batch(batch)) => {
                    for m in audit.batch(&b, batch).await {
                        send(m);
                    }
                }
            },
        }
    }
}
