//! `airlock-server`: see [`airlock_server::cli`].
fn main() -> std::process::ExitCode {
    airlock_server::cli::main()
}
