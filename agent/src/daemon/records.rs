//! The one writer of airlockd's record stream (`<state>/events.jsonl`): every kernel event that
//! matched a rule, every request opening and closing, and the host link's state changes go
//! through [`Records::write`], as typed [`Record`]s, in the order the daemon saw them.
//!
//! Request updates reach this module through the hold table's unbounded journal, never through
//! the lossy broadcast that watchers use, so no request line can be skipped; the daemon's main
//! loop is the only caller. The tamper-evident audit chain will wrap exactly this stream.
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::event::GateEvent;
use crate::hold::Request;

/// One kernel event with what userspace knows about it.
#[derive(Serialize)]
pub struct EventRecord<'a> {
    #[serde(flatten)]
    pub event: &'a GateEvent,
    pub rule: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub agent_cgroup: Option<&'a str>,
    /// What the process executed last (file name passed to execve), from the exec tracepoint.
    pub exe: Option<&'a str>,
    /// The protected tree or gated binary path of the rule that matched.
    pub rule_target: Option<String>,
    /// Held events: the approval request this attempt belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<&'a str>,
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestChange {
    Opened,
    Closed,
}

/// The host link to airlock-server changed state, or refused something the server sent.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LinkChange {
    /// The stream is up (after enrolment or a reconnect).
    Up { server: String, resent: usize },
    /// The stream broke or could not be opened; the daemon retries with backoff.
    Down {
        server: String,
        error: String,
        retry_in_ms: u64,
    },
    /// The server sent a decision this host does not apply.
    DecisionRefused { id: String, why: String },
    /// The server refused a message this host sent.
    Rejected {
        id: String,
        code: i32,
        message: String,
    },
}

/// One line of the record stream.
pub enum Record<'a> {
    /// A kernel event (the line is the event's fields; no `record` tag, as before).
    Event(EventRecord<'a>),
    /// A request opened or closed (`"record":"request"`).
    Request {
        change: RequestChange,
        request: &'a Request,
    },
    /// The server link (`"record":"link"`).
    Link {
        at_unix_ms: u64,
        change: &'a LinkChange,
    },
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    record: &'static str,
    #[serde(flatten)]
    body: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<RequestChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_unix_ms: Option<u64>,
    #[serde(skip)]
    _p: std::marker::PhantomData<&'a ()>,
}

impl Record<'_> {
    fn to_line(&self) -> Result<String, serde_json::Error> {
        match self {
            Record::Event(e) => serde_json::to_string(e),
            Record::Request { change, request } => serde_json::to_string(&Tagged {
                record: "request",
                body: request,
                change: Some(*change),
                at_unix_ms: None,
                _p: Default::default(),
            }),
            Record::Link { at_unix_ms, change } => serde_json::to_string(&Tagged {
                record: "link",
                body: change,
                change: None,
                at_unix_ms: Some(*at_unix_ms),
                _p: Default::default(),
            }),
        }
    }
}

/// Errors opening the record stream.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct RecordsError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The record stream's only writer.
pub struct Records {
    path: PathBuf,
    file: std::fs::File,
    /// Lines that could not be written (disk full, I/O error); reported in the status.
    pub failed: u64,
    /// The tamper-evident copy of every record (see `audit.rs`), once opened.
    pub audit: Option<super::audit::AuditLog>,
}

impl Records {
    /// Opens (appends to) the stream at `path`.
    pub fn open(path: &Path) -> Result<Records, RecordsError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| RecordsError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Records {
            path: path.to_path_buf(),
            file,
            failed: 0,
            audit: None,
        })
    }

    /// Appends one record as one line (one `write` call, so a reader never sees half a line
    /// from a completed write), and to the audit spool. Returns false when the record must be
    /// in the audit stream (an approve rule's request) and could not be written there: the
    /// caller fails closed.
    #[must_use = "a request whose audit record failed must be denied"]
    pub fn write(&mut self, r: &Record<'_>) -> bool {
        let audited = match self.audit.as_mut() {
            Some(a) => a.write(r).is_ok(),
            None => true,
        };
        self.write_line(r);
        audited
    }

    fn write_line(&mut self, r: &Record<'_>) {
        let mut line = match r.to_line() {
            Ok(l) => l,
            Err(e) => {
                self.failed += 1;
                tracing::error!(error = %e, "cannot encode a record");
                return;
            }
        };
        line.push('\n');
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            self.failed += 1;
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the record stream");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_and_request_records_are_tagged_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut r = Records::open(&path).unwrap();
        let ch = LinkChange::Down {
            server: "https://s:7443".into(),
            error: "refused".into(),
            retry_in_ms: 500,
        };
        assert!(r.write(&Record::Link {
            at_unix_ms: 5,
            change: &ch,
        }));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["record"], "link");
        assert_eq!(v["change"], "down");
        assert_eq!(v["retry_in_ms"], 500);
        assert_eq!(v["at_unix_ms"], 5);
    }
}
