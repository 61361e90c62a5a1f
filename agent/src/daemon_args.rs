//! airlockd's command line, in the library so that the binary stays a thin wrapper and the man
//! page and completion generator ([`crate::docs`]) can render it.
use std::path::PathBuf;

use crate::config::FileConfig;
use crate::daemon::{BackendChoice, DaemonConfig};
use crate::link::client::LinkConfig;

/// Gates privileged actions of AI agents at the kernel.
///
/// Settings come from the flags, then their environment variables, then the config file
/// (`--config`, /etc/airlock/airlockd.yaml by default), then the defaults shown.
// No `name`: clap then takes the package's (`airlock-agent`), which `airlockd --version` has
// always printed; the docs generator names the command `airlockd` itself.
#[derive(clap::Parser, Debug)]
#[command(version)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub cmd: Option<DaemonCmd>,
    /// Config file [default: /etc/airlock/airlockd.yaml, if it exists].
    #[arg(long, env = "AIRLOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Policy file or directory (repeatable) [default: /etc/airlock/policies].
    #[arg(
        long = "policy",
        short = 'p',
        env = "AIRLOCK_POLICY",
        value_delimiter = ':'
    )]
    pub policy: Vec<PathBuf>,
    /// Backend: auto picks BPF LSM when the kernel allows it, else fanotify [default: auto].
    #[arg(long, value_enum, env = "AIRLOCK_BACKEND")]
    pub backend: Option<BackendChoice>,
    /// Runtime state (status file, event log, pending requests, approvals socket)
    /// [default: /run/airlock].
    #[arg(long, env = "AIRLOCK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory for pinned programs and maps (they keep gating while airlockd is down)
    /// [default: /sys/fs/bpf/airlock].
    #[arg(long, env = "AIRLOCK_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Approvals socket [default: STATE_DIR/airlock.sock].
    #[arg(long, env = "AIRLOCK_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Group allowed to use the approvals socket (mode 0660); default (or empty): root only.
    #[arg(long, env = "AIRLOCK_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// airlock-server to take decisions from (https://HOST:PORT); the host must be enrolled
    /// first (`airlock enroll`). Without it, decisions are made on this host's socket only.
    #[arg(long, env = "AIRLOCK_SERVER")]
    pub server: Option<String>,
    /// A separate audit collector (`airlock-server collector`, https://HOST:PORT) to ship
    /// the audit spool to, instead of over the --server link; the same enrolled identity.
    #[arg(long, env = "AIRLOCK_COLLECTOR")]
    pub collector: Option<String>,
    /// The host identity made by `airlock enroll` [default: /var/lib/airlock/identity].
    #[arg(long, env = "AIRLOCK_IDENTITY_DIR")]
    pub identity_dir: Option<PathBuf>,
    /// With --server: allow decisions on the local socket as break-glass (recorded as such and
    /// reported to the server). `--break-glass=false` refuses them [default: true].
    #[arg(long, env = "AIRLOCK_BREAK_GLASS", action = clap::ArgAction::Set)]
    pub break_glass: Option<bool>,
    /// The audit spool (one directory per host name) and, on a host not enrolled, its audit
    /// key [default: /var/lib/airlock/audit; STATE_DIR/audit when --state-dir is not the
    /// default].
    #[arg(long, env = "AIRLOCK_AUDIT_DIR", value_name = "DIR")]
    pub audit_dir: Option<PathBuf>,
    /// Most bytes the audit spool keeps before the collector acknowledges
    /// them. When full, an approve rule's request is denied (its record cannot be written)
    /// and other records are dropped and counted [default: 268435456].
    #[arg(long, env = "AIRLOCK_AUDIT_SPOOL_MAX", value_name = "BYTES")]
    pub audit_spool_max: Option<u64>,
    /// Serve Prometheus metrics on this address (IP:PORT; `GET /metrics`, plain HTTP: keep
    /// it on loopback or a private network). Default: no metrics listener.
    #[arg(long, env = "AIRLOCK_METRICS_LISTEN", value_name = "ADDR", value_parser = crate::metrics::listen_arg)]
    pub metrics_listen: Option<String>,
}

/// airlockd's subcommands (without one, it runs the daemon).
#[derive(clap::Subcommand, Debug)]
pub enum DaemonCmd {
    /// Config file tools.
    #[command(subcommand)]
    Config(ConfigCmd),
}

/// `airlockd config`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCmd {
    /// Check a config file: every error as file:line:column, exit 1 if any.
    Check {
        /// The file (e.g. /etc/airlock/airlockd.yaml).
        file: PathBuf,
    },
}

/// Defaults of the settings neither a flag, its variable nor the file sets.
const STATE_DIR: &str = crate::paths::DEFAULT_STATE_DIR;
const PIN_DIR: &str = "/sys/fs/bpf/airlock";
const POLICY: &str = "/etc/airlock/policies";
const IDENTITY_DIR: &str = "/var/lib/airlock/identity";
const AUDIT_SPOOL_MAX: u64 = 256 << 20;

