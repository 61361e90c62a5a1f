//! Reminders and escalation notices: a task per broker that publishes
//! [`Change::Reminder`] when a route's `reminder` comes due (that long before the request's
//! deadline) and [`Change::Escalated`] when its `escalation.after` has passed since the request
//! opened, while the request is still pending and undecided. Channels (webhook, Teams, Slack)
//! turn them into messages; who may vote after escalation is `route::check_vote`'s, by the
//! clock, whether or not a notice went out.
//!
//! ```text
//!  broker.opened ──(request, re-sent?)──▶ schedule: (due, id, kind) in a min-heap
//!                                            │ sleep_until(earliest due)
//!                                            ▼
//!  still open here, host linked here, store row pending and undecided ─▶ hub.publish
//! ```
//!
//! No polling: the task sleeps until the earliest due time and wakes early only for a newly
//! scheduled request. At a due time it reads that one request's row (a vote on another replica
//! may have decided it).
//!
//! **Once per request, on one replica.** Each notice is scheduled once per request on the
//! replica where the request opened (the broker hands it over with the request; see
//! [`Broker::set_reminders`]) and fires only while the request's host is linked to this replica,
//! so a fleet behind several replicas sends it once: when the host moved to another replica,
//! that replica re-sees the request and takes over.
//!
//! **Restarts.** A server keeps no schedule on disk. After a restart hosts re-send their pending
//! requests; a re-sent request that this replica does not have in memory is scheduled again,
//! but only for notices still in the future: one whose time passed was sent before the restart
//! (or fell in the downtime) and is not repeated, so nobody is paged twice for one request.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::broker::{Broker, Change, now_ms};
use crate::config::Route;
use crate::wire::Parsed;

/// A request handed to the reminder task.
#[derive(Debug)]
pub struct Opened {
    /// The request as it opened (route, times).
    pub request: Arc<Parsed>,
    /// Re-sent by its host (after a reconnect or a server restart) rather than new: notices
    /// whose time has passed are not sent.
    pub resent: bool,
}

/// Which notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Reminder,
    Escalation,
}

/// One notice due at a Unix time in ms.
type Due = Reverse<(u64, String, Kind)>;

/// Errors of the reminder task.
#[derive(Debug, thiserror::Error)]
pub enum RemindError {
    /// The broker already has a reminder task.
    #[error("this broker already has a reminder task")]
    AlreadyRunning,
}

/// When `route`'s notices for `p` are due (Unix ms): the reminder `reminder` before the
/// deadline, the escalation `after` after it opened. A notice that could only come at or
/// before the request opened (a reminder longer than the whole wait: the opening message is
/// the reminder) or at or after its deadline (the request times out first) is left out.
fn due_times(route: &Route, p: &Parsed) -> Vec<(u64, Kind)> {
    let r = &p.request;
    let (created, deadline) = (r.created_unix_ms, r.deadline_unix_ms);
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut out = Vec::new();
    if let Some(d) = route.reminder {
        let at = deadline.saturating_sub(ms(d));
        if at > created {
            out.push((at, Kind::Reminder));
        }
    }
    if let Some(e) = &route.escalation {
        let at = created.saturating_add(ms(e.after));
        if at < deadline {
            out.push((at, Kind::Escalation));
        }
    }
    out
}

/// Starts the reminder task of `broker`; it ends with the broker.
pub fn spawn(broker: &Arc<Broker>) -> Result<tokio::task::JoinHandle<()>, RemindError> {
    let (tx, rx) = mpsc::unbounded_channel();
    if !broker.set_reminders(tx) {
        return Err(RemindError::AlreadyRunning);
    }
    Ok(tokio::spawn(run(Arc::downgrade(broker), rx)))
}

async fn run(broker: Weak<Broker>, mut rx: mpsc::UnboundedReceiver<Opened>) {
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    // Notices in the heap per request: a request handed over twice (its host re-sent it after
    // the broker's memory was emptied) is not scheduled twice.
    let mut queued: HashMap<String, usize> = HashMap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        let wake = async {
            match next {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = rx.recv() => {
                let Some(o) = got else { return };
                let Some(b) = broker.upgrade() else { return };
                if !queued.contains_key(&o.request.request.id) {
                    let n = schedule(&b, &o, &mut heap);
                    if n > 0 {
                        queued.insert(o.request.request.id.clone(), n);
                    }
                }
            }
            () = wake => {
                let Some(b) = broker.upgrade() else { return };
                let now = now_ms();
                while let Some(Reverse((at, _, _))) = heap.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse((_, id, kind))) = heap.pop() else { break };
                    if let Some(n) = queued.get_mut(&id) {
                        *n -= 1;
                        if *n == 0 {
                            queued.remove(&id);
                        }
                    }
                    fire(&b, &id, kind).await;
                }
            }
        }
    }
}

