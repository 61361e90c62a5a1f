//! Crate-level tests: parsing, error locations, compilation, the shipped policies.
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use airlock_common::InodeKey;

use crate::resolve::{FileId, Resolver};

mod compile;
mod content;
mod effective;
mod errors;
mod parse;
mod shipped;

/// Device of every fake file (kernel encoding of 8:1).
pub(crate) const DEV: u32 = (8 << 20) | 1;

/// An in-memory filesystem: files and directories by canonical path, plus symlinked
/// directories (`/bin` -> `/usr/bin`) applied by prefix.
#[derive(Default)]
pub(crate) struct FakeResolver {
    objects: HashMap<PathBuf, FileId>,
    links: Vec<(PathBuf, PathBuf)>,
    /// Every absolute path exists (as a file, inode derived from the path).
    everything: bool,
    /// Paths whose lookup fails with permission denied.
    denied: Vec<PathBuf>,
    /// Content identities set by tests ([`FakeResolver::content`]).
    pub contents: HashMap<PathBuf, crate::resolve::Content>,
    /// Paths whose content cannot be read.
    unreadable: Vec<PathBuf>,
}

impl FakeResolver {
    pub fn new() -> Self {
        FakeResolver::default()
    }

    /// `path` exists but its content cannot be read.
    pub fn denied_content(mut self, path: &str) -> Self {
        self.unreadable.push(path.into());
        self
    }

    /// Every path exists and is a distinct file: for checking that policies compile fully.
    pub fn everything() -> Self {
        FakeResolver {
            everything: true,
            ..Default::default()
        }
    }

    pub fn dir(mut self, path: &str, ino: u64) -> Self {
        let key = InodeKey {
            ino,
            dev: DEV,
            slot: 0,
        };
        self.objects
            .insert(path.into(), FileId { key, is_dir: true });
        self
    }

    pub fn file(mut self, path: &str, ino: u64) -> Self {
        let key = InodeKey {
            ino,
            dev: DEV,
            slot: 0,
        };
        self.objects
            .insert(path.into(), FileId { key, is_dir: false });
        self
    }

    pub fn link(mut self, from: &str, to: &str) -> Self {
        self.links.push((from.into(), to.into()));
        self
    }

    pub fn deny(mut self, path: &str) -> Self {
        self.denied.push(path.into());
        self
    }

    fn resolve_links(&self, path: &Path) -> PathBuf {
        let mut p = path.to_path_buf();
        for _ in 0..8 {
            let Some((from, to)) = self.links.iter().find(|(from, _)| p.starts_with(from)) else {
                break;
            };
            let rest = p.strip_prefix(from).unwrap().to_path_buf();
            p = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
        }
        p
    }
}

pub(crate) fn synthetic_ino(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

impl Resolver for FakeResolver {
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        if self.denied.iter().any(|d| path.starts_with(d)) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let p = self.resolve_links(path);
        if self.everything || self.objects.contains_key(&p) {
            Ok(p)
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn stat(&self, path: &Path) -> io::Result<FileId> {
        if self.everything {
            let key = InodeKey {
                ino: synthetic_ino(path),
                dev: DEV,
                slot: 0,
            };
            return Ok(FileId { key, is_dir: false });
        }
        self.objects
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// A file's content is its contents entry if it has one (copies share it), else derived
    /// from its inode (every file distinct).
    fn content(&self, path: &Path) -> io::Result<crate::resolve::Content> {
        if self.unreadable.iter().any(|p| p == path) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        if let Some(c) = self.contents.get(path) {
            return Ok(*c);
        }
        let id = self.stat(path)?;
        let mut sha256 = [0u8; 32];
        sha256[..8].copy_from_slice(&id.key.ino.to_le_bytes());
        Ok(crate::resolve::Content {
            size: id.key.ino % 100_000,
            sha256,
        })
    }
}

/// A well-formed policy header with `mode`, to prepend to agents/rules in tests.
pub(crate) fn header(name: &str, mode: &str) -> String {
    format!("apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nmode: {mode}\n")
}

/// Every diagnostic of `src` (parsed as `t.yaml`), displayed.
pub(crate) fn errors_of(src: &str) -> Vec<String> {
    match crate::parse_str(Path::new("t.yaml"), src) {
        Ok(p) => panic!("expected errors, parsed {p:#?}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}
