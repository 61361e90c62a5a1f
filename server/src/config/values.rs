//! The config's value rules: name kinds, where globs must be able to match, delays, and
//! `host_users` entries. Checking them is the policy crate's ([`airlock_policy::values`]), so
//! names, globs and durations are read and reported as in policies.
use std::time::Duration;

use airlock_policy::Problem;
use airlock_policy::values::{DurationRule, Glob, NameRule, ValueError};

use super::model::HostUser;
use super::problem::ConfigProblem;

/// Principal names: `[a-z0-9._@-]`, up to 128, since principals are often e-mail addresses.
pub(crate) const PRINCIPAL_NAME: NameRule = NameRule {
    what: "principal name",
    max: 128,
    extra: &['.', '_', '-', '@'],
};

/// Group names: `[a-z0-9._-]`, up to 63.
pub(crate) const GROUP_NAME: NameRule = NameRule {
    what: "group name",
    max: 63,
    extra: &['.', '_', '-'],
};

/// Route names: `[a-z0-9._-]`, up to 63.
pub(crate) const ROUTE_NAME: NameRule = NameRule {
    what: "route name",
    max: 63,
    extra: &['.', '_', '-'],
};

/// Longest reminder or escalation delay: no hold waits longer (policy timeouts are at most
/// 24h), so a longer one would never take effect.
pub(crate) const MAX_DELAY: Duration = airlock_policy::MAX_TIMEOUT;

/// Reminder and escalation delays: `30s`, `5m`, `1h30m`, `1d`, at most [`MAX_DELAY`].
pub(crate) const DELAY: DurationRule = DurationRule {
    units: &[('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)],
    max: MAX_DELAY,
    expected: "a number with a unit s, m, h or d: 30s, 5m, 1h30m",
};

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
pub(crate) fn glob(text: &str, usage: GlobUse) -> Result<Glob, ValueError> {
    let bad = |reason| ValueError::BadGlob {
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
    Glob::new(text)
}

/// Parses a `host_users` entry: `user` or `user@host-glob`. Host user names never contain `@`,
/// so the first one separates the two.
pub(crate) fn host_user(entry: &str) -> Result<HostUser, Problem> {
    let bad = |reason| ConfigProblem::BadHostUser {
        entry: entry.to_owned(),
        reason,
    };
    let (user, hosts) = match entry.split_once('@') {
        None => (entry, None),
        Some((user, hosts)) => (user, Some(hosts)),
    };
    if user.is_empty() {
        return Err(bad("the user name is empty").into());
    }
    if user
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
    {
        return Err(bad("a user name has no spaces, :, or /").into());
    }
    let hosts = match hosts {
        None => None,
        Some("") => {
            return Err(bad("the host glob after @ is empty (leave out @ for every host)").into());
        }
        Some(h) => Some(glob(h, GlobUse::Host)?),
    };
    Ok(HostUser {
        user: user.to_owned(),
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use airlock_policy::values::{check_name, parse_duration};

    use super::*;

    fn duration(text: &str) -> Result<Duration, ValueError> {
        parse_duration(text, &DELAY)
    }

    #[test]
    fn durations_take_s_m_h_d_and_refuse_bare_numbers_zero_and_beyond_a_day() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "5", "5 m", "m", "5w", "99999999999999999999d"] {
            assert!(
                matches!(duration(bad), Err(ValueError::BadDuration { .. })),
                "{bad}"
            );
        }
        for out in ["0s", "25h", "2d"] {
            assert!(
                matches!(duration(out), Err(ValueError::DurationOutOfRange { .. })),
                "{out}"
            );
        }
    }

    #[test]
    fn names_by_kind() {
        assert_eq!(PRINCIPAL_NAME.charset(), "a-z, 0-9, ., _, - and @");
        assert_eq!(GROUP_NAME.charset(), "a-z, 0-9, ., _ and -");
        assert!(check_name("alice@example.com", &PRINCIPAL_NAME).is_ok());
        assert!(check_name("alice@example.com", &GROUP_NAME).is_err());
        assert!(check_name("prod-etc.v2", &ROUTE_NAME).is_ok());
        assert!(check_name("Alice", &PRINCIPAL_NAME).is_err());
        assert!(check_name("", &GROUP_NAME).is_err());
        assert!(check_name(&"a".repeat(64), &ROUTE_NAME).is_err());
        assert!(check_name(&"a".repeat(128), &PRINCIPAL_NAME).is_ok());
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
            Err(ValueError::GlobSyntax { .. })
        ));
    }
}
