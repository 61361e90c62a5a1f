//! The airlock-server config file, `server.yaml` in the server's directory: where to listen,
//! which database, the principals who may vote (with their groups and host user names) and
//! the routes that decide who votes on which requests.
//!
//! Read with the policy crate's located YAML tree, so that every problem is reported like a
//! policy's, `file:line:col: field: message`, all at once ([`load`], [`parse`]). The format
//! is documented by the file `init` writes ([`template`]).
mod audit;
mod model;
mod parse;
mod problem;
mod slack;
mod teams;
mod template;
mod values;
mod web;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_slack;

use std::io;
use std::path::{Path, PathBuf};

use airlock_policy::{Diagnostic, Diagnostics, LoadError, Location};

pub use model::{
    Audit, Channel, Escalation, Glob, HostUser, Match, OPERATIONS, Oidc, Principal, Route,
    ServerConfig, Slack, SlackMode, Teams, Web, Webhook,
};
pub use problem::ConfigProblem;
pub use template::{DEFAULT_LISTEN, TEMPLATE, template};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was read and has problems; displays one `file:line:col: message` per line.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let Ok(src) = String::from_utf8(bytes) else {
        let d = Diagnostic::new(Location::whole_file(path), "", LoadError::NotUtf8);
        return Err(ConfigError::Invalid(Diagnostics(vec![d])));
    };
    parse::config(&src, path).map_err(ConfigError::Invalid)
}

/// Checks config text as if read from `file_name` (used only in messages).
pub fn parse(source: &str, file_name: &str) -> Result<ServerConfig, ConfigError> {
    parse::config(source, Path::new(file_name)).map_err(ConfigError::Invalid)
}
