//! Remote approvals end to end: a real airlock-server (SQLite, TLS), a host enrolled to it, a
//! real airlockd linked to it, agents started with `airlock run`, and decisions made with
//! `airlock --server URL --token TOKEN`. Same cases on both tiers (fanotify on the host; the
//! guest tier runs the server inside the guest next to the BPF LSM backend).
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_agent::cgroup::{CgroupDir, cgroup2_mount};
use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Report, Spawned, ensure, stdout};

const WAIT: Duration = Duration::from_secs(15);
/// The host name the server knows this host by (not its real host name: the certificate
/// decides, whatever the host calls itself).
const HOST: &str = "e2e-host";

/// A running airlock-server; killed by PID (SIGKILL) and reaped on drop.
pub struct ServerProc {
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProc {
    /// Starts `airlock-server serve --dir DIR` (log in DIR/server.log).
    pub fn start(bin_dir: &Path, dir: &Path) -> anyhow::Result<ServerProc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))?;
        let child = Command::new(bin_dir.join("airlock-server"))
            .args(["serve", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("spawning airlock-server")?;
        Ok(ServerProc {
            child: Some(child),
            log: dir.join("server.log"),
        })
    }

    /// SIGKILL (by PID) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGHUP (config reload), by PID.
    fn hup(&self) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("server not running")?.id();
        // SAFETY: signalling our own child by PID.
        ensure(unsafe { libc::kill(pid as i32, libc::SIGHUP) } == 0, || {
            "kill -HUP failed".into()
        })
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Server directory, tokens, policy, binaries and cgroups of these scenarios.
pub struct Fixture {
    pub dir: PathBuf,
    pub sdir: PathBuf,
    pub url: String,
    pub held: PathBuf,
    pub pair: PathBuf,
    pub short: PathBuf,
    pub policy: PathBuf,
    pub outside_cg: PathBuf,
    pub tokens: std::collections::HashMap<&'static str, String>,
    /// The web page's side (OIDC provider, address), on the host tier only.
    pub web: Option<crate::web::WebSide>,
    pub _cg: CgroupDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `cmd`; its trimmed stdout, or an error with its stderr.
pub(crate) fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure(o.status.success(), || {
        format!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
    })?;
    Ok(stdout(&o))
}

/// `airlock-server init` in `sdir` on a free loopback port, then `server.yaml` = `listen:` +
/// `config`. Returns the URL and the listen address.
pub fn init_server(bin_dir: &Path, sdir: &Path, config: &str) -> anyhow::Result<(String, String)> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    run_ok(
        Command::new(bin_dir.join("airlock-server"))
            .args(["init", "--dir"])
            .arg(sdir)
            .args(["--listen", &listen]),
    )?;
    std::fs::write(
        sdir.join("server.yaml"),
        format!("listen: {listen}\n{config}"),
    )?;
    Ok((format!("https://{listen}"), listen))
}

/// `airlock-server tokens issue PRINCIPAL`.
pub fn issue_token(bin_dir: &Path, sdir: &Path, principal: &str) -> anyhow::Result<String> {
    run_ok(
        Command::new(bin_dir.join("airlock-server"))
            .args(["tokens", "issue", principal, "--dir"])
            .arg(sdir),
    )
}

/// `airlock-server hosts enroll HOST` then `airlock enroll` into `identity` (retried while the
/// server starts).
pub fn enroll(
    bin_dir: &Path,
    sdir: &Path,
    url: &str,
    host: &str,
    identity: &Path,
) -> anyhow::Result<()> {
    enroll_with(bin_dir, sdir, url, host, "env=e2e", identity).map(drop)
}

