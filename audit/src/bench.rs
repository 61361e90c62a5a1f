//! A micro-benchmark of the spool's append path, for the bench harness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;

use crate::keys::SigningKey;
use crate::record::{Draft, Kind, Priority};
use crate::spool::{Spool, SpoolConfig};

/// A body shaped like a held exec event (about 400 bytes of JSON).
fn body(i: u64) -> serde_json::Value {
    json!({
        "backend": "lsm",
        "pid": 4000 + i % 1000,
        "tgid": 4000 + i % 1000,
        "uid": 1000,
        "euid": 1000,
        "comm": "apt-get",
        "op": "exec",
        "target_path": "/usr/bin/apt-get",
        "argv": ["apt-get", "install", "--simulate", "cowsay"],
        "rule": "package-managers",
        "policy": "default",
        "agent": "claude",
        "agent_cgroup": "/sys/fs/cgroup/airlock.slice/claude.scope",
        "action": "approve",
        "verdict": "held",
        "request": format!("01J9Z{i:021}"),
    })
}

fn run(n: u64, batch: usize) -> (f64, f64) {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "airlock-audit-bench-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover of a crashed run with the same pid would be appended to, not measured.
    let _ = std::fs::remove_dir_all(&dir);
    let key = SigningKey::generate("airlock/bench").expect("key generation");
    let cfg = SpoolConfig {
        max_bytes: u64::MAX,
        ..SpoolConfig::default()
    };
    let mut spool = Spool::open(&dir, "bench", cfg, Some(key), 0).expect("open the bench spool");
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let k = (n - i).min(batch as u64);
        let items = (i..i + k)
            .map(|j| {
                let d = Draft::new(j, Kind::EventHeld, body(j)).corr(format!("req-{j}"));
                (d, Priority::MustWrite)
            })
            .collect();
        spool.append_many(items).expect("append");
        i += k;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = spool.used_bytes() as f64;
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
    (n as f64 / secs, bytes / n.max(1) as f64)
}

/// Appends `n` records one by one, each synced (`append`), in a fresh spool under the
/// temporary directory, with checkpoints on the default policy. Returns records per second
/// and spool bytes per record (frames and checkpoints included).
pub fn bench_append(n: usize) -> (f64, f64) {
    run(n as u64, 1)
}

/// As [`bench_append`] with group commit: `batch` records per `append_many` (one sync each).
pub fn bench_append_many(n: usize, batch: usize) -> (f64, f64) {
    run(n as u64, batch.max(1))
}
