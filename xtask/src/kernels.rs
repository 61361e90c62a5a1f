//! Guest kernels: Debian cloud-amd64 images (BPF LSM, BTF, everything needed built in), fetched
//! with `apt-get download` into `<repo>/.cache/kernels/` and reduced to `vmlinuz-<release>` (plus
//! `config-<release>`).
use crate::setup::Apt;
use crate::util::{self, Ctx, stdout_of};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub const ALL: [Kernel; 2] = [Kernel::V6_1, Kernel::V6_12];

    pub fn short(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    /// The Debian package we want (others of the same series are a fallback).
    fn package(self) -> &'static str {
        match self {
            Kernel::V6_1 => "linux-image-6.1.0-50-cloud-amd64-unsigned",
            Kernel::V6_12 => "linux-image-6.12.107+deb12-cloud-amd64-unsigned",
        }
    }

    /// An explicit vmlinuz, bypassing the cache: `AIRLOCK_VMLINUZ_6_1`, `AIRLOCK_VMLINUZ_6_12`.
    fn env_override(self) -> String {
        format!("AIRLOCK_VMLINUZ_{}", self.short().replace('.', "_"))
    }

    /// `vmlinuz-6.1.…` (the dot keeps 6.1 from matching 6.12).
    fn file_prefix(self) -> String {
        format!("vmlinuz-{}.", self.short())
    }
}

/// `linux-image-6.1.0-50-cloud-amd64-unsigned` → `6.1.0-50-cloud-amd64`.
fn release_of(package: &str) -> &str {
    let r = package.strip_prefix("linux-image-").unwrap_or(package);
    r.strip_suffix("-unsigned").unwrap_or(r)
}

#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub vmlinuz: PathBuf,
    pub release: String,
    pub config: Option<PathBuf>,
}

impl GuestKernel {
    /// `CONFIG_LSM` from the kernel's config, when we have it.
    pub fn config_lsm(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.config.as_ref()?).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("CONFIG_LSM="))
            .map(|v| v.trim_matches('"').to_string())
    }

    /// Whether to boot with `lsm=…,bpf` from the start: only when the kernel's config says its
    /// default LSM list lacks `bpf` (Debian's normally has it).
    pub fn needs_lsm_override(&self) -> bool {
        self.config_lsm()
            .is_some_and(|l| !l.split(',').any(|x| x == "bpf"))
    }
}

/// Where a kernel for `k` would come from, for messages.
pub fn describe_source(ctx: &Ctx, k: Kernel) -> String {
    format!(
        "{}/{}* (or ${})",
        cache_dir(ctx).display(),
        k.file_prefix(),
        k.env_override()
    )
}

pub fn cache_dir(ctx: &Ctx) -> PathBuf {
    ctx.cache_dir().join("kernels")
}

/// The kernel to boot for `k`, if we have one (no downloading).
pub fn find(ctx: &Ctx, k: Kernel) -> Option<GuestKernel> {
    if let Some(p) = std::env::var_os(k.env_override()).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            println!("{}={} does not exist", k.env_override(), p.display());
            return None;
        }
        let release = p
            .file_name()?
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        return Some(GuestKernel {
            vmlinuz: p,
            release,
            config: None,
        });
    }
    let dir = cache_dir(ctx);
    let want = format!("vmlinuz-{}", release_of(k.package()));
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&k.file_prefix()))
        .collect();
    found.sort_by_key(|n| natural_key(n));
    let name = if found.contains(&want) {
        want
    } else {
        found.pop()?
    };
    let release = name.trim_start_matches("vmlinuz-").to_string();
    let config = dir.join(format!("config-{release}"));
    Some(GuestKernel {
        vmlinuz: dir.join(&name),
        release,
        config: config.is_file().then_some(config),
    })
}

