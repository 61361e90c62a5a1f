//! PLACEHOLDER until its owner replaces this file.
/// Arguments.
#[derive(clap::Args, Debug)]
pub struct RunArgs {}
/// Entry point.
pub fn run(_a: RunArgs) -> anyhow::Result<std::process::ExitCode> { anyhow::bail!("not built yet") }
