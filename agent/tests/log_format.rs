//! airlockd's and airlock's log setup through the real binaries (both log before parsing their
//! command line, so `--version` is enough): `AIRLOCK_LOG_FORMAT=json` makes the log lines JSON
//! objects, as for airlock-server (tests/log_format.rs there). The event is the warning about
//! an unusable `AIRLOCK_LOG` filter.
use std::process::Command;

fn first_stderr_line(bin: &str) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .env_remove("JOURNAL_STREAM")
        .env("AIRLOCK_LOG_FORMAT", "json")
        .env("AIRLOCK_LOG", "airlock=loud")
        .output()
        .expect("running the binary");
    assert!(out.status.success(), "{bin} --version: {out:?}");
    let err = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    err.lines().next().unwrap_or_default().to_string()
}

#[test]
fn agent_log_format_json_applies_to_airlockd_and_airlock() {
    for bin in [
        env!("CARGO_BIN_EXE_airlockd"),
        env!("CARGO_BIN_EXE_airlock"),
    ] {
        let line = first_stderr_line(bin);
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{bin}: {e}: {line:?}"));
        assert_eq!(v["level"], "WARN", "{bin}: {line}");
        let msg = v["message"].as_str().expect("message");
        assert!(msg.contains("is not a valid filter"), "{bin}: {msg}");
    }
}
