//! Root-only: the fanotify backend on this host's kernel. Everything gated lives in the test's
//! own temp dirs; "agent" processes are the test's forked children placed in a marker cgroup the
//! test creates and removes. Without root (or fanotify, or cgroup2) the tests print why and pass,
//! except under `CI=true`, where a missing feature fails them.
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use airlock_agent::event::{Action, Op, Verdict};
use airlock_common::action;
use airlock_policy::ExecTarget;

#[path = "fanotify_host/support.rs"]
mod support;
use support::*;
#[path = "fanotify_host/backstop.rs"]
mod backstop;
#[path = "fanotify_host/holds.rs"]
mod holds;
#[path = "fanotify_host/kids.rs"]
mod kids;

#[test]
fn gates_exec_and_writes_of_agent_processes_only() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("main") else {
        return;
    };
    let threads_before = backend_threads();
    let (gated, prot, outside) = (w.path("gated-true"), w.path("prot"), w.path("outside"));
    copy_exe("/bin/true", &gated);
    fs::create_dir_all(prot.join("sub")).unwrap();
    fs::create_dir(&outside).unwrap();
    let file = prot.join("sub/file.txt");
    fs::write(&file, "original").unwrap();
    let tool = prot.join("tool");
    copy_exe("/bin/true", &tool);
    let (gated_ino, file_ino) = (key_of(&gated).ino, key_of(&file).ino);
    w.apply(
        &Policy::default()
            .exec(&gated, action::DENY)
            .protect(&prot, action::DENY, false),
    )
    .unwrap();

    // exec
    let e = w
        .exec(true, &gated)
        .expect_err("agent exec of a gated binary must fail");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert_eq!(
        w.exec(false, &gated).unwrap(),
        0,
        "non-agent exec is allowed"
    );
    // A binary inside a protected tree is not a write: its exec open is allowed.
    assert_eq!(
        w.exec(true, &tool).unwrap(),
        0,
        "agent exec of an ungated file in a protected tree"
    );
    let evs = w.events();
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let ev = &evs[0];
    assert_eq!(
        (ev.op, ev.verdict, ev.action, ev.target_ino),
        (Op::Exec, Verdict::Denied, Action::Deny, gated_ino)
    );
    assert_eq!(
        (ev.backend, ev.cgroup_id, ev.ppid, ev.tgid),
        ("fanotify", w.cg.id, std::process::id(), ev.pid)
    );
    assert_eq!(ev.target_path.as_deref(), Some(gated.to_str().unwrap()));
    assert_eq!(
        (ev.rule_id, ev.monitor, ev.matched_by_entry),
        (0, false, false)
    );

    // write opens
    let (pid, code) = w.open(true, &file, libc::O_WRONLY);
    assert_eq!(code, EPERM, "agent write open");
    let (_, code) = w.open(true, &file, libc::O_RDONLY | libc::O_TRUNC);
    assert_eq!(code, EPERM, "agent O_TRUNC open");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "original",
        "a denied O_TRUNC must not truncate"
    );
    let c = CString::new(file.as_os_str().as_bytes()).unwrap();
    let (_, code) = w.child(true, move || {
        // SAFETY: open_how is plain data; all zeroes is valid.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = libc::O_RDWR as u64;
        // SAFETY: valid path and open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                c.as_ptr(),
                &how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 { errno() } else { 0 }
    });
    assert_eq!(
        code, EPERM,
        "agent openat2(O_RDWR): flags read from /proc/<pid>/mem"
    );
    let c = CString::new(file.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    let (_, code) = w.child(true, move || {
        if unsafe { libc::creat(c.as_ptr(), 0o644) } < 0 {
            errno()
        } else {
            0
        }
    });
    assert_eq!(code, EPERM, "agent creat() of an existing file");
    assert_eq!(
        w.open(true, &file, libc::O_RDONLY).1,
        0,
        "agent read open is allowed"
    );
    let evs = w.events();
    assert_eq!(
        evs.len(),
        4,
        "one event per denied open, none for the read: {evs:#?}"
    );
    assert!(
        evs.iter()
            .all(|e| (e.op, e.verdict, e.target_ino, e.rule_id)
                == (Op::OpenWrite, Verdict::Denied, file_ino, 1))
    );
    assert_eq!(
        (evs[0].pid, evs[0].tgid, evs[0].target_name.as_str()),
        (pid as u32, pid as u32, "file.txt")
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "original");

    // A hard link from outside the tree is still the protected inode.
    let link = outside.join("link");
    fs::hard_link(&file, &link).unwrap();
    assert_eq!(
        w.open(true, &link, libc::O_WRONLY | libc::O_APPEND).1,
        EPERM,
        "write through a hard link"
    );
    let evs = w.events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].target_path.as_deref(), Some(link.to_str().unwrap()));

    // Non-agents write freely.
    assert_eq!(
        w.open(false, &file, libc::O_WRONLY | libc::O_APPEND).1,
        0,
        "non-agent write"
    );
    assert!(w.events().is_empty());
    let c = w.backend.as_ref().unwrap().counters();
    assert!(
        c.fast_allowed >= 2 && c.denied == 6 && c.intent_unknown == 0 && c.errors == 0,
        "{c:?}"
    );
    assert_eq!(c.lost, 0);

    // After drop: marks gone, threads gone. A previous test's backend may still be finishing
    // its own threads (a listener waits for its settler thread), so the count is awaited and
    // compared as "at most": this backend's two threads must be among those that ended.
    w.backend = None;
    assert!(
        eventually(|| backend_threads() <= threads_before.saturating_sub(2)),
        "listener and watcher ended: {} backend threads, {} before",
        backend_threads(),
        threads_before
    );
    assert_eq!(
        w.exec(true, &gated).unwrap(),
        0,
        "no gate once the backend is dropped"
    );
    assert_eq!(w.open(true, &file, libc::O_WRONLY).1, 0);
}

