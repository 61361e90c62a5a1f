//! The open-loop pass's pacer (`bench_server.rs`): releases each host's requests when they are
//! due from a thread of its own, with the kernel's timer, not Tokio's (which counts whole
//! milliseconds, so a host sleeping until its due time sent about 1 ms late, and that lateness
//! was counted as the server's latency).
use std::time::Instant;

use super::bench_server::{HOSTS, REQUESTS, ms, pct};

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
