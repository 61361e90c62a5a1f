//! Checks and conversions of single scalar values: names, paths, globs, durations.
use std::path::PathBuf;
use std::time::Duration;

use airlock_common::NAME_LEN;

use crate::schema::SchemaError;

/// Longest name accepted for policies, agents and rules: short enough for a systemd unit name
/// (`airlock-NAME-XXXX.scope`) and for log lines.
pub const MAX_NAME_LEN: usize = 63;

/// Longest file name of a gated binary: directory-entry keys hold [`NAME_LEN`] bytes including a
/// terminating NUL, so a longer name could not be matched exactly.
pub const MAX_EXEC_NAME_LEN: usize = NAME_LEN - 1;

/// Longest approval timeout: a held process waiting longer than a day is a stuck process.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Which kind of name, for the message and the allowed characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// `metadata.name`: `[a-z0-9-]`.
    Policy,
    /// Agent names: `[a-z0-9_-]`.
    Agent,
    /// Rule names: `[a-z0-9_-]`.
    Rule,
}

impl NameKind {
    pub(crate) fn what(self) -> &'static str {
        match self {
            NameKind::Policy => "policy name",
            NameKind::Agent => "agent name",
            NameKind::Rule => "rule name",
        }
    }

    pub(crate) fn charset(self) -> &'static str {
        match self {
            NameKind::Policy => "a-z, 0-9 and -",
            NameKind::Agent | NameKind::Rule => "a-z, 0-9, _ and -",
        }
    }

    fn allows(self, c: char) -> bool {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || (c == '_' && self != NameKind::Policy)
    }
}

/// Checks a name's length and characters.
pub(crate) fn check_name(name: &str, kind: NameKind) -> Result<(), SchemaError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(|c| kind.allows(c)) {
        return Err(SchemaError::BadName {
            name: name.to_owned(),
            kind,
        });
    }
    Ok(())
}

/// Whether the path is for `exec` (a file) or `paths` (a tree or a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathUse {
    Exec,
    Protect,
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
            PathUse::Protect => Ok(PathBuf::from("/")),
        };
    }
    let trimmed = match raw.strip_suffix('/') {
        Some(_) if usage == PathUse::Exec => {
            return Err(bad("names a directory (ends with /), not a binary"));
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
    if usage == PathUse::Exec {
        let name = trimmed.rsplit('/').next().unwrap_or_default();
        if name.len() > MAX_EXEC_NAME_LEN {
            return Err(bad(
                "file name is longer than 63 bytes and cannot be matched by path",
            ));
        }
    }
    Ok(PathBuf::from(trimmed))
}

/// Checks a cgroup path glob: absolute, and a valid glob where `*` stays within one component.
pub(crate) fn check_cgroup_glob(glob: &str) -> Result<(), SchemaError> {
    let bad = |reason| SchemaError::BadGlob {
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
    syntax(glob)
}

/// Checks a systemd unit name glob: a single cgroup directory name, so no `/`.
pub(crate) fn check_unit_glob(glob: &str) -> Result<(), SchemaError> {
    let bad = |reason| SchemaError::BadGlob {
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
    syntax(glob)
}

fn syntax(glob: &str) -> Result<(), SchemaError> {
    build_glob(glob)
        .map(|_| ())
        .map_err(|kind| SchemaError::GlobSyntax {
            glob: glob.to_owned(),
            kind,
        })
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

/// Parses `30s`, `5m`, `1h`, `1h30m`: one or more number-unit pairs, units `h`, `m`, `s`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, SchemaError> {
    let bad = || SchemaError::BadDuration {
        found: text.to_owned(),
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
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
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
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(SchemaError::DurationOutOfRange {
            found: text.to_owned(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(matches!(
            parse_duration("300"),
            Err(SchemaError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("5 m"),
            Err(SchemaError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("m"),
            Err(SchemaError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("0s"),
            Err(SchemaError::DurationOutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("25h"),
            Err(SchemaError::DurationOutOfRange { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(SchemaError::BadDuration { .. })
        ));
    }

    #[test]
    fn names() {
        assert!(check_name("default-1", NameKind::Policy).is_ok());
        assert!(check_name("my_agent", NameKind::Policy).is_err());
        assert!(check_name("my_agent", NameKind::Agent).is_ok());
        assert!(check_name("Claude", NameKind::Agent).is_err());
        assert!(check_name("", NameKind::Rule).is_err());
        assert!(check_name(&"a".repeat(64), NameKind::Rule).is_err());
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
