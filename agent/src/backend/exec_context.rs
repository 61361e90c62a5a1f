//! Exec context for both backends, and the fanotify fallback's exec backstop.
//!
//! A tp_btf program on `sched_process_exec` records what each agent process executed (file
//! name as passed to execve, after the exec succeeded), so events can say which program a
//! process runs. tp_btf loads where BPF LSM does not (this project's CI hosts), so the fanotify
//! fallback gets the same context as the LSM backend.
//!
//! # Backstop (fanotify fallback)
//!
//! With [`ExecContextProbe::arm_backstop`] the same program stops (`approve`: SIGSTOP) or kills
//! (`deny`: SIGKILL) an agent's exec of a gated binary that the daemon did not allow, after the
//! exec and before the new image's first instruction (see `ebpf-programs/src/exec_context.rs`).
//! The fanotify listener writes an `EXEC_ALLOW` (thread, binary) entry through [`ExecAllow`]
//! right before it answers `FAN_ALLOW`, so only execs nobody decided are caught: those that
//! run while airlockd is gone, including held execs the kernel allowed when its fanotify group
//! closed (verified with a `kill -9`). The event (`flags::BACKSTOP`, verdict held or denied)
//! waits in the probe's `EVENTS` ring; the daemon's gate resumes (SIGCONT) or kills the stopped
//! process.
//!
//! For that the probe is **pinned** ([`ExecContextProbe::start_pinned`]; its link and the maps
//! it uses under `<dir>/<object hash>/`): it stays attached after the daemon exits or is
//! killed. A restarted daemon of the same build **adopts** it (opens the maps from their pins;
//! the program is never detached) and drains what the ring collected meanwhile. A daemon of
//! another build **replaces** it: loads its own object into `<hash>_new/`, copies the agent
//! roots, rules and settings over, attaches and pins it, and only then unpins the old instance
//! (draining its ring) and renames the new one into place; so a gated exec never runs
//! unstopped in between (both programs may stop the same exec for an instant). [`remove_pins`]
//! detaches for good. Verified on this host (6.18) by `agent/tests/fanotify_host/backstop.rs`.
//!
//! Not covered by the backstop: scripts (`#!`: `bprm->file` is the interpreter by then),
//! binaries matched only by (directory, name) after a replacement (`EXEC_INODES` holds the
//! compiled inodes), monitor mode; a stopped process can be resumed by anything allowed to
//! signal it (the agent itself).
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airlock_common::{ExecAllowKey, ExecContext, FILENAME_LEN, InodeKey, RuleRef, Settings};
use airlock_policy::CompiledPolicy;
use aya::maps::{Array, HashMap, Map, MapData, MapError, RingBuf};
use aya::programs::BtfTracePoint;
use aya::programs::links::{FdLink, PinnedLink};
use aya::{Btf as AyaBtf, Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::EventSender;
use super::fanotify::argv::Argv;
use super::lsm::{LsmError, drain_ring, map_err, set_offsets, sync_map};
use crate::agents::AgentSet;
use crate::event::{DecidedBy, GateEvent};

/// One successful exec by an agent process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub filename: String,
}

impl ExecRecord {
    /// Decodes a ring-buffer record; `None` for a short one.
    pub fn decode(bytes: &[u8]) -> Option<ExecRecord> {
        if bytes.len() < size_of::<ExecContext>() {
            return None;
        }
        // SAFETY: ExecContext is repr(C) POD and the slice is long enough.
        let c: ExecContext = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let end = c
            .filename
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(FILENAME_LEN);
        Some(ExecRecord {
            ktime_ns: c.ktime_ns,
            cgroup_id: c.cgroup_id,
            pid: c.pid,
            tgid: c.tgid,
            filename: String::from_utf8_lossy(&c.filename[..end]).into_owned(),
        })
    }
}

/// The pinned link's file name. Maps are pinned by their names (`SETTINGS`, `AGENT_ROOTS`,
/// `EXEC_INODES`, `EXEC_ALLOW`, `EVENTS`, `EXEC_CONTEXT`) before the link, so the link's
/// presence means the set is complete.
const LINK: &str = "link";
const HOOK: &str = "sched_process_exec";

/// The backstop's allowance map: the fanotify listener writes one entry per exec it allows
/// under an enforcing `deny`/`approve` rule, right before answering.
pub struct ExecAllow {
    map: Mutex<HashMap<MapData, ExecAllowKey, u64>>,
}

