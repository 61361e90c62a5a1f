//! Checks and conversions of single scalar values. Shared with airlock-server's config, each
//! parametrised by a rule the reader gives: names ([`NameRule`], [`check_name`]), durations
//! ([`DurationRule`], [`parse_duration`]) and globs ([`Glob`], [`build_glob`]); their problems
//! are [`ValueError`]s. The policy's own rules (its name kinds, paths, selector globs) follow.
use std::path::PathBuf;
use std::time::Duration;

use airlock_common::NAME_LEN;

use crate::schema::SchemaError;

/// A scalar value that its rule does not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    /// A name outside its character set or length.
    #[error(
        "invalid {} {name:?} (expected 1 to {} characters of {})",
        .rule.what,
        .rule.max,
        .rule.charset()
    )]
    BadName {
        /// The name as written.
        name: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// A glob that compiles but cannot be meant (matches everything, or never matches what it
    /// is compared with).
    #[error("bad glob {glob:?}: {reason}")]
    BadGlob {
        /// The glob as written.
        glob: String,
        /// Why it cannot be meant.
        reason: &'static str,
    },
    /// A glob that does not compile.
    #[error("bad glob {glob:?}: {kind}")]
    GlobSyntax {
        /// The glob as written.
        glob: String,
        /// What the glob compiler says.
        kind: globset::ErrorKind,
    },
    /// Not number-unit pairs of the rule's units.
    #[error("invalid duration {found:?} (expected {expected})")]
    BadDuration {
        /// The text as written.
        found: String,
        /// [`DurationRule::expected`].
        expected: &'static str,
    },
    /// Zero, or longer than the rule's maximum.
    #[error(
        "duration {found:?} out of range (expected more than 0s and at most {})",
        hms(*.max)
    )]
    DurationOutOfRange {
        /// The text as written.
        found: String,
        /// [`DurationRule::max`].
        max: Duration,
    },
}

/// Which names a field accepts: 1 to `max` characters of `a-z`, `0-9` and `extra`. Names
/// appear in unit names, tokens, logs and the audit trail, so they are kept to characters that
/// need no quoting anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameRule {
    /// What the name names, for messages (`rule name`).
    pub what: &'static str,
    /// Longest accepted, in bytes.
    pub max: usize,
    /// Characters allowed besides `a-z` and `0-9`, in the order messages list them.
    pub extra: &'static [char],
}

impl NameRule {
    /// Whether `c` may appear in such a name.
    pub fn allows(&self, c: char) -> bool {
        c.is_ascii_lowercase() || c.is_ascii_digit() || self.extra.contains(&c)
    }

    /// The allowed characters for messages: `a-z, 0-9, _ and -`.
    pub fn charset(&self) -> String {
        let mut parts = vec!["a-z".to_owned(), "0-9".to_owned()];
        parts.extend(self.extra.iter().map(char::to_string));
        let last = parts.pop().unwrap_or_default();
        format!("{} and {last}", parts.join(", "))
    }
}

/// Checks a name's length and characters against `rule`.
pub fn check_name(name: &str, rule: &NameRule) -> Result<(), ValueError> {
    if name.is_empty() || name.len() > rule.max || !name.chars().all(|c| rule.allows(c)) {
        return Err(ValueError::BadName {
            name: name.to_owned(),
            rule: *rule,
        });
    }
    Ok(())
}

/// How a field writes durations: number-unit pairs (`1h30m`) of these units, more than zero
/// and at most `max`. A bare number is refused: seconds or minutes would be a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRule {
    /// Each unit letter with its length in seconds.
    pub units: &'static [(char, u64)],
    /// Longest accepted.
    pub max: Duration,
    /// What an invalid duration's message says is expected (`a number with a unit: 30s, 5m`).
    pub expected: &'static str,
}

