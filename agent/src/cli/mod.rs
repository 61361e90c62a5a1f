//! The `airlock` CLI, one file per subcommand.
