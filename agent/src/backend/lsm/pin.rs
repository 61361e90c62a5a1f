//! Pinning the LSM programs and their maps in bpffs, so that they keep gating (and held tasks
//! stay held) when airlockd dies, and a restarted airlockd adopts them instead of loading anew.
//!
//! Layout: `<pin_dir>/lsm-<16 hex digits>/{maps,links}/<NAME>`, the hex digits a hash of the
//! eBPF object, so a daemon adopts only programs built from the same object. Only `lsm-*`
//! directories are ours: other pins under the same `pin_dir` are left alone.
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::pin::PinError;

use super::LsmError;

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is normally mounted; airlock mounts it there when nothing is.
const BPF_FS_ROOT: &str = "/sys/fs/bpf";
/// Prefix of our version directories under the pin dir.
const VERSION_PREFIX: &str = "lsm-";

/// The maps userspace opens when it adopts pinned programs. Every map of the object is pinned;
/// these must be there for a version directory to count as complete.
pub(crate) const ADOPTED_MAPS: &[&str] = &[
    "SETTINGS",
    "AGENT_ROOTS",
    "AGENT_TASKS",
    "EXEC_INODES",
    "EXEC_ENTRIES",
    "EXEC_DIGESTS",
    "DIGEST_SIZES",
    "PROTECTED",
    "CONNECT_INODES",
    "CONNECT_ENTRIES",
    "CONNECT_WILD",
    "PRIVILEGE",
    "BLOCK_DEVS",
    "SECRETS",
    "SECRETS_ON",
    "EVENTS",
    "LOST",
    "ONCE_GRANTS",
    "AGENT_GRANTS",
];

/// FNV-1a 64 over the object bytes: stable across builds of airlockd and the CLI (unlike std's
/// hasher), and cheap enough for a 1 MiB object at start.
fn object_hash(obj: &[u8]) -> u64 {
    obj.iter().fold(airlock_common::FNV_OFFSET, |h, &b| {
        (h ^ b as u64).wrapping_mul(airlock_common::FNV_PRIME)
    })
}

/// The directory the programs of `obj` are pinned in under `pin_dir`.
pub fn version_dir(pin_dir: &Path, obj: &[u8]) -> PathBuf {
    pin_dir.join(format!("{VERSION_PREFIX}{:016x}", object_hash(obj)))
}

fn map_pin(ver: &Path, name: &str) -> PathBuf {
    ver.join("maps").join(name)
}

fn link_pin(ver: &Path, hook: &str) -> PathBuf {
    ver.join("links").join(hook)
}

fn pin_error(what: String) -> impl FnOnce(PinError) -> LsmError {
    move |e| LsmError::Pin(format!("{what}: {e}"))
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> LsmError {
    move |e| LsmError::Pin(format!("{what}: {e}"))
}

fn is_bpffs(p: &Path) -> Result<bool, LsmError> {
    let st = nix::sys::statfs::statfs(p)
        .map_err(|e| LsmError::Pin(format!("statfs {}: {e}", p.display())))?;
    Ok(st.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on bpffs: mounts bpffs at /sys/fs/bpf when `pin_dir` is below
/// it and nothing is mounted there yet (fresh boots of minimal systems); anywhere else a missing
/// bpffs is an error, never silently a directory on another filesystem (pins need bpffs).
pub(crate) fn ensure_bpffs(pin_dir: &Path) -> Result<(), LsmError> {
    let root = Path::new(BPF_FS_ROOT);
    if pin_dir.starts_with(root) && root.is_dir() && !is_bpffs(root)? {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| LsmError::Pin(format!("mounting bpffs at {BPF_FS_ROOT}: {e}")))?;
        tracing::info!("mounted bpffs at {BPF_FS_ROOT}");
    }
    // Check the nearest existing ancestor before creating anything below it.
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing)? {
        return Err(LsmError::Pin(format!(
            "{} is not on a bpf filesystem (mount one with `mount -t bpf bpf DIR`, or pick a pin \
             directory under {BPF_FS_ROOT})",
            pin_dir.display()
        )));
    }
    std::fs::create_dir_all(pin_dir).map_err(io_error(format!("creating {}", pin_dir.display())))
}

/// True when `ver` holds a pin for the link of every one of `hooks` (those this kernel has) and
/// every map userspace adopts.
pub(crate) fn complete(ver: &Path, hooks: &[&str]) -> bool {
    hooks.iter().all(|h| link_pin(ver, h).exists())
        && ADOPTED_MAPS.iter().all(|m| map_pin(ver, m).exists())
}

/// Pins every map of a freshly loaded object (before its links: a directory with all links
/// pinned then also has all maps).
pub(crate) fn pin_maps(ebpf: &aya::Ebpf, ver: &Path) -> Result<(), LsmError> {
    let dir = ver.join("maps");
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    for (name, map) in ebpf.maps() {
        // Sections LLVM may emit (.rodata, .bss) are not ours to adopt.
        if name.starts_with('.') {
            continue;
        }
        map.pin(dir.join(name))
            .map_err(pin_error(format!("pinning map {name}")))?;
    }
    Ok(())
}

/// Pins one program's link: it stays attached until the pin is removed, whatever happens to
/// this process.
pub(crate) fn pin_link(
    ver: &Path,
    hook: &str,
    link: aya::programs::links::FdLink,
) -> Result<(), LsmError> {
    let dir = ver.join("links");
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    // The returned PinnedLink only closes our fd when dropped; the pin keeps the link.
    link.pin(link_pin(ver, hook))
        .map_err(pin_error(format!("pinning the {hook} link")))?;
    Ok(())
}

/// Opens a pinned map.
pub(crate) fn open_map(ver: &Path, name: &'static str) -> Result<Map, LsmError> {
    let data =
        MapData::from_pin(map_pin(ver, name)).map_err(|source| LsmError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| LsmError::Map { name, source })
}

/// Our version directories under `pin_dir` other than `keep`.
pub(crate) fn other_versions(pin_dir: &Path, keep: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(VERSION_PREFIX))
        .map(|e| e.path())
        .filter(|p| p != keep && p.is_dir())
        .collect()
}

