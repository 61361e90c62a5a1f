//! `airlockd config check FILE` and `airlockd --config FILE`, with the real binary (no root:
//! a config with errors stops airlockd before it touches the kernel). Guarded: every error
//! names the file, line and column; a bad file never lets the daemon start half-configured.
use std::process::Command;

fn airlockd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlockd"));
    c.env_remove("AIRLOCK_CONFIG");
    c
}

#[test]
fn config_check_names_the_line_and_column_and_passes_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("airlockd.yaml");
    std::fs::write(&bad, "backend: fanotify\nserver: http://approvals:7443\n").unwrap();
    let o = airlockd()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:2:9: server: ", bad.display())),
        "{err}"
    );
    std::fs::write(&bad, "# all defaults\nbackend: auto\n").unwrap();
    let o = airlockd()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).ends_with(": ok\n"));
}

#[test]
fn a_bad_config_file_stops_airlockd_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("airlockd.yaml");
    std::fs::write(&bad, "statedir: /tmp/x\n").unwrap();
    let state = dir.path().join("state");
    let o = airlockd()
        .arg("--config")
        .arg(&bad)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:1:1: unknown field `statedir`", bad.display())),
        "{err}"
    );
    assert!(!state.exists(), "nothing was set up");
    // A named file that does not exist is an error too (only the default path may be absent).
    let o = airlockd()
        .arg("--config")
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.yaml"));
}
