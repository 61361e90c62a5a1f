//! A throwaway PostgreSQL cluster for tests and benchmarks, as an RAII guard: `initdb` into a
//! temporary directory, `pg_ctl start` on a free loopback port (socket in the same directory),
//! and on drop (also while a failed test unwinds) `pg_ctl -m fast -w stop` and the directory
//! removed.
//!
//! PostgreSQL refuses to run as root, so as root every server binary runs as `postgres`
//! through `runuser` (which needs no tty) in a directory chowned to it.
//!
//! Not installed (no `/usr/lib/postgresql/*/bin/initdb`): with `CI=true` [`PgCluster::start`]
//! panics, otherwise it prints a loud SKIP line and returns `None`.
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::TempDir;

/// Where Debian puts each major version's binaries (not on PATH).
const PG_ROOT: &str = "/usr/lib/postgresql";
/// Ports to try: the free-port probe releases its port before postgres binds it.
const START_ATTEMPTS: usize = 5;

/// A running cluster; dropping it stops the server and deletes everything.
pub struct PgCluster {
    bin: PathBuf,
    /// Running as root: run the server binaries as `postgres`.
    as_postgres: bool,
    data: PathBuf,
    port: u16,
    started: bool,
    next_db: AtomicU32,
    /// Declared last: removed after `drop` stopped the server.
    dir: TempDir,
}

/// Whether PostgreSQL's server binaries are installed (see [`PgCluster::start`]).
pub fn installed() -> bool {
    find_bin().is_some()
}

impl PgCluster {
    /// Starts a new cluster. `None` (after a SKIP line) when PostgreSQL is not installed and
    /// `CI` is not `true`. Panics, with the server's log, when it is installed but will not
    /// start.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb) and CI=true: the PostgreSQL \
                     cases cannot run. Install it: apt-get install -y --no-install-recommends postgresql-15"
                );
            }
            eprintln!(
                "\n************************************************************\n\
                 SKIP: PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb);\n\
                 the PostgreSQL cases did NOT run. CI=true makes this a failure.\n\
                 ************************************************************\n"
            );
            return None;
        };
        let t0 = std::time::Instant::now();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = TempDir::new("airlock-pg").expect("temporary directory for PostgreSQL");
        let mut c = PgCluster {
            bin,
            as_postgres,
            data: dir.path().join("data"),
            port: 0,
            started: false,
            next_db: AtomicU32::new(0),
            dir,
        };
        if as_postgres {
            check(
                &run(Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(c.dir.path())),
                "chown postgres",
            );
        }
        let out = c
            .server_cmd("initdb")
            .arg("-D")
            .arg(&c.data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            .output();
        check(&out.expect("running initdb"), "initdb");
        for attempt in 1..=START_ATTEMPTS {
            c.port = free_port();
            let log = c.dir.path().join("server.log");
            let opts = format!(
                "-k {} -p {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                c.dir.path().display(),
                c.port
            );
            // pg_ctl's own output goes to a file, not a pipe: the postmaster it forks must not
            // hold a pipe of ours open.
            let err = File::create(c.dir.path().join("pg_ctl.out")).expect("pg_ctl output file");
            let status = c
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(&c.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .stdout(err.try_clone().expect("dup"))
                .stderr(err)
                .status()
                .expect("running pg_ctl start");
            if status.success() {
                c.started = true;
                eprintln!(
                    "PostgreSQL ({}) started on 127.0.0.1:{} in {:?}",
                    c.bin.display(),
                    c.port,
                    t0.elapsed()
                );
                return Some(c);
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let taken =
                log_text.contains("could not bind") || log_text.contains("Address already in use");
            if !taken || attempt == START_ATTEMPTS {
                let ctl =
                    std::fs::read_to_string(c.dir.path().join("pg_ctl.out")).unwrap_or_default();
                panic!(
                    "pg_ctl start failed ({status}) on port {}:\n{ctl}\n--- server.log ---\n{log_text}",
                    c.port
                );
            }
            eprintln!(
                "port {} was taken; retrying PostgreSQL on another port",
                c.port
            );
        }
        unreachable!("the loop returns or panics")
    }

    /// One cluster shared by the tests of this process that are running now: started by the
    /// first, stopped when the last one drops its handle (a test that panics drops it while
    /// unwinding). A static that owned the cluster would never be dropped, so it holds only a
    /// weak reference.
    pub fn shared() -> Option<Arc<PgCluster>> {
        static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut slot = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = slot.upgrade() {
            return Some(c);
        }
        let c = Arc::new(PgCluster::start()?);
        *slot = Arc::downgrade(&c);
        Some(c)
    }

    /// A new, empty database; returns its URL (`postgres://postgres@127.0.0.1:PORT/NAME`).
    pub fn create_database(&self) -> String {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.run_sql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// `CHECKPOINT`: afterwards the WAL segments written so far are reused rather than new
    /// ones created, as on a cluster that has been running (the audit benchmark's warm-up).
    pub fn checkpoint(&self) {
        self.run_sql("CHECKPOINT");
    }

    /// Runs one SQL command as `postgres` in database `postgres`; panics when it fails.
    fn run_sql(&self, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("running psql");
        check(&out, sql);
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the data directory, the socket and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server binary (`initdb`, `pg_ctl`), as `postgres` when we are root.
    fn server_cmd(&self, name: &str) -> Command {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        };
        // `postgres` may not be allowed into the test's working directory.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "pg_ctl stop failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("running pg_ctl stop: {e}"),
        }
        // `dir` (a TempDir) is removed after this, when the fields drop.
    }
}

/// The bin directory of the highest PostgreSQL version installed.
fn find_bin() -> Option<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in std::fs::read_dir(PG_ROOT).ok()?.flatten() {
        let Ok(version) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let bin = entry.path().join("bin");
        let complete = ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|b| bin.join(b).is_file());
        if complete && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    l.local_addr().expect("probe port address").port()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
