//! Routing and voting rules, pure (no I/O): which route takes a request ([`ServerConfig::route_for`]),
//! who may vote on it ([`check_vote`]), and when the votes decide it ([`tally`]).
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use airlock_approval::{Approver, DecisionRecord, Op, Release, RequestContext, Vote};

use crate::config::{Channel, Glob, HostUser, Match, Principal, Route, ServerConfig};

/// What a route is matched against.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The host's enrolled name (from its certificate). Routes match this rather than the
    /// context's `host`, which the host reports about itself.
    pub host: &'a str,
    /// The host's labels, from enrolment.
    pub labels: &'a BTreeMap<String, String>,
    /// The request as the host described it.
    pub context: &'a RequestContext,
}

impl ServerConfig {
    /// The first route whose match fits `s`; `None` when no route does (the request cannot be
    /// decided through the server).
    pub fn route_for(&self, s: &Subject) -> Option<&Route> {
        self.routes.iter().find(|r| r.matching.matches(s))
    }

    /// The principal named `name`.
    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.principals.get(name)
    }
}

impl Match {
    /// Whether every criterion given matches `s` (any entry of a list will do).
    pub fn matches(&self, s: &Subject) -> bool {
        let c = s.context;
        let any = |globs: &[Glob], value: Option<&str>| {
            globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.is_match(v)))
        };
        any(&self.hosts, Some(s.host))
            && self
                .labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|have| have == v))
            && any(&self.agents, c.agent.as_deref())
            && any(&self.rules, c.rule.as_deref())
            && (self.operations.is_empty() || self.operations.contains(&c.op))
            && any(&self.paths, c.target_path.as_deref())
            && (self.binaries.is_empty()
                || (c.op == Op::Exec
                    && (any(&self.binaries, c.target_path.as_deref())
                        || any(&self.binaries, c.exe.as_deref()))))
    }
}

/// Why a vote is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No route takes the request, so nobody may decide it through the server.
    #[error(
        "no route of the server config takes this request, so it cannot be decided through \
         airlock-server; it times out on its host per its rule's onTimeout"
    )]
    NoRoute,
    /// The vote came through a channel the route does not list (the API behind the CLI is
    /// always open to approvers; the other channels only where the route names them, so that
    /// whoever holds a webhook receiver's secret cannot decide another route's requests).
    #[error("route {route} does not take decisions from the {channel} channel")]
    ChannelNotOnRoute {
        route: String,
        channel: &'static str,
    },
    /// A vote through a channel name the server does not know (a caller bug).
    #[error("votes through {via:?} are not taken: not a channel")]
    UnknownChannel { via: String },
    /// A Slack vote on a web-only route (its messages carry a link, no buttons).
    #[error("route {route} is web-only: decide on the web page, not in Slack")]
    WebOnly { route: String },
    /// An approval by a principal known only through the identity provider, for an agent
    /// whose launcher no config principal is: nobody can tell it is not their own agent.
    #[error(
        "{principal} is not in the server config and this agent's launcher is no known          principal, so the self-approval rule cannot be checked: only a principal of the          config may approve it (anyone eligible may deny)"
    )]
    LauncherUnknown { principal: String },
    /// The caller's principal is not in the config (removed since its token was issued).
    #[error("principal {principal:?} is not in the server config")]
    UnknownPrincipal { principal: String },
    /// The vote names another principal than the caller (a caller bug, or an impersonation
    /// attempt): votes are counted per principal, so they must be the caller's own.
    #[error("{principal} cannot cast a vote as {vote_principal}")]
    NotOwnVote {
        principal: String,
        vote_principal: String,
    },
    /// The principal is in none of the route's approver groups (nor, once escalated, its
    /// escalation groups).
    #[error(
        "{principal} may not vote on requests of route {route}: only members of {} may",
        groups.join(", ")
    )]
    NotAnApprover {
        principal: String,
        route: String,
        /// The groups that may vote now.
        groups: Vec<String>,
    },
    /// The principal is only in the route's escalation groups and the delay has not passed.
    #[error(
        "{principal} may vote on requests of route {route} only after escalation, in {}",
        human(*wait_ms)
    )]
    NotYetEscalated {
        principal: String,
        route: String,
        /// Milliseconds until the escalation.
        wait_ms: u64,
    },
    /// The principal launched the agent: approving its own agent's request would defeat the
    /// point of asking someone else.
    #[error(
        "{principal} launched this agent (as host user {launcher}) and may not approve its \
         requests; another approver must"
    )]
    SelfApproval { principal: String, launcher: String },
    /// The route requires a reason with a deny.
    #[error("route {route} requires a reason to deny (the agent's operator sees it)")]
    ReasonRequired { route: String },
}