impl ExecAllow {
    /// Lets thread `tid`'s exec of `file` (kernel `s_dev` encoding) past the backstop once.
    pub fn allow(&self, tid: u32, file: InodeKey) -> Result<(), MapError> {
        let key = ExecAllowKey {
            tid,
            dev: file.dev,
            ino: file.ino,
        };
        let now = super::fanotify::boottime_ns();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, now, 0)
    }

    /// Entries not consumed (yet): execs allowed that have not reached the tracepoint.
    pub fn pending(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .count()
    }
}

/// The running probe. Dropping it detaches the program unless it is pinned.
pub struct ExecContextProbe {
    _ebpf: Option<Ebpf>,
    _link: Option<PinnedLink>,
    roots: HashMap<MapData, u64, u32>,
    settings: Array<MapData, Settings>,
    exec_inodes: HashMap<MapData, InodeKey, RuleRef>,
    allow: Arc<ExecAllow>,
    events: Option<RingBuf<MapData>>,
    /// Backstop events drained from replaced instances, delivered on arming.
    leftovers: Vec<Vec<u8>>,
    pinned: Option<PathBuf>,
    adopted: bool,
    lost: Arc<AtomicU64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// Reads the exec-context ring into the daemon's channel (see [`Self::drain_now`]).
    context: Option<Arc<ContextDrain>>,
}

/// The exec-context ring and where its records go. The kernel side submits without waking
/// anyone (a wakeup per agent exec was most of the exec overhead inside agents), so the ring is
/// read when the daemon is about to record an event, on a slow timer, and when the kernel
/// forces a wakeup at half full.
struct ContextDrain {
    ring: Mutex<RingBuf<MapData>>,
    tx: mpsc::Sender<ExecRecord>,
    lost: Arc<AtomicU64>,
}

impl ContextDrain {
    fn drain(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(item) = ring.next() {
            if ExecRecord::decode(&item).is_none_or(|r| self.tx.try_send(r).is_err()) {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The exec-context reader task's state. Field order matters: the registration is dropped
/// before the reference that keeps the ring (and so the fd) open.
struct Reader {
    ready: AsyncFd<std::os::fd::RawFd>,
    drain: Arc<ContextDrain>,
}

/// How often the exec-context ring is read when nothing else reads it.
const CONTEXT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

fn io_err(what: impl std::fmt::Display) -> LsmError {
    LsmError::Io(io::Error::other(what.to_string()))
}

/// FNV-1a of the eBPF object: pins of another build are replaced, not adopted.
fn object_tag() -> String {
    let h = crate::EBPF_OBJECT
        .iter()
        .fold(airlock_common::FNV_OFFSET, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(airlock_common::FNV_PRIME)
        });
    format!("{h:016x}")
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type().0 as u64 == libc::BPF_FS_MAGIC as u64)
}

/// Creates `dir` on bpffs, mounting bpffs at `/sys/fs/bpf` first if `dir` is under it and it
/// is not mounted (it is not at boot on some hosts).
pub fn ensure_bpffs(dir: &Path) -> io::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )?;
    }
    std::fs::create_dir_all(dir)?;
    if !is_bpffs(dir) {
        return Err(io::Error::other(format!(
            "{} is not on a BPF filesystem",
            dir.display()
        )));
    }
    Ok(())
}

/// Is this a probe instance directory (named by [`object_tag`]; `_new` appended while staged:
/// bpffs refuses dots in names)?
/// Anything else under the pin directory is left alone.
fn is_instance(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let tag = name.strip_suffix("_new").unwrap_or(name);
    p.is_dir() && tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

fn instances(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_instance(p))
        .collect())
}

