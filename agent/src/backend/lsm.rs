//! BPF LSM backend: the decision is made in the kernel by the programs in `ebpf-programs/`.
//!
//! Userspace loads and attaches the programs, fills the offset map from the running kernel's
//! BTF, writes the compiled policy into the rule maps and the agent roots into `AGENT_ROOTS`,
//! and drains the event ring buffer. Programs and maps are pinned in bpffs ([`pin`]): when
//! airlockd dies they keep gating and held tasks stay held (fail closed), and the next airlockd
//! adopts them, including the events recorded meanwhile. Holds are released through
//! [`gate::LsmGate`].
use std::collections::HashMap as StdHashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_common::Settings;
use airlock_policy::{CompiledPolicy, Scopes};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, Lsm, ProgramError};
use aya::{Btf as AyaBtf, Ebpf, EbpfLoader, Pod};
use tokio::io::unix::AsyncFd;

use super::{Backend, BackendError, BackendKind, BackendStats, EventSender};
use crate::agents::AgentSet;
use crate::event::GateEvent;

mod blockdev;
pub mod gate;
pub mod pin;
mod rules;
mod tasks;

use rules::RuleMaps;
use tasks::AgentTasks;
pub use tasks::TRACEPOINTS;

pub use gate::LsmGate;
pub use pin::{remove_pins, version_dir};

/// The LSM programs airlock attaches, by name: the hook's name, but for those in
/// [`attach_point`].
pub const HOOKS: &[&str] = &[
    "bprm_check_security",
    "file_open",
    "path_truncate",
    "path_unlink",
    "path_rmdir",
    "path_mkdir",
    "path_mknod",
    "path_symlink",
    "path_link",
    "path_rename",
    "path_chmod",
    "path_chown",
    "inode_setxattr",
    "inode_removexattr",
    "sb_mount",
    "move_mount",
    "sb_umount",
    // Self-protection (ebpf-programs/src/guard.rs).
    "task_kill",
    "ptrace_access_check",
    "bpf",
    "kernel_read_file",
    "kernel_load_data",
    "task_alloc",
    // Delegation: connections to gated local service sockets.
    "unix_stream_connect",
    // Privilege changes (ebpf-programs/src/privilege.rs).
    "task_fix_setuid",
    "task_fix_setgid",
    "userns_create",
    "bprm_creds_from_file",
    // Content identity of gated binaries (ebpf-programs/src/digest.rs).
    "bprm_exec_content",
    "mmap_file",
    "file_mprotect",
    // Descriptors passed in by other processes; module autoload requests.
    "file_receive",
    "kernel_module_request",
    // Inode flags (chattr) of protected objects; timestamps by `inode_setattr_*` below.
    "file_ioctl",
];

/// The hook program `name` attaches to: a second program on a hook needs a name of its own,
/// and so does each version of a hook whose parameters changed.
pub fn attach_point(name: &'static str) -> &'static str {
    match name {
        "bprm_exec_content" => "bprm_creds_from_file",
        "inode_setattr_dentry" | "inode_setattr_idmap" => "inode_setattr",
        other => other,
    }
}

/// Hooks attached when the running kernel has them (by its BTF): the POSIX ACL hooks exist from
/// 6.2, where ACL changes stopped going through `inode_setxattr`.
pub const OPTIONAL_HOOKS: &[&str] = &["inode_set_acl", "inode_remove_acl"];

/// The hooks to attach on the kernel described by `btf`: every one of [`HOOKS`] and those of
/// [`OPTIONAL_HOOKS`] it has.
fn hooks_of(btf: &crate::btf::Btf) -> Vec<&'static str> {
    // `inode_setattr(dentry, attr)` until 6.7, `(idmap, dentry, attr)` from 6.8.
    let setattr = match btf.func_params("bpf_lsm_inode_setattr") {
        Some(3) => Some("inode_setattr_idmap"),
        Some(2) => Some("inode_setattr_dentry"),
        _ => None,
    };
    HOOKS
        .iter()
        .copied()
        .chain(setattr)
        .chain(
            OPTIONAL_HOOKS
                .iter()
                .copied()
                .filter(|h| btf.has_func(&format!("bpf_lsm_{h}"))),
        )
        .collect()
}

