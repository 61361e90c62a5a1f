//! `cargo xtask`: orchestration only (setup, build, test tiers, guest VMs, demo/bench wrappers).
//! Product logic lives in the workspace crates; the e2e scenarios live in `tests/` (airlock-e2e).
mod bench;
mod cargo;
mod cpio;
mod deb;
mod guest;
mod initramfs;
mod kernels;
mod lint;
mod man;
mod package;
mod package_boot;
mod package_test;
mod report;
mod setup;
mod stream;
mod test;
mod util;
mod vm;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use kernels::Kernel;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use util::{Ctx, Step};

const ENV_HELP: &str = "\
Environment:
  CI=true                   missing prerequisites (root, qemu, guest kernel, BPF LSM) fail instead of skip
  AIRLOCK_QEMU_ACCEL        auto (default: KVM only if a probe boot works), tcg, kvm
  AIRLOCK_GUEST_TIMEOUT     seconds per guest kernel (default 600)
  AIRLOCK_HOST_TIMEOUT      seconds for the host tier (default 900)
  AIRLOCK_GUEST_MEM         guest memory in MiB (default 1024)
  AIRLOCK_GUEST_APPEND      extra guest kernel command-line words (before the lsm= override, if any)
  AIRLOCK_GUEST_STRIP=0     keep debug info in the guest's binaries
  AIRLOCK_VMLINUZ_6_1, AIRLOCK_VMLINUZ_6_12   use this vmlinuz instead of the cached Debian one
Files: guest kernels in .cache/kernels/, logs and images in target/xtask/, tests/guest-root/ (if
present) is copied into every guest image.";

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "airlock build/test orchestration", after_help = ENV_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (apt packages, nightly rust-src, bpf-linker, guest kernels).
    Setup {
        /// Guest kernels to fetch (default: all).
        #[arg(long, value_enum)]
        kernel: Option<Kernel>,
        /// Do not fetch guest kernels.
        #[arg(long, conflicts_with = "kernel")]
        no_kernels: bool,
    },
    /// Setup, build, then run the unit, host and guest test tiers (what .ci/run calls).
    Test(test::Args),
    /// Build, then run `airlock-e2e --demo [ARGS]` (root).
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (release), run `airlock-e2e --bench [ARGS]` on this kernel (root), then the
    /// exec/open overhead benchmark inside a guest on the BPF LSM backend.
    Bench(bench::Args),
    /// Boot a guest kernel and run a command inside (no command: interactive shell).
    Vm(vm::Args),
    /// Build, then write the man pages and shell completions of airlock, airlockd and
    /// airlock-server (DIR/man/, DIR/completions/{bash,zsh,fish}/).
    Man(man::Args),
    /// Build (release) the Debian packages airlock and airlock-server (target/debian/).
    Package(package::Args),
}

fn main() {
    util::install_signal_handlers();
    let cli = Cli::parse();
    let code = match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            if util::interrupted() { 130 } else { 1 }
        }
    };
    std::process::exit(code);
}

fn real_main(cli: Cli) -> Result<i32> {
    let ctx = Ctx::new()?;
    match cli.cmd {
        Cmd::Setup { kernel, no_kernels } => {
            let kernels = match (kernel, no_kernels) {
                (_, true) => Vec::new(),
                (Some(k), _) => vec![k],
                (None, _) => Kernel::ALL.to_vec(),
            };
            setup::run(&ctx, &setup::Opts { kernels })?;
            Ok(0)
        }
        Cmd::Test(args) => test::run(&ctx, &args),
        Cmd::Demo { args } => e2e_mode(&ctx, "demo", &args),
        Cmd::Bench(args) => bench::run(&ctx, &args),
        Cmd::Vm(args) => vm::run(&ctx, &args),
        Cmd::Man(args) => man::run(&ctx, &args),
        Cmd::Package(args) => package::run(&ctx, &args),
    }
}

/// `demo`: setup, build, then become `airlock-e2e --demo ARGS...`.
fn e2e_mode(ctx: &Ctx, mode: &str, args: &[String]) -> Result<i32> {
    if !util::is_root() {
        bail!(
            "`cargo xtask {mode}` needs root: airlock loads eBPF programs and fanotify marks. \
             Run it as root (e.g. `sudo -E env PATH=\"$PATH\" cargo xtask {mode}`)."
        );
    }
    setup::run(
        ctx,
        &setup::Opts {
            kernels: Vec::new(),
        },
    )?;
    // The demo runs the debug build the tests use.
    let step = Step::new("build: cargo build");
    cargo::build(ctx)?;
    step.done("ok");
    let bin_dir = ctx.bin_dir();
    let e2e = bin_dir.join("airlock-e2e");
    let mut cmd = Command::new(&e2e);
    cmd.arg(format!("--{mode}"))
        .args(args)
        .current_dir(&ctx.root);
    println!("+ {}", util::render(&cmd));
    // exec: the e2e binary gets the terminal and signals directly.
    let err = cmd.exec();
    Err(err).with_context(|| format!("exec {}", e2e.display()))
}
