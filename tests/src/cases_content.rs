//! Gate the program, not one inode of it (LSM backend only): an `exec` rule's binary reached
//! as a byte-identical copy, from a memfd, mapped executable by a loader (`ld.so PATH`, mmap,
//! mprotect). Each is refused in the agent and recorded under the binary's rule; the same
//! steps outside agents, and a different program, go ahead.
use std::path::Path;

use anyhow::Context as _;

use crate::cases::{Ctx, denied, expect, ran};
use crate::harness::{ensure, run_in, stdout};

/// The dynamic loader that runs airlock-e2e (the guest image carries it at its usual path).
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";

type Case = fn(&Ctx) -> anyhow::Result<()>;

/// (name, check); every case needs the LSM backend.
pub const CASES: &[(&str, Case)] = &[
    (
        "byte_identical_copy_of_a_gated_binary_is_the_same_program",
        |c| {
            // Same file name (busybox picks its applet by it), another directory.
            let dir = c.fx.dir.join("copies");
            std::fs::create_dir_all(&dir)?;
            let copy = dir.join(c.fx.pristine.file_name().context("file name")?);
            std::fs::copy(&c.fx.pristine, &copy)?;
            denied(
                c.exec(c.agent(), &copy, &c.fx.gated)?,
                "agent exec of a copy",
            )?;
            let ev = content_event(c, &copy, "exec")?;
            ensure(ev["rule"] == "gated-tools", || format!("copy exec: {ev}"))?;
            ran(
                c.exec(c.outside(), &copy, &c.fx.gated)?,
                "outside exec of a copy",
            )?;
            // A program of its own content is not gated, even at the same size with one byte
            // changed; changing it back (a new version of the file) is seen.
            let mut bytes = std::fs::read(&copy)?;
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            std::fs::write(&copy, &bytes)?;
            ran(
                c.exec(c.agent(), &copy, &c.fx.gated)?,
                "agent exec of an edited copy",
            )?;
            bytes[last] ^= 0x55;
            std::fs::write(&copy, &bytes)?;
            denied(
                c.exec(c.agent(), &copy, &c.fx.gated)?,
                "agent exec of the copy restored",
            )?;
            ran(
                c.exec(c.agent(), &c.fx.free.path, &c.fx.free)?,
                "agent exec of another program",
            )
        },
    ),
    ("gated_binary_run_from_a_memfd_is_refused", |c| {
        let g = c.fx.pristine.to_string_lossy().to_string();
        let mut args = vec![g.as_str()];
        args.extend(c.fx.gated.args.iter().map(String::as_str));
        let (pid, out) = c.op(c.agent(), "memfd-exec", &args)?;
        expect(&out, "errno=1", "agent fexecve of a memfd copy")?;
        let ev = c
            .daemon
            .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)) && e["op"] == "exec")
            .context("no event for the memfd exec")?;
        ensure(
            ev["rule"] == "gated-tools" && ev["matched_by_content"] == true,
            || format!("memfd exec: {ev}"),
        )?;
        let f = c.fx.free.path.to_string_lossy().to_string();
        let mut args = vec![f.as_str()];
        args.extend(c.fx.free.args.iter().map(String::as_str));
        let (_, out) = c.op(c.agent(), "memfd-exec", &args)?;
        // `true` prints nothing and exits 0; a refusal prints errno=N.
        expect(&out, "", "agent fexecve of another program")
    }),
    ("gated_code_mapped_executable_is_refused", |c| {
        let dir = c.fx.dir.join("copies");
        std::fs::create_dir_all(&dir)?;
        let copy = dir.join("mapped");
        std::fs::copy(&c.fx.pristine, &copy)?;
        let p = copy.to_string_lossy().to_string();
        for op in ["map-exec", "mprotect-exec"] {
            let (pid, out) = c.op(c.agent(), op, &[&p])?;
            expect(&out, "errno=1", &format!("agent {op} of a copy"))?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
                .with_context(|| format!("no event for {op}"))?;
            ensure(
                ev["op"] == "map_exec"
                    && ev["rule"] == "gated-tools"
                    && ev["matched_by_content"] == true,
                || format!("{op}: {ev}"),
            )?;
            expect(
                &c.op(c.outside(), op, &[&p])?.1,
                "ok",
                &format!("outside {op}"),
            )?;
            let free = c.fx.free.path.to_string_lossy().to_string();
            expect(
                &c.op(c.agent(), op, &[&free])?.1,
                "ok",
                &format!("agent {op} of another program"),
            )?;
        }
        // The gated file itself (by inode, or by path once a case replaced it).
        let g = c.fx.gated.path.to_string_lossy().to_string();
        let (pid, out) = c.op(c.agent(), "map-exec", &[&g])?;
        expect(&out, "errno=1", "agent map-exec of the gated file")?;
        let ev = c
            .daemon
            .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
            .context("no event for map-exec of the gated file")?;
        ensure(
            ev["op"] == "map_exec" && ev["rule"] == "gated-tools",
            || format!("map-exec by inode: {ev}"),
        )
    }),
    ("gated_program_run_by_the_dynamic_loader_is_refused", |c| {
        let target = loaded_path(&c.fx.dir);
        let t = target.to_string_lossy().to_string();
        let argv = [LD_SO, t.as_str(), "--op", "ids"];
        let (_, out) = run_in(c.agent(), None, &argv)?;
        let so = stdout(&out);
        ensure(!so.starts_with("euid="), || {
            format!("ld.so ran the gated program in the agent: {so:?}")
        })?;
        let ev = c
            .daemon
            .wait_event(|e| e["op"] == "map_exec" && e["rule"] == "loaded-tool")
            .context("no map_exec event for the program ld.so loaded")?;
        ensure(ev["verdict"] == "denied", || format!("ld.so: {ev}"))?;
        // Its plain exec is refused too, and outside agents both run.
        let (_, out) = c.op(c.agent(), "exec", &[&t, "--op", "ids"])?;
        expect(&out, "errno=1", "agent exec of the loaded tool")?;
        for argv in [&argv[..], &argv[1..]] {
            let (_, out) = run_in(c.outside(), None, argv)?;
            ensure(stdout(&out).starts_with("euid="), || {
                format!("outside {argv:?}: {:?}", stdout(&out))
            })?;
        }
        Ok(())
    }),
];

/// Where the fixture puts the program the `loaded-tool` rule gates (a distinct copy of
/// airlock-e2e: a dynamic executable, so that `ld.so PATH` can run it).
pub fn loaded_path(dir: &Path) -> std::path::PathBuf {
    dir.join("loaded/airlock-e2e-loaded")
}

/// The event of `op` on `path` matched by content.
fn content_event(c: &Ctx, path: &Path, op: &str) -> anyhow::Result<serde_json::Value> {
    let (_, ino) = crate::harness::kernel_id(path)?;
    let ev = c
        .daemon
        .wait_event(|e| e["target_ino"].as_u64() == Some(ino) && e["op"] == op)
        .with_context(|| format!("no {op} event for {}", path.display()))?;
    ensure(ev["matched_by_content"] == true, || {
        format!("{op} of {} not matched by content: {ev}", path.display())
    })?;
    Ok(ev)
}
