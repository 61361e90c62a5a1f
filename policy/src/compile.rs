//! Compilation: policies as written to the identities the kernel sees ([`CompiledPolicy`]).
//!
//! Paths are resolved once, here: symlinks followed (`/bin/apt` on a merged-/usr host is
//! `/usr/bin/apt`) and each object taken by inode, so that renaming or linking a protected file
//! does not slip past a path comparison. What cannot be resolved is not an error but a note:
//! a default policy names binaries and trees that many hosts lack, and the daemon must still
//! start (and protect what does exist) on those hosts.
use std::io;
use std::path::{Path, PathBuf};

use airlock_common::{DirEntryKey, NAME_LEN, RuleRef, action, flags, op};

use crate::compiled::{
    AgentDef, CompiledPolicy, ExecTarget, Mode, ProtectedTarget, RuleInfo, run_scope_selector,
};
use crate::diag::Diagnostics;
use crate::model::{PathSpec, Policy, Rule, Target};
use crate::resolve::Resolver;
use crate::validate::validate_set;

/// Policies that cannot be compiled together.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The set is inconsistent (duplicate names, unknown agents); one diagnostic per line.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Compiles `policies` (rule ids are assigned in order across all of them) against the host
/// seen through `resolver`.
pub fn compile(
    policies: &[Policy],
    resolver: &dyn Resolver,
) -> Result<CompiledPolicy, CompileError> {
    let diags = validate_set(policies);
    if !diags.is_empty() {
        return Err(CompileError::Invalid(diags));
    }
    let mut out = CompiledPolicy::default();
    for policy in policies {
        for agent in &policy.agents {
            let mut selectors = agent.selectors.clone();
            selectors.push(run_scope_selector(&agent.name));
            out.agents.push(AgentDef {
                name: agent.name.clone(),
                policy: policy.name.clone(),
                selectors,
            });
        }
    }
    note_scope_overlaps(policies, &mut out.notes);

    for policy in policies {
        for rule in &policy.rules {
            compile_rule(policy, rule, resolver, &mut out);
        }
    }
    out.ancestors = protected_ancestors(&out.protected, resolver);
    Ok(out)
}

/// The directories above the roots in `targets` whose renaming (or covering by a mount) a rule
/// must gate (see
/// [`CompiledPolicy::ancestors`]): for each root whose rule gates renames and is not `allow`,
/// each ancestor below `/` that is not itself a root (a root's own rule decides for it).
pub fn protected_ancestors(
    targets: &[ProtectedTarget],
    resolver: &dyn Resolver,
) -> Vec<ProtectedTarget> {
    let roots: std::collections::HashSet<_> = targets.iter().map(|t| t.inode).collect();
    let mut out = Vec::new();
    for t in targets {
        // Moving the directory away or covering it with a mount both free the root's path.
        let ops = t.rule.ops & (op::bit(op::RENAME) | op::bit(op::MOUNT));
        if ops == 0 || t.rule.action == action::ALLOW {
            continue;
        }
        let rule = RuleRef {
            ops,
            flags: t.rule.flags | flags::SELF_ONLY,
            ..t.rule
        };
        for dir in t.canonical.ancestors().skip(1) {
            if dir == Path::new("/") {
                break;
            }
            let Ok(id) = resolver.stat(dir) else { break };
            if roots.contains(&id.key) {
                continue;
            }
            out.push(ProtectedTarget {
                rule,
                path: dir.to_path_buf(),
                canonical: dir.to_path_buf(),
                inode: id.key,
                is_dir: true,
            });
        }
    }
    out
}

/// `airlock run` scopes are `airlock-NAME-<suffix>.scope`, so agent `a`'s implicit glob
/// `airlock-a-*.scope` also matches the scopes of agent `a-b`. Harmless while rules apply to
/// every agent, but events may name the wrong agent; say so.
fn note_scope_overlaps(policies: &[Policy], notes: &mut Vec<String>) {
    let agents: Vec<_> = policies.iter().flat_map(|p| &p.agents).collect();
    for a in &agents {
        for b in &agents {
            if b.name.starts_with(&format!("{}-", a.name)) {
                notes.push(format!(
                    "{}: agent {:?}: its `airlock run` scopes (airlock-{}-*.scope) also match \
                     those of agent {:?}; events from {:?} may be attributed to either",
                    a.location, a.name, a.name, b.name, b.name
                ));
            }
        }
    }
}

