//! airlock's approval domain, shared by `airlockd` (which holds actions and asks) and
//! `airlock-server` (which routes the asking to people and collects their decisions).
//!
//! - [`Op`]: the gated operations;
//! - [`request`]: a request's context, state, votes and decision, and who decided;
//! - [`id`]: request ids that are unique across a fleet without coordination;
//! - [`convert`]: these types ↔ the `airlock.v1` wire messages, checked in the wire → domain
//!   direction (unknown enum values and malformed decisions are named, not guessed at).
//!
//! Nothing here knows about kernels, cgroups or fanotify: the server links this crate and never
//! the agent.
pub mod convert;
pub mod id;
mod op;
pub mod request;

pub use id::{check_id, new_request_id};
pub use op::Op;
pub use request::{
    Ancestor, Approver, Decision, DecisionRecord, Launcher, MAX_GRANT, OnTimeout, Release,
    RequestContext, RequestState, Vote, check_grant,
};
