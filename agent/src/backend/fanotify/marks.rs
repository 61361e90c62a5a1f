//! Placing fanotify marks and inotify watches: resolving policy roots, walking protected trees,
//! and following them as they change (new subdirectories, binaries replaced at their path).
//!
//! Every object is opened (`O_PATH` for files, never following the last symlink) and marked
//! through `/proc/self/fd/N`, so what gets marked is exactly what was examined, whatever renames
//! happen meanwhile. Opening a directory or an `O_PATH` fd produces no fanotify permission event,
//! so walking never waits on our own listener.
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use airlock_common::{InodeKey, RuleRef};

use super::FanotifyError;
use super::rules::{EntryKey, Ruleset};
use super::sys::{self, FileId, MASK_DIR, MASK_EXEC, MASK_FILE};

/// A mark in force: the events it asks for, and the path it was last seen at (used to find it
/// again for removal).
#[derive(Clone, Debug)]
pub(crate) struct MarkRec {
    pub mask: u64,
    pub path: PathBuf,
}

/// What a policy root is, for re-resolving it when its directory entry changes.
#[derive(Clone, Debug)]
pub(crate) enum RootKind {
    Exec(Vec<RuleRef>),
    Protected(Vec<RuleRef>),
}

/// A policy root followed by name in its parent directory.
#[derive(Clone, Debug)]
pub(crate) struct RootName {
    pub name: OsString,
    pub path: PathBuf,
    pub kind: RootKind,
}

/// One inotify watch: a directory inside a protected tree (`tree` = that tree's root), and/or
/// the parent directory of policy roots (`roots`).
#[derive(Clone, Debug)]
pub(crate) struct WatchRec {
    pub path: PathBuf,
    pub key: InodeKey,
    pub tree: Option<InodeKey>,
    pub roots: Vec<RootName>,
}

/// Marks and watches in force; shared by `apply` and the watcher thread under one mutex.
#[derive(Default)]
pub(crate) struct MarkState {
    pub marks: HashMap<InodeKey, MarkRec>,
    pub watches: HashMap<i32, WatchRec>,
    /// Protected roots that are directories: a walk does not descend into another root.
    pub tree_roots: HashSet<InodeKey>,
    /// Marks that could not be removed because their object moved or vanished.
    pub stale: u64,
    /// An `O_PATH` fd on every policy root object the rules name by inode. Holding it keeps
    /// the inode number from being reused while the rules name it (ext4 hands a deleted
    /// inode's number to the next new file at once, and the kernel drops the marks of deleted
    /// inodes), and its link count tells when a replaced root is gone for good.
    pub held: HashMap<InodeKey, OwnedFd>,
}

/// Deepest directory nesting walked (deeper directories are still gated through their parent's
/// mark for direct children; the operator gets a note).
const MAX_DEPTH: usize = 256;

/// Builds a batch of marks and watches on top of those in force.
/// What a finished [`Marker`] batch produced, to be merged into the backend's state.
pub(crate) struct Batch {
    pub marks: HashMap<InodeKey, MarkRec>,
    pub watches: HashMap<i32, WatchRec>,
    pub members: HashMap<InodeKey, InodeKey>,
    pub held: HashMap<InodeKey, OwnedFd>,
    pub notes: Vec<String>,
}

pub(crate) struct Marker<'a> {
    group: BorrowedFd<'a>,
    inotify: BorrowedFd<'a>,
    have: &'a HashMap<InodeKey, MarkRec>,
    tree_roots: &'a HashSet<InodeKey>,
    /// Marks this batch wants (all of them in force once `ensure` returned).
    pub marks: HashMap<InodeKey, MarkRec>,
    /// Bits this batch added to the kernel, for rollback.
    pub added: Vec<(InodeKey, u64)>,
    pub watches: HashMap<i32, WatchRec>,
    pub members: HashMap<InodeKey, InodeKey>,
    /// Root objects resolved by this batch (see [`MarkState::held`]).
    pub held: HashMap<InodeKey, OwnedFd>,
    pub notes: Vec<String>,
    visited: HashSet<InodeKey>,
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ESTALE)
    )
}

impl<'a> Marker<'a> {
    /// Ends the batch, releasing the borrowed state, and hands over what it built.
    pub fn finish(self) -> Batch {
        Batch {
            marks: self.marks,
            watches: self.watches,
            members: self.members,
            held: self.held,
            notes: self.notes,
        }
    }