/// Parses a duration written as [`DurationRule`] says.
pub fn parse_duration(text: &str, rule: &DurationRule) -> Result<Duration, ValueError> {
    let bad = || ValueError::BadDuration {
        found: text.to_owned(),
        expected: rule.expected,
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some(&(_, unit)) = rule.units.iter().find(|(u, _)| *u == c) else {
            return Err(bad());
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        // A bare number: seconds or minutes? Refuse rather than guess.
        return Err(bad());
    }
    let d = Duration::from_secs(total);
    if d.is_zero() || d > rule.max {
        return Err(ValueError::DurationOutOfRange {
            found: text.to_owned(),
            max: rule.max,
        });
    }
    Ok(d)
}

/// `24h`, `1h30m`, `45s`: whole seconds in hours, minutes and seconds, for messages.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::new();
    for (n, unit) in [(s / 3600, 'h'), (s / 60 % 60, 'm'), (s % 60, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() { "0s".to_owned() } else { out }
}

/// A glob as written, with its compiled matcher ([`build_glob`]'s semantics: `*` and `?` do
/// not cross `/`, `**` does).
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    matcher: globset::GlobMatcher,
}

impl Glob {
    /// Compiles `text`.
    pub fn new(text: &str) -> Result<Glob, ValueError> {
        let matcher = build_glob(text).map_err(|kind| ValueError::GlobSyntax {
            glob: text.to_owned(),
            kind,
        })?;
        Ok(Glob {
            text: text.to_owned(),
            matcher,
        })
    }

    /// Whether `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        // The matcher is a function of the text.
        self.text == other.text
    }
}

/// Compiles a selector glob with the semantics selectors are documented to have: `*` and `?`
/// do not cross `/`, `**` does. The agent resolver must build its globs the same way.
pub fn build_glob(glob: &str) -> Result<globset::GlobMatcher, globset::ErrorKind> {
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().clone())
}

/// Longest name accepted for policies, agents and rules: short enough for a systemd unit name
/// (`airlock-NAME-XXXX.scope`) and for log lines.
pub const MAX_NAME_LEN: usize = 63;

/// Longest file name of a gated binary: directory-entry keys hold [`NAME_LEN`] bytes including a
/// terminating NUL, so a longer name could not be matched exactly.
pub const MAX_EXEC_NAME_LEN: usize = NAME_LEN - 1;

/// Longest approval timeout: a held process waiting longer than a day is a stuck process.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `metadata.name`: `[a-z0-9-]`.
pub const POLICY_NAME: NameRule = NameRule {
    what: "policy name",
    max: MAX_NAME_LEN,
    extra: &['-'],
};

/// Agent names: `[a-z0-9_-]`.
pub const AGENT_NAME: NameRule = NameRule {
    what: "agent name",
    max: MAX_NAME_LEN,
    extra: &['_', '-'],
};

/// Rule names: `[a-z0-9_-]`.
pub const RULE_NAME: NameRule = NameRule {
    what: "rule name",
    max: MAX_NAME_LEN,
    extra: &['_', '-'],
};

/// A rule's `timeout`: `30s`, `5m`, `1h`, `1h30m`, at most [`MAX_TIMEOUT`].
pub const TIMEOUT: DurationRule = DurationRule {
    units: &[('h', 3600), ('m', 60), ('s', 1)],
    max: MAX_TIMEOUT,
    expected: "a number with a unit: 30s, 5m, 1h, 1h30m",
};

/// Whether the path is for `exec` (a file), `paths` (a tree or a file) or `connect` (a socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathUse {
    Exec,
    Protect,
    /// A service socket (`connect`): one file, matched by name like a binary.
    Socket,
}

