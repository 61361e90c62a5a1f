//! The package tier of `cargo xtask test`: builds the .deb packages (`package.rs`), then
//! installs, upgrades, removes, reinstalls and purges them with dpkg in a Debian bookworm
//! chroot made by debootstrap (minbase plus systemd, cached in `.cache/debian-root/`), and
//! checks what an SRE relies on at each step: the units enabled (or left disabled when the
//! admin disabled them), the config file and policy kept as conffiles through an upgrade,
//! state kept on remove and deleted on purge, the pins and runtime state removed with the
//! package.
//!
//! systemd does not run in the chroot, so the scripts take their offline path
//! (deb-systemd-helper writes the symlinks; nothing is started), and `/sys/fs/bpf` there is a
//! plain directory standing in for the host's bpffs: what is checked is that postrm removes
//! the pins, not the kernel's reaction to it. `package_boot.rs` boots an installed tree under systemd
//! in a guest for that.
use crate::report::Tally;
use crate::util::{self, Ctx, Step};
use anyhow::{Context as _, Result, bail};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The suite debootstrap installs: the release this machine runs, so the binaries' glibc is
/// there.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Packages beyond minbase: systemd (the units, deb-systemd-helper) and what the packages
/// depend on. The cache is named after this list, so a change makes a new tree.
const INCLUDE: &str = "systemd,systemd-sysv,procps";

/// A Debian tree made once by debootstrap and copied for each run.
pub fn debian_root(ctx: &Ctx) -> Result<PathBuf> {
    let cache = ctx.cache_dir().join("debian-root");
    let root = cache.join(format!("{SUITE}-{}", INCLUDE.replace(',', "-")));
    if root.join("usr/bin/deb-systemd-helper").is_file() && root.join(".complete").is_file() {
        return Ok(root);
    }
    if util::which("debootstrap").is_none() {
        bail!("debootstrap is not installed (cargo xtask setup installs it)");
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&cache)?;
    let step = Step::new(format!("debootstrap {SUITE} (minbase + {INCLUDE})"));
    util::run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={INCLUDE}"))
            .arg(SUITE)
            .arg(&root)
            .arg(MIRROR)
            .stdout(Stdio::null()),
    )?;
    std::fs::write(root.join(".complete"), "")?;
    step.done("ok");
    Ok(root)
}

/// A copy of the Debian tree for one run, deleted on drop (nothing is mounted inside it).
pub struct Chroot {
    pub root: PathBuf,
}

impl Chroot {
    pub fn copy_of(base: &Path, dest: &Path) -> Result<Chroot> {
        let _ = std::fs::remove_dir_all(dest);
        util::run(Command::new("cp").arg("-a").arg(base).arg(dest))?;
        Ok(Chroot {
            root: dest.to_path_buf(),
        })
    }

    /// `chroot ROOT ARGS...` with a plain environment, stdin from /dev/null (a dpkg conffile
    /// prompt fails instead of waiting), output captured.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        util::capture(
            Command::new("chroot")
                .arg(&self.root)
                .args(args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("LC_ALL", "C")
                .stdin(Stdio::null()),
        )
    }

    /// Like `run`, failing with the output when the command fails.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "`chroot {} {}` failed ({}):\n{}{}",
                self.root.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr))
    }

    /// A path inside the tree.
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Checks counted in a tier tally, each printed as it is decided.
struct Checks<'a> {
    t: &'a mut Tally,
}

impl Checks<'_> {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("PASS package: {name}");
            self.t.passed += 1;
        } else {
            println!("FAIL package: {name}: {detail}");
            self.t.fail(format!("package: {name}: {detail}"));
        }
    }
}

