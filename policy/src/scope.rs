//! Rules restricted to some agents (`rule.agents`), and how the rule maps carry that.
//!
//! Every rule-map key ([`InodeKey`], [`DirEntryKey`]) has a `slot` word: [`ANY_AGENT`] for the
//! entry that applies to every agent, an agent's [`agent_slot`] for the entry that applies to
//! that agent only. An agent's entry for an object is the merge of *every* rule on the object
//! that applies to it, unrestricted ones included, so a lookup that hits it is the whole answer;
//! the [`ANY_AGENT`] entry is consulted only when it misses ([`lookup`]). Agents that no rule is
//! restricted to have no entries of their own and pay one lookup, as before.
//!
//! Slots are a hash of the agent's name rather than an index, so that an agent keeps its slot
//! across policy reloads and daemon restarts: the kernel's agent table and rule maps are updated
//! one after the other, and an index that shifted in between would, for a moment, give one
//! agent another's rules. Two names that hash alike are refused when the policies are checked.
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use airlock_common::{DirEntryKey, InodeKey, RuleRef};

use crate::compiled::CompiledPolicy;
use crate::effective::merge_into;

/// The slot of map entries that apply to every agent.
pub const ANY_AGENT: u32 = 0;

/// The slot of `agent`'s own map entries: FNV-1a (32 bits) of its name, never [`ANY_AGENT`].
pub fn agent_slot(agent: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in agent.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if h == ANY_AGENT { 1 } else { h }
}

/// A rule-map key with a slot word.
pub trait SlotKey: Clone + Eq + Hash {
    /// The same object, in `slot`.
    fn with_slot(&self, slot: u32) -> Self;
}

impl SlotKey for InodeKey {
    fn with_slot(&self, slot: u32) -> Self {
        InodeKey { slot, ..*self }
    }
}

impl SlotKey for airlock_common::WildKey {
    fn with_slot(&self, slot: u32) -> Self {
        airlock_common::WildKey { slot, ..*self }
    }
}

impl SlotKey for airlock_common::DigestKey {
    fn with_slot(&self, slot: u32) -> Self {
        airlock_common::DigestKey { slot, ..*self }
    }
}

impl SlotKey for DirEntryKey {
    fn with_slot(&self, slot: u32) -> Self {
        DirEntryKey { slot, ..*self }
    }
}

/// Which agents each rule of a compiled policy applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    /// By rule id: the slots of the agents the rule is restricted to; empty for every agent.
    by_rule: Vec<Vec<u32>>,
    /// Slots of the agents some rule is restricted to: the only ones with entries of their own.
    scoped: BTreeSet<u32>,
}

impl Scopes {
    /// The scopes of `policy`'s rules.
    pub fn of(policy: &CompiledPolicy) -> Self {
        let by_rule: Vec<Vec<u32>> = policy
            .rules
            .iter()
            .map(|r| r.agents.iter().map(|a| agent_slot(a)).collect())
            .collect();
        let scoped = by_rule.iter().flatten().copied().collect();
        Scopes { by_rule, scoped }
    }

    /// Whether some rule is restricted to the agent in `slot`, i.e. whether its processes must
    /// look for entries of their own.
    pub fn has_own_rules(&self, slot: u32) -> bool {
        self.scoped.contains(&slot)
    }

    /// The slots `rule` applies to; empty for every agent (also for rules outside the policy,
    /// such as airlockd's built-in ones).
    fn slots_of(&self, rule: &RuleRef) -> &[u32] {
        self.by_rule
            .get(rule.rule_id as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Adds `rule` on the object `key` (slot [`ANY_AGENT`]) to `map`, in the entries of every
    /// agent it applies to, keeping each agent's entry the merge of all its rules on the object.
    pub fn insert<K: SlotKey>(&self, map: &mut HashMap<K, RuleRef>, key: &K, rule: RuleRef) {
        let slots = self.slots_of(&rule);
        if slots.is_empty() {
            merge_into(map, key.with_slot(ANY_AGENT), rule);
            // Agents that already have an entry here must see this rule too.
            for &s in &self.scoped {
                let own = key.with_slot(s);
                if map.contains_key(&own) {
                    merge_into(map, own, rule);
                }
            }
            return;
        }
        let any = map.get(&key.with_slot(ANY_AGENT)).copied();
        for &s in slots {
            let own = key.with_slot(s);
            if let (false, Some(any)) = (map.contains_key(&own), any) {
                map.insert(own.clone(), any);
            }
            merge_into(map, own, rule);
        }
    }
}

/// The entry that decides for the agent in `slot` on the object `key` (slot [`ANY_AGENT`]): its
/// own if it has one, else the one for every agent. Pass [`ANY_AGENT`] for an agent without
/// rules of its own.
pub fn lookup<'a, K: SlotKey>(
    map: &'a HashMap<K, RuleRef>,
    key: &K,
    slot: u32,
) -> Option<&'a RuleRef> {
    if slot != ANY_AGENT
        && let Some(r) = map.get(&key.with_slot(slot))
    {
        return Some(r);
    }
    map.get(&key.with_slot(ANY_AGENT))
}
