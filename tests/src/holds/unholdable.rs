//! Holds that cannot be kept (LSM backend): an approve rule met where a SIGSTOP + restart
//! cannot hold the operation must fail it with EPERM at once: no internal errno (513) in the
//! result, no loop, no request that nobody waits on. The fanotify fallback holds these like
//! any other open (the task waits in the permission event), so they run on LSM only.
use super::{Case, HoldCtx, WAIT, out_is};
use crate::harness::ensure;

/// The operation failed with EPERM, left no pending request of process `tgid`, and was
/// recorded as an unholdable denial.
fn refused_unheld(c: &HoldCtx, tgid: u32, what: &str) -> anyhow::Result<()> {
    ensure(c.requests_of(tgid, "pending").is_empty(), || {
        format!("{what}: a request was left pending")
    })?;
    let ev = c
        .daemon
        .wait_event(|e| e["tgid"].as_u64() == Some(u64::from(tgid)) && e["op"] == "open_write")
        .ok_or_else(|| anyhow::anyhow!("{what}: no open_write event of process {tgid}"))?;
    ensure(
        ev["verdict"] == "denied" && ev["unholdable"] == true,
        || format!("{what}: event {ev}"),
    )
}

pub(super) const CASES: &[(&str, Case)] = &[
    (
        "io_uring_write_open_under_approve_fails_with_eperm_instead_of_a_hold",
        |c| {
            let conf = c.fx.conf.to_string_lossy().to_string();
            std::fs::write(&c.fx.conf, "original\n")?;
            // Inline in io_uring_enter, and punted to an io-wq worker thread.
            for mode in ["inline", "async"] {
                let p = c.spawn_op("uring-open", &[&conf, mode])?;
                let pid = p.pid;
                out_is(
                    &p.finish(WAIT)?,
                    "errno=1",
                    &format!("io_uring open ({mode})"),
                )?;
                refused_unheld(c, pid, &format!("io_uring ({mode})"))?;
            }
            let now = std::fs::read_to_string(&c.fx.conf)?;
            ensure(!now.contains("agent-wrote"), || {
                "the file was written".into()
            })
        },
    ),
    (
        "traced_agent_write_under_approve_fails_with_eperm_instead_of_looping",
        |c| {
            let conf = c.fx.conf.to_string_lossy().to_string();
            // The tracer swallows every stop, the hold's SIGSTOP included.
            let p = c.spawn_op("traced-write", &[&conf])?;
            let o = p.finish(WAIT)?;
            out_is(&o, "errno=1", "traced write")?;
            let pending: Vec<_> = c
                .requests()
                .into_iter()
                .filter(|r| r["state"] == "pending")
                .collect();
            ensure(pending.is_empty(), || {
                format!("requests left pending: {pending:?}")
            })
        },
    ),
];
