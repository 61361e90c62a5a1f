//! `cargo xtask test`: setup, build, then the lint, unit, host and guest tiers; a per-tier table and a
//! final `xtask: N passed, M failed[, K skipped]` line.
use crate::guest::{self, Accel, Boot};
use crate::initramfs::{self, Payload, Spec};
use crate::kernels::{self, Kernel};
use crate::report::{self, Row, Tally};
use crate::stream::{self, Flow, Outcome};
use crate::util::{self, Ctx, Step, fmt_dur};
use crate::{cargo, setup};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// fmt, clippy -D warnings, the dependency policy, unused dependencies (`lint.rs`).
    Lint,
    Unit,
    Host,
    /// The .deb packages installed, upgraded, removed and purged in a Debian chroot
    /// (`package_test.rs`).
    Package,
    Guest,
    All,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which tier(s) to run.
    #[arg(long, value_enum, default_value = "all")]
    pub tier: Tier,
    /// Only this guest kernel (default: all of them).
    #[arg(long, value_enum)]
    pub kernel: Option<Kernel>,
    /// Per-kernel guest timeout, seconds.
    #[arg(long, env = "AIRLOCK_GUEST_TIMEOUT", default_value_t = 600)]
    pub guest_timeout: u64,
    /// Host-tier timeout, seconds.
    #[arg(long, env = "AIRLOCK_HOST_TIMEOUT", default_value_t = 900)]
    pub host_timeout: u64,
    /// Skip `cargo xtask setup` (it is idempotent and takes seconds when all is installed).
    #[arg(long)]
    pub no_setup: bool,
    /// Skip `cargo build` and use the binaries in target/debug as they are (the unit tier still
    /// compiles what it tests).
    #[arg(long)]
    pub no_build: bool,
    /// Use this binary as airlock-e2e (host tier, and /bin/airlock-e2e in the guest): for
    /// testing the harness itself.
    #[arg(long, hide = true, value_name = "PATH")]
    pub e2e: Option<PathBuf>,
}

impl Args {
    fn runs(&self, t: Tier) -> bool {
        self.tier == Tier::All || self.tier == t
    }
    fn kernels(&self) -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| self.kernel.is_none_or(|w| w == *k))
            .collect()
    }
}

/// The guest tier's payload: the e2e binary, output on the console.
pub const GUEST_E2E: &str = "/bin/airlock-e2e --tier guest --bin-dir /bin";
/// Binaries every guest image carries (from target/debug), as `/bin/<name>`.
pub const GUEST_BINS: [&str; 4] = ["airlockd", "airlock", "airlock-e2e", "airlock-server"];

/// `(host path, guest name)` for GUEST_BINS, with an optional replacement airlock-e2e.
pub fn guest_bins(ctx: &Ctx, e2e: Option<&Path>) -> Vec<(PathBuf, String)> {
    GUEST_BINS
        .iter()
        .map(|b| match e2e {
            Some(p) if *b == "airlock-e2e" => (p.to_path_buf(), b.to_string()),
            _ => (ctx.bin_dir().join(b), b.to_string()),
        })
        .collect()
}

/// Extra guest files: `tests/guest-root/` (if present) is copied to the guest's `/`.
pub fn guest_root_extra(ctx: &Ctx) -> Vec<(PathBuf, PathBuf)> {
    let gr = ctx.root.join("tests/guest-root");
    if gr.is_dir() {
        vec![(gr, PathBuf::from("/"))]
    } else {
        Vec::new()
    }
}

/// A prerequisite is missing: a failure under CI, a skip otherwise.
fn missing(ctx: &Ctx, t: &mut Tally, what: String) {
    if ctx.ci {
        println!("FAIL {what} (CI=true: missing prerequisites are failures)");
        t.fail(what);
    } else {
        println!("SKIP {what}");
        t.skip(what);
    }
}

