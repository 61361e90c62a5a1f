//! The guest initramfs: busybox-static with its applet links, the airlock binaries and the shared
//! libraries `ldd` lists for them (loader at its own path), minimal /etc, and a generated `/init`
//! that mounts the kernel filesystems, prints the LSM list, runs a payload and powers off.
use crate::cpio::{Archive, Node};
use crate::util::{self, capture, quote};
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeSet;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Markers /init prints; `guest.rs` parses them.
pub const MARK_BOOT: &str = "AIRLOCK-GUEST-BOOT";
pub const MARK_LSM: &str = "AIRLOCK-LSM";
pub const MARK_NO_BPF_LSM: &str = "AIRLOCK-NO-BPF-LSM";
pub const MARK_DONE: &str = "AIRLOCK-GUEST-DONE rc=";

pub enum Payload {
    /// A shell command line run by /init with the console as stdio; its status is reported.
    Command(String),
    /// An interactive shell on the console (for `cargo xtask vm` without a command).
    Shell,
}

pub struct Spec {
    /// Host binaries and their names in the guest's `/bin`.
    pub bins: Vec<(PathBuf, String)>,
    /// Extra host files or directory trees → guest paths.
    pub extra: Vec<(PathBuf, PathBuf)>,
    pub payload: Payload,
    /// Stop before the payload (printing MARK_NO_BPF_LSM) when `bpf` is not an active LSM.
    pub require_bpf_lsm: bool,
}

/// Where busybox-static puts its binary on Debian (a dynamic busybox also works: we add its
/// libraries like any other binary's).
fn busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| util::which("busybox"))
        .context("busybox not found (apt-get install busybox-static, or `cargo xtask setup`)")
}

/// Library paths the dynamic loader will need for `bin` (the loader included), per `ldd`.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = capture(Command::new("ldd").arg(bin))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {}", bin.display(), text.trim());
    }
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)",
        // "linux-vdso.so.1 (0x…)" (no file), "libfoo.so => not found".
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("ldd {}: {} not found", bin.display(), name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn add_tree(a: &mut Archive, src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let md =
        std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if md.file_type().is_symlink() {
        let t = std::fs::read_link(src)?;
        a.add(
            dst,
            Node::Symlink {
                target: t.to_string_lossy().into_owned(),
            },
        );
    } else if md.is_dir() {
        a.dir(dst, md.permissions().mode() & 0o7777);
        for e in std::fs::read_dir(src)? {
            let e = e?;
            add_tree(a, &e.path(), &dst.join(e.file_name()))?;
        }
    } else {
        a.file(dst, src, md.permissions().mode() & 0o7777);
    }
    Ok(())
}

/// Build the archive for `spec` and write it gzip'd to `out`.
pub fn build(spec: &Spec, out: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut a = Archive::default();
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/root",
        "/etc",
        "/var",
        "/usr/bin",
        "/usr/sbin",
        "/sbin",
    ] {
        a.dir(d, 0o755);
    }
    a.dir("/tmp", 0o1777);
    // The kernel opens /dev/console before running /init (devtmpfs is mounted over it later).
    a.add(
        "/dev/console",
        Node::CharDev {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    );
    a.add(
        "/dev/null",
        Node::CharDev {
            major: 1,
            minor: 3,
            mode: 0o666,
        },
    );

    let mut libs = BTreeSet::new();
    let bb = busybox()?;
    libs.extend(shared_libs(&bb)?);
    a.file("/bin/busybox", &bb, 0o755);
    let strip_dir = out.with_extension(format!("strip-{}", std::process::id()));
    for (bin, name) in &spec.bins {
        if !bin.is_file() {
            bail!("{} does not exist (did `cargo build` run?)", bin.display());
        }
        libs.extend(shared_libs(bin)?);
        let src = stripped(bin, &strip_dir)?;
        a.file(Path::new("/bin").join(name), src, 0o755);
    }
    for (src, dst) in &spec.extra {
        add_tree(&mut a, src, dst)?;
    }
    // Libraries keep the path ldd printed (the loader path is baked into every binary); the
    // content is that of the symlink's target.
    let mut lib_dirs = BTreeSet::new();
    for lib in &libs {
        if let Some(d) = lib.parent() {
            lib_dirs.insert(d.to_string_lossy().into_owned());
        }
        a.file(lib, lib, 0o755);
    }
    // Applet links last, so they never shadow real files.
    let list = util::stdout_of(Command::new(&bb).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !applet.ends_with("/busybox") && applet != "linuxrc" {
            a.symlink_if_absent(format!("/{applet}"), "/bin/busybox");
        }
    }
    if !a.contains("/bin/sh") {
        bail!("{} has no `sh` applet", bb.display());
    }
    a.bytes("/etc/passwd", PASSWD, 0o644);
    a.bytes("/etc/group", GROUP, 0o644);
    a.bytes("/etc/hostname", "airlock-guest\n", 0o644);
    let lib_path: Vec<String> = lib_dirs.into_iter().collect();
    a.bytes("/init", init_script(spec, &lib_path.join(":")), 0o755);

    let n = write_gz(&a, out);
    let _ = std::fs::remove_dir_all(&strip_dir);
    let n = n?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "initramfs: {} ({} entries, {:.1} MiB cpio, {:.1} MiB gzip'd, {})",
        out.display(),
        a.len(),
        n as f64 / 1048576.0,
        size as f64 / 1048576.0,
        util::fmt_dur(t0.elapsed())
    );
    Ok(())
}

