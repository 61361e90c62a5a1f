//! Looking paths up on the host: the seam between compilation and the filesystem, so that
//! compilation can be tested without root or particular files.
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use airlock_common::{InodeKey, kernel_dev};

/// What the kernel will see for a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    /// Inode number and device in the kernel's `s_dev` encoding.
    pub key: InodeKey,
    /// A directory (a protected directory stands for its whole subtree).
    pub is_dir: bool,
}

/// Path lookups used by [`crate::compile`].
pub trait Resolver {
    /// Resolves every symlink and `..` in an absolute path, like realpath(3). Fails with
    /// `NotFound` when the path (or a link along it) does not exist.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// The identity of the object at a canonical path.
    fn stat(&self, path: &Path) -> io::Result<FileId>;
    /// The size and SHA-256 of the regular file at a canonical path: a gated binary's content
    /// identity, so that a byte-identical copy of it is gated too.
    fn content(&self, path: &Path) -> io::Result<Content>;
}

/// A file's content identity: what `bpf_ima_file_hash` computes in the kernel (SHA-256 of
/// the whole file), and its size, which the kernel checks first so that only files of a gated
/// binary's size are ever hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Content {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The real filesystem of this host.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostResolver;

impl Resolver for HostResolver {
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn stat(&self, path: &Path) -> io::Result<FileId> {
        let meta = std::fs::metadata(path)?;
        Ok(FileId {
            key: inode_key(meta.dev(), meta.ino()),
            is_dir: meta.is_dir(),
        })
    }

    fn content(&self, path: &Path) -> io::Result<Content> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            ctx.update(&buf[..n]);
            size += n as u64;
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(ctx.finish().as_ref());
        Ok(Content { size, sha256 })
    }
}

/// An [`InodeKey`] from `stat` values: `st_dev` uses glibc's `makedev` encoding, the kernel's
/// `s_dev` (what BPF programs read from `inode->i_sb->s_dev`) uses `MAJOR << 20 | MINOR`.
pub fn inode_key(st_dev: u64, st_ino: u64) -> InodeKey {
    InodeKey {
        ino: st_ino,
        dev: kernel_dev(libc::major(st_dev), libc::minor(st_dev)),
        slot: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding_differs_from_stat_for_large_minors() {
        // 259:70000 (NVMe partitions get big minors): glibc splits the minor across bits.
        let st_dev = libc::makedev(259, 70000);
        let key = inode_key(st_dev, 42);
        assert_eq!(key.dev, (259 << 20) | 70000);
        assert_eq!(key.ino, 42);
    }

    #[test]
    fn host_resolver_resolves_symlinks_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let canon = HostResolver.canonicalize(&link).unwrap();
        assert_eq!(canon, std::fs::canonicalize(&real).unwrap());
        let id = HostResolver.stat(&canon).unwrap();
        assert!(!id.is_dir);
        assert_eq!(id.key.ino, std::fs::metadata(&real).unwrap().ino());
        assert!(HostResolver.stat(dir.path()).unwrap().is_dir);
        let missing = HostResolver
            .canonicalize(&dir.path().join("missing"))
            .unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