/// `2m30s`, `45s`, `0s`: seconds rounded up, so "in 0s" only when it is due.
pub(crate) fn human(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The principals who count as the agent's launcher on this request: those with a
/// `host_users` entry matching the launcher's user or `SUDO_USER` on the subject's host.
pub fn launcher_principals<'c>(cfg: &'c ServerConfig, subject: &Subject) -> Vec<&'c str> {
    cfg.principals
        .iter()
        .filter(|(_, p)| launcher_user(p, subject).is_some())
        .map(|(name, _)| name.as_str())
        .collect()
}

/// The launcher's host user name through which `p` is the launcher, if it is.
fn launcher_user<'s>(p: &Principal, subject: &Subject<'s>) -> Option<&'s str> {
    let l = subject.context.launched_by.as_ref()?;
    // Both: `sudo airlock run` runs as root, and the person behind it is SUDO_USER.
    [l.user.as_deref(), l.sudo_user.as_deref()]
        .into_iter()
        .flatten()
        .find(|user| p.host_users.iter().any(|h| h.matches(user, subject.host)))
}

/// May `principal` cast `vote` on this request (opened at `created_ms`, routed to `route`)
/// at `now_ms`? The principal must exist and cast its own vote; be in the route's approver
/// groups, or in its escalation groups once `created_ms + after` has passed; not approve a
/// request of an agent it launched; and give a reason to deny where the route asks for one.
///
/// A launcher may deny: stopping one's own agent never widens what it can do.
pub fn check_vote(
    cfg: &ServerConfig,
    route: &Route,
    principal: &str,
    vote: &Vote,
    subject: &Subject,
    created_ms: u64,
    now_ms: u64,
) -> Result<(), Refusal> {
    check_vote_with(
        cfg,
        route,
        principal,
        &[],
        vote,
        subject,
        created_ms,
        now_ms,
    )
}

/// The principal as the rules see it: the config's entry, with `idp_groups` (approver groups
/// an identity provider vouched for at sign-in, see `crate::web`) added. A principal missing
/// from the config exists only through such groups; then its host user is taken to be the
/// principal's name up to any `@` (`alice@example.com` launched an agent as `alice`), so the
/// self-approval rule still has a name to compare.
pub fn effective_principal<'c>(
    cfg: &'c ServerConfig,
    principal: &str,
    idp_groups: &[String],
) -> Option<Cow<'c, Principal>> {
    match cfg.principal(principal) {
        Some(p) if idp_groups.is_empty() => Some(Cow::Borrowed(p)),
        Some(p) => {
            let mut q = p.clone();
            for g in idp_groups {
                if !q.groups.contains(g) {
                    q.groups.push(g.clone());
                }
            }
            Some(Cow::Owned(q))
        }
        None if idp_groups.is_empty() => None,
        None => {
            let user = principal.split('@').next().unwrap_or(principal);
            Some(Cow::Owned(Principal {
                groups: idp_groups.to_vec(),
                host_users: vec![HostUser {
                    user: user.to_owned(),
                    hosts: None,
                }],
            }))
        }
    }
}

