//! Checks across all policies loaded together: names that must be unique, agents that must
//! exist. Run by the loader (so `airlock policy check` reports them with everything else) and
//! again by [`crate::compile`], which may be handed policies from anywhere.
use std::collections::HashMap;

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::model::Policy;

/// Policies that contradict each other.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetError {
    /// `metadata.name` seen before, at `first`.
    #[error("duplicate policy name {name:?} (first at {first})")]
    DuplicatePolicy { name: String, first: Location },
    /// Agent names are global: `airlock run --agent NAME` and events name agents without a
    /// policy.
    #[error("duplicate agent name {name:?} (first at {first})")]
    DuplicateAgent { name: String, first: Location },
    /// Two agent names share a slot in the kernel's rule maps ([`crate::agent_slot`], a 32-bit
    /// hash): one in four billion pairs; renaming either agent fixes it.
    #[error(
        "agent {name:?} cannot be told apart from agent {other:?} in the kernel's rule maps; rename one of them"
    )]
    AgentSlotClash { name: String, other: String },
    /// A rule's `agents` names an agent no loaded policy declares.
    #[error("rule {rule:?} names unknown agent {name:?} ({})", declared(.known))]
    UnknownAgent {
        rule: String,
        name: String,
        known: Vec<String>,
    },
}

fn declared(known: &[String]) -> String {
    if known.is_empty() {
        "no agents are declared".to_owned()
    } else {
        format!("declared: {}", known.join(", "))
    }
}

/// Every problem across `policies`. Empty names (left by a schema error already reported) are
/// skipped so one mistake is not reported twice.
pub(crate) fn validate_set(policies: &[Policy]) -> Diagnostics {
    let mut diags = Diagnostics::default();

    let mut policy_names: HashMap<&str, &Location> = HashMap::new();
    for p in policies.iter().filter(|p| !p.name.is_empty()) {
        match policy_names.get(p.name.as_str()) {
            Some(first) => {
                let e = SetError::DuplicatePolicy {
                    name: p.name.clone(),
                    first: (*first).clone(),
                };
                diags.push(Diagnostic::new(p.name_location.clone(), "metadata.name", e));
            }
            None => {
                policy_names.insert(&p.name, &p.name_location);
            }
        }
    }

    let mut agents: HashMap<&str, &Location> = HashMap::new();
    let mut slots: HashMap<u32, &str> = HashMap::new();
    let mut known = Vec::new();
    for a in policies
        .iter()
        .flat_map(|p| &p.agents)
        .filter(|a| !a.name.is_empty())
    {
        match agents.get(a.name.as_str()) {
            Some(first) => {
                let e = SetError::DuplicateAgent {
                    name: a.name.clone(),
                    first: (*first).clone(),
                };
                diags.push(Diagnostic::new(a.location.clone(), "", e));
            }
            None => {
                agents.insert(&a.name, &a.location);
                known.push(a.name.clone());
                if let Some(other) = slots.insert(crate::agent_slot(&a.name), &a.name) {
                    let e = SetError::AgentSlotClash {
                        name: a.name.clone(),
                        other: other.to_owned(),
                    };
                    diags.push(Diagnostic::new(a.location.clone(), "", e));
                }
            }
        }
    }

    for rule in policies.iter().flat_map(|p| &p.rules) {
        for (name, location) in &rule.agents {
            if !agents.contains_key(name.as_str()) {
                let e = SetError::UnknownAgent {
                    rule: rule.name.clone(),
                    name: name.clone(),
                    known: known.clone(),
                };
                diags.push(Diagnostic::new(location.clone(), "", e));
            }
        }
    }
    diags
}