/// Errors of the LSM backend.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The kernel cannot run BPF LSM programs here; the string says why (shown by `airlock status`).
    #[error("BPF LSM is not usable here: {0}")]
    Unavailable(String),
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("program {hook}: {source}")]
    Program {
        hook: &'static str,
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("kernel BTF: {0}")]
    Btf(#[from] crate::btf::BtfError),
    #[error("ring buffer: {0}")]
    Io(#[from] std::io::Error),
    /// Pinning, adopting or removing pins in bpffs failed.
    #[error("bpffs pins: {0}")]
    Pin(String),
}

pub(crate) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> LsmError {
    move |source| LsmError::Map { name, source }
}

/// Running LSM backend. Dropping it leaves the programs attached and the maps in place (they
/// are pinned): gating goes on, and only [`remove_pins`] ends it.
pub struct LsmBackend {
    rules: RuleMaps,
    agents: KernelAgents,
    lost: PerCpuArray<MapData, u64>,
    gate: Arc<LsmGate>,
    delivered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
    adopted: bool,
    /// Pins of other airlock versions: removed (detached) only after the first policy is in
    /// force here, so that something gates all the time during an upgrade.
    stale: Vec<PathBuf>,
}

/// The maps userspace keeps, however the programs came to be (loaded now, or adopted).
struct Maps {
    rules: RuleMaps,
    agents: KernelAgents,
    lost: PerCpuArray<MapData, u64>,
    gate: LsmGate,
    ring: RingBuf<MapData>,
}

impl Maps {
    /// Builds the typed maps from a source of untyped ones (`Ebpf::take_map`, or pins).
    fn from(
        mut take: impl FnMut(&'static str) -> Result<Map, LsmError>,
        agents: KernelAgents,
    ) -> Result<Maps, LsmError> {
        Ok(Maps {
            rules: RuleMaps::from(&mut take)?,
            lost: PerCpuArray::try_from(take("LOST")?).map_err(map_err("LOST"))?,
            gate: LsmGate::new(
                HashMap::try_from(take("ONCE_GRANTS")?).map_err(map_err("ONCE_GRANTS"))?,
                HashMap::try_from(take("AGENT_GRANTS")?).map_err(map_err("AGENT_GRANTS"))?,
            ),
            ring: RingBuf::try_from(take("EVENTS")?).map_err(map_err("EVENTS"))?,
            agents,
        })
    }
}

fn lsm_listed() -> Option<bool> {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .ok()
        .map(|s| s.split(',').any(|m| m.trim() == "bpf"))
}

fn explain_load_failure(hook: &'static str, e: ProgramError) -> LsmError {
    let detail = match &e {
        ProgramError::LoadError { io_error, verifier_log }
            if io_error.raw_os_error() == Some(libc::EPERM) && verifier_log.to_string().trim().is_empty() => {
                match lsm_listed() {
                    Some(false) => "bpf is not in the kernel's active LSM list (/sys/kernel/security/lsm); boot with lsm=...,bpf".to_string(),
                    _ => "the kernel refused to load a BPF LSM program (EPERM with an empty verifier log: BPF trampolines are blocked on this platform)".to_string(),
                }
            }
        ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EPERM) => {
            "attaching a BPF LSM program was refused (EPERM)".to_string()
        }
        _ => return LsmError::Program { hook, source: e },
    };
    LsmError::Unavailable(format!("{detail} [{hook}]"))
}

impl LsmBackend {
    /// Starts gating with the programs pinned under `pin_dir` (see [`pin`]): adopts them when a
    /// complete set from this build is pinned there (a restart, also after kill -9), else loads,
    /// attaches and pins them. Starts draining events into `events` (on adoption, first the ones
    /// recorded while no daemon ran). Mounts bpffs at /sys/fs/bpf when `pin_dir` is below it
    /// and nothing is mounted. Must run inside a tokio runtime. Returns
    /// [`LsmError::Unavailable`] when this kernel cannot run BPF LSM programs, so the caller can
    /// fall back.
    pub fn start(events: EventSender, pin_dir: &Path) -> Result<LsmBackend, LsmError> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(LsmError::Unavailable(
                "the kernel has no BTF (/sys/kernel/btf/vmlinux)".into(),
            ));
        }
        pin::ensure_bpffs(pin_dir)?;
        let btf = crate::btf::Btf::from_sys_fs()?;
        let hooks = hooks_of(&btf);
        let ver = pin::version_dir(pin_dir, crate::EBPF_OBJECT);
        let links: Vec<&str> = hooks
            .iter()
            .copied()
            .chain(TRACEPOINTS.iter().map(|(p, _)| *p))
            .collect();
        let adopted = pin::complete(&ver, &links);
        let maps = if adopted {
            tracing::info!(pins = %ver.display(), "adopting the pinned LSM programs");
            adopt(&ver)?
        } else {
            // Leftovers of an attempt that died half-way through pinning.
            pin::remove_version(&ver)?;
            load_and_pin(&ver, &btf, &hooks).inspect_err(|_| {
                // Nothing half-pinned stays behind (it would hold maps, or gate unarmed).
                let _ = pin::remove_version(&ver);
            })?
        };
        let stale = pin::other_versions(pin_dir, &ver);
        let delivered = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        // SAFETY: the RingBuf owns its fd and lives inside the AsyncFd until both are dropped.
        let ring = unsafe { AsyncFd::register(maps.ring) }.map_err(|e| LsmError::Io(e.into()))?;
        let (d, x) = (delivered.clone(), dropped.clone());
        let reader = tokio::spawn(drain_ring(ring, move |bytes| {
            let ok = match GateEvent::decode(BackendKind::Lsm.as_str(), bytes) {
                Ok(ev) => events.try_send(ev).is_ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable event from the kernel");
                    false
                }
            };
            if ok {
                d.fetch_add(1, Ordering::Relaxed)
            } else {
                x.fetch_add(1, Ordering::Relaxed)
            };
        }));
        Ok(LsmBackend {
            rules: maps.rules,
            agents: maps.agents,
            lost: maps.lost,
            gate: Arc::new(maps.gate),
            delivered,
            dropped,
            reader,
            adopted,
            stale,
        })
    }

    /// Whether [`LsmBackend::start`] adopted programs a previous airlockd had pinned (rather
    /// than loading them).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The gate that releases this backend's holds and writes standing decisions.
    pub fn gate(&self) -> Arc<dyn crate::hold::Gate> {
        self.gate.clone()
    }
}

