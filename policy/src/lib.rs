//! airlock policy v1: YAML documents (`apiVersion: airlock.dev/v1`, `kind: Policy`) parsed with
//! source locations, validated, and compiled to kernel identities that backends load.
//!
//! - [`load_paths`] / [`parse_str`]: files to [`Policy`]s, or every problem as [`Diagnostics`]
//!   (`file:line:column: field: message`, one per line).
//! - [`compile`]: policies to a [`CompiledPolicy`], resolving paths through a [`Resolver`]
//!   ([`HostResolver`] on a real host).
//! - [`effective_exec_map`], [`effective_exec_entry_map`], [`effective_protected_map`]: the one
//!   rule per object that the kernel maps hold, per agent when rules name agents ([`Scopes`]).
//! - [`load_and_compile`]: all of it, for `airlock policy check` and `airlockd` alike.
//! - [`yaml`], [`walk`], [`values`]: the located YAML tree, typed access to it that reports
//!   every problem, and the name, duration and glob rules; airlock-server reads its config
//!   with them, so its problems read like a policy's.
//!
//! The format is documented in `policies/README.md`.
mod check;
mod compile;
mod compiled;
mod diag;
mod effective;
mod load;
mod model;
mod resolve;
mod schema;
mod scope;
mod validate;
pub mod values;
pub mod walk;
/// The located YAML tree policies are read from; airlock-server reads its config with it too.
pub mod yaml;

#[cfg(test)]
mod tests;

pub use check::{Checked, load_and_compile};
pub use compile::{CompileError, compile, protected_ancestors};
pub use compiled::*;
pub use diag::{Diagnostic, Diagnostics, Location, Problem};
pub use effective::{
    block_key, effective_block_map, effective_connect_entry_map, effective_connect_map,
    effective_connect_wild_map, effective_exec_digest_map, effective_exec_entry_map,
    effective_exec_map, effective_privilege_map, effective_protected_map, merge_into, merge_rules,
    privilege_key,
};
pub use load::{LoadError, load_paths, parse_str};
pub use model::{
    ACTIONS, API_VERSION, AgentSpec, KIND, OPERATIONS, PRIVILEGES, PathSpec, Policy, Rule, Target,
    action_name, mode_name, op_names,
};
pub use resolve::{Content, FileId, HostResolver, Resolver, inode_key};
pub use schema::{DEFAULT_TIMEOUT, SchemaError};
pub use scope::{ANY_AGENT, Scopes, SlotKey, agent_slot, lookup};
pub use validate::SetError;
pub use values::{Glob, MAX_EXEC_NAME_LEN, MAX_NAME_LEN, MAX_TIMEOUT, ValueError, build_glob};
pub use walk::WalkError;
pub use yaml::YamlError;
