//! How `airlockd`, `airlock` and `airlock-server` log: one line per event on stderr, set up
//! from the environment only, so that systemd units configure it through `Environment=` or
//! `EnvironmentFile=` and the three programs behave alike.
//!
//! - [`FILTER_ENV`] (`AIRLOCK_LOG`): tracing's filter syntax (`info`, `airlock_server=debug,warn`);
//!   default `info`.
//! - [`FORMAT_ENV`] (`AIRLOCK_LOG_FORMAT`): `text` (default) or `json` (one JSON object per line,
//!   for log shippers).
//! - Text is journald-friendly: no colour unless stderr is a terminal, and no timestamp when
//!   `JOURNAL_STREAM` says stderr is the journal (it stamps every line itself). JSON lines always
//!   carry their timestamp: whatever reads them may not have the journal's.
//!
//! A bad value of either variable does not stop the program (a typo in an environment file
//! should not keep the daemon from gating): it falls back to the default and says so in the log.
use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The environment variable holding the log filter.
pub const FILTER_ENV: &str = "AIRLOCK_LOG";
/// The environment variable choosing the line format: `text` or `json`.
pub const FORMAT_ENV: &str = "AIRLOCK_LOG_FORMAT";
/// Set by systemd when stderr is connected to the journal.
pub const JOURNAL_ENV: &str = "JOURNAL_STREAM";
/// The filter used when [`FILTER_ENV`] is unset, empty or invalid.
pub const DEFAULT_FILTER: &str = "info";

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable text (`LEVEL target: message key=value`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level, plus the enclosing spans when there are any.
    Json,
}

/// A value of [`FORMAT_ENV`] that is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{FORMAT_ENV}={value:?} is neither `text` nor `json`")]
pub struct UnknownLogFormat {
    /// The value as given.
    pub value: String,
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    /// `text` or `json`, in any case, surrounding blanks ignored (environment files keep them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            v if v.eq_ignore_ascii_case("text") => Ok(Self::Text),
            v if v.eq_ignore_ascii_case("json") => Ok(Self::Json),
            _ => Err(UnknownLogFormat { value: s.into() }),
        }
    }
}

/// Everything [`subscriber`] needs besides the filter, decided once from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Text or JSON.
    pub format: LogFormat,
    /// Whether text lines start with a timestamp (JSON lines always have one).
    pub timestamps: bool,
    /// Whether text lines are coloured (JSON never is).
    pub ansi: bool,
}

impl Style {
    /// The style for this process: `format`, and for text, plain lines without timestamps under
    /// journald and colour only for a terminal.
    pub fn detect(format: LogFormat) -> Self {
        let journald = std::env::var_os(JOURNAL_ENV).is_some();
        Self {
            format,
            timestamps: !journald,
            ansi: !journald && std::io::stderr().is_terminal(),
        }
    }
}

/// Reads [`FORMAT_ENV`]: unset or empty is text; a bad value is text and the error to report.
pub fn format_from_env() -> (LogFormat, Option<String>) {
    match std::env::var(FORMAT_ENV) {
        Ok(v) if v.trim().is_empty() => (LogFormat::Text, None),
        Ok(v) => match v.parse() {
            Ok(f) => (f, None),
            Err(e) => (LogFormat::Text, Some(format!("{e}; logging as text"))),
        },
        Err(std::env::VarError::NotPresent) => (LogFormat::Text, None),
        Err(std::env::VarError::NotUnicode(_)) => (
            LogFormat::Text,
            Some(format!("{FORMAT_ENV} is not UTF-8; logging as text")),
        ),
    }
}

/// Parses a filter (tracing's `EnvFilter` syntax); empty or blank is [`DEFAULT_FILTER`]; a bad
/// one is [`DEFAULT_FILTER`] and the error to report.
pub fn parse_filter(value: &str) -> (EnvFilter, Option<String>) {
    if value.trim().is_empty() {
        return (EnvFilter::new(DEFAULT_FILTER), None);
    }
    match EnvFilter::try_new(value) {
        Ok(f) => (f, None),
        Err(e) => (
            EnvFilter::new(DEFAULT_FILTER),
            Some(format!(
                "{FILTER_ENV}={value:?} is not a valid filter ({e}); logging at {DEFAULT_FILTER}"
            )),
        ),
    }
}

