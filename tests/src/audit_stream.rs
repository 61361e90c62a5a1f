//! The audit stream under load and failures (host tier, issue 10 item 6): a bulk writer in
//! an agent cgroup keeps airlockd writing audit records (each write open of a tree under an
//! `audit` rule is one `event.allowed` record, group-committed) while
//!
//! 1. the collector's server is killed for seconds and then restarted, and
//! 2. airlockd is SIGKILLed in the middle of shipping: a batch stored by the collector whose
//!    acknowledgement airlockd never read, unshipped records behind it, records waiting for
//!    their group commit; then it starts again on the same state directory.
//!
//! Afterwards the collector must hold every record of the host's chain from seq 1 up to the
//! spool's head exactly once, identical (by hash) to what the host wrote, the host's spool
//! must be acknowledged up to its head, both the host's spool and the collector's copy must
//! verify with the host's audit key, and the collector must have raised no alert. Each
//! scenario has its own enrolled host (its own chain) on one server. The preconditions
//! (records written while the server was down; a batch in flight and unshipped records when
//! airlockd died) are asserted, so neither can pass without the failure overlapping the
//! load. Run alone with `AIRLOCK_E2E_ONLY=audit-stream airlock-e2e --tier host`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_agent::cgroup::{CgroupDir, cgroup2_mount};
use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Report, Spawned, ensure, stdout};
use crate::server::{ServerProc, enroll, init_server, issue_token};

/// How long the server stays down at least in the outage scenario (longer, up to
/// [`OUTAGE_MAX`], until [`MIN_OUTAGE_RECORDS`] were written while it was down).
const OUTAGE: Duration = Duration::from_secs(4);
const OUTAGE_MAX: Duration = Duration::from_secs(12);
/// How long the server stops answering at least before airlockd is killed (longer, up to
/// [`STALL_MAX`], until [`MIN_STALL_RECORDS`] were written meanwhile).
const STALL: Duration = Duration::from_millis(1500);
const STALL_MAX: Duration = Duration::from_secs(10);
/// Records written while the server stalls: more than one group commit (256 records).
const MIN_STALL_RECORDS: u64 = 257;
/// The writer's pause between two write opens (paces it well below the collector query's
/// limit of 10 000 records per scenario).
const PAUSE_US: &str = "1500";
/// Records that must have been written while the server was down: more than two of the
/// shipper's batches (512 records), so catching up takes several batches.
const MIN_OUTAGE_RECORDS: u64 = 1025;
/// The collector query's largest limit (`audit_query::MAX_LIMIT`).
const QUERY_LIMIT: usize = 10_000;
const WAIT: Duration = Duration::from_secs(20);

/// `airlock-e2e --op write-until PATH STOPFILE PAUSE_US`: opens PATH for writing (and closes
/// it) every PAUSE_US microseconds until STOPFILE exists, then prints `writes=N failed=M`.
pub fn write_until(path: &str, stop: &str, pause_us: &str) -> ! {
    let p = std::ffi::CString::new(path).expect("no NUL in test paths");
    let pause = Duration::from_micros(pause_us.parse().unwrap_or(1000));
    let (mut writes, mut failed) = (0u64, 0u64);
    while !Path::new(stop).exists() {
        // SAFETY: open/close of a NUL-terminated path.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: closing the descriptor just opened.
            unsafe { libc::close(fd) };
            writes += 1;
        } else {
            failed += 1;
        }
        std::thread::sleep(pause);
    }
    println!("writes={writes} failed={failed}");
    std::process::exit(0)
}