/// [`enroll`] with the host's `labels` (`k=v,…`); returns what `airlock enroll` printed.
pub fn enroll_with(
    bin_dir: &Path,
    sdir: &Path,
    url: &str,
    host: &str,
    labels: &str,
    identity: &Path,
) -> anyhow::Result<String> {
    let token = run_ok(
        Command::new(bin_dir.join("airlock-server"))
            .args(["hosts", "enroll", host, "--labels", labels, "--dir"])
            .arg(sdir),
    )?;
    let deadline = Instant::now() + WAIT;
    loop {
        match run_ok(
            Command::new(bin_dir.join("airlock"))
                .args([
                    "enroll",
                    "--server",
                    url,
                    "--token",
                    &token,
                    "--identity-dir",
                ])
                .arg(identity),
        ) {
            Ok(out) => return Ok(out),
            // The server may still be starting.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e),
        }
    }
}

impl Fixture {
    fn new(base: &Path, bin_dir: &Path, web: bool) -> anyhow::Result<Fixture> {
        let dir = base.join(format!("airlock-e2e-server-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["held", "pair", "short"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let me = std::env::current_exe()?;
        let copy = |name: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name).join(format!("airlock-e2e-{name}"));
            // Distinct content: the rules gate these by content too, and airlock-e2e itself
            // runs in the agent.
            crate::harness::copy_distinct(&me, &p, name)?;
            Ok(p)
        };
        let (held, pair, short) = (copy("held")?, copy("pair")?, copy("short")?);
        let top = format!("airlock-e2e-server-{}", std::process::id());
        let cg = CgroupDir::create(cgroup2_mount()?.join(&top)).context("server fixture cgroup")?;
        let outside_cg = cg.create_child("outside")?;
        let policy = dir.join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: e2e-server\nmode: enforce\n\
                 agents:\n  - name: e2esrv\n\
                 rules:\n  - name: held-tool\n    action: approve\n    exec: [\"{}\"]\n\
                 \x20 - name: pair-tool\n    action: approve\n    exec: [\"{}\"]\n\
                 \x20 - name: short-tool\n    action: approve\n    timeout: 3s\n    onTimeout: deny\n    exec: [\"{}\"]\n",
                held.display(),
                pair.display(),
                short.display()
            ),
        )?;
        let sdir = dir.join("server");
        std::fs::create_dir_all(&sdir)?;
        let web = if web {
            Some(crate::web::WebSide::start().context("the web page's OIDC provider")?)
        } else {
            None
        };
        let web_config = match &web {
            Some(w) => w.config(&sdir)?,
            None => String::new(),
        };
        let channels = if web.is_some() {
            "    channels: [cli, web]\n"
        } else {
            ""
        };
        // Approvers: alice and bob (sre), carol (dba: not an approver here), and the person
        // who launches the agents (root on this host) who is an sre too but may not approve
        // their own agent's requests.
        let (url, _) = init_server(
            bin_dir,
            &sdir,
            &format!(
                "principals:\n  alice:\n    groups: [sre]\n  bob:\n    groups: [sre]\n  carol:\n    groups: [dba]\n\
                 \x20 operator:\n    groups: [sre]\n    host_users: [root]\n\
                 routes:\n  - name: pair\n    match:\n      rules: [pair-tool]\n    approvers: [sre]\n    threshold: 2\n{channels}\
                 \x20 - name: default\n    approvers: [sre]\n{channels}{web_config}",
            ),
        )?;
        let mut tokens = std::collections::HashMap::new();
        for p in ["alice", "bob", "carol", "operator"] {
            tokens.insert(p, issue_token(bin_dir, &sdir, p)?);
        }
        Ok(Fixture {
            dir,
            sdir,
            url,
            held,
            pair,
            short,
            policy,
            outside_cg,
            tokens,
            web,
            _cg: cg,
        })
    }

    fn enroll(&self, bin_dir: &Path) -> anyhow::Result<PathBuf> {
        let id = self.dir.join("identity");
        enroll(bin_dir, &self.sdir, &self.url, HOST, &id)?;
        Ok(id)
    }
}

