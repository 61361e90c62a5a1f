//! Load, validate and compile in one call, with one kind of error: what `airlock policy check`
//! runs, and what `airlockd` runs at start so that it refuses a bad policy with the very same
//! messages.
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::compile::{CompileError, compile};
use crate::compiled::CompiledPolicy;
use crate::diag::Diagnostics;
use crate::load::load_paths;
use crate::model::{Policy, Target, action_name, mode_name, op_names};
use crate::resolve::Resolver;

/// The policies loaded and what they compiled to.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The policies as written, in load order.
    pub policies: Vec<Policy>,
    /// What they compiled to on this host.
    pub compiled: CompiledPolicy,
}

/// Loads `paths` (files or directories, see [`load_paths`]) and compiles them through
/// `resolver`. The error displays one `file:line:column: message` per line.
pub fn load_and_compile(
    paths: &[PathBuf],
    resolver: &dyn Resolver,
) -> Result<Checked, Diagnostics> {
    let policies = load_paths(paths)?;
    let compiled = compile(&policies, resolver).map_err(|e| match e {
        CompileError::Invalid(d) => d,
    })?;
    Ok(Checked { policies, compiled })
}

impl Checked {
    /// A few lines for an operator: per policy its name, mode, file, agents and rules; then the
    /// notes (binaries not installed, paths missing).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for p in &self.policies {
            let agents: Vec<&str> = p.agents.iter().map(|a| a.name.as_str()).collect();
            let _ = writeln!(
                s,
                "policy {} ({}) from {}: {} agent{}{}, {} rule{}",
                p.name,
                mode_name(p.mode),
                p.location.file.display(),
                agents.len(),
                plural(agents.len()),
                if agents.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", agents.join(", "))
                },
                p.rules.len(),
                plural(p.rules.len()),
            );
            for r in &p.rules {
                let (what, n, noun) = match &r.target {
                    Target::Exec(v) => ("exec of", v.len(), "binar"),
                    Target::Paths(v) => ("writes to", v.len(), "path"),
                    Target::Connect(v) => ("connections to", v.len(), "socket"),
                    Target::Privilege => ("changes of", op_names(r.ops).len(), "privilege"),
                };
                let suffix = match (noun, n) {
                    ("binar", 1) => "y",
                    ("binar", _) => "ies",
                    (_, 1) => "",
                    _ => "s",
                };
                let _ = writeln!(
                    s,
                    "  rule {}: {} {what} {n} {noun}{suffix}",
                    r.name,
                    action_name(r.action)
                );
            }
        }
        let c = &self.compiled;
        let _ = writeln!(
            s,
            "compiled: {} rules, {} exec targets, {} protected targets, {} socket targets, {} notes",
            c.rules.len(),
            c.exec.len(),
            c.protected.len(),
            c.connect.len(),
            c.notes.len()
        );
        for note in &c.notes {
            let _ = writeln!(s, "note: {note}");
        }
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