/// `dpkg-query`'s status of `pkg` in the chroot ("install ok installed", …).
fn status(c: &Chroot, pkg: &str) -> String {
    c.run(&["dpkg-query", "-W", "-f=${Status} ${Version}", pkg])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn enabled(c: &Chroot, unit: &str) -> bool {
    c.path("etc/systemd/system/multi-user.target.wants")
        .join(unit)
        .symlink_metadata()
        .is_ok()
}

fn mode(p: &Path) -> u32 {
    p.metadata()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

fn contains(p: &Path, needle: &str) -> bool {
    std::fs::read_to_string(p).is_ok_and(|s| s.contains(needle))
}

/// A second version of a built package for the upgrade: the same tree, version `version`,
/// and `line` appended to the packaged `/etc/airlock/airlockd.yaml` when the package has it
/// (so that a conffile the admin did not edit is seen to be replaced).
fn second_version(deb: &Path, version: &str, line: &str, work: &Path) -> Result<PathBuf> {
    let tree = work.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    util::run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree))?;
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control)?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text)?;
    let conf = tree.join("etc/airlock/airlockd.yaml");
    if conf.is_file() {
        let mut s = std::fs::read_to_string(&conf)?;
        s.push_str(line);
        std::fs::write(&conf, s)?;
        let sums = util::stdout_of(
            Command::new("sh")
                .arg("-c")
                .arg("find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z | xargs -0 md5sum --")
                .current_dir(&tree),
        )?;
        std::fs::write(tree.join("DEBIAN/md5sums"), sums)?;
    }
    let name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .context("deb name")?
        .replace(&crate::package::default_version(), version);
    let out = work.join(name);
    util::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&tree)
            .arg(&out)
            .stdout(Stdio::null()),
    )?;
    Ok(out)
}

/// Runs the tier; the tally holds one entry per check.
pub fn run(ctx: &Ctx) -> Result<Tally> {
    let mut t = Tally::default();
    let r = run_checks(ctx, &mut Checks { t: &mut t });
    if let Err(e) = r {
        t.fail(format!("package: {e:#}"));
    }
    Ok(t)
}

