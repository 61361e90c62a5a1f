//! The canonical JSON encoding that record hashes are computed over.
//!
//! One value has exactly one encoding, so any implementation that parses a record and
//! re-encodes it this way gets the same bytes the writer hashed:
//!
//! - no whitespace anywhere (no spaces, no newline);
//! - object members sorted by key, comparing keys as raw UTF-8 bytes (byte-wise lexicographic;
//!   a key that is a prefix of another comes first); duplicate keys cannot occur (a parsed
//!   object keeps one value per key);
//! - arrays in their order;
//! - numbers are integers only, in the range of a signed or unsigned 64-bit integer, written
//!   in decimal with a `-` for negatives, no `+`, no leading zeros, no fraction or exponent;
//!   a value with a fraction or exponent (a float) has no canonical form and is refused;
//! - `true`, `false`, `null` as such;
//! - strings in double quotes; `"` and `\` escaped as `\"` and `\\`; the control characters
//!   U+0008, U+0009, U+000A, U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every other
//!   character below U+0020 as `\u00XX` with lowercase hex digits; everything else (including
//!   `/`, U+007F and all non-ASCII characters) as its raw UTF-8 bytes.
//!
//! This is the same as RFC 8785 (JCS) for the values a record can hold, except that JCS sorts
//! keys by UTF-16 code units: the two orders differ only for keys with characters above
//! U+FFFF next to characters in U+E000..U+FFFF, which airlock's own keys never contain.

use serde_json::Value;

/// Why a value has no canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// A number with a fraction or exponent (or outside the 64-bit integer range): floats
    /// would hash differently across implementations, so records may not contain them.
    #[error("a number that is not a 64-bit integer ({0}) has no canonical encoding")]
    NotAnInteger(String),
}

/// Encodes `v` canonically into a new buffer.
pub fn to_vec(v: &Value) -> Result<Vec<u8>, CanonError> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out)?;
    Ok(out)
}

/// Appends the canonical encoding of `v` to `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), CanonError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // `as_i64`/`as_u64` succeed only for integers that were parsed or built as
            // integers; a float such as 1.0 reports neither, and is refused.
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(CanonError::NotAnInteger(n.to_string()));
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here rather than relying on serde_json's map type: with the
            // `preserve_order` feature (which any crate in a build may switch on) its map
            // keeps insertion order instead.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(val, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Appends the canonical encoding of the string `s`.
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            // Bytes of multi-byte UTF-8 sequences are all >= 0x80, so copying byte by byte
            // keeps every non-ASCII character intact.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_recursively_without_whitespace() {
        let v = json!({"b": [1, {"z": null, "a": true}], "a": "x", "ab": -3, "": 0});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            r#"{"":0,"a":"x","ab":-3,"b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn escapes_only_what_json_requires() {
        let v = json!("q\"b\\/\u{1}\u{1f}\n\t\u{8}\u{c}\r\u{7f}é😀");
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            "\"q\\\"b\\\\/\\u0001\\u001f\\n\\t\\b\\f\\r\u{7f}é😀\""
        );
    }

    #[test]
    fn refuses_floats_keeps_64_bit_integers() {
        assert!(matches!(
            to_vec(&json!({"x": 1.5})),
            Err(CanonError::NotAnInteger(_))
        ));
        let parsed: Value = serde_json::from_str("1.0").unwrap();
        assert!(to_vec(&parsed).is_err());
        assert_eq!(to_vec(&json!(u64::MAX)).unwrap(), b"18446744073709551615");
        assert_eq!(to_vec(&json!(i64::MIN)).unwrap(), b"-9223372036854775808");
    }

    #[test]
    fn reparsing_serde_output_gives_the_same_bytes() {
        let v = json!({"k": "a\u{0}b", "n": [1, 2, {"m": "ü"}]});
        let text = serde_json::to_string_pretty(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(to_vec(&v).unwrap(), to_vec(&back).unwrap());
    }
}
