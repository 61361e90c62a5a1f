//! airlock-server: every host keeps one mTLS gRPC stream to it ([`link`]); it stores each
//! request ([`store`], SQLite or PostgreSQL), routes it to approvers ([`config`], [`route`]),
//! collects their votes ([`broker`]) from the CLI and other channels ([`approvals`]), and sends
//! the decision down the host's stream. Hosts get their certificates from the server's CA
//! ([`pki`]) in exchange for a one-time token ([`enroll`]). [`signing`] holds the request
//! signatures of the chat and webhook channels (Slack's, airlock's webhook scheme).
//!
//! The flow and the file that owns each step are in docs/ARCHITECTURE.md.
pub mod approvals;
pub mod audit_query;
pub mod audit_verify;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod collector;
pub mod config;
pub mod docs;
pub mod enroll;
pub mod error;
pub mod http;
pub mod link;
pub mod metrics;
pub mod outbound;
pub mod pki;
pub mod remind;
pub mod route;
pub mod secret_file;
pub mod signing;
pub mod slack;
pub mod store;
pub mod teams;
pub mod testing;
pub mod text;
pub mod web;
pub mod webhook;
pub mod wire;
