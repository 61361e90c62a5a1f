//! airlockd's config file, `/etc/airlock/airlockd.yaml` by default (`--config`): the same
//! settings as the flags, for an SRE who edits one file. A flag or its environment variable
//! wins over the file, the file over the built-in default. Errors name the file, line and
//! column, as policy errors do; `airlockd config check FILE` reports them without starting.
//!
//! ```yaml
//! policy: [/etc/airlock/policies]     # files or directories
//! backend: auto                       # auto | lsm | fanotify
//! state_dir: /run/airlock
//! pin_dir: /sys/fs/bpf/airlock
//! socket_group: airlock               # may use the approvals socket (mode 0660)
//! server: https://approvals.example.com:7443
//! collector: https://audit.example.com:7444
//! identity_dir: /var/lib/airlock/identity
//! break_glass: true                   # local decisions while linked, recorded as such
//! audit_dir: /var/lib/airlock/audit   # spool kept until the collector acknowledges it
//! audit_spool_max: 268435456          # bytes
//! metrics_listen: 127.0.0.1:9464
//! ```
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::daemon::BackendChoice;

/// Where airlockd looks when `--config` is not given (a missing file there is no error).
pub const DEFAULT_PATH: &str = "/etc/airlock/airlockd.yaml";

/// Errors reading the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file:line:column: what`, as the file's editor would point at it.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The file's settings; every key is optional.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Policy files or directories (one path or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub policy: Option<Vec<PathBuf>>,
    pub backend: Option<Backend>,
    pub state_dir: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub server: Option<LinkUrl>,
    pub collector: Option<LinkUrl>,
    pub identity_dir: Option<PathBuf>,
    pub break_glass: Option<bool>,
    pub audit_dir: Option<PathBuf>,
    pub audit_spool_max: Option<u64>,
    pub metrics_listen: Option<SocketAddr>,
}

/// `backend:` (serde's names for [`BackendChoice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Auto,
    Lsm,
    Fanotify,
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> BackendChoice {
        match b {
            Backend::Auto => BackendChoice::Auto,
            Backend::Lsm => BackendChoice::Lsm,
            Backend::Fanotify => BackendChoice::Fanotify,
        }
    }
}

/// An `https://HOST:PORT` address of airlock-server or its collector (the link is always
/// TLS); checked where it is read, so a typo points at its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkUrl(pub String);

// Checked inside the visitor, while the parser still knows where the value is: an error
// raised after `String::deserialize` returned would lose its line and column.
impl<'de> Deserialize<'de> for LinkUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LinkUrl, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LinkUrl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("https://HOST:PORT")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LinkUrl, E> {
                let rest = s.strip_prefix("https://").ok_or_else(|| {
                    E::custom(format!(
                        "{s:?} must start with https:// (the link is always TLS)"
                    ))
                })?;
                if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
                    return Err(E::custom(format!("{s:?}: expected https://HOST:PORT")));
                }
                Ok(LinkUrl(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// One path or a list of paths (a visitor, for the same reason as [`LinkUrl`]).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<PathBuf>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a path or a list of paths")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<PathBuf>, E> {
            Ok(vec![PathBuf::from(s)])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Vec<PathBuf>, A::Error> {
            let mut v = Vec::new();
            while let Some(p) = a.next_element::<PathBuf>()? {
                v.push(p);
            }
            Ok(v)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// Parses `text` (read from `path`, which errors name).
pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    // A file of comments only (the packaged default) configures nothing.
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---");
    if blank {
        return Ok(FileConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: without_location(&e.to_string()),
        }
    })
}

/// serde_yaml_ng's message without its own " at line L column C" (the error names the place
/// once, in front).
fn without_location(m: &str) -> String {
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// Reads `path`. `required: false` (the default path, no `--config`): a missing file is an
/// empty config.
pub fn load(path: &Path, required: bool) -> Result<FileConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t, path),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(FileConfig::default())
        }
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<FileConfig, ConfigError> {
        parse(text, Path::new("/etc/airlock/airlockd.yaml"))
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn every_setting_reads_and_a_comment_only_file_is_empty() {
        let c = p(
            "policy: /etc/airlock/policies\nbackend: fanotify\nstate_dir: /run/a\n\
                   pin_dir: /sys/fs/bpf/a\nsocket: /run/a/s\nsocket_group: airlock\n\
                   server: https://s.example:7443\ncollector: https://c.example:7444\n\
                   identity_dir: /var/lib/a\nbreak_glass: false\naudit_spool_max: 1048576\n\
                   metrics_listen: 127.0.0.1:9464\n",
        )
        .unwrap();
        assert_eq!(c.policy, Some(vec![PathBuf::from("/etc/airlock/policies")]));
        assert_eq!(c.backend, Some(Backend::Fanotify));
        assert_eq!(c.server, Some(LinkUrl("https://s.example:7443".into())));
        assert_eq!(c.break_glass, Some(false));
        assert_eq!(c.audit_spool_max, Some(1 << 20));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let many = p("policy: [/a, /b]\n").unwrap();
        assert_eq!(
            many.policy,
            Some(vec![PathBuf::from("/a"), PathBuf::from("/b")])
        );
        assert_eq!(p("# nothing set\n\n").unwrap(), FileConfig::default());
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        assert_eq!(
            err("backend: auto\nsevrer: https://x:1\n"),
            "/etc/airlock/airlockd.yaml:2:1: unknown field `sevrer`, expected one of \
             `policy`, `backend`, `state_dir`, `pin_dir`, `socket`, `socket_group`, `server`, \
             `collector`, `identity_dir`, `break_glass`, `audit_dir`, `audit_spool_max`, \
             `metrics_listen`"
        );
        let e = err("server: http://s.example:7443\n");
        assert!(e.starts_with("/etc/airlock/airlockd.yaml:1:9: "), "{e}");
        assert!(e.contains("must start with https://"), "{e}");
        let e = err("backend: ebpf\n");
        assert!(
            e.starts_with("/etc/airlock/airlockd.yaml:1:10: backend: unknown variant `ebpf`"),
            "{e}"
        );
        let e = err("policy: 3\n");
        assert!(
            e.starts_with("/etc/airlock/airlockd.yaml:1:9: policy: "),
            "{e}"
        );
        let e = err("metrics_listen: localhost\n");
        assert!(e.starts_with("/etc/airlock/airlockd.yaml:1:17: "), "{e}");
        let e = err("audit_spool_max: -1\n");
        assert!(e.starts_with("/etc/airlock/airlockd.yaml:1:18: "), "{e}");
        let e = err("break_glass: [\n");
        assert!(e.starts_with("/etc/airlock/airlockd.yaml:"), "{e}");
    }

    #[test]
    fn the_packaged_file_parses_and_its_keys_uncommented_too() {
        let text = include_str!("../../packaging/airlockd.yaml");
        assert_eq!(p(text).unwrap(), FileConfig::default());
        // Every example line, uncommented, is a valid setting.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(": ") && !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = p(&uncommented).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.audit_spool_max, Some(268435456));
    }

    #[test]
    fn a_missing_default_file_is_empty_but_a_named_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("airlockd.yaml");
        assert_eq!(load(&missing, false).unwrap(), FileConfig::default());
        let e = load(&missing, true).unwrap_err().to_string();
        assert!(e.contains("airlockd.yaml"), "{e}");
    }
}
