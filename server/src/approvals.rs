//! `airlock.v1.Approvals` served by airlock-server: the same service a host serves on its
//! socket, over the whole fleet, for approvers holding an API token.
//!
//! Who may call: a principal with a valid token. A caller presenting a host certificate is
//! refused whatever else it sends: hosts and agents never decide. Every refusal is recorded
//! (who, when, channel, why).
use std::sync::Arc;

use airlock_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::broker::{Broker, Change, now_ms};
use crate::error::Fault;
use crate::wire;

/// Channel name recorded for votes through this API.
const CHANNEL: &str = "cli";
/// Events buffered per watcher.
const WATCH_BUFFER: usize = 256;

/// The Approvals service over the broker.
pub struct ApprovalsService {
    pub broker: Arc<Broker>,
    /// `airlock-server collector`: only the audit query is served.
    pub collector_only: bool,
}

impl ApprovalsService {
    async fn caller<T>(
        &self,
        req: &Request<T>,
        action: &str,
        id: Option<&str>,
    ) -> Result<Caller, Status> {
        let b = &self.broker;
        if self.collector_only && action != "audit" {
            let f = Fault::NotServed(crate::collector::COLLECTOR_ONLY.into());
            b.record("unknown", CHANNEL, action, id, f.code(), &f.to_string())
                .await;
            return Err(f.into());
        }
        if let Some(fp) = crate::pki::peer_fingerprint(req) {
            let f = Fault::Forbidden(
                "a host certificate cannot list or decide requests; approvers use an API token"
                    .into(),
            );
            b.record(
                &format!("cert:{}", &fp[..16.min(fp.len())]),
                CHANNEL,
                action,
                id,
                f.code(),
                &f.to_string(),
            )
            .await;
            return Err(f.into());
        }
        match crate::auth::principal(&b.store, req.metadata(), now_ms()).await {
            Ok(c) => {
                let p = &c.principal;
                if b.config().principal(p).is_none() {
                    let f =
                        Fault::Forbidden(format!("principal {p} is not in the server's config"));
                    b.record(p, CHANNEL, action, id, f.code(), &f.to_string())
                        .await;
                    return Err(f.into());
                }
                Ok(c)
            }
            Err(f) => {
                b.record("unknown", CHANNEL, action, id, f.code(), &f.to_string())
                    .await;
                Err(f.into())
            }
        }
    }
}

/// Whether `caller` may still read: its token is valid and its principal still in the
/// config.
async fn still_allowed(broker: &Broker, caller: &Caller) -> Result<(), Fault> {
    crate::auth::still_valid(&broker.store, caller, now_ms()).await?;
    let p = &caller.principal;
    if broker.config().principal(p).is_none() {
        return Err(Fault::Forbidden(format!(
            "principal {p} is not in the server's config"
        )));
    }
    Ok(())
}

fn matches(r: &crate::store::StoredRequest, host: &Option<String>, agent: &Option<String>) -> bool {
    host.as_ref().is_none_or(|h| &r.host == h)
        && agent.as_ref().is_none_or(|a| r.agent.as_ref() == Some(a))
}

/// The watch event for a change; `None` for votes (the wire knows opened and closed; closed
/// means the host reported the outcome).
fn event(c: &Change) -> Option<Result<pb::WatchEvent, Fault>> {
    let (kind, request) = match c {
        // Parsed once when it opened, whatever the number of watchers: on the way to a
        // decision.
        Change::Opened(p) => (
            pb::watch_event::Kind::Opened,
            Ok(wire::to_proto_with(&p.request, &p.body)),
        ),
        Change::Voted(_) | Change::Reminder(_) | Change::Escalated { .. } => return None,
        Change::Closed(r) => (pb::watch_event::Kind::Closed, wire::to_proto(r)),
    };
    Some(request.map(|r| pb::WatchEvent {
        kind: kind as i32,
        request: Some(r),
    }))
}