/// Builds the subscriber writing `style` lines that pass `filter` to `writer`.
pub fn subscriber<W>(
    style: Style,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match style.format {
        // Flattened so that `message` and the fields are top-level keys (`jq .message`).
        LogFormat::Json => Box::new(b.json().flatten_event(true).with_ansi(false).finish()),
        LogFormat::Text if style.timestamps => Box::new(b.with_ansi(style.ansi).finish()),
        LogFormat::Text => Box::new(b.without_time().with_ansi(style.ansi).finish()),
    }
}

/// Installs the process-wide subscriber logging to stderr as the environment says (see the
/// module documentation), then logs a warning for each variable it could not use.
///
/// Call it once, early in `main`; a second call panics (as `tracing_subscriber`'s `init` does).
pub fn init() {
    let (format, format_problem) = format_from_env();
    let (filter, filter_problem) = match std::env::var(FILTER_ENV) {
        Ok(v) => parse_filter(&v),
        Err(std::env::VarError::NotPresent) => parse_filter(""),
        Err(std::env::VarError::NotUnicode(_)) => (
            EnvFilter::new(DEFAULT_FILTER),
            Some(format!(
                "{FILTER_ENV} is not UTF-8; logging at {DEFAULT_FILTER}"
            )),
        ),
    };
    // `init` also routes the `log` crate's records (sqlx, rustls) into tracing.
    subscriber(Style::detect(format), filter, std::io::stderr).init();
    for problem in [format_problem, filter_problem].into_iter().flatten() {
        tracing::warn!("{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer collecting what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs one warning with a field through a subscriber of `style`; returns the output.
    fn log_one(style: Style) -> String {
        let out = Captured::default();
        let w = out.clone();
        let sub = subscriber(style, EnvFilter::new("info"), move || w.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::debug!("filtered out");
            tracing::warn!(request = "r-1", "config reload refused");
        });
        out.text()
    }

    #[test]
    fn log_format_accepts_text_and_json_in_any_case_and_names_a_bad_value() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(" JSON\n".parse(), Ok(LogFormat::Json));
        assert_eq!("Text".parse(), Ok(LogFormat::Text));
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "AIRLOCK_LOG_FORMAT=\"xml\" is neither `text` nor `json`"
        );
    }

    #[test]
    fn json_lines_are_one_object_each_with_message_and_fields_at_the_top() {
        let style = Style {
            format: LogFormat::Json,
            timestamps: false,
            ansi: true,
        };
        let out = log_one(style);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "config reload refused");
        assert_eq!(v["request"], "r-1");
        // JSON keeps its timestamp under journald too, and never carries colour codes.
        assert!(v["timestamp"].is_string(), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn text_under_journald_has_no_timestamp_and_no_colour() {
        let out = log_one(Style {
            format: LogFormat::Text,
            timestamps: false,
            ansi: false,
        });
        let line = out.lines().next().expect("a line");
        assert!(line.trim_start().starts_with("WARN"), "{line}");
        assert!(
            line.contains("config reload refused request=\"r-1\""),
            "{line}"
        );
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn text_for_a_terminal_has_a_timestamp() {
        let out = log_one(Style {
            format: LogFormat::Text,
            timestamps: true,
            ansi: false,
        });
        let first = out.chars().next().expect("output");
        assert!(first.is_ascii_digit(), "{out}");
    }

    #[test]
    fn a_bad_filter_falls_back_to_info_and_says_why() {
        let (_, problem) = parse_filter("airlock=loud");
        let problem = problem.expect("reported");
        assert!(
            problem.starts_with("AIRLOCK_LOG=\"airlock=loud\""),
            "{problem}"
        );
        assert!(problem.ends_with("logging at info"), "{problem}");
        assert_eq!(parse_filter("  ").1, None);
        assert_eq!(parse_filter("airlock_server=debug,warn").1, None);
    }
}
