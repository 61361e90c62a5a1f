//! The order of overlapping stores of one host's consecutive audit batches.
//!
//! The collector starts storing a host's next batch before the one ahead of it has committed
//! (`collector.rs`): on PostgreSQL the two transactions then copy their records side by side
//! (`audit_copy.rs`). Three things must still happen in chain order, and the store of a batch
//! waits for the one ahead of it at each:
//! - its cursors are reserved after those of the batch ahead, so a host's records are stored
//!   in cursor order as in seq order (retention deletes a prefix of the chain by cursor);
//! - it checks the stored head only once the batch ahead has committed (the head it was
//!   verified against is that batch's last record);
//! - hence it commits after it, and not at all when the batch ahead failed.
//!
//! On SQLite, which has one writer, a store waits for the one ahead to end before it starts.
use tokio::sync::watch;

use super::StoreError;

/// How far a batch's store has come, as the batch after it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Started,
    /// Its cursors are reserved (or it needs none).
    Reserved,
    Committed,
    /// It failed or was dropped before its commit: nothing of it is stored.
    Failed,
}

/// A batch's place in its host's line of stores: what it tells the batch after it, and what
/// it waits for of the batch ahead. Dropped before [`AuditTurn::committed`] (an error, a cancelled
/// task), it tells the batch after it that it failed.
#[derive(Debug)]
pub struct AuditTurn {
    me: watch::Sender<Stage>,
    ahead: Option<watch::Receiver<Stage>>,
}

/// What the batch after a [`AuditTurn`]'s batch follows: pass it to [`AuditTurn::after`].
#[derive(Clone, Debug)]
pub struct AuditFollow(watch::Receiver<Stage>);

impl AuditFollow {
    /// Waits until the followed batch has reserved its cursors (true), or failed (false).
    /// A seam for the store's tests, which hold a batch between its reservation and commit.
    #[cfg(test)]
    pub(crate) async fn reserved(&mut self) -> bool {
        matches!(
            self.0.wait_for(|s| *s != Stage::Started).await.map(|s| *s),
            Ok(Stage::Reserved | Stage::Committed)
        )
    }
}

impl AuditTurn {
    /// The turn of a batch with no store ahead of it.
    pub fn first() -> (AuditTurn, AuditFollow) {
        AuditTurn::new(None)
    }

    /// The turn of the batch right after the one `ahead` follows.
    pub fn after(ahead: &AuditFollow) -> (AuditTurn, AuditFollow) {
        AuditTurn::new(Some(ahead.0.clone()))
    }

    fn new(ahead: Option<watch::Receiver<Stage>>) -> (AuditTurn, AuditFollow) {
        let (me, rx) = watch::channel(Stage::Started);
        (AuditTurn { me, ahead }, AuditFollow(rx))
    }

    /// Waits until the batch ahead has reserved its cursors.
    /// [`StoreError::AuditAheadFailed`] when it failed instead.
    pub(super) async fn ahead_reserved(&mut self, host: &str) -> Result<(), StoreError> {
        self.wait(host, |s| s != Stage::Started).await
    }

    /// Waits until the batch ahead has committed.
    /// [`StoreError::AuditAheadFailed`] when it failed instead.
    pub(super) async fn ahead_committed(&mut self, host: &str) -> Result<(), StoreError> {
        self.wait(host, |s| s == Stage::Committed || s == Stage::Failed)
            .await
    }

    async fn wait(&mut self, host: &str, done: fn(Stage) -> bool) -> Result<(), StoreError> {
        let Some(ahead) = &mut self.ahead else {
            return Ok(());
        };
        // A sender dropped without a word is a store that ended without committing.
        let seen = ahead.wait_for(|s| done(*s)).await.map(|s| *s);
        match seen {
            Ok(Stage::Failed) | Err(_) => Err(StoreError::AuditAheadFailed {
                host: host.to_string(),
            }),
            Ok(_) => Ok(()),
        }
    }

    /// This batch's cursors are reserved.
    pub(super) fn reserved(&self) {
        self.me.send_replace(Stage::Reserved);
    }

    /// This batch is committed.
    pub(super) fn committed(&self) {
        self.me.send_replace(Stage::Committed);
    }
}

impl Drop for AuditTurn {
    fn drop(&mut self) {
        if *self.me.borrow() != Stage::Committed {
            self.me.send_replace(Stage::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
        futures_util::FutureExt::now_or_never(f)
    }

    #[tokio::test]
    async fn a_first_batch_waits_for_nothing() {
        let (mut t, _f) = AuditTurn::first();
        assert!(matches!(now(t.ahead_reserved("h")), Some(Ok(()))));
        assert!(matches!(now(t.ahead_committed("h")), Some(Ok(()))));
    }

    #[tokio::test]
    async fn the_next_batch_waits_for_the_reservation_then_the_commit_ahead() {
        let (a, fa) = AuditTurn::first();
        let (mut b, _fb) = AuditTurn::after(&fa);
        assert!(now(b.ahead_reserved("h")).is_none());
        a.reserved();
        assert!(matches!(now(b.ahead_reserved("h")), Some(Ok(()))));
        assert!(now(b.ahead_committed("h")).is_none());
        a.committed();
        assert!(matches!(now(b.ahead_committed("h")), Some(Ok(()))));
        // Dropping a committed turn does not undo it.
        drop(a);
        assert!(matches!(now(b.ahead_committed("h")), Some(Ok(()))));
    }

    #[tokio::test]
    async fn a_batch_ahead_that_fails_or_is_dropped_fails_the_ones_after_it() {
        for reserve_first in [false, true] {
            let (a, fa) = AuditTurn::first();
            let (mut b, fb) = AuditTurn::after(&fa);
            let (mut c, _fc) = AuditTurn::after(&fb);
            if reserve_first {
                a.reserved();
            }
            drop(a);
            assert!(matches!(
                now(b.ahead_reserved("h")),
                Some(Err(StoreError::AuditAheadFailed { .. }))
            ));
            assert!(matches!(
                now(b.ahead_committed("h")),
                Some(Err(StoreError::AuditAheadFailed { .. }))
            ));
            // b gives up in turn, and c hears of it.
            drop(b);
            assert!(matches!(
                now(c.ahead_committed("h")),
                Some(Err(StoreError::AuditAheadFailed { .. }))
            ));
        }
    }
}