/// Checks that a policy path is absolute and already normal, and returns it without a trailing
/// `/`. Normal form is required rather than fixed up because `..` and `.` in a security policy
/// are more likely mistakes than intent, and the operator should see the path airlock uses.
pub(crate) fn check_path(raw: &str, usage: PathUse) -> Result<PathBuf, SchemaError> {
    let bad = |reason| SchemaError::BadPath {
        path: raw.to_owned(),
        reason,
    };
    if raw.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if !raw.starts_with('/') {
        return Err(bad("must be absolute (start with /)"));
    }
    if raw == "/" {
        return match usage {
            PathUse::Exec => Err(bad("names a directory, not a binary")),
            PathUse::Socket => Err(bad("names a directory, not a socket")),
            PathUse::Protect => Ok(PathBuf::from("/")),
        };
    }
    let trimmed = match raw.strip_suffix('/') {
        Some(_) if usage == PathUse::Exec => {
            return Err(bad("names a directory (ends with /), not a binary"));
        }
        Some(_) if usage == PathUse::Socket => {
            return Err(bad("names a directory (ends with /), not a socket"));
        }
        Some(t) => t,
        None => raw,
    };
    for component in trimmed[1..].split('/') {
        match component {
            "" => return Err(bad("has an empty component (//)")),
            "." | ".." => return Err(bad("must not contain . or .. components")),
            _ => {}
        }
    }
    if usage == PathUse::Socket && trimmed.contains(['*', '?', '[']) {
        wildcard_socket(trimmed).map_err(bad)?;
    }
    if usage != PathUse::Protect {
        let name = trimmed.rsplit('/').next().unwrap_or_default();
        if name.len() > MAX_EXEC_NAME_LEN {
            return Err(bad(
                "file name is longer than 63 bytes and cannot be matched by path",
            ));
        }
    }
    Ok(PathBuf::from(trimmed))
}

/// Most literal components after the wildcard of a `connect` path (the socket's name included).
pub const MAX_WILDCARD_DEPTH: usize = 3;

/// A `connect` path with a wildcard, split: the directory before the `*` component, and the
/// literal components after it (the socket's name last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WildcardSocket {
    pub dir: PathBuf,
    pub suffix: Vec<String>,
}

/// Splits a `connect` path with one whole-component `*` (`/run/user/*/bus`): per-user and
/// per-session service sockets, matched in the kernel by the directory above the wildcard
/// and the names below it.
pub fn wildcard_socket(path: &str) -> Result<WildcardSocket, &'static str> {
    let components: Vec<&str> = path[1..].split('/').collect();
    let wild: Vec<usize> = components
        .iter()
        .enumerate()
        .filter(|(_, c)| c.contains(['*', '?', '[']))
        .map(|(i, _)| i)
        .collect();
    let [w] = wild[..] else {
        return Err("a connect path may have one wildcard component, not several");
    };
    if components[w] != "*" {
        return Err(
            "a wildcard component of a connect path must be exactly * (e.g. /run/user/*/bus)",
        );
    }
    let suffix: Vec<String> = components[w + 1..].iter().map(|c| c.to_string()).collect();
    if suffix.is_empty() {
        return Err("the socket's own name cannot be a wildcard: put * in a directory above it");
    }
    if suffix.len() > MAX_WILDCARD_DEPTH {
        return Err("at most 3 components may follow the * of a connect path");
    }
    Ok(WildcardSocket {
        dir: PathBuf::from(format!("/{}", components[..w].join("/"))),
        suffix,
    })
}

/// Checks a cgroup path glob: absolute, and a valid glob where `*` stays within one component.
pub(crate) fn check_cgroup_glob(glob: &str) -> Result<(), ValueError> {
    let bad = |reason| ValueError::BadGlob {
        glob: glob.to_owned(),
        reason,
    };
    if !glob.starts_with('/') {
        return Err(bad(
            "a cgroup glob is a path below the cgroup2 mount and starts with /",
        ));
    }
    if glob == "/" || glob.trim_end_matches('*') == "/" {
        return Err(bad(
            "selects the root cgroup: every process on the host would be an agent",
        ));
    }
    if glob.ends_with('/') {
        return Err(bad("must not end with /"));
    }
    Glob::new(glob).map(drop)
}

