//! The cargo invocations xtask makes. Both run in the workspace root without `--workspace`, i.e.
//! on the workspace's `default-members`: `--workspace` would also build `ebpf-programs` for the
//! host target, which cannot work (it is built for bpf by agent/build.rs through aya-build).
use crate::report::{self, Tally};
use crate::stream::{self, Flow, Outcome};
use crate::util::{self, Ctx};
use anyhow::{Result, bail};
use std::process::Command;

fn cargo(ctx: &Ctx) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(&ctx.root);
    c
}

/// `cargo build` (debug): airlockd, airlock, airlock-e2e, and the eBPF object via agent/build.rs.
pub fn build(ctx: &Ctx) -> Result<()> {
    util::run(cargo(ctx).arg("build"))
}

/// `cargo build` (debug) of only the binaries `cargo xtask man` runs: airlock (which writes
/// airlockd's docs too) and airlock-server.
pub fn build_docs_writers(ctx: &Ctx) -> Result<()> {
    util::run(cargo(ctx).arg("build").args(bins(&["airlock"])))
}

/// `cargo build --release` of the three binaries the packages ship.
pub fn build_release_bins(ctx: &Ctx) -> Result<()> {
    util::run(
        cargo(ctx)
            .args(["build", "--release"])
            .args(bins(&["airlockd", "airlock"])),
    )
}

/// `-p` and `--bin` arguments for airlock-agent's binaries `agent` and airlock-server.
fn bins<'a>(agent: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["-p", "airlock-agent"];
    for b in agent {
        a.extend(["--bin", b]);
    }
    a.extend(["-p", "airlock-server", "--bin", "airlock-server"]);
    a
}

/// `cargo build --release`: benchmarks measure optimized binaries.
pub fn build_release(ctx: &Ctx) -> Result<()> {
    util::run(cargo(ctx).args(["build", "--release"]))
}

/// `cargo test`, streamed; returns the counts from cargo's `test result:` lines. A failing cargo
/// without failed tests (compile error, crashed test binary) counts as one failure.
pub fn test(ctx: &Ctx) -> Result<Tally> {
    let log = ctx.xtask_dir()?.join("unit.log");
    let mut t = Tally::default();
    let mut cmd = cargo(ctx);
    cmd.arg("test");
    let opts = stream::Opts {
        prefix: "",
        log: Some(&log),
        timeout: None,
        isolate: false,
    };
    let (outcome, _) = stream::run(cmd, &opts, |l| {
        report::cargo_test_line(&mut t, l);
        Flow::Continue
    })?;
    // Names of failed tests were collected from "test x ... FAILED" lines; keep the count from
    // the result lines.
    match outcome {
        Outcome::Exited(st) if st.success() => {}
        Outcome::Exited(st) => {
            if t.failed == 0 {
                t.fail(format!(
                    "unit: `cargo test` failed ({st}) without a failed test (build error?), see {}",
                    log.display()
                ));
            } else if t.failures.is_empty() {
                t.failures.push(format!(
                    "unit: {} failed test(s), see {}",
                    t.failed,
                    log.display()
                ));
            }
        }
        Outcome::Interrupted => bail!("interrupted"),
        other => t.fail(format!("unit: cargo test {}", other.describe())),
    }
    Ok(t)
}
