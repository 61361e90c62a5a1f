//! The policies shipped in `policies/` all pass `check`, alone and together.
use std::path::{Path, PathBuf};

use super::FakeResolver;
use crate::{HostResolver, Target, load_and_compile};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Every policy file shipped: policies/*.yaml and policies/examples/*.yaml.
fn shipped_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [policies_dir(), policies_dir().join("examples")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_policy_checks_and_compiles_fully() {
    let files = shipped_files();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "default.yaml",
        "demo.yaml",
        "monitor.yaml",
        "audit-only.yaml",
        "systemd-unit.yaml",
        "carve-out.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for file in &files {
        let checked = load_and_compile(std::slice::from_ref(file), &FakeResolver::everything())
            .unwrap_or_else(|d| panic!("{}:\n{d}", file.display()));
        let c = &checked.compiled;
        // Paths written in rules of one kind of target.
        let specs = |kind: fn(&Target) -> bool| -> usize {
            let rules = checked.policies.iter().flat_map(|p| &p.rules);
            rules
                .filter(|r| kind(&r.target))
                .map(|r| r.target.paths().len())
                .sum()
        };
        let exec_specs = specs(|t| matches!(t, Target::Exec(_)));
        assert_eq!(c.exec.len(), exec_specs, "{}", file.display());
        let path_specs = specs(|t| matches!(t, Target::Paths(_)));
        assert_eq!(c.protected.len(), path_specs, "{}", file.display());
        let socket_specs = specs(|t| matches!(t, Target::Connect(_)));
        assert_eq!(
            c.connect.len() + c.connect_wild.len(),
            socket_specs,
            "{}",
            file.display()
        );
        assert!(
            c.exec
                .iter()
                .all(|t| t.inode.is_some() && t.entry.is_some())
        );
        assert!(c.notes.is_empty(), "{}: {:?}", file.display(), c.notes);
        assert!(!c.rules.is_empty(), "{} has no rules", file.display());
    }
}

#[test]
fn shipped_policies_load_together_without_name_clashes() {
    load_and_compile(&shipped_files(), &FakeResolver::everything())
        .unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn policies_directory_loads_top_level_files_only() {
    // examples/ is documentation: pointing airlockd at policies/ must not enforce the examples.
    let checked = load_and_compile(&[policies_dir()], &FakeResolver::everything())
        .unwrap_or_else(|d| panic!("{d}"));
    let mut names: Vec<_> = checked.policies.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["default", "demo"]);
}

#[test]
fn default_policy_compiles_on_this_host() {
    // Whatever this host lacks becomes notes, never errors: the daemon must start anywhere.
    let file = policies_dir().join("default.yaml");
    let checked = load_and_compile(&[file], &HostResolver).unwrap_or_else(|d| panic!("{d}"));
    assert!(!checked.summary().is_empty());
}