#[test]
fn o_creat_leaves_an_empty_file_and_o_trunc_leaves_content() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("creat") else {
        return;
    };
    let prot = w.path("prot");
    fs::create_dir(&prot).unwrap();
    let existing = prot.join("existing");
    fs::write(&existing, "keep me").unwrap();
    w.apply(&Policy::default().protect(&prot, action::DENY, false))
        .unwrap();

    let new = prot.join("new");
    let (_, code) = w.open(true, &new, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL);
    assert_eq!(code, EPERM, "agent O_CREAT of a new file is denied");
    // fanotify's open permission fires after the inode is created: the file stays, empty.
    let meta = fs::metadata(&new).expect("the denied O_CREAT left the new file behind");
    assert_eq!(meta.len(), 0);
    eprintln!(
        "observed: denied O_CREAT|O_EXCL leaves an empty file behind (len {})",
        meta.len()
    );

    for fl in [
        libc::O_WRONLY | libc::O_TRUNC,
        libc::O_RDWR | libc::O_TRUNC | libc::O_CREAT,
        libc::O_RDONLY | libc::O_TRUNC,
    ] {
        assert_eq!(w.open(true, &existing, fl).1, EPERM, "flags {fl:#o}");
        assert_eq!(
            fs::read_to_string(&existing).unwrap(),
            "keep me",
            "O_TRUNC checked before truncation"
        );
    }
    let evs = w.events();
    assert_eq!(evs.len(), 4, "{evs:#?}");
    assert!(
        evs.iter()
            .all(|e| e.verdict == Verdict::Denied && e.op == Op::OpenWrite)
    );

    // A FIFO in a protected directory. Kernels before 6.14 send permission events for it and
    // open it for us too (non-blocking, or that open would wait for a writer that is waiting
    // for us); newer ones send no permission events for special files, so it is not gated.
    // Either way nothing hangs.
    let fifo = CString::new(prot.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert_eq!(
        w.open(true, &prot.join("fifo"), libc::O_RDONLY | libc::O_NONBLOCK)
            .1,
        0,
        "agent read-open of a FIFO"
    );
    // A writer needs a reader (else ENXIO before any permission check): hold one open here.
    let _reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(prot.join("fifo"))
        .unwrap();
    let code = w
        .open(true, &prot.join("fifo"), libc::O_WRONLY | libc::O_NONBLOCK)
        .1;
    assert!(
        code == EPERM || code == 0,
        "agent write-open of a FIFO: errno {code}"
    );
    eprintln!(
        "observed: agent write-open of a FIFO in a protected dir -> {}",
        if code == 0 {
            "allowed (no permission event for special files)"
        } else {
            "EPERM"
        }
    );
    assert_eq!(w.events().len(), usize::from(code == EPERM));
}

