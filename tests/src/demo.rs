//! `airlock-e2e --demo` (run by `cargo xtask demo`): starts airlock-server (SQLite, TLS) in a
//! temporary directory, enrols this host to it, starts airlockd with policies/demo.yaml linked
//! to the server, and runs a small agent script under `airlock run --agent demo`. The script
//! asks for a package install (simulated: nothing is installed) and appends to /etc/hosts. Both
//! syscalls are held in the kernel; this program plays the remote approver with `airlock
//! --server URL --token TOKEN`: it shows each request, approves the package manager and denies
//! the /etc write; the decisions travel down the host's link and release the holds.
//!
//! `--web` (`cargo xtask demo --web`): the server also serves its approval page on
//! 127.0.0.1:7480 (or a free port), and nobody decides by script: the demo prints the page's
//! address and alice's API token, and a person signs in, sees each held request with its
//! context and clicks Approve or Deny (the rules wait 2 minutes per request, then deny).
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Pins};
use crate::server::run_ok;

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
    let Ok(rd) = std::fs::read_dir(state.join("requests")) else {
        return vec![];
    };
    let mut v: Vec<serde_json::Value> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    v.sort_by_key(|r| r["created_unix_ms"].as_u64());
    v
}

/// The approver's side: `airlock ARGS` against the server (URL, token and CA in the environment,
/// as an approver would set them).
fn airlock(bin_dir: &Path, remote: &Remote, args: &[&str]) -> anyhow::Result<String> {
    println!("[alice@laptop] $ airlock {}", args.join(" "));
    let o = Command::new(bin_dir.join("airlock"))
        .args(args)
        .env("AIRLOCK_SERVER", &remote.url)
        .env("AIRLOCK_TOKEN", &remote.token)
        .env("AIRLOCK_CA", remote.dir.join("ca.pem"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for l in text.lines() {
        println!("[alice@laptop]   {l}");
    }
    if !o.status.success() {
        bail!("airlock {args:?} failed");
    }
    Ok(text)
}

/// The demo's airlock-server: its directory, URL, an approver's token, the process.
struct Remote {
    dir: std::path::PathBuf,
    url: String,
    token: String,
    /// Killed (by PID) on drop, before the directory goes.
    server: Option<crate::server::ServerProc>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The page's address for `--web`: 127.0.0.1:7480 when free, else a free loopback port.
fn web_listen() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:7480")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))?;
    Ok(l.local_addr()?.to_string())
}

/// Initialises and starts airlock-server, issues alice's token, enrols this host. `web`: the
/// page's listen address.
fn start_server(bin_dir: &Path, identity: &Path, web: Option<&str>) -> anyhow::Result<Remote> {
    use crate::server::{ServerProc, enroll_with, init_server, issue_token};
    let dir = std::path::PathBuf::from(format!(
        "/var/tmp/airlock-demo-server-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut remote = Remote {
        dir: dir.clone(),
        url: String::new(),
        token: String::new(),
        server: None,
    };
    let page = match web {
        Some(l) => {
            format!("    channels: [cli, web]\nhttp_listen: {l}\nweb:\n  public_url: http://{l}\n")
        }
        None => String::new(),
    };
    let (url, listen) = init_server(
        bin_dir,
        &dir,
        &format!(
            "principals:\n  alice:\n    groups: [sre]\n  root-at-host:\n    groups: [sre]\n    host_users: [root]\n\
             routes:\n  - name: default\n    approvers: [sre]\n    deny_requires_reason: true\n{page}"
        ),
    )?;
    println!(
        "[admin] $ airlock-server init --dir {} --listen {listen}",
        dir.display()
    );
    println!(
        "[admin]   server.yaml: principals alice (sre) and root-at-host (sre, is `root` on hosts); route default: sre approves"
    );
    remote.server = Some(ServerProc::start(bin_dir, &dir)?);
    remote.url = url.clone();
    println!("[admin] $ airlock-server tokens issue alice");
    remote.token = issue_token(bin_dir, &dir, "alice")?;
    println!(
        "[admin] $ airlock-server hosts enroll demo-host --labels env=demo   (prints a one-time TOKEN)"
    );
    println!("[root@host] $ airlock enroll --server {url} --token TOKEN");
    let out = enroll_with(bin_dir, &dir, &url, "demo-host", "env=demo", identity).map_err(|e| {
        let log = remote
            .server
            .as_ref()
            .map(|s| s.log_text())
            .unwrap_or_default();
        e.context(log)
    })?;
    for l in out.lines() {
        println!("[root@host]   {l}");
    }
    Ok(remote)
}

/// `airlock ARGS` against the server without echoing it (polling).
fn airlock_quiet(bin_dir: &Path, remote: &Remote, args: &[&str]) -> anyhow::Result<String> {
    let o = Command::new(bin_dir.join("airlock"))
        .args(args)
        .env("AIRLOCK_SERVER", &remote.url)
        .env("AIRLOCK_TOKEN", &remote.token)
        .env("AIRLOCK_CA", remote.dir.join("ca.pem"))
        .output()?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs the demo; `web`: a person decides on the web page instead of the scripted approver.
pub fn run(bin_dir: &Path, repo: &Path, web: bool) -> anyhow::Result<()> {
    let policy = repo.join("policies/demo.yaml");
    let state = std::path::PathBuf::from(format!("/run/airlock-demo-{}", std::process::id()));
    let _pins = Pins;
    let hosts_before = std::fs::read("/etc/hosts").unwrap_or_default();
    println!("== airlock demo: remote approval through airlock-server ==");
    let identity = state.join("identity");
    std::fs::create_dir_all(&state)?;
    let page = if web { Some(web_listen()?) } else { None };
    let remote = start_server(bin_dir, &identity, page.as_deref())?;
    if let Some(l) = &page {
        println!();
        println!("== the approval page: open http://{l}/ and sign in with alice's API token:");
        println!("   {}", remote.token);
        println!(
            "   (from another machine: ssh -L {port}:127.0.0.1:{port} THIS-HOST, then open http://127.0.0.1:{port}/)",
            port = l.rsplit(':').next().unwrap_or("7480")
        );
        println!(
            "   approve the package install, deny the /etc/hosts write (a reason is required)."
        );
        println!();
    }
    println!("policy: {}", policy.display());
    let idp = identity.to_string_lossy().to_string();
    let mut daemon = Daemon::start_with(
        bin_dir,
        &policy,
        &state,
        "auto",
        &["--server", &remote.url, "--identity-dir", &idp],
    )
    .context("starting airlockd")?;
    let st = daemon.status().unwrap_or_default();
    println!(
        "airlockd is gating with the {} backend ({})",
        st["backend"].as_str().unwrap_or("?"),
        st["backend_reason"].as_str().unwrap_or("")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon
        .status()
        .is_none_or(|s| s["link"]["connected"] != true)
    {
        if Instant::now() > deadline {
            bail!(
                "airlockd did not link to the server:\n{}",
                daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "airlockd is linked to {} (mTLS, the host's certificate from enrolment)",
        remote.url
    );
    println!();
    println!(
        "the agent script runs under `airlock run --agent demo -- sh -c …`; alice answers its requests from her laptop, through the server:"
    );
    let mut agent = Command::new(bin_dir.join("airlock"))
        .args([
            "run",
            "--agent",
            "demo",
            "--reason",
            "demo: set up a build host",
            "--state-dir",
        ])
        .arg(&state)
        .args(["--", "sh", "-c", SCRIPT])
        .spawn()
        .context("airlock run")?;
    let mut seen = std::collections::HashSet::new();
    let (mut approved, mut denied) = (0, 0);
    // By hand, each request may wait its rule's full 2 minutes.
    let deadline = Instant::now() + Duration::from_secs(if web { 600 } else { 120 });
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
            if r["state"] != "pending" || seen.contains(&id) {
                continue;
            }
            // The request reaches the server over the host's link; alice sees it there.
            let listed = airlock_quiet(bin_dir, &remote, &["pending"])?;
            if !listed.contains(&id) {
                continue;
            }
            seen.insert(id.clone());
            if let Some(l) = &page {
                println!(
                    "[host] held: {} {} — decide at http://{l}/requests/{id}",
                    r["context"]["op"].as_str().unwrap_or("?"),
                    r["context"]["target_path"].as_str().unwrap_or("")
                );
                continue;
            }
            airlock(bin_dir, &remote, &["pending"])?;
            airlock(bin_dir, &remote, &["show", &id])?;
            if r["context"]["op"] == "exec" {
                airlock(bin_dir, &remote, &["approve", &id])?;
                approved += 1;
            } else {
                airlock(
                    bin_dir,
                    &remote,
                    &["deny", &id, "--reason", "agents do not edit /etc/hosts"],
                )?;
                denied += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("(agent script exit status: {status})");
    std::thread::sleep(Duration::from_millis(300));
    println!();
    println!("what airlockd recorded (`airlock events`):");
    let ev = Command::new(bin_dir.join("airlock"))
        .args(["events", "--state-dir"])
        .arg(&state)
        .output()?;
    print!("{}", String::from_utf8_lossy(&ev.stdout));
    println!("the server's view (`airlock-server hosts list`):");
    let hosts = run_ok(
        Command::new(bin_dir.join("airlock-server"))
            .args(["hosts", "list", "--dir"])
            .arg(&remote.dir),
    )?;
    println!("{hosts}");
    daemon.stop()?;
    drop(remote);
    let _ = std::fs::remove_dir_all(&state);
    if std::fs::read("/etc/hosts").unwrap_or_default() != hosts_before {
        bail!("/etc/hosts changed: the denied write happened");
    }
    println!();
    if web {
        println!(
            "the agent's commands waited in the kernel while you decided on the page; `airlock events` above shows what was held, who decided and how."
        );
        return Ok(());
    }
    if approved == 0 || denied == 0 {
        bail!(
            "expected a held package install (approved) and a held /etc write (denied); saw {approved} approved, {denied} denied"
        );
    }
    println!(
        "the package manager waited inside execve until alice approved it through airlock-server, then ran; the /etc/hosts write waited inside open(2) and failed with EPERM when she denied it; /etc/hosts is unchanged."
    );
    Ok(())
}