/// Runs everything; returns the process exit code.
pub fn run(ctx: &Ctx, args: &Args) -> Result<i32> {
    let t0 = Instant::now();
    let mut rows = Vec::new();
    let mut total = Tally::default();
    let row = |rows: &mut Vec<Row>,
               total: &mut Tally,
               name: &str,
               t: Tally,
               time: Duration,
               status: Option<String>| {
        rows.push(Row {
            name: name.to_string(),
            status: status.unwrap_or_else(|| t.counts()),
            time,
        });
        total.add(name, &t);
    };

    if !args.no_setup {
        let started = Instant::now();
        let kernels = if args.runs(Tier::Guest) {
            args.kernels()
        } else if args.runs(Tier::Package) {
            vec![Kernel::V6_12]
        } else {
            Vec::new()
        };
        let mut t = Tally::default();
        let status = match setup::run(ctx, &setup::Opts { kernels }) {
            Ok(()) => "ok".to_string(),
            Err(e) if ctx.ci => {
                t.fail(format!("setup: {e:#}"));
                "FAILED".into()
            }
            Err(e) => {
                println!(
                    "xtask: warning: setup incomplete, carrying on (tiers check what they need): {e:#}"
                );
                "incomplete (see above)".into()
            }
        };
        row(
            &mut rows,
            &mut total,
            "setup",
            t,
            started.elapsed(),
            Some(status),
        );
    }
    util::check_interrupted()?;

    let built = if args.no_build {
        println!(
            "\n(--no-build: using the binaries in {} as they are)",
            ctx.bin_dir().display()
        );
        Ok(())
    } else {
        let step = Step::new("build: cargo build");
        let built = cargo::build(ctx);
        let mut t = Tally::default();
        if let Err(e) = &built {
            t.fail(format!("build: {e:#}"));
        }
        let status = if built.is_ok() { "ok" } else { "FAILED" };
        let d = step.done(status);
        row(&mut rows, &mut total, "build", t, d, Some(status.into()));
        built
    };
    util::check_interrupted()?;

    if args.runs(Tier::Lint) {
        let step = Step::new("lint: fmt, clippy, dependencies");
        let t = crate::lint::run(ctx)?;
        let d = step.done(&t.counts());
        row(&mut rows, &mut total, "lint", t, d, None);
    }
    util::check_interrupted()?;
    if built.is_ok() {
        if args.runs(Tier::Unit) {
            let step = Step::new("unit tier: cargo test");
            let t = cargo::test(ctx)?;
            let d = step.done(&t.counts());
            row(&mut rows, &mut total, "unit", t, d, None);
        }
        util::check_interrupted()?;
        if args.runs(Tier::Host) {
            let step = Step::new("host tier");
            let t = host_tier(ctx, args)?;
            let d = step.done(&t.counts());
            row(&mut rows, &mut total, "host", t, d, None);
        }
        util::check_interrupted()?;
        if args.runs(Tier::Package) {
            let step = Step::new("package tier");
            let t = if util::is_root() {
                crate::package_test::run(ctx)?
            } else {
                let mut t = Tally::default();
                missing(
                    ctx,
                    &mut t,
                    "package tier: needs root (chroot, dpkg)".into(),
                );
                t
            };
            let d = step.done(&t.counts());
            row(&mut rows, &mut total, "package", t, d, None);
        }
        util::check_interrupted()?;
        if args.runs(Tier::Guest) {
            guest_tier(ctx, args, &mut |name, t, d| {
                row(&mut rows, &mut total, name, t, d, None)
            })?;
        }
    }

    report::print_table(&rows, &total);
    println!("total time {}", fmt_dur(t0.elapsed()));
    println!("xtask: {}", total.counts());
    Ok(if total.failed > 0 { 1 } else { 0 })
}

fn host_tier(ctx: &Ctx, args: &Args) -> Result<Tally> {
    let mut t = Tally::default();
    if !util::is_root() {
        missing(
            ctx,
            &mut t,
            "host tier: needs root (the e2e loads eBPF programs and fanotify marks)".into(),
        );
        return Ok(t);
    }
    let bin_dir = ctx.bin_dir();
    let e2e = args
        .e2e
        .clone()
        .unwrap_or_else(|| bin_dir.join("airlock-e2e"));
    if !e2e.is_file() {
        t.fail(format!("host: {} missing after the build", e2e.display()));
        return Ok(t);
    }
    let log = ctx.xtask_dir()?.join("host.log");
    let mut cmd = Command::new(&e2e);
    cmd.args(["--tier", "host", "--bin-dir"])
        .arg(&bin_dir)
        .current_dir(&ctx.root);
    let opts = stream::Opts {
        prefix: "[host] ",
        log: Some(&log),
        timeout: Some(Duration::from_secs(args.host_timeout)),
        isolate: false,
    };
    let (outcome, _) = stream::run(cmd, &opts, |l| {
        t.e2e_line(l);
        Flow::Continue
    })?;
    match outcome {
        Outcome::Exited(st) => t.finish_e2e("host", st.success()),
        Outcome::Interrupted => anyhow::bail!("interrupted"),
        other => t.fail(format!(
            "host: airlock-e2e {} (timeout {}s), log {}",
            other.describe(),
            args.host_timeout,
            log.display()
        )),
    }
    Ok(t)
}

