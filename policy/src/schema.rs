//! The schema check: one YAML document to one [`Policy`], reporting every problem found rather
//! than stopping at the first. Unknown keys are errors: a misspelt `operations` must not silently
//! widen a rule to every operation.
use std::collections::HashMap;
use std::path::Path;

use airlock_common::{action, op};

use crate::compiled::{Approval, Mode, OnTimeout, Selector};
use crate::diag::Diagnostics;
use crate::model::{
    ACTIONS, API_VERSION, AgentSpec, KIND, OPERATIONS, PRIVILEGES, PathSpec, Policy, Rule, Target,
};
use crate::values::{self, AGENT_NAME, POLICY_NAME, PathUse, RULE_NAME, TIMEOUT, check_name};
use crate::walk::{Fields, Text, WalkError, Walker, join, one_of};
use crate::yaml::{Node, Pos};

/// Approval timeout when a rule gives none.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

const TOP_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "mode", "agents", "rules"];
const METADATA_KEYS: &[&str] = &["name", "description"];
const AGENT_KEYS: &[&str] = &[
    "name",
    "description",
    "cgroup",
    "cgroups",
    "systemdUnit",
    "systemdUnits",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "action",
    "exec",
    "paths",
    "connect",
    "privilege",
    "operations",
    "agents",
    "timeout",
    "onTimeout",
    "tellAgent",
];

/// A document that does not follow the policy schema, beyond the shape problems every reader
/// of the tree reports ([`crate::walk::WalkError`]) and the value rules it shares with
/// airlock-server's config ([`crate::values::ValueError`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    /// Another `apiVersion`: the rest of the document is not checked.
    #[error("unsupported apiVersion {found:?} (expected {API_VERSION})")]
    ApiVersion { found: String },
    /// Another `kind`: the rest of the document is not checked.
    #[error("unsupported kind {found:?} (expected {KIND})")]
    Kind { found: String },
    /// `mode` is not `enforce` or `monitor`.
    #[error("unknown mode {found:?} (expected enforce or monitor)")]
    UnknownMode { found: String },
    /// `action` is not one of [`crate::ACTIONS`].
    #[error("unknown action {found:?} (expected allow, audit, deny or approve)")]
    UnknownAction { found: String },
    /// An `operations` entry is not one of [`crate::OPERATIONS`].
    #[error("unknown operation {found:?} (expected {})", one_of(&OPERATIONS.map(|(n, _)| n)))]
    UnknownOperation { found: String },
    /// `onTimeout` is not `deny` or `allow`.
    #[error("unknown onTimeout {found:?} (expected deny or allow)")]
    UnknownOnTimeout { found: String },
    /// Two rules of one policy share a name.
    #[error("duplicate rule name {name:?} (first at line {first_line})")]
    DuplicateRule { name: String, first_line: usize },
    /// A rule with more than one of `exec`, `paths`, `connect`, `privilege`.
    #[error("a rule has one of exec, paths, connect or privilege, not several")]
    SeveralTargets,
    /// A rule with none of `exec`, `paths`, `connect`, `privilege`.
    #[error(
        "a rule needs exec (binaries to gate), paths (trees and files to protect), connect \
         (local service sockets to gate) or privilege (privilege changes to gate)"
    )]
    NoTarget,
    /// A `privilege` entry is not one of [`crate::PRIVILEGES`].
    #[error("unknown privilege change {found:?} (expected {})", one_of(&PRIVILEGES.map(|(n, _)| n)))]
    UnknownPrivilege { found: String },
    /// A path that is relative, not normal, or unusable for its purpose.
    #[error("path {path:?} {reason}")]
    BadPath { path: String, reason: &'static str },
    /// `timeout` or `onTimeout` on a rule whose action is not `approve`.
    #[error("only valid with action approve")]
    ApprovalOnly,
    /// `operations` on an `exec`, `connect` or `privilege` rule.
    #[error("only valid with paths; other rules gate what they list")]
    OperationsOnExec,
}

