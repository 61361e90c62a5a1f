//! The OCSF view of a record, where one exists: enough for a SIEM to file an airlock record
//! under the standard class without reading airlock's own fields.
//!
//! | record | `body.op` | OCSF class (`class_uid`) | `activity_id` |
//! |---|---|---|---|
//! | `event.*`, `decision`, `outcome` | `exec` | Process Activity (1007), category System Activity (1) | 1 Launch |
//! | same | `setuid` | Process Activity (1007) | 5 Set User ID |
//! | same | `open_write`, `truncate` | File System Activity (1001), category System Activity (1) | 3 Update |
//! | same | `create`, `mkdir`, `symlink`, `link` | File System Activity (1001) | 1 Create |
//! | same | `unlink`, `rmdir` | File System Activity (1001) | 4 Delete |
//! | same | `rename` | File System Activity (1001) | 5 Rename |
//! | same | `xattr` | File System Activity (1001) | 6 Set Attributes |
//! | same | `chmod`, `chown` | File System Activity (1001) | 7 Set Security |
//! | same | `connect` | Network Activity (4001), category Network Activity (4) | 1 Open |
//!
//! `disposition_id`: `event.allowed` → 1 Allowed, `event.denied` → 2 Blocked, `event.held` →
//! 14 Delayed (the syscall waits for a person); `decision` and `outcome` by `body.disposition`
//! (`"approved"` → 8 Approved, `"denied"` → 2 Blocked). `type_uid` is
//! `class_uid * 100 + activity_id`, as OCSF defines it.
//!
//! Every number above was checked against the OCSF schema repository (ocsf/ocsf-schema,
//! commit a5cfc68e): `dictionary.json`'s `disposition_id` enum (1 Allowed, 2 Blocked,
//! 8 Approved, 14 Delayed), `categories.json` (System Activity 1, Network Activity 4) and
//! the `activity_id` enums of `events/system/process_activity.json`,
//! `events/system/file_activity.json` and `events/network/network_activity.json`.
//!
//! Other kinds (policy, daemon, link, API, spool) and other operations (self-protection,
//! mounts, capabilities, …) have no natural OCSF class and map to nothing; they stay in
//! airlock's own form.

use serde::Serialize;

use crate::record::{Kind, Record};

/// OCSF `disposition_id` values airlock uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Disposition {
    /// 1: let through.
    Allowed,
    /// 2: refused.
    Blocked,
    /// 8: let through by a person's approval.
    Approved,
    /// 14: held, waiting for a decision.
    Delayed,
}

impl Disposition {
    /// The OCSF `disposition_id`.
    pub fn id(self) -> u32 {
        match self {
            Disposition::Allowed => 1,
            Disposition::Blocked => 2,
            Disposition::Approved => 8,
            Disposition::Delayed => 14,
        }
    }
}

/// A record's OCSF classification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ocsf {
    pub category_uid: u32,
    pub class_uid: u32,
    pub activity_id: u32,
    pub type_uid: u32,
    pub disposition_id: u32,
}

/// The OCSF class, category and activity of an airlock operation name (snake_case, as in
/// `airlock_approval::Op`), if it has a natural one.
pub fn class_of(op: &str) -> Option<(u32, u32, u32)> {
    const PROCESS: (u32, u32) = (1, 1007);
    const FILE: (u32, u32) = (1, 1001);
    const NETWORK: (u32, u32) = (4, 4001);
    let ((category, class), activity) = match op {
        "exec" => (PROCESS, 1),
        "setuid" => (PROCESS, 5),
        "open_write" | "truncate" => (FILE, 3),
        "create" | "mkdir" | "symlink" | "link" => (FILE, 1),
        "unlink" | "rmdir" => (FILE, 4),
        "rename" => (FILE, 5),
        "xattr" => (FILE, 6),
        "chmod" | "chown" => (FILE, 7),
        "connect" => (NETWORK, 1),
        _ => return None,
    };
    Some((category, class, activity))
}

/// The OCSF classification of a record of `kind` about operation `op`, with the
/// disposition of a decision or outcome given by `decided` (`"approved"` or `"denied"`).
pub fn map(kind: &Kind, op: &str, decided: Option<&str>) -> Option<Ocsf> {
    let disposition = match kind {
        Kind::EventAllowed => Disposition::Allowed,
        Kind::EventDenied => Disposition::Blocked,
        Kind::EventHeld => Disposition::Delayed,
        Kind::Decision | Kind::Outcome => match decided? {
            "approved" => Disposition::Approved,
            "denied" => Disposition::Blocked,
            _ => return None,
        },
        _ => return None,
    };
    let (category_uid, class_uid, activity_id) = class_of(op)?;
    Some(Ocsf {
        category_uid,
        class_uid,
        activity_id,
        type_uid: class_uid * 100 + activity_id,
        disposition_id: disposition.id(),
    })
}

/// [`map`] with `op` and the disposition read from the record's body (`body.op`,
/// `body.disposition`).
pub fn map_record(r: &Record) -> Option<Ocsf> {
    let op = r.body.get("op")?.as_str()?;
    // airlockd writes the outcome as `decision` (`approved`, `denied`, `timed_out`, …).
    let decided = r
        .body
        .get("disposition")
        .or_else(|| r.body.get("decision"))
        .and_then(|d| d.as_str());
    map(&r.kind, op, decided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Chain, Draft};
    use serde_json::json;

    #[test]
    fn exec_and_writes_map_with_their_disposition() {
        let held_exec = map(&Kind::EventHeld, "exec", None).unwrap();
        assert_eq!(
            (
                held_exec.class_uid,
                held_exec.activity_id,
                held_exec.type_uid
            ),
            (1007, 1, 100701)
        );
        assert_eq!(held_exec.disposition_id, 14);
        let denied_write = map(&Kind::Decision, "open_write", Some("denied")).unwrap();
        assert_eq!(
            (denied_write.class_uid, denied_write.disposition_id),
            (1001, 2)
        );
        let approved = map(&Kind::Outcome, "exec", Some("approved")).unwrap();
        assert_eq!(approved.disposition_id, 8);
        assert_eq!(map(&Kind::LinkUp, "exec", None), None);
        assert_eq!(map(&Kind::EventDenied, "ptrace", None), None);
        assert_eq!(map(&Kind::Decision, "exec", None), None);
    }

    #[test]
    fn reads_op_and_disposition_from_the_body() {
        let mut c = Chain::new("h").unwrap();
        let r = c
            .seal(Draft::new(
                1,
                Kind::Decision,
                json!({"op": "unlink", "disposition": "approved"}),
            ))
            .unwrap();
        let o = map_record(&r).unwrap();
        assert_eq!((o.class_uid, o.activity_id, o.disposition_id), (1001, 4, 8));
    }
}
