//! Booting a guest kernel with qemu: command line, accelerator choice, serial console streaming
//! (prefixed, logged), deadline, and parsing of the /init markers and e2e result lines.
use crate::initramfs::{self, MARK_BOOT, MARK_DONE, MARK_LSM, MARK_NO_BPF_LSM, Payload, Spec};
use crate::kernels::GuestKernel;
use crate::report::Tally;
use crate::stream::{self, Flow, Outcome};
use crate::util::{self, fmt_dur};
use anyhow::{Context as _, Result, bail};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";
const BASE_APPEND: &str = "console=ttyS0 panic=-1 quiet";
/// Used when the kernel's default CONFIG_LSM lacks bpf.
pub const LSM_OVERRIDE: &str = "lsm=lockdown,capability,landlock,yama,apparmor,bpf";
/// How long the guest may take to power off after printing its last marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

pub struct Boot<'a> {
    /// Console prefix label, e.g. "6.12".
    pub label: &'a str,
    pub kernel: &'a GuestKernel,
    pub initrd: &'a Path,
    pub lsm_override: bool,
    pub accel: Accel,
    pub timeout: Duration,
    pub log: PathBuf,
    /// Guest memory in MiB instead of the default (`$AIRLOCK_GUEST_MEM`, else 1024).
    pub mem_mib: Option<u32>,
}

#[derive(Debug)]
pub struct BootResult {
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// Host time from starting qemu to /init's first line.
    pub to_init: Option<Duration>,
    /// The guest's own uptime when /init started.
    pub guest_uptime: Option<String>,
    pub lsm: Option<String>,
    pub no_bpf_lsm: bool,
    /// The payload's exit status, from the sentinel line.
    pub rc: Option<i32>,
    pub tally: Tally,
    pub tail: VecDeque<String>,
}

impl BootResult {
    pub fn print_tail(&self, label: &str) {
        println!(
            "---- last {} console lines of guest {label} ----",
            self.tail.len()
        );
        for l in &self.tail {
            println!("  | {l}");
        }
        println!("---- end ----");
    }
}

/// The kernel command line: base, then `$AIRLOCK_GUEST_APPEND` (extra words for debugging, e.g.
/// `loglevel=7`), then the lsm= override if asked for (the last `lsm=` wins).
pub fn append_line(lsm_override: bool) -> String {
    let mut s = BASE_APPEND.to_string();
    if let Ok(extra) = std::env::var("AIRLOCK_GUEST_APPEND")
        && !extra.trim().is_empty()
    {
        s.push(' ');
        s.push_str(extra.trim());
    }
    if lsm_override {
        s.push(' ');
        s.push_str(LSM_OVERRIDE);
    }
    s
}

pub fn qemu_available() -> bool {
    util::which(QEMU).is_some()
}

fn memory_mib(want: Option<u32>) -> String {
    if let Some(m) = want {
        return m.to_string();
    }
    std::env::var("AIRLOCK_GUEST_MEM")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "1024".into())
}

fn qemu_command(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    accel: Accel,
    mem_mib: Option<u32>,
) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-accel",
        accel.as_str(),
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        &memory_mib(mem_mib),
    ])
    // No NIC: nothing in the guest uses one, and it spares the iPXE option ROM at boot.
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(append);
    cmd
}

