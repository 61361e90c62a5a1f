//! airlock-server's log lines as a systemd unit configures them, through the real binary:
//! `AIRLOCK_LOG_FORMAT=json` makes every log line one JSON object; the default text has no
//! colour when stderr is not a terminal and no timestamp under journald. The cheap event that
//! logs before any work is the warning about an unusable `AIRLOCK_LOG` filter.
use std::process::Command;

/// Runs `airlock-server config check` on a missing file with a bad filter and `env`; returns
/// stderr (the warning, then check's own error message).
fn stderr_with(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock-server"));
    cmd.args(["config", "check", "/nonexistent/airlock/server.yaml"])
        .env_remove("JOURNAL_STREAM")
        .env_remove("AIRLOCK_LOG_FORMAT")
        .env("AIRLOCK_LOG", "airlock=loud");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running airlock-server");
    assert_eq!(out.status.code(), Some(1), "config check of a missing file");
    String::from_utf8(out.stderr).expect("UTF-8 stderr")
}

#[test]
fn server_log_format_json_writes_each_log_line_as_a_json_object() {
    let err = stderr_with(&[("AIRLOCK_LOG_FORMAT", "json")]);
    let first = err.lines().next().expect("a log line");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "WARN", "{first}");
    assert!(v["timestamp"].is_string(), "{first}");
    let msg = v["message"].as_str().expect("message");
    assert!(
        msg.starts_with("AIRLOCK_LOG=\"airlock=loud\" is not a valid filter"),
        "{msg}"
    );
    // The check's own error is the command's output, not a log line: printed as before.
    assert!(
        err.lines().nth(1).is_some_and(|l| !l.starts_with('{')),
        "{err}"
    );
}

#[test]
fn server_default_log_is_plain_text_without_timestamps_under_journald() {
    let err = stderr_with(&[("JOURNAL_STREAM", "8:12345")]);
    let first = err.lines().next().expect("a log line");
    assert!(first.trim_start().starts_with("WARN"), "{first}");
    assert!(!err.contains('\x1b'), "no colour on a pipe: {err:?}");
}

#[test]
fn server_bad_log_format_falls_back_to_text_and_says_so() {
    let err = stderr_with(&[("AIRLOCK_LOG_FORMAT", "xml")]);
    assert!(
        err.contains("AIRLOCK_LOG_FORMAT=\"xml\" is neither `text` nor `json`; logging as text"),
        "{err}"
    );
    assert!(!err.starts_with('{') && !err.contains('\x1b'), "{err:?}");
}