/// Loads, configures and attaches every program, pinning maps and links into `ver`. The links
/// are not kept open here: once pinned, only removing the pin detaches them.
fn load_and_pin(
    ver: &Path,
    btf: &crate::btf::Btf,
    hooks: &[&'static str],
) -> Result<Maps, LsmError> {
    let offsets = btf.kernel_offsets()?;
    let aya_btf =
        AyaBtf::from_sys_fs().map_err(|e| LsmError::Unavailable(format!("kernel BTF: {e}")))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&aya_btf))
        .load(crate::EBPF_OBJECT)?;
    for &hook in hooks {
        let prog: &mut Lsm = ebpf
            .program_mut(hook)
            .ok_or(LsmError::Unavailable(format!(
                "program {hook} missing from the object"
            )))?
            .try_into()
            .map_err(|source| LsmError::Program { hook, source })?;
        prog.load(attach_point(hook), &aya_btf)
            .map_err(|e| explain_load_failure(hook, e))?;
    }
    // Every program is loaded before any map is taken out of the object below (a map taken
    // and dropped closes the descriptor the loader would relocate into a later program).
    for &(name, tp) in TRACEPOINTS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or(LsmError::Unavailable(format!(
                "program {name} missing from the object"
            )))?
            .try_into()
            .map_err(|source| LsmError::Program { hook: name, source })?;
        prog.load(tp, &aya_btf)
            .map_err(|source| LsmError::Program { hook: name, source })?;
    }
    pin::pin_maps(&ebpf, ver)?;
    set_offsets(&mut ebpf, offsets)?;
    let agents = KernelAgents::take(&mut ebpf)?;
    let maps = Maps::from(
        |name| ebpf.take_map(name).ok_or(LsmError::MissingMap(name)),
        agents,
    )?;
    // Attach only after the maps exist: the programs allow everything until `armed`.
    for &hook in hooks {
        let prog: &mut Lsm = ebpf
            .program_mut(hook)
            .expect("loaded above")
            .try_into()
            .expect("lsm");
        let id = prog.attach().map_err(|e| explain_load_failure(hook, e))?;
        let link = prog
            .take_link(id)
            .map_err(|source| LsmError::Program { hook, source })?;
        pin::pin_link(ver, hook, FdLink::from(link))?;
    }
    // The programs that keep agent membership stuck to processes (tasks.rs).
    for &(name, _) in TRACEPOINTS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .expect("loaded above")
            .try_into()
            .expect("tp_btf");
        let id = prog
            .attach()
            .map_err(|source| LsmError::Program { hook: name, source })?;
        let link = prog
            .take_link(id)
            .map_err(|source| LsmError::Program { hook: name, source })?;
        pin::pin_link(ver, name, FdLink::from(link))?;
    }
    Ok(maps)
}

