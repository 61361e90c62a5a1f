//! `airlock-e2e --demo` (run by `cargo xtask demo`): starts airlockd with policies/demo.yaml and
//! runs a small agent script under `airlock run --agent demo`. The script tries to install a
//! package and to append to /etc/hosts; both are refused by the kernel and reported.
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::harness::Daemon;

const SCRIPT: &str = r#"
echo '[agent] $ apt-get install -y cowsay'
apt-get install -y cowsay; echo "[agent]   exit status $?"
echo "[agent] \$ echo '# agent was here' >> /etc/hosts"
echo '# agent was here' >> /etc/hosts; echo "[agent]   exit status $?"
echo '[agent] $ head -1 /etc/hostname   (reading is fine)'
head -1 /etc/hostname; echo "[agent]   exit status $?"
"#;

/// Runs the demo.
pub fn run(bin_dir: &Path, repo: &Path) -> anyhow::Result<()> {
    let policy = repo.join("policies/demo.yaml");
    let state = std::path::PathBuf::from(format!("/run/airlock-demo-{}", std::process::id()));
    let hosts_before = std::fs::read("/etc/hosts").unwrap_or_default();
    println!("== airlock demo ==");
    println!("policy: {}", policy.display());
    let mut daemon = Daemon::start(bin_dir, &policy, &state, "auto").context("starting airlockd")?;
    let st = daemon.status().unwrap_or_default();
    println!("airlockd is gating with the {} backend ({})", st["backend"].as_str().unwrap_or("?"), st["backend_reason"].as_str().unwrap_or(""));
    println!();
    println!("running the agent script under `airlock run --agent demo -- sh -c …`:");
    let status = Command::new(bin_dir.join("airlock"))
        .args(["run", "--agent", "demo", "--state-dir"])
        .arg(&state)
        .args(["--", "sh", "-c", SCRIPT])
        .status()
        .context("airlock run")?;
    println!("(agent script exit status: {status})");
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!();
    println!("what airlockd recorded (`airlock events`):");
    let ev = Command::new(bin_dir.join("airlock")).args(["events", "--state-dir"]).arg(&state).output()?;
    print!("{}", String::from_utf8_lossy(&ev.stdout));
    let denied = daemon.events().iter().filter(|e| e["verdict"] == "denied").count();
    daemon.stop()?;
    let _ = std::fs::remove_dir_all(&state);
    if std::fs::read("/etc/hosts").unwrap_or_default() != hosts_before {
        bail!("/etc/hosts changed: the write was not stopped");
    }
    println!();
    if denied < 2 {
        bail!("expected the package install and the /etc write to be denied; {denied} denials recorded");
    }
    println!("both privileged actions were stopped in the kernel before they happened; /etc/hosts is unchanged.");
    Ok(())
}
