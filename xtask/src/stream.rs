//! Run a child process while streaming its output line by line (prefixed, teed to a log file),
//! with a deadline; the child is killed by its PID on timeout or Ctrl-C, never by name.
use crate::util::{self, render};
use anyhow::{Context as _, Result};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the line callback asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The child reported everything it had to; give it this long to exit on its own.
    Finish(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(ExitStatus),
    /// The deadline passed; the child was killed.
    TimedOut,
    /// Ctrl-C / SIGTERM; the child was killed.
    Interrupted,
    /// The callback said `Finish` and the child did not exit in the grace period; it was killed.
    KilledAfterFinish,
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited(st) => st.to_string(),
            Outcome::TimedOut => "timed out (killed)".into(),
            Outcome::Interrupted => "interrupted (killed)".into(),
            Outcome::KilledAfterFinish => "did not exit after finishing (killed)".into(),
        }
    }
}

pub struct Opts<'a> {
    /// Printed before every echoed line, e.g. "[6.12] ".
    pub prefix: &'a str,
    /// Every line (unprefixed) is also written here.
    pub log: Option<&'a Path>,
    pub timeout: Option<Duration>,
    /// Put the child in its own process group (so the terminal's Ctrl-C does not reach it; we
    /// kill it ourselves) and have the kernel SIGKILL it if xtask dies (PR_SET_PDEATHSIG).
    pub isolate: bool,
}

enum Msg {
    Line(String),
    Eof,
}

fn reader(mut r: impl Read + Send + 'static, tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        let mut br = BufReader::new(&mut r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match br.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = strip_escapes(&String::from_utf8_lossy(&buf));
                    let s = s.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(Msg::Line(s)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Eof);
    });
}

/// Send `sig` to a child we spawned, by its PID.
fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on the PID of our own (not yet reaped) child.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// SIGTERM, then SIGKILL after a grace period; always reaps.
fn terminate(child: &mut Child, rx: &mpsc::Receiver<Msg>, mut on: impl FnMut(String)) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    println!("xtask: stopping pid {} (SIGTERM)", child.id());
    signal(child, libc::SIGTERM);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Ok(Msg::Line(l)) = rx.recv_timeout(Duration::from_millis(50)) {
            on(l);
        }
    }
    println!("xtask: killing pid {} (SIGKILL)", child.id());
    signal(child, libc::SIGKILL);
    let _ = child.wait();
}

/// Spawn `cmd` and stream its stdout and stderr until it exits, the deadline passes or the user
/// interrupts. Returns how it ended and how long it ran.
pub fn run(
    mut cmd: Command,
    opts: &Opts<'_>,
    mut on_line: impl FnMut(&str) -> Flow,
) -> Result<(Outcome, Duration)> {
    let mut log = match opts.log {
        Some(p) => Some(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if opts.isolate {
        cmd.process_group(0);
        crate::util::die_with_parent(&mut cmd);
    }
    println!("+ {}", render(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", render(&cmd)))?;
    let (tx, rx) = mpsc::channel();
    reader(child.stdout.take().expect("piped stdout"), tx.clone());
    reader(child.stderr.take().expect("piped stderr"), tx);

    let mut emit = |l: String, log: &mut Option<File>| -> Flow {
        println!("{}{}", opts.prefix, l);
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{l}");
        }
        on_line(&l)
    };

    let mut deadline = opts.timeout.map(|t| start + t);
    let mut finishing = false;
    let mut open_streams = 2;
    let outcome = loop {
        if util::interrupted() {
            terminate(&mut child, &rx, |l| {
                emit(l, &mut log);
            });
            break Outcome::Interrupted;
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            terminate(&mut child, &rx, |l| {
                emit(l, &mut log);
            });
            break if finishing {
                Outcome::KilledAfterFinish
            } else {
                Outcome::TimedOut
            };
        }
        if open_streams == 0 {
            // Both pipes closed: the child is exiting (or closed them); wait a little for it.
            if let Some(st) = child.try_wait().context("waiting for child")? {
                break Outcome::Exited(st);
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Line(l)) => {
                if let Flow::Finish(grace) = emit(l, &mut log)
                    && !finishing
                {
                    finishing = true;
                    let d = Instant::now() + grace;
                    deadline = Some(deadline.map_or(d, |old| old.min(d)));
                }
            }
            Ok(Msg::Eof) => open_streams -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Grandchildren may hold the pipes open after the child exited.
                if let Some(st) = child.try_wait().context("waiting for child")? {
                    while let Ok(Msg::Line(l)) = rx.recv_timeout(Duration::from_millis(200)) {
                        emit(l, &mut log);
                    }
                    break Outcome::Exited(st);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => open_streams = 0,
        }
    };
    // Whatever is still buffered.
    while let Ok(Msg::Line(l)) = rx.try_recv() {
        emit(l, &mut log);
    }
    Ok((outcome, start.elapsed()))
}

/// Drop terminal escape sequences (the guest's firmware and kernel send `ESC c`, `ESC [2J`,
/// `ESC [?7l`: reset, clear screen, no wrap) so that streaming a console leaves the terminal
/// alone; other control characters except tab are dropped too.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                // CSI: parameters and intermediates up to a final byte in @..~
                Some('[') => {
                    for c in it.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST
                Some(']') => {
                    while let Some(c) = it.next() {
                        if c == '\x07' || (c == '\x1b' && it.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            super::strip_escapes("\x1bc\x1b[?7l\x1b[2JAIRLOCK x\r\n"),
            "AIRLOCK x\r\n"
        );
        assert_eq!(super::strip_escapes("a\x1b[0mb\x1b]0;title\x07c"), "abc");
    }
}
