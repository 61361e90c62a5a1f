//! Walking the located YAML tree ([`crate::yaml`]): typed access to mappings, lists, strings,
//! booleans and durations that reports wrong types, unknown keys (optionally with "did you
//! mean"), duplicate keys and list entries, empty lists and missing required keys as it goes,
//! and carries on, so that one check shows every problem of a file.
//!
//! Policies and airlock-server's `server.yaml` are both read with a [`Walker`]; each adds its
//! own checks (in its own error type, anything that is [`Into<Problem>`]) on top.
use std::path::Path;
use std::time::Duration;

use crate::diag::{Diagnostic, Diagnostics, Location, Problem};
use crate::values::{DurationRule, parse_duration};
use crate::yaml::{Kind, Node, Pos};

/// `prefix.key`, or `key` at the top level: the dotted field path diagnostics name.
pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A mapping's known keys, each with where the key was written ([`Walker::mapping`]).
#[derive(Clone, Debug)]
pub struct Fields<'n> {
    /// Where the mapping starts (missing keys are reported here).
    pub pos: Pos,
    /// Each known key once, in document order: the key, where it is, its value.
    pub entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    /// Where `key` is written, if given.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, p, _)| *p)
    }
}

/// A string value and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    /// The scalar's text.
    pub text: String,
    /// Where the scalar is.
    pub pos: Pos,
}

/// How an unknown key's message helps the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyHint {
    /// `(expected a, b or c)`: every key of the level (policies).
    #[default]
    Expected,
    /// `(did you mean "b"?)` when a key is close enough to be a typo, else
    /// `(expected one of: a, b, c)` (airlock-server's config).
    DidYouMean,
}

impl KeyHint {
    fn describe(self, key: &str, expected: &[&str]) -> String {
        match self {
            KeyHint::Expected => format!("expected {}", one_of(expected)),
            KeyHint::DidYouMean => {
                did_you_mean_or_list(closest(key, expected.iter().copied()), expected)
            }
        }
    }
}

/// A document whose shape is not what its reader expects: the problems a [`Walker`] reports.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalkError {
    /// A value of the wrong shape (a list where a string belongs).
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What belongs here (`a string`).
        expected: &'static str,
        /// What is here ([`Node::describe`]).
        found: &'static str,
    },
    /// A key the schema does not have at this level (a typo must not silently drop a setting).
    #[error("unknown key {key:?} ({})", .hint.describe(.key, .expected))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys of this level.
        expected: &'static [&'static str],
        /// How the message helps.
        hint: KeyHint,
    },
    /// A key given twice in one mapping (a map type would keep only one, silently).
    #[error("duplicate key {key:?} (first at line {first_line})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where it was first given.
        first_line: usize,
    },
    /// A mapping key that is a list, a mapping or null.
    #[error("mapping keys must be strings")]
    NonStringKey,
    /// A required key is absent from this mapping.
    #[error("missing required key {key:?}")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// An empty list or mapping where leaving the key out is the way to say "none" or "all".
    #[error("must not be empty{hint}")]
    EmptyList {
        /// Appended to the message: `""` or ` (leave it out for …)`.
        hint: &'static str,
    },
    /// A list entry given twice.
    #[error("{value:?} is listed twice (first at line {first_line})")]
    Duplicate {
        /// The entry.
        value: String,
        /// Where it was first given.
        first_line: usize,
    },
    /// A scalar where `true` or `false` belongs.
    #[error("expected true or false, found {found:?}")]
    NotBool {
        /// The scalar as written.
        found: String,
    },
}

/// Reads one document of one file, reporting each problem into `diags` and carrying on.
#[derive(Debug)]
pub struct Walker<'a> {
    /// The file, for locations.
    pub file: &'a Path,
    /// Where problems go.
    pub diags: &'a mut Diagnostics,
    /// How unknown keys are reported.
    pub key_hint: KeyHint,
}

