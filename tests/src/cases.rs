//! The gating scenarios. Each runs real processes inside (or outside) the test's own agent
//! cgroup against a real airlockd and checks what the kernel did and what was recorded.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use airlock_agent::cgroup::{CgroupDir, cgroup_id, cgroup2_mount};
use anyhow::{Context as _, bail};

use crate::harness::{Daemon, Report, copy_distinct, ensure, kernel_id, run_in, stdout};

/// A runnable binary with its own inode: a copy of `true`, or of busybox run as `busybox true`
/// (busybox applets share one inode, so tests copy the binary itself).
#[derive(Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub args: Vec<String>,
}

fn true_impl() -> anyhow::Result<(PathBuf, Vec<String>)> {
    for p in ["/usr/bin/true", "/bin/true"] {
        if let Ok(real) = std::fs::canonicalize(p)
            && real.file_name().is_some_and(|n| n != "busybox")
        {
            return Ok((real, vec![]));
        }
    }
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return Ok((PathBuf::from(p), vec!["true".into()]));
        }
    }
    bail!("no true binary to copy")
}

/// Copies `true` to `dir/<name>`: an inode and a content of its own (see [`copy_distinct`]).
fn make_tool(dir: &Path) -> anyhow::Result<Tool> {
    let (src, args) = true_impl()?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(src.file_name().context("file name")?);
    copy_distinct(&src, &path, &dir.to_string_lossy())?;
    Ok(Tool { path, args })
}

/// Files, binaries, cgroups and the policy of one run.
pub struct Fixture {
    pub dir: PathBuf,
    pub gated: Tool,
    /// A byte-identical copy of `gated` as first made (a case replaces `gated` at its path),
    /// in a directory of the same name: what the content-identity cases copy.
    pub pristine: PathBuf,
    pub free: Tool,
    pub audited: Tool,
    /// Gated for agent `e2e` only (`rule.agents`).
    pub scoped: Tool,
    pub etc: PathBuf,
    /// Protected for agent `bystander` only.
    pub shared: PathBuf,
    pub conf: PathBuf,
    pub policy: PathBuf,
    pub agent_cg: PathBuf,
    pub nested_cg: PathBuf,
    pub outside_cg: PathBuf,
    /// The cgroup of a second agent, `bystander`.
    pub bystander_cg: PathBuf,
    // Last: dropped after everything that may still run inside it.
    pub _cg: CgroupDir,
}

impl Fixture {
    /// Builds everything under `base` and under the cgroup2 mount.
    pub fn new(base: &Path) -> anyhow::Result<Fixture> {
        let dir = base.join(format!("airlock-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let gated = make_tool(&dir.join("gated"))?;
        let pristine = dir
            .join("pristine")
            .join(gated.path.file_name().context("file name")?);
        std::fs::create_dir_all(dir.join("pristine"))?;
        std::fs::copy(&gated.path, &pristine)?;
        let free = make_tool(&dir.join("free"))?;
        let audited = make_tool(&dir.join("audited"))?;
        let scoped = make_tool(&dir.join("scoped"))?;
        let loaded = crate::cases_content::loaded_path(&dir);
        std::fs::create_dir_all(loaded.parent().context("parent")?)?;
        copy_distinct(&std::env::current_exe()?, &loaded, "loaded")?;
        let shared = dir.join("shared");
        std::fs::create_dir_all(&shared)?;
        // A protected tree three levels down, and a free file beside its ancestors.
        std::fs::create_dir_all(dir.join("deep/a/b/tree"))?;
        // Per-user sockets appear below it later (`user-sockets`: DIR/sockets/*/svc.sock).
        std::fs::create_dir_all(dir.join("sockets"))?;
        std::fs::write(dir.join("deep/a/free.txt"), "free\n")?;
        std::fs::write(shared.join("notes"), "notes\n")?;
        let etc = dir.join("etc");
        std::fs::create_dir_all(etc.join("sub"))?;
        let conf = etc.join("conf");
        std::fs::write(&conf, "original\n")?;
        std::fs::write(etc.join("sub/deep"), "deep\n")?;
        let mount = cgroup2_mount()?;
        let top_rel = format!("airlock-e2e-{}", std::process::id());
        let cg = CgroupDir::create(mount.join(&top_rel))?;
        let agent_cg = cg.create_child("agent")?;
        let nested_cg = cg.create_child("agent/nested")?;
        let outside_cg = cg.create_child("outside")?;
        let bystander_cg = cg.create_child("bystander")?;
        let policy = dir.join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: airlock.dev/v1\nkind: Policy\nmetadata:\n  name: e2e\nmode: enforce\n\
                 agents:\n  - name: e2e\n    cgroup: \"/{top_rel}/agent*\"\n\
                 \x20 - name: bystander\n    cgroup: \"/{top_rel}/bystander\"\n\
                 rules:\n  - name: gated-tools\n    action: deny\n    exec: [\"{}\"]\n\
                 \x20 - name: audited-tools\n    action: audit\n    exec: [\"{}\"]\n\
                 \x20 - name: protected-etc\n    action: deny\n    paths: [\"{}\"]\n\
                 \x20 - name: e2e-only-tool\n    action: deny\n    exec: [\"{}\"]\n    agents: [e2e]\n\
                 \x20 - name: bystander-only-tree\n    action: deny\n    paths: [\"{}\"]\n    agents: [bystander]\n\
                 \x20 - name: deep-tree\n    action: deny\n    paths: [\"{}\"]\n\
                 \x20 - name: bystander-privilege\n    action: deny\n    privilege: [setuid, setgid, userns, caps]\n    agents: [bystander]\n\
                 \x20 - name: loaded-tool\n    action: deny\n    exec: [\"{}\"]\n\
                 \x20 - name: user-sockets\n    action: deny\n    connect: [\"{}/sockets/*/svc.sock\"]\n",
                gated.path.display(),
                audited.path.display(),
                etc.display(),
                scoped.path.display(),
                shared.display(),
                dir.join("deep/a/b/tree").display(),
                loaded.display(),
                dir.display()
            ),
        )?;
        Ok(Fixture {
            dir,
            gated,
            pristine,
            free,
            audited,
            scoped,
            etc,
            shared,
            conf,
            policy,
            agent_cg,
            nested_cg,
            outside_cg,
            bystander_cg,
            _cg: cg,
        })
    }
}

