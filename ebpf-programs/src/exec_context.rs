//! Exec context (both backends): what agent processes execute, recorded after the exec.
use airlock_common::ExecContext;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{EXEC_CONTEXT, LOST, in_agent_cgroup, offsets, read_u64};

/// After a successful exec by an agent process: record what it now runs. Runs on every exec on
/// the host (tp_btf: no measurable cost here); non-agents leave at the classification lookup.
/// Works on kernels that refuse BPF LSM, so both backends get exec context.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let Some(cg) = in_agent_cgroup() else { return 0 };
    let Some(o) = offsets() else { return 0 };
    let bprm: u64 = ctx.arg(2);
    let Some(mut entry) = EXEC_CONTEXT.reserve::<ExecContext>(0) else {
        if let Some(n) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *n += 1 };
        }
        return 0;
    };
    let e = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let name = read_u64(bprm + o.binprm_filename as u64);
    // SAFETY: `e` points at a reserved, exclusively owned ring-buffer record.
    unsafe {
        (*e).ktime_ns = bpf_ktime_get_boot_ns();
        (*e).cgroup_id = cg;
        (*e).pid = pid_tgid as u32;
        (*e).tgid = (pid_tgid >> 32) as u32;
        (*e).filename = [0; airlock_common::FILENAME_LEN];
        let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*e).filename);
    }
    entry.submit(0);
    0
}