/// A copy of `bin` without debug info (symbols stay, so backtraces still name functions): debug
/// builds are mostly DWARF, and every byte costs gzip time on the host and unpacking time in the
/// emulated guest. `AIRLOCK_GUEST_STRIP=0` (or no objcopy) keeps the original.
fn stripped(bin: &Path, dir: &Path) -> Result<PathBuf> {
    if std::env::var("AIRLOCK_GUEST_STRIP").is_ok_and(|v| v == "0")
        || util::which("objcopy").is_none()
    {
        return Ok(bin.to_path_buf());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dst = dir.join(bin.file_name().context("no file name")?);
    let out = capture(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(bin)
            .arg(&dst),
    )?;
    if !out.status.success() {
        println!(
            "initramfs: warning: objcopy --strip-debug {} failed ({}); using it unstripped",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(bin.to_path_buf());
    }
    Ok(dst)
}

/// Pipe the cpio stream through `gzip -n` (fast native code; the kernel has gzip built in).
fn write_gz(a: &Archive, out: &Path) -> Result<u64> {
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut gz = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("spawning gzip")?;
    let mut w = BufWriter::with_capacity(1 << 20, gz.stdin.take().expect("piped stdin"));
    let n = a.write(&mut w);
    let flushed = w.flush();
    drop(w);
    let st = gz.wait().context("waiting for gzip")?;
    let n = n?;
    flushed?;
    if !st.success() {
        bail!("gzip failed: {st}");
    }
    std::fs::rename(&tmp, out)?;
    Ok(n)
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
agent:x:1000:1000:unprivileged test user:/tmp:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n";

fn init_script(spec: &Spec, lib_path: &str) -> String {
    let mut s = format!(
        r#"#!/bin/sh
# /init generated by `cargo xtask` (xtask/src/initramfs.rs): mount, report, run the payload, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=linux
export LD_LIBRARY_PATH={lib_path}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
hostname airlock-guest
ip link set lo up 2>/dev/null
echo "{MARK_BOOT} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)
echo "{MARK_LSM} $lsm"
echo "AIRLOCK-CMDLINE $(cat /proc/cmdline)"
"#
    );
    if spec.require_bpf_lsm {
        s.push_str(&format!(
            r#"case ",$lsm," in
  *,bpf,*) ;;
  *) echo "{MARK_NO_BPF_LSM}: bpf is not an active LSM"; poweroff -f ;;
esac
"#
        ));
    }
    s.push_str("cd /tmp\n");
    match &spec.payload {
        Payload::Command(c) => s.push_str(&format!("{c}\n")),
        Payload::Shell => {
            s.push_str("echo 'airlock guest shell: exit to power off'\nsetsid cttyhack sh -l\n")
        }
    }
    s.push_str(&format!(
        r#"rc=$?
printf '\n%s\n' "{MARK_DONE}$rc"
poweroff -f
"#
    ));
    s
}

/// A shell command line from words, quoting each (`vm -- ls -l '/a b'`). A single word is taken
/// as a shell snippet as is (`vm -- 'dmesg | tail'`).
pub fn command_line(words: &[String]) -> String {
    match words {
        [one] => one.clone(),
        _ => words.iter().map(quote).collect::<Vec<_>>().join(" "),
    }
}
