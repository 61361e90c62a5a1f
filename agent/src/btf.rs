//! Reads kernel struct field offsets from BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF has no CO-RE relocations for kernel structs, and layouts differ between kernels
//! (`struct file` changed between 6.1 and 6.12), so the programs read fields at offsets that
//! this module takes from the running kernel and puts in a map. Only the parts of the BTF format
//! needed for struct/union member offsets are decoded.
use std::collections::HashMap;
use std::path::Path;

use airlock_common::KernelOffsets;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("BTF data is malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// size_or_type: the referenced type for modifiers and typedefs.
    ty: u32,
    /// Number of members, parameters or values (a function prototype's parameter count).
    vlen: u32,
    members: Vec<Member>,
}

/// Parsed BTF: just enough to find struct members.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// Reads BTF from a raw `.BTF` blob file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses a raw little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_bytes = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            vlen: 0,
            members: Vec::new(),
        }];
        let mut p = 0usize;
        while p < types_bytes.len() {
            let name = u32_at(types_bytes, p)?;
            let info = u32_at(types_bytes, p + 4)?;
            let ty = u32_at(types_bytes, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let off = u32_at(types_bytes, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_bytes, m)?,
                            ty: u32_at(types_bytes, m + 4)?,
                            bit_offset: if kflag { off & 0x00ff_ffff } else { off },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            p += extra;
            types.push(Type {
                name,
                kind,
                ty,
                vlen: vlen as u32,
                members,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.members.is_empty() {
                let n = btf.str_at(t.name).to_string();
                btf.structs_by_name.entry(n).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    /// Whether the kernel has a function named `name` (e.g. `bpf_lsm_inode_set_acl`: which LSM
    /// hooks exist differs by kernel version).
    pub fn has_func(&self, name: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.kind == KIND_FUNC && self.str_at(t.name) == name)
    }

    /// How many parameters function `name` takes (by its prototype), if the BTF has it.
    pub fn func_params(&self, name: &str) -> Option<u32> {
        let f = self
            .types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.str_at(t.name) == name)?;
        let proto = self.types.get(f.ty as usize)?;
        (proto.kind == KIND_FUNC_PROTO).then_some(proto.vlen)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].ty
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `member` inside composite type `id`, looking inside anonymous struct/union
    /// members (the kernel nests many fields in them).
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name != 0 {
                if self.str_at(m.name) == member {
                    return Some(m.bit_offset);
                }
                continue;
            }
            let inner = self.resolve(m.ty);
            let kind = self.types.get(inner as usize).map(|t| t.kind);
            if depth < 8
                && matches!(kind, Some(KIND_STRUCT | KIND_UNION))
                && let Some(off) = self.find_member(inner, member, depth + 1)
            {
                return Some(m.bit_offset + off);
            }
        }
        None
    }

    /// Byte offset of `strukt.member` (member may sit in anonymous unions/structs).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let bits = self
            .find_member(id, member, 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_string(),
                member: member.to_string(),
            })?;
        Ok(bits / 8)
    }

    /// Every offset the eBPF programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let m = |s: &str, f: &str| self.member_offset(s, f);
        let ctime = self.ctime_offsets()?;
        Ok(KernelOffsets {
            valid: 1,
            task_real_parent: m("task_struct", "real_parent")?,
            task_tgid: m("task_struct", "tgid")?,
            task_cred: m("task_struct", "cred")?,
            cred_euid: m("cred", "euid")?,
            binprm_file: m("linux_binprm", "file")?,
            file_f_path: m("file", "f_path")?,
            file_f_inode: m("file", "f_inode")?,
            file_f_mode: m("file", "f_mode")?,
            file_f_flags: m("file", "f_flags")?,
            path_dentry: m("path", "dentry")?,
            dentry_d_parent: m("dentry", "d_parent")?,
            dentry_d_name: m("dentry", "d_name")?,
            dentry_d_inode: m("dentry", "d_inode")?,
            qstr_name: m("qstr", "name")?,
            inode_i_ino: m("inode", "i_ino")?,
            inode_i_sb: m("inode", "i_sb")?,
            sb_s_dev: m("super_block", "s_dev")?,
            binprm_filename: m("linux_binprm", "filename")?,
            task_flags: m("task_struct", "flags")?,
            task_ptrace: m("task_struct", "ptrace")?,
            sb_s_magic: m("super_block", "s_magic")?,
            unix_sock_path: m("unix_sock", "path")?,
            task_cgroups: m("task_struct", "cgroups")?,
            css_set_dfl_cgrp: m("css_set", "dfl_cgrp")?,
            cgroup_kn: m("cgroup", "kn")?,
            kernfs_node_id: m("kernfs_node", "id")?,
            // Renamed `__parent` in 6.15.
            kernfs_node_parent: m("kernfs_node", "parent")
                .or_else(|_| m("kernfs_node", "__parent"))?,
            cred_uid: m("cred", "uid")?,
            cred_suid: m("cred", "suid")?,
            cred_gid: m("cred", "gid")?,
            cred_egid: m("cred", "egid")?,
            cred_sgid: m("cred", "sgid")?,
            vfsmount_mnt_root: m("vfsmount", "mnt_root")?,
            binprm_cred: m("linux_binprm", "cred")?,
            cred_cap_permitted: m("cred", "cap_permitted")?,
            inode_i_size: m("inode", "i_size")?,
            inode_ctime_sec: ctime.0,
            inode_ctime_nsec: ctime.1,
            task_mm: m("task_struct", "mm")?,
            mm_exe_file: m("mm_struct", "exe_file")?,
            vma_vm_file: m("vm_area_struct", "vm_file")?,
            vma_vm_flags: m("vm_area_struct", "vm_flags")?,
            task_pid: m("task_struct", "pid")?,
            inode_i_mode: m("inode", "i_mode")?,
            inode_i_rdev: m("inode", "i_rdev")?,
        })
    }

    /// Offsets of an inode's ctime seconds and nanoseconds: two fields from 6.11
    /// (`i_ctime_sec`, `i_ctime_nsec`), before that a `struct timespec64` (`tv_sec`, then
    /// `tv_nsec`) named `__i_ctime` (6.6) or `i_ctime`.
    fn ctime_offsets(&self) -> Result<(u32, u32), BtfError> {
        let m = |f: &str| self.member_offset("inode", f);
        if let (Ok(sec), Ok(nsec)) = (m("i_ctime_sec"), m("i_ctime_nsec")) {
            return Ok((sec, nsec));
        }
        let ts = m("__i_ctime").or_else(|_| m("i_ctime"))?;
        Ok((
            ts + self.member_offset("timespec64", "tv_sec")?,
            ts + self.member_offset("timespec64", "tv_nsec")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host kernel's BTF is always there on the kernels airlock supports; reading it is
    /// harmless and checks the parser against real data rather than a hand-made blob.
    #[test]
    fn host_btf_yields_plausible_offsets_for_every_field() {
        let Ok(btf) = Btf::from_sys_fs() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no /sys/kernel/btf/vmlinux in CI"
            );
            eprintln!("skip: /sys/kernel/btf/vmlinux not readable");
            return;
        };
        let o = btf.kernel_offsets().expect("all fields found");
        // Fields that have been first (or nearly) in their struct for many releases.
        assert_eq!(o.path_dentry, 8, "struct path {{ mnt; dentry }}");
        assert_eq!(o.qstr_name, 8, "struct qstr {{ hash_len; name }}");
        assert!(o.task_cred > 0 && o.task_real_parent > 0 && o.dentry_d_inode > 0);
        assert_ne!(o.file_f_inode, o.file_f_mode);
        // task_struct.flags sits right after the stack pointer and usage count; ptrace after it.
        assert!(o.task_flags > 0 && o.task_ptrace > o.task_flags);
        // Two fields (6.11 on, not neighbours) or a timespec64 (nanoseconds 8 bytes on).
        assert!(o.inode_ctime_sec > 0 && o.inode_ctime_nsec > 0);
        assert_ne!(o.inode_ctime_sec, o.inode_ctime_nsec);
        assert!(o.inode_i_size > 0 && o.mm_exe_file > 0 && o.vma_vm_file > 0);
        // 6.8 added the idmap in front of inode_setattr's two parameters.
        let n = btf.func_params("bpf_lsm_inode_setattr");
        assert!(matches!(n, Some(2 | 3)), "{n:?}");
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert!(matches!(
            Btf::parse(&[0u8; 10]),
            Err(BtfError::Malformed(_))
        ));
        let mut hdr = vec![0x9f, 0xeb, 1, 0];
        hdr.extend_from_slice(&24u32.to_le_bytes());
        hdr.extend_from_slice(&[0xff; 16]);
        assert!(matches!(Btf::parse(&hdr), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn missing_struct_is_named_in_the_error() {
        let Ok(btf) = Btf::from_sys_fs() else { return };
        let e = btf
            .member_offset("no_such_struct_airlock", "x")
            .unwrap_err();
        assert!(e.to_string().contains("no_such_struct_airlock"));
    }
}
