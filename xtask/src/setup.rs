//! `cargo xtask setup`: install what is missing, idempotently. Every check prints either what it
//! does or `ok: X present`; a second run only runs cheap probes.
use crate::kernels::{self, Kernel};
use crate::util::{self, Ctx, Step, capture, stdout_of};
use anyhow::{Context as _, Result, bail};
use std::process::Command;

/// Debian packages the build and the guest tier need.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // airlock-server's storage suite and replica tests run against a real PostgreSQL; the test
    // harness starts throwaway clusters itself (nothing is started by the package here).
    "postgresql",
    // The web page's browser tests (host tier) drive headless Chromium through chromedriver;
    // the harness starts and stops both itself.
    "chromium",
    "chromium-driver",
    // The package tier: a Debian tree to install the .debs into, and strip for their binaries.
    "debootstrap",
    "binutils",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker's LLVM must match the nightly rustc's LLVM major.
const LLVM_MAJOR: &str = "22";

pub struct Opts {
    /// Guest kernels to fetch (none for unit/host-only runs).
    pub kernels: Vec<Kernel>,
}

/// `apt-get update` at most once per xtask run.
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn update_once(&mut self) -> Result<()> {
        if !self.updated {
            util::run(Command::new("apt-get").args(["-q", "update"]))?;
            self.updated = true;
        }
        Ok(())
    }

    /// For retries: returns true if an update was run now (false: done before, or not root).
    pub fn update_once_if_root(&mut self) -> Result<bool> {
        if self.updated || !util::is_root() {
            return Ok(false);
        }
        self.update_once()?;
        Ok(true)
    }
}

pub fn run(ctx: &Ctx, opts: &Opts) -> Result<()> {
    let step = Step::new("setup");
    let mut apt = Apt::default();
    let mut errors = Vec::new();
    let mut attempt = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            println!("setup: {what} FAILED: {e:#}");
            errors.push(format!("{what}: {e:#}"));
        }
    };
    attempt("apt packages", apt_packages(&mut apt));
    util::check_interrupted()?;
    attempt("nightly rust-src", nightly_rust_src());
    attempt("rustfmt and clippy", lint_components());
    util::check_interrupted()?;
    attempt("bpf-linker", bpf_linker());
    for &k in &opts.kernels {
        util::check_interrupted()?;
        attempt(
            &format!("guest kernel {}", k.short()),
            kernels::ensure(ctx, k, &mut apt).map(|_| ()),
        );
    }
    if !errors.is_empty() {
        step.done("FAILED");
        bail!("setup incomplete:\n  {}", errors.join("\n  "));
    }
    step.done("ok");
    Ok(())
}

fn apt_packages(apt: &mut Apt) -> Result<()> {
    if util::which("dpkg-query").is_none() {
        bail!(
            "no dpkg-query: not a Debian-like system; install by hand: {}",
            APT_PACKAGES.join(" ")
        );
    }
    let mut missing = Vec::new();
    for &p in APT_PACKAGES {
        let out = capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))?;
        if String::from_utf8_lossy(&out.stdout).trim() == "install ok installed" {
            println!("ok: {p} present");
        } else {
            missing.push(p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!("installing apt packages: {}", missing.join(" "));
    if !util::is_root() {
        bail!(
            "not root: run `apt-get install {}` as root",
            missing.join(" ")
        );
    }
    apt.update_once()?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
}

/// rustfmt and clippy for the toolchain that builds the workspace (the lint tier runs both;
/// a `minimal` rustup profile has neither).
fn lint_components() -> Result<()> {
    if util::which("rustup").is_none() {
        bail!("no rustup in PATH (the lint tier needs rustfmt and clippy)");
    }
    let listed = capture(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let have = String::from_utf8_lossy(&listed.stdout).into_owned();
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !have.lines().any(|l| l.trim().starts_with(c)))
        .collect();
    if missing.is_empty() {
        println!("ok: rustfmt and clippy present");
        return Ok(());
    }
    println!("installing {}", missing.join(" and "));
    util::run(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
}

fn nightly_rust_src() -> Result<()> {
    if util::which("rustup").is_none() {
        bail!("no rustup in PATH (the eBPF build needs `rustup run nightly`)");
    }
    let listed = capture(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !listed.status.success() {
        println!("installing the nightly toolchain (with rust-src)");
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    } else if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.trim().starts_with("rust-src"))
    {
        println!("ok: rust-src (nightly) present");
    } else {
        println!("installing rust-src for nightly");
        util::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let vv = stdout_of(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("?");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        println!(
            "setup: warning: nightly rustc uses LLVM {llvm}, bpf-linker is built for LLVM {LLVM_MAJOR}"
        );
    }
    Ok(())
}

/// bpf-linker is fine when it reports the wanted version and links LLVM 22.
fn bpf_linker_ok() -> Result<(), String> {
    let Some(path) = util::which("bpf-linker") else {
        return Err("not installed".into());
    };
    let v = capture(Command::new(&path).arg("--version")).map_err(|e| e.to_string())?;
    let v = String::from_utf8_lossy(&v.stdout).trim().to_string();
    if !v.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
        return Err(format!("`{v}`, want {BPF_LINKER_VERSION}"));
    }
    // It links libLLVM dynamically; make sure it is the LLVM the nightly uses.
    if let Ok(out) = capture(Command::new("ldd").arg(&path)) {
        let ldd = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = ldd.lines().find(|l| l.contains("libLLVM")) {
            if !l.contains(&format!("libLLVM.so.{LLVM_MAJOR}"))
                && !l.contains(&format!("libLLVM-{LLVM_MAJOR}"))
            {
                return Err(format!("{v} links {}, want LLVM {LLVM_MAJOR}", l.trim()));
            }
            if l.contains("not found") {
                return Err(format!("{v}: {}", l.trim()));
            }
        }
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    match bpf_linker_ok() {
        Ok(()) => {
            println!("ok: bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR}) present");
            return Ok(());
        }
        Err(why) => {
            println!("installing bpf-linker {BPF_LINKER_VERSION} for LLVM {LLVM_MAJOR} ({why})")
        }
    }
    let prefix = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    util::run(
        Command::new("cargo")
            // LLVM_PREFIX is what bpf-linker's build script reads (/usr/bin/llvm-config may be older).
            .env("LLVM_PREFIX", &prefix)
            .args([
                "+nightly",
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            ])
            .args(["--locked", "--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{LLVM_MAJOR}")),
    )
    .context("cargo install bpf-linker")?;
    bpf_linker_ok()
        .map_err(|e| anyhow::anyhow!("bpf-linker still not usable after install: {e}"))?;
    Ok(())
}
