//! A YAML document tree that remembers where every node is.
//!
//! Built from `saphyr-parser` events rather than through serde so that semantic checks (duplicate
//! names, unknown agents) can point at the offending node, and so that duplicate mapping keys are
//! visible (a map type would keep only the last one, silently).
use std::path::Path;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::{Diagnostic, Location};

/// A 1-based line and column (ordered by line, then column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts (for a mapping or list: its first key or item, or its `{`/`[`).
    pub pos: Pos,
    /// What the node holds.
    pub kind: Kind,
}

/// What a [`Node`] holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A scalar as written (YAML types are not resolved: `true` and `5` stay text).
    Scalar {
        /// The text, unescaped.
        value: String,
        /// Written in quotes or as a block scalar (so `"true"` is not the boolean).
        quoted: bool,
    },
    /// A list, in document order.
    Seq(Vec<Node>),
    /// Keys in document order, duplicates kept (the schema reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain `~`, `null` or empty scalar: what `key:` with nothing after it parses to.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, quoted: false }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Why a file is not acceptable YAML for a policy (or the other files read this way).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum YamlError {
    /// The parser gave up; nothing after this point was read.
    #[error("YAML syntax error: {0}")]
    Syntax(String),
    /// Aliases would let one node stand for another elsewhere in the file; a policy should read
    /// the same to a human as to airlock, so they are refused.
    #[error("aliases (*{name}) are not supported in {what}; write the value out")]
    Alias {
        /// The anchor the alias names.
        name: String,
        /// The kind of file, as given to [`parse_documents`] (`policy files`).
        what: &'static str,
    },
    /// Tags change how a value is interpreted, which nothing in a policy needs.
    #[error("tag {tag} is not supported in {what} (only !!str)")]
    Tag {
        /// The tag as resolved (`tag:yaml.org,2002:int`).
        tag: String,
        /// The kind of file, as given to [`parse_documents`].
        what: &'static str,
    },
}

/// A located YAML error.
#[derive(Debug, PartialEq, Eq)]
pub struct Located {
    /// Where the parser stopped, or the refused alias or tag.
    pub pos: Pos,
    /// What is wrong.
    pub error: YamlError,
}

impl Located {
    /// The error as a diagnostic of `file`, concerning no field.
    pub fn diagnostic(self, file: &Path) -> Diagnostic {
        let loc = Location::new(file, self.pos.line, self.pos.column);
        Diagnostic::new(loc, "", self.error)
    }
}

/// Parses every document of `src`; `what` names the kind of file in messages (`policy files`,
/// `the server config`). Empty documents (a lone `---`, a file of comments) are left out. On a
/// syntax error the documents before it are discarded too: the caller reports the one error,
/// since everything after the parser gave up is unknown.
pub fn parse_documents(src: &str, what: &'static str) -> Result<Vec<Node>, Vec<Located>> {
    let mut builder = Builder {
        src,
        what,
        stack: Vec::new(),
        docs: Vec::new(),
        errors: Vec::new(),
    };
    for event in Parser::new_from_str(src) {
        match event {
            Ok((ev, span)) => builder.on_event(ev, &span),
            Err(e) => {
                let pos = Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                };
                builder.errors.push(Located {
                    pos,
                    error: YamlError::Syntax(e.info().to_owned()),
                });
                return Err(builder.errors);
            }
        }
    }
    if builder.errors.is_empty() {
        Ok(builder.docs)
    } else {
        Err(builder.errors)
    }
}

/// A collection being filled: a sequence, or a mapping with maybe a key waiting for its value.
enum Open {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

struct Builder<'s> {
    src: &'s str,
    what: &'static str,
    stack: Vec<Open>,
    docs: Vec<Node>,
    errors: Vec<Located>,
}

impl Builder<'_> {
    fn on_event(&mut self, ev: Event<'_>, span: &Span) {
        let pos = Pos::of(span);
        match ev {
            Event::Scalar(value, style, _anchor, tag) => {
                if let Some(tag) = tag {
                    let is_str = tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str";
                    if !is_str {
                        let tag = format!("{}{}", tag.handle, tag.suffix);
                        let what = self.what;
                        self.errors.push(Located {
                            pos,
                            error: YamlError::Tag { tag, what },
                        });
                    }
                }
                let quoted = !matches!(style, ScalarStyle::Plain);
                self.add(Node {
                    pos,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        quoted,
                    },
                });
            }
            Event::SequenceStart(_, tag) => {
                self.check_collection_tag(pos, tag.as_deref());
                self.stack.push(Open::Seq(pos, Vec::new()));
            }
            Event::MappingStart(_, tag) => {
                self.check_collection_tag(pos, tag.as_deref());
                self.stack.push(Open::Map(pos, Vec::new(), None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Seq(pos, items)) => Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    Some(Open::Map(pos, entries, _)) => Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    None => return,
                };
                self.add(node);
            }
            Event::Alias(_) => {
                // The event carries the anchor id only; the name is in the source under the span.
                let name: String = self
                    .src
                    .chars()
                    .skip(span.start.index() + 1)
                    .take(span.len().saturating_sub(1))
                    .collect();
                let what = self.what;
                self.errors.push(Located {
                    pos,
                    error: YamlError::Alias { name, what },
                });
                // Keep the tree shape so later checks still see a value here.
                self.add(Node {
                    pos,
                    kind: Kind::Scalar {
                        value: String::new(),
                        quoted: true,
                    },
                });
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
    }

    fn check_collection_tag(&mut self, pos: Pos, tag: Option<&saphyr_parser::Tag>) {
        if let Some(tag) = tag {
            let tag = format!("{}{}", tag.handle, tag.suffix);
            let what = self.what;
            self.errors.push(Located {
                pos,
                error: YamlError::Tag { tag, what },
            });
        }
    }

    fn add(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if !node.is_null() {
                    self.docs.push(node);
                }
            }
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_documents(src: &str) -> Result<Vec<Node>, Vec<Located>> {
        super::parse_documents(src, "policy files")
    }

    fn scalar(n: &Node) -> &str {
        match &n.kind {
            Kind::Scalar { value, .. } => value,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based_and_point_at_the_node() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - 'y'\n").unwrap();
        assert_eq!(docs.len(), 1);
        let Kind::Map(entries) = &docs[0].kind else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 4, column: 5 });
        assert_eq!(scalar(&items[1]), "y");
        assert!(matches!(items[1].kind, Kind::Scalar { quoted: true, .. }));
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_schema_to_report() {
        let docs = parse_documents("a: 1\na: 2\n").unwrap();
        let Kind::Map(entries) = &docs[0].kind else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn empty_documents_are_skipped() {
        let docs = parse_documents("# only a comment\n---\na: 1\n---\n").unwrap();
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn syntax_error_is_located() {
        let errs = parse_documents("a: b\n  c: d\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].pos, Pos { line: 2, column: 4 });
        assert!(matches!(errs[0].error, YamlError::Syntax(_)));
    }

    #[test]
    fn aliases_and_foreign_tags_are_refused_but_str_tag_is_fine() {
        let errs = parse_documents("a: &x b\nc: *x\nd: !!int 5\ne: !!str 5\n").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].pos, Pos { line: 2, column: 4 });
        let alias = YamlError::Alias {
            name: "x".into(),
            what: "policy files",
        };
        assert_eq!(errs[0].error, alias);
        assert_eq!(
            alias.to_string(),
            "aliases (*x) are not supported in policy files; write the value out"
        );
        assert_eq!(errs[1].pos, Pos { line: 3, column: 4 });
        assert!(matches!(errs[1].error, YamlError::Tag { .. }));
    }
}