/// [`check_vote`] for a principal with approver groups from an identity provider on top of
/// the config's (see [`effective_principal`]).
#[allow(clippy::too_many_arguments)]
pub fn check_vote_with(
    cfg: &ServerConfig,
    route: &Route,
    principal: &str,
    idp_groups: &[String],
    vote: &Vote,
    subject: &Subject,
    created_ms: u64,
    now_ms: u64,
) -> Result<(), Refusal> {
    let Some(p) = effective_principal(cfg, principal, idp_groups) else {
        return Err(Refusal::UnknownPrincipal {
            principal: principal.to_owned(),
        });
    };
    let p = &*p;
    if vote.principal != principal {
        return Err(Refusal::NotOwnVote {
            principal: principal.to_owned(),
            vote_principal: vote.principal.clone(),
        });
    }
    let Some(ch) = Channel::parse(&vote.via) else {
        return Err(Refusal::UnknownChannel {
            via: vote.via.clone(),
        });
    };
    if ch != Channel::Cli && !route.channels.contains(&ch) {
        return Err(Refusal::ChannelNotOnRoute {
            route: route.name.clone(),
            channel: ch.as_str(),
        });
    }
    // Checked here, against the route the broker actually uses (not only in the Slack
    // handler, which could see another route after a reload).
    if ch == Channel::Slack && route.web_only {
        return Err(Refusal::WebOnly {
            route: route.name.clone(),
        });
    }
    // Someone known only through an identity provider has no host user of record, so the
    // self-approval rule can only be kept when the launcher is a known principal (who is
    // then someone else). Otherwise they may deny, never approve.
    if vote.release == Release::Allow
        && cfg.principal(principal).is_none()
        && launcher_principals(cfg, subject).is_empty()
    {
        return Err(Refusal::LauncherUnknown {
            principal: principal.to_owned(),
        });
    }
    let in_any = |groups: &[String]| p.groups.iter().any(|g| groups.contains(g));
    let escalated = |after: Duration| now_ms >= created_ms.saturating_add(millis(after));
    if !in_any(&route.approvers) {
        match &route.escalation {
            Some(e) if in_any(&e.to) => {
                if !escalated(e.after) {
                    let due = created_ms.saturating_add(millis(e.after));
                    return Err(Refusal::NotYetEscalated {
                        principal: principal.to_owned(),
                        route: route.name.clone(),
                        wait_ms: due - now_ms,
                    });
                }
            }
            _ => {
                let mut groups = route.approvers.clone();
                if let Some(e) = &route.escalation
                    && escalated(e.after)
                {
                    groups.extend(e.to.iter().cloned());
                }
                return Err(Refusal::NotAnApprover {
                    principal: principal.to_owned(),
                    route: route.name.clone(),
                    groups,
                });
            }
        }
    }
    if vote.release == Release::Allow
        && let Some(launcher) = launcher_user(p, subject)
    {
        return Err(Refusal::SelfApproval {
            principal: principal.to_owned(),
            launcher: launcher.to_owned(),
        });
    }
    let has_reason = vote.reason.as_deref().is_some_and(|r| !r.trim().is_empty());
    if vote.release == Release::Deny && route.deny_requires_reason && !has_reason {
        return Err(Refusal::ReasonRequired {
            route: route.name.clone(),
        });
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The decision `votes` (already checked by [`check_vote`], in the order cast) make under an
/// N-of-M route needing `threshold` approvals, or `None` while the request stays open.
///
/// The first deny decides (denied, with that vote's `always` and reason): one approver who
/// objects is enough to stop an action. Otherwise the request is approved once `threshold`
/// distinct principals approved (a principal voting twice counts once). The grant is the most
/// conservative one asked for: once if any approving vote said once, else the shortest
/// duration. `by` names the principal whose vote completed the decision.
pub fn tally(threshold: u32, votes: &[Vote], now_ms: u64) -> Option<DecisionRecord> {
    // A threshold of 0 is refused by the config; never decide without a vote regardless.
    let threshold = threshold.max(1) as usize;
    let mut approvers: Vec<&str> = Vec::new();
    let mut approving: Vec<&Vote> = Vec::new();
    for v in votes {
        match v.release {
            Release::Deny => {
                return Some(DecisionRecord {
                    votes: Vec::new(),
                    release: Release::Deny,
                    for_ms: None,
                    always: v.always,
                    reason: v.reason.clone(),
                    by: Some(server_approver(&v.principal)),
                    at_unix_ms: now_ms,
                });
            }
            Release::Allow => {
                approving.push(v);
                if !approvers.contains(&v.principal.as_str()) {
                    approvers.push(&v.principal);
                }
                if approvers.len() >= threshold {
                    return Some(approved(&approving, &v.principal, now_ms));
                }
            }
        }
    }
    None
}

/// The approval made by `approving` votes, completed by `by`.
fn approved(approving: &[&Vote], by: &str, now_ms: u64) -> DecisionRecord {
    let for_ms = if approving.iter().any(|v| v.for_ms.is_none()) {
        None
    } else {
        approving.iter().filter_map(|v| v.for_ms).min()
    };
    let reasons: Vec<&str> = approving
        .iter()
        .filter_map(|v| v.reason.as_deref())
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    DecisionRecord {
        votes: Vec::new(),
        release: Release::Allow,
        for_ms,
        always: false,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        by: Some(server_approver(by)),
        at_unix_ms: now_ms,
    }
}

/// How a decision made by the server's votes is recorded.
fn server_approver(principal: &str) -> Approver {
    Approver {
        uid: 0,
        pid: 0,
        user: None,
        via: "server".to_owned(),
        principal: Some(principal.to_owned()),
    }
}

#[cfg(test)]
mod tests;