/// Puts `o`'s notices in `heap`, as its route in the config in force says; how many.
fn schedule(b: &Broker, o: &Opened, heap: &mut BinaryHeap<Due>) -> usize {
    let r = &o.request.request;
    let cfg = b.config();
    let Some(route) = r
        .route
        .as_deref()
        .and_then(|n| cfg.routes.iter().find(|rt| rt.name == n))
    else {
        return 0;
    };
    let now = now_ms();
    let mut n = 0;
    for (at, kind) in due_times(route, &o.request) {
        if o.resent && at <= now {
            continue;
        }
        heap.push(Reverse((at, r.id.clone(), kind)));
        n += 1;
    }
    n
}

/// Publishes the notice `kind` for request `id` if it is still due: open on this replica,
/// its host linked here, pending and undecided in the store, and its route (after any
/// reload) still asking for it.
async fn fire(b: &Broker, id: &str, kind: Kind) {
    if !b.is_open_here(id) {
        return;
    }
    let row = match b.store.request(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(id, error = %e, "cannot read a request for its reminder; not sent");
            return;
        }
    };
    if row.state.is_closed() || row.decision.is_some() || !b.hub.is_linked(&row.host) {
        return;
    }
    let cfg = b.config();
    let Some(route) = row
        .route
        .as_deref()
        .and_then(|n| cfg.routes.iter().find(|rt| rt.name == n))
    else {
        return;
    };
    let change = match (kind, &route.escalation) {
        (Kind::Reminder, _) if route.reminder.is_some() => Change::Reminder(row),
        (Kind::Escalation, Some(e)) => Change::Escalated {
            request: row,
            to: e.to.clone(),
        },
        _ => return,
    };
    tracing::info!(id, notice = ?kind, "request still undecided; notifying");
    b.hub.publish(change);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredRequest;

    fn parsed(created: u64, deadline: u64) -> Parsed {
        let body = crate::wire::Body {
            tgid: 1,
            attempts: 1,
            on_timeout: Default::default(),
            context: crate::testing::context("h"),
        };
        Parsed {
            request: StoredRequest {
                id: "x".into(),
                host: "h".into(),
                agent: None,
                state: airlock_approval::RequestState::Pending,
                created_unix_ms: created,
                deadline_unix_ms: deadline,
                route: Some("r".into()),
                threshold: 1,
                body: String::new(),
                decision: None,
                votes: Vec::new(),
                updated_unix_ms: created,
            },
            body,
        }
    }

    /// Route `r` with these settings (in seconds), read from a config as the server reads it.
    fn route(reminder: Option<u64>, after: Option<u64>) -> Route {
        let mut yaml = String::from(
            "principals:\n  a: { groups: [sre] }\n  b: { groups: [oncall] }\n\
             routes:\n  - name: r\n    approvers: [sre]\n",
        );
        if let Some(s) = reminder {
            yaml.push_str(&format!("    reminder: {s}s\n"));
        }
        if let Some(s) = after {
            yaml.push_str(&format!(
                "    escalation: {{ after: {s}s, to: [oncall] }}\n"
            ));
        }
        crate::config::parse(&yaml, "server.yaml")
            .unwrap()
            .routes
            .remove(0)
    }

    #[test]
    fn reminders_come_before_the_deadline_and_escalations_after_the_opening() {
        let p = parsed(1_000_000, 1_300_000);
        assert_eq!(
            due_times(&route(Some(60), Some(120)), &p),
            [(1_240_000, Kind::Reminder), (1_120_000, Kind::Escalation)]
        );
        assert_eq!(due_times(&route(None, None), &p), []);
    }

    #[test]
    fn notices_that_could_not_come_while_the_request_waits_are_left_out() {
        let p = parsed(1_000_000, 1_300_000);
        // A reminder as long as the whole wait, an escalation after the deadline.
        assert_eq!(due_times(&route(Some(300), Some(300)), &p), []);
        assert_eq!(due_times(&route(Some(3600), Some(86_400)), &p), []);
    }
}