/// Checks a systemd unit name glob: a single cgroup directory name, so no `/`.
pub(crate) fn check_unit_glob(glob: &str) -> Result<(), ValueError> {
    let bad = |reason| ValueError::BadGlob {
        glob: glob.to_owned(),
        reason,
    };
    if glob.is_empty() {
        return Err(bad("is empty"));
    }
    if glob.contains('/') {
        return Err(bad(
            "a unit name cannot contain /; use `cgroup` to select by path",
        ));
    }
    if glob.chars().all(|c| c == '*') {
        return Err(bad(
            "matches every cgroup: every process on the host would be an agent",
        ));
    }
    Glob::new(glob).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let parse_duration = |text| parse_duration(text, &TIMEOUT);
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(matches!(
            parse_duration("300"),
            Err(ValueError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("5 m"),
            Err(ValueError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("m"),
            Err(ValueError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("0s"),
            Err(ValueError::DurationOutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("25h"),
            Err(ValueError::DurationOutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(ValueError::BadDuration { .. })
        ));
    }

    #[test]
    fn names() {
        assert!(check_name("default-1", &POLICY_NAME).is_ok());
        assert!(check_name("my_agent", &POLICY_NAME).is_err());
        assert!(check_name("my_agent", &AGENT_NAME).is_ok());
        assert!(check_name("Claude", &AGENT_NAME).is_err());
        assert!(check_name("", &RULE_NAME).is_err());
        assert!(check_name(&"a".repeat(64), &RULE_NAME).is_err());
    }

    #[test]
    fn name_messages_list_the_rules_characters() {
        assert_eq!(POLICY_NAME.charset(), "a-z, 0-9 and -");
        assert_eq!(AGENT_NAME.charset(), "a-z, 0-9, _ and -");
        let e = check_name("My", &RULE_NAME).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid rule name \"My\" (expected 1 to 63 characters of a-z, 0-9, _ and -)"
        );
    }

    #[test]
    fn out_of_range_names_the_maximum() {
        let e = parse_duration("25h", &TIMEOUT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "duration \"25h\" out of range (expected more than 0s and at most 24h)"
        );
        assert_eq!(hms(Duration::from_secs(5430)), "1h30m30s");
    }

    #[test]
    fn paths() {
        assert_eq!(
            check_path("/etc/", PathUse::Protect).unwrap(),
            PathBuf::from("/etc")
        );
        assert_eq!(
            check_path("/", PathUse::Protect).unwrap(),
            PathBuf::from("/")
        );
        assert!(check_path("/usr/bin/", PathUse::Exec).is_err());
        assert!(check_path("usr/bin/apt", PathUse::Exec).is_err());
        assert!(check_path("/usr/../bin/apt", PathUse::Exec).is_err());
        assert!(check_path("/usr//bin/apt", PathUse::Exec).is_err());
        assert!(check_path(&format!("/usr/bin/{}", "a".repeat(64)), PathUse::Exec).is_err());
        assert!(check_path(&format!("/usr/bin/{}", "a".repeat(63)), PathUse::Exec).is_ok());
    }

    #[test]
    fn star_stays_in_one_component_and_double_star_crosses() {
        let one = build_glob("/agents.slice/*").unwrap();
        assert!(one.is_match("/agents.slice/a.scope"));
        assert!(!one.is_match("/agents.slice/a.scope/child"));
        let any = build_glob("/agents.slice/**").unwrap();
        assert!(any.is_match("/agents.slice/a.scope/child"));
        let run = build_glob("/airlock.slice/airlock-claude-*.scope").unwrap();
        assert!(run.is_match("/airlock.slice/airlock-claude-1x2.scope"));
    }

    #[test]
    fn globs() {
        assert!(check_cgroup_glob("/agents.slice/*").is_ok());
        assert!(check_cgroup_glob("/agents.slice/**").is_ok());
        assert!(check_cgroup_glob("agents.slice/*").is_err());
        assert!(check_cgroup_glob("/*").is_err());
        assert!(check_cgroup_glob("/a/[b").is_err());
        assert!(check_unit_glob("agent-*.service").is_ok());
        assert!(check_unit_glob("a/b.service").is_err());
        assert!(check_unit_glob("*").is_err());
    }
}
