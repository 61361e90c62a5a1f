//! Exec context for both backends: a tp_btf program on `sched_process_exec` records what each
//! agent process executed (file name as passed to execve, after the exec succeeded), so events
//! can say which program a process runs. tp_btf loads where BPF LSM does not (this project's CI
//! hosts), so the fanotify fallback gets the same context as the LSM backend.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_common::{ExecContext, FILENAME_LEN};
use aya::programs::BtfTracePoint;
use aya::{Btf as AyaBtf, Ebpf, EbpfLoader};
use aya::maps::RingBuf;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::lsm::{KernelAgents, LsmError, drain_ring, map_err, set_offsets};
use crate::agents::AgentSet;

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
        let end = c.filename.iter().position(|&b| b == 0).unwrap_or(FILENAME_LEN);
        Some(ExecRecord {
            ktime_ns: c.ktime_ns,
            cgroup_id: c.cgroup_id,
            pid: c.pid,
            tgid: c.tgid,
            filename: String::from_utf8_lossy(&c.filename[..end]).into_owned(),
        })
    }
}

/// The running probe; dropping it detaches the program.
pub struct ExecContextProbe {
    _ebpf: Ebpf,
    agents: KernelAgents,
    lost: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl ExecContextProbe {
    /// Loads and attaches the tracepoint program and starts sending records to `tx`. Must run
    /// inside a tokio runtime.
    pub fn start(tx: mpsc::Sender<ExecRecord>) -> Result<ExecContextProbe, LsmError> {
        let offsets = crate::btf::Btf::from_sys_fs()?.kernel_offsets()?;
        let btf = AyaBtf::from_sys_fs().map_err(|e| LsmError::Unavailable(format!("kernel BTF: {e}")))?;
        let mut ebpf = EbpfLoader::new().btf(Some(&btf)).load(crate::EBPF_OBJECT)?;
        let hook = "sched_process_exec";
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(hook)
            .ok_or(LsmError::MissingMap(hook))?
            .try_into()
            .map_err(|source| LsmError::Program { hook, source })?;
        prog.load(hook, &btf).map_err(|source| LsmError::Program { hook, source })?;
        // Maps are taken out only after the load: the program's map references must still be
        // open fds when the kernel verifies it. The program keeps its own references after.
        set_offsets(&mut ebpf, offsets)?;
        let agents = KernelAgents::take(&mut ebpf)?;
        let ring = RingBuf::try_from(ebpf.take_map("EXEC_CONTEXT").ok_or(LsmError::MissingMap("EXEC_CONTEXT"))?)
            .map_err(map_err("EXEC_CONTEXT"))?;
        let prog: &mut BtfTracePoint = ebpf.program_mut(hook).expect("loaded above").try_into().expect("tp_btf");
        prog.attach().map_err(|source| LsmError::Program { hook, source })?;
        let lost = Arc::new(AtomicU64::new(0));
        let l = lost.clone();
        // SAFETY: the RingBuf owns its fd and lives inside the AsyncFd until both are dropped.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| LsmError::Io(e.into()))?;
        let reader = tokio::spawn(drain_ring(ring, move |bytes| {
            if ExecRecord::decode(bytes).is_none_or(|r| tx.try_send(r).is_err()) {
                l.fetch_add(1, Ordering::Relaxed);
            }
        }));
        Ok(ExecContextProbe { _ebpf: ebpf, agents, lost, reader })
    }

    /// Points the probe at the current agent cgroups.
    pub fn set_agents(&mut self, agents: &AgentSet) -> Result<(), LsmError> {
        self.agents.sync(agents)
    }

    /// Records that could not be delivered.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for ExecContextProbe {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_record_and_stops_the_name_at_nul() {
        let mut c = ExecContext { ktime_ns: 5, cgroup_id: 9, pid: 3, tgid: 3, filename: [0; FILENAME_LEN] };
        c.filename[..8].copy_from_slice(b"/bin/sh\0");
        // SAFETY: bytes of a POD value.
        let b = unsafe { core::slice::from_raw_parts((&c as *const ExecContext).cast::<u8>(), size_of::<ExecContext>()) };
        let r = ExecRecord::decode(b).unwrap();
        assert_eq!((r.filename.as_str(), r.tgid, r.cgroup_id), ("/bin/sh", 3, 9));
        assert!(ExecRecord::decode(&b[..10]).is_none());
    }
}
