//! Walking the located YAML tree: typed access to mappings, lists and strings that reports
//! wrong types, unknown and duplicate keys, and missing required keys as it goes.
use std::path::Path;

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::schema::SchemaError;
use crate::yaml::{Kind, Node, Pos};

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
pub(crate) struct Text {
    pub text: String,
    pub pos: Pos,
}

/// Reads one document of one file, reporting each problem into `diags` and carrying on.
pub(crate) struct Walker<'a> {
    pub file: &'a Path,
    pub diags: &'a mut Diagnostics,
}

impl Walker<'_> {
    pub(crate) fn loc(&self, pos: Pos) -> Location {
        Location::new(self.file, pos.line, pos.column)
    }

    pub(crate) fn err(&mut self, pos: Pos, field: &str, e: SchemaError) {
        let d = Diagnostic::new(self.loc(pos), field, e);
        self.diags.push(d);
    }

    pub(crate) fn wrong_type(&mut self, node: &Node, field: &str, expected: &'static str) {
        self.err(
            node.pos,
            field,
            SchemaError::WrongType {
                expected,
                found: node.describe(),
            },
        );
    }

    /// The node as a mapping with only `allowed` keys, each once.
    pub(crate) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.wrong_type(node, field, "a mapping");
            return None;
        };
        let mut fields = Fields {
            pos: node.pos,
            entries: Vec::new(),
        };
        for (k, v) in entries {
            let key = match &k.kind {
                Kind::Scalar { value, .. } if !k.is_null() => value.as_str(),
                _ => {
                    self.err(k.pos, field, SchemaError::NonStringKey);
                    continue;
                }
            };
            if !allowed.contains(&key) {
                let e = SchemaError::UnknownKey {
                    key: key.to_owned(),
                    expected: allowed,
                };
                self.err(k.pos, field, e);
            } else if let Some(first) = fields.key_pos(key) {
                let e = SchemaError::DuplicateKey {
                    key: key.to_owned(),
                    first_line: first.line,
                };
                self.err(k.pos, &join(field, key), e);
            } else {
                fields.entries.push((key, k.pos, v));
            }
        }
        Some(fields)
    }

    pub(crate) fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        field: &str,
        key: &'static str,
    ) -> Option<&'n Node> {
        let node = f.get(key);
        if node.is_none() {
            self.err(f.pos, field, SchemaError::MissingKey { key });
        }
        node
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

    pub(crate) fn required_string(
        &mut self,
        f: &Fields<'_>,
        field: &str,
        key: &'static str,
    ) -> Option<Text> {
        let node = self.required(f, field, key)?;
        self.string(node, &join(field, key))
    }

    pub(crate) fn optional_string(
        &mut self,
        f: &Fields<'_>,
        field: &str,
        key: &'static str,
    ) -> Option<String> {
        let node = f.get(key)?;
        self.string(node, &join(field, key)).map(|t| t.text)
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
                self.err(node.pos, field, SchemaError::EmptyList { hint });
                None
            }
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, field, "a list");
                None
            }
        }
    }

    /// Each string of a non-empty list, with its field path; duplicates reported.
    pub(crate) fn string_list(
        &mut self,
        node: &Node,
        field: &str,
        hint: &'static str,
    ) -> Vec<(Text, String)> {
        let mut out: Vec<(Text, String)> = Vec::new();
        for (i, item) in self
            .list(node, field, hint)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let item_field = format!("{field}[{i}]");
            let Some(t) = self.string(item, &item_field) else {
                continue;
            };
            if let Some((first, _)) = out.iter().find(|(o, _)| o.text == t.text) {
                let e = SchemaError::Duplicate {
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
