//! `airlock-e2e --bench` (second part): the cost of a hold itself. 1,000 write opens of a file
//! under an `approve` rule, each decided at once by an auto-approving client on the local
//! socket (gRPC Watch + Decide, the path a person's CLI or a broker takes). For each hold:
//!
//! - *visible*: from the agent entering open(2) to the client seeing the request;
//! - *release*: from the client sending its decision to open(2) returning in the agent.
//!
//! Both clocks are CLOCK_MONOTONIC, read by the agent and by the client. Also: the CPU a held
//! process uses while it waits (schedstat of all its threads over a 2 s hold), and the baseline
//! of an unheld open of the same file, measured in the same run.
//!
//! Then the same 1,000 holds once more with airlockd linked to a real airlock-server (SQLite,
//! TLS, loopback) and the auto-approver deciding through the server (`airlock --server` path):
//! the request goes up the host's link, the decision comes down it. Both rows are printed side
//! by side, from the same run.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_agent::cgroup::{CgroupDir, cgroup2_mount};
use airlock_proto::v1::{DecideRequest, WatchRequest, decide_request, watch_event};
use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Pins, Spawned, run_in};

const HOLDS: usize = 1000;

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `--bench-worker hold N FILE`: N write opens; prints "start end" (monotonic ns) per open.
pub fn worker(n: usize, file: &str) -> ! {
    let p = std::ffi::CString::new(file).expect("path");
    let mut out = String::new();
    for _ in 0..n {
        let t0 = mono_ns();
        // SAFETY: open/close of a NUL-terminated path.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_APPEND) };
        let t1 = mono_ns();
        if fd < 0 {
            eprintln!("open {file}: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        out.push_str(&format!("{t0} {t1}\n"));
    }
    print!("{out}");
    std::process::exit(0)
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// (request seen, decision sent) per approved request, in order.
type Seen = Arc<Mutex<Vec<(u64, u64)>>>;

/// Where the auto-approver decides: the host's socket, or airlock-server.
#[derive(Clone)]
enum Approver {
    Socket(PathBuf),
    Server {
        url: String,
        token: String,
        ca: PathBuf,
    },
}

/// Approves every request the Watch stream announces, recording the times; requests of `skip`
/// (a pid) are left alone.
fn auto_approver(
    at: Approver,
    seen: Seen,
    skip: Arc<Mutex<u32>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut client = match at {
                Approver::Socket(socket) => airlock_agent::api::remote::local(
                    airlock_agent::api::connect_channel(&socket).await?,
                ),
                Approver::Server { url, token, ca } => {
                    airlock_agent::api::remote::connect_server(&url, Some(&token), Some(&ca))
                        .await?
                }
            };
            let mut decider = client.clone();
            let mut stream = client.watch(WatchRequest::default()).await?.into_inner();
            tokio::pin!(stop);
            loop {
                let ev = tokio::select! {
                    _ = &mut stop => return Ok(()),
                    m = stream.message() => match m? { Some(ev) => ev, None => return Ok(()) },
                };
                let t_seen = mono_ns();
                if ev.kind != watch_event::Kind::Opened as i32 {
                    continue;
                }
                let Some(r) = ev.request else { continue };
                if r.context
                    .as_ref()
                    .is_some_and(|c| c.tgid == *skip.lock().unwrap())
                {
                    continue;
                }
                let t_dec = mono_ns();
                decider
                    .decide(DecideRequest {
                        id: r.id.clone(),
                        decision: Some(decide_request::Decision::Approve(
                            decide_request::Approve { for_ms: None },
                        )),
                    })
                    .await?;
                seen.lock().unwrap().push((t_seen, t_dec));
            }
        })
    })
}

/// CPU time (ns) all threads of `pid` have used (schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// p50/p99 (ns) of the whole held open, decided through one path.
struct Whole {
    p50: u64,
    p99: u64,
}

/// Runs the hold benchmark (socket, then server) and prints its tables.
pub fn run(bin_dir: &Path, me: &Path) -> anyhow::Result<()> {
    let local = run_one(bin_dir, me, false)?;
    let remote = run_one(bin_dir, me, true)?;
    let ms = |ns: u64| ns as f64 / 1e6;
    println!();
    println!("holds decided locally vs through airlock-server (same run, {HOLDS} each):");
    println!();
    println!(
        "| path                                          | p50         | p99         | p50 / socket |"
    );
    println!(
        "|-----------------------------------------------|-------------|-------------|--------------|"
    );
    println!(
        "| socket: airlock approve on the host           | {:>8.3} ms | {:>8.3} ms | 1.0×         |",
        ms(local.p50),
        ms(local.p99)
    );
    println!(
        "| server: host link + airlock --server approve  | {:>8.3} ms | {:>8.3} ms | {:>10.1}×  |",
        ms(remote.p50),
        ms(remote.p99),
        remote.p50 as f64 / local.p50.max(1) as f64
    );
    Ok(())
}