fn compile_rule(policy: &Policy, rule: &Rule, resolver: &dyn Resolver, out: &mut CompiledPolicy) {
    let id = u32::try_from(out.rules.len()).expect("more than 2^32 rules");
    let flags = if policy.mode == Mode::Monitor {
        flags::MONITOR
    } else {
        0
    };
    let rule_ref = RuleRef {
        rule_id: id,
        action: rule.action,
        ops: rule.ops,
        flags,
    };
    out.rules.push(RuleInfo {
        id,
        name: rule.name.clone(),
        policy: policy.name.clone(),
        source: policy.location.file.clone(),
        action: rule.action,
        mode: policy.mode,
        ops: rule.ops,
        agents: rule.agents.iter().map(|(name, _)| name.clone()).collect(),
        approval: rule.approval,
    });
    let what = |spec: &PathSpec| {
        format!(
            "{}: rule {:?}: {}",
            spec.location,
            rule.name,
            spec.path.display()
        )
    };
    match &rule.target {
        Target::Exec(specs) | Target::Connect(specs) => {
            let kind = if matches!(rule.target, Target::Exec(_)) {
                FileKind::Binary
            } else {
                FileKind::Socket
            };
            for spec in specs {
                let text = spec.path.to_string_lossy();
                if kind == FileKind::Socket
                    && let Ok(w) = crate::values::wildcard_socket(&text)
                {
                    match wild_target(resolver, rule_ref, &spec.path, &w) {
                        Ok(t) => out.connect_wild.push(t),
                        Err(note) => out.notes.push(format!("{}: {note}", what(spec))),
                    }
                    continue;
                }
                match file_target(resolver, rule_ref, &spec.path, kind) {
                    Ok((target, notes)) => {
                        out.notes
                            .extend(notes.iter().map(|n| format!("{}: {n}", what(spec))));
                        match kind {
                            FileKind::Binary => out.exec.push(target),
                            FileKind::Socket => out.connect.push(target),
                        }
                    }
                    Err(note) => out.notes.push(format!("{}: {note}", what(spec))),
                }
            }
        }
        Target::Privilege => out.privilege.push(rule_ref),
        Target::Paths(specs) => {
            for spec in specs {
                match protected_target(resolver, rule_ref, &spec.path) {
                    Ok(target) => out.protected.push(target),
                    Err(note) => out.notes.push(format!("{}: {note}", what(spec))),
                }
            }
        }
    }
}

/// The key for a wildcard `connect` path, or why there is none (its directory is missing).
fn wild_target(
    resolver: &dyn Resolver,
    rule: RuleRef,
    path: &Path,
    w: &crate::values::WildcardSocket,
) -> Result<crate::WildTarget, String> {
    let dir = resolver
        .canonicalize(&w.dir)
        .map_err(|e| format!("cannot resolve {} ({e}); not gated", w.dir.display()))?;
    let id = resolver
        .stat(&dir)
        .map_err(|e| format!("cannot stat {}: {e}; not gated", dir.display()))?;
    let hash = w
        .suffix
        .iter()
        .rev()
        .fold(airlock_common::FNV_OFFSET, |h, name| {
            airlock_common::wild_fold(h, name.as_bytes())
        });
    Ok(crate::WildTarget {
        rule,
        path: path.to_path_buf(),
        key: airlock_common::WildKey {
            dir_ino: id.key.ino,
            dev: id.key.dev,
            slot: 0,
            depth: w.suffix.len() as u32,
            _pad: 0,
            hash,
        },
    })
}

/// A directory-entry key, or `None` when the name does not fit (the key would never match).
fn entry_key(resolver: &dyn Resolver, dir: &Path, name: &[u8]) -> io::Result<Option<DirEntryKey>> {
    let id = resolver.stat(dir)?;
    if name.len() >= NAME_LEN {
        return Ok(None);
    }
    let mut key = DirEntryKey {
        dir_ino: id.key.ino,
        dev: id.key.dev,
        slot: 0,
        name: [0; NAME_LEN],
    };
    key.name[..name.len()].copy_from_slice(name);
    Ok(Some(key))
}