/// Opens the maps of programs pinned in `ver`; the programs themselves stay as they are.
fn adopt(ver: &Path) -> Result<Maps, LsmError> {
    let agents = KernelAgents::from_maps(
        HashMap::try_from(pin::open_map(ver, "AGENT_ROOTS")?).map_err(map_err("AGENT_ROOTS"))?,
        Array::try_from(pin::open_map(ver, "SETTINGS")?).map_err(map_err("SETTINGS"))?,
        pin::open_map(ver, "AGENT_TASKS")?,
    )?;
    Maps::from(|name| pin::open_map(ver, name), agents)
}

impl Drop for LsmBackend {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Drains a ring buffer, handing each record to `f`, until the task is aborted.
pub(crate) async fn drain_ring(
    mut fd: AsyncFd<RingBuf<MapData>>,
    mut f: impl FnMut(&[u8]) + Send + 'static,
) {
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
        guard.clear_ready();
    }
}

/// Writes the running kernel's struct offsets into the object's `OFFSETS` map.
pub(crate) fn set_offsets(
    ebpf: &mut Ebpf,
    offsets: airlock_common::KernelOffsets,
) -> Result<(), LsmError> {
    let map = ebpf
        .take_map("OFFSETS")
        .ok_or(LsmError::MissingMap("OFFSETS"))?;
    let mut m: Array<MapData, airlock_common::KernelOffsets> =
        Array::try_from(map).map_err(map_err("OFFSETS"))?;
    m.set(0, offsets, 0).map_err(map_err("OFFSETS"))
}

/// The agent-cgroup maps every program consults: `AGENT_ROOTS` and the `SETTINGS` generation
/// that invalidates the classification cache.
pub(crate) struct KernelAgents {
    roots: HashMap<MapData, u64, u32>,
    settings: Array<MapData, Settings>,
    tasks: AgentTasks,
    generation: u64,
}