/// Removes every pinned probe instance under `dir` (each link first: that detaches the program
/// once no process holds it), then `dir` if nothing else is in it. Missing `dir` is fine.
pub fn remove_pins(dir: &Path) -> io::Result<()> {
    let insts = match instances(dir) {
        Ok(i) => i,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for inst in insts {
        remove_instance(&inst)?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        r => r,
    }
}

fn remove_instance(inst: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(inst.join(LINK));
    for e in std::fs::read_dir(inst)?.flatten() {
        std::fs::remove_file(e.path())?;
    }
    std::fs::remove_dir(inst)
}

fn open_pinned(inst: &Path, name: &'static str) -> Result<Map, LsmError> {
    let data = MapData::from_pin(inst.join(name)).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

/// Copies the agent roots, rules and settings of a pinned instance into a fresh one's maps, so
/// the new program gates like the old from its first exec. Layouts that differ are skipped.
fn copy_state(
    old: &Path,
    roots: &mut HashMap<MapData, u64, u32>,
    settings: &mut Array<MapData, Settings>,
    inodes: &mut HashMap<MapData, InodeKey, RuleRef>,
) {
    let mut copy = || -> Result<(), LsmError> {
        let r: HashMap<MapData, u64, u32> = open_pinned(old, "AGENT_ROOTS")?
            .try_into()
            .map_err(map_err("AGENT_ROOTS"))?;
        for (k, v) in r.iter().flatten() {
            roots.insert(k, v, 0).map_err(map_err("AGENT_ROOTS"))?;
        }
        let i: HashMap<MapData, InodeKey, RuleRef> = open_pinned(old, "EXEC_INODES")?
            .try_into()
            .map_err(map_err("EXEC_INODES"))?;
        for (k, v) in i.iter().flatten() {
            inodes.insert(k, v, 0).map_err(map_err("EXEC_INODES"))?;
        }
        let s: Array<MapData, Settings> = open_pinned(old, "SETTINGS")?
            .try_into()
            .map_err(map_err("SETTINGS"))?;
        settings
            .set(0, s.get(&0, 0).map_err(map_err("SETTINGS"))?, 0)
            .map_err(map_err("SETTINGS"))
    };
    if let Err(e) = copy() {
        tracing::warn!(error = %e, old = %old.display(), "exec probe: state of the replaced instance not copied");
    }
}

impl ExecContextProbe {
    /// Loads and attaches the tracepoint program, unpinned (dropping the probe detaches it),
    /// and starts sending exec records to `tx`. For the LSM backend, whose programs decide
    /// themselves. Must run inside a tokio runtime.
    pub fn start(tx: mpsc::Sender<ExecRecord>) -> Result<ExecContextProbe, LsmError> {
        Self::load(tx, None, None)
    }

    /// [`Self::start`], pinned under `dir` (on bpffs; bpffs is mounted at `/sys/fs/bpf` if
    /// `dir` is under it and it is not mounted): the probe outlives the daemon, for the
    /// fanotify fallback's backstop. Adopts a pinned instance of the same build (the program
    /// is never detached), or replaces one of another build (see the module docs).
    pub fn start_pinned(
        tx: mpsc::Sender<ExecRecord>,
        dir: &Path,
    ) -> Result<ExecContextProbe, LsmError> {
        ensure_bpffs(dir)?;
        let inst = dir.join(object_tag());
        let stage = dir.join(format!("{}_new", object_tag()));
        if !inst.exists() && stage.join(LINK).exists() {
            std::fs::rename(&stage, &inst)?; // a start interrupted after its attach: finish it
        }
        if inst.join(LINK).exists() {
            match Self::adopt(tx.clone(), &inst) {
                Ok(mut p) => {
                    // Leftovers of an interrupted replace: ours is attached, retire theirs.
                    p.retire_others(dir, &inst);
                    return Ok(p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, pins = %inst.display(), "exec probe: pinned instance not adoptable; replacing it")
                }
            }
        }
        if inst.exists() && !inst.join(LINK).exists() {
            remove_instance(&inst)?; // incomplete: nothing of it is attached
        }
        // Load into a staging directory and retire the old instances (an unadoptable one of
        // our own build included) only once the new program is attached.
        if stage.exists() {
            remove_instance(&stage)?;
        }
        let old = instances(dir)?
            .into_iter()
            .find(|p| p != &stage && p.join(LINK).exists());
        std::fs::create_dir(&stage)?;
        let mut p = match Self::load(tx, Some(&stage), old.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let _ = remove_instance(&stage);
                return Err(e);
            }
        };
        p.retire_others(dir, &stage);
        std::fs::rename(&stage, &inst)?;
        p.pinned = Some(inst);
        Ok(p)
    }

    fn load(
        tx: mpsc::Sender<ExecRecord>,
        inst: Option<&Path>,
        copy_from: Option<&Path>,
    ) -> Result<ExecContextProbe, LsmError> {
        let offsets = crate::btf::Btf::from_sys_fs()?.kernel_offsets()?;
        let btf =
            AyaBtf::from_sys_fs().map_err(|e| LsmError::Unavailable(format!("kernel BTF: {e}")))?;
        let mut ebpf = EbpfLoader::new().btf(Some(&btf)).load(crate::EBPF_OBJECT)?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(HOOK)
            .ok_or(LsmError::MissingMap(HOOK))?
            .try_into()
            .map_err(|source| LsmError::Program { hook: HOOK, source })?;
        prog.load(HOOK, &btf)
            .map_err(|source| LsmError::Program { hook: HOOK, source })?;
        // Maps are taken out only after the load: the program's map references must still be
        // open fds when the kernel verifies it. The program keeps its own references after.
        set_offsets(&mut ebpf, offsets)?;
        let mut take = |name: &'static str| -> Result<Map, LsmError> {
            let m = ebpf.take_map(name).ok_or(LsmError::MissingMap(name))?;
            if let Some(inst) = inst {
                m.pin(inst.join(name)).map_err(io_err)?;
            }
            Ok(m)
        };
        let mut roots: HashMap<MapData, u64, u32> = take("AGENT_ROOTS")?
            .try_into()
            .map_err(map_err("AGENT_ROOTS"))?;
        let mut settings: Array<MapData, Settings> =
            take("SETTINGS")?.try_into().map_err(map_err("SETTINGS"))?;
        let mut exec_inodes: HashMap<MapData, InodeKey, RuleRef> = take("EXEC_INODES")?
            .try_into()
            .map_err(map_err("EXEC_INODES"))?;
        let allow = take("EXEC_ALLOW")?
            .try_into()
            .map_err(map_err("EXEC_ALLOW"))?;
        let events = take("EVENTS")?.try_into().map_err(map_err("EVENTS"))?;
        let context = take("EXEC_CONTEXT")?
            .try_into()
            .map_err(map_err("EXEC_CONTEXT"))?;
        if let Some(old) = copy_from {
            copy_state(old, &mut roots, &mut settings, &mut exec_inodes);
        }
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(HOOK)
            .expect("loaded above")
            .try_into()
            .expect("tp_btf");
        let id = prog
            .attach()
            .map_err(|source| LsmError::Program { hook: HOOK, source })?;
        let link = match inst {
            Some(inst) => {
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(|source| LsmError::Program { hook: HOOK, source })?
                    .into();
                Some(link.pin(inst.join(LINK)).map_err(io_err)?)
            }
            None => None,
        };
        let mut p = Self::assemble(roots, settings, exec_inodes, allow, events);
        (p._ebpf, p._link, p.pinned) = (Some(ebpf), link, inst.map(Path::to_path_buf));
        p.drain_context(context, tx)?;
        Ok(p)
    }

    fn adopt(tx: mpsc::Sender<ExecRecord>, inst: &Path) -> Result<ExecContextProbe, LsmError> {
        let link = PinnedLink::from_pin(inst.join(LINK)).map_err(io_err)?;
        let open = |name| open_pinned(inst, name);
        let roots = open("AGENT_ROOTS")?
            .try_into()
            .map_err(map_err("AGENT_ROOTS"))?;
        let settings = open("SETTINGS")?.try_into().map_err(map_err("SETTINGS"))?;
        let exec_inodes = open("EXEC_INODES")?
            .try_into()
            .map_err(map_err("EXEC_INODES"))?;
        let allow = open("EXEC_ALLOW")?
            .try_into()
            .map_err(map_err("EXEC_ALLOW"))?;
        let events = open("EVENTS")?.try_into().map_err(map_err("EVENTS"))?;
        let context = open("EXEC_CONTEXT")?
            .try_into()
            .map_err(map_err("EXEC_CONTEXT"))?;
        let mut p = Self::assemble(roots, settings, exec_inodes, allow, events);
        (p._link, p.pinned, p.adopted) = (Some(link), Some(inst.to_path_buf()), true);
        p.drain_context(context, tx)?;
        Ok(p)
    }

    fn assemble(
        roots: HashMap<MapData, u64, u32>,
        settings: Array<MapData, Settings>,
        exec_inodes: HashMap<MapData, InodeKey, RuleRef>,
        allow: HashMap<MapData, ExecAllowKey, u64>,
        events: RingBuf<MapData>,
    ) -> ExecContextProbe {
        ExecContextProbe {
            _ebpf: None,
            _link: None,
            roots,
            settings,
            exec_inodes,
            allow: Arc::new(ExecAllow {
                map: Mutex::new(allow),
            }),
            events: Some(events),
            leftovers: Vec::new(),
            pinned: None,
            adopted: false,
            lost: Arc::new(AtomicU64::new(0)),
            readers: Vec::new(),
            context: None,
        }
    }

    fn drain_context(
        &mut self,
        ring: RingBuf<MapData>,
        tx: mpsc::Sender<ExecRecord>,
    ) -> Result<(), LsmError> {
        use std::os::fd::AsRawFd as _;
        let fd = ring.as_raw_fd();
        let d = Arc::new(ContextDrain {
            ring: Mutex::new(ring),
            tx,
            lost: self.lost.clone(),
        });
        // Readiness only (the kernel's forced wakeups); reading goes through `d`.
        // SAFETY: the fd belongs to the ring inside `d`; `Reader` drops its registration
        // before its own reference to `d`, so the fd is open for as long as it is registered.
        let ready = unsafe { AsyncFd::register(fd) }.map_err(|e| LsmError::Io(e.into()))?;
        let r = Reader {
            ready,
            drain: d.clone(),
        };
        self.readers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONTEXT_POLL);
            loop {
                tokio::select! {
                    g = r.ready.readable() => match g {
                        Ok(mut g) => {
                            r.drain.drain();
                            g.clear_ready();
                        }
                        Err(_) => return,
                    },
                    _ = tick.tick() => r.drain.drain(),
                }
            }
        }));
        self.context = Some(d);
        Ok(())
    }

    /// Reads every exec record the kernel has queued into the daemon's channel, now: called
    /// right before an event is recorded, so the event finds its process's latest exec.
    pub fn drain_now(&self) {
        if let Some(d) = &self.context {
            d.drain();
        }
    }

    /// Unpins every other instance under `dir` (after ours is attached), keeping the backstop
    /// events still in their rings for [`Self::arm_backstop`].
    fn retire_others(&mut self, dir: &Path, ours: &Path) {
        let Ok(insts) = instances(dir) else { return };
        for old in insts.into_iter().filter(|p| p != ours) {
            let ring = open_pinned(&old, "EVENTS")
                .and_then(|m| RingBuf::try_from(m).map_err(map_err("EVENTS")));
            // Detach first, so nothing is added to the ring after it is drained.
            let _ = std::fs::remove_file(old.join(LINK));
            if let Ok(mut ring) = ring {
                while let Some(item) = ring.next() {
                    self.leftovers.push(item.to_vec());
                }
            }
            if let Err(e) = remove_instance(&old) {
                tracing::warn!(error = %e, pins = %old.display(), "exec probe: removing replaced pins");
            }
        }
    }

    /// The instance's pin directory, when pinned.
    pub fn pinned(&self) -> Option<&Path> {
        self.pinned.as_deref()
    }

    /// Whether this probe was adopted from pins (rather than loaded).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn settings(&self) -> Settings {
        self.settings.get(&0, 0).unwrap_or_default()
    }

    /// Points the probe at the current agent cgroups and arms it. The classification cache is
    /// invalidated by a generation bump that continues from the pinned one after an adopt.
    pub fn set_agents(&mut self, agents: &AgentSet) -> Result<(), LsmError> {
        // Every agent gets its own slot here, whether or not a rule names it: a reload sets the
        // agents before the rules, and a missed own-entry lookup costs an exec one map lookup.
        let roots = super::lsm::agent_roots(agents, |_| true);
        sync_map("AGENT_ROOTS", &mut self.roots, &roots)?;
        let s = self.settings();
        let s = Settings {
            armed: 1,
            generation: s.generation + 1,
            ..s
        };
        self.settings.set(0, s, 0).map_err(map_err("SETTINGS"))
    }

    /// The gated binaries (by inode) the backstop checks: the policy's effective exec rules.
    pub fn set_rules(&mut self, policy: &CompiledPolicy) -> Result<(), LsmError> {
        sync_map(
            "EXEC_INODES",
            &mut self.exec_inodes,
            &airlock_policy::effective_exec_map(policy),
        )
    }

    /// Turns the backstop on (fanotify fallback): from now on an agent exec of a binary under
    /// an enforcing `deny`/`approve` rule without an `EXEC_ALLOW` entry is stopped or killed.
    /// Backstop events (those waiting in a pinned ring included) are decoded and sent to
    /// `events` (`decided_by: Backstop`, argv from `/proc/<pid>/cmdline` of the stopped
    /// process). Returns the handle the fanotify backend writes allowances through
    /// (`FanotifyBackend::set_backstop`). Must run inside a tokio runtime.
    pub fn arm_backstop(&mut self, events: EventSender) -> Result<Arc<ExecAllow>, LsmError> {
        let s = Settings {
            backstop: 1,
            ..self.settings()
        };
        self.settings.set(0, s, 0).map_err(map_err("SETTINGS"))?;
        let lost = self.lost.clone();
        let deliver = move |bytes: &[u8]| match decode_backstop(bytes) {
            Some(ev) => {
                if events.try_send(ev).is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                lost.fetch_add(1, Ordering::Relaxed);
            }
        };
        for bytes in std::mem::take(&mut self.leftovers) {
            deliver(&bytes);
        }
        if let Some(ring) = self.events.take() {
            // SAFETY: as in drain_context.
            let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| LsmError::Io(e.into()))?;
            self.readers.push(tokio::spawn(drain_ring(ring, deliver)));
        }
        Ok(self.allow.clone())
    }

    /// The allowance handle (also returned by [`Self::arm_backstop`]).
    pub fn exec_allow(&self) -> Arc<ExecAllow> {
        self.allow.clone()
    }

    /// Records and backstop events that could not be delivered.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// A backstop event as the daemon sees it: decoded, with the stopped process's arguments.