/// The server, the policy and the agent cgroup of these scenarios.
struct Fixture {
    dir: PathBuf,
    sdir: PathBuf,
    url: String,
    token: String,
    policy: PathBuf,
    /// The file the writer opens (under the `audit` rule's tree).
    target: PathBuf,
    agent_cg: PathBuf,
    _cg: CgroupDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn new(base: &Path, bin_dir: &Path) -> anyhow::Result<Fixture> {
        let top = format!("airlock-e2e-audit-{}", std::process::id());
        let dir = base.join(&top);
        let _ = std::fs::remove_dir_all(&dir);
        let made = Self::make(bin_dir, &top, &dir);
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    fn make(bin_dir: &Path, top: &str, dir: &Path) -> anyhow::Result<Fixture> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(dir.join("audited"))?;
        let target = dir.join("audited").join("log");
        std::fs::write(&target, "")?;
        let cg = CgroupDir::create(cgroup2_mount()?.join(top)).context("audit fixture cgroup")?;
        let agent_cg = cg.create_child("agent")?;
        let policy = dir.join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: e2e-audit\nmode: enforce\n\
                 agents:\n  - name: e2eaudit\n    cgroup: \"/{top}/agent\"\n\
                 rules:\n  - name: audited-writes\n    action: audit\n    paths: [\"{}\"]\n",
                dir.join("audited").display()
            ),
        )?;
        let sdir = dir.join("server");
        std::fs::create_dir_all(&sdir)?;
        let (url, _) = init_server(
            bin_dir,
            &sdir,
            "principals:\n  alice:\n    groups: [sre]\nroutes:\n  - name: default\n    approvers: [sre]\n",
        )?;
        let token = issue_token(bin_dir, &sdir, "alice")?;
        Ok(Fixture {
            dir,
            sdir,
            url,
            token,
            policy,
            target,
            agent_cg,
            _cg: cg,
        })
    }
}

/// One enrolled host of a scenario: its identity and airlockd's state directory.
struct Host {
    name: &'static str,
    identity: PathBuf,
    state: PathBuf,
}

impl Host {
    fn enroll(fx: &Fixture, bin_dir: &Path, name: &'static str) -> anyhow::Result<Host> {
        let home = fx.dir.join(name);
        let identity = home.join("identity");
        enroll(bin_dir, &fx.sdir, &fx.url, name, &identity)?;
        Ok(Host {
            name,
            identity,
            state: home.join("state"),
        })
    }

    /// Starts airlockd linked to the server, and waits for the link.
    fn start(&self, fx: &Fixture, bin_dir: &Path) -> anyhow::Result<Daemon> {
        let id = self.identity.to_string_lossy().to_string();
        let d = Daemon::start_with(
            bin_dir,
            &fx.policy,
            &self.state,
            "auto",
            &["--server", &fx.url, "--identity-dir", &id],
        )?;
        link_up(&d, true)?;
        Ok(d)
    }
}

