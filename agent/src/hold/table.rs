//! The request state machine.
//!
//! ```text
//!   held event ──▶ Pending ──decide──▶ Approved | Denied
//!        ▲            │  ├──deadline──▶ TimedOut (released per onTimeout)
//!        └─ same key ─┘  └──holders gone──▶ Abandoned
//! ```
//!
//! A held event whose [`HoldKey`] matches a pending request joins it (a restart after a stray
//! SIGCONT, another thread of the same process); anything else opens a new request. Deciding
//! first writes the standing decision (if any), then releases every holder through the
//! [`Gate`]; only when the gate succeeds does the request close, so a failed release leaves it
//! pending and nothing recorded changes.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::store::Store;
use super::{
    Approver, Decision, DecisionRecord, Gate, Herald, HoldError, HoldKey, Holder, OnTimeout,
    Release, Request, RequestContext, RequestState, Standing, Update, Vote,
};

/// Closed requests kept in memory for `airlock show`.
const MAX_CLOSED: usize = 1024;

/// What the daemon knows about a new hold beyond its key.
pub struct Opening {
    pub context: RequestContext,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

/// Result of [`HoldTable::on_held`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub id: String,
    /// A new request was opened (rather than an attempt joining a pending one).
    pub opened: bool,
}

/// Pending and recently closed requests.
pub struct HoldTable {
    pending: HashMap<String, Request>,
    by_key: HashMap<HoldKey, String>,
    closed: VecDeque<Request>,
    gate: Arc<dyn Gate>,
    store: Option<Store>,
    updates: broadcast::Sender<Update>,
    /// Every update, unbounded: the daemon's record writer and the server link read this one,
    /// because a record or an outcome must never be skipped (the broadcast above may lag and
    /// drop for slow watchers; they are told with DATA_LOSS).
    journal: Option<mpsc::UnboundedSender<Update>>,
    /// Told of each request as it opens and right before its holders are released.
    herald: Option<Arc<dyn Herald>>,
    /// Pending requests whose close the herald was told of, but whose release failed: not
    /// told again when the release is retried (a timeout is retried every tick).
    heralded: HashSet<String>,
}

impl HoldTable {
    /// An empty table releasing holds through `gate`, persisting to `store` when given.
    pub fn new(gate: Arc<dyn Gate>, store: Option<Store>) -> HoldTable {
        HoldTable {
            pending: HashMap::new(),
            by_key: HashMap::new(),
            closed: VecDeque::new(),
            gate,
            store,
            updates: broadcast::channel(1024).0,
            journal: None,
            herald: None,
            heralded: HashSet::new(),
        }
    }

    /// Tells `h` of every request as it opens and as it closes, before its holders go.
    pub fn set_herald(&mut self, h: Arc<dyn Herald>) {
        self.herald = Some(h);
    }

    fn herald(&mut self, u: &Update) {
        let Some(h) = &self.herald else { return };
        if let Update::Closed(r) = u
            && !self.heralded.insert(r.id.clone())
        {
            return;
        }
        h.tell(u);
    }

    /// `r` as it will be once closed: what the herald is told before the release.
    fn closing(r: &Request, state: RequestState, decision: &DecisionRecord) -> Update {
        let mut c = r.clone();
        c.state = state;
        c.decision = Some(decision.clone());
        Update::Closed(c)
    }

    /// Sends every later update to `tx` too, losslessly (see the field's comment).
    pub fn set_journal(&mut self, tx: mpsc::UnboundedSender<Update>) {
        self.journal = Some(tx);
    }

    fn announce(&self, u: Update) {
        if let Some(j) = &self.journal {
            let _ = j.send(u.clone());
        }
        let _ = self.updates.send(u);
    }

    /// Watchers of new and closed requests.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// Pending requests, oldest first.
    pub fn pending(&self) -> Vec<Request> {
        let mut v: Vec<Request> = self.pending.values().cloned().collect();
        v.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        v
    }

