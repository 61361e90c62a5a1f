//! The lint tier of `cargo xtask test`: the tree stays clean or CI fails.
//!
//! - `cargo fmt --all --check` (rustfmt.toml at the root);
//! - `cargo clippy --all-targets -- -D warnings` with the workspace lints (`[workspace.lints]`
//!   in Cargo.toml, inherited by every crate);
//! - the dependency policy, read from Cargo.lock: TLS is rustls with ring only, so no OpenSSL,
//!   native-tls, aws-lc or BoringSSL crate may appear, and every package comes from crates.io
//!   or the workspace (no git sources);
//! - no unused dependency: every crate a member's Cargo.toml names is used in its sources (the
//!   check cargo-machete makes: the crate's Rust name followed by `::`, or `use`/`extern crate`
//!   of it), except the few listed in [`USED_ELSEWHERE`] with why.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::report::Tally;
use crate::util::Ctx;

/// Crates whose presence in Cargo.lock breaks the policy, with why.
const BANNED: &[(&str, &str)] = &[
    ("openssl", "TLS is rustls (ring); no OpenSSL"),
    ("openssl-sys", "TLS is rustls (ring); no OpenSSL"),
    ("native-tls", "TLS is rustls (ring); no platform TLS"),
    ("aws-lc-rs", "the crypto provider is ring"),
    ("aws-lc-sys", "the crypto provider is ring"),
    ("boring", "TLS is rustls (ring)"),
    ("boring-sys", "TLS is rustls (ring)"),
];

/// Dependencies no source file names, and why they are needed all the same:
/// `(member directory, dependency)`.
const USED_ELSEWHERE: &[(&str, &str, &str)] = &[
    (
        "proto",
        "tonic-prost",
        "the code tonic-prost-build generates into OUT_DIR calls it",
    ),
    (
        "proto",
        "prost",
        "the generated messages derive prost::Message (in OUT_DIR)",
    ),
    (
        "agent",
        "airlock-ebpf",
        "a build-dependency so cargo rebuilds the agent when the eBPF crate changes; build.rs \
         compiles it for bpf through aya-build",
    ),
];

fn cargo(ctx: &Ctx) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(&ctx.root);
    c
}

/// Runs every check; each is one passed or failed entry.
pub fn run(ctx: &Ctx) -> Result<Tally> {
    let mut t = Tally::default();
    let mut step = |name: &str, r: Result<()>| match r {
        Ok(()) => {
            println!("  ok   {name}");
            t.passed += 1;
        }
        Err(e) => {
            println!("  FAIL {name}: {e:#}");
            t.fail(format!("{name}: {e:#}"));
        }
    };
    step(
        "cargo fmt --all --check",
        status(cargo(ctx).args(["fmt", "--all", "--check"])),
    );
    step(
        "cargo clippy --all-targets -- -D warnings",
        status(cargo(ctx).args(["clippy", "--all-targets", "--", "-D", "warnings"])),
    );
    step(
        "dependency policy (Cargo.lock)",
        dependency_policy(&ctx.root),
    );
    step("no unused dependencies", unused_dependencies(&ctx.root));
    Ok(t)
}

fn status(cmd: &mut Command) -> Result<()> {
    println!("+ {cmd:?}");
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    anyhow::ensure!(st.success(), "exited with {st}");
    Ok(())
}

/// `(name, source)` of every package in a Cargo.lock text.
fn locked_packages(lock: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (key, v) = l.split_once(" = ")?;
                (key.trim() == k).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if let Some(name) = field("name") {
            out.push((name, field("source")));
        }
    }
    out
}

fn dependency_policy(root: &Path) -> Result<()> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("Cargo.lock")?;
    let mut bad = Vec::new();
    for (name, source) in locked_packages(&lock) {
        if let Some((_, why)) = BANNED.iter().find(|(b, _)| *b == name) {
            bad.push(format!(
                "{name}: {why} (`cargo tree -i {name}` shows who pulls it)"
            ));
        }
        if let Some(s) = source
            && !s.starts_with("registry+https://github.com/rust-lang/crates.io-index")
        {
            bad.push(format!("{name}: from {s}, not crates.io"));
        }
    }
    anyhow::ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

