//! The hosts the collector keeps a chain of, for `airlock-server audit verify`.
use airlock_audit::{Anchor, Hash};
use sqlx::Row as _;

use super::{Store, StoreError, from_name, ms_out};

/// A host with an audit chain in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHost {
    pub host: String,
    /// The verifier key trusted on first use.
    pub key: String,
    /// The last record retention deleted (seq 0: none): the stored chain continues from it.
    pub pruned: Anchor,
}

impl Store {
    /// Every host with an audit key, by name.
    pub async fn audit_hosts(&self) -> Result<Vec<AuditHost>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, verifier_key, pruned_seq, pruned_hash FROM audit_hosts ORDER BY host",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let host: String = r.try_get("host")?;
                let seq = ms_out(r.try_get("pruned_seq")?);
                let text: String = r.try_get("pruned_hash")?;
                let hash: Hash = from_name("audit pruned hash", &host, &text)?;
                Ok(AuditHost {
                    key: r.try_get("verifier_key")?,
                    pruned: Anchor { seq, hash },
                    host,
                })
            })
            .collect()
    }
}
