//! systemd's notify protocol for airlockd (Type=notify): `READY=1`, `STOPPING=1`, `STATUS=…`
//! and the watchdog (`WATCHDOG=1` pings, `WatchdogSec=` in airlockd.service).
//!
//! The watchdog is only worth having if a ping means "airlockd still gates". So pings are sent
//! from the daemon's main `select!` loop (its 1 s tick, see [`Watchdog::tick`]), never from a
//! timer task of their own: a loop that is stuck (a lock held forever, a blocking call, a
//! busy branch) stops pinging and systemd restarts airlockd, which re-attaches to the pinned
//! programs and the persisted requests. Each ping also requires the health checks the daemon
//! passes in to be true: those are the threads and tasks the loop depends on but does not run
//! itself (the backend's event reader, the cgroup watcher). Without them held syscalls would
//! never become requests, or new agent cgroups would never be gated, while the loop itself
//! looked fine.
use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends `msg` to systemd's notification socket (`$NOTIFY_SOCKET`), when started by systemd.
/// Best effort: a failure is logged, never fatal.
pub fn sd_notify(msg: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify_to(&path, msg)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Sends `msg` to the notification socket at `path` (a filesystem path, or `@name` for an
/// abstract socket), as `sd_notify(3)` does.
pub fn notify_to(path: &OsString, msg: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        sock.send_to(msg.as_bytes(), Path::new(path))?;
    }
    Ok(())
}

/// The watchdog interval systemd expects pings within, per `sd_watchdog_enabled(3)`: from
/// `WATCHDOG_USEC`, but only if `WATCHDOG_PID` is unset or is `pid` (the variables may have
/// been inherited from a parent that is the one being watched). `None`: no watchdog.
pub fn watchdog_interval(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    if let Some(p) = watchdog_pid
        && p.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    match usec?.trim().parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(us) => Some(Duration::from_micros(us)),
    }
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for, while the health checks pass.
pub struct Watchdog {
    /// Where to send (None: not started by systemd or no watchdog configured).
    socket: Option<OsString>,
    /// Half of `WATCHDOG_USEC`: the ping period `sd_watchdog_enabled(3)` recommends.
    period: Duration,
    last_ping: Option<Instant>,
    /// The check that failed at the last tick, so that it is logged once, not every second.
    failing: Option<&'static str>,
}

impl Watchdog {
    /// The watchdog systemd configured for this process, if any.
    pub fn from_env() -> Watchdog {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let wpid = std::env::var("WATCHDOG_PID").ok();
        let interval = watchdog_interval(usec.as_deref(), wpid.as_deref(), std::process::id());
        let socket = std::env::var_os("NOTIFY_SOCKET");
        Watchdog::new(
            socket.filter(|_| interval.is_some()),
            interval.unwrap_or_default(),
        )
    }

    /// A watchdog sending to `socket` for a systemd `interval` (`None`: sends nothing).
    pub fn new(socket: Option<OsString>, interval: Duration) -> Watchdog {
        Watchdog {
            socket,
            period: interval / 2,
            last_ping: None,
            failing: None,
        }
    }

    /// Called from the main loop's tick with named health checks: pings when one is due and
    /// every check is true. A failing check withholds the ping (systemd restarts airlockd once
    /// `WatchdogSec` passes without one) and is reported in `STATUS=`. Returns whether a ping
    /// was sent.
    pub fn tick(&mut self, now: Instant, checks: &[(&'static str, bool)]) -> bool {
        let Some(socket) = &self.socket else {
            return false;
        };
        if let Some(&(what, _)) = checks.iter().find(|(_, ok)| !ok) {
            if self.failing != Some(what) {
                tracing::error!(
                    check = what,
                    "health check failed; withholding watchdog pings"
                );
                let _ = notify_to(socket, &format!("STATUS=unhealthy: {what} stopped"));
                self.failing = Some(what);
            }
            return false;
        }
        if self.failing.take().is_some() {
            let _ = notify_to(socket, "STATUS=gating");
        }
        if self
            .last_ping
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            return false;
        }
        match notify_to(socket, "WATCHDOG=1") {
            Ok(()) => {
                self.last_ping = Some(now);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "watchdog ping failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, UnixDatagram, OsString) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (dir, sock, path.into_os_string())
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn nothing_queued(sock: &UnixDatagram) -> bool {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let none = sock.recv(&mut buf).is_err();
        sock.set_nonblocking(false).unwrap();
        none
    }

    #[test]
    fn ready_and_stopping_reach_a_filesystem_notify_socket() {
        let (_dir, sock, path) = listener();
        notify_to(&path, "READY=1\nSTATUS=gating").unwrap();
        notify_to(&path, "STOPPING=1").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=gating");
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn notify_reaches_an_abstract_notify_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("airlock-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        notify_to(&OsString::from(format!("@{name}")), "READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let s = Some(Duration::from_secs(30));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), s);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), s);
        // Inherited from a watched parent: not ours to ping.
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("junk"), 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
    }

    #[test]
    fn pings_at_half_the_interval_only_while_healthy() {
        let (_dir, sock, path) = listener();
        let mut dog = Watchdog::new(Some(path), Duration::from_secs(10));
        let t0 = Instant::now();
        let ok = [("backend", true), ("cgroup watcher", true)];
        assert!(dog.tick(t0, &ok));
        assert_eq!(recv(&sock), "WATCHDOG=1");
        // Not due before half the interval.
        assert!(!dog.tick(t0 + Duration::from_secs(4), &ok));
        assert!(nothing_queued(&sock));
        assert!(dog.tick(t0 + Duration::from_secs(5), &ok));
        assert_eq!(recv(&sock), "WATCHDOG=1");
        // A dead backend reader withholds the ping, said once in STATUS.
        let bad = [("backend", false), ("cgroup watcher", true)];
        assert!(!dog.tick(t0 + Duration::from_secs(11), &bad));
        assert_eq!(recv(&sock), "STATUS=unhealthy: backend stopped");
        assert!(!dog.tick(t0 + Duration::from_secs(12), &bad));
        assert!(nothing_queued(&sock));
        // Recovered: status restored, ping resumes.
        assert!(dog.tick(t0 + Duration::from_secs(13), &ok));
        assert_eq!(recv(&sock), "STATUS=gating");
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn no_socket_means_no_pings() {
        let mut dog = Watchdog::new(None, Duration::from_secs(10));
        assert!(!dog.tick(Instant::now(), &[]));
    }
}
