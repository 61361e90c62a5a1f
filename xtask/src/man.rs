//! `cargo xtask man [--out DIR]`: the man pages and shell completions of airlock, airlockd and
//! airlock-server, rendered from their clap definitions (`DIR/man/`, `DIR/completions/SHELL/`).
//!
//! xtask does not link airlock-agent and airlock-server to render them itself: airlock-agent's
//! build compiles the eBPF programs (nightly and bpf-linker, which `cargo xtask setup`
//! installs, so xtask must build without them) and airlock-server pulls sqlx, tonic and axum;
//! every `cargo xtask` would pay for that. It builds the two binaries instead and runs their
//! hidden command line `__generate-docs DIR` (see `airlock_cli_support::docs`).
use crate::cargo;
use crate::util::{self, Ctx, Step};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries that write the documentation: `airlock` writes airlock's and airlockd's,
/// `airlock-server` its own.
const WRITERS: [&str; 2] = ["airlock", "airlock-server"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory; `man/` and `completions/` are written inside (existing files of the
    /// same names are replaced, others left alone) [default: target/docs].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<i32> {
    let out = match &args.out {
        Some(d) => std::path::absolute(d).with_context(|| format!("{}", d.display()))?,
        None => ctx.target.join("docs"),
    };
    let step = Step::new("build: airlock, airlock-server");
    cargo::build_docs_writers(ctx).context(
        "building the binaries that write the docs (airlock-agent needs nightly and \
         bpf-linker: `cargo xtask setup` installs them)",
    )?;
    step.done("ok");
    let step = Step::new(format!("docs: {}", out.display()));
    let files = generate(&ctx.bin_dir(), &out)?;
    let pages = files
        .iter()
        .filter(|f| f.starts_with(out.join("man")))
        .count();
    step.done(&format!(
        "{pages} man pages, {} completion scripts",
        files.len() - pages
    ));
    Ok(0)
}

/// Writes the man pages and completions of all three programs under `out` with the binaries
/// already built in `bin_dir` (debug or release); returns the files written. Reused by
/// packaging, which ships them.
pub fn generate(bin_dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for bin in WRITERS {
        let mut cmd = Command::new(bin_dir.join(bin));
        cmd.arg("__generate-docs").arg(out);
        let listed = util::stdout_of(&mut cmd)?;
        files.extend(listed.lines().map(PathBuf::from));
    }
    Ok(files)
}