pub fn decode_backstop(bytes: &[u8]) -> Option<GateEvent> {
    let mut ev = GateEvent::decode("fanotify", bytes)
        .map_err(|e| tracing::warn!(error = %e, "undecodable backstop event"))
        .ok()?;
    if ev.decided_by == Some(DecidedBy::Backstop)
        && let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", ev.tgid))
    {
        let a = Argv::from_args(cmdline.split(|&b| b == 0).filter(|s| !s.is_empty()));
        (ev.argv, ev.argv_truncated, ev.argv_hash) = (a.strings(), a.truncated, a.hash());
    }
    Some(ev)
}

impl Drop for ExecContextProbe {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_common::{ARG_LEN, ARGV_MAX, Event, action, flags, op, verdict};

    #[test]
    fn decodes_a_record_and_stops_the_name_at_nul() {
        let mut c = ExecContext {
            ktime_ns: 5,
            cgroup_id: 9,
            pid: 3,
            tgid: 3,
            filename: [0; FILENAME_LEN],
        };
        c.filename[..8].copy_from_slice(b"/bin/sh\0");
        // SAFETY: bytes of a POD value.
        let b = unsafe {
            core::slice::from_raw_parts(
                (&c as *const ExecContext).cast::<u8>(),
                size_of::<ExecContext>(),
            )
        };
        let r = ExecRecord::decode(b).unwrap();
        assert_eq!(
            (r.filename.as_str(), r.tgid, r.cgroup_id),
            ("/bin/sh", 3, 9)
        );
        assert!(ExecRecord::decode(&b[..10]).is_none());
    }