impl KernelAgents {
    /// Takes the maps out of a loaded object.
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<KernelAgents, LsmError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LsmError::MissingMap(name));
        Ok(KernelAgents {
            roots: HashMap::try_from(take("AGENT_ROOTS")?).map_err(map_err("AGENT_ROOTS"))?,
            settings: Array::try_from(take("SETTINGS")?).map_err(map_err("SETTINGS"))?,
            tasks: AgentTasks::from(take("AGENT_TASKS")?)?,
            generation: 0,
        })
    }

    /// Wraps maps opened from pins, continuing from the generation the programs were last given
    /// (starting again at 0 would leave cache entries of a later generation looking current).
    pub(crate) fn from_maps(
        roots: HashMap<MapData, u64, u32>,
        settings: Array<MapData, Settings>,
        tasks: Map,
    ) -> Result<KernelAgents, LsmError> {
        let generation = settings.get(&0, 0).map(|s| s.generation).unwrap_or(0);
        Ok(KernelAgents {
            roots,
            settings,
            tasks: AgentTasks::from(tasks)?,
            generation,
        })
    }

    /// Makes the kernel's agent roots equal `agents` (with the slots `scopes` gives them) and
    /// arms the programs.
    pub(crate) fn sync(&mut self, agents: &AgentSet, scopes: &Scopes) -> Result<(), LsmError> {
        let roots = agent_roots(agents, |slot| scopes.has_own_rules(slot));
        sync_map("AGENT_ROOTS", &mut self.roots, &roots)?;
        self.tasks.seed(agents, &roots)?;
        // A new generation makes every cached cgroup classification stale.
        self.generation += 1;
        let s = Settings {
            armed: 1,
            backstop: 0,
            generation: self.generation,
            // Signals and ptrace from agent processes to this process are refused (guard.rs).
            self_tgid: std::process::id(),
            _pad: 0,
        };
        self.settings.set(0, s, 0).map_err(map_err("SETTINGS"))
    }
}

/// `AGENT_ROOTS` as the programs read it: each agent root cgroup → its agent's slot in the
/// rule maps ([`airlock_policy::agent_slot`]) when `own(slot)` (some rule names the agent), else
/// 0, so that agents without rules of their own pay one lookup per object, not two.
pub(crate) fn agent_roots(agents: &AgentSet, own: impl Fn(u32) -> bool) -> StdHashMap<u64, u32> {
    agents
        .roots
        .iter()
        .map(|(id, c)| {
            let slot = airlock_policy::agent_slot(&c.agent);
            (*id, if own(slot) { slot } else { 0 })
        })
        .collect()
}

/// Makes `map` hold exactly `want`: new and changed entries first, stale ones removed last, so
/// an object gated before and after the update is never ungated in between.
pub(crate) fn sync_map<K: Pod + Eq + Hash, V: Pod + PartialEq>(
    name: &'static str,
    map: &mut HashMap<MapData, K, V>,
    want: &StdHashMap<K, V>,
) -> Result<(), LsmError> {
    for (k, v) in want {
        if map.get(k, 0).ok().as_ref() != Some(v) {
            map.insert(k, v, 0).map_err(map_err(name))?;
        }
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        map.remove(&k).map_err(map_err(name))?;
    }
    Ok(())
}

impl Backend for LsmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Lsm
    }

    fn apply(&mut self, policy: &CompiledPolicy, agents: &AgentSet) -> Result<(), BackendError> {
        self.rules.sync(policy)?;
        self.agents.sync(agents, &Scopes::of(policy))?;
        // This build's programs are armed now: older versions can go (unpinning detaches them).
        for ver in std::mem::take(&mut self.stale) {
            match pin::remove_version(&ver) {
                Ok(()) => {
                    tracing::info!(pins = %ver.display(), "removed the pins of another airlock build")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove the pins of another airlock build")
                }
            }
        }
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        let kernel_lost: u64 = self
            .lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0);
        BackendStats {
            events: self.delivered.load(Ordering::Relaxed),
            lost: kernel_lost + self.dropped.load(Ordering::Relaxed),
        }
    }

    fn is_alive(&self) -> bool {
        !self.reader.is_finished()
    }
}