fn link_up(d: &Daemon, want: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = d.status().unwrap_or_default();
        if st["link"]["connected"].as_bool() == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("link connected != {want} after {WAIT:?}: {}", st["link"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bulk writer inside the agent cgroup; killed on drop unless finished.
struct Writer {
    child: Spawned,
    stop: PathBuf,
}

impl Writer {
    fn start(fx: &Fixture, me: &Path, tag: &str) -> anyhow::Result<Writer> {
        let stop = fx.dir.join(format!("stop-{tag}"));
        let me = me.to_string_lossy().to_string();
        let t = fx.target.to_string_lossy().to_string();
        let s = stop.to_string_lossy().to_string();
        let child = Spawned::start(
            &fx.agent_cg,
            &[&me, "--op", "write-until", &t, &s, PAUSE_US],
        )?;
        Ok(Writer { child, stop })
    }

    fn running(&mut self) -> bool {
        self.child.running()
    }

    /// Stops it; the number of write opens it made.
    fn finish(self) -> anyhow::Result<u64> {
        std::fs::write(&self.stop, "")?;
        let o = self.child.finish(Duration::from_secs(10))?;
        let said = stdout(&o);
        let n = said
            .strip_prefix("writes=")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        ensure(o.status.success() && said.ends_with("failed=0"), || {
            format!("writer: {said} {}", String::from_utf8_lossy(&o.stderr))
        })?;
        n.with_context(|| format!("writer said {said:?}"))
    }
}

/// What the host's spool holds now (read from its files, as `airlock audit export` does).
struct SpoolView {
    /// The last record written.
    head: u64,
    /// The highest seq the collector acknowledged (`state.json`).
    acked: u64,
    /// seq → hash of every record still in the spool.
    hashes: BTreeMap<u64, String>,
}

fn spool_dir(state: &Path) -> anyhow::Result<PathBuf> {
    let base = state.join("audit");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .with_context(|| base.display().to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    ensure(dirs.len() == 1, || {
        format!("{}: want one spool, found {dirs:?}", base.display())
    })?;
    Ok(dirs.remove(0))
}

/// Reads the spool of `state`. A torn frame at the end (a write under way, or cut by a kill)
/// is no record; a segment deleted by an acknowledgement while it is read means read again.
fn spool(state: &Path) -> anyhow::Result<SpoolView> {
    let dir = spool_dir(state)?;
    let mut tries = 0;
    loop {
        match read_spool(&dir) {
            Ok(v) => return Ok(v),
            Err(_) if tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_spool(dir: &Path) -> anyhow::Result<SpoolView> {
    use airlock_audit::Entry;
    use airlock_audit::verify::EntryError;
    let acked = match std::fs::read(dir.join("state.json")) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)?["acked"]
            .as_u64()
            .context("state.json: acked")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    let mut hashes = BTreeMap::new();
    for e in airlock_audit::spool::read_dir(dir)? {
        match e {
            Ok(Entry::Record(r)) => {
                let h = serde_json::to_value(r.hash)?
                    .as_str()
                    .context("hash")?
                    .to_string();
                hashes.insert(r.seq, h);
            }
            Ok(Entry::Checkpoint(_)) => {}
            Err(EntryError::TornTail { .. }) => break,
            Err(e) => bail!("{}: {e}", dir.display()),
        }
    }
    let head = hashes.keys().next_back().copied().unwrap_or(0);
    Ok(SpoolView {
        head,
        acked,
        hashes,
    })
}

/// `airlock audit query --server … ARGS` as alice.
fn query(fx: &Fixture, bin_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let o = Command::new(bin_dir.join("airlock"))
        .args(["audit", "query", "--json"])
        .args(args)
        .args(["--server", &fx.url, "--token", &fx.token, "--ca"])
        .arg(fx.sdir.join("ca.pem"))
        .output()?;
    ensure(o.status.success(), || {
        format!("audit query: {}", String::from_utf8_lossy(&o.stderr))
    })?;
    Ok(String::from_utf8(o.stdout)?)
}

/// The collector's records of `host` in storage order: (seq, hash) each, and the text.
fn stored(
    fx: &Fixture,
    bin_dir: &Path,
    host: &str,
) -> anyhow::Result<(Vec<(u64, String)>, String)> {
    let limit = QUERY_LIMIT.to_string();
    let text = query(fx, bin_dir, &["--host", host, "--limit", &limit])?;
    let mut out = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).with_context(|| l.to_string())?;
        let seq = v["seq"].as_u64().with_context(|| format!("no seq: {l}"))?;
        let hash = v["hash"]
            .as_str()
            .with_context(|| format!("no hash: {l}"))?;
        out.push((seq, hash.to_string()));
    }
    // A full page may hide more: the scenario must stay below the query's limit.
    ensure(out.len() < QUERY_LIMIT, || {
        format!("the collector returned {QUERY_LIMIT} records: more than one query can check")
    })?;
    Ok((out, text))
}

/// The collector's alerts about `host`.
fn alerts(fx: &Fixture, bin_dir: &Path, host: &str) -> anyhow::Result<Vec<String>> {
    let text = query(fx, bin_dir, &["--alerts", "--host", host])?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The highest seq the collector holds for `host` (0: none).
fn stored_head(fx: &Fixture, bin_dir: &Path, host: &str) -> anyhow::Result<u64> {
    Ok(stored(fx, bin_dir, host)?
        .0
        .iter()
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(0))
}

/// Waits until the collector holds at least `n` records of `host`.
fn wait_stored(fx: &Fixture, bin_dir: &Path, host: &str, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = stored_head(fx, bin_dir, host)?;
        if got >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the collector holds {got} records of {host} after {WAIT:?}, want {n}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the spool's head is at least `n`.
fn wait_head(state: &Path, n: u64) -> anyhow::Result<SpoolView> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = spool(state)?;
        if v.head >= n {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("the spool's head is {} after {WAIT:?}, want {n}", v.head);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How the collector's records compare with the host's chain up to `head`.
struct Tally {
    lost: Vec<u64>,
    duplicated: Vec<u64>,
    beyond: Vec<u64>,
    max: u64,
}

fn tally(stored: &[(u64, String)], head: u64) -> Tally {
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for (s, _) in stored {
        *count.entry(*s).or_default() += 1;
    }
    Tally {
        lost: (1..=head).filter(|s| !count.contains_key(s)).collect(),
        duplicated: count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect(),
        beyond: count.keys().copied().filter(|s| *s > head).collect(),
        max: count.keys().next_back().copied().unwrap_or(0),
    }
}

fn first(v: &[u64]) -> &[u64] {
    &v[..v.len().min(10)]
}

/// Waits (after the writer stopped) until the host's spool is wholly acknowledged and the
/// collector holds seq 1..=head, then asserts exact counts: none lost, none duplicated, the
/// highest stored seq is the spool's head, and every record in `written` (seq → hash, read
/// from the host's spool) is stored unchanged. Returns the head and the collector's text.
fn every_record_once(
    fx: &Fixture,
    bin_dir: &Path,
    h: &Host,
    written: &BTreeMap<u64, String>,
) -> anyhow::Result<(u64, String)> {
    let deadline = Instant::now() + WAIT;
    let (view, rows, text) = loop {
        let view = spool(&h.state)?;
        let (rows, text) = stored(fx, bin_dir, h.name)?;
        let t = tally(&rows, view.head);
        let caught_up = view.acked == view.head && t.lost.is_empty() && t.max == view.head;
        if caught_up || Instant::now() > deadline {
            break (view, rows, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let t = tally(&rows, view.head);
    ensure(
        t.lost.is_empty() && t.duplicated.is_empty() && t.beyond.is_empty(),
        || {
            format!(
                "collector vs host head {}: lost {} (first {:?}), duplicated {} (first {:?}), beyond the head {:?}",
                view.head,
                t.lost.len(),
                first(&t.lost),
                t.duplicated.len(),
                first(&t.duplicated),
                first(&t.beyond)
            )
        },
    )?;
    ensure(t.max == view.head && rows.len() as u64 == view.head, || {
        format!(
            "the collector's highest seq is {} ({} rows), the host's spool head {}",
            t.max,
            rows.len(),
            view.head
        )
    })?;
    ensure(view.acked == view.head, || {
        format!(
            "the host's spool is acknowledged up to {} of {}",
            view.acked, view.head
        )
    })?;
    let by_seq: BTreeMap<u64, &str> = rows.iter().map(|(s, h)| (*s, h.as_str())).collect();
    let changed: Vec<u64> = written
        .iter()
        .filter(|(s, hash)| by_seq.get(s) != Some(&hash.as_str()))
        .map(|(s, _)| *s)
        .collect();
    ensure(changed.is_empty(), || {
        format!(
            "{} records the host had written are missing or different at the collector (first {:?})",
            changed.len(),
            first(&changed)
        )
    })?;
    Ok((view.head, text))
}

/// `airlock audit verify` of the host's spool and of the collector's copy (its records as
/// the query returned them, an export without checkpoints), with the host's key; and no
/// collector alert about the host.
fn both_copies_verify(
    fx: &Fixture,
    bin_dir: &Path,
    h: &Host,
    head: u64,
    collector_text: &str,
) -> anyhow::Result<()> {
    let verify = |path: Option<&Path>| -> anyhow::Result<std::process::Output> {
        let mut c = Command::new(bin_dir.join("airlock"));
        c.args(["audit", "verify"]);
        if let Some(p) = path {
            c.arg(p).arg("--key").arg(h.identity.join("audit.key"));
        }
        Ok(c.arg("--state-dir")
            .arg(&h.state)
            .arg("--identity-dir")
            .arg(&h.identity)
            .output()?)
    };
    let o = verify(None)?;
    ensure(
        o.status.success() && stdout(&o).contains("ok: the chain is whole"),
        || format!("verify of the host's spool: {}", crate::server::said(&o)),
    )?;
    let copy = fx.dir.join(format!("{}-collector.jsonl", h.name));
    std::fs::write(&copy, collector_text)?;
    let o = verify(Some(&copy))?;
    let said = stdout(&o);
    ensure(
        o.status.success()
            && said.contains(&format!("{head} records (seq 1..{head})"))
            && said.contains("ok: the chain is whole"),
        || {
            format!(
                "verify of the collector's copy: {}",
                crate::server::said(&o)
            )
        },
    )?;
    let a = alerts(fx, bin_dir, h.name)?;
    ensure(a.is_empty(), || format!("collector alerts: {a:?}"))
}

/// Scenario 1: the server is killed for [`OUTAGE`] while the writer runs, then restarted.
fn collector_down_under_load(
    fx: &Fixture,
    server: &mut ServerProc,
    bin_dir: &Path,
    me: &Path,
) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let h = Host::enroll(fx, bin_dir, "e2e-audit-outage")?;
    let mut d = h.start(fx, bin_dir)?;
    let res = (|| {
        let mut w = Writer::start(fx, me, "outage")?;
        // The stream flows before the outage: records are shipped and acknowledged.
        wait_head(&h.state, 300)?;
        wait_stored(fx, bin_dir, h.name, 200)?;
        let shipped_before = stored_head(fx, bin_dir, h.name)?;
        server.kill();
        let killed = Instant::now();
        let at_kill = spool(&h.state)?.head;
        link_up(&d, false)?;
        std::thread::sleep(OUTAGE.saturating_sub(killed.elapsed()));
        let at_restart = loop {
            let head = spool(&h.state)?.head;
            if head.saturating_sub(at_kill) >= MIN_OUTAGE_RECORDS || killed.elapsed() > OUTAGE_MAX {
                break head;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let down = killed.elapsed();
        let during = at_restart.saturating_sub(at_kill);
        ensure(w.running(), || {
            "the writer stopped during the outage".into()
        })?;
        ensure(during >= MIN_OUTAGE_RECORDS, || {
            format!(
                "only {during} records written while the server was down for {down:?} (want ≥ {MIN_OUTAGE_RECORDS})"
            )
        })?;
        *server = ServerProc::start(bin_dir, &fx.sdir)?;
        let restarted = Instant::now();
        link_up(&d, true)?;
        let relinked = restarted.elapsed();
        // The writer goes on while the backlog ships.
        std::thread::sleep(Duration::from_millis(500));
        let writes = w.finish()?;
        let written = spool(&h.state)?.hashes;
        let (head, text) = every_record_once(fx, bin_dir, &h, &written)?;
        ensure(head > at_restart, || {
            format!("no record after the restart (head {head})")
        })?;
        both_copies_verify(fx, bin_dir, &h, head, &text)?;
        let st = d.stop()?;
        ensure(st.success(), || format!("airlockd exit status {st}"))?;
        Ok(format!(
            "{during} records written while the server was down for {:.1} s (head {at_kill}→{at_restart}; {shipped_before} \
             stored before); linked again {:.1} s after the restart; head {head}, {writes} write opens; {:.1} s",
            down.as_secs_f64(),
            relinked.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        ))
    })();
    if res.is_err() {
        println!("--- airlockd ({}) log ---\n{}", h.name, d.log_text());
    }
    res
}

/// A child of ours (the server, airlockd) stopped with SIGSTOP, by PID; SIGCONT on drop
/// unless resumed or released first, so a stopped process never outlives a failed check.
struct Frozen {
    pid: u32,
    armed: bool,
}

fn signal(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: signalling a child of ours, not yet reaped, by PID.
    ensure(unsafe { libc::kill(pid as i32, sig) } == 0, || {
        format!("kill -{sig} {pid}: {}", std::io::Error::last_os_error())
    })
}

impl Frozen {
    fn stop(pid: Option<u32>) -> anyhow::Result<Frozen> {
        let pid = pid.context("not running")?;
        signal(pid, libc::SIGSTOP)?;
        Ok(Frozen { pid, armed: true })
    }

    fn resume(mut self) -> anyhow::Result<()> {
        self.armed = false;
        signal(self.pid, libc::SIGCONT)
    }

    /// Before the process is killed and reaped: its PID is no longer ours to signal.
    fn release(mut self) {
        self.armed = false;
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.armed {
            let _ = signal(self.pid, libc::SIGCONT);
        }
    }
}

/// Scenario 2: the server stops answering (SIGSTOP), so the batch airlockd sent stays in
/// flight while the writer goes on; then airlockd is stopped, the server resumes and stores
/// that batch (its ack goes to a process that never reads it), and airlockd is SIGKILLed
/// with the ack unread, unshipped records in its spool and records waiting for their group
/// commit. It starts again on the same state dir, resumes from its last recorded ack (so it
/// sends the stored batch again) and ships the rest while the writer goes on.
fn airlockd_killed_mid_batch(
    fx: &Fixture,
    server: &ServerProc,
    bin_dir: &Path,
    me: &Path,
) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let h = Host::enroll(fx, bin_dir, "e2e-audit-kill")?;
    let mut d = h.start(fx, bin_dir)?;
    let res = (|| {
        let mut w = Writer::start(fx, me, "kill")?;
        wait_head(&h.state, 300)?;
        wait_stored(fx, bin_dir, h.name, 200)?;
        let stalled_server = Frozen::stop(server.pid())?;
        let stopped = Instant::now();
        let at_stop = spool(&h.state)?.head;
        std::thread::sleep(STALL);
        while spool(&h.state)?.head < at_stop + MIN_STALL_RECORDS && stopped.elapsed() < STALL_MAX {
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure(w.running(), || "the writer stopped".into())?;
        let frozen = Frozen::stop(d.pid())?;
        let acked = spool(&h.state)?.acked;
        stalled_server.resume()?;
        // The batch in flight reaches the collector; its ack stays unread.
        let deadline = Instant::now() + WAIT;
        let stored_at_kill = loop {
            let n = stored_head(fx, bin_dir, h.name)?;
            if n > acked || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        frozen.release();
        d.kill9()?;
        // Everything in the spool's files now was written before the kill (appends are
        // fsynced before airlockd goes on; a torn tail is no record).
        let at_kill = spool(&h.state)?;
        ensure(stored_at_kill > at_kill.acked, || {
            format!(
                "no batch in flight: the collector holds up to seq {stored_at_kill}, the host's ack is {}",
                at_kill.acked
            )
        })?;
        let stalled = at_kill.head.saturating_sub(at_stop);
        ensure(stalled >= MIN_STALL_RECORDS, || {
            format!(
                "only {stalled} records written while the server stalled (want ≥ {MIN_STALL_RECORDS})"
            )
        })?;
        ensure(stored_at_kill < at_kill.head, || {
            format!(
                "no unshipped record when airlockd was killed: the collector holds up to seq {stored_at_kill}, the head is {}",
                at_kill.head
            )
        })?;
        // The killed daemon's log, kept for a failure report (the next one starts a new one).
        let _ = std::fs::rename(&d.log, h.state.join("airlockd.killed.log"));
        d = h.start(fx, bin_dir)?;
        // The restarted daemon writes on (the chain continues) while it ships the backlog.
        wait_head(&h.state, at_kill.head + 200)?;
        let writes = w.finish()?;
        let mut written = at_kill.hashes.clone();
        written.extend(spool(&h.state)?.hashes);
        let (head, text) = every_record_once(fx, bin_dir, &h, &written)?;
        both_copies_verify(fx, bin_dir, &h, head, &text)?;
        let st = d.stop()?;
        ensure(st.success(), || format!("airlockd exit status {st}"))?;
        Ok(format!(
            "{stalled} records written while the server stalled; killed at head {}: acked up to {}, the collector held up to {stored_at_kill} \
             ({} sent again after the restart), {} unshipped; head {head} after the restart, {writes} write opens; {:.1} s",
            at_kill.head,
            at_kill.acked,
            stored_at_kill - at_kill.acked,
            at_kill.head - stored_at_kill,
            t0.elapsed().as_secs_f64()
        ))
    })();
    if res.is_err() {
        println!(
            "--- airlockd ({}) log before the kill ---\n{}",
            h.name,
            std::fs::read_to_string(h.state.join("airlockd.killed.log")).unwrap_or_default()
        );
        println!("--- airlockd ({}) log ---\n{}", h.name, d.log_text());
    }
    res
}

/// One check, with what the scenario measured (records written during the failure, counts,
/// time) on the line before.
fn report(r: &mut Report, name: &str, res: anyhow::Result<String>) {
    r.check(name, res.map(|said| println!("  {name}: {said}")));
}

/// Runs both scenarios with their own server, policy and agent cgroup.
pub fn run_all(r: &mut Report, bin_dir: &Path, me: &Path, base: &Path) {
    let fx = match Fixture::new(base, bin_dir) {
        Ok(f) => f,
        Err(e) => return r.check("audit_stream_fixture", Err(e)),
    };
    let mut server = match ServerProc::start(bin_dir, &fx.sdir) {
        Ok(s) => s,
        Err(e) => return r.check("audit_stream_server_starts", Err(e)),
    };
    let before = r.failed;
    let name = "collector_down_under_load_then_back_holds_every_record_once";
    let res = collector_down_under_load(&fx, &mut server, bin_dir, me);
    report(r, name, res);
    let name = "airlockd_killed_mid_batch_restarts_and_the_collector_holds_every_record_once";
    let res = airlockd_killed_mid_batch(&fx, &server, bin_dir, me);
    report(r, name, res);
    if r.failed > before {
        println!(
            "--- airlock-server (audit stream) log ---\n{}",
            server.log_text()
        );
    }
}