fn name_bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.file_name().map(|n| n.as_bytes()).unwrap_or_default()
}

/// What an `exec` or `connect` rule names: one file, gated by inode and by directory entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Binary,
    Socket,
}

/// The target for a gated binary or socket, plus notes worth showing; or why there is none.
fn file_target(
    resolver: &dyn Resolver,
    rule: RuleRef,
    path: &Path,
    kind: FileKind,
) -> Result<(ExecTarget, Vec<String>), String> {
    let (noun, absent) = match kind {
        FileKind::Binary => (
            "a binary",
            "not installed; gated by path if it is installed later",
        ),
        FileKind::Socket => (
            "a socket",
            "no socket there now; gated by path once its service creates it",
        ),
    };
    let mut notes = Vec::new();
    match resolver.canonicalize(path) {
        Ok(canonical) => {
            let id = resolver
                .stat(&canonical)
                .map_err(|e| format!("cannot stat: {e}; not gated"))?;
            if id.is_dir {
                return Err(format!("is a directory, not {noun}; not gated"));
            }
            if kind == FileKind::Binary && canonical.file_name() != path.file_name() {
                // Multi-call binaries (busybox, kmod) run under many names: gating the inode
                // gates them all, which the operator should know.
                notes.push(format!(
                    "is a link to {}; every command that runs that file is gated",
                    canonical.display()
                ));
            }
            let dir = canonical.parent().unwrap_or(Path::new("/"));
            let entry = entry_key(resolver, dir, name_bytes(&canonical))
                .map_err(|e| format!("cannot stat {}: {e}; not gated", dir.display()))?;
            if entry.is_none() {
                notes.push(format!(
                    "resolves to {}, whose name is too long to match by path; gated by inode only",
                    canonical.display()
                ));
            }
            let content = match kind {
                FileKind::Socket => None,
                FileKind::Binary => match resolver.content(&canonical) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        notes.push(format!(
                            "cannot read it ({e}); copies of it are not recognised, only the file itself"
                        ));
                        None
                    }
                },
            };
            let target = ExecTarget {
                rule,
                path: path.to_path_buf(),
                canonical,
                inode: Some(id.key),
                entry,
                content,
            };
            Ok((target, notes))
        }
        Err(e) if is_missing(&e) => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let dir = resolver.canonicalize(parent).map_err(|e| {
                if is_missing(&e) {
                    format!("neither it nor {} exists; not gated", parent.display())
                } else {
                    format!("cannot resolve {}: {e}; not gated", parent.display())
                }
            })?;
            let canonical = dir.join(path.file_name().unwrap_or_default());
            // The schema limits written names to NAME_LEN - 1 bytes, so this always fits.
            let entry = entry_key(resolver, &dir, name_bytes(path))
                .map_err(|e| format!("cannot stat {}: {e}; not gated", dir.display()))?;
            notes.push(absent.to_owned());
            let target = ExecTarget {
                rule,
                path: path.to_path_buf(),
                canonical,
                inode: None,
                entry,
                content: None,
            };
            Ok((target, notes))
        }
        Err(e) => Err(format!("cannot resolve: {e}; not gated")),
    }
}

/// The target for a protected tree or file, or why there is none.
fn protected_target(
    resolver: &dyn Resolver,
    rule: RuleRef,
    path: &Path,
) -> Result<ProtectedTarget, String> {
    let canonical: PathBuf = resolver.canonicalize(path).map_err(|e| {
        if is_missing(&e) {
            "does not exist; not protected (create it, then restart or reload)".to_owned()
        } else {
            format!("cannot resolve: {e}; not protected")
        }
    })?;
    let id = resolver
        .stat(&canonical)
        .map_err(|e| format!("cannot stat: {e}; not protected"))?;
    Ok(ProtectedTarget {
        rule,
        path: path.to_path_buf(),
        canonical,
        inode: id.key,
        is_dir: id.is_dir,
    })
}

/// ENOTDIR means a component that should be a directory is a file: the path cannot exist
/// either.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}
