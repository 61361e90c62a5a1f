//! `cargo xtask vm --kernel 6.12 -- CMD...`: boot a guest with the debug binaries and run one
//! command (or an interactive shell) inside, for poking at the LSM programs by hand.
use crate::guest::{self, Boot};
use crate::initramfs::{self, Payload, Spec};
use crate::kernels::{self, Kernel};
use crate::stream::Outcome;
use crate::test::{guest_bins, guest_root_extra};
use crate::util::{Ctx, Step};
use crate::{cargo, setup};
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guest kernel.
    #[arg(long, value_enum, default_value = "6.12")]
    pub kernel: Kernel,
    /// Keep target/xtask/initramfs-vm.cpio.gz afterwards (and print its path).
    #[arg(long)]
    pub keep_initramfs: bool,
    /// Boot with `lsm=…,bpf` on the kernel command line.
    #[arg(long)]
    pub lsm_override: bool,
    /// Seconds before qemu is killed (non-interactive runs).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Extra file or directory for the guest: HOST[:GUEST] (GUEST defaults to /tmp/<name>).
    #[arg(long = "add", value_name = "HOST[:GUEST]")]
    pub add: Vec<String>,
    /// Do not run `cargo build` first.
    #[arg(long)]
    pub no_build: bool,
    /// Command run by the guest's /init (a single word is a shell snippet: 'dmesg | tail');
    /// none: an interactive shell on the console.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<i32> {
    setup::run(
        ctx,
        &setup::Opts {
            kernels: vec![args.kernel],
        },
    )?;
    if !args.no_build {
        let step = Step::new("build: cargo build");
        cargo::build(ctx)?;
        step.done("ok");
    }
    let gk = kernels::find(ctx, args.kernel)
        .with_context(|| format!("no guest kernel {}", args.kernel.short()))?;
    let mut extra = guest_root_extra(ctx);
    for a in &args.add {
        let (host, guest) = match a.split_once(':') {
            Some((h, g)) => (PathBuf::from(h), PathBuf::from(g)),
            None => {
                let h = PathBuf::from(a);
                let name = h
                    .file_name()
                    .with_context(|| format!("--add {a}: no file name"))?
                    .to_owned();
                (h.clone(), PathBuf::from("/tmp").join(name))
            }
        };
        if !host.exists() {
            bail!("--add {a}: {} does not exist", host.display());
        }
        extra.push((host, guest));
    }
    let xdir = ctx.xtask_dir()?;
    let initrd = xdir.join("initramfs-vm.cpio.gz");
    let interactive = args.cmd.is_empty();
    let spec = Spec {
        bins: guest_bins(ctx, None)
            .into_iter()
            .filter(|(p, _)| p.is_file())
            .collect(),
        extra,
        payload: if interactive {
            Payload::Shell
        } else {
            Payload::Command(initramfs::command_line(&args.cmd))
        },
        require_bpf_lsm: false,
    };
    initramfs::build(&spec, &initrd)?;
    let accel = guest::choose_accel(&gk, &xdir)?;
    let result = if interactive {
        guest::boot_interactive(&gk, &initrd, args.lsm_override, accel).map(|()| 0)
    } else {
        let label = args.kernel.short();
        let b = Boot {
            label,
            kernel: &gk,
            initrd: &initrd,
            lsm_override: args.lsm_override,
            accel,
            timeout: Duration::from_secs(args.timeout),
            log: xdir.join(format!("vm-{label}.log")),
            mem_mib: None,
        };
        guest::boot(&b).and_then(|r| match (r.rc, r.outcome) {
            (_, Outcome::Interrupted) => bail!("interrupted"),
            (Some(rc), _) => {
                println!("vm: command exited with {rc}");
                Ok(rc)
            }
            (None, o) => {
                r.print_tail(label);
                bail!("vm: no exit status from the guest (qemu {})", o.describe())
            }
        })
    };
    if args.keep_initramfs {
        println!("vm: kept {}", initrd.display());
    } else {
        let _ = std::fs::remove_file(&initrd);
    }
    result
}
