//! The open-loop pass's pacer (`bench_server.rs`): releases each host's requests when they are
//! due from a thread of its own, with the kernel's timer, not Tokio's (which counts whole
//! milliseconds, so a host sleeping until its due time sent about 1 ms late, and that lateness
//! was counted as the server's latency); and the witnesses that tell a slow round trip of
//! the server from a stall of the machine.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use airlock_server::testing::FakeHost;
use anyhow::Context as _;

use super::bench_server::{HOSTS, Pass, REQUESTS, ms, pct};

/// Every host runs REQUESTS / HOSTS round trips in its own task; `due(host, k)` is when its
/// k-th request is due (None: at once). Returns the pass and the hosts.
///
/// Due requests are released by [`pace`] on a thread of its own rather than by a Tokio sleep:
/// Tokio's timer counts whole milliseconds and rounds a deadline up to the next one, so a
/// host sleeping until its due time sent about 1 ms late (measured: median 0.97 ms, p90
/// 1.46 ms), and since a request is timed from when it was due, that lateness of the
/// benchmark's own timer was counted as the server's latency.
pub(crate) async fn every_host(
    hosts: Vec<FakeHost>,
    due: impl Fn(usize, usize) -> Option<Instant> + Clone + Send + 'static,
) -> anyhow::Result<(Pass, Vec<FakeHost>)> {
    let t = Instant::now();
    let steal = steal_ms();
    let paced = due(0, 0).is_some();
    let witness = paced.then(|| Witness::start(std::path::Path::new(super::bench_server::BASE)));
    let mut go = Vec::with_capacity(HOSTS);
    let mut tasks = Vec::new();
    for (i, mut h) in hosts.into_iter().enumerate() {
        let due = due.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        go.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(REQUESTS / HOSTS);
            for k in 0..REQUESTS / HOSTS {
                let at = due(i, k);
                if at.is_some() {
                    // Released when due; at once when the host is late (still waiting for
                    // its previous decision), which then counts from the due time.
                    rx.recv().await.context("pacer gone")?;
                }
                v.push(super::bench_server::timed_round_trip(&mut h, at).await?);
            }
            anyhow::Ok((v, h))
        }));
    }
    let pacer = paced.then(|| {
        let due = due.clone();
        std::thread::spawn(move || pace(go, due))
    });
    let mut timed = Vec::with_capacity(REQUESTS);
    let mut disk_max_ns = None;
    let mut back = Vec::with_capacity(HOSTS);
    for task in tasks {
        let (v, h) = task.await??;
        timed.extend(v);
        back.push(h);
    }
    if let Some(p) = pacer {
        let late = p
            .join()
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
        println!("  (pacer: requests released {late})");
        let steal = steal_ms().zip(steal).map(|(b, a)| b - a);
        let seen = witness.map(|w| w.stop()).unwrap_or_default();
        disk_max_ns = seen.disk_max_ns();
        let slow = slow(&timed, t, super::bench_server::P99_TARGET_MS, steal, &seen);
        println!("  ({slow})");
    }
    let ns = timed.into_iter().map(|(_, ns)| ns).collect();
    Ok((
        Pass {
            ns,
            wall: t.elapsed(),
            disk_max_ns,
        },
        back,
    ))
}

/// Releases request k of host i at `due(i, k)` (in due order: k, then i), sleeping in
/// between with the kernel's timer (microseconds, not Tokio's milliseconds). Returns how
/// late the releases were, as text.
pub(crate) fn pace(
    go: Vec<tokio::sync::mpsc::UnboundedSender<()>>,
    due: impl Fn(usize, usize) -> Option<Instant>,
) -> String {
    // A thread's timer slack (default 50 µs) is how late the kernel may wake it; 1 ns asks
    // for no more lateness than the wakeup itself.
    // SAFETY: prctl(PR_SET_TIMERSLACK) on the calling thread, with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut late = Vec::with_capacity(REQUESTS);
    for k in 0..REQUESTS / HOSTS {
        for (i, tx) in go.iter().enumerate() {
            let Some(at) = due(i, k) else { continue };
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            late.push(at.elapsed().as_nanos() as u64);
            // A host whose task ended (an error) is reported by the task.
            let _ = tx.send(());
        }
    }
    if late.is_empty() {
        return "none".into();
    }
    let (p50, p99) = (pct(&mut late, 0.5), pct(&mut late, 0.99));
    format!(
        "p50 {:.3} ms, p99 {:.3} ms after they were due",
        ms(p50),
        ms(p99)
    )
}

