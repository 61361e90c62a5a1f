//! `cargo xtask package`: the Debian packages `airlock` (airlockd, the airlock CLI, their
//! units, the default policy and the config file as conffiles) and `airlock-server` (the
//! server and its two units), from release binaries, with the man pages and completions
//! rendered from the clap definitions (`man.rs`).
//!
//! Built with `dpkg-deb` alone, from a staging tree this module lays out (`deb.rs` writes the
//! control files): no debhelper, no cargo-deb, so `cargo xtask package` needs only what the
//! machine has. The maintainer scripts are files in `packaging/deb/PACKAGE/`, reviewed as
//! shell, not generated. `package_test.rs` installs, upgrades, removes and purges the result in
//! a Debian chroot.
use crate::cargo;
use crate::deb::{Control, Staging};
use crate::util::{self, Ctx, Step};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the .deb files [default: target/debian].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The packages' Debian version [default: the workspace version with revision -1].
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<i32> {
    let out = match &args.out {
        Some(d) => std::path::absolute(d).with_context(|| format!("{}", d.display()))?,
        None => ctx.target.join("debian"),
    };
    let step = Step::new("build (release): airlockd, airlock, airlock-server");
    cargo::build_release_bins(ctx).context(
        "building the release binaries (airlock-agent needs nightly and bpf-linker: \
         `cargo xtask setup` installs them)",
    )?;
    step.done("ok");
    let version = args.version.clone().unwrap_or_else(default_version);
    let step = Step::new(format!("package {version}: {}", out.display()));
    let debs = build(ctx, &ctx.target.join("release"), &version, &out)?;
    let names: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
    step.done(&names.join(", "));
    Ok(0)
}

/// The workspace version with Debian revision 1.
pub fn default_version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// Builds both packages at `version` from the binaries in `bin_dir` into `out`; returns the
/// .deb paths (airlock first). Reused by the package test tier, which builds a second
/// version to upgrade to.
pub fn build(ctx: &Ctx, bin_dir: &Path, version: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let work = ctx.xtask_dir()?.join("package");
    let _ = std::fs::remove_dir_all(&work);
    let docs = work.join("docs");
    crate::man::generate(bin_dir, &docs).context("rendering man pages and completions")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let agent = agent(ctx, bin_dir, &docs, &work.join("airlock"), version)?;
    let server = server(ctx, bin_dir, &docs, &work.join("airlock-server"), version)?;
    Ok(vec![agent.build(out)?, server.build(out)?])
}

/// Files of `dir` whose names `keep` accepts, sorted.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    v.sort();
    Ok(v)
}

/// The man pages and completions of the programs `programs` from the rendered `docs`.
fn add_docs(s: &mut Staging, docs: &Path, programs: &[&str]) -> Result<()> {
    // "airlock" must not take airlock-server's pages: a page belongs to the longest program
    // name it starts with.
    let owner = |page: &str| {
        ["airlock-server", "airlockd", "airlock"]
            .into_iter()
            .find(|p| page.starts_with(&format!("{p}.")) || page.starts_with(&format!("{p}-")))
    };
    for page in files_in(&docs.join("man"), |n| {
        owner(n).is_some_and(|o| programs.contains(&o))
    })? {
        let name = page
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let section = name.rsplit('.').next().unwrap_or("1");
        s.man_page(&page, &format!("usr/share/man/man{section}/{name}.gz"))?;
    }
    for p in programs {
        let c = docs.join("completions");
        s.file(
            &c.join("bash").join(p),
            &format!("usr/share/bash-completion/completions/{p}"),
            0o644,
        )?;
        s.file(
            &c.join("zsh").join(format!("_{p}")),
            &format!("usr/share/zsh/vendor-completions/_{p}"),
            0o644,
        )?;
        s.file(
            &c.join("fish").join(format!("{p}.fish")),
            &format!("usr/share/fish/vendor_completions.d/{p}.fish"),
            0o644,
        )?;
    }
    Ok(())
}

/// The package's maintainer scripts from `packaging/deb/NAME/`.
fn add_scripts(ctx: &Ctx, s: &mut Staging, name: &str) -> Result<()> {
    for script in ["postinst", "prerm", "postrm"] {
        s.script(
            &ctx.root.join("packaging/deb").join(name).join(script),
            script,
        )?;
    }
    Ok(())
}

