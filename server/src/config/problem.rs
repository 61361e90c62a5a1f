//! What can be wrong in a server config, one variant per distinct failure. Each is reported as
//! a policy-crate [`Diagnostic`](airlock_policy::Diagnostic) (`file:line:col: field: message`)
//! through [`Problem::Other`].
use airlock_policy::Problem;

/// One problem in `server.yaml`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigProblem {
    /// Comments only: most likely a truncated or wrong file; `init` writes a full one.
    #[error("holds no configuration (airlock-server init writes a commented one)")]
    NoDocument,
    /// A second `---` document: which one is in force would be a guess.
    #[error("a second YAML document; the config is one document")]
    ManyDocuments,
    /// Aliases make one node stand for another; the config should read the same to a human.
    #[error("aliases (*{0}) are not supported in the server config; write the value out")]
    Alias(String),
    /// Tags change how a value is read; nothing in the config needs them.
    #[error("tag {0} is not supported in the server config (only !!str)")]
    Tag(String),
    /// A value of the wrong shape.
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    /// A key the schema does not have at this level (a typo must not silently drop a setting,
    /// e.g. a misspelt `threshold` falling back to 1).
    #[error("unknown key {key:?} ({})", hint(*.suggestion, .expected))]
    UnknownKey {
        key: String,
        suggestion: Option<&'static str>,
        expected: &'static [&'static str],
    },
    /// A key given twice in one mapping (YAML maps would keep only one, silently).
    #[error("duplicate key {key:?} (first at line {first_line})")]
    DuplicateKey { key: String, first_line: usize },
    /// A mapping key that is a list, a mapping or null.
    #[error("mapping keys must be strings")]
    NonStringKey,
    /// A required key is absent.
    #[error("missing required key {key:?}")]
    MissingKey { key: &'static str },
    /// An empty list or mapping where leaving the key out is the way to say "any".
    #[error("must not be empty{hint}")]
    Empty { hint: &'static str },
    /// A list entry given twice.
    #[error("{value:?} is listed twice (first at line {first_line})")]
    Duplicate { value: String, first_line: usize },
    /// A principal, group or route name outside its character set or length.
    #[error("invalid {what} {name:?} (expected 1 to {max} characters of {charset})")]
    BadName {
        what: &'static str,
        name: String,
        max: usize,
        charset: &'static str,
    },
    /// Two routes with one name (requests record their route by name).
    #[error("duplicate route name {name:?} (first at line {first_line})")]
    DuplicateRoute { name: String, first_line: usize },
    /// A group no principal belongs to: the route could never collect a vote from it.
    #[error("unknown group {group:?}: no principal is in it{}", did_you_mean(.suggestion.as_deref()))]
    UnknownGroup {
        group: String,
        suggestion: Option<String>,
    },
    /// `threshold` is not a whole number.
    #[error("invalid threshold {found:?} (expected a whole number, at least 1)")]
    BadThreshold { found: String },
    /// `threshold: 0` would decide without any vote.
    #[error("threshold must be at least 1")]
    ThresholdZero,
    /// More approvals than there are approvers: the route could never approve.
    #[error(
        "threshold {threshold} exceeds the {members} principal(s) in the approver groups ({groups})"
    )]
    ThresholdTooHigh {
        threshold: u32,
        members: usize,
        groups: String,
    },
    /// A glob that compiles but can never match what it is compared with.
    #[error("bad glob {glob:?}: {reason}")]
    BadGlob { glob: String, reason: &'static str },
    /// A glob that does not compile.
    #[error("bad glob {glob:?}: {kind}")]
    GlobSyntax {
        glob: String,
        kind: globset::ErrorKind,
    },
    /// Not number-unit pairs.
    #[error(
        "invalid duration {found:?} (expected a number with a unit s, m, h or d: 30s, 5m, 1h30m)"
    )]
    BadDuration { found: String },
    /// Zero, or longer than any hold can wait (policy timeouts are at most 24h), so it would
    /// never take effect.
    #[error("duration {found:?} out of range (expected more than 0s and at most 24h)")]
    DurationOutOfRange { found: String },
    /// Not an [`Op`](airlock_approval::Op) name.
    #[error("unknown operation {found:?} ({})", hint(*.suggestion, &super::parse::OP_NAMES))]
    UnknownOperation {
        found: String,
        suggestion: Option<&'static str>,
    },
    /// Not a [`Channel`](super::Channel) name.
    #[error("unknown channel {found:?} ({})", hint(*.suggestion, &super::parse::CHANNEL_NAMES))]
    UnknownChannel {
        found: String,
        suggestion: Option<&'static str>,
    },
    /// `true` or `false` expected.
    #[error("expected true or false, found {found:?}")]
    BadBool { found: String },
    /// `listen` is not `IP:PORT`.
    #[error(
        "invalid listen address {found:?} (expected IP:PORT, e.g. 127.0.0.1:7443 or [::]:7443)"
    )]
    BadListen { found: String },
    /// A database URL the store cannot open.
    #[error("unsupported database URL (expected postgres://… or sqlite://PATH)")]
    BadDatabase,
    /// A `host_users` entry that is not `user` or `user@host-glob`.
    #[error("invalid host user {entry:?}: {reason}")]
    BadHostUser { entry: String, reason: &'static str },
}

impl From<ConfigProblem> for Problem {
    fn from(p: ConfigProblem) -> Problem {
        Problem::Other(Box::new(p))
    }
}

/// ` (did you mean "x"?)` or nothing.
fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

/// `did you mean "x"?` when there is a close name, else the list of names.
fn hint(suggestion: Option<&str>, expected: &[&str]) -> String {
    match suggestion {
        Some(s) => format!("did you mean {s:?}?"),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo: an edit distance
/// of about a third of the word, compared case-insensitively (`breakGlass` → `break_glass`).
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_but_not_unrelated_words() {
        let keys = ["threshold", "approvers", "break_glass"];
        assert_eq!(closest("treshold", keys), Some("threshold"));
        assert_eq!(closest("breakGlass", keys), Some("break_glass"));
        assert_eq!(closest("approver", keys), Some("approvers"));
        assert_eq!(closest("colour", keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
