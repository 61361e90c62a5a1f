//! `airlock-e2e --op ...`: performs one syscall as the test's agent (or non-agent) child and
//! prints `ok` or `errno=N`, so scenarios can assert exact kernel results.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;

fn c(p: &str) -> CString {
    CString::new(std::ffi::OsStr::new(p).as_bytes()).expect("no NUL in test paths")
}

fn report(rc: i64) -> ! {
    if rc < 0 {
        println!(
            "errno={}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        );
    } else {
        println!("ok");
    }
    std::process::exit(0)
}

/// Runs `op` with `args`; never returns.
pub fn run(op: &str, args: &[String]) -> ! {
    let a = |i: usize| {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("--op {op}: missing argument {i}");
            std::process::exit(2)
        })
    };
    // SAFETY: plain syscalls on NUL-terminated strings owned for the duration of each call.
    unsafe {
        match op {
            "exec" => {
                let path = c(a(0));
                let argv: Vec<CString> = args.iter().map(|s| c(s)).collect();
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                libc::execv(path.as_ptr(), ptrs.as_ptr());
                println!(
                    "errno={}",
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                );
                std::process::exit(111)
            }
            // `drop-cap-exec CAP PATH ARGV...`: drops capability CAP from the permitted,
            // effective and inheritable sets, then execs like `exec` (a root process gets
            // every capability back at exec: a gain).
            "drop-cap-exec" => {
                let cap: u32 = a(0).parse().unwrap_or(13);
                let mut hdr = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
                let mut data = [0u32; 6]; // {effective, permitted, inheritable} x 2
                if libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) != 0 {
                    report(-1)
                }
                let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
                for set in 0..3 {
                    data[word * 3 + set] &= !bit;
                }
                if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) != 0 {
                    report(-1)
                }
                let path = c(a(1));
                let argv: Vec<CString> = args[2..].iter().map(|s| c(s)).collect();
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                libc::execv(path.as_ptr(), ptrs.as_ptr());
                report(-1)
            }
            // Prints the effective ids and the permitted capabilities (after an exec above).
            "ids" => {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let capprm = status
                    .lines()
                    .find_map(|l| l.strip_prefix("CapPrm:"))
                    .unwrap_or("?")
                    .trim()
                    .to_owned();
                println!(
                    "euid={} egid={} capprm={capprm}",
                    libc::geteuid(),
                    libc::getegid()
                );
                std::process::exit(0)
            }
            "fdexec" => {
                let fd = libc::open(c(a(0)).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    report(-1)
                }
                let p = format!("/proc/self/fd/{fd}");
                // Not CLOEXEC-safe for scripts, fine for ELF binaries.
                libc::fcntl(fd, libc::F_SETFD, 0);
                let mut argv = vec![c(&p)];
                argv.extend(args[1..].iter().map(|s| c(s)));
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                libc::execv(c(&p).as_ptr(), ptrs.as_ptr());
                println!(
                    "errno={}",
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                );
                std::process::exit(111)
            }
            // `memfd-exec PATH ARGV...`: the file's bytes copied into a memfd, run with
            // execveat(AT_EMPTY_PATH) (fexecve): no path, an inode of its own.
            "memfd-exec" => {
                let bytes = std::fs::read(a(0)).unwrap_or_default();
                let fd = libc::memfd_create(c("airlock-e2e").as_ptr(), 0);
                if fd < 0 || libc::write(fd, bytes.as_ptr().cast(), bytes.len()) < 0 {
                    report(-1)
                }
                let argv: Vec<CString> = args.iter().map(|s| c(s)).collect();
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c("").as_ptr(),
                    ptrs.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
                report(-1)
            }
            // `wait-then-exec FLAG PATH ARGV...`: waits until FLAG exists (the test moves this
            // process meanwhile), then a child execs PATH and so does this process; prints
            // `child:errno=N` / `errno=N` for each exec that fails.
            "wait-then-exec" => {
                while !std::path::Path::new(a(0)).exists() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let path = c(a(1));
                let argv: Vec<CString> = args[1..].iter().map(|s| c(s)).collect();
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                let child = libc::fork();
                if child == 0 {
                    libc::execv(path.as_ptr(), ptrs.as_ptr());
                    println!(
                        "child:errno={}",
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                    );
                    libc::_exit(111);
                }
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                libc::execv(path.as_ptr(), ptrs.as_ptr());
                report(-1)
            }
            // `chattr-append PATH [clear]`: sets (or clears) the append-only inode flag
            // (chattr +a) through an ioctl on a read-only descriptor.
            "chattr-append" => {
                let fd = libc::open(c(a(0)).as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    report(-1)
                }
                let mut flags: libc::c_long = 0;
                if libc::ioctl(fd, 0x8008_6601, &mut flags) < 0 {
                    report(-1)
                }
                if args.get(1).is_some_and(|s| s == "clear") {
                    flags &= !0x20;
                } else {
                    flags |= 0x20; // FS_APPEND_FL
                }
                report(i64::from(libc::ioctl(fd, 0x4008_6602, &flags)))
            }
            // `set-times PATH`: sets its access and modification times to the epoch (touch -d).
            "set-times" => {
                let t = [libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }; 2];
                report(i64::from(libc::utimensat(
                    libc::AT_FDCWD,
                    c(a(0)).as_ptr(),
                    t.as_ptr(),
                    0,
                )))
            }
            // `socket-family N`: a socket of address family N (one the kernel has not loaded
            // asks for its module).
            "socket-family" => report(i64::from(libc::socket(
                a(0).parse().unwrap_or(5),
                libc::SOCK_DGRAM,
                0,
            ))),
            // `send-fd SOCK FILE`: listens on SOCK, opens FILE for writing and passes the
            // descriptor (SCM_RIGHTS) to the first caller.
            "send-fd" => crate::ops_fd::send_fd(a(0), a(1)),
            // `recv-fd-write SOCK DATA`: takes a descriptor from SOCK and writes DATA to it;
            // prints `no-fd` when none arrived (refused), else like `write`.
            "recv-fd-write" => crate::ops_fd::recv_fd_write(a(0), a(1)),
            // `map-exec PATH`: maps the file's first page executable, as a loader would.
            "map-exec" => {
                let fd = libc::open(c(a(0)).as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    report(-1)
                }
                let prot = libc::PROT_READ | libc::PROT_EXEC;
                let m = libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE, fd, 0);
                report(if m == libc::MAP_FAILED { -1 } else { 0 })
            }
            // `mprotect-exec PATH`: maps it readable, then makes the mapping executable.
            "mprotect-exec" => {
                let fd = libc::open(c(a(0)).as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    report(-1)
                }
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                );
                if m == libc::MAP_FAILED {
                    println!("mmap failed");
                    std::process::exit(0)
                }
                let prot = libc::PROT_READ | libc::PROT_EXEC;
                report(i64::from(libc::mprotect(m, 4096, prot)))
            }
            "write" => {
                let fd = libc::open(c(a(0)).as_ptr(), libc::O_WRONLY | libc::O_APPEND);
                if fd >= 0 {
                    libc::write(fd, b"agent-wrote\n".as_ptr().cast(), 12);
                }
                report(fd as i64)
            }
            "trunc" => report(libc::open(c(a(0)).as_ptr(), libc::O_WRONLY | libc::O_TRUNC) as i64),
            "read" => report(libc::open(c(a(0)).as_ptr(), libc::O_RDONLY) as i64),
            "create" => report(libc::open(
                c(a(0)).as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o644,
            ) as i64),
            "unlink" => report(libc::unlink(c(a(0)).as_ptr()) as i64),
            "rename" => report(libc::rename(c(a(0)).as_ptr(), c(a(1)).as_ptr()) as i64),
            "link" => report(libc::link(c(a(0)).as_ptr(), c(a(1)).as_ptr()) as i64),
            "symlink" => report(libc::symlink(c(a(0)).as_ptr(), c(a(1)).as_ptr()) as i64),
            "chmod" => report(libc::chmod(c(a(0)).as_ptr(), 0o600) as i64),
            "chown" => report(libc::chown(c(a(0)).as_ptr(), 1, 1) as i64),
            "mount-tmpfs" => report(i64::from(libc::mount(
                c("airlock-e2e").as_ptr(),
                c(a(0)).as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                std::ptr::null(),
            ))),
            "umount" => report(i64::from(libc::umount2(c(a(0)).as_ptr(), 0))),
            "setuid" => report(i64::from(libc::setuid(a(0).parse().unwrap_or(65534)))),
            "setgid" => report(i64::from(libc::setgid(a(0).parse().unwrap_or(65534)))),
            "unshare-user" => report(i64::from(libc::unshare(libc::CLONE_NEWUSER))),
            "setxattr" => report(i64::from(libc::setxattr(
                c(a(0)).as_ptr(),
                c("trusted.airlock-e2e").as_ptr(),
                b"x".as_ptr().cast(),
                1,
                0,
            ))),
            // `set-acl PATH [default]`: an ACL granting everyone rwx (for an access ACL, mode
            // 0777 by another route than chmod): v2
            // header, then USER_OBJ, GROUP_OBJ and OTHER entries (tag, perm, id) of 8 bytes each.
            "set-acl" => {
                let mut acl = 2u32.to_le_bytes().to_vec();
                for tag in [0x01u16, 0x04, 0x20] {
                    acl.extend_from_slice(&tag.to_le_bytes());
                    acl.extend_from_slice(&7u16.to_le_bytes());
                    acl.extend_from_slice(&u32::MAX.to_le_bytes());
                }
                let name = if args.get(1).map(String::as_str) == Some("default") {
                    "system.posix_acl_default"
                } else {
                    "system.posix_acl_access"
                };
                report(i64::from(libc::setxattr(
                    c(a(0)).as_ptr(),
                    c(name).as_ptr(),
                    acl.as_ptr().cast(),
                    acl.len(),
                    0,
                )))
            }
            // A default ACL on a directory is removable (an access ACL equal to the mode is
            // not stored at all), so removal is tried on that one.
            "remove-default-acl" => report(i64::from(libc::removexattr(
                c(a(0)).as_ptr(),
                c("system.posix_acl_default").as_ptr(),
            ))),
            "removexattr" => report(i64::from(libc::removexattr(
                c(a(0)).as_ptr(),
                c("trusted.airlock-e2e").as_ptr(),
            ))),
            "truncate" => report(libc::truncate(c(a(0)).as_ptr(), 0) as i64),
            "mkdir" => report(libc::mkdir(c(a(0)).as_ptr(), 0o755) as i64),
            "kill" => {
                let pid: i32 = a(0).parse().unwrap_or(0);
                let sig: i32 = a(1).parse().unwrap_or(0);
                report(i64::from(libc::kill(pid, sig)))
            }
            "ptrace-attach" => {
                let pid: i32 = a(0).parse().unwrap_or(0);
                let rc = libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
                if rc == 0 {
                    // Attached after all: let it go again before reporting.
                    let mut st = 0;
                    libc::waitpid(pid, &mut st, libc::__WALL);
                    libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
                }
                report(rc)
            }
            "ptrace-own-child" => {
                // PTRACE_ATTACH to a child of ours (same cgroup): an agent debugging its own.
                let child = libc::fork();
                if child == 0 {
                    libc::pause();
                    libc::_exit(0)
                }
                let rc = libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0);
                if rc == 0 {
                    let mut st = 0;
                    libc::waitpid(child, &mut st, libc::__WALL);
                    libc::ptrace(libc::PTRACE_DETACH, child, 0, 0);
                }
                let errno = std::io::Error::last_os_error();
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, std::ptr::null_mut(), 0);
                if rc < 0 {
                    println!("errno={}", errno.raw_os_error().unwrap_or(0));
                    std::process::exit(0)
                }
                report(0)
            }
            "proc-mem" => report(i64::from(libc::open(
                c(&format!("/proc/{}/mem", a(0))).as_ptr(),
                libc::O_RDONLY,
            ))),
            "bpf-next-id" => {
                // BPF_PROG_GET_NEXT_ID from 0: harmless, and root may always ask.
                let mut attr = [0u32; 4];
                report(libc::syscall(
                    libc::SYS_bpf,
                    11,
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr),
                ))
            }
            "bpf-map-create" => {
                // BPF_MAP_CREATE: an array of one 4-byte value.
                let mut attr = [0u32; 16];
                attr[0] = 2; // BPF_MAP_TYPE_ARRAY
                attr[1] = 4; // key size
                attr[2] = 4; // value size
                attr[3] = 1; // max entries
                report(libc::syscall(
                    libc::SYS_bpf,
                    0,
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr),
                ))
            }
            "init-module" => {
                // Not a module: the kernel itself would say ENOEXEC; airlock says EPERM first.
                let junk = [0u8; 64];
                report(libc::syscall(
                    libc::SYS_init_module,
                    junk.as_ptr(),
                    junk.len(),
                    c("").as_ptr(),
                ))
            }
            "finit-module" => {
                let fd = libc::open(c(a(0)).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    report(-1)
                }
                report(libc::syscall(libc::SYS_finit_module, fd, c("").as_ptr(), 0))
            }
            "connect" => {
                // connect(2) to the Unix stream socket at a(0).
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    report(-1)
                }
                let mut sa: libc::sockaddr_un = std::mem::zeroed();
                sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (d, s) in sa.sun_path.iter_mut().zip(a(0).as_bytes()) {
                    *d = *s as libc::c_char;
                }
                report(i64::from(libc::connect(
                    fd,
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_un>() as libc::socklen_t,
                )))
            }
            "clone-into" => {
                // clone3(CLONE_INTO_CGROUP) into the cgroup directory a(0); the child exits at once.
                let fd = libc::open(
                    c(a(0)).as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    report(-1)
                }
                // struct clone_args, CLONE_ARGS_SIZE_VER2.
                let mut ca = [0u64; 11];
                ca[0] = 0x2_0000_0000; // flags: CLONE_INTO_CGROUP
                ca[4] = libc::SIGCHLD as u64; // exit_signal
                ca[10] = fd as u64; // cgroup
                let pid = libc::syscall(libc::SYS_clone3, ca.as_mut_ptr(), size_of_val(&ca));
                if pid == 0 {
                    libc::_exit(0)
                }
                if pid > 0 {
                    let mut st = 0;
                    libc::waitpid(pid as i32, &mut st, 0);
                }
                report(pid)
            }
            "uring-open" => {
                crate::ops_unholdable::open(a(0), args.get(1).is_some_and(|m| m == "async"))
            }
            "traced-write" => crate::ops_unholdable::traced_write(a(0)),
            // `write-until PATH STOPFILE PAUSE_US`: the audit stream's bulk writer.
            "write-until" => crate::audit_stream::write_until(a(0), a(1), a(2)),
            "echo" => {
                println!("{}", args.join(" "));
                std::process::exit(0)
            }
            "read-all" => {
                // Reads every file (args 1..) to the end, all of them `args[0]` times over.
                let passes: usize = a(0).parse().unwrap_or(1);
                for _ in 0..passes {
                    for f in &args[1..] {
                        if let Err(e) = std::fs::read(f) {
                            println!("errno={} {f}", e.raw_os_error().unwrap_or(0));
                            std::process::exit(0)
                        }
                    }
                }
                report(0)
            }
            "write-twice" => {
                // Two separate write opens by one process: a once-grant covers only the first.
                let mut out = Vec::new();
                for _ in 0..2 {
                    let fd = libc::open(c(a(0)).as_ptr(), libc::O_WRONLY | libc::O_APPEND);
                    out.push(if fd < 0 {
                        format!(
                            "errno={}",
                            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                        )
                    } else {
                        "ok".into()
                    });
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                println!("{}", out.join(" "));
                std::process::exit(0)
            }
            "mt-write" => {
                // N threads open the same file for writing at the same moment.
                let path = a(0).to_string();
                let n: usize = a(1).parse().unwrap_or(4);
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
                let hs: Vec<_> = (0..n)
                    .map(|_| {
                        let (b, p) = (barrier.clone(), path.clone());
                        std::thread::spawn(move || {
                            b.wait();
                            let fd = libc::open(c(&p).as_ptr(), libc::O_WRONLY | libc::O_APPEND);
                            if fd < 0 {
                                format!(
                                    "errno={}",
                                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                                )
                            } else {
                                libc::close(fd);
                                "ok".to_string()
                            }
                        })
                    })
                    .collect();
                let out: Vec<String> = hs
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| "panic".into()))
                    .collect();
                println!("{}", out.join(" "));
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown --op {other}");
                std::process::exit(2)
            }
        }
    }
}