#[test]
fn a_non_main_thread_is_judged_by_its_own_syscall() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("thread") else {
        return;
    };
    let prot = w.path("prot");
    fs::create_dir(&prot).unwrap();
    let file = prot.join("f");
    fs::write(&file, "x").unwrap();
    w.apply(&Policy::default().protect(&prot, action::DENY, false))
        .unwrap();
    let c = CString::new(file.as_os_str().as_bytes()).unwrap();
    // glibc makes malloc and thread creation usable in a child forked from a threaded parent.
    let (pid, code) = w.child(true, move || {
        let t = std::thread::spawn(move || {
            // SAFETY: valid C string.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY) };
            if fd < 0 { errno() } else { 0 }
        });
        t.join().unwrap_or(126)
    });
    assert_eq!(code, EPERM);
    let evs = w.events();
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].tgid, pid as u32);
    assert_ne!(evs[0].pid, evs[0].tgid, "the event names the thread");
    // Had the main thread's syscall (a futex wait in join) been read, the intent would be unknown.
    assert_eq!(w.backend.as_ref().unwrap().counters().intent_unknown, 0);
}

#[test]
fn rule_actions_monitor_mode_and_nested_exceptions() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("rules") else {
        return;
    };
    let prot = w.path("prot");
    for d in ["allowed", "audited", "approve"] {
        fs::create_dir_all(prot.join(d)).unwrap();
    }
    let mon = w.path("monitored");
    fs::create_dir(&mon).unwrap();
    for f in [
        prot.join("f"),
        prot.join("allowed/f"),
        prot.join("audited/f"),
        prot.join("approve/f"),
        mon.join("f"),
    ] {
        fs::write(f, "x").unwrap();
    }
    w.apply(
        &Policy::default()
            .protect(&prot, action::DENY, false) // rule 0
            .protect(&prot.join("allowed"), action::ALLOW, false) // rule 1
            .protect(&prot.join("audited"), action::AUDIT, false) // rule 2
            .protect(&prot.join("approve"), action::APPROVE, false) // rule 3
            .protect(&mon, action::DENY, true), // rule 4
    )
    .unwrap();
    let wr = libc::O_WRONLY | libc::O_APPEND;
    assert_eq!(
        w.open(true, &prot.join("allowed/f"), wr).1,
        0,
        "nested allow carves an exception"
    );
    assert!(w.events().is_empty(), "allow rules send no event");
    assert_eq!(w.open(true, &prot.join("audited/f"), wr).1, 0);
    // approve parks the open until released (see holds.rs); released with deny here.
    let mut held = kids::Kid::start(
        &w,
        true,
        kids::Act::Open(&prot.join("approve/f"), wr, b""),
        false,
    );
    let _audited = w.next_event();
    let (ev, token) = w.next_hold();
    w.release(&ev, token, airlock_agent::hold::Release::Deny);
    assert_eq!(held.code(), EPERM, "approve released with deny");
    assert_eq!(
        w.open(true, &mon.join("f"), wr).1,
        0,
        "monitor mode never denies"
    );
    // A file created later in a nested directory falls under the nested rule.
    assert_eq!(
        w.open(true, &prot.join("allowed/g"), wr | libc::O_CREAT).1,
        0
    );
    assert_eq!(w.open(true, &prot.join("g"), wr | libc::O_CREAT).1, EPERM);
    let got: Vec<_> = [_audited, ev]
        .into_iter()
        .chain(w.events())
        .map(|e| (e.rule_id, e.action, e.verdict, e.monitor))
        .collect();
    assert_eq!(
        got,
        [
            (2, Action::Audit, Verdict::Allowed, false),
            (3, Action::Approve, Verdict::Held, false),
            (4, Action::Deny, Verdict::Allowed, true),
            (0, Action::Deny, Verdict::Denied, false),
        ]
    );
}