    pub fn new(
        group: BorrowedFd<'a>,
        inotify: BorrowedFd<'a>,
        have: &'a HashMap<InodeKey, MarkRec>,
        tree_roots: &'a HashSet<InodeKey>,
    ) -> Marker<'a> {
        Marker {
            group,
            inotify,
            have,
            tree_roots,
            marks: HashMap::new(),
            added: Vec::new(),
            watches: HashMap::new(),
            members: HashMap::new(),
            held: HashMap::new(),
            notes: Vec::new(),
            visited: HashSet::new(),
        }
    }

    /// Makes sure the object `fd` refers to is marked for at least `mask`.
    ///
    /// The mark is always (re)added: the kernel drops an inode's marks when the inode is
    /// deleted, and a new file can get the same inode number, so the bookkeeping cannot tell
    /// whether a mark is really there. `FAN_MARK_ADD` ORs into an existing mark; the whole mask
    /// is passed so that it is never only `FAN_EVENT_ON_CHILD`.
    pub fn ensure(
        &mut self,
        fd: BorrowedFd<'_>,
        key: InodeKey,
        path: &Path,
        mask: u64,
    ) -> io::Result<()> {
        let in_force =
            self.have.get(&key).map_or(0, |r| r.mask) | self.marks.get(&key).map_or(0, |r| r.mask);
        sys::mark(self.group, fd, mask, true)?;
        let need = mask & !in_force;
        if need != 0 {
            self.added.push((key, need));
        }
        let rec = self.marks.entry(key).or_insert_with(|| MarkRec {
            mask: 0,
            path: path.to_owned(),
        });
        rec.mask |= mask;
        rec.path = path.to_owned();
        Ok(())
    }

    /// Watches directory `fd`; failures (watch limit) are notes, since marks already gate the
    /// directory's children and only later additions would be missed.
    pub fn watch(
        &mut self,
        fd: BorrowedFd<'_>,
        key: InodeKey,
        path: &Path,
        f: impl FnOnce(&mut WatchRec),
    ) {
        match sys::inotify_watch(self.inotify, fd) {
            Ok(wd) => {
                let rec = self.watches.entry(wd).or_insert_with(|| WatchRec {
                    path: path.to_owned(),
                    key,
                    tree: None,
                    roots: Vec::new(),
                });
                rec.path = path.to_owned();
                f(rec);
            }
            Err(e) => self.notes.push(format!(
                "cannot watch {} for new entries ({e}); raise fs.inotify.max_user_watches",
                path.display()
            )),
        }
    }

    /// Marks and watches the protected tree below directory `fd` (a root, or a directory that
    /// appeared inside one), without following symlinks or entering other filesystems.
    pub fn walk_tree(
        &mut self,
        fd: OwnedFd,
        id: FileId,
        path: &Path,
        root: InodeKey,
    ) -> Result<(), FanotifyError> {
        self.visited.insert(id.key);
        self.walk_dir(fd.as_fd(), id.key, path, root, 0)
    }

    fn walk_dir(
        &mut self,
        fd: BorrowedFd<'_>,
        key: InodeKey,
        path: &Path,
        root: InodeKey,
        depth: usize,
    ) -> Result<(), FanotifyError> {
        self.ensure(fd, key, path, MASK_DIR)
            .map_err(|source| FanotifyError::Mark {
                path: path.to_owned(),
                source,
            })?;
        self.watch(fd, key, path, |w| w.tree = Some(root));
        let entries = match std::fs::read_dir(sys::fd_path(fd)) {
            Ok(e) => e,
            Err(e) => {
                self.notes.push(format!(
                    "cannot list {}: {e}; its existing files are gated only through it",
                    path.display()
                ));
                return Ok(());
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let child_path = path.join(&name);
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                let child = match sys::open_at(
                    Some(fd),
                    Path::new(&name),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                ) {
                    Ok(c) => c,
                    Err(e) if is_gone(&e) => continue,
                    Err(e) => {
                        self.notes
                            .push(format!("cannot open {}: {e}", child_path.display()));
                        continue;
                    }
                };
                let Ok(cid) = sys::fstat(child.as_fd()) else {
                    continue;
                };
                if cid.key.dev != root.dev {
                    self.notes.push(format!(
                        "not entering {}: another filesystem is mounted there; name it in a policy to protect it",
                        child_path.display()
                    ));
                    continue;
                }
                // Another root is walked on its own; a bind mount looping back is walked once.
                if self.tree_roots.contains(&cid.key) || !self.visited.insert(cid.key) {
                    continue;
                }
                if depth + 1 >= MAX_DEPTH {
                    self.notes.push(format!(
                        "not walking below {}: deeper than {MAX_DEPTH} levels",
                        child_path.display()
                    ));
                    continue;
                }
                self.walk_dir(child.as_fd(), cid.key, &child_path, root, depth + 1)?;
            } else if ft.is_file() {
                self.mark_member(Some(fd), Path::new(&name), &child_path, root);
            }
            // Symlinks lead elsewhere and are not followed. FIFOs, sockets and devices get no
            // permission events on 6.14+ kernels; on older ones this directory's mark covers them.
        }
        Ok(())
    }

    /// Marks a regular file of a protected tree by its own inode (so that hard links to it from
    /// elsewhere stay gated) and records it as a member of `root`. Failures are notes: the
    /// file stays gated through its directory.
    pub fn mark_member(
        &mut self,
        dir: Option<BorrowedFd<'_>>,
        rel: &Path,
        path: &Path,
        root: InodeKey,
    ) {
        let Ok(fd) = sys::open_at(dir, rel, libc::O_PATH | libc::O_NOFOLLOW) else {
            return;
        };
        let Ok(id) = sys::fstat(fd.as_fd()) else {
            return;
        };
        if !id.is_reg() {
            return;
        }
        if let Err(e) = self.ensure(fd.as_fd(), id.key, path, MASK_FILE) {
            self.notes.push(format!(
                "cannot mark {}: {e}; gated only through its directory",
                path.display()
            ));
            return;
        }
        self.members.insert(id.key, root);
    }

    /// Resolves a protected root now (following symlinks in `path`), marks it (walking it when
    /// it is a directory) and adds its rules to `rs`. Returns its inode, `None` when it does
    /// not exist.
    pub fn protect_root(
        &mut self,
        path: &Path,
        rules: &[RuleRef],
        rs: &mut Ruleset,
    ) -> Result<Option<InodeKey>, FanotifyError> {
        let Some((fd, id)) = open_root(path)? else {
            return Ok(None);
        };
        if id.is_dir() {
            let dir = sys::open_at(
                None,
                &sys::fd_path(fd.as_fd()),
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
            .map_err(|source| FanotifyError::Open {
                path: path.to_owned(),
                source,
            })?;
            self.walk_tree(dir, id, path, id.key)?;
        } else {
            self.ensure(fd.as_fd(), id.key, path, MASK_FILE)
                .map_err(|source| FanotifyError::Mark {
                    path: path.to_owned(),
                    source,
                })?;
        }
        for r in rules {
            rs.add_protected(id.key, *r);
        }
        self.held.insert(id.key, fd);
        Ok(Some(id.key))
    }

    /// Resolves a gated binary now (following symlinks), marks its inode and records its rules.
    /// Returns the inode, or `None` when nothing executable-looking is there.
    pub fn gate_binary(
        &mut self,
        path: &Path,
        rules: &[RuleRef],
        rs: &mut Ruleset,
    ) -> Result<Option<InodeKey>, FanotifyError> {
        let Some((fd, id)) = open_root(path)? else {
            return Ok(None);
        };
        if !id.is_reg() {
            return Ok(None);
        }
        self.ensure(fd.as_fd(), id.key, path, MASK_EXEC)
            .map_err(|source| FanotifyError::Mark {
                path: path.to_owned(),
                source,
            })?;
        for r in rules {
            rs.add_exec(id.key, *r);
        }
        self.held.insert(id.key, fd);
        Ok(Some(id.key))
    }

    /// Watches the parent directory of a policy root so that a new object at its path is
    /// marked, and returns the (directory, name) key the root is also matched by.
    pub fn follow_root(&mut self, path: &Path, kind: RootKind) -> Option<EntryKey> {
        let (parent, name) = (path.parent()?, path.file_name()?);
        let Ok(dir) = sys::open_at(None, parent, libc::O_RDONLY | libc::O_DIRECTORY) else {
            self.notes.push(format!(
                "cannot follow {}: its directory is missing",
                path.display()
            ));
            return None;
        };
        let pid = sys::fstat(dir.as_fd()).ok()?;
        let root = RootName {
            name: name.to_owned(),
            path: path.to_owned(),
            kind,
        };
        self.watch(dir.as_fd(), pid.key, parent, |w| w.roots.push(root));
        Some(EntryKey::new(pid.key, name.to_owned()))
    }
}