struct RmDir(PathBuf);
impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What every case gets.
pub struct Ctx<'a> {
    pub fx: &'a Fixture,
    pub daemon: &'a Daemon,
    pub me: PathBuf,
    pub bin_dir: PathBuf,
    pub lsm: bool,
}

impl Ctx<'_> {
    /// Runs `airlock-e2e --op OP ARGS` in `cg` and returns (pid, stdout).
    pub(crate) fn op(
        &self,
        cg: Option<&Path>,
        op: &str,
        args: &[&str],
    ) -> anyhow::Result<(u32, String)> {
        self.op_in(cg, None, op, args)
    }

    fn op_in(
        &self,
        cg: Option<&Path>,
        cwd: Option<&Path>,
        op: &str,
        args: &[&str],
    ) -> anyhow::Result<(u32, String)> {
        let me = self.me.to_string_lossy().to_string();
        let mut argv = vec![me.as_str(), "--op", op];
        argv.extend_from_slice(args);
        let (pid, out) = run_in(cg, cwd, &argv)?;
        Ok((pid, stdout(&out)))
    }

    /// Executes `tool` (directly or via `path`) in `cg`: Ok(exit code) or the errno of execve.
    pub(crate) fn exec(
        &self,
        cg: Option<&Path>,
        path: &Path,
        tool: &Tool,
    ) -> anyhow::Result<Result<i32, String>> {
        let p = path.to_string_lossy().to_string();
        let mut args = vec![p.as_str()];
        args.extend(tool.args.iter().map(String::as_str));
        let me = self.me.to_string_lossy().to_string();
        let mut argv = vec![me.as_str(), "--op", "exec"];
        argv.extend_from_slice(&args);
        let (_, out) = run_in(cg, None, &argv)?;
        let so = stdout(&out);
        Ok(if so.starts_with("errno=") {
            Err(so)
        } else {
            Ok(out.status.code().unwrap_or(-1))
        })
    }

    pub(crate) fn agent(&self) -> Option<&Path> {
        Some(&self.fx.agent_cg)
    }

    pub(crate) fn outside(&self) -> Option<&Path> {
        Some(&self.fx.outside_cg)
    }

    fn conf_intact(&self) -> anyhow::Result<()> {
        let c = std::fs::read_to_string(&self.fx.conf)?;
        ensure(c == "original\n", || {
            format!("protected file changed: {c:?}")
        })
    }
}

pub(crate) fn denied(r: Result<i32, String>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(e) if e == "errno=1" => Ok(()),
        Err(e) => bail!("{what}: expected EPERM, got {e}"),
        Ok(code) => bail!("{what}: ran (exit {code}), expected EPERM"),
    }
}

pub(crate) fn ran(r: Result<i32, String>, what: &str) -> anyhow::Result<()> {
    match r {
        Ok(0) => Ok(()),
        other => bail!("{what}: expected to run with exit 0, got {other:?}"),
    }
}

pub(crate) fn expect(out: &str, want: &str, what: &str) -> anyhow::Result<()> {
    ensure(out == want, || {
        format!("{what}: expected {want}, got {out:?}")
    })
}

type Case = fn(&Ctx) -> anyhow::Result<()>;

