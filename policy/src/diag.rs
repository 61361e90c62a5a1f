//! Diagnostics: every problem found in a policy file, with the file, line and column it is at.
//!
//! Each module has its own error enum for the distinct failures it detects; a [`Diagnostic`]
//! pairs one of them with a location and the dotted field it concerns (`rules[2].action`), so the
//! operator reads `policies/bad.yaml:12:9: rules[2].action: unknown action "block" ...`.
use std::fmt;
use std::path::{Path, PathBuf};

use crate::load::LoadError;
use crate::schema::SchemaError;
use crate::validate::SetError;
use crate::values::ValueError;
use crate::walk::WalkError;
use crate::yaml::YamlError;

/// A position in a policy file. `line` and `column` are 1-based; both are 0 when the problem
/// concerns the file as a whole (it cannot be read, it holds no policy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as it was named to the loader (a directory's files are `DIR/NAME`).
    pub file: PathBuf,
    /// 1-based line; 0 for the whole file.
    pub line: usize,
    /// 1-based column in characters; 0 for the whole file.
    pub column: usize,
}

impl Location {
    /// A position inside `file`.
    pub fn new(file: &Path, line: usize, column: usize) -> Self {
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    }

    /// The file as a whole.
    pub fn whole_file(file: &Path) -> Self {
        Location::new(file, 0, 0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// What is wrong, by the stage that found it.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file could not be read or holds no policy.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The file is not well-formed YAML, or uses YAML features policies do not allow.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// A document's shape is not what its reader expects (wrong type, unknown or duplicate
    /// key, missing key, empty list): found by the shared [`Walker`](crate::walk::Walker).
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// A name, glob or duration its rule does not accept ([`crate::values`]).
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A document does not follow the policy schema.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Policies loaded together contradict each other (duplicate names, unknown agents).
    #[error(transparent)]
    Set(#[from] SetError),
    /// A problem found by another reader of the located YAML tree (airlock-server's config)
    /// in its own error type, so its files report `file:line:col: field: message` like policies.
    /// `downcast_ref` recovers the original.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// One problem at one place.
#[derive(Debug)]
pub struct Diagnostic {
    /// Where the problem is.
    pub location: Location,
    /// Dotted path of the field concerned (`rules[2].action`); empty for the document or file.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl Diagnostic {
    /// A problem at `location` concerning `field`.
    pub fn new(location: Location, field: impl Into<String>, problem: impl Into<Problem>) -> Self {
        Diagnostic {
            location,
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The message without the location (`rules[2].action: unknown action ...`).
    pub fn message(&self) -> String {
        if self.field.is_empty() {
            self.problem.to_string()
        } else {
            format!("{}: {}", self.field, self.problem)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message())
    }
}

/// All problems found, in file order. Displays one diagnostic per line (no trailing newline),
/// which is what `airlock policy check` and `airlockd` print.
#[derive(Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// No problems found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Each diagnostic.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub(crate) fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Sorted by file, then position, so output follows the files regardless of which check
    /// found what first.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.location.file, a.location.line, a.location.column).cmp(&(
                &b.location.file,
                b.location.line,
                b.location.column,
            ))
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
