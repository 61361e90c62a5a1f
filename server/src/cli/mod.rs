//! The `airlock-server` command line, one file per subcommand. Every subcommand takes the
//! server's directory (`--dir`): CA, certificates, `server.yaml` and, by default, the SQLite
//! database live there.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub mod audit;
pub mod collector;
pub mod config;
pub mod hosts;
pub mod init;
pub mod serve;
pub mod tokens;

/// airlock's approval server: brokers held agent actions of a fleet of hosts to approvers.
#[derive(Parser, Debug)]
#[command(name = "airlock-server", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a CA, the server's certificate and a commented config file in DIR.
    Init(init::InitArgs),
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Run the audit collector alone (hosts ship to it with `airlockd --collector`).
    Collector(collector::CollectorArgs),
    /// Enrol, list and revoke hosts.
    Hosts(hosts::HostsArgs),
    /// Issue, list and revoke approvers' API tokens.
    Tokens(tokens::TokensArgs),
    /// Config tools.
    Config(config::ConfigArgs),
    /// Audit store tools (verify the collector's store).
    Audit(audit::AuditArgs),
}

/// Where the server's files are, shared by every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct DirArgs {
    /// The server's directory (CA, certificates, server.yaml, SQLite database).
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_SERVER_DIR",
        default_value = "/var/lib/airlock-server"
    )]
    pub dir: PathBuf,
    /// Database URL (postgres://… for replicas) [default: from server.yaml, else
    /// sqlite://DIR/airlock.db].
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_DATABASE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
}

/// The config file in a server directory.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("server.yaml")
}

impl DirArgs {
    /// The database URL: flag, else the config file's, else the SQLite file in the directory.
    pub fn database_url(&self, cfg: Option<&crate::config::ServerConfig>) -> String {
        self.database
            .clone()
            .filter(|d| !d.is_empty())
            .or_else(|| cfg.and_then(|c| c.database.clone()))
            .unwrap_or_else(|| crate::store::Store::sqlite_url(&self.dir.join("airlock.db")))
    }

    /// Loads the config and opens the database.
    pub async fn open(&self) -> anyhow::Result<(crate::config::ServerConfig, crate::store::Store)> {
        use anyhow::Context as _;
        let path = config_path(&self.dir);
        let cfg = crate::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let url = self.database_url(Some(&cfg));
        let store = crate::store::Store::open(&url)
            .await
            .with_context(|| format!("opening the database {}", redact(&url)))?;
        Ok((cfg, store))
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Parses durations like `15m`, `1h30m`, `90d` (numbers each followed by s, m, h or d).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let help = "use a number and a unit (s, m, h, d), e.g. 15m, 12h or 90d";
    if s.is_empty() {
        return Err(format!("empty duration; {help}"));
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}; {help}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{:?} is too large", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let Some((_, secs)) = UNITS.iter().find(|(u, _)| *u == &rest[..unit_len]) else {
            return Err(format!("unknown unit {:?}; {help}", &rest[..unit_len]));
        };
        total = n
            .checked_mul(*secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = &rest[unit_len..];
    }
    if total == 0 {
        return Err("must be longer than zero".into());
    }
    Ok(Duration::from_secs(total))
}

/// Logs to stderr as `AIRLOCK_LOG` (filter) and `AIRLOCK_LOG_FORMAT` (`text` or `json`) say;
/// text is plain, without timestamps, under journald. The same setup as airlockd's and
/// airlock's: see `airlock_cli_support::logging`.
pub fn init_logging() {
    airlock_cli_support::logging::init();
}

/// Runs `f` on a multi-threaded runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Parses the command line and runs it. Exit codes: 0 ok, 1 the command's own failure (e.g.
/// a config with errors), 2 usage or setup errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let res = match cli.cmd {
        Command::Init(a) => init::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Collector(a) => collector::run(a),
        Command::Hosts(a) => hosts::run(a),
        Command::Tokens(a) => tokens::run(a),
        Command::Config(a) => config::run(a),
        Command::Audit(a) => audit::run(a),
    };
    match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock-server: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(parse_duration("10").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(
            parse_duration("x")
                .unwrap_err()
                .contains("expected a number")
        );
    }

    #[test]
    fn database_passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
    }
}
