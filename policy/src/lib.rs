//! airlock policy v1: YAML documents (`apiVersion: airlock.dev/v1`, `kind: Policy`) parsed with
//! source locations, validated, and compiled to kernel identities that backends load.
mod compiled;

pub use compiled::*;
