//! airlock-e2e: end-to-end scenarios against a real airlockd on a real kernel.
//!
//! `--tier host` runs on the host kernel (fanotify fallback here), `--tier guest` inside the
//! QEMU guests that xtask boots (BPF LSM). Prints `PASS`/`FAIL`/`SKIP` lines and a closing
//! `e2e: N passed, M failed, K skipped`; exits non-zero on any failure. `--op` is the child
//! helper the scenarios run inside agent cgroups.
mod audit;
mod audit_stream;
mod bench;
mod bench_audit;
mod bench_holds;
mod cases;
mod cases_content;
mod cases_handover;
mod demo;
mod guard;
mod harness;
mod holds;
mod ops;
mod ops_fd;
mod ops_unholdable;
mod reload;
mod scopes;
mod server;
mod units;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use harness::{Daemon, Report, ensure};

struct Args {
    tier: String,
    bin_dir: PathBuf,
    rounds: usize,
    /// `--in-guest ACCEL`: the benchmark runs inside a guest (its accelerator, for the label).
    in_guest: Option<String>,
    /// `--web` (with `--demo`): a person decides on the server's web page.
    web: bool,
}

fn parse() -> anyhow::Result<Args> {
    let mut tier = None;
    let mut bin_dir = None;
    let mut rounds = 5;
    let mut in_guest = None;
    let mut web = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--op" => {
                let op = it.next().context("--op needs a name")?;
                let rest: Vec<String> = it.collect();
                ops::run(&op, &rest);
            }
            "--bench-worker" => {
                let kind = it.next().context("--bench-worker exec|open")?;
                let n = it.next().context("count")?.parse()?;
                let file = it.next().unwrap_or_default();
                bench::worker(&kind, n, &file);
            }
            "--demo" => tier = Some("demo".to_string()),
            "--web" => web = true,
            "--bench" => tier = Some("bench".to_string()),
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--in-guest" => in_guest = Some(it.next().context("--in-guest tcg|kvm")?),
            "--tier" => tier = it.next(),
            "--bin-dir" => bin_dir = it.next().map(PathBuf::from),
            other => {
                anyhow::bail!("unknown argument {other:?} (use --tier host|guest --bin-dir DIR)")
            }
        }
    }
    let tier = tier.context("--tier host|guest is required")?;
    anyhow::ensure!(
        ["host", "guest", "demo", "bench"].contains(&tier.as_str()),
        "--tier must be host or guest (or --demo, --bench), not {tier:?}"
    );
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .to_path_buf(),
    };
    Ok(Args {
        tier,
        bin_dir,
        rounds,
        in_guest,
        web,
    })
}