fn guest_tier(ctx: &Ctx, args: &Args, row: &mut dyn FnMut(&str, Tally, Duration)) -> Result<()> {
    let kernels = args.kernels();
    if !guest::qemu_available() {
        for k in &kernels {
            let mut t = Tally::default();
            missing(
                ctx,
                &mut t,
                format!("guest {}: {} not installed", k.short(), guest::QEMU),
            );
            row(&format!("guest {}", k.short()), t, Duration::ZERO);
        }
        return Ok(());
    }
    let step = Step::new("guest tier: initramfs");
    let xdir = ctx.xtask_dir()?;
    let initrd = xdir.join("initramfs-guest.cpio.gz");
    let spec = Spec {
        bins: guest_bins(ctx, args.e2e.as_deref()),
        extra: guest_root_extra(ctx),
        payload: Payload::Command(GUEST_E2E.into()),
        require_bpf_lsm: true,
    };
    if let Err(e) = initramfs::build(&spec, &initrd) {
        let d = step.done("FAILED");
        let mut t = Tally::default();
        t.fail(format!("guest: building the initramfs: {e:#}"));
        row("guest initramfs", t, d);
        return Ok(());
    }
    step.done("ok");

    let mut accel: Option<Accel> = None;
    for k in kernels {
        util::check_interrupted()?;
        let step = Step::new(format!("guest tier: kernel {}", k.short()));
        let label = k.short();
        let mut t = Tally::default();
        match kernels::find(ctx, k) {
            None => missing(
                ctx,
                &mut t,
                format!(
                    "guest {label}: no guest kernel: {} (cargo xtask setup)",
                    kernels::describe_source(ctx, k)
                ),
            ),
            Some(gk) => {
                let accel = match accel {
                    Some(a) => a,
                    None => *accel.insert(guest::choose_accel(&gk, &xdir)?),
                };
                t = run_kernel(
                    ctx,
                    label,
                    &gk,
                    &initrd,
                    accel,
                    Duration::from_secs(args.guest_timeout),
                    &xdir,
                )?;
            }
        }
        let d = step.done(&t.counts());
        row(&format!("guest {label}"), t, d);
    }
    Ok(())
}

fn run_kernel(
    ctx: &Ctx,
    label: &str,
    gk: &kernels::GuestKernel,
    initrd: &std::path::Path,
    accel: Accel,
    budget: Duration,
    xdir: &std::path::Path,
) -> Result<Tally> {
    let start = Instant::now();
    // Boot without lsm= first unless the config says bpf is not in the default list.
    let mut lsm_override = gk.needs_lsm_override();
    let mut attempt = 0;
    let r = loop {
        attempt += 1;
        let b = Boot {
            label,
            kernel: gk,
            initrd,
            lsm_override,
            accel,
            timeout: budget
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(1)),
            log: xdir.join(format!("guest-{label}.log")),
            mem_mib: None,
        };
        let r = guest::boot(&b)?;
        if r.no_bpf_lsm && !lsm_override && attempt == 1 {
            println!(
                "guest {label}: bpf not in the default LSM list ({}); retrying with {}",
                r.lsm.as_deref().unwrap_or("?"),
                guest::LSM_OVERRIDE
            );
            lsm_override = true;
            continue;
        }
        break r;
    };
    println!(
        "guest {label}: kernel command line \"{}\"; active LSMs: {}",
        guest::append_line(lsm_override),
        r.lsm.as_deref().unwrap_or("(not printed)")
    );
    let mut t = r.tally.clone();
    if r.outcome == Outcome::Interrupted {
        anyhow::bail!("interrupted");
    }
    if r.no_bpf_lsm {
        missing(
            ctx,
            &mut t,
            format!(
                "guest {label}: kernel {} has no active BPF LSM even with {}",
                gk.release,
                guest::LSM_OVERRIDE
            ),
        );
        return Ok(t);
    }
    match r.rc {
        Some(rc) => t.finish_e2e(&format!("guest {label}"), rc == 0),
        None => {
            r.print_tail(label);
            t.fail(format!(
                "guest {label}: no `AIRLOCK-GUEST-DONE` sentinel (qemu {} after {}), log {}",
                r.outcome.describe(),
                fmt_dur(r.elapsed),
                xdir.join(format!("guest-{label}.log")).display()
            ));
        }
    }
    if let Some(d) = r.to_init {
        println!(
            "guest {label}: boot-to-init {}, whole run {}",
            fmt_dur(d),
            fmt_dur(start.elapsed())
        );
    }
    Ok(t)
}
