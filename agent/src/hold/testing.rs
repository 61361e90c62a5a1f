//! Test seam shared by the hold table's and the API's tests: a [`Gate`] that records calls.
use std::sync::Mutex;

use airlock_approval::Op;

use super::{Gate, GateError, HoldKey, Holder, Release, RequestContext, Standing};

/// A request context for tests: agent `a` in cgroup `cgroup_id`, exec of `/usr/bin/apt` by
/// pid 1 under rule `r` of policy `p`.
pub(crate) fn context(cgroup_id: u64) -> RequestContext {
    RequestContext {
        host: "h".into(),
        agent: Some("a".into()),
        agent_cgroup: Some("/a".into()),
        cgroup_id,
        unit: None,
        launched_by: None,
        pid: 1,
        tgid: 1,
        uid: 0,
        euid: 0,
        comm: "c".into(),
        exe: None,
        ancestry: vec![],
        argv: vec!["apt".into()],
        argv_truncated: false,
        cwd: None,
        op: Op::Exec,
        target_path: Some("/usr/bin/apt".into()),
        target_dev: 8 << 20,
        target_ino: 42,
        rule: Some("r".into()),
        policy: Some("p".into()),
        reason: None,
        backend: "lsm".into(),
    }
}

/// Records what the table asked the backend to do; can be told to fail.
#[derive(Default)]
pub(crate) struct FakeGate {
    pub released: Mutex<Vec<(HoldKey, Vec<Holder>, Release)>>,
    pub standing: Mutex<Vec<Standing>>,
    pub fail: Mutex<bool>,
}

impl Gate for FakeGate {
    fn release(&self, key: &HoldKey, holders: &[Holder], how: Release) -> Result<(), GateError> {
        if *self.fail.lock().unwrap() {
            return Err(GateError::NotParked { token: 1 });
        }
        self.released
            .lock()
            .unwrap()
            .push((*key, holders.to_vec(), how));
        Ok(())
    }
    fn standing(&self, s: &Standing) -> Result<(), GateError> {
        if *self.fail.lock().unwrap() {
            return Err(GateError::NotParked { token: 2 });
        }
        self.standing.lock().unwrap().push(*s);
        Ok(())
    }
}
