//! `airlock events`: print the event log, optionally following it.
use std::io::{BufRead as _, BufReader, Seek as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

/// Arguments of `airlock events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// airlockd's state directory.
    #[arg(long, env = "AIRLOCK_STATE_DIR", default_value = "/run/airlock")]
    pub state_dir: PathBuf,
    /// Keep printing new events as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print raw JSON lines instead of a summary per event.
    #[arg(long)]
    pub json: bool,
}

fn summary(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    if v.get("record").and_then(|x| x.as_str()) == Some("request") {
        // A request line (opened / closed) from the hold table.
        let c = &v["context"];
        let by = v["decision"]["by"]["user"]
            .as_str()
            .map(|u| format!(" by={u}"))
            .unwrap_or_default();
        let reason = v["decision"]["reason"]
            .as_str()
            .map(|r| format!(" reason={r:?}"))
            .unwrap_or_default();
        return format!(
            "request {:<6} id={} state={} op={} agent={} pid={} target={}{by}{reason}",
            v["change"].as_str().unwrap_or("-"),
            v["id"].as_str().unwrap_or("-"),
            v["state"].as_str().unwrap_or("-"),
            c["op"].as_str().unwrap_or("-"),
            c["agent"].as_str().unwrap_or("-"),
            c["pid"].as_u64().unwrap_or(0),
            c["target_path"].as_str().unwrap_or("-"),
        );
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let target = v
        .get("target_path")
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| s("target_name"));
    format!(
        "{:<7} {:<10} {:<10} agent={} pid={} comm={} target={} rule={}{}",
        s("verdict"),
        s("op"),
        s("action"),
        s("agent"),
        n("pid"),
        s("comm"),
        target,
        s("rule"),
        if v.get("monitor").and_then(|x| x.as_bool()).unwrap_or(false) {
            " (monitor)"
        } else {
            ""
        }
    )
}

/// Prints events from the log.
pub fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let path = crate::paths::event_log(&args.state_dir);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            if !args.follow {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(200));
            // Reopen if the log was rotated under us.
            let pos = r.stream_position()?;
            if std::fs::metadata(&path)
                .map(|m| m.len() < pos)
                .unwrap_or(false)
            {
                r = BufReader::new(std::fs::File::open(&path)?);
            }
            continue;
        }
        if !line.ends_with('\n') {
            // A record still being written: wait for the rest of it.
            let back = line.len() as i64;
            r.seek_relative(-back)?;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let l = line.trim_end();
        if args.json {
            println!("{l}")
        } else {
            println!("{}", summary(l))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn request_lines_are_summarised_as_requests_not_as_empty_events() {
        let l = r#"{"record":"request","change":"closed","id":"1234abcd","state":"denied","context":{"op":"open_write","agent":"demo","pid":7,"target_path":"/etc/hosts"},"decision":{"by":{"user":"root"},"reason":"no"}}"#;
        let s = summary(l);
        assert!(s.starts_with("request closed id=1234abcd state=denied op=open_write agent=demo pid=7 target=/etc/hosts"), "{s}");
        assert!(s.contains("by=root") && s.contains("reason=\"no\""), "{s}");
        let e = summary(
            r#"{"verdict":"held","op":"exec","action":"approve","agent":"a","pid":3,"comm":"sh","target_name":"apt","rule":"r"}"#,
        );
        assert!(e.starts_with("held"), "{e}");
    }
}