fn run_checks(ctx: &Ctx, k: &mut Checks) -> Result<()> {
    let step = Step::new("package tier: build (release) and package");
    crate::cargo::build_release_bins(ctx)?;
    let work = ctx.xtask_dir()?.join("package-test");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let v1 = crate::package::default_version();
    let debs = crate::package::build(ctx, &ctx.target.join("release"), &v1, &work.join("v1"))?;
    let v2 = format!("{v1}+upgrade1");
    const NEW_LINE: &str = "# (added by the upgrade)\n";
    let debs2 = debs
        .iter()
        .map(|d| second_version(d, &v2, NEW_LINE, &work))
        .collect::<Result<Vec<_>>>()?;
    step.done("ok");

    let base = debian_root(ctx)?;
    let c = Chroot::copy_of(&base, &work.join("root"))?;
    let stage = |debs: &[PathBuf], c: &Chroot| -> Result<Vec<String>> {
        let mut inside = Vec::new();
        for d in debs {
            let name = d.file_name().and_then(|n| n.to_str()).context("name")?;
            std::fs::copy(d, c.path("tmp").join(name))?;
            inside.push(format!("/tmp/{name}"));
        }
        Ok(inside)
    };
    let d1 = stage(&debs, &c)?;
    let d2 = stage(&debs2, &c)?;
    let dpkg = |c: &Chroot, args: &[&str], files: &[String]| -> Result<String> {
        let mut a: Vec<&str> = vec!["dpkg"];
        a.extend_from_slice(args);
        a.extend(files.iter().map(String::as_str));
        c.ok(&a)
    };

    // Install.
    dpkg(&c, &["-i"], &d1)?;
    for p in ["airlock", "airlock-server"] {
        let s = status(&c, p);
        k.check(
            &format!("install: {p} installed"),
            s == format!("install ok installed {v1}"),
            &s,
        );
    }
    for (unit, want) in [
        ("airlockd.service", true),
        ("airlock-server.service", true),
        ("airlock-server-collector.service", false),
    ] {
        k.check(
            &format!("install: {unit} enabled={want}"),
            enabled(&c, unit) == want,
            "multi-user.target.wants/",
        );
    }
    let v = c.ok(&["airlockd", "--version"]);
    k.check(
        "install: airlockd runs in the Debian tree",
        v.is_ok(),
        format!("{v:?}"),
    );
    let cc = c.run(&["airlockd", "config", "check", "/etc/airlock/airlockd.yaml"])?;
    k.check(
        "install: the shipped airlockd.yaml passes `airlockd config check`",
        cc.status.success(),
        String::from_utf8_lossy(&cc.stderr),
    );
    let pc = c.run(&[
        "airlock",
        "policy",
        "check",
        "/etc/airlock/policies/default.yaml",
    ])?;
    k.check(
        "install: the shipped default policy passes `airlock policy check`",
        pc.status.success(),
        String::from_utf8_lossy(&pc.stderr),
    );
    let sv = c.run(&["airlock-server", "--version"])?;
    k.check(
        "install: airlock-server runs in the Debian tree",
        sv.status.success(),
        String::from_utf8_lossy(&sv.stderr),
    );
    let conf = c.run(&["dpkg-query", "-W", "-f=${Conffiles}", "airlock"])?;
    let conf = String::from_utf8_lossy(&conf.stdout).to_string();
    k.check(
        "install: config file and default policy are conffiles",
        conf.contains("/etc/airlock/airlockd.yaml")
            && conf.contains("/etc/airlock/policies/default.yaml"),
        &conf,
    );
    for f in [
        "usr/share/man/man8/airlockd.8.gz",
        "usr/share/man/man1/airlock-run.1.gz",
        "usr/share/man/man8/airlock-server-serve.8.gz",
        "usr/share/bash-completion/completions/airlock",
        "usr/share/zsh/vendor-completions/_airlockd",
        "usr/share/fish/vendor_completions.d/airlock-server.fish",
        "lib/systemd/system/airlock.slice",
        "usr/share/doc/airlock/copyright",
    ] {
        k.check(&format!("install: /{f}"), c.path(f).is_file(), "missing");
    }
    let user = c.run(&["getent", "passwd", "airlock-server"])?;
    k.check(
        "install: system user airlock-server",
        user.status.success(),
        "getent passwd: no such user",
    );
    k.check(
        "install: /var/lib/airlock is 0700",
        mode(&c.path("var/lib/airlock")) == 0o700,
        format!("{:o}", mode(&c.path("var/lib/airlock"))),
    );
    let srv = c.path("var/lib/airlock-server");
    k.check(
        "install: /var/lib/airlock-server is 0700",
        mode(&srv) == 0o700,
        format!("{:o}", mode(&srv)),
    );

    // The admin edits the policy, leaves airlockd.yaml alone, disables the server, and the
    // host has state.
    let policy = c.path("etc/airlock/policies/default.yaml");
    let mut p = std::fs::read_to_string(&policy)?;
    p.push_str("# local edit\n");
    std::fs::write(&policy, p)?;
    c.ok(&["systemctl", "disable", "airlock-server.service"])?;
    std::fs::create_dir_all(c.path("var/lib/airlock/identity"))?;
    std::fs::write(c.path("var/lib/airlock/identity/host.crt"), "state")?;
    std::fs::write(srv.join("server.yaml"), "state")?;

    // Upgrade.
    let up = dpkg(&c, &["-i"], &d2);
    k.check(
        "upgrade: dpkg -i of the new version, no conffile prompt",
        up.is_ok(),
        format!("{up:?}"),
    );
    for p in ["airlock", "airlock-server"] {
        let s = status(&c, p);
        k.check(
            &format!("upgrade: {p} at the new version"),
            s == format!("install ok installed {v2}"),
            &s,
        );
    }
    k.check(
        "upgrade: the admin's edit of the policy conffile is kept",
        contains(&policy, "# local edit"),
        "edit lost",
    );
    k.check(
        "upgrade: the unedited airlockd.yaml is replaced by the new version's",
        contains(&c.path("etc/airlock/airlockd.yaml"), NEW_LINE),
        "still the old file",
    );
    k.check(
        "upgrade: airlockd.service stays enabled",
        enabled(&c, "airlockd.service"),
        "not enabled",
    );
    k.check(
        "upgrade: airlock-server.service stays disabled as the admin left it",
        !enabled(&c, "airlock-server.service"),
        "enabled again",
    );

    // Remove, with pins and a pending request as a running airlockd leaves them.
    std::fs::create_dir_all(c.path("sys/fs/bpf/airlock/progs"))?;
    std::fs::write(c.path("sys/fs/bpf/airlock/progs/exec"), "")?;
    std::fs::create_dir_all(c.path("run/airlock/requests"))?;
    std::fs::write(c.path("run/airlock/requests/r-1.json"), "{}")?;
    let rm = dpkg(&c, &["-r", "airlock", "airlock-server"], &[])?;
    for p in ["airlock", "airlock-server"] {
        let s = status(&c, p);
        k.check(
            &format!("remove: {p} leaves its config files only"),
            s.starts_with("deinstall ok config-files"),
            &s,
        );
    }
    k.check(
        "remove: binaries gone",
        !c.path("usr/bin/airlockd").exists() && !c.path("usr/bin/airlock-server").exists(),
        "still there",
    );
    k.check(
        "remove: conffiles kept",
        contains(&policy, "# local edit") && c.path("etc/airlock/airlockd.yaml").is_file(),
        "gone",
    );
    k.check(
        "remove: host identity and server state kept",
        c.path("var/lib/airlock/identity/host.crt").is_file() && srv.join("server.yaml").is_file(),
        "gone",
    );
    k.check(
        "remove: pins removed (the gate goes with the package)",
        !c.path("sys/fs/bpf/airlock").exists(),
        "still there",
    );
    k.check(
        "remove: runtime state removed, held processes reported",
        !c.path("run/airlock").exists() && rm.contains("held at this moment stays stopped"),
        &rm,
    );

    // Reinstall after a remove: the unit postrm masked is unmasked and enabled.
    dpkg(&c, &["-i"], &d2[..1])?;
    k.check(
        "reinstall: airlockd.service enabled again",
        enabled(&c, "airlockd.service") && !c.path("etc/systemd/system/airlockd.service").exists(),
        "not enabled, or still masked",
    );
    k.check(
        "reinstall: the kept policy edit is still there",
        contains(&policy, "# local edit"),
        "edit lost",
    );

    // Purge.
    dpkg(&c, &["-P", "airlock", "airlock-server"], &[])?;
    for p in ["airlock", "airlock-server"] {
        let s = status(&c, p);
        k.check(
            &format!("purge: {p} gone from dpkg"),
            !s.contains("installed") && !s.contains("config-files"),
            &s,
        );
    }
    k.check(
        "purge: /etc/airlock gone (edited conffiles included)",
        !c.path("etc/airlock").exists(),
        "still there",
    );
    k.check(
        "purge: /var/lib/airlock and /var/lib/airlock-server gone",
        !c.path("var/lib/airlock").exists() && !srv.exists(),
        "still there",
    );
    k.check(
        "purge: no unit symlinks left",
        !enabled(&c, "airlockd.service") && !enabled(&c, "airlock-server.service"),
        "multi-user.target.wants/ still links them",
    );
    drop(c);

    // Boot a fresh install under systemd (package_boot.rs).
    let c = Chroot::copy_of(&base, &work.join("boot-root"))?;
    let d1 = stage(&debs, &c)?;
    dpkg(&c, &["-i"], &d1)?;
    let b = crate::package_boot::run(ctx, &c, &work)?;
    k.t.add("boot", &b);
    Ok(())
}