    /// How many requests are pending.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// One request, pending or recently closed.
    pub fn get(&self, id: &str) -> Result<Request, HoldError> {
        if let Some(r) = self.pending.get(id) {
            return Ok(r.clone());
        }
        self.closed
            .iter()
            .rev()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| HoldError::NotFound { id: id.to_string() })
    }

    fn persist(&self, r: &Request) {
        if let Some(s) = &self.store
            && let Err(e) = s.save(r)
        {
            // The in-memory table stays authoritative; the event log records the decision too.
            tracing::error!(id = %r.id, error = %e, "cannot persist request");
        }
    }

    fn new_id(&mut self, now_unix_ms: u64) -> String {
        loop {
            // Unique across the fleet without asking anyone (see airlock_approval::id); the loop
            // only guards against this table's own (astronomically unlikely) repeat.
            let id = airlock_approval::new_request_id(now_unix_ms);
            if !self.pending.contains_key(&id) && !self.closed.iter().any(|r| r.id == id) {
                return id;
            }
        }
    }

    /// A held attempt arrived. Joins the pending request with the same key, or opens one with
    /// what `open` supplies (called only then: gathering context costs procfs reads).
    pub fn on_held(
        &mut self,
        key: HoldKey,
        holder: Holder,
        now_unix_ms: u64,
        open: impl FnOnce() -> Opening,
    ) -> Joined {
        if let Some(id) = self.by_key.get(&key).cloned()
            && let Some(r) = self.pending.get_mut(&id)
        {
            r.attempts += 1;
            let new_holder = !r.holders.contains(&holder);
            if new_holder {
                r.holders.push(holder);
            }
            let snapshot = r.clone();
            if new_holder {
                self.persist(&snapshot);
            }
            return Joined { id, opened: false };
        }
        let o = open();
        let id = self.new_id(now_unix_ms);
        let r = Request {
            id: id.clone(),
            state: RequestState::Pending,
            key,
            holders: vec![holder],
            attempts: 1,
            created_unix_ms: now_unix_ms,
            deadline_unix_ms: now_unix_ms.saturating_add(o.timeout.as_millis() as u64),
            on_timeout: o.on_timeout,
            context: o.context,
            decision: None,
        };
        self.by_key.insert(key, id.clone());
        self.pending.insert(id.clone(), r.clone());
        // Announce first: the person deciding waits on this; the disk copy only matters if the
        // daemon dies, and then the held thread re-reports itself (LSM: pinned ring and the
        // restart's SIGCONT; fallback: the backstop).
        let opened = Update::Opened(r.clone());
        self.announce(opened.clone());
        self.herald(&opened);
        self.persist(&r);
        Joined { id, opened: true }
    }

    /// Puts requests read back from the store (after a restart) into the table. Holders for
    /// which `still_held` is false are dropped; a request left without holders is closed as
    /// abandoned.
    pub fn restore(
        &mut self,
        requests: Vec<Request>,
        closed: Vec<Request>,
        now_unix_ms: u64,
        still_held: impl Fn(&Holder) -> bool,
    ) {
        for r in closed {
            self.push_closed(r);
        }
        for mut r in requests {
            r.holders.retain(|h| still_held(h));
            if r.holders.is_empty() {
                self.close(r, RequestState::Abandoned, None, now_unix_ms);
                continue;
            }
            self.by_key.insert(r.key, r.id.clone());
            self.pending.insert(r.id.clone(), r);
        }
    }

    fn push_closed(&mut self, r: Request) {
        if self.closed.len() >= MAX_CLOSED {
            self.closed.pop_front();
        }
        self.closed.push_back(r);
    }

    fn close(
        &mut self,
        mut r: Request,
        state: RequestState,
        decision: Option<DecisionRecord>,
        _now: u64,
    ) -> Request {
        self.pending.remove(&r.id);
        self.heralded.remove(&r.id);
        if self.by_key.get(&r.key) == Some(&r.id) {
            self.by_key.remove(&r.key);
        }
        r.state = state;
        r.decision = decision;
        self.persist(&r);
        self.push_closed(r.clone());
        self.announce(Update::Closed(r.clone()));
        r
    }

    /// Applies a person's decision. Errors leave the request as it was.
    pub fn decide(
        &mut self,
        id: &str,
        decision: Decision,
        by: Approver,
        now_unix_ms: u64,
        now_boot_ns: u64,
    ) -> Result<Request, HoldError> {
        self.decide_voted(id, decision, by, Vec::new(), now_unix_ms, now_boot_ns)
    }

    /// Applies a decision made by `votes` (a server's N-of-M), kept on the decision record.
    pub fn decide_voted(
        &mut self,
        id: &str,
        decision: Decision,
        by: Approver,
        votes: Vec<Vote>,
        now_unix_ms: u64,
        now_boot_ns: u64,
    ) -> Result<Request, HoldError> {
        let Some(r) = self.pending.get(id) else {
            return Err(match self.get(id) {
                Ok(c) => HoldError::Closed {
                    id: id.to_string(),
                    state: c.state.as_str(),
                },
                Err(e) => e,
            });
        };
        let (release, standing, record) = match &decision {
            Decision::Approve { for_ } => {
                let standing = match for_ {
                    None => None,
                    Some(d) => {
                        check_duration(*d)?;
                        Some(Standing {
                            cgroup_id: r.context.cgroup_id,
                            op: r.key.op,
                            dev: r.key.dev,
                            ino: r.key.ino,
                            release: Release::Allow,
                            until_boot_ns: Some(now_boot_ns.saturating_add(d.as_nanos() as u64)),
                        })
                    }
                };
                (
                    Release::Allow,
                    standing,
                    (for_.map(|d| d.as_millis() as u64), false, None),
                )
            }
            Decision::Deny { always, reason } => {
                let standing = always.then_some(Standing {
                    cgroup_id: r.context.cgroup_id,
                    op: r.key.op,
                    dev: r.key.dev,
                    ino: r.key.ino,
                    release: Release::Deny,
                    until_boot_ns: None,
                });
                (Release::Deny, standing, (None, *always, reason.clone()))
            }
        };
        let state = match release {
            Release::Allow => RequestState::Approved,
            Release::Deny => RequestState::Denied,
        };
        let rec = DecisionRecord {
            votes,
            release,
            for_ms: record.0,
            always: record.1,
            reason: record.2,
            by: Some(by),
            at_unix_ms: now_unix_ms,
        };
        if let Some(s) = &standing {
            self.gate.standing(s)?;
        }
        // Before the release: a released process may be gone a moment later.
        let r = r.clone();
        self.herald(&Self::closing(&r, state, &rec));
        self.gate.release(&r.key, &r.holders, release)?;
        Ok(self.close(r, state, Some(rec), now_unix_ms))
    }

    /// Times out requests past their deadline (released per their `onTimeout`) and abandons
    /// those whose holders are all gone. Returns the requests it closed.
    pub fn tick(&mut self, now_unix_ms: u64, alive: impl Fn(&Holder) -> bool) -> Vec<Request> {
        let mut out = Vec::new();
        let ids: Vec<String> = self.pending.keys().cloned().collect();
        for id in ids {
            let Some(r) = self.pending.get(&id) else {
                continue;
            };
            if !r.holders.iter().any(&alive) {
                let r = r.clone();
                out.push(self.close(r, RequestState::Abandoned, None, now_unix_ms));
                continue;
            }
            if now_unix_ms < r.deadline_unix_ms {
                continue;
            }
            let release = match r.on_timeout {
                OnTimeout::Deny => Release::Deny,
                OnTimeout::Allow => Release::Allow,
            };
            let secs = (r.deadline_unix_ms - r.created_unix_ms) / 1000;
            let rec = DecisionRecord {
                votes: Vec::new(),
                release,
                for_ms: None,
                always: false,
                reason: Some(format!(
                    "no decision within {secs}s (onTimeout: {})",
                    match release {
                        Release::Allow => "allow",
                        Release::Deny => "deny",
                    }
                )),
                by: None,
                at_unix_ms: now_unix_ms,
            };
            // Before the release, as for a decision (once: a failed release is retried next
            // tick without telling again).
            let r = r.clone();
            self.herald(&Self::closing(&r, RequestState::TimedOut, &rec));
            if let Err(e) = self.gate.release(&r.key, &r.holders, release) {
                tracing::error!(id = %id, error = %e, "releasing a timed-out hold failed; retrying next tick");
                continue;
            }
            out.push(self.close(r, RequestState::TimedOut, Some(rec), now_unix_ms));
        }
        out
    }
}

fn check_duration(d: Duration) -> Result<(), HoldError> {
    airlock_approval::check_grant(d).map_err(|why| HoldError::BadDuration {
        value: format!("{}s", d.as_secs_f64()),
        why,
    })
}

#[cfg(test)]
mod tests;
