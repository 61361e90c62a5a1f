//! `cargo xtask bench`: the host benchmark (`airlock-e2e --bench`, release build, this kernel's
//! backend), then the exec/open overhead benchmark again inside a QEMU guest on the BPF LSM
//! backend, whose figures are printed as measured under emulation when the guest runs on TCG.
use crate::guest::{self, Boot};
use crate::initramfs::{self, Payload, Spec};
use crate::kernels::{self, Kernel};
use crate::stream::Outcome;
use crate::test::{GUEST_BINS, guest_root_extra};
use crate::util::{self, Ctx, Step};
use crate::{cargo, setup};
use anyhow::{Context as _, Result, bail};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guest kernel for the BPF LSM overhead run.
    #[arg(long, value_enum, default_value = "6.12")]
    pub guest: Kernel,
    /// Only the host benchmark (no guest run).
    #[arg(long)]
    pub no_guest: bool,
    /// Only the guest run (no host benchmark).
    #[arg(long, conflicts_with = "no_guest")]
    pub only_guest: bool,
    /// Rounds of the guest run (each: off, on outside, on inside).
    #[arg(long, default_value_t = 3)]
    pub guest_rounds: usize,
    /// Seconds before the guest run is stopped (it loads a 10,000-binary policy under
    /// emulation: longer than a test tier's default).
    #[arg(long, env = "AIRLOCK_GUEST_TIMEOUT", default_value_t = 1200)]
    pub guest_timeout: u64,
    /// Arguments for `airlock-e2e --bench` on the host (e.g. `--rounds 9`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<i32> {
    if !util::is_root() {
        bail!(
            "`cargo xtask bench` needs root: airlock loads eBPF programs and fanotify marks. \
             Run it as root (e.g. `sudo -E env PATH=\"$PATH\" cargo xtask bench`)."
        );
    }
    let kernels = if args.no_guest {
        Vec::new()
    } else {
        vec![args.guest]
    };
    setup::run(ctx, &setup::Opts { kernels })?;
    let step = Step::new("build: cargo build --release");
    cargo::build_release(ctx)?;
    step.done("ok");
    let bin_dir = ctx.root.join("target/release");
    let mut rc = 0;
    if !args.only_guest {
        let mut cmd = Command::new(bin_dir.join("airlock-e2e"));
        cmd.arg("--bench").args(&args.args).current_dir(&ctx.root);
        println!("+ {}", util::render(&cmd));
        let st = cmd.status().context("running airlock-e2e --bench")?;
        util::check_interrupted()?;
        if !st.success() {
            println!("bench: host benchmark failed ({st})");
            rc = 1;
        }
    }
    if !args.no_guest && guest_run(ctx, args, &bin_dir)? != 0 {
        rc = 1;
    }
    Ok(rc)
}

/// Boots the guest with the release binaries and runs the overhead benchmark on its BPF LSM.
fn guest_run(ctx: &Ctx, args: &Args, bin_dir: &std::path::Path) -> Result<i32> {
    if !guest::qemu_available() {
        bail!("{} is not installed (cargo xtask setup)", guest::QEMU);
    }
    let gk = kernels::find(ctx, args.guest)
        .with_context(|| format!("no guest kernel {}", args.guest.short()))?;
    let xdir = ctx.xtask_dir()?;
    let accel = guest::choose_accel(&gk, &xdir)?;
    let initrd = xdir.join("initramfs-bench.cpio.gz");
    let payload = format!(
        "/bin/airlock-e2e --bench --in-guest {} --rounds {}",
        accel.as_str(),
        args.guest_rounds
    );
    let spec = Spec {
        bins: GUEST_BINS
            .iter()
            .map(|b| (bin_dir.join(b), b.to_string()))
            .collect(),
        extra: guest_root_extra(ctx),
        payload: Payload::Command(payload),
        require_bpf_lsm: true,
    };
    let step = Step::new("bench: guest initramfs (release binaries)");
    initramfs::build(&spec, &initrd)?;
    step.done("ok");
    let label = args.guest.short();
    let b = Boot {
        label,
        kernel: &gk,
        initrd: &initrd,
        lsm_override: gk.needs_lsm_override(),
        accel,
        timeout: Duration::from_secs(args.guest_timeout),
        log: xdir.join(format!("bench-guest-{label}.log")),
        mem_mib: None,
    };
    let r = guest::boot(&b);
    let _ = std::fs::remove_file(&initrd);
    let r = r?;
    if r.outcome == Outcome::Interrupted {
        bail!("interrupted");
    }
    if r.no_bpf_lsm {
        bail!("guest {label}: no active BPF LSM (see {})", b.log.display());
    }
    match r.rc {
        Some(rc) => Ok(rc),
        None => {
            r.print_tail(label);
            bail!(
                "guest {label}: no exit status from the guest (qemu {}), log {}",
                r.outcome.describe(),
                b.log.display()
            )
        }
    }
}
