//! The `airlock.v1.Approvals` service over [`crate::hold::Approvals`].
//!
//! Every RPC first establishes who calls ([`peer::caller`]) and refuses agents; then it is a thin
//! translation: validate (convert.rs), call the table, convert the answer. Failures become
//! status codes only through [`Fault`] (error.rs).
use airlock_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::{check_id, decide_from_proto, request_to_proto};
use super::error::Fault;
use super::peer::{self, Classify, PeerInfo};
use crate::hold::{Approvals, Approver, Update};

/// Events buffered per watcher between the broadcast and the connection. A watcher that stops
/// reading fills this, then falls behind the table's broadcast buffer and gets DATA_LOSS.
const WATCH_BUFFER: usize = 64;

/// The service state shared by all connections.
pub(crate) struct Service {
    pub(crate) approvals: Approvals,
    pub(crate) classify: Classify,
    /// Becomes true when the server shuts down; ends Watch streams so a graceful shutdown does
    /// not wait forever for streams that never end on their own.
    pub(crate) stop: watch::Receiver<bool>,
    /// Whether local decisions are the normal path, break-glass, or forbidden.
    pub(crate) local: super::LocalPolicy,
}

impl Service {
    fn caller<T>(&self, req: &Request<T>) -> Result<Approver, Status> {
        peer::caller(req.extensions().get::<PeerInfo>(), &self.classify).map_err(Status::from)
    }
}

fn event(u: Update) -> pb::WatchEvent {
    let (kind, r) = match u {
        Update::Opened(r) => (pb::watch_event::Kind::Opened, r),
        Update::Closed(r) => (pb::watch_event::Kind::Closed, r),
    };
    pb::WatchEvent {
        kind: kind as i32,
        request: Some(request_to_proto(&r)),
    }
}

/// Forwards table updates to one watcher until it goes away, the server stops, or it falls
/// behind. Falling behind ends the stream with DATA_LOSS instead of skipping events: a person
/// watching for requests must not silently miss one (it would wait unseen until it times out).
async fn forward(
    mut updates: broadcast::Receiver<Update>,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let item = tokio::select! {
            _ = tx.closed() => return,
            // An error means the server handle is gone: stopping as well.
            r = stop.wait_for(|s| *s) => { let _ = r; Err(Fault::ShuttingDown) }
            u = updates.recv() => match u {
                Ok(u) => Ok(event(u)),
                Err(broadcast::error::RecvError::Lagged(missed)) => Err(Fault::Lagged { missed }),
                Err(broadcast::error::RecvError::Closed) => Err(Fault::ShuttingDown),
            },
        };
        let last = item.is_err();
        if tx.send(item.map_err(Status::from)).await.is_err() || last {
            return;
        }
    }
}

#[tonic::async_trait]
impl pb::approvals_server::Approvals for Service {
    async fn list_pending(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        self.caller(&req)?;
        let requests = self
            .approvals
            .pending()
            .iter()
            .map(request_to_proto)
            .collect();
        Ok(Response::new(pb::ListPendingResponse { requests }))
    }

    async fn get_request(
        &self,
        req: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::HoldRequest>, Status> {
        self.caller(&req)?;
        let id = req.into_inner().id;
        check_id(&id)?;
        let r = self.approvals.get(&id).map_err(Fault::from)?;
        Ok(Response::new(request_to_proto(&r)))
    }

    async fn decide(
        &self,
        req: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::HoldRequest>, Status> {
        let mut by = self.caller(&req)?;
        match self.local.get() {
            super::LocalDecisions::Primary => {}
            super::LocalDecisions::BreakGlass => by.via = "cli-break-glass".to_string(),
            super::LocalDecisions::Forbidden => return Err(Fault::BreakGlassForbidden.into()),
        }
        let (id, decision) = decide_from_proto(req.into_inner())?;
        // Runs on the async worker: the table lock is held only for map updates and signals,
        // never across I/O that can stall.
        let r = self
            .approvals
            .decide(&id, decision.clone(), by.clone())
            .map_err(Fault::from)?;
        tracing::info!(id = %r.id, state = r.state.as_str(), uid = by.uid, pid = by.pid, user = ?by.user, via = %by.via, ?decision, "request decided");
        Ok(Response::new(request_to_proto(&r)))
    }

    type AuditQueryStream = ReceiverStream<Result<pb::AuditEntry, Status>>;

    async fn audit_query(
        &self,
        _req: Request<pb::AuditQueryRequest>,
    ) -> Result<Response<Self::AuditQueryStream>, Status> {
        Err(Status::unimplemented(
            "audit records are queried on airlock-server (airlock --server URL audit query)",
        ))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.caller(&req)?;
        // Subscribe before answering: every update after the client sees the response is
        // delivered.
        let updates = self.approvals.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward(updates, tx, self.stop.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
