//! The package tier's boot: the Debian tree with the airlock and airlock-server packages
//! installed by dpkg is packed whole into an initramfs and booted with systemd as PID 1 on the
//! 6.12 guest kernel (BPF LSM active). `tests/package-boot/airlock-boot-check`, started by
//! systemd after airlockd.service, checks what the units promise under a real service manager:
//! enabled by the package, READY through Type=notify, gating under the unit's hardening
//! (an exec in an `airlock run` scope under airlock.slice held and approved), reload by
//! SIGHUP, a frozen airlockd restarted by the watchdog with its pins kept, a clean stop, and
//! airlock-server starting as its system user once set up.
use crate::guest::{self, Accel, Boot};
use crate::kernels::{self, Kernel};
use crate::package_test::Chroot;
use crate::report::Tally;
use crate::stream::Outcome;
use crate::util::{self, Ctx, fmt_dur};
use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The kernel booted: BPF LSM is what the gate must hold on.
const KERNEL: Kernel = Kernel::V6_12;
/// Whole tree plus its unpacked copy in RAM, with room for airlockd and the server.
const MEM_MIB: u32 = 2048;
const TIMEOUT: Duration = Duration::from_secs(420);

/// Adds the boot check to `c` (with the packages installed), packs it, boots it; the checks
/// the guest printed go into the returned tally.
pub fn run(ctx: &Ctx, c: &Chroot, xdir: &Path) -> Result<Tally> {
    let mut t = Tally::default();
    let Some(gk) = kernels::find(ctx, KERNEL) else {
        let what = format!(
            "package boot: no guest kernel {}: {} (cargo xtask setup)",
            KERNEL.short(),
            kernels::describe_source(ctx, KERNEL)
        );
        if ctx.ci {
            t.fail(what);
        } else {
            println!("SKIP {what}");
            t.skip(what);
        }
        return Ok(t);
    };
    prepare(ctx, c)?;
    let initrd = xdir.join("package-boot.cpio");
    pack(&c.root, &initrd)?;
    let accel = guest::choose_accel(&gk, xdir)?;
    let log = xdir.join("package-boot.log");
    let r = guest::boot(&Boot {
        label: "boot",
        kernel: &gk,
        initrd: &initrd,
        lsm_override: gk.needs_lsm_override(),
        accel,
        timeout: TIMEOUT,
        log: log.clone(),
        mem_mib: Some(MEM_MIB),
    })?;
    let _ = std::fs::remove_file(&initrd);
    if r.outcome == Outcome::Interrupted {
        bail!("interrupted");
    }
    t = r.tally.clone();
    match r.rc {
        Some(rc) => t.finish_e2e("package boot", rc == 0),
        None => {
            r.print_tail("boot");
            t.fail(format!(
                "package boot: the boot check never finished (qemu {} after {}), log {}",
                r.outcome.describe(),
                fmt_dur(r.elapsed),
                log.display()
            ));
        }
    }
    if matches!(accel, Accel::Tcg) {
        println!(
            "package boot: under TCG (no usable KVM), {}",
            fmt_dur(r.elapsed)
        );
    }
    Ok(t)
}

/// The boot check and its unit, a short watchdog for the test, `/init` → systemd; what a
/// RAM-only boot does not need is left out of the image.
fn prepare(ctx: &Ctx, c: &Chroot) -> Result<()> {
    let src = ctx.root.join("tests/package-boot");
    let copy = |from: &str, to: &str, mode: u32| -> Result<()> {
        let dest = c.path(to);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(src.join(from), &dest).with_context(|| format!("{}", dest.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    copy(
        "airlock-boot-check",
        "usr/local/sbin/airlock-boot-check",
        0o755,
    )?;
    copy(
        "airlock-boot-check.service",
        "etc/systemd/system/airlock-boot-check.service",
        0o644,
    )?;
    copy(
        "watchdog.conf",
        "etc/systemd/system/airlockd.service.d/watchdog.conf",
        0o644,
    )?;
    c.ok(&["systemctl", "enable", "airlock-boot-check.service"])?;
    std::fs::write(c.path("etc/hostname"), "airlock-guest\n")?;
    // The kernel runs /init from an initramfs; systemd then boots the tree as the real root
    // (no /etc/initrd-release, so it is not an initrd to it).
    let init = c.path("init");
    let _ = std::fs::remove_file(&init);
    std::os::unix::fs::symlink("/lib/systemd/systemd", &init)?;
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/locale",
        "usr/share/doc",
    ] {
        let _ = std::fs::remove_dir_all(c.path(dir));
    }
    Ok(())
}

/// `find . | cpio -o -H newc` in `root`: an uncompressed initramfs (the kernel takes it as it
/// is; compressing ~250 MB would cost more than loading it).
fn pack(root: &Path, out: &Path) -> Result<()> {
    let f = std::fs::File::create(out).with_context(|| format!("{}", out.display()))?;
    let st = Command::new("sh")
        .arg("-c")
        .arg("find . -xdev -print0 | cpio --null --quiet -o -H newc")
        .current_dir(root)
        .stdout(f)
        .stderr(Stdio::inherit())
        .status()
        .context("cpio")?;
    if !st.success() {
        bail!("packing {} with cpio: {st}", root.display());
    }
    let size = std::fs::metadata(out)?.len();
    println!(
        "package boot: {} ({} MiB)",
        util::quote(out.as_os_str()),
        size >> 20
    );
    Ok(())
}
