//! Helpers shared by the server's integration tests (each test binary uses what it needs).
#![allow(dead_code)]

pub mod pg;