/// Checks one document. Returns the policy as far as it could be read, even when problems were
/// reported, so that checks across policies (duplicate names, unknown agents) still run and the
/// operator sees everything at once; the caller discards it if `diags` grew. Returns `None` when
/// the document is not a policy at all (not a mapping, another apiVersion or kind).
pub(crate) fn policy_from_node(doc: &Node, file: &Path, diags: &mut Diagnostics) -> Option<Policy> {
    // Key problems are held back until the header says this is a policy at all.
    let mut key_diags = Diagnostics::default();
    let top = Walker::new(file, &mut key_diags).mapping(doc, "", TOP_KEYS);
    let mut w = Walker::new(file, diags);
    let Some(top) = top else {
        w.diags.extend(key_diags);
        return None;
    };

    let mut foreign = false;
    if let Some(v) = w.required_string(&top, "", "apiVersion")
        && v.text != API_VERSION
    {
        w.err(
            v.pos,
            "apiVersion",
            SchemaError::ApiVersion { found: v.text },
        );
        foreign = true;
    }
    if let Some(v) = w.required_string(&top, "", "kind")
        && v.text != KIND
    {
        w.err(v.pos, "kind", SchemaError::Kind { found: v.text });
        foreign = true;
    }
    if foreign {
        // The rest of a document of another version or kind follows another schema; listing
        // its keys as unknown would only bury the real problem.
        return None;
    }
    w.diags.extend(key_diags);

    let mut name = String::new();
    let mut description = None;
    let mut name_location = w.loc(top.pos);
    if let Some(meta_node) = w.required(&top, "", "metadata")
        && let Some(meta) = w.mapping(meta_node, "metadata", METADATA_KEYS)
    {
        if let Some(v) = w.required_string(&meta, "metadata", "name") {
            name_location = w.loc(v.pos);
            match check_name(&v.text, &POLICY_NAME) {
                Ok(()) => name = v.text,
                Err(e) => w.err(v.pos, "metadata.name", e),
            }
        }
        description = w.optional_string(&meta, "metadata", "description");
    }

    let mut mode = Mode::Enforce;
    if let Some(v) = w.required_string(&top, "", "mode") {
        match v.text.as_str() {
            "enforce" => mode = Mode::Enforce,
            "monitor" => mode = Mode::Monitor,
            _ => w.err(v.pos, "mode", SchemaError::UnknownMode { found: v.text }),
        }
    }

    let mut agents = Vec::new();
    if let Some(list) = top.get("agents").and_then(|n| w.list(n, "agents", "")) {
        for (i, node) in list.iter().enumerate() {
            if let Some(agent) = w.agent(node, &format!("agents[{i}]")) {
                agents.push(agent);
            }
        }
    }

    let mut rules = Vec::new();
    let mut rule_names: HashMap<String, usize> = HashMap::new();
    if let Some(list) = top.get("rules").and_then(|n| w.list(n, "rules", "")) {
        for (i, node) in list.iter().enumerate() {
            let field = format!("rules[{i}]");
            let Some((rule, name_pos)) = w.rule(node, &field) else {
                continue;
            };
            if !rule.name.is_empty() {
                if let Some(&first_line) = rule_names.get(&rule.name) {
                    let e = SchemaError::DuplicateRule {
                        name: rule.name.clone(),
                        first_line,
                    };
                    w.err(name_pos, &join(&field, "name"), e);
                } else {
                    rule_names.insert(rule.name.clone(), name_pos.line);
                }
            }
            rules.push(rule);
        }
    }

    Some(Policy {
        name,
        description,
        mode,
        agents,
        rules,
        location: w.loc(doc.pos),
        name_location,
    })
}

