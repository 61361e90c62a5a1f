//! Verifying the collector's store again (`airlock-server audit verify`): each host's stored
//! records and checkpoints are checked from the host's pruned anchor (or seq 1) with the key
//! trusted for it, exactly as a host spool or an export is checked (airlock-audit's
//! [`ChainVerifier`]). Someone with write access to the database who changes, deletes,
//! inserts or reorders a record, or drops the newest ones, is caught and the first bad
//! sequence number named; the checkpoints the hosts signed are what they cannot forge.
use airlock_audit::{ChainVerifier, Counts, Entry, EntryError, Problem, SignedCheckpoint};

use crate::store::{AuditFilter, AuditHost, Store, StoreError};

/// Records read per query.
const PAGE: u32 = 5_000;

/// Errors reading the store (as opposed to problems found in it).
#[derive(Debug, thiserror::Error)]
pub enum StoreVerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("host {host}: the stored audit key is not a verifier key: {source}")]
    Key {
        host: String,
        source: airlock_audit::KeyError,
    },
}

/// The outcome for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostReport {
    pub host: String,
    pub counts: Counts,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

/// Checks `h`'s stored chain: checkpoints first (each is checked when the records reach it),
/// then the records in the order they were stored.
pub async fn verify_host(store: &Store, h: &AuditHost) -> Result<HostReport, StoreVerifyError> {
    let key = h.key.parse().map_err(|source| StoreVerifyError::Key {
        host: h.host.clone(),
        source,
    })?;
    let mut v = if h.pruned.seq > 0 {
        ChainVerifier::resume(key, &h.host, h.pruned)
    } else {
        ChainVerifier::new(key, Some(&h.host))
    };
    let report = |v: &ChainVerifier, problem| HostReport {
        host: h.host.clone(),
        counts: v.counts().clone(),
        problem,
    };
    let mut index = 0u64;
    let after = |v: &ChainVerifier| v.head().map_or(0, |a| a.seq);
    for (_, note) in store.audit_checkpoints(&h.host).await? {
        let checked = match SignedCheckpoint::parse(&note) {
            Ok(cp) => v.checkpoint(&cp),
            Err(e) => Err(Problem::Malformed {
                after_seq: after(&v),
                index,
                error: EntryError::Note(e),
            }),
        };
        if let Err(p) = checked {
            return Ok(report(&v, Some(p)));
        }
        index += 1;
    }
    let mut filter = AuditFilter {
        host: Some(h.host.clone()),
        limit: PAGE,
        ..Default::default()
    };
    loop {
        let rows = store.audit_records(&filter).await?;
        for row in &rows {
            let checked = match Entry::parse_line(&row.record) {
                Ok(Entry::Record(r)) => v.record(&r),
                Ok(Entry::Checkpoint(_)) => Err(Problem::Malformed {
                    after_seq: after(&v),
                    index,
                    error: EntryError::NotAnEntry,
                }),
                Err(error) => Err(Problem::Malformed {
                    after_seq: after(&v),
                    index,
                    error,
                }),
            };
            if let Err(p) = checked {
                return Ok(report(&v, Some(p)));
            }
            index += 1;
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE as usize => filter.after_cursor = last.cursor,
            _ => break,
        }
    }
    let problem = v.finish().err();
    Ok(report(&v, problem))
}

/// Every host's report (or the one named).
pub async fn verify_store(
    store: &Store,
    host: Option<&str>,
) -> Result<Vec<HostReport>, StoreVerifyError> {
    let mut out = Vec::new();
    for h in store.audit_hosts().await? {
        if host.is_none_or(|n| n == h.host) {
            out.push(verify_host(store, &h).await?);
        }
    }
    Ok(out)
}
