#![no_std]
// This file exists so that the agent can name this crate as a build-dependency (cache
// invalidation); the programs live in main.rs.