#[test]
fn new_directories_and_replaced_binaries_are_followed() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("follow") else {
        return;
    };
    let (bin, prot) = (w.path("bin"), w.path("prot"));
    fs::create_dir(&bin).unwrap();
    fs::create_dir(&prot).unwrap();
    let gated = bin.join("tool");
    copy_exe("/bin/true", &gated);
    let missing = bin.join("later");
    let mut p = Policy::default()
        .exec(&gated, action::DENY)
        .protect(&prot, action::DENY, false);
    // A binary not installed yet is gated by its path.
    let rule = p.rule(action::DENY, false);
    p.0.exec.push(ExecTarget {
        rule,
        path: missing.clone(),
        canonical: missing.clone(),
        inode: None,
        entry: None,
        content: None,
    });
    w.apply(&p).unwrap();

    // Package-upgrade style replacement: a new inode renamed over the gated path.
    let tmp = bin.join(".tool.new");
    copy_exe("/bin/true", &tmp);
    fs::rename(&tmp, &gated).unwrap();
    let new_ino = key_of(&gated).ino;
    assert!(
        eventually(|| w.exec(true, &gated).is_err()),
        "the replaced binary is gated again"
    );
    copy_exe("/bin/true", &missing);
    assert!(
        eventually(|| w.exec(true, &missing).is_err()),
        "a gated binary installed later is gated"
    );
    assert_eq!(w.exec(false, &missing).unwrap(), 0);
    let evs = w.events();
    assert!(
        evs.iter()
            .any(|e| e.op == Op::Exec && e.target_ino == new_ino && e.rule_id == 0),
        "{evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.op == Op::Exec && e.target_ino == key_of(&missing).ino && e.rule_id == 2)
    );

    // Directories created later (even nested, even before the watcher sees the parent).
    fs::create_dir_all(prot.join("a/b/c")).unwrap();
    let deep = prot.join("a/b/c/f");
    fs::write(&deep, "x").unwrap();
    assert!(
        eventually(|| w.open(true, &deep, libc::O_WRONLY).1 == EPERM),
        "new nested directories are marked"
    );
    // A directory moved in from outside the tree.
    let ext = w.path("ext");
    fs::create_dir_all(ext.join("d")).unwrap();
    fs::write(ext.join("d/f"), "x").unwrap();
    fs::rename(&ext, prot.join("moved")).unwrap();
    assert!(eventually(|| w
        .open(true, &prot.join("moved/d/f"), libc::O_WRONLY)
        .1
        == EPERM));
    assert_eq!(fs::read_to_string(&deep).unwrap(), "x");
}

#[test]
fn apply_replaces_the_mark_set_and_keeps_the_old_one_on_error() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut w) = World::new("apply") else {
        return;
    };
    let (one, two, three) = (w.path("one"), w.path("two"), w.path("three"));
    for d in [&one, &two, &three] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("f"), "x").unwrap();
    }
    let wr = libc::O_WRONLY;
    w.apply(&Policy::default().protect(&one, action::DENY, false))
        .unwrap();
    assert_eq!(w.open(true, &one.join("f"), wr).1, EPERM);
    assert_eq!(w.open(true, &two.join("f"), wr).1, 0);
    let marks_one = w.backend.as_ref().unwrap().counters().marks;

    w.apply(&Policy::default().protect(&two, action::DENY, false))
        .unwrap();
    assert_eq!(
        w.open(true, &one.join("f"), wr).1,
        0,
        "marks of the old policy are removed"
    );
    assert_eq!(w.open(true, &two.join("f"), wr).1, EPERM);
    assert_eq!(
        w.backend.as_ref().unwrap().counters().marks,
        marks_one,
        "one dir and one file either way"
    );

    // procfs refuses permission marks: the apply fails (after `three` was marked: protected
    // trees are marked before gated binaries) and the previous policy stays.
    let bad = Policy::default()
        .protect(&three, action::DENY, false)
        .exec(Path::new("/proc/version"), action::DENY);
    let err = w.apply(&bad).expect_err("marking procfs must fail");
    eprintln!("expected apply error: {err}");
    assert_eq!(
        w.open(true, &two.join("f"), wr).1,
        EPERM,
        "the old policy is still in force"
    );
    assert_eq!(
        w.open(true, &three.join("f"), wr).1,
        0,
        "the failed policy's marks were rolled back"
    );
    assert_eq!(w.open(false, &two.join("f"), wr).1, 0);
}
