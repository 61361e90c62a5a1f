//! airlock's host agent: the library behind `airlockd` and the `airlock` CLI.
//!
//! Flow (see docs/ARCHITECTURE.md): a policy is compiled by `airlock-policy`; [`agents`] resolves
//! its agent selectors to cgroups; a [`backend`] (BPF LSM, or the fanotify fallback) gates the
//! kernel operations and reports [`event::GateEvent`]s; [`daemon`] writes them to the audit log.

pub mod agents;
pub mod api;
pub mod backend;
pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod daemon_args;
pub mod docs;
pub mod event;
pub mod hold;
pub mod link;
pub mod metrics;
pub mod paths;
pub mod proc;

/// The eBPF object built from `ebpf-programs/` by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/airlock-ebpf"));
