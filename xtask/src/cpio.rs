//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs. Writing it
//! ourselves lets us add device nodes (/dev/console) and root-owned files without being root or
//! staging a directory tree.
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub enum Node {
    Dir {
        mode: u32,
    },
    /// Contents read from a host file when the archive is written.
    HostFile {
        src: PathBuf,
        mode: u32,
    },
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: String,
    },
    CharDev {
        major: u32,
        minor: u32,
        mode: u32,
    },
}

/// Archive contents keyed by absolute guest path; parents are added as directories.
#[derive(Debug, Default)]
pub struct Archive {
    nodes: BTreeMap<PathBuf, Node>,
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

impl Archive {
    /// Add (or replace) a node, creating missing parent directories (0755).
    pub fn add(&mut self, path: impl AsRef<Path>, node: Node) {
        let path = normalize(path.as_ref());
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p != Path::new("/") {
                self.nodes
                    .entry(p.to_path_buf())
                    .or_insert(Node::Dir { mode: 0o755 });
            }
            parent = p.parent();
        }
        self.nodes.insert(path, node);
    }

    pub fn dir(&mut self, path: impl AsRef<Path>, mode: u32) {
        self.add(path, Node::Dir { mode });
    }

    pub fn file(&mut self, path: impl AsRef<Path>, src: impl Into<PathBuf>, mode: u32) {
        self.add(
            path,
            Node::HostFile {
                src: src.into(),
                mode,
            },
        );
    }

    pub fn bytes(&mut self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>, mode: u32) {
        self.add(
            path,
            Node::Bytes {
                data: data.into(),
                mode,
            },
        );
    }

    /// A symlink; an existing node at `path` wins (so applet links never shadow real files).
    pub fn symlink_if_absent(&mut self, path: impl AsRef<Path>, target: &str) {
        let path = normalize(path.as_ref());
        if !self.nodes.contains_key(&path) {
            self.add(
                path,
                Node::Symlink {
                    target: target.to_string(),
                },
            );
        }
    }

    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.nodes.contains_key(&normalize(path.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Write the archive in newc format (parents always precede children: BTreeMap order of
    /// paths compares component-wise).
    pub fn write(&self, w: &mut impl Write) -> Result<u64> {
        let mut written = 0u64;
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.to_string_lossy();
            let name = name.trim_start_matches('/');
            let (mode, data, rdev, nlink): (u32, Vec<u8>, (u32, u32), u32) = match node {
                Node::Dir { mode } => (0o040000 | mode, Vec::new(), (0, 0), 2),
                Node::HostFile { src, mode } => {
                    let data =
                        std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                    (0o100000 | mode, data, (0, 0), 1)
                }
                Node::Bytes { data, mode } => (0o100000 | mode, data.clone(), (0, 0), 1),
                Node::Symlink { target } => (0o120777, target.as_bytes().to_vec(), (0, 0), 1),
                Node::CharDev { major, minor, mode } => {
                    (0o020000 | mode, Vec::new(), (*major, *minor), 1)
                }
            };
            written += entry(w, ino as u32 + 1, mode, nlink, rdev, name, &data)?;
        }
        written += entry(w, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        Ok(written)
    }
}

fn pad4(w: &mut impl Write, len: u64) -> Result<u64> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad as usize])?;
    Ok(pad)
}

fn entry(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> Result<u64> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: reproducible images
        u32::try_from(data.len()).context("file larger than 4 GiB")?,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut hdr = String::with_capacity(110);
    hdr.push_str("070701");
    for f in fields {
        hdr.push_str(&format!("{f:08x}"));
    }
    w.write_all(hdr.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let mut n = 110 + name.len() as u64 + 1;
    n += pad4(w, n)?;
    w.write_all(data)?;
    n += data.len() as u64;
    n += pad4(w, n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_parents_first() {
        let mut a = Archive::default();
        a.bytes("/etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644);
        a.symlink_if_absent("/bin/sh", "busybox");
        a.add(
            "/dev/console",
            Node::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        let mut out = Vec::new();
        let n = a.write(&mut out).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        let (bin, sh) = (text.find("bin\0").unwrap(), text.find("bin/sh\0").unwrap());
        assert!(bin < sh);
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
    }
}