    #[test]
    fn backstop_events_carry_the_stopped_processs_arguments() {
        // Our own process stands in for the stopped one: its cmdline is readable.
        let me = std::process::id();
        let ev = Event {
            ktime_ns: 1,
            cgroup_id: 2,
            target_ino: 3,
            pid: me,
            tgid: me,
            ppid: 1,
            uid: 0,
            euid: 0,
            target_dev: 4,
            op: op::EXEC,
            rule_id: 0,
            action: action::APPROVE,
            verdict: verdict::HELD,
            flags: flags::BACKSTOP,
            comm: [0; 16],
            name: [0; airlock_common::NAME_LEN],
            argv_hash: 0,
            argc: 0,
            _pad: 0,
            argv: [[0; ARG_LEN]; ARGV_MAX],
        };
        // SAFETY: bytes of a POD value.
        let b = unsafe {
            core::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), size_of::<Event>())
        };
        let g = decode_backstop(b).unwrap();
        assert_eq!(g.decided_by, Some(DecidedBy::Backstop));
        let first = std::env::args().next().unwrap();
        assert!(
            g.argv
                .first()
                .is_some_and(|a| first.starts_with(a.as_str())),
            "{:?}",
            g.argv
        );
        assert_ne!(g.argv_hash, 0);
    }

    #[test]
    fn the_object_tag_is_stable_for_one_build() {
        assert_eq!(object_tag(), object_tag());
        assert_eq!(object_tag().len(), 16);
    }
}