fn bad_policy_is_refused_with_location(a: &Args, base: &std::path::Path) -> anyhow::Result<()> {
    let bad = base.join(format!("airlock-e2e-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: bad\nmode: enforce\nrules:\n  - name: r\n    action: block\n    exec: [/bin/true]\n",
    )?;
    let out = std::process::Command::new(a.bin_dir.join("airlockd"))
        .arg("--policy")
        .arg(&bad)
        .arg("--state-dir")
        .arg(base.join("airlock-e2e-bad-state"))
        .output()?;
    let _ = std::fs::remove_file(&bad);
    let _ = std::fs::remove_dir_all(base.join("airlock-e2e-bad-state"));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure(!out.status.success(), || {
        "airlockd started with a bad policy".into()
    })?;
    let want = format!("{}:8:", bad.display());
    ensure(err.contains(&want), || {
        format!("stderr lacks {want}: {err}")
    })
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("airlock-e2e: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut r = Report::default();
    // `airlock run` makes /airlock.slice in cgroupfs when systemd does not run; remove it at the
    // end when this run made it (and it is empty), so the tiers leave no cgroup behind.
    let slice = airlock_agent::cgroup::cgroup2_mount()
        .ok()
        .map(|m| m.join("airlock.slice"));
    let slice_was_there = slice.as_ref().is_some_and(|s| s.exists());
    let _slice = harness::RemoveIfCreated(if slice_was_there { None } else { slice.clone() });
    // Dropped before `_slice`: the scopes of runs a failed case killed go first.
    let _scopes = harness::ScopeSweep::new(slice);
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if a.tier == "demo" || a.tier == "bench" {
        if !root {
            eprintln!(
                "airlock-e2e: the {} needs root (cgroups, fanotify, BPF)",
                a.tier
            );
            return ExitCode::from(2);
        }
        let repo = std::env::current_dir().unwrap_or_default();
        let res = if a.tier == "demo" {
            demo::run(&a.bin_dir, &repo, a.web)
        } else {
            bench::run(&a.bin_dir, a.rounds, a.in_guest.as_deref())
        };
        return match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("airlock-e2e: {} failed: {e:#}", a.tier);
                ExitCode::FAILURE
            }
        };
    }
    if !root {
        r.skip("e2e", "needs root (cgroups, fanotify, BPF)");
        return finish(&r);
    }
    let base = PathBuf::from(if a.tier == "guest" {
        "/tmp"
    } else {
        "/var/tmp"
    });
    let want_backend = if a.tier == "guest" { "lsm" } else { "fanotify" };
    // Development shortcut: only the remote-approval scenarios (never set by xtask or CI).
    if std::env::var("AIRLOCK_E2E_ONLY").as_deref() == Ok("server") {
        let me = std::env::current_exe().unwrap_or_default();
        let pins = harness::Pins;
        server::run_all(&mut r, &a.bin_dir, &me, &base, a.tier == "host");
        r.check(
            "test_pins_removed",
            ensure(pins.remove(), || "pins left".into()),
        );
        return finish(&r);
    }
    // Development shortcut: only the audit stream's outage and kill scenarios (host tier).
    if std::env::var("AIRLOCK_E2E_ONLY").as_deref() == Ok("audit-stream") {
        let me = std::env::current_exe().unwrap_or_default();
        let pins = harness::Pins;
        audit_stream::run_all(&mut r, &a.bin_dir, &me, &base);
        r.check(
            "test_pins_removed",
            ensure(pins.remove(), || "pins left".into()),
        );
        return finish(&r);
    }
    // Development shortcut: only the hold scenarios.
    if std::env::var("AIRLOCK_E2E_ONLY").as_deref() == Ok("holds") {
        let me = std::env::current_exe().unwrap_or_default();
        let pins = harness::Pins;
        holds::run_all(&mut r, &a.bin_dir, &me, &base, a.tier == "guest");
        r.check(
            "test_pins_removed",
            ensure(pins.remove(), || "pins left".into()),
        );
        return finish(&r);
    }
    if a.tier == "host" {
        units::run_all(&mut r, &a.bin_dir);
    }
    r.check(
        "bad_policy_is_refused_with_file_line_column",
        bad_policy_is_refused_with_location(&a, &base),
    );
    let pins = harness::Pins;
    let fx = match cases::Fixture::new(&base) {
        Ok(f) => f,
        Err(e) => {
            r.check("fixture", Err(e));
            return finish(&r);
        }
    };
    let mut daemon = match Daemon::start(&a.bin_dir, &fx.policy, &fx.dir.join("state"), "auto") {
        Ok(d) => d,
        Err(e) => {
            r.check("airlockd_starts", Err(e));
            return finish(&r);
        }
    };
    let st = daemon.status().unwrap_or_default();
    r.check(
        "auto_selects_the_expected_backend_and_says_why",
        (|| {
            ensure(st["backend"] == want_backend, || {
                format!(
                    "backend {} (want {want_backend}): {}",
                    st["backend"], st["backend_reason"]
                )
            })?;
            ensure(
                st["backend_reason"].as_str().is_some_and(|s| !s.is_empty()),
                || "no reason".into(),
            )?;
            ensure(
                st["exec_context"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("recorded")),
                || format!("exec context: {}", st["exec_context"]),
            )?;
            let out = std::process::Command::new(a.bin_dir.join("airlock"))
                .args(["status", "--state-dir"])
                .arg(&daemon.state_dir)
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure(out.status.success() && text.contains(want_backend), || {
                format!("airlock status: {text}")
            })
        })(),
    );
    println!("backend: {} ({})", st["backend"], st["backend_reason"]);
    let me = std::env::current_exe().unwrap_or_default();
    {
        let ctx = cases::Ctx {
            fx: &fx,
            daemon: &daemon,
            me: me.clone(),
            bin_dir: a.bin_dir.clone(),
            lsm: want_backend == "lsm",
        };
        cases::run_all(&mut r, &ctx);
        if ctx.lsm {
            guard::run_all(&mut r, &ctx);
        }
    }
    let lost = daemon
        .status()
        .and_then(|s| s["lost"].as_u64())
        .unwrap_or(u64::MAX);
    r.check(
        "no_events_lost",
        ensure(lost == 0, || format!("{lost} events lost")),
    );
    let stopped = daemon.stop();
    r.check(
        "airlockd_stops_cleanly_on_sigterm",
        (|| {
            let st = stopped?;
            ensure(st.success(), || {
                format!("exit status {st}:\n{}", daemon.log_text())
            })
        })(),
    );
    let exec_gated = || -> anyhow::Result<std::process::Output> {
        let me = me.to_string_lossy().to_string();
        let p = fx.gated.path.to_string_lossy().to_string();
        let mut argv = vec![me.as_str(), "--op", "exec", p.as_str()];
        argv.extend(fx.gated.args.iter().map(String::as_str));
        Ok(harness::run_in(Some(&fx.agent_cg), None, &argv)?.1)
    };
    r.check(
        "gating_outlives_the_daemon_through_pinned_programs",
        (|| {
            use std::os::unix::process::ExitStatusExt as _;
            let out = exec_gated()?;
            if want_backend == "lsm" {
                // The pinned LSM programs still refuse the exec.
                ensure(harness::stdout(&out) == "errno=1", || {
                    format!(
                        "exec after stop: {:?} {}",
                        out.status,
                        harness::stdout(&out)
                    )
                })
            } else {
                // fanotify stopped with the daemon; the pinned exec backstop kills the new image
                // of a deny-gated binary before its first instruction.
                ensure(out.status.signal() == Some(libc::SIGKILL), || {
                    format!(
                        "exec after stop: {:?} {}",
                        out.status,
                        harness::stdout(&out)
                    )
                })
            }
        })(),
    );
    r.check(
        "removing_the_pins_ends_gating_nothing_left_behind",
        (|| {
            ensure(pins.remove(), || {
                format!("pins left in {}", harness::pin_dir().display())
            })?;
            // The kernel frees an unpinned link from a workqueue, not at unlink: under load the
            // program can still run for a moment, so allow it a few seconds to go.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut out = exec_gated()?;
            while !out.status.success() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(100));
                out = exec_gated()?;
            }
            ensure(out.status.success(), || {
                format!(
                    "exec 5 s after unpinning: {:?} {}",
                    out.status,
                    harness::stdout(&out)
                )
            })
        })(),
    );
    if r.failed > 0 {
        println!("--- airlockd log ---\n{}", daemon.log_text());
    }
    drop(daemon);
    let cg = fx.agent_cg.parent().map(|p| p.to_path_buf());
    drop(fx);
    holds::run_all(&mut r, &a.bin_dir, &me, &base, want_backend == "lsm");
    server::run_all(&mut r, &a.bin_dir, &me, &base, a.tier == "host");
    if a.tier == "host" {
        audit_stream::run_all(&mut r, &a.bin_dir, &me, &base);
    }
    r.check(
        "test_cgroups_and_pins_removed",
        (|| {
            ensure(pins.remove(), || {
                format!("pins left in {}", harness::pin_dir().display())
            })?;
            ensure(cg.is_some_and(|p| !p.exists()), || {
                "cgroup left behind".into()
            })
        })(),
    );
    finish(&r)
}

fn finish(r: &Report) -> ExitCode {
    println!(
        "e2e: {} passed, {} failed, {} skipped",
        r.passed, r.failed, r.skipped
    );
    if r.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
