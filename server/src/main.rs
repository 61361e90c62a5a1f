//! `airlock-server`: see [`airlock_server::cli`].
fn main() -> std::process::ExitCode {
    // `airlock-server __generate-docs DIR`: its man pages and completions, for `cargo xtask
    // man` (hidden: not part of the clap definition).
    if let Some(code) = airlock_cli_support::docs::hidden_command(
        "airlock-server",
        std::env::args_os().skip(1),
        airlock_server::docs::generate,
    ) {
        return code;
    }
    airlock_server::cli::main()
}
