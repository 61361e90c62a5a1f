//! The rule maps of the LSM programs, and writing a compiled policy into them.
use airlock_common::{DigestKey, DirEntryKey, InodeKey, RuleRef, WildKey};
use airlock_policy::CompiledPolicy;
use aya::maps::{Array, HashMap, Map, MapData};

use super::{LsmError, map_err, sync_map};

/// Every map the programs look rules up in: gated binaries and sockets (by inode and by
/// directory entry, and by content), protected trees and privilege changes.
pub(crate) struct RuleMaps {
    exec_inodes: HashMap<MapData, InodeKey, RuleRef>,
    exec_entries: HashMap<MapData, DirEntryKey, RuleRef>,
    exec_digests: HashMap<MapData, DigestKey, RuleRef>,
    digest_sizes: HashMap<MapData, u64, u32>,
    protected: HashMap<MapData, InodeKey, RuleRef>,
    connect_inodes: HashMap<MapData, InodeKey, RuleRef>,
    connect_entries: HashMap<MapData, DirEntryKey, RuleRef>,
    connect_wild: HashMap<MapData, WildKey, RuleRef>,
    privilege: HashMap<MapData, InodeKey, RuleRef>,
    block_devs: HashMap<MapData, InodeKey, RuleRef>,
    secrets: HashMap<MapData, InodeKey, u32>,
    secrets_on: Array<MapData, u32>,
}

fn typed<K: aya::Pod, V: aya::Pod>(
    take: &mut impl FnMut(&'static str) -> Result<Map, LsmError>,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, LsmError> {
    HashMap::try_from(take(name)?).map_err(map_err(name))
}

impl RuleMaps {
    /// Takes the maps from a source of untyped ones (`Ebpf::take_map`, or pins).
    pub(crate) fn from(
        mut take: impl FnMut(&'static str) -> Result<Map, LsmError>,
    ) -> Result<RuleMaps, LsmError> {
        Ok(RuleMaps {
            exec_inodes: typed(&mut take, "EXEC_INODES")?,
            exec_entries: typed(&mut take, "EXEC_ENTRIES")?,
            exec_digests: typed(&mut take, "EXEC_DIGESTS")?,
            digest_sizes: typed(&mut take, "DIGEST_SIZES")?,
            protected: typed(&mut take, "PROTECTED")?,
            connect_inodes: typed(&mut take, "CONNECT_INODES")?,
            connect_entries: typed(&mut take, "CONNECT_ENTRIES")?,
            connect_wild: typed(&mut take, "CONNECT_WILD")?,
            privilege: typed(&mut take, "PRIVILEGE")?,
            block_devs: typed(&mut take, "BLOCK_DEVS")?,
            secrets: typed(&mut take, "SECRETS")?,
            secrets_on: Array::try_from(take("SECRETS_ON")?).map_err(map_err("SECRETS_ON"))?,
        })
    }

    /// Makes the maps hold exactly `policy`'s effective rules (new entries first, stale ones
    /// last: see [`sync_map`]).
    pub(crate) fn sync(&mut self, policy: &CompiledPolicy) -> Result<(), LsmError> {
        use airlock_policy as p;
        sync_map(
            "EXEC_INODES",
            &mut self.exec_inodes,
            &p::effective_exec_map(policy),
        )?;
        let entries = p::effective_exec_entry_map(policy);
        sync_map("EXEC_ENTRIES", &mut self.exec_entries, &entries)?;
        // Digests before sizes: a size is what makes the kernel hash a file, so the digests
        // it will look up are there first (and a stale size left a moment costs one hash).
        let (digests, sizes) = p::effective_exec_digest_map(policy);
        sync_map("EXEC_DIGESTS", &mut self.exec_digests, &digests)?;
        sync_map("DIGEST_SIZES", &mut self.digest_sizes, &sizes)?;
        let protected = p::effective_protected_map(policy);
        sync_map("PROTECTED", &mut self.protected, &protected)?;
        let sockets = p::effective_connect_map(policy);
        sync_map("CONNECT_INODES", &mut self.connect_inodes, &sockets)?;
        let entries = p::effective_connect_entry_map(policy);
        sync_map("CONNECT_ENTRIES", &mut self.connect_entries, &entries)?;
        let wild = p::effective_connect_wild_map(policy);
        sync_map("CONNECT_WILD", &mut self.connect_wild, &wild)?;
        let sys = std::path::Path::new("/sys");
        let blocks =
            p::effective_block_map(policy, |dev| super::blockdev::devices_holding(sys, dev));
        sync_map("BLOCK_DEVS", &mut self.block_devs, &blocks)?;
        let privilege = p::effective_privilege_map(policy);
        sync_map("PRIVILEGE", &mut self.privilege, &privilege)?;
        let secrets: std::collections::HashMap<InodeKey, u32> =
            policy.secrets.iter().map(|k| (*k, 1)).collect();
        // Count last when it grows (the entries are there before reads look them up), first
        // when it drops to 0 (read opens stop looking before the entries go).
        if secrets.is_empty() {
            self.secrets_on
                .set(0, 0, 0)
                .map_err(map_err("SECRETS_ON"))?;
        }
        sync_map("SECRETS", &mut self.secrets, &secrets)?;
        self.secrets_on
            .set(0, secrets.len() as u32, 0)
            .map_err(map_err("SECRETS_ON"))
    }
}
