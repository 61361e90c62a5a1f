//! Passing a descriptor between processes (SCM_RIGHTS), for the cases that check a write
//! descriptor opened outside an agent and handed to it is gated like the agent's own open.
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Room for one descriptor's control message.
const CMSG_ROOM: usize = 64;

/// Listens on `sock`, opens `file` for writing and sends the descriptor to the first caller.
pub fn send_fd(sock: &str, file: &str) -> ! {
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).unwrap_or_else(|e| fail(&format!("bind {sock}: {e}")));
    let target = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap_or_else(|e| fail(&format!("open {file}: {e}")));
    let (stream, _) = listener
        .accept()
        .unwrap_or_else(|e| fail(&format!("accept: {e}")));
    let fd = target.as_raw_fd();
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut ctl = [0u8; CMSG_ROOM];
    // SAFETY: msghdr and the control buffer live for the call; CMSG_* walk inside `ctl`.
    let rc = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::copy_nonoverlapping(&fd, libc::CMSG_DATA(c).cast::<i32>(), 1);
        libc::sendmsg(stream.as_raw_fd(), &msg, 0)
    };
    println!("{}", if rc == 1 { "sent" } else { "send failed" });
    std::process::exit(0)
}

/// Takes a descriptor from `sock` and writes `data` to it.
pub fn recv_fd_write(sock: &str, data: &str) -> ! {
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => fail(&format!("connect {sock}: {e}")),
        }
    };
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut ctl = [0u8; CMSG_ROOM];
    // SAFETY: as in send_fd; a descriptor is read only from a complete SCM_RIGHTS message.
    let fd = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = ctl.len();
        if libc::recvmsg(stream.as_raw_fd(), &mut msg, 0) < 0 {
            fail("recvmsg failed");
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null()
            || (*c).cmsg_type != libc::SCM_RIGHTS
            || (*c).cmsg_len < libc::CMSG_LEN(4) as usize
        {
            None
        } else {
            let mut fd = -1i32;
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c).cast::<i32>(), &mut fd, 1);
            Some(fd)
        }
    };
    let Some(fd) = fd else {
        println!("no-fd");
        std::process::exit(0)
    };
    // SAFETY: a descriptor this process now owns.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        println!(
            "errno={}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        );
    } else {
        println!("ok");
    }
    let _ = std::io::stdout().flush();
    std::process::exit(0)
}

fn fail(why: &str) -> ! {
    println!("error: {why}");
    std::process::exit(0)
}
