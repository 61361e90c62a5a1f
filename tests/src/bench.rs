//! `airlock-e2e --bench`: overhead of airlock on exec and open, as ratios to a baseline measured
//! in the same run with airlock off.
//!
//! Configurations: off (no daemon), on with the caller outside agent cgroups, on with the caller
//! inside an agent cgroup, under a policy of 10,000 gated binaries and 1,000 protected trees that
//! the measured operations do not touch. The baseline is taken before and after the "on" phase
//! and rounds alternate, so drift of the machine shows up as spread rather than as overhead.
use std::path::{Path, PathBuf};
use std::time::Instant;

use airlock_agent::cgroup::{CgroupDir, cgroup2_mount};
use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Pins, run_in};

// Declared here rather than in main.rs: the server part is reached only through `run`.
#[path = "bench_pacer.rs"]
mod bench_pacer;
#[path = "bench_server.rs"]
mod bench_server;

const GATED_BINARIES: usize = 10_000;
const PROTECTED_TREES: usize = 1_000;

/// `--bench-worker exec|open N`: runs the loop and prints nanoseconds per operation.
pub fn worker(kind: &str, n: usize, file: &str) -> ! {
    if kind == "hold" {
        crate::bench_holds::worker(n, file);
    }
    // Pin the measured loop (and the children it forks) to the last CPU: less scheduler noise
    // than letting it bounce between the two cores this machine has.
    // SAFETY: plain affinity syscalls on this process.
    unsafe {
        let ncpu = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(ncpu - 1, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let t = Instant::now();
    match kind {
        "exec" => {
            for _ in 0..n {
                let st = std::process::Command::new("/bin/true")
                    .status()
                    .expect("spawn /bin/true");
                assert!(st.success());
            }
        }
        "open" => {
            let p = std::ffi::CString::new(file).expect("path");
            for _ in 0..n {
                // SAFETY: open/close of a NUL-terminated path.
                unsafe {
                    let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
                    assert!(fd >= 0, "open {file}");
                    libc::close(fd);
                }
            }
        }
        other => {
            eprintln!("unknown worker {other}");
            std::process::exit(2)
        }
    }
    println!("{}", t.elapsed().as_nanos() as f64 / n as f64);
    std::process::exit(0)
}

fn measure(me: &Path, cg: Option<&Path>, kind: &str, n: usize, file: &Path) -> anyhow::Result<f64> {
    let me = me.to_string_lossy().to_string();
    let ns = n.to_string();
    let f = file.to_string_lossy().to_string();
    let (_, out) = run_in(cg, None, &[&me, "--bench-worker", kind, &ns, &f])?;
    if !out.status.success() {
        bail!(
            "worker {kind} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("worker output")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Samples {
    exec: Vec<f64>,
    open: Vec<f64>,
}

/// Iterations of each measured loop.
#[derive(Clone, Copy)]
struct Loops {
    exec: usize,
    open: usize,
}

impl Loops {
    /// On the host: long enough that one loop takes about a second.
    const HOST: Loops = Loops {
        exec: 1000,
        open: 300_000,
    };
    /// In an emulated guest, where each operation is many times slower.
    const GUEST: Loops = Loops {
        exec: 150,
        open: 30_000,
    };
}

fn rounds(
    me: &Path,
    cg: Option<&Path>,
    file: &Path,
    r: usize,
    loops: Loops,
    s: &mut Samples,
) -> anyhow::Result<()> {
    for _ in 0..r {
        s.exec.push(measure(me, cg, "exec", loops.exec, file)?);
        s.open.push(measure(me, cg, "open", loops.open, file)?);
    }
    Ok(())
}

fn write_policy(dir: &Path, top_rel: &str) -> anyhow::Result<PathBuf> {
    let bins = dir.join("bins");
    std::fs::create_dir_all(&bins)?;
    let mut y = format!(
        "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: bench\nmode: enforce\nagents:\n  - name: bench\n    cgroup: \"/{top_rel}/agent\"\nrules:\n  - name: many-binaries\n    action: deny\n    exec:\n"
    );
    for i in 0..GATED_BINARIES {
        let p = bins.join(format!("b{i:05}"));
        // Distinct contents, like real binaries (one digest each).
        std::fs::write(&p, format!("b{i:05}"))?;
        y.push_str(&format!("      - \"{}\"\n", p.display()));
    }
    y.push_str("  - name: many-trees\n    action: deny\n    paths:\n");
    for i in 0..PROTECTED_TREES {
        let t = dir.join("trees").join(format!("t{i:04}"));
        std::fs::create_dir_all(&t)?;
        std::fs::write(t.join("f"), b"x")?;
        y.push_str(&format!("      - \"{}\"\n", t.display()));
    }
    let p = dir.join("bench-policy.yaml");
    std::fs::write(&p, y)?;
    Ok(p)
}

/// Runs the benchmark and prints the table. `in_guest` (the guest's accelerator, from
/// `cargo xtask bench`) runs only the exec/open overhead part, with shorter loops, and labels the
/// figures as measured in a guest.
pub fn run(bin_dir: &Path, rounds_n: usize, in_guest: Option<&str>) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    if let Some(accel) = in_guest {
        anyhow::ensure!(rounds_n > 0, "--in-guest needs --rounds of at least 1");
        println!(
            "overhead benchmark inside a QEMU guest (accel {accel}){}",
            if accel == "tcg" {
                ": MEASURED UNDER EMULATION, the ratios are indicative only"
            } else {
                ""
            }
        );
        // Targets are for hardware: under emulation the table is printed without verdicts.
        return overhead(bin_dir, &me, rounds_n, Loops::GUEST, accel != "tcg");
    }
    if std::env::var("AIRLOCK_BENCH_ONLY").as_deref() == Ok("server") {
        // `AIRLOCK_BENCH_ONLY=server`: only airlock-server's benchmark (no kernel parts).
        return bench_server::run(bin_dir);
    }
    if std::env::var("AIRLOCK_BENCH_ONLY").as_deref() == Ok("audit") {
        // `AIRLOCK_BENCH_ONLY=audit`: only the audit stream's benchmark.
        return crate::bench_audit::run();
    }
    if rounds_n > 0 {
        overhead(bin_dir, &me, rounds_n, Loops::HOST, true)?;
    }
    // `--rounds 0`: only the hold benchmark, then the server's.
    crate::bench_holds::run(bin_dir, &me)?;
    bench_server::run(bin_dir)?;
    crate::bench_audit::run()
}

/// The exec and open+close overhead table.
fn overhead(
    bin_dir: &Path,
    me: &Path,
    rounds_n: usize,
    loops: Loops,
    judge: bool,
) -> anyhow::Result<()> {
    let dir = PathBuf::from(format!("/var/tmp/airlock-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cleanup = Cleanup(dir.clone());
    let _pins = Pins;
    let top_rel = format!("airlock-bench-{}", std::process::id());
    let cg = CgroupDir::create(cgroup2_mount()?.join(&top_rel))?;
    let agent = cg.create_child("agent")?;
    let outside = cg.create_child("outside")?;
    let policy = write_policy(&dir, &top_rel)?;
    let file = dir.join("measured-file");
    std::fs::write(&file, b"data")?;

    // Settle the writeback of the 11,000 files just created before measuring anything.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    println!("warming up…");
    let mut junk = Samples {
        exec: vec![],
        open: vec![],
    };
    rounds(me, Some(&outside), &file, 2, loops, &mut junk)?;
    // Each round measures off, then on (outside, inside), so a ratio compares measurements taken
    // seconds apart; the machine's drift over the whole run does not land in the ratios.
    let mut off = Samples {
        exec: vec![],
        open: vec![],
    };
    let mut out_s = Samples {
        exec: vec![],
        open: vec![],
    };
    let mut in_s = Samples {
        exec: vec![],
        open: vec![],
    };
    let (mut r_out_exec, mut r_in_exec, mut d_out_open, mut d_in_open) =
        (vec![], vec![], vec![], vec![]);
    let mut st = serde_json::Value::Null;
    let mut started = std::time::Duration::ZERO;
    for round in 0..rounds_n {
        let n0 = off.exec.len();
        rounds(me, Some(&outside), &file, 1, loops, &mut off)?;
        let t = Instant::now();
        let daemon = Daemon::start(bin_dir, &policy, &dir.join("state"), "auto")?;
        started = t.elapsed();
        st = daemon.status().unwrap_or_default();
        rounds(me, Some(&outside), &file, 1, loops, &mut out_s)?;
        rounds(me, Some(&agent), &file, 1, loops, &mut in_s)?;
        drop(daemon);
        r_out_exec.push(out_s.exec[n0] / off.exec[n0]);
        r_in_exec.push(in_s.exec[n0] / off.exec[n0]);
        d_out_open.push(out_s.open[n0] - off.open[n0]);
        d_in_open.push(in_s.open[n0] - off.open[n0]);
        println!(
            "round {}/{rounds_n}: exec {:.3}× / {:.3}×, open {:+.1} / {:+.1} ns (outside / inside)",
            round + 1,
            r_out_exec[n0],
            r_in_exec[n0],
            d_out_open[n0],
            d_in_open[n0]
        );
    }

    let (eo, oo) = (median(&mut off.exec), median(&mut off.open));
    let (e1, o1) = (median(&mut out_s.exec), median(&mut out_s.open));
    let (e2, o2) = (median(&mut in_s.exec), median(&mut in_s.open));
    let (ro, ri) = (median(&mut r_out_exec), median(&mut r_in_exec));
    let (dopen_o, dopen_i) = (median(&mut d_out_open), median(&mut d_in_open));
    let spread = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() - 1] - v[0]) / v[v.len() / 2] * 100.0
    };
    println!();
    println!("backend: {} ({})", st["backend"], st["backend_reason"]);
    println!(
        "policy: {GATED_BINARIES} gated binaries, {PROTECTED_TREES} protected trees (none touched); airlockd ready in {:.2} s",
        started.as_secs_f64()
    );
    println!(
        "{rounds_n} rounds; baseline spread (max-min)/median: exec {:.1} %, open {:.1} %; ratios are medians of per-round ratios",
        spread(&mut off.exec),
        spread(&mut off.open)
    );
    println!();
    println!(
        "| measurement                     | off (median) | on, outside agents   | on, inside agent     | target                           |"
    );
    println!(
        "|---------------------------------|--------------|----------------------|----------------------|----------------------------------|"
    );
    println!(
        "| fork+exec+wait /bin/true        | {:>8.1} µs  | {:>7.1} µs {:>6.3}× | {:>7.1} µs {:>6.3}× | outside ≤ 1.005×, inside ≤ 1.01× |",
        eo / 1e3,
        e1 / 1e3,
        ro,
        e2 / 1e3,
        ri
    );
    println!(
        "| open+close of a file            | {:>8.1} ns  | {:>7.1} ns {:>+6.1} ns | {:>7.1} ns {:>+6.1} ns | outside ≤ +40 ns                 |",
        oo, o1, dopen_o, o2, dopen_i
    );
    println!();
    let verdict = |ok: bool| match (judge, ok) {
        (false, _) => "no verdict under emulation",
        (true, true) => "met",
        (true, false) => "NOT met",
    };
    println!(
        "exec outside {:.3}× ({}), exec inside {:.3}× ({}), open outside {:+.1} ns ({})",
        ro,
        verdict(ro <= 1.005),
        ri,
        verdict(ri <= 1.01),
        dopen_o,
        verdict(dopen_o <= 40.0)
    );
    drop(cg);
    drop(cleanup);
    Ok(())
}

pub(crate) struct Cleanup(pub(crate) PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
