//! Request ids, unique across a fleet.
//!
//! A host opens requests without asking anyone (it may be cut off from the server), and the
//! server keeps every host's requests in one table, so an id must be unique without
//! coordination: 48 bits of milliseconds since the Unix epoch followed by 80 random bits (the
//! ULID layout), written as 26 characters of lowercase Crockford base32. Ids sort by creation
//! time, and a collision needs two hosts to draw the same 80 random bits in the same
//! millisecond.
use ring::rand::{SecureRandom, SystemRandom};

/// Crockford's base32 alphabet (no i, l, o, u), lowercase.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Length of a new id.
pub const ID_LEN: usize = 26;

/// Longest id accepted from the wire (older daemons used 8 hex digits; the bound keeps error
/// messages short).
pub const MAX_ID_LEN: usize = 64;

/// A new request id for a request opened at `now_unix_ms`.
pub fn new_request_id(now_unix_ms: u64) -> String {
    let mut rnd = [0u8; 10];
    // The system RNG failing is not something a daemon can work around; fall back to a
    // time-and-pid mix so that a request still opens (and say so in the id's randomness only).
    if SystemRandom::new().fill(&mut rnd).is_err() {
        let mix = (now_unix_ms ^ ((std::process::id() as u64) << 32)).to_le_bytes();
        rnd[..8].copy_from_slice(&mix);
    }
    let mut v: u128 = (now_unix_ms as u128 & ((1 << 48) - 1)) << 80;
    for (i, b) in rnd.iter().enumerate() {
        v |= (*b as u128) << (8 * (9 - i));
    }
    let mut out = [0u8; ID_LEN];
    for (i, c) in out.iter_mut().enumerate() {
        let shift = 5 * (ID_LEN - 1 - i);
        *c = ALPHABET[((v >> shift) & 31) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why an id from the wire or the command line is not a request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error(
        "{0:?} is not a request id (lowercase letters and digits, as `airlock pending` lists them)"
    )]
    BadChars(String),
}

/// Checks a request id: 1 to [`MAX_ID_LEN`] lowercase ASCII letters or digits.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !id
        .bytes()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    {
        return Err(IdError::BadChars(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_26_valid_chars_sorted_by_time_and_distinct() {
        let a = new_request_id(1_700_000_000_000);
        let b = new_request_id(1_700_000_000_001);
        assert_eq!(a.len(), ID_LEN);
        assert!(check_id(&a).is_ok());
        assert!(a < b, "{a} < {b}");
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id(5)).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn bad_ids_are_named() {
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id(&"a".repeat(65)), Err(IdError::TooLong));
        assert!(matches!(check_id("AB-1"), Err(IdError::BadChars(_))));
        assert!(check_id("0a1b2c3d").is_ok());
    }
}
