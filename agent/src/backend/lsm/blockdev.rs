//! Which block devices hold a filesystem, from sysfs: the device itself, the whole disk of a
//! partition, and what a device-mapper or RAID device is built on (its `slaves`), all the way
//! down. Writing any of them writes the filesystem, so a protected tree on it protects them all
//! for writing (`BLOCK_DEVS`; ebpf-programs/src/main.rs `gate_block`).
use std::collections::BTreeSet;
use std::path::Path;

/// Devices are in the kernel's `s_dev` encoding (`MAJOR << 20 | MINOR`).
fn encode(major: u32, minor: u32) -> u32 {
    airlock_common::kernel_dev(major, minor)
}

/// `MAJ:MIN` as sysfs writes it.
fn parse_dev(s: &str) -> Option<u32> {
    let (a, b) = s.trim().split_once(':')?;
    Some(encode(a.parse().ok()?, b.parse().ok()?))
}

/// The devices holding the filesystem on `dev`, read from `sys` (normally `/sys`). `dev` itself
/// is always in the answer (also an anonymous device with no block device behind it: a device
/// node made with its number is then still refused).
pub(crate) fn devices_holding(sys: &Path, dev: u32) -> Vec<u32> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dev];
    while let Some(d) = todo.pop() {
        if !out.insert(d) || out.len() > 64 {
            continue;
        }
        let node = sys
            .join("dev/block")
            .join(format!("{}:{}", d >> 20, d & 0xf_ffff));
        // A partition's directory sits inside its disk's.
        if node.join("partition").exists()
            && let Ok(real) = std::fs::canonicalize(&node)
            && let Some(disk) = real.parent()
            && let Ok(s) = std::fs::read_to_string(disk.join("dev"))
            && let Some(p) = parse_dev(&s)
        {
            todo.push(p);
        }
        if let Ok(slaves) = std::fs::read_dir(node.join("slaves")) {
            for s in slaves.flatten() {
                if let Ok(t) = std::fs::read_to_string(s.path().join("dev"))
                    && let Some(p) = parse_dev(&t)
                {
                    todo.push(p);
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake sysfs: vda (253:0) with partition vda2 (253:2), and dm-0 (254:0) built on vda2.
    fn fake_sys() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let blk = t.path().join("devices/virtio/block/vda");
        fs::create_dir_all(blk.join("vda2")).unwrap();
        fs::write(blk.join("dev"), "253:0\n").unwrap();
        fs::write(blk.join("vda2/dev"), "253:2\n").unwrap();
        fs::write(blk.join("vda2/partition"), "2\n").unwrap();
        let dm = t.path().join("devices/virtual/block/dm-0");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        fs::write(dm.join("dev"), "254:0\n").unwrap();
        std::os::unix::fs::symlink(blk.join("vda2"), dm.join("slaves/vda2")).unwrap();
        let by_dev = t.path().join("dev/block");
        fs::create_dir_all(&by_dev).unwrap();
        for (name, target) in [
            ("253:0", blk.clone()),
            ("253:2", blk.join("vda2")),
            ("254:0", dm.clone()),
        ] {
            std::os::unix::fs::symlink(target, by_dev.join(name)).unwrap();
        }
        t
    }

    #[test]
    fn a_mapped_device_is_held_by_its_partition_and_that_partition_by_its_disk() {
        let sys = fake_sys();
        let mut got = devices_holding(sys.path(), encode(254, 0));
        got.sort_unstable();
        assert_eq!(got, vec![encode(253, 0), encode(253, 2), encode(254, 0)]);
        assert_eq!(
            devices_holding(sys.path(), encode(253, 2)),
            vec![encode(253, 0), encode(253, 2)]
        );
        // tmpfs and the like: only their own (anonymous) number.
        assert_eq!(
            devices_holding(sys.path(), encode(0, 42)),
            vec![encode(0, 42)]
        );
    }
}
