//! The systemd units in `systemd/` pass `systemd-analyze verify` without a single diagnostic.
//!
//! `systemd-analyze verify` exits 0 on a misspelt directive (it only logs "Unknown key …,
//! ignoring"), so the check fails on any output at all, not just on the exit status. The
//! units name `/usr/bin/airlockd` and friends, which verify requires to be executable: each
//! unit is checked as a copy with those paths rewritten to the binaries under test.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::harness::Report;

/// The repository's unit directory (the tests crate sits beside it).
pub fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// `systemd-analyze` from PATH, if installed.
pub fn find_systemd_analyze() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

/// `text` with every `/usr/bin/airlock…` binary replaced by `exe(name)`.
pub fn rewrite_binaries(text: &str, exe: &dyn Fn(&str) -> PathBuf) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/usr/bin/airlock") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + "/usr/bin/".len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(tail.len());
        out.push_str(&exe(&tail[..end]).display().to_string());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `systemd-analyze verify` on unit `name` with contents `text` (binaries rewritten by
/// `exe`); an error carries every diagnostic it printed.
pub fn verify_unit_text(
    analyze: &Path,
    name: &str,
    text: &str,
    exe: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temporary unit directory")?;
    let path = dir.path().join(name);
    std::fs::write(&path, rewrite_binaries(text, exe))
        .with_context(|| format!("writing {}", path.display()))?;
    let out = Command::new(analyze)
        // Documentation= links are not man pages; checking them would need man-db.
        .args(["verify", "--man=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .with_context(|| format!("running {}", analyze.display()))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!(
            "systemd-analyze verify {name} ({}):\n{}",
            out.status,
            said.trim()
        );
    }
    Ok(())
}

/// Verifies every unit file in `dir`, with `/usr/bin/X` taken from `bin_dir/X`.
pub fn verify_dir(analyze: &Path, dir: &Path, bin_dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| {
                ["service", "socket", "slice", "timer"].contains(&&*x.to_string_lossy())
            })
        })
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        verify_unit_text(analyze, &name, &text, &|b| bin_dir.join(b))?;
        n += 1;
    }
    Ok(n)
}

/// Host-tier check: the repository's units verify clean against the built binaries. Without
/// systemd-analyze it is a SKIP (a FAIL under CI=true, by [`Report::skip`]).
pub fn run_all(r: &mut Report, bin_dir: &Path) {
    let name = "systemd_units_pass_systemd_analyze_verify";
    let Some(analyze) = find_systemd_analyze() else {
        r.skip(
            name,
            "systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    };
    let dir = units_dir();
    // ExecStart= needs an absolute path; --bin-dir is often given relative (target/debug).
    let bin_dir = std::path::absolute(bin_dir).unwrap_or_else(|_| bin_dir.to_path_buf());
    r.check(
        name,
        verify_dir(&analyze, &dir, &bin_dir).and_then(|n| {
            crate::harness::ensure(n >= 3, || format!("only {n} units in {}", dir.display()))
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd-analyze, or None outside CI (a note says the test did not run); under CI=true
    /// its absence fails the test.
    fn analyze_or_skip() -> Option<PathBuf> {
        let found = find_systemd_analyze();
        if found.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "systemd-analyze is missing under CI"
            );
            eprintln!("SKIP: systemd-analyze is not installed");
        }
        found
    }

    /// Any executable will do for verify's "is ExecStart executable" check.
    fn any_exe(_: &str) -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn binaries_are_rewritten_with_their_arguments_kept() {
        let t = "ExecStart=/usr/bin/airlockd --x\nExecStart=/usr/bin/airlock-server serve\nExecReload=/bin/kill -HUP $MAINPID\n";
        let got = rewrite_binaries(t, &|b| PathBuf::from(format!("/b/{b}")));
        assert_eq!(
            got,
            "ExecStart=/b/airlockd --x\nExecStart=/b/airlock-server serve\nExecReload=/bin/kill -HUP $MAINPID\n"
        );
    }

    #[test]
    fn repository_units_verify_clean() {
        let Some(analyze) = analyze_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        for b in ["airlockd", "airlock", "airlock-server"] {
            std::os::unix::fs::symlink(any_exe(b), dir.path().join(b)).unwrap();
        }
        let n = verify_dir(&analyze, &units_dir(), dir.path()).unwrap();
        assert!(n >= 3, "{n} units");
    }

    /// Guards against the check passing whatever the unit says: systemd-analyze exits 0 on
    /// an unknown directive, so the output must fail it.
    #[test]
    fn a_misspelt_directive_fails_verification() {
        let Some(analyze) = analyze_or_skip() else {
            return;
        };
        let good = "[Service]\nExecStart=/usr/bin/airlockd\nProtectSystem=full\n";
        verify_unit_text(&analyze, "x.service", good, &any_exe).unwrap();
        let bad = good.replace("ProtectSystem", "ProtectSytem");
        let e = verify_unit_text(&analyze, "x.service", &bad, &any_exe).unwrap_err();
        assert!(format!("{e:#}").contains("ProtectSytem"), "{e:#}");
    }

    #[test]
    fn a_missing_binary_fails_verification() {
        let Some(analyze) = analyze_or_skip() else {
            return;
        };
        let unit = "[Service]\nExecStart=/usr/bin/airlockd\n";
        let e = verify_unit_text(&analyze, "x.service", unit, &|_| {
            PathBuf::from("/nonexistent/airlockd")
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("not executable"), "{e:#}");
    }
}
