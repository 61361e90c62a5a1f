//! Signatures on channel traffic, both ways:
//!
//! - **Slack → server** (HTTP interactivity): Slack's "v0" request signing. The signature is
//!   `v0=` + lowercase hex of HMAC-SHA256(signing secret, `v0:{timestamp}:{raw body}`), sent in
//!   `X-Slack-Signature` with the timestamp in `X-Slack-Request-Timestamp`; a request more
//!   than [`MAX_SKEW_S`] away from the server's clock is refused (a captured request cannot be
//!   replayed after that window; within it, what it carries must be idempotent, as votes are).
//! - **server ↔ webhook receivers**: airlock's own scheme for the generic webhook, in both
//!   directions (the server's POSTs, and decisions a receiver sends back). Header
//!   `X-Airlock-Signature: t={unix seconds},v1={hex}`, where hex is HMAC-SHA256(shared secret,
//!   `{t}.{raw body}`); the same [`MAX_SKEW_S`] window. A receiver verifies it with any HMAC
//!   library: split the header at `,`, recompute over the exact bytes received, compare in
//!   constant time, check `t`.
//!
//! Signatures are always over the raw bytes received, never over a re-encoded form, and are
//! compared in constant time (`ring::hmac::verify`).
use ring::hmac;

use crate::auth::hex;

/// Largest difference, in seconds, between a signed request's timestamp and the server's
/// clock (Slack's own recommendation; used for webhooks too).
pub const MAX_SKEW_S: u64 = 300;

/// The header carrying airlock's webhook signature.
pub const WEBHOOK_HEADER: &str = "X-Airlock-Signature";

/// Why a signature was refused. The messages name what was wrong, never the expected value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// A signature or timestamp header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The timestamp is not a number of seconds.
    #[error("timestamp {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    /// The timestamp is too far from the server's clock.
    #[error("timestamp {ts} is {skew_s} s away from the server's clock (at most {MAX_SKEW_S} s)")]
    Stale { ts: u64, skew_s: u64 },
    /// The signature header is not of the expected form.
    #[error("signature header is malformed (expected {0})")]
    Malformed(&'static str),
    /// No secret is configured to check against (an empty key would let anyone sign).
    #[error("no signing secret is configured")]
    NoSecret,
    /// Well-formed, fresh, and wrong.
    #[error("signature does not match the body")]
    Mismatch,
}

/// Bytes of lowercase or uppercase hex; `None` if `s` is not hex of whole bytes.
fn unhex(s: &str) -> Option<Vec<u8>> {
    // from_str_radix would take a leading '+': one signature, one spelling.
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn fresh(ts: &str, now_unix_s: u64) -> Result<u64, SignatureError> {
    let bad = || SignatureError::BadTimestamp(ts.chars().take(32).collect());
    // Digits only (u64's parser would take a leading '+').
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let t: u64 = ts.parse().map_err(|_| bad())?;
    let skew_s = t.abs_diff(now_unix_s);
    if skew_s > MAX_SKEW_S {
        return Err(SignatureError::Stale { ts: t, skew_s });
    }
    Ok(t)
}

fn signed(secret: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

fn verify(secret: &[u8], parts: &[&[u8]], sig: &[u8]) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let msg: Vec<u8> = parts.concat();
    hmac::verify(&key, &msg, sig).map_err(|_| SignatureError::Mismatch)
}

/// Checks a request from Slack: `timestamp` and `signature` are the values of
/// `X-Slack-Request-Timestamp` and `X-Slack-Signature` (`None` when absent), `body` the raw
/// body as received.
pub fn verify_slack(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix_s: u64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::Missing("X-Slack-Request-Timestamp"))?;
    let sig = signature.ok_or(SignatureError::Missing("X-Slack-Signature"))?;
    fresh(ts, now_unix_s)?;
    let raw = sig
        .strip_prefix("v0=")
        .and_then(unhex)
        .ok_or(SignatureError::Malformed("v0=<hex>"))?;
    verify(secret, &[b"v0:", ts.as_bytes(), b":", body], &raw)
}

/// The `X-Airlock-Signature` value for `body` sent at `now_unix_s`.
pub fn sign_webhook(secret: &[u8], body: &[u8], now_unix_s: u64) -> String {
    let t = now_unix_s.to_string();
    let tag = signed(secret, &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex(tag.as_ref()))
}