/// Removes `bits` from the mark on `key`, found again through the path it was recorded at.
/// Returns false when the object is no longer there (a stale mark: harmless, since no rule
/// matches it any more, but it costs a round trip per open until the daemon restarts).
pub(crate) fn remove_bits(group: BorrowedFd<'_>, key: InodeKey, rec: &MarkRec, bits: u64) -> bool {
    let Ok(fd) = sys::open_at(None, &rec.path, libc::O_PATH | libc::O_NOFOLLOW) else {
        return false;
    };
    match sys::fstat(fd.as_fd()) {
        Ok(id) if id.key == key => {
            // ENOENT: no such mark (already gone); nothing to do either way.
            let _ = sys::mark(group, fd.as_fd(), bits, false);
            true
        }
        _ => false,
    }
}

/// Handles a batch of inotify events under the state lock: marks what appeared in protected
/// trees and re-marks policy roots whose path now names another object, adding their rules to
/// `rs`. Returns whether any policy root's name was involved.
pub(crate) fn on_inotify(
    m: &mut Marker<'_>,
    watches: &HashMap<i32, WatchRec>,
    events: &[sys::InotifyEvent],
    rs: &mut Ruleset,
) -> bool {
    let mut roots_touched = false;
    for ev in events {
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            m.notes.push("inotify queue overflowed: new directories may be ungated until the policy is re-applied".into());
            continue;
        }
        let (Some(w), Some(name)) = (watches.get(&ev.wd), ev.name.as_ref()) else {
            continue;
        };
        for root in w.roots.iter().filter(|r| &r.name == name) {
            roots_touched = true;
            on_root_changed(
                m,
                root,
                ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) == 0,
                rs,
            );
        }
        let Some(tree) = w.tree else { continue };
        if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) == 0 {
            continue;
        }
        // The watch's path may be stale if the directory was renamed; check it still is it.
        let Ok(dir) = sys::open_at(
            None,
            &w.path,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        ) else {
            continue;
        };
        if sys::fstat(dir.as_fd()).ok().map(|d| d.key) != Some(w.key) {
            continue;
        }
        let child_path = w.path.join(name);
        if ev.mask & libc::IN_ISDIR != 0 {
            let Ok(c) = sys::open_at(
                Some(dir.as_fd()),
                Path::new(name),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            ) else {
                continue;
            };
            let Ok(cid) = sys::fstat(c.as_fd()) else {
                continue;
            };
            if cid.key.dev != tree.dev || m.tree_roots.contains(&cid.key) {
                continue;
            }
            m.visited.clear();
            if let Err(e) = m.walk_tree(c, cid, &child_path, tree) {
                m.notes.push(format!(
                    "cannot gate new directory {}: {e}",
                    child_path.display()
                ));
            }
        } else {
            m.mark_member(Some(dir.as_fd()), Path::new(name), &child_path, tree);
        }
    }
    roots_touched
}

