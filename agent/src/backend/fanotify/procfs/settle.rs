//! Re-reading a `/proc/<tid>/syscall` line until its task sleeps in its call (the parent
//! module says why the first read often finds it `running`).
use std::time::{Duration, Instant};

use super::{SyscallLine, parse_syscall};

/// How long [`read_settled`] keeps re-reading a `running` line: until `bound` has passed since
/// the first read *and* at least `min_rereads` re-reads were made (under CPU starvation the
/// reader itself may be the one that could not run, so time alone proves little).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    pub bound: Duration,
    pub min_rereads: u32,
}

impl Patience {
    /// One read, no re-read.
    pub const ONCE: Patience = Patience {
        bound: Duration::ZERO,
        min_rereads: 0,
    };
}

/// The first re-reads only yield the CPU (a task on the other CPU falls asleep within
/// microseconds); later ones sleep, 50 µs doubling up to 200 µs, so that a task waiting for
/// *our* CPU gets it.
const YIELDS: u32 = 3;
const FIRST_SLEEP: Duration = Duration::from_micros(50);
const MAX_SLEEP: Duration = Duration::from_micros(200);

/// Pause before re-read number `attempt` (0-based).
fn pause(attempt: u32) -> Option<Duration> {
    let n = attempt.checked_sub(YIELDS)?;
    Some(FIRST_SLEEP.saturating_mul(1 << n.min(8)).min(MAX_SLEEP))
}

/// A `/proc/<tid>/syscall` line, the time from the first read to it (zero if the first read
/// was not `running`: how long the task stayed running) and the re-reads that took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub line: String,
    pub waited: Duration,
    pub rereads: u32,
}

/// Reads a `syscall` line with `read` until it is not `running` or `p` runs out; the last
/// line read is returned either way (a caller sees `running` only when `p` ran out).
pub fn read_settled(
    p: Patience,
    mut read: impl FnMut() -> std::io::Result<String>,
) -> std::io::Result<Settled> {
    let t0 = Instant::now();
    let mut rereads = 0;
    loop {
        let line = read()?;
        let running = parse_syscall(&line) == Some(SyscallLine::Running);
        if !running || (t0.elapsed() >= p.bound && rereads >= p.min_rereads) {
            let waited = if rereads == 0 {
                Duration::ZERO
            } else {
                t0.elapsed()
            };
            return Ok(Settled {
                line,
                waited,
                rereads,
            });
        }
        match pause(rereads) {
            None => std::thread::yield_now(),
            Some(d) => std::thread::sleep(d),
        }
        rereads += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Intent, TASK_RUNNING, intent_from_syscall};
    use super::*;

    #[test]
    fn a_running_task_is_reread_until_it_sleeps_in_its_call() {
        let open = "257 0xffffff9c 0x1000 0x0 0x0 0x0 0x0 0x0 0x0\n";
        let mut lines = ["running\n"; 6].into_iter().chain([open]);
        let p = Patience {
            bound: Duration::from_secs(5),
            min_rereads: 0,
        };
        let s = read_settled(p, || Ok(lines.next().unwrap().to_string())).unwrap();
        assert_eq!((s.line.as_str(), s.rereads), (open, 6));
        assert!(s.waited > Duration::ZERO);
        assert_eq!(intent_from_syscall(&s.line, |_| None), Intent::Read);
        let s = read_settled(p, || Ok(open.to_string())).unwrap();
        assert_eq!(
            (s.rereads, s.waited),
            (0, Duration::ZERO),
            "a sleeping task: one read"
        );
        // Re-reads yield first, then sleep briefly.
        assert_eq!(
            (0..YIELDS).map(pause).collect::<Vec<_>>(),
            vec![None; YIELDS as usize]
        );
        assert_eq!(
            (pause(YIELDS), pause(YIELDS + 1)),
            (Some(FIRST_SLEEP), Some(FIRST_SLEEP * 2))
        );
        assert_eq!(pause(YIELDS + 40), Some(MAX_SLEEP));
    }

    #[test]
    fn a_task_running_past_the_bound_stays_unknown_and_says_how_long() {
        let bound = Duration::from_millis(5);
        let t0 = Instant::now();
        let p = Patience {
            bound,
            min_rereads: 0,
        };
        let s = read_settled(p, || Ok("running\n".to_string())).unwrap();
        let took = t0.elapsed();
        assert!(
            s.waited >= bound && took < Duration::from_secs(2),
            "{s:?} in {took:?}"
        );
        assert_eq!(
            intent_from_syscall(&s.line, |_| None),
            Intent::Unknown(TASK_RUNNING)
        );
        // The bound alone does not end the wait before the minimum number of re-reads.
        let p = Patience {
            bound: Duration::ZERO,
            min_rereads: 5,
        };
        let s = read_settled(p, || Ok("running\n".to_string())).unwrap();
        assert_eq!(s.rereads, 5);
        let s = read_settled(Patience::ONCE, || Ok("running\n".to_string())).unwrap();
        assert_eq!(s.rereads, 0, "once is one read");
        // A read error ends the wait at once.
        let e = read_settled(p, || Err(std::io::Error::from_raw_os_error(libc::ESRCH)));
        assert!(e.is_err());
    }
}