/// Checks an `X-Airlock-Signature` value (`None` when absent) against the raw `body`.
pub fn verify_webhook(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_unix_s: u64,
) -> Result<(), SignatureError> {
    const FORM: &str = "t=<unix seconds>,v1=<hex>";
    let h = header.ok_or(SignatureError::Missing(WEBHOOK_HEADER))?;
    let (t, v1) = h
        .split_once(',')
        .and_then(|(t, v)| Some((t.trim().strip_prefix("t=")?, v.trim().strip_prefix("v1=")?)))
        .ok_or(SignatureError::Malformed(FORM))?;
    fresh(t, now_unix_s)?;
    let raw = unhex(v1).ok_or(SignatureError::Malformed(FORM))?;
    verify(secret, &[t.as_bytes(), b".", body], &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example ("Verifying requests from Slack").
    const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    /// The example's own time: the pinned clock.
    const NOW: u64 = 1_531_420_618;

    fn slack(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &str,
        now: u64,
    ) -> Result<(), SignatureError> {
        verify_slack(SLACK_SECRET, ts, sig, body.as_bytes(), now)
    }

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(SLACK_BODY.len(), 362);
        assert_eq!(
            slack(Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, NOW),
            Ok(())
        );
        // Within the window on either side.
        assert_eq!(
            slack(Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, NOW + 300),
            Ok(())
        );
        assert_eq!(
            slack(Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, NOW - 300),
            Ok(())
        );
    }

    #[test]
    fn slack_refuses_a_replay_a_changed_body_and_bad_headers() {
        assert_eq!(
            slack(Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, NOW + 301),
            Err(SignatureError::Stale {
                ts: NOW,
                skew_s: 301
            })
        );
        let changed = SLACK_BODY.replace("roadrunner", "roadrunnex");
        assert_eq!(
            slack(Some(SLACK_TS), Some(SLACK_SIG), &changed, NOW),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is part of what is signed: a fresh timestamp on an old signature fails.
        assert_eq!(
            slack(Some("1531420619"), Some(SLACK_SIG), SLACK_BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            slack(None, Some(SLACK_SIG), SLACK_BODY, NOW),
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            slack(Some(SLACK_TS), None, SLACK_BODY, NOW),
            Err(SignatureError::Missing("X-Slack-Signature"))
        );
        assert_eq!(
            slack(Some("soon"), Some(SLACK_SIG), SLACK_BODY, NOW),
            Err(SignatureError::BadTimestamp("soon".into()))
        );
        assert_eq!(
            slack(Some("+1531420618"), Some(SLACK_SIG), SLACK_BODY, NOW),
            Err(SignatureError::BadTimestamp("+1531420618".into()))
        );
        assert_eq!(
            verify_slack(
                b"",
                Some(SLACK_TS),
                Some(SLACK_SIG),
                SLACK_BODY.as_bytes(),
                NOW
            ),
            Err(SignatureError::NoSecret)
        );
        for bad in ["a2114d57", "v1=a2114d57", "v0=zz", "v0=abc", "v0=+a"] {
            assert_eq!(
                slack(Some(SLACK_TS), Some(bad), SLACK_BODY, NOW),
                Err(SignatureError::Malformed("v0=<hex>")),
                "{bad}"
            );
        }
    }

    #[test]
    fn webhook_signature_round_trips_and_refuses_tampering() {
        let secret = b"shared-secret";
        let body = br#"{"kind":"opened","id":"01j"}"#;
        let h = sign_webhook(secret, body, NOW);
        assert!(h.starts_with(&format!("t={NOW},v1=")), "{h}");
        assert_eq!(h.len(), format!("t={NOW},v1=").len() + 64);
        assert_eq!(verify_webhook(secret, Some(&h), body, NOW + 10), Ok(()));
        assert_eq!(
            verify_webhook(secret, Some(&h), br#"{"kind":"opened","id":"01k"}"#, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_webhook(b"other", Some(&h), body, NOW),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_webhook(secret, Some(&h), body, NOW + 301),
            Err(SignatureError::Stale { .. })
        ));
        // Moving the timestamp invalidates the signature.
        let moved = h.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(
            verify_webhook(secret, Some(&moved), body, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_webhook(secret, None, body, NOW),
            Err(SignatureError::Missing(WEBHOOK_HEADER))
        );
        assert!(matches!(
            verify_webhook(secret, Some("v1=00,t=1"), body, NOW),
            Err(SignatureError::Malformed(_))
        ));
    }

    /// The scheme as documented for receivers, computed independently of `sign_webhook`:
    /// HMAC-SHA256 over `{t}.{body}`, lowercase hex.
    #[test]
    fn webhook_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let want = hex(hmac::sign(&key, b"1700000000.{}").as_ref());
        assert_eq!(
            sign_webhook(b"k", b"{}", 1_700_000_000),
            format!("t=1700000000,v1={want}")
        );
    }
}