/// Root objects that no longer have any link (replaced at their path and deleted), taken out
/// of `held`. The caller drops their keys from the rules, then their fds: only then can the
/// inode number be reused.
pub(crate) fn sweep_dead_roots(held: &mut HashMap<InodeKey, OwnedFd>) -> Vec<(InodeKey, OwnedFd)> {
    let dead: Vec<InodeKey> = held
        .iter()
        .filter(|(_, fd)| sys::fstat(fd.as_fd()).map_or(true, |f| f.nlink == 0))
        .map(|(k, _)| *k)
        .collect();
    dead.into_iter()
        .filter_map(|k| held.remove_entry(&k))
        .collect()
}

/// Re-resolves a policy root whose name changed. `attrib_only`: only an attribute change (or a
/// link count change) was reported, which usually leaves the same object there: then an object
/// we already marked is not walked again. A creation or a move always re-marks, because the new
/// object may have the inode number of a deleted one we marked.
fn on_root_changed(m: &mut Marker<'_>, root: &RootName, attrib_only: bool, rs: &mut Ruleset) {
    if attrib_only
        && let Ok(fd) = sys::open_at(None, &root.path, libc::O_PATH)
        && let Ok(id) = sys::fstat(fd.as_fd())
        && m.have.get(&id.key).is_some_and(|r| {
            let want = match root.kind {
                RootKind::Exec(_) => MASK_EXEC,
                RootKind::Protected(_) if id.is_dir() => MASK_DIR,
                RootKind::Protected(_) => MASK_FILE,
            };
            r.mask & want == want
        })
    {
        return;
    }
    let res = match &root.kind {
        RootKind::Exec(rules) => m
            .gate_binary(&root.path, rules, rs)
            .map(|k| k.map(|k| ("gated binary", k))),
        RootKind::Protected(rules) => m
            .protect_root(&root.path, rules, rs)
            .map(|k| k.map(|k| ("protected path", k))),
    };
    match res {
        Ok(Some((what, key))) if m.added.iter().any(|(k, _)| *k == key) => tracing::info!(
            path = %root.path.display(), ino = key.ino, dev = key.dev,
            "{what} now names a new inode; marked it"
        ),
        Ok(_) => {}
        Err(e) => m
            .notes
            .push(format!("cannot re-mark {}: {e}", root.path.display())),
    }
}

/// Opens a policy root with `O_PATH` (following symlinks) and stats it; `None` when nothing is
/// there.
fn open_root(path: &Path) -> Result<Option<(std::os::fd::OwnedFd, sys::FileId)>, FanotifyError> {
    let fd = match sys::open_at(None, path, libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) if is_gone(&e) => return Ok(None),
        Err(source) => {
            return Err(FanotifyError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    let id = sys::fstat(fd.as_fd()).map_err(|source| FanotifyError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some((fd, id)))
}