impl<'a> Walker<'a> {
    /// A walker of `file` reporting into `diags`, unknown keys with [`KeyHint::Expected`].
    pub fn new(file: &'a Path, diags: &'a mut Diagnostics) -> Self {
        Walker {
            file,
            diags,
            key_hint: KeyHint::Expected,
        }
    }

    /// The same walker with unknown keys reported as `hint` says.
    pub fn with_key_hint(self, hint: KeyHint) -> Self {
        Walker {
            key_hint: hint,
            ..self
        }
    }
}

impl Walker<'_> {
    /// `pos` in this walker's file.
    pub fn loc(&self, pos: Pos) -> Location {
        Location::new(self.file, pos.line, pos.column)
    }

    /// Reports `e` at `pos` concerning `field`.
    pub fn err(&mut self, pos: Pos, field: &str, e: impl Into<Problem>) {
        let d = Diagnostic::new(self.loc(pos), field, e);
        self.diags.push(d);
    }

    /// Reports that `node` is not `expected` (`a string`, `a list`).
    pub fn wrong_type(&mut self, node: &Node, field: &str, expected: &'static str) {
        let found = node.describe();
        self.err(node.pos, field, WalkError::WrongType { expected, found });
    }

    /// The node as a mapping with only `allowed` keys, each once. An unknown key is reported
    /// as unknown (however often it is given), a known key given again as a duplicate.
    pub fn mapping<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let map = self.map(node, field)?;
        let mut fields = Fields {
            pos: node.pos,
            entries: Vec::new(),
        };
        for (k, v) in map {
            let Some(key) = self.key(k, field) else {
                continue;
            };
            if !allowed.contains(&key) {
                let e = WalkError::UnknownKey {
                    key: key.to_owned(),
                    expected: allowed,
                    hint: self.key_hint,
                };
                self.err(k.pos, field, e);
            } else if let Some(first) = fields.key_pos(key) {
                self.duplicate_key(k.pos, field, key, first);
            } else {
                fields.entries.push((key, k.pos, v));
            }
        }
        Some(fields)
    }

    /// A mapping with keys of the author's choosing (names, labels): each key once, in
    /// document order.
    pub fn entries<'n>(&mut self, node: &'n Node, field: &str) -> Option<Vec<(Text, &'n Node)>> {
        let map = self.map(node, field)?;
        let mut out: Vec<(Text, &'n Node)> = Vec::new();
        for (k, v) in map {
            let Some(key) = self.key(k, field) else {
                continue;
            };
            if let Some((first, _)) = out.iter().find(|(t, _)| t.text == key) {
                let first = first.pos;
                self.duplicate_key(k.pos, field, key, first);
                continue;
            }
            let text = Text {
                text: key.to_owned(),
                pos: k.pos,
            };
            out.push((text, v));
        }
        Some(out)
    }

    fn map<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [(Node, Node)]> {
        match &node.kind {
            Kind::Map(map) => Some(map),
            _ => {
                self.wrong_type(node, field, "a mapping");
                None
            }
        }
    }

    fn key<'n>(&mut self, k: &'n Node, field: &str) -> Option<&'n str> {
        match &k.kind {
            Kind::Scalar { value, .. } if !k.is_null() => Some(value),
            _ => {
                self.err(k.pos, field, WalkError::NonStringKey);
                None
            }
        }
    }

    fn duplicate_key(&mut self, pos: Pos, field: &str, key: &str, first: Pos) {
        let e = WalkError::DuplicateKey {
            key: key.to_owned(),
            first_line: first.line,
        };
        self.err(pos, &join(field, key), e);
    }

    /// The value of `key`, reported at the mapping when absent.
    pub fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        field: &str,
        key: &'static str,
    ) -> Option<&'n Node> {
        let node = f.get(key);
        if node.is_none() {
            self.err(f.pos, field, WalkError::MissingKey { key });
        }
        node
    }

    /// A non-null scalar's text (YAML types are not resolved: `5` and `true` are strings too).
    pub fn string(&mut self, node: &Node, field: &str) -> Option<Text> {
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => Some(Text {
                text: value.clone(),
                pos: node.pos,
            }),
            _ => {
                self.wrong_type(node, field, "a string");
                None
            }
        }
    }

    /// The string value of `key`, reported at the mapping when absent.
    pub fn required_string(
        &mut self,
        f: &Fields<'_>,
        field: &str,
        key: &'static str,
    ) -> Option<Text> {
        let node = self.required(f, field, key)?;
        self.string(node, &join(field, key))
    }

    /// The string value of `key`, if given.
    pub fn optional_string(
        &mut self,
        f: &Fields<'_>,
        field: &str,
        key: &'static str,
    ) -> Option<String> {
        let node = f.get(key)?;
        self.string(node, &join(field, key)).map(|t| t.text)
    }

    /// `true` or `false`, unquoted (a quoted `"false"` is a string, and reading it as a
    /// boolean would hide a mistake).
    pub fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar {
                value,
                quoted: false,
            } if value == "true" => Some(true),
            Kind::Scalar {
                value,
                quoted: false,
            } if value == "false" => Some(false),
            Kind::Scalar { value, .. } if !node.is_null() => {
                let found = value.clone();
                self.err(node.pos, field, WalkError::NotBool { found });
                None
            }
            _ => {
                self.wrong_type(node, field, "true or false");
                None
            }
        }
    }

    /// A string read as a duration by `rule` ([`parse_duration`]).
    pub fn duration(&mut self, node: &Node, field: &str, rule: &DurationRule) -> Option<Duration> {
        let t = self.string(node, field)?;
        parse_duration(&t.text, rule)
            .map_err(|e| self.err(t.pos, field, e))
            .ok()
    }

    /// A list, empty or not.
    pub fn seq<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, field, "a list");
                None
            }
        }
    }

    /// A non-empty list; `hint` ends the message for an empty one.
    pub fn list<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        hint: &'static str,
    ) -> Option<&'n [Node]> {
        let items = self.seq(node, field)?;
        if items.is_empty() {
            self.err(node.pos, field, WalkError::EmptyList { hint });
            return None;
        }
        Some(items)
    }

    /// Each string of a non-empty list, with its field path (`field[i]`); repeats reported
    /// and dropped.
    pub fn string_list(
        &mut self,
        node: &Node,
        field: &str,
        hint: &'static str,
    ) -> Vec<(Text, String)> {
        let mut out: Vec<(Text, String)> = Vec::new();
        let items = self.list(node, field, hint).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{i}]");
            let Some(t) = self.string(item, &item_field) else {
                continue;
            };
            if let Some((first, _)) = out.iter().find(|(o, _)| o.text == t.text) {
                let e = WalkError::Duplicate {
                    value: t.text.clone(),
                    first_line: first.pos.line,
                };
                self.err(t.pos, &item_field, e);
                continue;
            }
            out.push((t, item_field));
        }
        out
    }
}

/// "a, b or c".
pub fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// ` (did you mean "x"?)`, or nothing without a suggestion.
pub fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

/// `did you mean "x"?` with a suggestion, else `expected one of: a, b, c`.
pub fn did_you_mean_or_list(suggestion: Option<&str>, expected: &[&str]) -> String {
    match suggestion {
        Some(s) => format!("did you mean {s:?}?"),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo: an edit distance
/// of about a third of the word, compared case-insensitively (`breakGlass` → `break_glass`).
pub fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
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

    #[test]
    fn unknown_key_hints() {
        let e = |hint| {
            WalkError::UnknownKey {
                key: "nme".into(),
                expected: &["name", "description"],
                hint,
            }
            .to_string()
        };
        assert_eq!(
            e(KeyHint::Expected),
            "unknown key \"nme\" (expected name or description)"
        );
        assert_eq!(
            e(KeyHint::DidYouMean),
            "unknown key \"nme\" (did you mean \"name\"?)"
        );
    }
}
