//! What the page shows of a request, as plain strings for the templates (which escape them).
use airlock_approval::{Release, RequestState};

use crate::broker::utc;
use crate::route::human;
use crate::store::StoredRequest;
use crate::wire::Parsed;

/// One request, ready to render.
#[derive(Clone, Debug)]
pub(crate) struct RequestView {
    pub id: String,
    pub host: String,
    pub agent: String,
    pub state: String,
    pub pending: bool,
    pub route: String,
    pub op: String,
    pub target: String,
    pub rule: String,
    pub policy: String,
    /// The launcher and their reason.
    pub launcher: String,
    pub reason: String,
    pub process: String,
    pub ancestry: Vec<String>,
    pub argv: String,
    pub cwd: String,
    pub created: String,
    pub deadline: String,
    /// "2 of 3 approvals" (pending) or what decided it.
    pub tally: String,
    pub votes: Vec<String>,
    pub outcome: String,
}

impl RequestView {
    /// The view of a stored request (its body parsed; an unreadable body shows what the row
    /// has).
    pub fn of(r: &StoredRequest) -> RequestView {
        let parsed = Parsed::new(r.clone()).ok();
        let c = parsed.as_ref().map(|p| &p.body.context);
        let dash = || "-".to_string();
        let approvals = r
            .votes
            .iter()
            .filter(|v| v.release == Release::Allow)
            .count();
        let votes = r
            .votes
            .iter()
            .map(|v| {
                let what = match (v.release, v.for_ms) {
                    (Release::Allow, None) => "approved once".to_string(),
                    (Release::Allow, Some(ms)) => format!("approved for {}", human(ms)),
                    (Release::Deny, _) => "denied".to_string(),
                };
                let reason = v
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                format!(
                    "{} {what} via {}, {}{reason}",
                    v.principal,
                    v.via,
                    utc(v.at_unix_ms)
                )
            })
            .collect();
        let shown = crate::text::shown;
        RequestView {
            id: r.id.clone(),
            host: r.host.clone(),
            agent: r.agent.clone().unwrap_or_else(dash),
            state: r.state.as_str().to_string(),
            pending: r.state == RequestState::Pending && r.decision.is_none(),
            route: r.route.clone().unwrap_or_else(|| "(none)".into()),
            op: c
                .and_then(|c| crate::config::OPERATIONS.iter().find(|(_, o)| *o == c.op))
                .map(|(name, _)| name.to_string())
                .unwrap_or_else(dash),
            target: c.and_then(|c| c.target_path.clone()).unwrap_or_else(dash),
            rule: c.and_then(|c| c.rule.clone()).unwrap_or_else(dash),
            policy: c.and_then(|c| c.policy.clone()).unwrap_or_else(dash),
            launcher: c
                .and_then(|c| c.launched_by.as_ref())
                .map(|l| {
                    let user = l.user.clone().unwrap_or_else(|| format!("uid {}", l.uid));
                    match &l.sudo_user {
                        Some(s) => format!("{user} (sudo by {s})"),
                        None => user,
                    }
                })
                .unwrap_or_else(dash),
            reason: c
                .and_then(|c| {
                    c.reason
                        .clone()
                        .or_else(|| c.launched_by.as_ref().and_then(|l| l.reason.clone()))
                })
                .unwrap_or_else(dash),
            process: c
                .map(|c| {
                    format!(
                        "{} (pid {}, uid {}{})",
                        c.exe.clone().unwrap_or_else(|| c.comm.clone()),
                        c.tgid,
                        c.uid,
                        if c.euid != c.uid {
                            format!(", euid {}", c.euid)
                        } else {
                            String::new()
                        }
                    )
                })
                .unwrap_or_else(dash),
            ancestry: c
                .map(|c| {
                    c.ancestry
                        .iter()
                        .map(|a| {
                            format!(
                                "{} {}",
                                a.pid,
                                a.exe.clone().unwrap_or_else(|| a.comm.clone())
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            argv: c
                .filter(|c| !c.argv.is_empty())
                .map(|c| {
                    let mut s = c.argv.join(" ");
                    if c.argv_truncated {
                        s.push_str(" …");
                    }
                    s
                })
                .unwrap_or_else(dash),
            cwd: c.and_then(|c| c.cwd.clone()).unwrap_or_else(dash),
            created: utc(r.created_unix_ms),
            deadline: utc(r.deadline_unix_ms),
            tally: format!("{approvals} of {} approvals", r.threshold.max(1)),
            votes,
            outcome: outcome(r),
        }
        .shown_safely(shown)
    }

    /// Every field a host or agent wrote, through [`crate::text::shown`].
    fn shown_safely(mut self, shown: fn(&str) -> String) -> RequestView {
        for f in [
            &mut self.agent,
            &mut self.target,
            &mut self.rule,
            &mut self.policy,
            &mut self.launcher,
            &mut self.reason,
            &mut self.process,
            &mut self.argv,
            &mut self.cwd,
            &mut self.outcome,
        ] {
            *f = shown(f);
        }
        for a in self.ancestry.iter_mut().chain(self.votes.iter_mut()) {
            *a = shown(a);
        }
        self
    }
}

/// What became of a request, in words.
fn outcome(r: &StoredRequest) -> String {
    let by = |d: &airlock_approval::DecisionRecord| {
        d.by.as_ref()
            .map(|a| {
                let who = a
                    .principal
                    .clone()
                    .or_else(|| a.user.clone())
                    .unwrap_or_else(|| format!("uid {}", a.uid));
                format!(" by {who} via {}", a.via)
            })
            .unwrap_or_default()
    };
    match (&r.decision, r.state) {
        (_, RequestState::TimedOut) => "timed out: nobody decided in time".into(),
        (_, RequestState::Abandoned) => "abandoned: the held process went away".into(),
        (Some(d), s) => {
            let what = match (d.release, d.for_ms) {
                (Release::Allow, None) => "approved once".to_string(),
                (Release::Allow, Some(ms)) => format!("approved for {}", human(ms)),
                (Release::Deny, _) => "denied".to_string(),
            };
            let reason = d
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let waiting = if s == RequestState::Pending {
                " (the host has not applied it yet)"
            } else {
                ""
            };
            format!("{what}{}{reason}{waiting}", by(d))
        }
        (None, RequestState::Pending) => "waiting for approvers".into(),
        (None, s) => s.as_str().to_string(),
    }
}