/// CPU time stolen from this machine by its hypervisor so far (all CPUs, ms; the `steal`
/// column of /proc/stat), `None` where the kernel does not count it.
pub(crate) fn steal_ms() -> Option<u64> {
    use procfs::CurrentSI as _;
    let stat = procfs::KernelStats::current().ok()?;
    let ticks = stat.total.steal?;
    Some(ticks * 1000 / procfs::ticks_per_second())
}

/// One thread per CPU, each pinned to its CPU, sleeping 1 ms at a time and noting how much
/// longer than that each sleep took: a stall they see is the machine's (the hypervisor
/// descheduling a virtual CPU, another process), not the server's, since they share nothing
/// with the server but the CPUs. One per CPU because a stolen virtual CPU stalls only the
/// threads on it.
///
/// One more thread writes 4 KiB and calls `fdatasync` every [`DISK_EVERY`] in a file in the
/// directory the database lives in: a slow sync it sees is the disk's (every durable commit
/// of the server waits for one).
pub(crate) struct Witness {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Instant, u64)>>>,
    disk: Option<std::thread::JoinHandle<Vec<(Instant, u64)>>>,
}

/// How often the [`Witness`] syncs its file: rare enough to add little to the disk's load
/// (the server syncs hundreds of times a second in the pass), often enough to catch a stall
/// that holds up a burst of decisions.
const DISK_EVERY: Duration = Duration::from_millis(20);

/// A sleep that overran by more than this is noted by the [`Witness`].
const WITNESS_OVER: Duration = Duration::from_millis(5);

impl Witness {
    /// Starts the threads; the disk's in a file in `dir` (none if it cannot be created).
    pub(crate) fn start(dir: &std::path::Path) -> Witness {
        let stop = Arc::new(AtomicBool::new(false));
        let disk = tempfile::tempfile_in(dir).ok().map(|f| {
            let s = stop.clone();
            std::thread::spawn(move || sync_loop(f, &s))
        });
        let threads = allowed_cpus()
            .into_iter()
            .map(|cpu| {
                let s = stop.clone();
                std::thread::spawn(move || watch(cpu, &s))
            })
            .collect();
        Witness {
            stop,
            threads,
            disk,
        }
    }

    /// What was seen: the CPU stalls (when the sleep began, how much it overran, ns) and the
    /// disk's syncs (when, how long, ns; empty when the disk thread could not start).
    pub(crate) fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let cpu = std::mem::take(&mut self.threads)
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        let disk = self.disk.take().map(|t| t.join().unwrap_or_default());
        Seen { cpu, disk }
    }
}

/// What a [`Witness`] saw.
#[derive(Default)]
pub(crate) struct Seen {
    cpu: Vec<(Instant, u64)>,
    disk: Option<Vec<(Instant, u64)>>,
}

impl Seen {
    /// The longest sync of the disk thread, if it ran.
    pub(crate) fn disk_max_ns(&self) -> Option<u64> {
        self.disk.as_ref()?.iter().map(|(_, ns)| *ns).max()
    }
}

/// The CPUs this process may run on (its affinity mask, which `taskset` or a container may
/// narrow; CPU numbers need not be 0..n).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity(0) fills it for this
    // thread; CPU_ISSET reads within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

impl Drop for Witness {
    /// Stops the threads when a pass ends early (an error): they end within a sleep.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The [`Witness`]'s disk thread: every [`DISK_EVERY`], 4 KiB appended (the file is cut back
/// every 1,000 writes) and `fdatasync`, timed.
fn sync_loop(f: std::fs::File, stop: &AtomicBool) -> Vec<(Instant, u64)> {
    use std::io::Write as _;
    let page = [0x5au8; 4096];
    let mut syncs = Vec::new();
    let mut f = f;
    while !stop.load(Ordering::Relaxed) {
        if syncs.len() % 1000 == 999 {
            use std::io::Seek as _;
            let _ = f.set_len(0).and_then(|()| f.rewind());
        }
        let t = Instant::now();
        if f.write_all(&page).and_then(|()| f.sync_data()).is_err() {
            break;
        }
        syncs.push((t, t.elapsed().as_nanos() as u64));
        std::thread::sleep(DISK_EVERY);
    }
    syncs
}

/// One [`Witness`] thread: pinned to `cpu` (unpinned if that is refused), until `stop`.
fn watch(cpu: usize, stop: &AtomicBool) -> Vec<(Instant, u64)> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it for cpu <
    // CPU_SETSIZE (available_parallelism is far below 1024); sched_setaffinity(0, …) applies
    // to the calling thread only, and reads the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        // PR_SET_TIMERSLACK on the calling thread, with an integer argument.
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut stalls = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        let over = t.elapsed().saturating_sub(Duration::from_millis(1));
        if over > WITNESS_OVER {
            stalls.push((t, over.as_nanos() as u64));
        }
    }
    stalls
}

