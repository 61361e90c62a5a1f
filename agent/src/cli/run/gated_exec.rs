//! `airlock __gated-exec`: the first program `systemd-run --scope` starts inside the agent's
//! new scope. It waits until airlockd lists the scope's cgroup as gated, then execs CMD in its
//! place (same process, same scope).
//!
//! Why: `systemd-run --scope -- CMD` moves itself into the scope and execs CMD at once, so
//! CMD's first actions raced airlockd's inotify on the cgroup tree; booting the package under
//! systemd showed `dpkg` running ungated before airlockd reported the scope gated. The
//! cgroupfs path waits before it forks CMD; this gives the systemd path the same guarantee,
//! from inside the scope, where the cgroup is known for certain.
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::cgroup;

/// The hidden subcommand's name, as `airlock run` passes it to systemd-run. Parsed before
/// the CLI's clap definition (see [`hidden_command`]) so that man pages and completions,
/// rendered from that definition, never show it.
pub const NAME: &str = "__gated-exec";

/// `airlock __gated-exec …` as its own command line.
#[derive(clap::Parser, Debug)]
#[command(name = "airlock __gated-exec")]
pub struct GatedExecCli {
    #[command(flatten)]
    pub args: GatedExecArgs,
}

/// When `args` (without the program name) start with [`NAME`], runs it and returns the exit
/// code; else `None`.
pub fn hidden_command(mut args: impl Iterator<Item = OsString>) -> Option<std::process::ExitCode> {
    if args.next().as_deref() != Some(std::ffi::OsStr::new(NAME)) {
        return None;
    }
    use clap::Parser as _;
    let cli = GatedExecCli::parse_from(std::iter::once(OsString::from(NAME)).chain(args));
    Some(run(cli.args).unwrap_or_else(|e| {
        eprintln!("airlock run: {e:#}");
        std::process::ExitCode::from(126)
    }))
}

/// `airlock __gated-exec [--unguarded] --state-dir DIR -- CMD...` (internal; `airlock run`
/// writes this command line).
#[derive(clap::Args, Debug)]
pub struct GatedExecArgs {
    /// airlockd's state directory (its status lists the gated cgroups).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Exec CMD even when airlockd does not gate the cgroup (as `airlock run --unguarded`).
    #[arg(long)]
    pub unguarded: bool,
    /// The agent's command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// Waits for the gate, then execs CMD; returns only on failure (an exit code for `airlock`:
/// 126 refused or not executable, 127 not found, as shells do).
pub fn run(args: GatedExecArgs) -> anyhow::Result<std::process::ExitCode> {
    if !args.unguarded {
        let id = own_cgroup_id()?;
        super::wait_until_gated(&args.state_dir, id, super::GATE_TIMEOUT).with_context(|| {
            format!("agent cgroup (id {id}) is not gated; refusing to start an ungated agent (--unguarded runs it anyway)")
        })?;
    }
    let e = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    eprintln!(
        "airlock run: {}: {e}",
        std::path::Path::new(&args.command[0]).display()
    );
    Ok(std::process::ExitCode::from(
        if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    ))
}

/// The id of the cgroup this process is in (the scope systemd-run made).
fn own_cgroup_id() -> anyhow::Result<u64> {
    let mount = cgroup::cgroup2_mount().context("cgroup v2")?;
    let path = cgroup::pid_cgroup_path_bytes(std::process::id()).context("own cgroup")?;
    let dir = cgroup::cgroup_dir(&mount, std::ffi::OsStr::from_bytes(&path));
    Ok(cgroup::cgroup_id(&dir)?)
}
