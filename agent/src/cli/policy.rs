//! PLACEHOLDER until its owner replaces this file.
/// Arguments.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {}
/// Entry point.
pub fn run(_a: PolicyArgs) -> anyhow::Result<std::process::ExitCode> { anyhow::bail!("not built yet") }