/// What every case gets.
pub struct Ctx<'a> {
    pub fx: &'a Fixture,
    pub daemon: &'a Daemon,
    pub server: std::cell::RefCell<ServerProc>,
    pub me: PathBuf,
    pub bin_dir: PathBuf,
    /// The host identity directory airlockd links with.
    pub identity: PathBuf,
    /// Requests [`Ctx::wait_pending_at_server`] returned already: a later case waits for its
    /// own. (The server lists a request as pending until the host reports its outcome, so an
    /// earlier case's decided request can still be listed when the next case starts.)
    pub seen: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl Ctx<'_> {
    /// `airlock --server URL --token T ARGS` as `who`.
    fn remote(&self, who: &str, args: &[&str]) -> anyhow::Result<Output> {
        let token = self.fx.tokens.get(who).context("no such principal")?;
        Ok(Command::new(self.bin_dir.join("airlock"))
            .args(args)
            .args(["--server", &self.fx.url, "--token", token, "--ca"])
            .arg(self.fx.sdir.join("ca.pem"))
            .output()?)
    }

    fn remote_ok(&self, who: &str, args: &[&str]) -> anyhow::Result<String> {
        let o = self.remote(who, args)?;
        ensure(o.status.success(), || {
            format!(
                "{who}: airlock {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        })?;
        Ok(stdout(&o))
    }

    /// Starts `airlock run --agent e2esrv -- airlock-e2e --op exec TOOL --op echo WORD`.
    pub(crate) fn spawn(&self, tool: &Path, word: &str) -> anyhow::Result<Spawned> {
        let t = tool.to_string_lossy().to_string();
        self.spawn_op(&["exec", &t, "--op", "echo", word])
    }

    /// Starts `airlock run --agent e2esrv -- airlock-e2e --op ARGS...`.
    fn spawn_op(&self, args: &[&str]) -> anyhow::Result<Spawned> {
        self.spawn_op_with(&[], args)
    }

    /// [`Ctx::spawn_op`] with more `airlock run` options (`run_opts`).
    fn spawn_op_with(&self, run_opts: &[&str], args: &[&str]) -> anyhow::Result<Spawned> {
        let airlock = self.bin_dir.join("airlock").to_string_lossy().to_string();
        let sd = self.daemon.state_dir.to_string_lossy().to_string();
        let me = self.me.to_string_lossy().to_string();
        let mut argv = vec![airlock.as_str(), "run"];
        argv.extend_from_slice(run_opts);
        argv.extend_from_slice(&[
            "--agent",
            "e2esrv",
            "--state-dir",
            &sd,
            "--reason",
            "e2e remote",
            "--",
            &me,
            "--op",
        ]);
        argv.extend_from_slice(args);
        Spawned::start(&self.fx.outside_cg, &argv)
    }

    /// A request of `rule` pending at the server that no earlier call returned (waits for it
    /// to arrive there).
    pub(crate) fn wait_pending_at_server(&self, rule: &str) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let o = self.remote("alice", &["pending", "--json"])?;
            let fresh = |r: &&serde_json::Value| {
                r["context"]["rule"] == rule
                    && r["id"]
                        .as_str()
                        .is_some_and(|id| !self.seen.borrow().contains(id))
            };
            if o.status.success()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout)
                && let Some(r) = v.as_array().and_then(|a| a.iter().find(fresh).cloned())
            {
                if let Some(id) = r["id"].as_str() {
                    self.seen.borrow_mut().insert(id.to_string());
                }
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!(
                    "no request of rule {rule} at the server after {WAIT:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host's own record of request `id`.
    fn local(&self, id: &str) -> Option<serde_json::Value> {
        let b = std::fs::read(
            self.daemon
                .state_dir
                .join("requests")
                .join(format!("{id}.json")),
        )
        .ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn link_up(&self, want: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.daemon.status().unwrap_or_default();
            if st["link"]["connected"].as_bool() == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("link connected != {want} after {WAIT:?}: {}", st["link"]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart_server(&self) -> anyhow::Result<()> {
        let s = ServerProc::start(&self.bin_dir, &self.fx.sdir)?;
        *self.server.borrow_mut() = s;
        self.link_up(true)
    }
}

pub(crate) fn said(o: &Output) -> String {
    format!("{} {}", stdout(o), String::from_utf8_lossy(&o.stderr))
}

/// The agent's stderr has airlock's line for the request opening and the one for its close
/// ending with `closed_tail` (the release was told before it happened: see `notice.rs`).
pub(crate) fn told(o: &Output, id: &str, closed_tail: &str) -> anyhow::Result<()> {
    let err = String::from_utf8_lossy(&o.stderr);
    let opened = format!("is held for approval by rule held-tool (request {id})");
    let closed = format!("airlock: request {id} ");
    ensure(
        err.lines()
            .any(|l| l.starts_with("airlock: exec ") && l.contains(&opened))
            && err
                .lines()
                .any(|l| l.starts_with(&closed) && l.ends_with(closed_tail)),
        || format!("the agent's stderr lacks airlock's lines for {id}: {err:?}"),
    )
}

pub(crate) type Case = fn(&Ctx) -> anyhow::Result<()>;

/// The remote-approval scenarios, in order.
pub const CASES: &[(&str, Case)] = &[
    ("agent_cannot_read_the_host_key", |c| {
        // Self-protection of secrets (LSM backend): not even a read open of host.key by an
        // agent process, by its name or by a hard link made to it; root outside agents reads it.
        let key = c.identity.join(airlock_agent::link::identity::HOST_KEY);
        let k = key.to_string_lossy().to_string();
        let lsm = c.daemon.status().is_some_and(|s| s["backend"] == "lsm");
        let link = c.fx.dir.join("key-link");
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&key, &link)?;
        let l = link.to_string_lossy().to_string();
        for p in [&k, &l] {
            let o = c.spawn_op(&["read", p])?.finish(WAIT)?;
            let want = if lsm { "errno=1" } else { "ok" };
            ensure(stdout(&o).ends_with(want), || {
                format!("agent read of {p}: {}", said(&o))
            })?;
        }
        let _ = std::fs::remove_file(&link);
        if lsm {
            let ev = c
                .daemon
                .wait_event(|e| e["op"] == "read_secret")
                .context("no read_secret event")?;
            ensure(ev["rule"] == "self-protection", || format!("event: {ev}"))?;
        }
        ensure(std::fs::read(&key).is_ok_and(|b| !b.is_empty()), || {
            "root outside agents cannot read host.key".to_string()
        })
    }),
    ("server_approved_exec_resumes_with_its_output", |c| {
        let child = c.spawn(&c.fx.held, "remote-ok")?;
        let r = c.wait_pending_at_server("held-tool")?;
        let id = r["id"].as_str().unwrap_or_default().to_string();
        ensure(r["context"]["host"] == HOST, || {
            format!("host is the certificate's: {}", r["context"]["host"])
        })?;
        ensure(r["holders"].as_array().is_none_or(|h| h.is_empty()), || {
            format!("holders reached the server: {r}")
        })?;
        ensure(id.len() == 26, || format!("fleet-unique id: {id}"))?;
        let listed = c.remote_ok("alice", &["pending", "--host", HOST])?;
        ensure(listed.contains(&id) && listed.contains(HOST), || {
            format!("pending table: {listed}")
        })?;
        c.remote_ok("alice", &["approve", &id])?;
        let o = child.finish(WAIT)?;
        ensure(
            stdout(&o).ends_with("remote-ok") && o.status.success(),
            || format!("approved: {}", said(&o)),
        )?;
        told(&o, &id, ": approved by alice via server")?;
        let l = c.local(&id).context("local record")?;
        ensure(
            l["decision"]["by"]["principal"] == "alice" && l["decision"]["by"]["via"] == "server",
            || format!("local record: {l}"),
        )
    }),
    ("server_denied_exec_fails_with_eperm", |c| {
        let child = c.spawn(&c.fx.held, "must-not-run")?;
        let id = c.wait_pending_at_server("held-tool")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        c.remote_ok("bob", &["deny", &id, "--reason", "not from here"])?;
        let o = child.finish(WAIT)?;
        ensure(stdout(&o).ends_with("errno=1"), || {
            format!("denied: {}", said(&o))
        })?;
        told(&o, &id, ": denied by bob via server: not from here")
    }),
    (
        "airlock_run_quiet_keeps_airlocks_lines_off_the_agents_stderr",
        |c| {
            let t = c.fx.held.to_string_lossy().to_string();
            let child =
                c.spawn_op_with(&["--quiet"], &["exec", &t, "--op", "echo", "must-not-run"])?;
            let id = c.wait_pending_at_server("held-tool")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            c.remote_ok("bob", &["deny", &id, "--reason", "quietly"])?;
            let o = child.finish(WAIT)?;
            let err = String::from_utf8_lossy(&o.stderr);
            ensure(
                stdout(&o).ends_with("errno=1") && !err.contains(&id) && !err.contains("held for"),
                || format!("a --quiet run was told: {}", said(&o)),
            )
        },
    ),
    ("two_of_two_route_needs_two_different_principals", |c| {
        let mut child = c.spawn(&c.fx.pair, "pair-ok")?;
        let id = c.wait_pending_at_server("pair-tool")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let first = c.remote_ok("alice", &["approve", &id])?;
        ensure(first.contains("1 of 2"), || format!("first vote: {first}"))?;
        std::thread::sleep(Duration::from_millis(500));
        ensure(child.running(), || {
            "released after one approval of two".into()
        })?;
        let again = c.remote("alice", &["approve", &id])?;
        ensure(
            !again.status.success() && said(&again).contains("already voted"),
            || format!("same principal twice: {}", said(&again)),
        )?;
        ensure(child.running(), || {
            "released after the same principal voted twice".into()
        })?;
        c.remote_ok("bob", &["approve", &id])?;
        let o = child.finish(WAIT)?;
        ensure(stdout(&o).ends_with("pair-ok"), || {
            format!("after two approvals: {}", said(&o))
        })
    }),
    (
        "the_agents_launcher_cannot_approve_and_a_wrong_group_token_is_refused",
        |c| {
            let mut child = c.spawn(&c.fx.held, "self-ok")?;
            let id = c.wait_pending_at_server("held-tool")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let own = c.remote("operator", &["approve", &id])?;
            ensure(
                !own.status.success() && said(&own).to_lowercase().contains("launch"),
                || format!("launcher's approval: {}", said(&own)),
            )?;
            let wrong = c.remote("carol", &["approve", &id])?;
            ensure(
                !wrong.status.success() && said(&wrong).contains("carol"),
                || format!("dba's approval: {}", said(&wrong)),
            )?;
            std::thread::sleep(Duration::from_millis(300));
            ensure(child.running(), || "released by a refused approval".into())?;
            c.remote_ok("alice", &["approve", &id])?;
            let o = child.finish(WAIT)?;
            ensure(stdout(&o).ends_with("self-ok"), || {
                format!("after alice: {}", said(&o))
            })
        },
    ),
    (
        "server_killed_mid_hold_then_restarted_delivers_the_decision",
        |c| {
            let child = c.spawn(&c.fx.held, "survived")?;
            let id = c.wait_pending_at_server("held-tool")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            c.server.borrow_mut().kill();
            c.link_up(false)?;
            c.restart_server()?;
            c.remote_ok("alice", &["approve", &id])?;
            let o = child.finish(WAIT)?;
            ensure(stdout(&o).ends_with("survived"), || {
                format!("after the restart: {}", said(&o))
            })
        },
    ),
    (
        "server_unreachable_past_the_deadline_applies_on_timeout_and_reports_it_later",
        |c| {
            c.server.borrow_mut().kill();
            c.link_up(false)?;
            let t0 = Instant::now();
            let child = c.spawn(&c.fx.short, "must-not-run")?;
            let o = child.finish(WAIT)?;
            ensure(
                stdout(&o).ends_with("errno=1") && t0.elapsed() >= Duration::from_secs(3),
                || format!("timed out: {} after {:?}", said(&o), t0.elapsed()),
            )?;
            c.restart_server()?;
            // The host re-sends the outcome it could not deliver.
            let deadline = Instant::now() + WAIT;
            loop {
                let o = c.remote("alice", &["pending", "--json"])?;
                let still = String::from_utf8_lossy(&o.stdout).contains("short-tool");
                if o.status.success() && !still {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("the server still lists the timed-out request as pending");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        },
    ),
    (
        "local_break_glass_works_while_the_server_is_down_and_is_recorded_as_such",
        |c| {
            c.server.borrow_mut().kill();
            c.link_up(false)?;
            let child = c.spawn(&c.fx.held, "glass")?;
            let deadline = Instant::now() + WAIT;
            let id = loop {
                let o = Command::new(c.bin_dir.join("airlock"))
                    .args(["pending", "--json", "--state-dir"])
                    .arg(&c.daemon.state_dir)
                    .output()?;
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                if let Some(id) = v
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|r| r["id"].as_str())
                {
                    break id.to_string();
                }
                if Instant::now() > deadline {
                    bail!("no local pending request");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let o = Command::new(c.bin_dir.join("airlock"))
                .args(["approve", &id, "--state-dir"])
                .arg(&c.daemon.state_dir)
                .output()?;
            ensure(o.status.success(), || {
                format!("break-glass approve: {}", said(&o))
            })?;
            let out = child.finish(WAIT)?;
            ensure(stdout(&out).ends_with("glass"), || {
                format!("after break-glass: {}", said(&out))
            })?;
            let l = c.local(&id).context("local record")?;
            ensure(l["decision"]["by"]["via"] == "cli-break-glass", || {
                format!("recorded as: {}", l["decision"]["by"])
            })?;
            c.restart_server()
        },
    ),
    (
        "config_reload_refuses_a_bad_config_and_applies_a_good_one_to_linked_hosts",
        |c| {
            let path = c.fx.sdir.join("server.yaml");
            let good = std::fs::read_to_string(&path)?;
            // A typo: refused on SIGHUP; the config in force (alice approves) stays.
            std::fs::write(&path, good.replace("approvers: [sre]", "aprovers: [sre]"))?;
            c.server.borrow().hup()?;
            std::thread::sleep(Duration::from_millis(500));
            let log = c.server.borrow().log_text();
            ensure(
                log.contains("config reload refused") && log.contains("aprovers"),
                || format!("server log:\n{log}"),
            )?;
            let child = c.spawn(&c.fx.held, "still-good")?;
            let id = c.wait_pending_at_server("held-tool")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            c.remote_ok("alice", &["approve", &id])?;
            ensure(stdout(&child.finish(WAIT)?).ends_with("still-good"), || {
                "approval under the kept config".into()
            })?;
            // A good change: break-glass forbidden by the server reaches the host.
            std::fs::write(&path, format!("break_glass: false\n{good}"))?;
            c.server.borrow().hup()?;
            let deadline = Instant::now() + WAIT;
            while c.daemon.status().unwrap_or_default()["link"]["local_decisions"] != "forbidden" {
                if Instant::now() > deadline {
                    bail!(
                        "the host did not apply break_glass: false: {}",
                        c.daemon.status().unwrap_or_default()["link"]
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let child = c.spawn(&c.fx.held, "must-not-run")?;
            let id = c.wait_pending_at_server("held-tool")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let o = Command::new(c.bin_dir.join("airlock"))
                .args(["approve", &id, "--state-dir"])
                .arg(&c.daemon.state_dir)
                .output()?;
            ensure(
                !o.status.success() && said(&o).contains("break-glass"),
                || format!("local approve with break-glass forbidden: {}", said(&o)),
            )?;
            c.remote_ok("alice", &["deny", &id, "--reason", "cleanup"])?;
            ensure(stdout(&child.finish(WAIT)?).ends_with("errno=1"), || {
                "denied".into()
            })?;
            std::fs::write(&path, good)?;
            c.server.borrow().hup()
        },
    ),
    ("a_revoked_host_is_cut_off_and_refused", |c| {
        run_ok(
            Command::new(c.bin_dir.join("airlock-server"))
                .args(["hosts", "revoke", HOST, "--dir"])
                .arg(&c.fx.sdir),
        )?;
        c.link_up(false)?;
        // It stays refused: the daemon's reconnects are turned away.
        std::thread::sleep(Duration::from_secs(2));
        c.link_up(false)?;
        let log = c.daemon.log_text();
        ensure(
            log.contains("revoked") || log.contains("PermissionDenied"),
            || format!("daemon log lacks the refusal:\n{log}"),
        )
    }),
];

/// Runs the remote-approval scenarios with their own server, daemon and cgroups.
/// `all: false` (the guest tier, where every second of TCG counts) runs only the first two.
pub fn run_all(r: &mut Report, bin_dir: &Path, me: &Path, base: &Path, all: bool) {
    let fx = match Fixture::new(base, bin_dir, all) {
        Ok(f) => f,
        Err(e) => return r.check("server_fixture", Err(e)),
    };
    let server = match ServerProc::start(bin_dir, &fx.sdir) {
        Ok(s) => s,
        Err(e) => return r.check("airlock_server_starts", Err(e)),
    };
    let id = match fx.enroll(bin_dir) {
        Ok(id) => id,
        Err(e) => {
            println!("--- airlock-server log ---\n{}", server.log_text());
            return r.check("host_enrolls_with_a_one_time_token", Err(e));
        }
    };
    r.check("host_enrolls_with_a_one_time_token", Ok(()));
    let idp = id.to_string_lossy().to_string();
    let state = fx.dir.join("state");
    let daemon = match Daemon::start_with(
        bin_dir,
        &fx.policy,
        &state,
        "auto",
        &["--server", &fx.url, "--identity-dir", &idp],
    ) {
        Ok(d) => d,
        Err(e) => return r.check("airlockd_starts_linked", Err(e)),
    };
    let ctx = Ctx {
        fx: &fx,
        daemon: &daemon,
        server: std::cell::RefCell::new(server),
        me: me.to_path_buf(),
        bin_dir: bin_dir.to_path_buf(),
        identity: id.clone(),
        seen: Default::default(),
    };
    r.check("airlockd_links_to_the_server", ctx.link_up(true));
    let before = r.failed;
    for (i, (name, f)) in CASES
        .iter()
        .take(if all { CASES.len() } else { 3 })
        .enumerate()
    {
        // The browser scenarios (host tier), while the server and the link are as set up:
        // later cases restart the server, reload its config and revoke the host.
        if all && i == 3 {
            for (name, f) in crate::web::CASES.iter().chain(crate::audit::CASES) {
                r.check(name, f(&ctx));
            }
        }
        // Before the host is revoked: after the server was killed, unreachable past a
        // deadline and restarted, the collector still holds every record once.
        if all && i + 1 == CASES.len() {
            r.check(
                "collector_holds_every_record_once_after_server_kills_and_outages",
                crate::audit::collector_holds_every_record(&ctx),
            );
        }
        r.check(name, f(&ctx));
    }
    if r.failed > before {
        println!("--- airlockd (server) log ---\n{}", daemon.log_text());
        println!(
            "--- airlock-server log ---\n{}",
            ctx.server.borrow().log_text()
        );
    }
}
