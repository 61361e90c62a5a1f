//! Content identity of gated binaries: what the compiler hashes and how the digest map merges
//! rules whose binaries are byte-identical.
use std::path::Path;

use airlock_common::{DigestKey, action};

use super::{FakeResolver, header};
use crate::resolve::Content;
use crate::{HostResolver, Resolver, compile, effective_exec_digest_map, parse_str};

fn content(size: u64, b: u8) -> Content {
    Content {
        size,
        sha256: [b; 32],
    }
}

fn host() -> FakeResolver {
    let mut r = FakeResolver::new()
        .dir("/", 2)
        .dir("/usr", 3)
        .dir("/usr/bin", 10)
        .dir("/run", 30)
        .file("/usr/bin/apt", 100)
        .file("/usr/bin/apt-copy", 101)
        .file("/usr/bin/curl", 102)
        .file("/run/docker.sock", 31);
    // apt-copy is byte-identical to apt.
    r.contents.insert("/usr/bin/apt".into(), content(4096, 1));
    r.contents
        .insert("/usr/bin/apt-copy".into(), content(4096, 1));
    r.contents.insert("/usr/bin/curl".into(), content(777, 2));
    r
}

#[test]
fn byte_identical_binaries_of_two_rules_share_one_digest_and_the_stricter_rule() {
    let src = format!(
        "{}rules:\n  - name: watch\n    action: audit\n    exec: [/usr/bin/apt-copy]\n\
         \x20 - name: pm\n    action: deny\n    exec: [/usr/bin/apt, /usr/bin/curl, /usr/bin/missing]\n\
         \x20 - name: docker\n    action: approve\n    connect: [/run/docker.sock]\n",
        header("p", "enforce")
    );
    let policies = parse_str(Path::new("t.yaml"), &src).unwrap();
    let c = compile(&policies, &host()).unwrap();
    // Sockets and missing binaries have no content.
    assert!(c.connect.iter().all(|t| t.content.is_none()));
    let missing = c.exec.iter().find(|t| t.path.ends_with("missing")).unwrap();
    assert!(missing.content.is_none());
    let (digests, sizes) = effective_exec_digest_map(&c);
    assert_eq!(digests.len(), 2, "{digests:?}");
    let apt = digests[&DigestKey {
        sha256: [1; 32],
        slot: 0,
        _pad: 0,
    }];
    assert_eq!(apt.action, action::DENY, "deny beats audit on one content");
    // One size per distinct content, however many rules name it.
    assert_eq!(sizes.get(&4096), Some(&1));
    assert_eq!(sizes.get(&777), Some(&1));
    assert_eq!(sizes.len(), 2);
}

#[test]
fn an_unreadable_binary_is_gated_by_inode_with_a_note() {
    let mut r = host();
    r.contents.clear();
    r = r
        .file("/usr/bin/secret", 103)
        .denied_content("/usr/bin/secret");
    let src = format!(
        "{}rules:\n  - name: pm\n    action: deny\n    exec: [/usr/bin/secret]\n",
        header("p", "enforce")
    );
    let policies = parse_str(Path::new("t.yaml"), &src).unwrap();
    let c = compile(&policies, &r).unwrap();
    assert!(c.exec[0].inode.is_some() && c.exec[0].content.is_none());
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("copies of it are not recognised")),
        "{:?}",
        c.notes
    );
}

#[test]
fn host_resolver_hashes_the_whole_file_with_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    // Longer than one read buffer, so the streaming is exercised.
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &bytes).unwrap();
    let c = HostResolver.content(&p).unwrap();
    assert_eq!(c.size, bytes.len() as u64);
    let want = ring::digest::digest(&ring::digest::SHA256, &bytes);
    assert_eq!(&c.sha256[..], want.as_ref());
    // The SHA-256 test vector of "abc".
    std::fs::write(&p, b"abc").unwrap();
    let c = HostResolver.content(&p).unwrap();
    assert_eq!(
        c.sha256[..4],
        [0xba, 0x78, 0x16, 0xbf],
        "SHA-256(\"abc\") starts ba7816bf"
    );
    assert!(
        HostResolver.content(dir.path()).is_err(),
        "a directory has no content"
    );
}

#[test]
fn wildcard_connect_paths_compile_to_the_directory_above_and_a_hash_of_the_rest() {
    let r = host().dir("/run/user", 40);
    let src = format!(
        "{}rules:\n  - name: user-services\n    action: approve\n    connect: [/run/user/*/bus, /run/user/*/systemd/private, /nowhere/*/x]\n",
        header("p", "enforce")
    );
    let policies = parse_str(Path::new("t.yaml"), &src).unwrap();
    let c = compile(&policies, &r).unwrap();
    assert_eq!(c.connect_wild.len(), 2, "{:?}", c.connect_wild);
    let fold = |names: &[&str]| {
        names.iter().fold(airlock_common::FNV_OFFSET, |h, n| {
            airlock_common::wild_fold(h, n.as_bytes())
        })
    };
    let bus = &c.connect_wild[0].key;
    assert_eq!((bus.dir_ino, bus.depth), (40, 1));
    assert_eq!(bus.hash, fold(&["bus"]));
    let private = &c.connect_wild[1].key;
    assert_eq!(private.depth, 2);
    // From the socket upwards.
    assert_eq!(private.hash, fold(&["private", "systemd"]));
    assert_ne!(private.hash, fold(&["systemd", "private"]));
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("/nowhere") && n.contains("not gated")),
        "{:?}",
        c.notes
    );
}

#[test]
fn bad_wildcard_connect_paths_say_what_is_wrong() {
    use crate::values::wildcard_socket;
    assert!(
        wildcard_socket("/run/*/x/*/bus")
            .unwrap_err()
            .contains("one wildcard")
    );
    assert!(
        wildcard_socket("/tmp/tmux-*/default")
            .unwrap_err()
            .contains("exactly *")
    );
    assert!(
        wildcard_socket("/run/user/1000/*")
            .unwrap_err()
            .contains("own name")
    );
    assert!(
        wildcard_socket("/run/*/a/b/c/d")
            .unwrap_err()
            .contains("at most 3")
    );
    // And through the policy loader, with the place of the path.
    let src = format!(
        "{}rules:\n  - name: s\n    action: deny\n    connect: [/tmp/tmux-*/default]\n",
        header("p", "enforce")
    );
    let e = parse_str(Path::new("t.yaml"), &src)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.yaml:") && e.contains("exactly *"), "{e}");
}
