//! airlockd reloads its policy when the policy file changes (inotify), as it does on
//! SIGHUP: a policy with an error is refused with its file:line:column and the policy in
//! force stays (a held exec still waits); a good one is applied and counted in
//! `status.json`'s `policy_generation`.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::harness::ensure;
use crate::holds::HoldCtx;

const WAIT: Duration = Duration::from_secs(10);

/// Writes the original policy back, however the case ends.
struct Restore {
    path: PathBuf,
    text: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Only when the case failed before writing it back: a needless write would trigger
        // one more reload while the next cases run.
        if std::fs::read_to_string(&self.path).ok().as_deref() != Some(self.text.as_str()) {
            let _ = std::fs::write(&self.path, &self.text);
        }
    }
}

/// Waits until `status.json` satisfies `ok`; returns it.
fn status_until(
    c: &HoldCtx,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = c.daemon.status()
            && ok(&s)
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not within {WAIT:?}; status: {:?}\n{}",
                c.daemon.status(),
                c.daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A broken edit of the policy file is refused (file:line:col) and the old policy gates on;
/// writing the good policy back applies it, each without a signal.
pub fn policy_file_change_reloads_and_a_bad_one_is_refused(c: &HoldCtx) -> anyhow::Result<()> {
    let path = c.fx.policy.clone();
    let original = std::fs::read_to_string(&path)?;
    let _restore = Restore {
        path: path.clone(),
        text: original.clone(),
    };
    let g0 = status_until(c, "status", |s| s["policy_generation"].as_u64().is_some())?
        ["policy_generation"]
        .as_u64()
        .unwrap_or_default();
    // An unknown key at the top: a schema error with a position.
    std::fs::write(&path, format!("{original}\nnot_a_policy_key: 1\n"))?;
    let s = status_until(c, "the broken policy refused", |s| {
        s["last_reload_error"].is_string()
    })?;
    let err = s["last_reload_error"].as_str().unwrap_or_default();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    ensure(err.contains(&format!("{name}:")), || {
        format!("the refusal does not name the file with a position: {err}")
    })?;
    ensure(s["policy_generation"].as_u64() == Some(g0), || {
        format!("a refused policy changed the generation: {s}")
    })?;
    // The policy in force still holds.
    let child = c.spawn_exec(&c.fx.held, "still-held")?;
    let id = c.wait_pending(child.pid)?;
    c.cli_ok(&["deny", &id])?;
    let o = child.finish(WAIT)?;
    ensure(!o.status.success(), || {
        "the denied exec succeeded".to_string()
    })?;
    // The good policy back: applied.
    std::fs::write(&path, &original)?;
    status_until(c, "the good policy applied", |s| {
        s["policy_generation"].as_u64() == Some(g0 + 1) && s["last_reload_error"].is_null()
    })?;
    Ok(())
}
