//! Operations where a hold cannot be kept, for the scenarios that check they fail with EPERM:
//! `airlock-e2e --op uring-open PATH [async]` (one openat through io_uring, raw syscalls, no
//! liburing; prints `ok` or `errno=N` from the completion, N as the kernel put it, so an
//! internal code such as 513 would show) and `--op traced-write PATH`.

/// `struct io_sqring_offsets` / `io_cqring_offsets` (both 40 bytes).
#[repr(C)]
#[derive(Default)]
struct RingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags_or_overflow: u32,
    dropped_or_cqes: u32,
    array_or_flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: RingOffsets,
    cq_off: RingOffsets,
}

const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_OP_OPENAT: u8 = 18;
const IOSQE_ASYNC: u8 = 1 << 4;
const IORING_ENTER_GETEVENTS: u32 = 1;

fn fail(what: &str) -> ! {
    println!(
        "setup-failed {what} errno={}",
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    );
    std::process::exit(0)
}

/// Opens `path` for appending through io_uring; `force_async` sends it to an io-wq worker.
pub fn open(path: &str, force_async: bool) -> ! {
    let cpath = std::ffi::CString::new(path).expect("no NUL in test paths");
    let mut p = Params::default();
    // SAFETY: raw io_uring syscalls and mappings of the ring this process just created; every
    // pointer below stays within the sizes the kernel reported in `p`.
    unsafe {
        let fd = libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut p as *mut Params) as i32;
        if fd < 0 {
            fail("io_uring_setup")
        }
        let map = |len: usize, off: i64| {
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            );
            if m == libc::MAP_FAILED {
                fail("mmap")
            }
            m.cast::<u8>()
        };
        let sq_len = p.sq_off.array_or_flags as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.dropped_or_cqes as usize + p.cq_entries as usize * 16;
        let sq = map(sq_len, IORING_OFF_SQ_RING);
        let cq = map(cq_len, IORING_OFF_CQ_RING);
        let sqes = map(p.sq_entries as usize * 64, IORING_OFF_SQES);
        // The one submission entry.
        let sqe = sqes;
        std::ptr::write_bytes(sqe, 0, 64);
        *sqe = IORING_OP_OPENAT;
        *sqe.add(1) = if force_async { IOSQE_ASYNC } else { 0 };
        *(sqe.add(4).cast::<i32>()) = libc::AT_FDCWD;
        *(sqe.add(16).cast::<u64>()) = cpath.as_ptr() as u64;
        *(sqe.add(24).cast::<u32>()) = 0o644;
        *(sqe.add(28).cast::<u32>()) = (libc::O_WRONLY | libc::O_APPEND) as u32;
        *(sqe.add(32).cast::<u64>()) = 7;
        let tail = sq.add(p.sq_off.tail as usize).cast::<u32>();
        let mask = *sq.add(p.sq_off.ring_mask as usize).cast::<u32>();
        let t = std::ptr::read_volatile(tail);
        *sq.add(p.sq_off.array_or_flags as usize + 4 * (t & mask) as usize)
            .cast::<u32>() = 0;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        std::ptr::write_volatile(tail, t + 1);
        let n = libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<libc::c_void>(),
            0usize,
        );
        if n < 0 {
            fail("io_uring_enter")
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let head = std::ptr::read_volatile(cq.add(p.cq_off.head as usize).cast::<u32>());
        let ctail = std::ptr::read_volatile(cq.add(p.cq_off.tail as usize).cast::<u32>());
        if head == ctail {
            println!("no-completion");
            std::process::exit(0)
        }
        let cmask = *cq.add(p.cq_off.ring_mask as usize).cast::<u32>();
        let cqe = cq.add(p.cq_off.dropped_or_cqes as usize + 16 * (head & cmask) as usize);
        let res = *(cqe.add(8).cast::<i32>());
        if res < 0 {
            println!("errno={}", -res);
        } else {
            println!("ok");
        }
        std::process::exit(0)
    }
}

/// Forks a child that asks to be traced and opens `path` for appending; this process traces it
/// and swallows every signal it stops for (SIGSTOP included). Prints the child's result, or
/// `looped` if the child stopped more than 200 times.
pub fn traced_write(path: &str) -> ! {
    let cpath = std::ffi::CString::new(path).expect("no NUL in test paths");
    // SAFETY: fork in a single-threaded helper process; the child only makes async-signal-safe
    // calls (ptrace, raise, open, write, _exit).
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
            let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_APPEND);
            let msg = if fd >= 0 {
                "ok\n".to_string()
            } else {
                format!(
                    "errno={}\n",
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                )
            };
            libc::write(1, msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
        if pid < 0 {
            fail("fork")
        }
        let mut stops = 0;
        loop {
            let mut st = 0;
            if libc::waitpid(pid, &mut st, 0) < 0 || libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                break;
            }
            stops += 1;
            if stops > 200 {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut st, 0);
                println!("looped");
                break;
            }
            // Continue without delivering the signal: a tracer swallowing the hold's SIGSTOP.
            libc::ptrace(libc::PTRACE_CONT, pid, 0, 0);
        }
        std::process::exit(0)
    }
}