/// How long [`remove_version`] waits for unpinned programs to be detached (milliseconds on
/// hardware; seconds under emulation, where each detach waits for RCU-tasks grace periods).
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Kernel ids of the programs whose links are pinned in `ver`.
fn pinned_program_ids(ver: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(ver.join("links")) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| aya::programs::links::PinnedLink::from_pin(e.path()).ok())
        // Our fd is closed again at the end of the statement; only the pin keeps the link.
        .filter_map(|l| {
            aya::programs::links::FdLink::from(l)
                .info()
                .ok()
                .map(|i| i.program_id())
        })
        .collect()
}

/// Removes a version directory: unpinning its links detaches those programs (nobody else holds
/// their fds: the daemon drops them after pinning), unpinning its maps frees them. The kernel
/// detaches a released link later, from a workqueue (its id is gone before the program is
/// unhooked), so this waits until the programs themselves are gone: when it returns, they no
/// longer gate.
pub(crate) fn remove_version(ver: &Path) -> Result<(), LsmError> {
    let progs = pinned_program_ids(ver);
    match std::fs::remove_dir_all(ver) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LsmError::Pin(format!("removing {}: {e}", ver.display()))),
    }
    let deadline = std::time::Instant::now() + DETACH_WAIT;
    loop {
        let live: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| progs.contains(id))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(LsmError::Pin(format!(
                "unpinned {} but programs {live:?} are still loaded after {DETACH_WAIT:?} (another \
                 process holds them open)",
                ver.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Unpins every LSM program and map airlock pinned under `pin_dir` (all versions), which
/// detaches the programs: gating stops and tasks held by them are no longer decided by anyone
/// (they stay stopped until sent SIGCONT; their syscall then runs ungated). For uninstalling and
/// test cleanup. `pin_dir` itself is removed when nothing else is left in it.
pub fn remove_pins(pin_dir: &Path) -> Result<(), LsmError> {
    if !pin_dir.exists() {
        return Ok(());
    }
    for ver in other_versions(pin_dir, Path::new("")) {
        remove_version(&ver)?;
    }
    // Other pins (or none) may remain; an empty directory goes.
    let _ = std::fs::remove_dir(pin_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::lsm::{HOOKS, OPTIONAL_HOOKS};

    #[test]
    fn version_dir_depends_on_the_object_only() {
        let a = version_dir(Path::new("/sys/fs/bpf/airlock"), b"object one");
        assert_eq!(
            a,
            version_dir(Path::new("/sys/fs/bpf/airlock"), b"object one")
        );
        assert_ne!(
            a,
            version_dir(Path::new("/sys/fs/bpf/airlock"), b"object two")
        );
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(VERSION_PREFIX) && name.len() == VERSION_PREFIX.len() + 16,
            "{name}"
        );
    }

    #[test]
    fn only_our_version_directories_are_others() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "lsm-0000000000000001",
            "lsm-0000000000000002",
            "exec-0000000000000001",
        ] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        std::fs::write(d.path().join("lsm-file"), "").unwrap();
        let keep = d.path().join("lsm-0000000000000002");
        let others = other_versions(d.path(), &keep);
        assert_eq!(others, vec![d.path().join("lsm-0000000000000001")]);
    }

    #[test]
    fn a_version_directory_without_every_pin_is_incomplete() {
        let d = tempfile::tempdir().unwrap();
        let ver = d.path().join("lsm-0000000000000001");
        std::fs::create_dir_all(ver.join("maps")).unwrap();
        std::fs::create_dir_all(ver.join("links")).unwrap();
        for m in ADOPTED_MAPS {
            std::fs::write(map_pin(&ver, m), "").unwrap();
        }
        for h in &HOOKS[1..] {
            std::fs::write(link_pin(&ver, h), "").unwrap();
        }
        assert!(!complete(&ver, HOOKS));
        std::fs::write(link_pin(&ver, HOOKS[0]), "").unwrap();
        assert!(complete(&ver, HOOKS));
        // A kernel that has the optional hooks needs their links too (pins made on an older
        // kernel are not adopted after an upgrade to one with more hooks).
        let all: Vec<&str> = HOOKS.iter().chain(OPTIONAL_HOOKS).copied().collect();
        assert!(!complete(&ver, &all));
    }

    #[test]
    fn a_pin_dir_off_bpffs_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = ensure_bpffs(&d.path().join("pins")).unwrap_err();
        assert!(e.to_string().contains("not on a bpf filesystem"), "{e}");
        assert!(!d.path().join("pins").exists());
    }

    #[test]
    fn removing_pins_of_a_missing_dir_is_fine() {
        remove_pins(Path::new("/nonexistent/airlock-pins")).unwrap();
    }
}