impl DaemonArgs {
    /// The config file to read and whether it must exist (named by `--config` or its
    /// variable) or may be absent (the default path).
    pub fn config_file(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(crate::config::DEFAULT_PATH), false),
        }
    }

    /// The daemon's configuration: each setting from the flag (or its variable), else from
    /// `file`, else the default. The socket defaults to STATE_DIR's, and an empty group,
    /// server or collector (an unset `Environment=` line) counts as none.
    pub fn into_config(self, file: FileConfig) -> DaemonConfig {
        let state_dir = self
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(STATE_DIR));
        let socket = self
            .socket
            .or(file.socket)
            .unwrap_or_else(|| crate::paths::socket(&state_dir));
        let identity_dir = self
            .identity_dir
            .or(file.identity_dir)
            .unwrap_or_else(|| PathBuf::from(IDENTITY_DIR));
        let link = |server: String| LinkConfig {
            server,
            identity_dir: identity_dir.clone(),
        };
        let policy = if self.policy.is_empty() {
            file.policy.unwrap_or_else(|| vec![PathBuf::from(POLICY)])
        } else {
            self.policy
        };
        DaemonConfig {
            policy_paths: policy,
            backend: self
                .backend
                .or(file.backend.map(BackendChoice::from))
                .unwrap_or(BackendChoice::Auto),
            socket,
            socket_group: self
                .socket_group
                .or(file.socket_group)
                .filter(|g| !g.is_empty()),
            link: self
                .server
                .or(file.server.map(|u| u.0))
                .filter(|s| !s.is_empty())
                .map(link),
            collector: self
                .collector
                .or(file.collector.map(|u| u.0))
                .filter(|s| !s.is_empty())
                .map(link),
            break_glass: self.break_glass.or(file.break_glass).unwrap_or(true),
            audit_dir: self
                .audit_dir
                .or(file.audit_dir)
                .unwrap_or_else(|| crate::paths::audit_dir(&state_dir)),
            audit_spool_max: self
                .audit_spool_max
                .or(file.audit_spool_max)
                .unwrap_or(AUDIT_SPOOL_MAX),
            metrics_listen: self
                .metrics_listen
                .and_then(|a| a.parse().ok())
                .or(file.metrics_listen),
            pin_dir: self
                .pin_dir
                .or(file.pin_dir)
                .unwrap_or_else(|| PathBuf::from(PIN_DIR)),
            state_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn daemon_args_default_the_socket_to_the_state_dir_and_ignore_empty_values() {
        let cfg = DaemonArgs::try_parse_from([
            "airlockd",
            "--state-dir",
            "/tmp/st",
            "--server",
            "",
            "--collector",
            "https://c:1",
            "--socket-group",
            "",
            "--identity-dir",
            "/tmp/id",
        ])
        .unwrap()
        .into_config(FileConfig::default());
        assert_eq!(
            cfg.socket,
            crate::paths::socket(std::path::Path::new("/tmp/st"))
        );
        assert!(cfg.link.is_none());
        assert!(cfg.socket_group.is_none());
        let c = cfg.collector.expect("collector");
        assert_eq!(c.server, "https://c:1");
        assert_eq!(c.identity_dir, PathBuf::from("/tmp/id"));
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let file = crate::config::parse(
            "state_dir: /from/file\nbackend: fanotify\nserver: https://file:1\n\
             break_glass: false\naudit_spool_max: 4096\npolicy: [/p/file]\n",
            std::path::Path::new("airlockd.yaml"),
        )
        .unwrap();
        let cfg = DaemonArgs::try_parse_from(["airlockd", "--state-dir", "/from/flag"])
            .unwrap()
            .into_config(file);
        assert_eq!(cfg.state_dir, PathBuf::from("/from/flag"));
        assert_eq!(
            cfg.socket,
            crate::paths::socket(std::path::Path::new("/from/flag"))
        );
        assert_eq!(cfg.backend, BackendChoice::Fanotify);
        assert_eq!(
            cfg.link.map(|l| l.server).as_deref(),
            Some("https://file:1")
        );
        assert!(!cfg.break_glass);
        assert_eq!(cfg.audit_spool_max, 4096);
        assert_eq!(cfg.policy_paths, [PathBuf::from("/p/file")]);
        let d = DaemonArgs::try_parse_from(["airlockd"])
            .unwrap()
            .into_config(FileConfig::default());
        assert_eq!(d.state_dir, PathBuf::from(STATE_DIR));
        assert_eq!(d.pin_dir, PathBuf::from(PIN_DIR));
        assert_eq!(d.policy_paths, [PathBuf::from(POLICY)]);
        assert!(d.break_glass);
        assert_eq!(d.audit_spool_max, AUDIT_SPOOL_MAX);
        assert_eq!(d.backend, BackendChoice::Auto);
    }

    /// Unacknowledged audit records must outlive a reboot: by default the spool is on disk,
    /// not in the tmpfs state directory; a daemon given its own state directory keeps it there.
    #[test]
    fn the_audit_spool_defaults_to_var_lib_not_the_tmpfs_state_dir() {
        let parse = |args: &[&str], file: &str| {
            let file = crate::config::parse(file, std::path::Path::new("airlockd.yaml")).unwrap();
            DaemonArgs::try_parse_from(args)
                .unwrap()
                .into_config(file)
                .audit_dir
        };
        assert_eq!(
            parse(&["airlockd"], ""),
            PathBuf::from("/var/lib/airlock/audit")
        );
        assert_eq!(
            parse(&["airlockd", "--state-dir", "/tmp/st"], ""),
            PathBuf::from("/tmp/st/audit")
        );
        assert_eq!(
            parse(&["airlockd"], "state_dir: /tmp/f\n"),
            PathBuf::from("/tmp/f/audit")
        );
        assert_eq!(
            parse(&["airlockd"], "audit_dir: /data/audit\n"),
            PathBuf::from("/data/audit")
        );
        assert_eq!(
            parse(
                &["airlockd", "--audit-dir", "/x"],
                "audit_dir: /data/audit\n"
            ),
            PathBuf::from("/x")
        );
    }
}
