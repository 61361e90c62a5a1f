//! `airlock-e2e --demo` (run by `cargo xtask demo`): starts airlockd with policies/demo.yaml and
//! runs a small agent script under `airlock run --agent demo`. The script asks for a package
//! install (simulated: nothing is installed) and appends to /etc/hosts. Both syscalls are held
//! in the kernel; this program plays the human at the CLI: it shows each request, approves the
//! package manager and denies the /etc write.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Pins};

const SCRIPT: &str = r#"
echo '[agent] $ apt-get install --simulate cowsay      (a package install: held for a human)'
out=$(apt-get install --simulate cowsay 2>&1); st=$?
echo "$out" | tail -n 2 | sed 's/^/[agent]   /'
echo "[agent]   exit status $st"
echo "[agent] \$ echo '# agent was here' >> /etc/hosts    (a write under /etc: held for a human)"
echo '# agent was here' >> /etc/hosts; echo "[agent]   exit status $?"
echo '[agent] $ head -1 /etc/hostname                    (reading is fine)'
head -1 /etc/hostname | sed 's/^/[agent]   /'
"#;

fn requests(state: &Path) -> Vec<serde_json::Value> {
    let Ok(rd) = std::fs::read_dir(state.join("requests")) else { return vec![] };
    let mut v: Vec<serde_json::Value> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    v.sort_by_key(|r| r["created_unix_ms"].as_u64());
    v
}

fn airlock(bin_dir: &Path, state: &Path, args: &[&str]) -> anyhow::Result<String> {
    println!("[human] $ airlock {}", args.join(" "));
    let o = Command::new(bin_dir.join("airlock")).args(args).env("AIRLOCK_STATE_DIR", state).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    for l in text.lines() {
        println!("[human]   {l}");
    }
    if !o.status.success() {
        bail!("airlock {args:?} failed");
    }
    Ok(text)
}

/// Runs the demo.
pub fn run(bin_dir: &Path, repo: &Path) -> anyhow::Result<()> {
    let policy = repo.join("policies/demo.yaml");
    let state = std::path::PathBuf::from(format!("/run/airlock-demo-{}", std::process::id()));
    let _pins = Pins;
    let hosts_before = std::fs::read("/etc/hosts").unwrap_or_default();
    println!("== airlock demo ==");
    println!("policy: {}", policy.display());
    let mut daemon = Daemon::start(bin_dir, &policy, &state, "auto").context("starting airlockd")?;
    let st = daemon.status().unwrap_or_default();
    println!("airlockd is gating with the {} backend ({})", st["backend"].as_str().unwrap_or("?"), st["backend_reason"].as_str().unwrap_or(""));
    println!();
    println!("the agent script runs under `airlock run --agent demo -- sh -c …`; this demo answers its requests:");
    let mut agent = Command::new(bin_dir.join("airlock"))
        .args(["run", "--agent", "demo", "--reason", "demo: set up a build host", "--state-dir"])
        .arg(&state)
        .args(["--", "sh", "-c", SCRIPT])
        .spawn()
        .context("airlock run")?;
    let mut seen = std::collections::HashSet::new();
    let (mut approved, mut denied) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = agent.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            bail!("the agent script did not finish within 2 minutes");
        }
        for r in requests(&state) {
            let id = r["id"].as_str().unwrap_or_default().to_string();
            if r["state"] != "pending" || !seen.insert(id.clone()) {
                continue;
            }
            airlock(bin_dir, &state, &["show", &id])?;
            if r["context"]["op"] == "exec" {
                airlock(bin_dir, &state, &["approve", &id])?;
                approved += 1;
            } else {
                airlock(bin_dir, &state, &["deny", &id, "--reason", "agents do not edit /etc/hosts"])?;
                denied += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("(agent script exit status: {status})");
    std::thread::sleep(Duration::from_millis(300));
    println!();
    println!("what airlockd recorded (`airlock events`):");
    let ev = Command::new(bin_dir.join("airlock")).args(["events", "--state-dir"]).arg(&state).output()?;
    print!("{}", String::from_utf8_lossy(&ev.stdout));
    daemon.stop()?;
    let _ = std::fs::remove_dir_all(&state);
    if std::fs::read("/etc/hosts").unwrap_or_default() != hosts_before {
        bail!("/etc/hosts changed: the denied write happened");
    }
    println!();
    if approved == 0 || denied == 0 {
        bail!("expected a held package install (approved) and a held /etc write (denied); saw {approved} approved, {denied} denied");
    }
    println!("the package manager waited inside execve until approved, then ran; the /etc/hosts write waited inside open(2) and failed with EPERM when denied; /etc/hosts is unchanged.");
    Ok(())
}
