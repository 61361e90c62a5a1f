//! Checks of single scalar values: names, globs, durations, host users.
use std::time::Duration;

use super::model::{Glob, HostUser};
use super::problem::ConfigProblem;

/// Which kind of name, for the message and the allowed characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameKind {
    /// `[a-z0-9._@-]`, up to 128: principals are often e-mail addresses.
    Principal,
    /// `[a-z0-9._-]`, up to 63.
    Group,
    /// `[a-z0-9._-]`, up to 63.
    Route,
}

impl NameKind {
    fn what(self) -> &'static str {
        match self {
            NameKind::Principal => "principal name",
            NameKind::Group => "group name",
            NameKind::Route => "route name",
        }
    }

    fn max(self) -> usize {
        match self {
            NameKind::Principal => 128,
            NameKind::Group | NameKind::Route => 63,
        }
    }

    fn charset(self) -> &'static str {
        match self {
            NameKind::Principal => "a-z, 0-9, ., _, - and @",
            NameKind::Group | NameKind::Route => "a-z, 0-9, ., _ and -",
        }
    }

    fn allows(self, c: char) -> bool {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '.' | '_' | '-')
            || (c == '@' && self == NameKind::Principal)
    }
}

/// Checks a name's length and characters. Names appear in tokens, logs and the audit trail,
/// so they are kept to characters that need no quoting anywhere.
pub(crate) fn check_name(name: &str, kind: NameKind) -> Result<(), ConfigProblem> {
    if name.is_empty() || name.len() > kind.max() || !name.chars().all(|c| kind.allows(c)) {
        return Err(ConfigProblem::BadName {
            what: kind.what(),
            name: name.to_owned(),
            max: kind.max(),
            charset: kind.charset(),
        });
    }
    Ok(())
}

/// What a glob is compared with, for the checks that catch globs that can never match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GlobUse {
    /// A host name (no `/`).
    Host,
    /// An agent or rule name.
    Name,
    /// An absolute path (target or binary).
    Path,
}

/// Compiles a glob after checking it can match something of its kind.
pub(crate) fn glob(text: &str, usage: GlobUse) -> Result<Glob, ConfigProblem> {
    let bad = |reason| ConfigProblem::BadGlob {
        glob: text.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(bad("is empty"));
    }
    match usage {
        GlobUse::Host if text.contains('/') => {
            return Err(bad("host names contain no /, so it never matches"));
        }
        GlobUse::Path if !text.starts_with('/') && !text.starts_with("**") => {
            return Err(bad(
                "paths are absolute, so it never matches (start it with / or **)",
            ));
        }
        _ => {}
    }
    Glob::new(text).map_err(|kind| ConfigProblem::GlobSyntax {
        glob: text.to_owned(),
        kind,
    })
}

/// Parses a `host_users` entry: `user` or `user@host-glob`. Host user names never contain `@`,
/// so the first one separates the two.
pub(crate) fn host_user(entry: &str) -> Result<HostUser, ConfigProblem> {
    let bad = |reason| ConfigProblem::BadHostUser {
        entry: entry.to_owned(),
        reason,
    };
    let (user, hosts) = match entry.split_once('@') {
        None => (entry, None),
        Some((user, hosts)) => (user, Some(hosts)),
    };
    if user.is_empty() {
        return Err(bad("the user name is empty"));
    }
    if user
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
    {
        return Err(bad("a user name has no spaces, :, or /"));
    }
    let hosts = match hosts {
        None => None,
        Some("") => {
            return Err(bad(
                "the host glob after @ is empty (leave out @ for every host)",
            ));
        }
        Some(h) => Some(glob(h, GlobUse::Host)?),
    };
    Ok(HostUser {
        user: user.to_owned(),
        hosts,
    })
}

/// Longest reminder or escalation delay: no hold waits longer (policy timeouts are at most
/// 24h), so a longer one would never take effect.
pub(crate) const MAX_DELAY: Duration = airlock_policy::MAX_TIMEOUT;

/// Parses `30s`, `5m`, `1h30m`, `1d`: number-unit pairs, units `d`, `h`, `m`, `s`.
pub(crate) fn duration(text: &str) -> Result<Duration, ConfigProblem> {
    let bad = || ConfigProblem::BadDuration {
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
            'd' => 86_400,
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
    if d.is_zero() || d > MAX_DELAY {
        return Err(ConfigProblem::DurationOutOfRange {
            found: text.to_owned(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_s_m_h_d_and_refuse_bare_numbers_zero_and_beyond_a_day() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "5", "5 m", "m", "5w", "99999999999999999999d"] {
            assert!(
                matches!(duration(bad), Err(ConfigProblem::BadDuration { .. })),
                "{bad}"
            );
        }
        for out in ["0s", "25h", "2d"] {
            assert!(
                matches!(duration(out), Err(ConfigProblem::DurationOutOfRange { .. })),
                "{out}"
            );
        }
    }

    #[test]
    fn names_by_kind() {
        assert!(check_name("alice@example.com", NameKind::Principal).is_ok());
        assert!(check_name("alice@example.com", NameKind::Group).is_err());
        assert!(check_name("prod-etc.v2", NameKind::Route).is_ok());
        assert!(check_name("Alice", NameKind::Principal).is_err());
        assert!(check_name("", NameKind::Group).is_err());
        assert!(check_name(&"a".repeat(64), NameKind::Route).is_err());
        assert!(check_name(&"a".repeat(128), NameKind::Principal).is_ok());
    }

    #[test]
    fn host_users_split_at_the_first_at_sign() {
        let u = host_user("alice@build-*").unwrap();
        assert_eq!(u.user, "alice");
        assert!(u.matches("alice", "build-7"));
        assert!(!u.matches("alice", "web-1"));
        assert!(host_user("alice").unwrap().matches("alice", "anything"));
        assert!(host_user("@web").is_err());
        assert!(host_user("alice@").is_err());
        assert!(host_user("al ice").is_err());
        assert!(host_user("alice@a/b").is_err());
    }

    #[test]
    fn globs_that_cannot_match_their_subject_are_refused() {
        assert!(glob("web-*", GlobUse::Host).is_ok());
        assert!(glob("web/*", GlobUse::Host).is_err());
        assert!(glob("etc/**", GlobUse::Path).is_err());
        assert!(
            glob("**/kubectl", GlobUse::Path)
                .unwrap()
                .is_match("/usr/bin/kubectl")
        );
        assert!(
            glob("/etc/**", GlobUse::Path)
                .unwrap()
                .is_match("/etc/ssh/sshd_config")
        );
        assert!(
            !glob("/etc/*", GlobUse::Path)
                .unwrap()
                .is_match("/etc/ssh/sshd_config")
        );
        assert!(matches!(
            glob("[a", GlobUse::Name),
            Err(ConfigProblem::GlobSyntax { .. })
        ));
    }
}