/// Boot once and collect what the guest reported.
pub fn boot(b: &Boot<'_>) -> Result<BootResult> {
    let append = append_line(b.lsm_override);
    println!(
        "guest {}: booting {} ({}, accel {}, timeout {}), log {}",
        b.label,
        b.kernel.release,
        append,
        b.accel.as_str(),
        fmt_dur(b.timeout),
        b.log.display()
    );
    let cmd = qemu_command(&b.kernel.vmlinuz, b.initrd, &append, b.accel, b.mem_mib);
    let prefix = format!("[{}] ", b.label);
    let start = Instant::now();
    let mut r = BootResult {
        outcome: Outcome::TimedOut,
        elapsed: Duration::ZERO,
        to_init: None,
        guest_uptime: None,
        lsm: None,
        no_bpf_lsm: false,
        rc: None,
        tally: Tally::default(),
        tail: VecDeque::new(),
    };
    let opts = stream::Opts {
        prefix: &prefix,
        log: Some(&b.log),
        timeout: Some(b.timeout),
        isolate: true,
    };
    let (outcome, elapsed) = stream::run(cmd, &opts, |line| {
        if r.tail.len() == 40 {
            r.tail.pop_front();
        }
        r.tail.push_back(line.to_string());
        if let Some(i) = line.find(MARK_BOOT) {
            r.to_init.get_or_insert(start.elapsed());
            r.guest_uptime = line[i..]
                .split("uptime=")
                .nth(1)
                .map(|u| u.trim().to_string());
        } else if let Some(i) = line.find(MARK_LSM) {
            r.lsm = Some(line[i + MARK_LSM.len()..].trim().to_string());
        } else if line.contains(MARK_NO_BPF_LSM) {
            r.no_bpf_lsm = true;
            return Flow::Finish(POWEROFF_GRACE);
        } else if let Some(i) = line.find(MARK_DONE) {
            let rest = &line[i + MARK_DONE.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            r.rc = digits.parse().ok();
            return Flow::Finish(POWEROFF_GRACE);
        } else {
            r.tally.e2e_line(line);
        }
        Flow::Continue
    })?;
    r.outcome = outcome;
    r.elapsed = elapsed;
    println!(
        "guest {}: qemu {} after {}; /init reached {}{}",
        b.label,
        outcome.describe(),
        fmt_dur(elapsed),
        r.to_init.map_or("never".to_string(), |d| format!(
            "{} after qemu start",
            fmt_dur(d)
        )),
        r.guest_uptime
            .as_ref()
            .map_or(String::new(), |u| format!(" (guest uptime {u}s)")),
    );
    Ok(r)
}

/// Boot with the console on the terminal (interactive `cargo xtask vm`). Quit with Ctrl-A X.
pub fn boot_interactive(
    kernel: &GuestKernel,
    initrd: &Path,
    lsm_override: bool,
    accel: Accel,
) -> Result<()> {
    let mut cmd = qemu_command(
        &kernel.vmlinuz,
        initrd,
        &append_line(lsm_override),
        accel,
        None,
    );
    crate::util::die_with_parent(&mut cmd);
    println!(
        "+ {}\n(console attached: Ctrl-A X quits qemu)",
        util::render(&cmd)
    );
    let st = cmd.status().context("spawning qemu")?;
    if !st.success() {
        bail!("qemu exited with {st}");
    }
    Ok(())
}

/// `AIRLOCK_QEMU_ACCEL`: `auto` (default: KVM only if a probe boot of a minimal image reaches
/// /init and powers off cleanly under it, else TCG), `tcg`, or `kvm` (forced, no probe).
/// (On the Firecracker hosts qemu aborts at once under KVM, failing to set MSR 0x10a, so the probe
/// costs ~2 s, most of it building its image.)
pub fn choose_accel(kernel: &GuestKernel, xdir: &Path) -> Result<Accel> {
    let want = std::env::var("AIRLOCK_QEMU_ACCEL")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match want.as_str() {
        "tcg" => return Ok(Accel::Tcg),
        "kvm" => return Ok(Accel::Kvm),
        "" | "auto" => {}
        other => bail!("AIRLOCK_QEMU_ACCEL={other}: want tcg, kvm or auto"),
    }
    if !Path::new("/dev/kvm").exists() {
        println!("accel: no /dev/kvm, using tcg");
        return Ok(Accel::Tcg);
    }
    let probe_initrd = xdir.join("initramfs-probe.cpio.gz");
    let spec = Spec {
        bins: Vec::new(),
        extra: Vec::new(),
        payload: Payload::Command("true".into()),
        require_bpf_lsm: false,
    };
    initramfs::build(&spec, &probe_initrd)?;
    let probe = Boot {
        label: "kvm-probe",
        kernel,
        initrd: &probe_initrd,
        lsm_override: false,
        accel: Accel::Kvm,
        timeout: Duration::from_secs(60),
        log: xdir.join("kvm-probe.log"),
        mem_mib: None,
    };
    let r = boot(&probe)?;
    let ok = r.rc.is_some() && matches!(r.outcome, Outcome::Exited(st) if st.success());
    println!(
        "accel: KVM probe {}; using {}",
        if ok { "succeeded" } else { "failed" },
        if ok { "kvm" } else { "tcg" }
    );
    Ok(if ok { Accel::Kvm } else { Accel::Tcg })
}