/// The dependency names of a Cargo.toml's `[dependencies]`, `[dev-dependencies]` and
/// `[build-dependencies]` tables (the package name when renamed).
fn declared(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_deps = matches!(
                l,
                "[dependencies]" | "[dev-dependencies]" | "[build-dependencies]"
            ) || l.starts_with("[target.") && l.ends_with("dependencies]");
            continue;
        }
        if !in_deps || l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = l.split_once('=') {
            out.push(key.trim().to_string());
        }
    }
    out
}

/// Every .rs file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `src` names crate `krate` (its Rust name) as code does.
fn uses(src: &str, krate: &str) -> bool {
    let patterns = [
        format!("{krate}::"),
        format!("use {krate}"),
        format!("extern crate {krate}"),
    ];
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    patterns.iter().any(|p| {
        src.match_indices(p.as_str()).any(|(i, m)| {
            // A whole word: `foo_bar::` must not count for `bar`, nor `use serde_json` for
            // `serde`.
            !word(src[..i].chars().next_back())
                && (m.ends_with("::") || !word(src[i + m.len()..].chars().next()))
        })
    })
}

fn unused_dependencies(root: &Path) -> Result<()> {
    let ws = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let members: Vec<String> = ws
        .lines()
        .find(|l| l.starts_with("members"))
        .map(|l| {
            l.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        !members.is_empty(),
        "no workspace members found in Cargo.toml"
    );
    let mut unused = Vec::new();
    for m in &members {
        let dir = root.join(m);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
            .with_context(|| format!("{m}/Cargo.toml"))?;
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        let text: String = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect::<Vec<_>>()
            .join("\n");
        for dep in declared(&manifest) {
            if USED_ELSEWHERE.iter().any(|(mm, d, _)| mm == m && *d == dep) {
                continue;
            }
            if !uses(&text, &dep.replace('-', "_")) {
                unused.push(format!("{m}: {dep}"));
            }
        }
    }
    anyhow::ensure!(
        unused.is_empty(),
        "declared but never used (remove, or list in xtask/src/lint.rs USED_ELSEWHERE with why): {}",
        unused.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_and_git_packages_are_found_in_a_lock_file() {
        let lock = "version = 4\n\n[[package]]\nname = \"ring\"\nversion = \"0.17.14\"\n\
                    source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
                    [[package]]\nname = \"airlock-agent\"\nversion = \"0.1.0\"\n\n\
                    [[package]]\nname = \"openssl-sys\"\nversion = \"0.9.0\"\n\
                    source = \"git+https://example.com/openssl\"\n";
        let p = locked_packages(lock);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], ("airlock-agent".to_string(), None));
        let dir = tempfile_dir();
        std::fs::write(dir.join("Cargo.lock"), lock).unwrap();
        let e = dependency_policy(&dir).unwrap_err().to_string();
        assert!(e.contains("openssl-sys: TLS is rustls"), "{e}");
        assert!(e.contains("from git+https://example.com/openssl"), "{e}");
        assert!(!e.contains("ring:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dependency_counts_as_used_only_when_code_names_it() {
        assert!(uses("use serde::Deserialize;", "serde"));
        assert!(uses("#[tokio::test]", "tokio"));
        assert!(uses("let x = ring::digest::digest(..);", "ring"));
        assert!(!uses("use serde_json::json;", "serde"));
        assert!(!uses("let spring::x = 1;", "ring"));
        assert!(!uses("// serde is nice", "serde"));
        let m = "[package]\nname = \"x\"\n[dependencies]\nanyhow = \"1\"\nfoo-bar = { workspace = true }\n\
                 [features]\nuser = []\n[dev-dependencies]\ntempfile = \"3\"\n";
        assert_eq!(declared(m), ["anyhow", "foo-bar", "tempfile"]);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-lint-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