/// Make sure a kernel for `k` is in the cache, downloading it if needed.
pub fn ensure(ctx: &Ctx, k: Kernel, apt: &mut Apt) -> Result<GuestKernel> {
    if let Some(p) = std::env::var_os(k.env_override()).filter(|p| !p.is_empty()) {
        let g = find(ctx, k).with_context(|| {
            format!("{}={} is not a file", k.env_override(), p.to_string_lossy())
        })?;
        println!(
            "ok: guest kernel {} from {} ({})",
            k.short(),
            k.env_override(),
            g.vmlinuz.display()
        );
        return Ok(g);
    }
    if let Some(g) = find(ctx, k) {
        println!(
            "ok: guest kernel {} present ({})",
            k.short(),
            g.vmlinuz.display()
        );
        return Ok(g);
    }
    for tool in ["apt-get", "apt-cache", "dpkg"] {
        if util::which(tool).is_none() {
            bail!(
                "no guest kernel {} and no `{tool}` to fetch one; set {} to a vmlinuz",
                k.short(),
                k.env_override()
            );
        }
    }
    let dir = cache_dir(ctx);
    let work = dir.join(format!(".download-{}", k.short()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = download_and_extract(k, apt, &work, &dir);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    let g = find(ctx, k).with_context(|| {
        format!(
            "kernel {} not in {} after download",
            k.short(),
            dir.display()
        )
    })?;
    println!(
        "installed: guest kernel {} → {}",
        k.short(),
        g.vmlinuz.display()
    );
    if let Some(lsm) = g.config_lsm() {
        println!("  CONFIG_LSM=\"{lsm}\"");
    }
    Ok(g)
}

fn apt_download(pkg: &str, work: &Path) -> bool {
    let mut cmd = Command::new("apt-get");
    // As root apt would otherwise drop to `_apt`, which cannot write into our cache dir.
    cmd.args(["-q", "-o", "APT::Sandbox::User=root", "download", pkg])
        .current_dir(work);
    util::run(&mut cmd).is_ok()
}

fn download_and_extract(k: Kernel, apt: &mut Apt, work: &Path, dir: &Path) -> Result<()> {
    let want = k.package();
    println!("fetching guest kernel {}: {want}", k.short());
    let mut ok = apt_download(want, work);
    if !ok && apt.update_once_if_root()? {
        ok = apt_download(want, work);
    }
    if !ok {
        util::check_interrupted()?;
        let pick = closest_package(k).with_context(|| {
            format!(
                "{want} is not downloadable and no other {} cloud kernel is known to apt",
                k.short()
            )
        })?;
        println!(
            "xtask: {want} is not available; picked {pick} (newest cloud-amd64 unsigned {} in apt)",
            k.short()
        );
        if !apt_download(&pick, work) {
            bail!("apt-get download {pick} failed");
        }
    }
    let deb = std::fs::read_dir(work)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let x = work.join("x");
    util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&x))?;
    let boot = x.join("boot");
    let mut copied = false;
    for e in std::fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("vmlinuz-") || name.starts_with("config-") {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::copy(e.path(), &tmp).with_context(|| format!("copying {name}"))?;
            std::fs::rename(&tmp, dir.join(&name))?;
            copied |= name.starts_with("vmlinuz-");
        }
    }
    if !copied {
        bail!("{} has no boot/vmlinuz-*", deb.display());
    }
    Ok(())
}

/// The newest `linux-image-<short>.*-cloud-amd64-unsigned` apt knows about.
fn closest_package(k: Kernel) -> Result<String> {
    let pattern = format!("^linux-image-{}\\.", k.short().replace('.', "\\."));
    let out = stdout_of(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let mut names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.ends_with("-cloud-amd64-unsigned"))
        .collect();
    println!("apt-cache search {pattern}: candidates {names:?}");
    names.sort_by_key(|n| natural_key(n));
    let pick = names.pop().context("no candidates")?.to_string();
    let policy = stdout_of(Command::new("apt-cache").args(["policy", &pick]))?;
    print!("{policy}");
    Ok(pick)
}

/// Sort key comparing digit runs numerically ("6.1.0-50" < "6.1.0-100").
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let mut digits = String::new();
        while let Some(c) = chars.peek().filter(|c| c.is_ascii_digit()) {
            digits.push(*c);
            chars.next();
        }
        let mut text = String::new();
        while let Some(c) = chars.peek().filter(|c| !c.is_ascii_digit()) {
            text.push(*c);
            chars.next();
        }
        key.push((digits.parse().unwrap_or(0), text));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_ordering() {
        assert_eq!(release_of(Kernel::V6_1.package()), "6.1.0-50-cloud-amd64");
        assert_eq!(
            release_of(Kernel::V6_12.package()),
            "6.12.107+deb12-cloud-amd64"
        );
        assert!(natural_key("6.1.0-9-cloud") < natural_key("6.1.0-50-cloud"));
        assert!(!"vmlinuz-6.12.1".starts_with(&Kernel::V6_1.file_prefix()));
    }
}
