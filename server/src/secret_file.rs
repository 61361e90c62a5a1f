//! Credentials kept in files beside the config (the webhook's secret, Slack's tokens and
//! signing secret, the Teams Workflows URL, the OIDC client secret): read relative to the
//! server's directory at every use, so a rotated file takes effect without a reload. Errors
//! name the file, never its content.
use std::path::{Path, PathBuf};

/// Why a credential file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read (missing, unreadable, not UTF-8 text).
    #[error("{what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("{what} file {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
}

/// The text in `file` (relative to `dir`) without surrounding whitespace; `what` names the
/// credential in errors ("webhook secret").
pub fn read(dir: &Path, file: &Path, what: &'static str) -> Result<String, SecretFileError> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|source| SecretFileError::Read {
        what,
        path: path.clone(),
        source,
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretFileError::Empty { what, path });
    }
    Ok(text.to_string())
}
