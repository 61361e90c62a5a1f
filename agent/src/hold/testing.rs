//! Test seam shared by the hold table's and the API's tests: a [`Gate`] that records calls.
use std::sync::Mutex;

use super::{Gate, GateError, HoldKey, Holder, Release, Standing};

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
