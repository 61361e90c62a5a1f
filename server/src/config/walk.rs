//! Typed access to the located YAML tree (the policy crate's), reporting wrong types, unknown
//! keys (with "did you mean"), duplicate keys and empty lists as it goes, and carrying on, so
//! that one `config check` shows every problem.
use std::path::Path;

use airlock_policy::yaml::{Kind, Node, Pos};
use airlock_policy::{Diagnostic, Diagnostics, Location};

use super::problem::{ConfigProblem, closest};

/// `prefix.key`, or `key` at the top level.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A mapping's known keys, each with where the key was written.
pub(crate) struct Fields<'n> {
    pub pos: Pos,
    pub entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    pub(crate) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, p, _)| *p)
    }
}

/// A string value and where it is.
#[derive(Clone, Debug)]
pub(crate) struct Text {
    pub text: String,
    pub pos: Pos,
}

/// Reads the config document, collecting problems.
pub(crate) struct Walker<'a> {
    pub file: &'a Path,
    pub diags: Diagnostics,
}

impl Walker<'_> {
    pub(crate) fn loc(&self, pos: Pos) -> Location {
        Location::new(self.file, pos.line, pos.column)
    }

    pub(crate) fn err(&mut self, pos: Pos, field: &str, e: ConfigProblem) {
        let d = Diagnostic::new(self.loc(pos), field, e);
        self.diags.push(d);
    }

    pub(crate) fn wrong_type(&mut self, node: &Node, field: &str, expected: &'static str) {
        let found = node.describe();
        self.err(
            node.pos,
            field,
            ConfigProblem::WrongType { expected, found },
        );
    }

    /// The node as a mapping with only `allowed` keys, each once.
    pub(crate) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let mut fields = Fields {
            pos: node.pos,
            entries: Vec::new(),
        };
        for (key, value) in self.entries(node, field)? {
            if let Some(&known) = allowed.iter().find(|k| **k == key.text) {
                fields.entries.push((known, key.pos, value));
            } else {
                let e = ConfigProblem::UnknownKey {
                    suggestion: closest(&key.text, allowed.iter().copied()),
                    key: key.text,
                    expected: allowed,
                };
                self.err(key.pos, field, e);
            }
        }
        Some(fields)
    }

    /// A mapping with keys of the operator's choosing (principal names, labels): each key once.
    pub(crate) fn entries<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
    ) -> Option<Vec<(Text, &'n Node)>> {
        let Kind::Map(map) = &node.kind else {
            self.wrong_type(node, field, "a mapping");
            return None;
        };
        let mut out: Vec<(Text, &'n Node)> = Vec::new();
        for (k, v) in map {
            let key = match &k.kind {
                Kind::Scalar { value, .. } if !k.is_null() => value,
                _ => {
                    self.err(k.pos, field, ConfigProblem::NonStringKey);
                    continue;
                }
            };
            if let Some((first, _)) = out.iter().find(|(t, _)| t.text == *key) {
                let e = ConfigProblem::DuplicateKey {
                    key: key.clone(),
                    first_line: first.pos.line,
                };
                self.err(k.pos, &join(field, key), e);
                continue;
            }
            let text = Text {
                text: key.clone(),
                pos: k.pos,
            };
            out.push((text, v));
        }
        Some(out)
    }

    pub(crate) fn string(&mut self, node: &Node, field: &str) -> Option<Text> {
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

    /// `true` or `false`, unquoted (a quoted `"false"` is a string, and reading it as a
    /// boolean would hide a mistake).
    pub(crate) fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
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
                self.err(node.pos, field, ConfigProblem::BadBool { found });
                None
            }
            _ => {
                self.wrong_type(node, field, "true or false");
                None
            }
        }
    }

    /// A non-empty list.
    pub(crate) fn list<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        hint: &'static str,
    ) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) if items.is_empty() => {
                self.err(node.pos, field, ConfigProblem::Empty { hint });
                None
            }
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, field, "a list");
                None
            }
        }
    }

    /// Each string of a non-empty list, with its field path; repeats reported and dropped.
    pub(crate) fn string_list(
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
                let e = ConfigProblem::Duplicate {
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