/// The policy's parts, read on top of the shared walker.
impl Walker<'_> {
    fn agent(&mut self, node: &Node, field: &str) -> Option<AgentSpec> {
        let f = self.mapping(node, field, AGENT_KEYS)?;
        let name_text = self.required_string(&f, field, "name");
        let mut name = String::new();
        let mut location = self.loc(f.pos);
        if let Some(t) = name_text {
            location = self.loc(t.pos);
            match check_name(&t.text, &AGENT_NAME) {
                Ok(()) => name = t.text,
                Err(e) => self.err(t.pos, &join(field, "name"), e),
            }
        }
        let description = self.optional_string(&f, field, "description");

        let mut globs: Vec<(Text, String, bool)> = Vec::new();
        for (key, is_unit, many) in [
            ("cgroup", false, false),
            ("cgroups", false, true),
            ("systemdUnit", true, false),
            ("systemdUnits", true, true),
        ] {
            let Some(node) = f.get(key) else { continue };
            let key_field = join(field, key);
            if many {
                for (t, item_field) in self.string_list(node, &key_field, "") {
                    globs.push((t, item_field, is_unit));
                }
            } else if let Some(t) = self.string(node, &key_field) {
                globs.push((t, key_field, is_unit));
            }
        }
        let mut selectors = Vec::new();
        for (t, glob_field, is_unit) in globs {
            let checked = if is_unit {
                values::check_unit_glob(&t.text)
            } else {
                values::check_cgroup_glob(&t.text)
            };
            match checked {
                Err(e) => self.err(t.pos, &glob_field, e),
                Ok(()) if is_unit => selectors.push(Selector::SystemdUnit(t.text)),
                Ok(()) => selectors.push(Selector::Cgroup(t.text)),
            }
        }
        Some(AgentSpec {
            name,
            description,
            selectors,
            location,
        })
    }

    /// The rule, and where its name is (for duplicate-name reports).
    fn rule(&mut self, node: &Node, field: &str) -> Option<(Rule, Pos)> {
        let f = self.mapping(node, field, RULE_KEYS)?;
        let mut name = String::new();
        let mut name_pos = f.pos;
        if let Some(t) = self.required_string(&f, field, "name") {
            name_pos = t.pos;
            match check_name(&t.text, &RULE_NAME) {
                Ok(()) => name = t.text,
                Err(e) => self.err(t.pos, &join(field, "name"), e),
            }
        }
        let description = self.optional_string(&f, field, "description");

        let mut rule_action = None;
        if let Some(t) = self.required_string(&f, field, "action") {
            match ACTIONS.iter().find(|(n, _)| *n == t.text) {
                Some((_, a)) => rule_action = Some(*a),
                None => {
                    let e = SchemaError::UnknownAction { found: t.text };
                    self.err(t.pos, &join(field, "action"), e);
                }
            }
        }

        let mut privilege_ops = 0;
        let given: Vec<&str> = ["exec", "paths", "connect", "privilege"]
            .into_iter()
            .filter(|k| f.get(k).is_some())
            .collect();
        let target = match given.as_slice() {
            [] => {
                self.err(f.pos, field, SchemaError::NoTarget);
                Target::Paths(Vec::new())
            }
            [key] => {
                let (n, sub) = (f.get(key).expect("present"), join(field, key));
                match *key {
                    "exec" => Target::Exec(self.paths(n, &sub, PathUse::Exec)),
                    "connect" => Target::Connect(self.paths(n, &sub, PathUse::Socket)),
                    "privilege" => {
                        for (t, item_field) in self.string_list(n, &sub, "") {
                            match PRIVILEGES.iter().find(|(name, _)| *name == t.text) {
                                Some((_, o)) => privilege_ops |= op::bit(*o),
                                None => {
                                    let e = SchemaError::UnknownPrivilege { found: t.text };
                                    self.err(t.pos, &item_field, e);
                                }
                            }
                        }
                        Target::Privilege
                    }
                    _ => Target::Paths(self.paths(n, &sub, PathUse::Protect)),
                }
            }
            several => {
                let later = several.iter().filter_map(|k| f.key_pos(k)).max();
                self.err(later.unwrap_or(f.pos), field, SchemaError::SeveralTargets);
                Target::Paths(Vec::new())
            }
        };

        let mut ops = match target {
            Target::Exec(_) => op::bit(op::EXEC),
            Target::Connect(_) => op::bit(op::CONNECT),
            Target::Privilege => privilege_ops,
            Target::Paths(_) => op::ALL_WRITES,
        };
        if let Some(n) = f.get("operations") {
            let ops_field = join(field, "operations");
            if !matches!(target, Target::Paths(_)) {
                let pos = f.key_pos("operations").unwrap_or(n.pos);
                self.err(pos, &ops_field, SchemaError::OperationsOnExec);
            } else {
                ops = 0;
                for (t, item_field) in self.string_list(n, &ops_field, "; leave it out for all") {
                    match OPERATIONS.iter().find(|(name, _)| *name == t.text) {
                        Some((_, o)) => ops |= op::bit(*o),
                        None => {
                            let e = SchemaError::UnknownOperation { found: t.text };
                            self.err(t.pos, &item_field, e);
                        }
                    }
                }
            }
        }

        let mut agents = Vec::new();
        if let Some(n) = f.get("agents") {
            let hint = " (leave it out to apply the rule to every agent)";
            for (t, item_field) in self.string_list(n, &join(field, "agents"), hint) {
                match check_name(&t.text, &AGENT_NAME) {
                    Ok(()) => agents.push((t.text, self.loc(t.pos))),
                    Err(e) => self.err(t.pos, &item_field, e),
                }
            }
        }

        let approval = self.approval(&f, field, rule_action);
        let rule = Rule {
            name,
            description,
            action: rule_action.unwrap_or(action::DENY),
            target,
            ops,
            agents,
            approval,
            location: self.loc(f.pos),
        };
        Some((rule, name_pos))
    }

    fn approval(
        &mut self,
        f: &Fields<'_>,
        field: &str,
        rule_action: Option<u32>,
    ) -> Option<Approval> {
        let is_approve = rule_action == Some(action::APPROVE);
        if rule_action.is_some() && !is_approve {
            // With an unknown action, whether these belong is unknowable: say nothing.
            for key in ["timeout", "onTimeout", "tellAgent"] {
                if let Some(pos) = f.key_pos(key) {
                    self.err(pos, &join(field, key), SchemaError::ApprovalOnly);
                }
            }
            return None;
        }
        let mut approval = Approval {
            timeout: DEFAULT_TIMEOUT,
            on_timeout: OnTimeout::Deny,
            tell_agent: true,
        };
        if let Some(b) = f
            .get("tellAgent")
            .and_then(|n| self.bool(n, &join(field, "tellAgent")))
        {
            approval.tell_agent = b;
        }
        if let Some(d) = f
            .get("timeout")
            .and_then(|n| self.duration(n, &join(field, "timeout"), &TIMEOUT))
        {
            approval.timeout = d;
        }
        if let Some(n) = f.get("onTimeout") {
            let on_field = join(field, "onTimeout");
            if let Some(t) = self.string(n, &on_field) {
                match t.text.as_str() {
                    "deny" => approval.on_timeout = OnTimeout::Deny,
                    "allow" => approval.on_timeout = OnTimeout::Allow,
                    _ => self.err(
                        t.pos,
                        &on_field,
                        SchemaError::UnknownOnTimeout { found: t.text },
                    ),
                }
            }
        }
        is_approve.then_some(approval)
    }

    fn paths(&mut self, node: &Node, field: &str, usage: PathUse) -> Vec<PathSpec> {
        let mut out: Vec<PathSpec> = Vec::new();
        for (t, item_field) in self.string_list(node, field, "") {
            match values::check_path(&t.text, usage) {
                Err(e) => self.err(t.pos, &item_field, e),
                Ok(path) => {
                    // `/etc` and `/etc/` are one tree; string_list only caught exact repeats.
                    if let Some(first) = out.iter().find(|p| p.path == path) {
                        let e = WalkError::Duplicate {
                            value: t.text,
                            first_line: first.location.line,
                        };
                        self.err(t.pos, &item_field, e);
                        continue;
                    }
                    out.push(PathSpec {
                        path,
                        location: self.loc(t.pos),
                    });
                }
            }
        }
        out
    }
}
