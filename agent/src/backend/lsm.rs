//! BPF LSM backend. (Owned by the kernel work.)

/// Errors of the LSM backend.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("BPF LSM is not usable here: {0}")]
    Unavailable(String),
}