#[tonic::async_trait]
impl pb::approvals_server::Approvals for ApprovalsService {
    async fn list_pending(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        self.caller(&req, "list", None).await?;
        let f = req.into_inner();
        let rs = self.broker.pending(f.host, f.agent).await?;
        let requests = rs.iter().map(wire::to_proto).collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListPendingResponse { requests }))
    }

    async fn get_request(
        &self,
        req: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::HoldRequest>, Status> {
        let id = req.get_ref().id.clone();
        self.caller(&req, "show", Some(&id)).await?;
        airlock_approval::check_id(&id).map_err(|e| Fault::invalid("id", e.to_string()))?;
        let r = self
            .broker
            .store
            .request(&id)
            .await
            .map_err(Fault::from)?
            .ok_or_else(|| Fault::from(crate::store::StoreError::NotFound { id: id.clone() }))?;
        Ok(Response::new(wire::to_proto(&r)?))
    }

    async fn decide(
        &self,
        req: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::HoldRequest>, Status> {
        let id = req.get_ref().id.clone();
        let action = match &req.get_ref().decision {
            Some(pb::decide_request::Decision::Deny(_)) => "deny",
            _ => "approve",
        };
        let caller = self.caller(&req, action, Some(&id)).await?;
        let b = &self.broker;
        let result = async {
            let (id, decision) = airlock_approval::convert::decide_from_proto(req.into_inner())
                .map_err(|e| Fault::invalid(e.field, e.why))?;
            b.vote(
                &caller.principal,
                Some(&caller.token_id),
                CHANNEL,
                &id,
                decision,
            )
            .await
        }
        .await;
        match result {
            Ok(r) => Ok(Response::new(wire::to_proto(&r)?)),
            Err(f) => {
                b.record(
                    &caller.principal,
                    CHANNEL,
                    action,
                    Some(&id),
                    f.code(),
                    &f.to_string(),
                )
                .await;
                Err(f.into())
            }
        }
    }

    type AuditQueryStream = ReceiverStream<Result<pb::AuditEntry, Status>>;

    async fn audit_query(
        &self,
        req: Request<pb::AuditQueryRequest>,
    ) -> Result<Response<Self::AuditQueryStream>, Status> {
        let caller = self.caller(&req, "audit", None).await?;
        let q = req.into_inner();
        let query = crate::audit_query::AuditQuery::from_proto(&q)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let end = query
                .run(&broker, &tx, || still_allowed(&broker, &caller))
                .await;
            if let Err(f) = end {
                if matches!(f, Fault::Unauthenticated(_) | Fault::Forbidden(_)) {
                    let why = f.to_string();
                    broker
                        .record(&caller.principal, CHANNEL, "audit", None, f.code(), &why)
                        .await;
                }
                let _ = tx.send(Err(Status::from(f))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.caller(&req, "watch", None).await?;
        let f = req.into_inner();
        // Subscribe before answering: every change after the client sees the response is
        // delivered.
        let mut changes = self.broker.hub.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            // A watch outlives the check made when it opened: the token is checked again
            // every HOST_CHECK (from the replica's memory while it stays valid), and so is
            // the principal's place in the config, so that revoking a token, letting it
            // expire or removing the approver ends the stream within about a second, with
            // the error a new call would get.
            let mut recheck = tokio::time::interval(crate::link::HOST_CHECK);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            recheck.tick().await;
            loop {
                let item = tokio::select! {
                    _ = tx.closed() => return,
                    _ = recheck.tick() => match still_allowed(&broker, &caller).await {
                        Ok(()) => continue,
                        Err(f) => {
                            let why = f.to_string();
                            broker.record(&caller.principal, CHANNEL, "watch", None, f.code(), &why).await;
                            Err(f)
                        }
                    },
                    c = changes.recv() => match c {
                        Ok(c) if !matches(c.request(), &f.host, &f.agent) => continue,
                        Ok(c) => match event(&c) {
                            Some(e) => e,
                            None => continue,
                        },
                        Err(broadcast::error::RecvError::Lagged(missed)) => Err(Fault::Lagged { missed }),
                        Err(broadcast::error::RecvError::Closed) => Err(Fault::ShuttingDown),
                    },
                };
                let last = item.is_err();
                if tx.send(item.map_err(Status::from)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