/// (name, needs the LSM backend, check).
pub const CASES: &[(&str, bool, Case)] = &[
    (
        "sigkilled_airlock_run_leaves_no_scope_behind",
        false,
        crate::scopes::sigkilled_run,
    ),
    ("agent_exec_of_gated_binary_is_denied", false, |c| {
        denied(
            c.exec(c.agent(), &c.fx.gated.path, &c.fx.gated)?,
            "agent exec",
        )
    }),
    ("non_agent_exec_of_gated_binary_runs", false, |c| {
        ran(
            c.exec(c.outside(), &c.fx.gated.path, &c.fx.gated)?,
            "outside exec",
        )
    }),
    ("agent_cgroup_created_after_start_is_gated", false, |c| {
        let late = c.fx.agent_cg.with_file_name("agent-late");
        std::fs::create_dir(&late)?;
        let _rm = RmDir(late.clone());
        let id = cgroup_id(&late)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.daemon.status().is_some_and(|s| {
            s["agents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["id"].as_u64() == Some(id)))
        }) {
            ensure(std::time::Instant::now() < deadline, || {
                "airlockd did not pick up the new agent cgroup".into()
            })?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        denied(
            c.exec(Some(&late), &c.fx.gated.path, &c.fx.gated)?,
            "exec in late cgroup",
        )
    }),
    ("airlock_run_starts_a_gated_agent", false, |c| {
        let me = c.me.to_string_lossy().to_string();
        let g = c.fx.gated.path.to_string_lossy().to_string();
        let f = c.fx.free.path.to_string_lossy().to_string();
        let airlock = c.bin_dir.join("airlock").to_string_lossy().to_string();
        let sd = c.daemon.state_dir.to_string_lossy().to_string();
        let base = [
            airlock.as_str(),
            "run",
            "--agent",
            "e2e",
            "--state-dir",
            sd.as_str(),
            "--",
            me.as_str(),
            "--op",
            "exec",
        ];
        let (_, out) = run_in(c.outside(), None, &[&base[..], &[g.as_str()]].concat())?;
        expect(&stdout(&out), "errno=1", "gated exec under airlock run")?;
        let mut free = vec![f.as_str()];
        free.extend(c.fx.free.args.iter().map(String::as_str));
        let (_, out) = run_in(c.outside(), None, &[&base[..], &free[..]].concat())?;
        ensure(out.status.success(), || {
            format!(
                "free exec under airlock run: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }),
    (
        "airlock_run_refuses_to_start_an_ungated_agent",
        false,
        |c| {
            let airlock = c.bin_dir.join("airlock").to_string_lossy().to_string();
            // No policy defines agent "nobody-defines-this": airlockd never gates its cgroup.
            let (_, out) = run_in(
                c.outside(),
                None,
                &[
                    airlock.as_str(),
                    "run",
                    "--agent",
                    "nobody-defines-this",
                    "--state-dir",
                    &c.daemon.state_dir.to_string_lossy(),
                    "--",
                    "/bin/sh",
                    "-c",
                    "echo ran",
                ],
            )?;
            ensure(
                !out.status.success() && !stdout(&out).contains("ran"),
                || format!("ungated agent ran: {}", stdout(&out)),
            )
        },
    ),
    ("a_rule_naming_an_agent_gates_only_that_agent", false, |c| {
        let by = Some(c.fx.bystander_cg.as_path());
        let tool = &c.fx.scoped;
        denied(c.exec(c.agent(), &tool.path, tool)?, "e2e exec of its tool")?;
        ran(
            c.exec(by, &tool.path, tool)?,
            "bystander exec of e2e's tool",
        )?;
        ran(c.exec(c.outside(), &tool.path, tool)?, "outside exec")?;
        let notes = c.fx.shared.join("notes").to_string_lossy().to_string();
        let (pid, out) = c.op(by, "write", &[&notes])?;
        expect(&out, "errno=1", "bystander write of its tree")?;
        let ev = c
            .daemon
            .wait_event(|e| e["pid"].as_u64() == Some(u64::from(pid)))
            .context("no event for the bystander's write")?;
        ensure(
            ev["agent"] == "bystander" && ev["rule"] == "bystander-only-tree",
            || format!("bystander's event: {ev}"),
        )?;
        expect(&c.op(c.agent(), "write", &[&notes])?.1, "ok", "e2e write")?;
        // Rules for every agent still reach the bystander.
        denied(
            c.exec(by, &c.fx.gated.path, &c.fx.gated)?,
            "bystander gated exec",
        )?;
        expect(
            &c.op(by, "write", &[&c.fx.conf.to_string_lossy()])?.1,
            "errno=1",
            "bystander write of protected-etc",
        )?;
        c.conf_intact()
    }),
    ("agent_exec_of_ungated_binary_runs", false, |c| {
        ran(c.exec(c.agent(), &c.fx.free.path, &c.fx.free)?, "free exec")
    }),
    ("nested_cgroup_below_agent_is_gated", false, |c| {
        denied(
            c.exec(Some(&c.fx.nested_cg), &c.fx.gated.path, &c.fx.gated)?,
            "nested exec",
        )
    }),
    ("symlink_to_gated_binary_is_denied", false, |c| {
        let l = c.fx.dir.join("gated-symlink");
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(&c.fx.gated.path, &l)?;
        denied(c.exec(c.agent(), &l, &c.fx.gated)?, "exec via symlink")
    }),
    ("hardlink_to_gated_binary_is_denied", false, |c| {
        let l = c.fx.dir.join("gated").join("hardlink");
        let _ = std::fs::remove_file(&l);
        std::fs::hard_link(&c.fx.gated.path, &l)?;
        let mut t = c.fx.gated.clone();
        if !t.args.is_empty() {
            // busybox picks the applet from argv[0]'s name: keep the name "busybox".
            let d = c.fx.dir.join("hl");
            std::fs::create_dir_all(&d)?;
            let l2 = d.join("busybox");
            let _ = std::fs::remove_file(&l2);
            std::fs::hard_link(&c.fx.gated.path, &l2)?;
            t.path = l2;
        } else {
            t.path = l;
        }
        denied(c.exec(c.agent(), &t.path.clone(), &t)?, "exec via hardlink")
    }),
    ("exec_through_proc_self_fd_is_denied", false, |c| {
        let p = c.fx.gated.path.to_string_lossy().to_string();
        let mut args = vec![p.as_str()];
        args.extend(c.fx.gated.args.iter().map(String::as_str));
        let (_, out) = c.op(c.agent(), "fdexec", &args)?;
        expect(&out, "errno=1", "fexecve-style exec")
    }),
    ("agent_write_open_of_protected_file_is_denied", false, |c| {
        expect(
            &c.op(c.agent(), "write", &[&c.fx.conf.to_string_lossy()])?.1,
            "errno=1",
            "write open",
        )?;
        c.conf_intact()
    }),
    ("agent_otrunc_open_is_denied_and_file_intact", false, |c| {
        expect(
            &c.op(c.agent(), "trunc", &[&c.fx.conf.to_string_lossy()])?.1,
            "errno=1",
            "O_TRUNC open",
        )?;
        c.conf_intact()
    }),
    ("agent_write_deep_in_protected_tree_is_denied", false, |c| {
        expect(
            &c.op(
                c.agent(),
                "write",
                &[&c.fx.etc.join("sub/deep").to_string_lossy()],
            )?
            .1,
            "errno=1",
            "deep write",
        )
    }),
    (
        "agent_xattr_changes_in_protected_tree_are_denied",
        true,
        |c| {
            // Extended attributes include file capabilities (security.capability): a protected
            // binary given cap_setuid would be a way to root. trusted.* works on every fs here.
            let conf = c.fx.conf.to_string_lossy().to_string();
            for op in ["setxattr", "removexattr"] {
                let (p, out) = c.op(c.agent(), op, &[&conf])?;
                expect(&out, "errno=1", op)?;
                let ev = c
                    .daemon
                    .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                    .with_context(|| format!("no event for {op}"))?;
                ensure(ev["op"] == "xattr" && ev["rule"] == "protected-etc", || {
                    format!("{op} event: {ev}")
                })?;
            }
            let f = c.fx.etc.join("outside-xattr");
            std::fs::write(&f, "x")?;
            let f = f.to_string_lossy().to_string();
            expect(
                &c.op(c.outside(), "setxattr", &[&f])?.1,
                "ok",
                "outside setxattr",
            )?;
            expect(
                &c.op(c.outside(), "removexattr", &[&f])?.1,
                "ok",
                "outside removexattr",
            )
        },
    ),
    (
        "agent_posix_acl_changes_in_protected_tree_are_denied",
        true,
        |c| {
            // Since 6.2 ACLs bypass inode_setxattr (vfs_set_acl has hooks of its own); an ACL
            // is a permission change like chmod, so both routes must be gated on both kernels.
            use std::os::unix::fs::PermissionsExt as _;
            let conf = c.fx.conf.to_string_lossy().to_string();
            let mode = |p: &str| -> anyhow::Result<u32> {
                Ok(std::fs::metadata(p)?.permissions().mode() & 0o7777)
            };
            let before = mode(&conf)?;
            let (p, out) = c.op(c.agent(), "set-acl", &[&conf])?;
            expect(&out, "errno=1", "agent set-acl")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                .context("no event for set-acl")?;
            ensure(ev["op"] == "xattr" && ev["rule"] == "protected-etc", || {
                format!("set-acl event: {ev}")
            })?;
            ensure(mode(&conf)? == before, || {
                format!("mode of {conf} changed by a refused ACL")
            })?;
            // Controls: the filesystem takes ACLs, and one really changes the mode.
            let f = c.fx.etc.join("outside-acl");
            std::fs::write(&f, "x")?;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
            let f = f.to_string_lossy().to_string();
            expect(
                &c.op(c.outside(), "set-acl", &[&f])?.1,
                "ok",
                "outside set-acl",
            )?;
            ensure(mode(&f)? == 0o777, || {
                format!("outside ACL gave {:o}", mode(&f).unwrap_or(0))
            })?;
            // Removal (inode_remove_acl on 6.2+): a default ACL put there from outside.
            let d = c.fx.etc.join("acl-dir");
            std::fs::create_dir_all(&d)?;
            let d = d.to_string_lossy().to_string();
            expect(
                &c.op(c.outside(), "set-acl", &[&d, "default"])?.1,
                "ok",
                "outside set default acl",
            )?;
            let (p, out) = c.op(c.agent(), "remove-default-acl", &[&d])?;
            expect(&out, "errno=1", "agent remove-default-acl")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                .context("no event for remove-default-acl")?;
            ensure(ev["op"] == "xattr", || format!("remove-acl event: {ev}"))?;
            expect(
                &c.op(c.outside(), "remove-default-acl", &[&d])?.1,
                "ok",
                "outside remove-default-acl",
            )
        },
    ),
    (
        "agent_cannot_rename_a_protected_trees_ancestor_away",
        true,
        |c| {
            let s = |p: &str| c.fx.dir.join(p).to_string_lossy().to_string();
            for dir in ["deep/a", "deep/a/b"] {
                let (p, out) = c.op(c.agent(), "rename", &[&s(dir), &s("deep/moved")])?;
                expect(&out, "errno=1", &format!("rename {dir}"))?;
                let ev = c
                    .daemon
                    .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                    .with_context(|| format!("no event for renaming {dir}"))?;
                ensure(ev["op"] == "rename" && ev["rule"] == "deep-tree", || {
                    format!("rename {dir}: {ev}")
                })?;
            }
            // Only the ancestors themselves: what else is in them stays the agent's to change.
            let (_, out) = c.op(
                c.agent(),
                "rename",
                &[&s("deep/a/free.txt"), &s("deep/a/f2")],
            )?;
            expect(&out, "ok", "rename of a free file beside the tree")?;
            // Outside agents nothing changed.
            let (_, out) = c.op(c.outside(), "rename", &[&s("deep/a"), &s("deep/moved")])?;
            expect(&out, "ok", "outside rename of the ancestor")?;
            let (_, out) = c.op(c.outside(), "rename", &[&s("deep/moved"), &s("deep/a")])?;
            expect(&out, "ok", "outside rename back")
        },
    ),
    (
        "privilege_changes_under_a_privilege_rule_are_denied",
        true,
        |c| {
            let by = Some(c.fx.bystander_cg.as_path());
            for (op, args, event_op, target) in [
                ("setuid", vec!["65534"], "setuid", "uid 65534"),
                ("setgid", vec!["65534"], "setgid", "gid 65534"),
                ("unshare-user", vec![], "userns", "a new user namespace"),
            ] {
                let (p, out) = c.op(by, op, &args)?;
                expect(&out, "errno=1", &format!("bystander {op}"))?;
                let ev = c
                    .daemon
                    .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                    .with_context(|| format!("no event for {op}"))?;
                ensure(
                    ev["op"] == event_op
                        && ev["rule"] == "bystander-privilege"
                        && ev["target_name"] == target,
                    || format!("{op} event: {ev}"),
                )?;
                // The rule names only the bystander: the other agent and outsiders go ahead.
                expect(&c.op(c.agent(), op, &args)?.1, "ok", &format!("e2e {op}"))?;
                expect(
                    &c.op(c.outside(), op, &args)?.1,
                    "ok",
                    &format!("outside {op}"),
                )?;
            }
            // Setting the ids a process already has is no change, and not gated.
            expect(
                &c.op(by, "setuid", &["0"])?.1,
                "ok",
                "setuid to its own uid",
            )
        },
    ),
    (
        "set_id_exec_and_capability_gains_under_a_privilege_rule_are_denied",
        true,
        |c| {
            // A copy of this binary, set-user-ID and set-group-ID to nobody: root running it
            // changes its effective ids (a transition like setuid(2), here a drop, which needs
            // no unprivileged user to show).
            use std::os::unix::fs::PermissionsExt as _;
            let copy = c.fx.dir.join("setid-nobody");
            std::fs::copy(&c.me, &copy)?;
            std::os::unix::fs::chown(&copy, Some(65534), Some(65534))?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o6755))?;
            let copy = copy.to_string_lossy().to_string();
            // `exec PATH ARGV...` with the path as argv[0].
            let argv = [copy.as_str(), "--op", "ids"];
            let by = Some(c.fx.bystander_cg.as_path());
            let (p, out) = c.op(by, "exec", &argv)?;
            expect(&out, "errno=1", "bystander exec of a set-id file")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                .context("no event for the set-id exec")?;
            ensure(
                ev["op"] == "setuid"
                    && ev["rule"] == "bystander-privilege"
                    && ev["target_name"] == "uid 65534 (exec of setid-nobody)",
                || format!("set-id exec event: {ev}"),
            )?;
            let me = c.me.to_string_lossy().to_string();
            for (who, cg) in [("e2e", c.agent()), ("outside", c.outside())] {
                let mut full = vec![me.as_str(), "--op", "exec"];
                full.extend_from_slice(&argv);
                let (_, out) = run_in(cg, None, &full)?;
                let so = stdout(&out);
                ensure(so.starts_with("euid=65534 egid=65534"), || {
                    format!(
                        "{who} exec of the set-id file: {so:?} ({}; stderr {:?})",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            }
            // Root that dropped CAP_NET_RAW gets it back at exec: a capability gain.
            let argv = ["13", me.as_str(), me.as_str(), "--op", "ids"];
            let (p, out) = c.op(by, "drop-cap-exec", &argv)?;
            expect(&out, "errno=1", "bystander exec regaining CAP_NET_RAW")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                .context("no event for the capability gain")?;
            ensure(
                ev["op"] == "caps"
                    && ev["target_name"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("capabilities 0x2000 gained at exec of ")),
                || format!("caps event: {ev}"),
            )?;
            for (who, cg) in [("e2e", c.agent()), ("outside", c.outside())] {
                let out = c.op(cg, "drop-cap-exec", &argv)?.1;
                let prm = out
                    .split("capprm=")
                    .nth(1)
                    .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
                ensure(prm.is_some_and(|p| p & (1 << 13) != 0), || {
                    format!("{who} exec after dropping CAP_NET_RAW: {out:?}")
                })?;
            }
            // A plain exec by the bystander (every op here starts with one) gains nothing.
            expect(&c.op(by, "setuid", &["0"])?.1, "ok", "bystander plain exec")
        },
    ),
    (
        "agent_cannot_cover_a_protected_tree_with_a_mount_or_unmount_the_pins",
        true,
        |c| {
            let s = |p: &Path| p.to_string_lossy().to_string();
            let free = c.fx.dir.join("deep/a/mnt");
            std::fs::create_dir_all(&free)?;
            // On the tree, inside it, and on a directory above a protected root.
            for (dir, rule) in [
                (c.fx.etc.clone(), "protected-etc"),
                (c.fx.etc.join("sub"), "protected-etc"),
                (c.fx.dir.join("deep/a"), "deep-tree"),
            ] {
                let d = s(&dir);
                let (p, out) = c.op(c.agent(), "mount-tmpfs", &[&d])?;
                if out == "ok" {
                    let _ = c.op(c.outside(), "umount", &[&d]);
                }
                expect(&out, "errno=1", &format!("mount on {d}"))?;
                let ev = c
                    .daemon
                    .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                    .with_context(|| format!("no event for mounting on {d}"))?;
                ensure(ev["op"] == "mount" && ev["rule"] == rule, || {
                    format!("mount on {d}: {ev}")
                })?;
            }
            // bpffs holds airlockd's pins: unmounting it is refused as self-protection.
            let (p, out) = c.op(c.agent(), "umount", &["/sys/fs/bpf"])?;
            expect(&out, "errno=1", "umount /sys/fs/bpf")?;
            let ev = c
                .daemon
                .wait_event(|e| e["pid"].as_u64() == Some(u64::from(p)))
                .context("no event for umount")?;
            ensure(
                ev["op"] == "mount" && ev["rule"] == "self-protection",
                || format!("umount event: {ev}"),
            )?;
            // A directory beside the tree (inside an ancestor) stays the agent's to mount on.
            let f = s(&free);
            expect(
                &c.op(c.agent(), "mount-tmpfs", &[&f])?.1,
                "ok",
                "mount beside the tree",
            )?;
            expect(
                &c.op(c.agent(), "umount", &[&f])?.1,
                "ok",
                "umount beside the tree",
            )?;
            // Outside agents nothing changed.
            let e = s(&c.fx.etc.join("sub"));
            expect(
                &c.op(c.outside(), "mount-tmpfs", &[&e])?.1,
                "ok",
                "outside mount",
            )?;
            expect(
                &c.op(c.outside(), "umount", &[&e])?.1,
                "ok",
                "outside umount",
            )
        },
    ),
    ("agent_read_of_protected_file_is_allowed", false, |c| {
        expect(
            &c.op(c.agent(), "read", &[&c.fx.conf.to_string_lossy()])?.1,
            "ok",
            "read open",
        )
    }),
    ("non_agent_write_to_protected_file_is_allowed", false, |c| {
        let f = c.fx.etc.join("outside-may-write");
        std::fs::write(&f, "x")?;
        expect(
            &c.op(c.outside(), "write", &[&f.to_string_lossy()])?.1,
            "ok",
            "outside write",
        )
    }),
    ("relative_path_write_is_denied", false, |c| {
        expect(
            &c.op_in(c.agent(), Some(&c.fx.etc), "write", &["conf"])?.1,
            "errno=1",
            "relative write",
        )?;
        c.conf_intact()
    }),
    ("exec_event_carries_the_kernel_facts", false, |c| {
        let (pid, out) = c.op(c.agent(), "exec", &[&c.fx.gated.path.to_string_lossy()])?;
        expect(&out, "errno=1", "exec")?;
        let (dev, ino) = kernel_id(&c.fx.gated.path)?;
        let cg = cgroup_id(&c.fx.agent_cg)?;
        let ev = c
            .daemon
            .wait_event(|e| e["pid"].as_u64() == Some(pid as u64) && e["op"] == "exec")
            .with_context(|| format!("no exec event for pid {pid}"))?;
        ensure(ev["verdict"] == "denied" && ev["action"] == "deny", || {
            format!("verdict/action: {ev}")
        })?;
        ensure(
            ev["target_ino"].as_u64() == Some(ino) && ev["target_dev"].as_u64() == Some(dev),
            || format!("target: {ev}"),
        )?;
        ensure(ev["cgroup_id"].as_u64() == Some(cg), || {
            format!("cgroup id {cg}: {ev}")
        })?;
        ensure(
            ev["tgid"].as_u64() == Some(pid as u64)
                && ev["uid"].as_u64() == Some(0)
                && ev["euid"].as_u64() == Some(0),
            || format!("ids: {ev}"),
        )?;
        ensure(
            ev["ppid"].as_u64() == Some(std::process::id() as u64),
            || format!("ppid: {ev}"),
        )?;
        ensure(ev["comm"] == "airlock-e2e", || format!("comm: {ev}"))?;
        ensure(ev["rule"] == "gated-tools" && ev["agent"] == "e2e", || {
            format!("rule/agent: {ev}")
        })?;
        ensure(ev["ktime_ns"].as_u64().unwrap_or(0) > 0, || {
            format!("time: {ev}")
        })
    }),
    ("write_event_carries_the_kernel_facts", false, |c| {
        let (pid, out) = c.op(c.agent(), "write", &[&c.fx.conf.to_string_lossy()])?;
        expect(&out, "errno=1", "write")?;
        let (dev, ino) = kernel_id(&c.fx.conf)?;
        let ev = c
            .daemon
            .wait_event(|e| e["pid"].as_u64() == Some(pid as u64) && e["op"] == "open_write")
            .with_context(|| format!("no open_write event for pid {pid}"))?;
        ensure(
            ev["target_ino"].as_u64() == Some(ino) && ev["target_dev"].as_u64() == Some(dev),
            || format!("target: {ev}"),
        )?;
        ensure(
            ev["target_name"] == "conf"
                && ev["verdict"] == "denied"
                && ev["rule"] == "protected-etc",
            || format!("{ev}"),
        )?;
        // The exec tracepoint recorded what this agent process runs.
        ensure(
            ev["exe"]
                .as_str()
                .is_some_and(|e| e.ends_with("airlock-e2e")),
            || format!("exe (exec context): {ev}"),
        )
    }),
    ("audit_rule_allows_and_records", false, |c| {
        ran(
            c.exec(c.agent(), &c.fx.audited.path, &c.fx.audited)?,
            "audited exec",
        )?;
        let (_, ino) = kernel_id(&c.fx.audited.path)?;
        c.daemon
            .wait_event(|e| {
                e["target_ino"].as_u64() == Some(ino)
                    && e["verdict"] == "allowed"
                    && e["action"] == "audit"
            })
            .map(|_| ())
            .context("no audit event")
    }),
    ("replaced_binary_at_gated_path_stays_gated", true, |c| {
        // A package upgrade writes a new file and renames it over the old one: new inode.
        let tmp = c.fx.gated.path.with_extension("new");
        std::fs::copy(&c.fx.free.path, &tmp)?;
        let before = std::fs::metadata(&c.fx.gated.path)?.ino();
        std::fs::rename(&tmp, &c.fx.gated.path)?;
        ensure(std::fs::metadata(&c.fx.gated.path)?.ino() != before, || {
            "inode did not change".into()
        })?;
        denied(
            c.exec(c.agent(), &c.fx.gated.path, &c.fx.gated)?,
            "exec of replaced binary",
        )
    }),
    ("rename_over_protected_file_is_denied", true, |c| {
        let src = c.fx.dir.join("evil");
        std::fs::write(&src, "evil\n")?;
        expect(
            &c.op(
                c.agent(),
                "rename",
                &[&src.to_string_lossy(), &c.fx.conf.to_string_lossy()],
            )?
            .1,
            "errno=1",
            "rename over",
        )?;
        c.conf_intact()
    }),
    ("rename_out_of_protected_tree_is_denied", true, |c| {
        let dst = c.fx.dir.join("stolen");
        expect(
            &c.op(
                c.agent(),
                "rename",
                &[&c.fx.conf.to_string_lossy(), &dst.to_string_lossy()],
            )?
            .1,
            "errno=1",
            "rename out",
        )?;
        c.conf_intact()
    }),
    ("unlink_of_protected_file_is_denied", true, |c| {
        expect(
            &c.op(c.agent(), "unlink", &[&c.fx.conf.to_string_lossy()])?
                .1,
            "errno=1",
            "unlink",
        )?;
        c.conf_intact()
    }),
    (
        "create_in_protected_dir_is_denied_and_nothing_created",
        true,
        |c| {
            let f = c.fx.etc.join("new-file");
            expect(
                &c.op(c.agent(), "create", &[&f.to_string_lossy()])?.1,
                "errno=1",
                "O_CREAT",
            )?;
            ensure(!f.exists(), || "file was created".into())
        },
    ),
    ("truncate_by_path_is_denied", true, |c| {
        expect(
            &c.op(c.agent(), "truncate", &[&c.fx.conf.to_string_lossy()])?
                .1,
            "errno=1",
            "truncate(2)",
        )?;
        c.conf_intact()
    }),
    ("chmod_and_chown_of_protected_file_are_denied", true, |c| {
        let p = c.fx.conf.to_string_lossy().to_string();
        expect(&c.op(c.agent(), "chmod", &[&p])?.1, "errno=1", "chmod")?;
        expect(&c.op(c.agent(), "chown", &[&p])?.1, "errno=1", "chown")
    }),
    (
        "hardlink_into_or_from_protected_tree_is_denied",
        true,
        |c| {
            let p = c.fx.conf.to_string_lossy().to_string();
            expect(
                &c.op(
                    c.agent(),
                    "link",
                    &[&p, &c.fx.dir.join("conf-link").to_string_lossy()],
                )?
                .1,
                "errno=1",
                "link from",
            )?;
            let src = c.fx.dir.join("plain");
            std::fs::write(&src, "x")?;
            expect(
                &c.op(
                    c.agent(),
                    "link",
                    &[
                        &src.to_string_lossy(),
                        &c.fx.etc.join("planted").to_string_lossy(),
                    ],
                )?
                .1,
                "errno=1",
                "link into",
            )
        },
    ),
    ("mkdir_and_symlink_in_protected_dir_are_denied", true, |c| {
        expect(
            &c.op(c.agent(), "mkdir", &[&c.fx.etc.join("d").to_string_lossy()])?
                .1,
            "errno=1",
            "mkdir",
        )?;
        expect(
            &c.op(
                c.agent(),
                "symlink",
                &["/tmp", &c.fx.etc.join("s").to_string_lossy()],
            )?
            .1,
            "errno=1",
            "symlink",
        )
    }),
    ("write_through_bind_mount_is_denied", true, |c| {
        let m = c.fx.dir.join("bind");
        std::fs::create_dir_all(&m)?;
        nix::mount::mount(
            Some(&c.fx.etc),
            &m,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        let r = c.op(c.agent(), "write", &[&m.join("conf").to_string_lossy()]);
        let _ = nix::mount::umount(&m);
        expect(&r?.1, "errno=1", "write via bind mount")?;
        c.conf_intact()
    }),
    ("non_agent_may_do_every_operation", true, |c| {
        let scratch = c.fx.etc.join("scratch");
        let s = scratch.to_string_lossy().to_string();
        let o = c.outside();
        expect(&c.op(o, "create", &[&s])?.1, "ok", "create")?;
        expect(&c.op(o, "write", &[&s])?.1, "ok", "write")?;
        expect(&c.op(o, "chmod", &[&s])?.1, "ok", "chmod")?;
        expect(&c.op(o, "truncate", &[&s])?.1, "ok", "truncate")?;
        expect(&c.op(o, "unlink", &[&s])?.1, "ok", "unlink")
    }),
];

/// Runs every case for this backend.
pub fn run_all(r: &mut Report, ctx: &Ctx) {
    for (name, lsm_only, f) in CASES {
        if *lsm_only && !ctx.lsm {
            // Documented limits of the fanotify fallback, not kernel gaps: see README.
            continue;
        }
        r.check(name, f(ctx));
    }
    if ctx.lsm {
        let more = crate::cases_content::CASES
            .iter()
            .chain(crate::cases_handover::CASES);
        for (name, f) in more {
            r.check(name, f(ctx));
        }
    }
}