fn agent(ctx: &Ctx, bins: &Path, docs: &Path, dir: &Path, version: &str) -> Result<Staging> {
    let r = &ctx.root;
    let mut s = Staging::new(
        dir,
        Control {
            package: "airlock",
            version: version.to_string(),
            section: "admin",
            // /bin/kill, for the unit's ExecReload (minimal Debian trees lack it; found
            // booting the package).
            depends: "procps",
            recommends: "systemd",
            summary: "kernel gate that holds AI agents' privileged actions for a human",
            description: "\
airlockd flags the privileged actions of processes in agent cgroups (exec of
package managers, sudo, writes to /etc, ...) in the kernel with BPF LSM programs
(fanotify on kernels without BPF LSM) and holds each inside its syscall until a
human approves or denies it, locally with the airlock CLI or through
airlock-server. Every event, request, vote and decision goes to a signed,
hash-chained audit stream.",
        },
    )?;
    s.binary(&bins.join("airlockd"), "usr/bin/airlockd")?;
    s.binary(&bins.join("airlock"), "usr/bin/airlock")?;
    s.file(
        &r.join("systemd/airlockd.service"),
        "lib/systemd/system/airlockd.service",
        0o644,
    )?;
    s.file(
        &r.join("systemd/airlock.slice"),
        "lib/systemd/system/airlock.slice",
        0o644,
    )?;
    s.conffile(
        &r.join("packaging/airlockd.yaml"),
        "etc/airlock/airlockd.yaml",
    )?;
    s.conffile(
        &r.join("policies/default.yaml"),
        "etc/airlock/policies/default.yaml",
    )?;
    let doc = "usr/share/doc/airlock";
    s.file(&r.join("README.md"), &format!("{doc}/README.md"), 0o644)?;
    s.file(
        &r.join("docs/ARCHITECTURE.md"),
        &format!("{doc}/ARCHITECTURE.md"),
        0o644,
    )?;
    s.file(
        &r.join("policies/README.md"),
        &format!("{doc}/policies.md"),
        0o644,
    )?;
    for p in files_in(&r.join("policies/examples"), |n| n.ends_with(".yaml"))? {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        s.file(&p, &format!("{doc}/examples/{name}"), 0o644)?;
    }
    s.copyright_and_changelog()?;
    add_docs(&mut s, docs, &["airlock", "airlockd"])?;
    add_scripts(ctx, &mut s, "airlock")?;
    Ok(s)
}

fn server(ctx: &Ctx, bins: &Path, docs: &Path, dir: &Path, version: &str) -> Result<Staging> {
    let r = &ctx.root;
    let mut s = Staging::new(
        dir,
        Control {
            package: "airlock-server",
            version: version.to_string(),
            section: "admin",
            depends: "procps",
            recommends: "",
            summary: "approval server and audit collector for airlock hosts",
            description: "\
Every airlock host keeps one mutual-TLS gRPC link to airlock-server. It routes
each held action to its approvers (N of M, never the agent's own launcher) in
Slack, Teams, webhooks, a web page or the CLI, keeps its state in SQLite or
PostgreSQL, and collects and verifies each host's signed, hash-chained audit
stream.",
        },
    )?;
    s.binary(&bins.join("airlock-server"), "usr/bin/airlock-server")?;
    for unit in ["airlock-server.service", "airlock-server-collector.service"] {
        s.file(
            &r.join("systemd").join(unit),
            &format!("lib/systemd/system/{unit}"),
            0o644,
        )?;
    }
    s.file(
        &r.join("README.md"),
        "usr/share/doc/airlock-server/README.md",
        0o644,
    )?;
    s.copyright_and_changelog()?;
    add_docs(&mut s, docs, &["airlock-server"])?;
    add_scripts(ctx, &mut s, "airlock-server")?;
    Ok(s)
}

/// `dpkg --print-architecture`, e.g. amd64.
pub fn architecture() -> Result<String> {
    Ok(
        util::stdout_of(std::process::Command::new("dpkg").arg("--print-architecture"))?
            .trim()
            .to_string(),
    )
}
