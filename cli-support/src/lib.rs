//! Process plumbing shared by airlock's three programs, `airlockd` and `airlock` (crate
//! `airlock-agent`) and `airlock-server`: how they log ([`logging`]) and the man pages and shell
//! completions rendered from their clap definitions ([`docs`]).
//!
//! It lives in its own crate because the server must not depend on airlock-agent (kernel code)
//! and the shared domain crates (`airlock-approval`, `airlock-audit`) are no place for process
//! setup; without it both pieces would be duplicated in the agent and the server, and the three
//! programs' log behaviour and environment documentation could drift apart.

pub mod docs;
pub mod logging;
