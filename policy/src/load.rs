//! Reading policy files and directories into [`Policy`]s, with every problem of every file.
use std::io;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::model::Policy;
use crate::schema::policy_from_node;
use crate::validate::validate_set;
use crate::yaml::parse_documents;

/// A file or directory that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] io::Error),
    /// The directory could not be listed.
    #[error("cannot list directory: {0}")]
    ReadDir(#[source] io::Error),
    /// Policies are UTF-8 YAML.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// Only comments or empty documents: most likely a mistake, never a policy.
    #[error("holds no policy document")]
    NoDocuments,
    /// A policy directory with nothing to load: the daemon would gate nothing.
    #[error("directory holds no *.yaml or *.yml file")]
    EmptyDir,
}

/// Loads policy files. A directory stands for the `*.yaml` and `*.yml` files directly in it
/// (not in subdirectories; hidden files skipped), in name order. Returns every problem of every
/// file, and of the files taken together (duplicate names, unknown agents), or the policies.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Policy>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut policies = Vec::new();
    for path in paths {
        for file in expand(path, &mut diags) {
            match std::fs::read(&file) {
                Err(e) => diags.push(Diagnostic::new(
                    Location::whole_file(&file),
                    "",
                    LoadError::Read(e),
                )),
                Ok(bytes) => match String::from_utf8(bytes) {
                    Err(_) => diags.push(Diagnostic::new(
                        Location::whole_file(&file),
                        "",
                        LoadError::NotUtf8,
                    )),
                    Ok(src) => policies.extend(parse_file(&file, &src, &mut diags)),
                },
            }
        }
    }
    finish(policies, diags)
}

/// Parses the text of one file as if loaded from `file` (which is only used in messages), with
/// the same checks as [`load_paths`].
pub fn parse_str(file: &Path, src: &str) -> Result<Vec<Policy>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let policies = parse_file(file, src, &mut diags);
    finish(policies, diags)
}

fn finish(policies: Vec<Policy>, mut diags: Diagnostics) -> Result<Vec<Policy>, Diagnostics> {
    // Cross-policy checks run over partially read policies too, so that a typo in one file and
    // a duplicate name in another are reported together.
    diags.extend(validate_set(&policies));
    if diags.is_empty() {
        Ok(policies)
    } else {
        diags.sort();
        Err(diags)
    }
}

/// The policies of one file, as far as they could be read; problems go to `diags`.
fn parse_file(file: &Path, src: &str, diags: &mut Diagnostics) -> Vec<Policy> {
    let docs = match parse_documents(src, "policy files") {
        Ok(docs) => docs,
        Err(errors) => {
            for e in errors {
                diags.push(e.diagnostic(file));
            }
            return Vec::new();
        }
    };
    if docs.is_empty() {
        diags.push(Diagnostic::new(
            Location::whole_file(file),
            "",
            LoadError::NoDocuments,
        ));
    }
    docs.iter()
        .filter_map(|doc| policy_from_node(doc, file, diags))
        .collect()
}

/// The files `path` stands for.
fn expand(path: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            diags.push(Diagnostic::new(
                Location::whole_file(path),
                "",
                LoadError::ReadDir(e),
            ));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                diags.push(Diagnostic::new(
                    Location::whole_file(path),
                    "",
                    LoadError::ReadDir(e),
                ));
                continue;
            }
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        // Following symlinks: a policy directory managed by config management often links files.
        if is_yaml && !name.starts_with('.') && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        diags.push(Diagnostic::new(
            Location::whole_file(path),
            "",
            LoadError::EmptyDir,
        ));
    }
    files.sort();
    files
}