/// Starts airlock-server (SQLite) in `dir`, enrols this host; returns the server, the host's
/// identity directory and an approver.
fn start_server(
    bin_dir: &Path,
    dir: &Path,
) -> anyhow::Result<(crate::server::ServerProc, PathBuf, Approver)> {
    let sdir = dir.join("server");
    let (url, _) = crate::server::init_server(
        bin_dir,
        &sdir,
        "principals:\n  bot:\n    groups: [bots]\nroutes:\n  - name: all\n    approvers: [bots]\n",
    )?;
    let token = crate::server::issue_token(bin_dir, &sdir, "bot")?;
    let server = crate::server::ServerProc::start(bin_dir, &sdir)?;
    let id = dir.join("identity");
    crate::server::enroll(bin_dir, &sdir, &url, "bench-host", &id)?;
    Ok((
        server,
        id,
        Approver::Server {
            url,
            token,
            ca: sdir.join("ca.pem"),
        },
    ))
}

fn run_one(bin_dir: &Path, me: &Path, through_server: bool) -> anyhow::Result<Whole> {
    let dir = PathBuf::from(format!(
        "/var/tmp/airlock-bench-holds-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("held"))?;
    let _cleanup = super::bench::Cleanup(dir.clone());
    // The daemon's pinned backstop outlives it by design; this run's pins go with the run.
    let _pins = Pins;
    let file = dir.join("held/file");
    std::fs::write(&file, b"")?;
    let top = format!("airlock-bench-holds-{}", std::process::id());
    let cg = CgroupDir::create(cgroup2_mount()?.join(&top))?;
    let agent = cg.create_child("agent")?;
    let outside = cg.create_child("outside")?;
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: bench-holds\nmode: enforce\nagents:\n  - name: bench\n    cgroup: \"/{top}/agent\"\nrules:\n  - name: held\n    action: approve\n    paths: [\"{}\"]\n",
            dir.join("held").display()
        ),
    )?;
    let state = dir.join("state");
    let (_server, approver_at, daemon) = if through_server {
        let (server, id, at) = start_server(bin_dir, &dir)?;
        let (url, idp) = match &at {
            Approver::Server { url, .. } => (url.clone(), id.to_string_lossy().to_string()),
            Approver::Socket(_) => unreachable!("start_server returns a server approver"),
        };
        let daemon = Daemon::start_with(
            bin_dir,
            &policy,
            &state,
            "auto",
            &["--server", &url, "--identity-dir", &idp],
        )?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while daemon
            .status()
            .is_none_or(|s| s["link"]["connected"] != true)
        {
            if std::time::Instant::now() > deadline {
                bail!(
                    "airlockd did not link to the server:\n{}",
                    daemon.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (Some(server), at, daemon)
    } else {
        let daemon = Daemon::start(bin_dir, &policy, &state, "auto")?;
        (None, Approver::Socket(state.join("airlock.sock")), daemon)
    };
    let st = daemon.status().unwrap_or_default();

    let me_s = me.to_string_lossy().to_string();
    let f = file.to_string_lossy().to_string();
    // Baseline: the same open, not held (outside the agent).
    let (_, base) = run_in(
        Some(&outside),
        None,
        &[&me_s, "--bench-worker", "hold", &HOLDS.to_string(), &f],
    )?;
    let mut base_ns: Vec<u64> = parse_pairs(&base.stdout)?
        .iter()
        .map(|(a, b)| b - a)
        .collect();

    // A held process waits without using CPU: hold one open for 2 s, unanswered.
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let skip = Arc::new(Mutex::new(0u32));
    let idle = Spawned::start(&agent, &[&me_s, "--bench-worker", "hold", "1", &f])?;
    *skip.lock().unwrap() = idle.pid;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let approver = auto_approver(approver_at, seen.clone(), skip.clone(), stop_rx);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_dir(state.join("requests")).is_ok_and(|mut d| d.next().is_some()) {
        if std::time::Instant::now() > deadline {
            bail!("the idle hold never became a request");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let c0 = cpu_ns(idle.pid);
    std::thread::sleep(Duration::from_secs(2));
    let held_cpu = cpu_ns(idle.pid).saturating_sub(c0);
    let id = std::fs::read_dir(state.join("requests"))?
        .flatten()
        .next()
        .context("request file")?
        .path();
    let id = id
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let o = std::process::Command::new(bin_dir.join("airlock"))
        .args(["approve", &id])
        .env("AIRLOCK_STATE_DIR", &state)
        .output()?;
    if !o.status.success() {
        bail!(
            "approving the idle hold: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    idle.finish(Duration::from_secs(10))?;

    // 1,000 holds, each approved by the client as soon as it sees it.
    let (_, out) = run_in(
        Some(&agent),
        None,
        &[&me_s, "--bench-worker", "hold", &HOLDS.to_string(), &f],
    )?;
    if !out.status.success() {
        bail!(
            "hold worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pairs = parse_pairs(&out.stdout)?;
    let _ = stop_tx.send(());
    approver
        .join()
        .map_err(|_| anyhow::anyhow!("approver panicked"))??;
    let seen = seen.lock().unwrap().clone();
    if seen.len() != pairs.len() {
        bail!("{} holds but {} decisions", pairs.len(), seen.len());
    }
    let mut visible: Vec<u64> = pairs
        .iter()
        .zip(&seen)
        .map(|((t0, _), (s, _))| s.saturating_sub(*t0))
        .collect();
    let mut release: Vec<u64> = pairs
        .iter()
        .zip(&seen)
        .map(|((_, t1), (_, d))| t1.saturating_sub(*d))
        .collect();
    let mut total: Vec<u64> = pairs.iter().map(|(a, b)| b - a).collect();
    if std::env::var_os("AIRLOCK_E2E_DAEMON_LOG").is_some() {
        let _ = std::fs::write("/tmp/airlock-bench-holds-daemon.log", daemon.log_text());
    }
    drop(daemon);
    drop(cg);

    let us = |ns: u64| ns as f64 / 1e3;
    let (v50, v99) = (pct(&mut visible, 0.5), pct(&mut visible, 0.99));
    let (r50, r99) = (pct(&mut release, 0.5), pct(&mut release, 0.99));
    let (t50, t99) = (pct(&mut total, 0.5), pct(&mut total, 0.99));
    let (b50, b99) = (pct(&mut base_ns, 0.5), pct(&mut base_ns, 0.99));
    println!();
    let via = if through_server {
        "through airlock-server (host link + TLS API)"
    } else {
        "on the socket"
    };
    println!(
        "holds: {HOLDS} write opens under an approve rule, each approved at once by a gRPC client {via} ({} backend)",
        st["backend"].as_str().unwrap_or("?")
    );
    println!();
    println!(
        "| measurement                                   | p50         | p99         | p50 / baseline | target               |"
    );
    println!(
        "|-----------------------------------------------|-------------|-------------|----------------|----------------------|"
    );
    println!(
        "| baseline: the same open, not held             | {:>8.1} µs | {:>8.1} µs | 1.0×           |                      |",
        us(b50),
        us(b99)
    );
    println!(
        "| syscall → request visible to the client       | {:>8.1} µs | {:>8.1} µs | {:>10.1}×    | p50 ≤ 1 ms, p99 ≤ 5 ms |",
        us(v50),
        us(v99),
        v50 as f64 / b50.max(1) as f64
    );
    println!(
        "| decision sent → syscall returns               | {:>8.1} µs | {:>8.1} µs | {:>10.1}×    | p50 ≤ 1 ms, p99 ≤ 5 ms |",
        us(r50),
        us(r99),
        r50 as f64 / b50.max(1) as f64
    );
    println!(
        "| whole held open (incl. the client's round trip)| {:>8.1} µs | {:>8.1} µs | {:>10.1}×    |                      |",
        us(t50),
        us(t99),
        t50 as f64 / b50.max(1) as f64
    );
    println!(
        "| CPU used by a held process over 2 s           | {:>8.1} µs |             |                | 0                    |",
        us(held_cpu)
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "visible p50/p99 {}/{} ({}), release p50/p99 {}/{} ({}), held CPU {} µs",
        us(v50),
        us(v99),
        verdict(v50 <= 1_000_000 && v99 <= 5_000_000),
        us(r50),
        us(r99),
        verdict(r50 <= 1_000_000 && r99 <= 5_000_000),
        us(held_cpu)
    );
    Ok(Whole { p50: t50, p99: t99 })
}

fn parse_pairs(out: &[u8]) -> anyhow::Result<Vec<(u64, u64)>> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace().map(|v| v.parse::<u64>());
            Ok((it.next().context("start")??, it.next().context("end")??))
        })
        .collect()
}