/// Which round trips of a pass (timed from, ns) took longer than `over_ms`, as text: how
/// many, the slowest and when in the pass (from `start`); then what the machine did
/// meanwhile: the [`Witness`]'s stalls and the CPU time the hypervisor stole, so a miss can
/// be told from a stall of the machine.
pub(crate) fn slow(
    timed: &[(Instant, u64)],
    start: Instant,
    over_ms: f64,
    steal_ms: Option<u64>,
    seen: &Seen,
) -> String {
    let stalls = &seen.cpu;
    let over: Vec<&(Instant, u64)> = timed.iter().filter(|(_, ns)| ms(*ns) > over_ms).collect();
    let steal = steal_ms.map_or("not counted".to_string(), |s| format!("{s} ms"));
    let machine = match stalls.iter().max_by_key(|(_, ns)| *ns) {
        None => format!(
            "threads sleeping 1 ms at a time on each CPU never overslept by {} ms; CPU stolen by the hypervisor: {steal}",
            WITNESS_OVER.as_millis()
        ),
        Some((at, ns)) => format!(
            "threads sleeping 1 ms at a time on each CPU overslept by more than {} ms {} times, at most {:.1} ms at {:.2} s; CPU stolen by the hypervisor: {steal}",
            WITNESS_OVER.as_millis(),
            stalls.len(),
            ms(*ns),
            at.saturating_duration_since(start).as_secs_f64()
        ),
    };
    let disk = match &seen.disk {
        None => "not watched".to_string(),
        Some(syncs) if syncs.is_empty() => "not watched".to_string(),
        Some(syncs) => {
            let mut v: Vec<u64> = syncs.iter().map(|(_, ns)| *ns).collect();
            let slow: Vec<&(Instant, u64)> =
                syncs.iter().filter(|(_, ns)| ms(*ns) > over_ms).collect();
            let (p50, max) = (pct(&mut v, 0.5), pct(&mut v, 1.0));
            let mut t = format!(
                "{} syncs of 4 KiB, p50 {:.2} ms, max {:.1} ms",
                v.len(),
                ms(p50),
                ms(max)
            );
            if !slow.is_empty() {
                t += &format!(
                    ", {} over {over_ms} ms ({})",
                    slow.len(),
                    per_second(&slow, start)
                );
            }
            t
        }
    };
    let machine = format!("{machine}; the disk: {disk}");
    match over.iter().max_by_key(|(_, ns)| *ns) {
        None => format!("no round trip over {over_ms} ms; the machine: {machine}"),
        Some((at, ns)) => format!(
            "{} round trips over {over_ms} ms (per second of the pass: {}), the slowest {:.1} ms at {:.2} s; the machine meanwhile: {machine}",
            over.len(),
            per_second(&over, start),
            ms(*ns),
            at.saturating_duration_since(start).as_secs_f64()
        ),
    }
}

/// "second×count" for the seconds of the pass (from `start`) that had slow round trips, the
/// eight with most, in time order: one burst reads as one stall, a spread as a steady cost.
fn per_second(over: &[&(Instant, u64)], start: Instant) -> String {
    let mut by = std::collections::BTreeMap::<u64, usize>::new();
    for (at, _) in over {
        *by.entry(at.saturating_duration_since(start).as_secs())
            .or_default() += 1;
    }
    let mut top: Vec<(u64, usize)> = by.into_iter().collect();
    top.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    top.truncate(8);
    top.sort_unstable();
    let v: Vec<String> = top.iter().map(|(s, n)| format!("{s} s×{n}")).collect();
    v.join(", ")
}
