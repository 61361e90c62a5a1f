//! Reading the records a host ships: each text must be exactly its record's canonical
//! encoding (the collector stores and serves the text, and exports re-verify it), and its
//! `hash` is recomputed. [`Record::read_canonical`] checks one text on its own, so the
//! records of a batch can be read in parallel; their place in the chain is checked by
//! [`crate::ChainVerifier::record_read`].
//!
//! Two ways give the same answer. The definition: parse the text into a [`Record`] (its body
//! a JSON value), encode that canonically and compare the bytes. The fast way, tried first:
//! one pass over the text that accepts only what is canonical byte for byte ([`crate::canon`]'s
//! rules) without building the body, then hashes the text minus its `hash` member (which,
//! for a canonical text, is the canonical encoding the hash covers). The scan is strict on
//! purpose: whatever it does not accept (an escaped object key, deep nesting, anything
//! malformed or not canonical) goes the definition's way, which also names the error. So the
//! scan may only ever accept texts the definition accepts, with the same fields; the tests
//! below check both on many texts.
use serde_json::Value;

use crate::record::{HASH_MEMBER, Hash, Kind, Record};

/// Nesting the scan follows; deeper bodies are read the slow way (serde_json's own limit is
/// 128).
const MAX_DEPTH: usize = 64;

/// A record read by [`Record::read_canonical`]: its text was its canonical encoding; whether
/// its hash matched its content is known (a mismatch is reported where the chain verifier
/// reports it, after the record's version and host). The body is not kept, only the
/// top-level string members the caller asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub v: u32,
    pub seq: u64,
    pub host: String,
    pub at_unix_ms: u64,
    pub kind: Kind,
    pub corr: Option<String>,
    pub prev: Hash,
    pub hash: Hash,
    /// For each name asked for, the body's top-level member of that name if it is a string.
    pub body_strings: Vec<Option<String>>,
    hash_matches: bool,
}

impl ReadRecord {
    /// Whether `hash` is the hash of the record's content.
    pub fn hash_matches(&self) -> bool {
        self.hash_matches
    }
}

/// Why a text is not a record in its canonical encoding.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not JSON, or not a v1 record (unknown or missing fields, wrong types).
    #[error("not a v1 record: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A record, but it holds a value with no canonical encoding (a float).
    #[error("record {seq} has no canonical encoding")]
    NoCanonicalForm { seq: u64 },
    /// A record, but the text is not its canonical encoding.
    #[error("record {seq} is not in its canonical encoding")]
    NotCanonical { seq: u64 },
}

impl Record {
    /// Reads a record from the text a host sent and checks what can be checked of it alone:
    /// the text is exactly the record's canonical encoding, and whether its `hash` is the
    /// hash of its content. `body_strings` names the body's top-level string members to
    /// return (in [`ReadRecord::body_strings`], in that order).
    pub fn read_canonical(text: &str, body_strings: &[&str]) -> Result<ReadRecord, ReadError> {
        match scan(text, body_strings) {
            Some(r) => Ok(r),
            None => read_by_definition(text, body_strings),
        }
    }
}

/// The definition: parse, re-encode, compare.
fn read_by_definition(text: &str, names: &[&str]) -> Result<ReadRecord, ReadError> {
    let r: Record = serde_json::from_str(text).map_err(ReadError::Malformed)?;
    let mut input = Vec::with_capacity(text.len() + 32);
    input.extend_from_slice(&r.prev.0);
    let hash_at = r
        .write_canonical(&mut input, false)
        .map_err(|_| ReadError::NoCanonicalForm { seq: r.seq })?;
    // `input` is prev || the text without its hash member: compare the text with it, the
    // member put back in (without building that copy).
    let unhashed = &input[32..];
    let (before, after) = unhashed.split_at(hash_at);
    let t = text.as_bytes();
    let member_len = HASH_MEMBER.len() + 64 + 2;
    let canonical = t.len() == unhashed.len() + member_len
        && t.starts_with(before)
        && t.ends_with(after)
        && t[hash_at..].starts_with(HASH_MEMBER)
        && t[hash_at + HASH_MEMBER.len()..][..64] == r.hash.hex()
        && t[hash_at + member_len - 2..][..2] == *b"\",";
    if !canonical {
        return Err(ReadError::NotCanonical { seq: r.seq });
    }
    let hash_matches = Hash::of(&input) == r.hash;
    let body_strings = names
        .iter()
        .map(|n| match &r.body {
            Value::Object(m) => m.get(*n).and_then(Value::as_str).map(str::to_owned),
            _ => None,
        })
        .collect();
    Ok(ReadRecord {
        v: r.v,
        seq: r.seq,
        host: r.host,
        at_unix_ms: r.at_unix_ms,
        kind: r.kind,
        corr: r.corr,
        prev: r.prev,
        hash: r.hash,
        body_strings,
        hash_matches,
    })
}

/// The fast way: `None` when the text is not accepted (then the definition decides).
fn scan(text: &str, names: &[&str]) -> Option<ReadRecord> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    s.lit(b"{\"at_unix_ms\":")?;
    let at_unix_ms = s.uint()?;
    s.lit(b",\"body\":")?;
    let mut body_strings = vec![None; names.len()];
    s.value(0, Some((names, &mut body_strings)))?;
    let corr = if s.b[s.i..].starts_with(b",\"corr\":") {
        s.i += 8;
        Some(s.string()?)
    } else {
        None
    };
    s.lit(b",")?;
    let hash_at = s.i;
    s.lit(HASH_MEMBER)?;
    let hash = s.hex_hash()?;
    s.lit(b"\",")?;
    let hash_end = s.i;
    s.lit(b"\"host\":")?;
    let host = s.string()?;
    s.lit(b",\"kind\":")?;
    let kind: Kind = s.string()?.parse().ok()?;
    s.lit(b",\"prev\":\"")?;
    let prev = s.hex_hash()?;
    s.lit(b"\",\"seq\":")?;
    let seq = s.uint()?;
    s.lit(b",\"v\":")?;
    let v = u32::try_from(s.uint()?).ok()?;
    s.lit(b"}")?;
    if s.i != s.b.len() {
        return None;
    }
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(&prev.0);
    h.update(&s.b[..hash_at]);
    h.update(&s.b[hash_end..]);
    let hash_matches = h.finish().as_ref() == hash.0;
    Some(ReadRecord {
        v,
        seq,
        host,
        at_unix_ms,
        kind,
        corr,
        prev,
        hash,
        body_strings,
        hash_matches,
    })
}

/// The body's top-level string members to keep: the names asked for and where to put them.
type Wanted<'n, 'o> = Option<(&'n [&'n str], &'o mut Vec<Option<String>>)>;

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Exactly these bytes next.
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(l).then(|| self.i += l.len())
    }

    /// Canonical digits (no leading zero) of a value within u64.
    fn digits(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        // "0" alone, or no leading zero.
        (len == 1 || (len > 1 && self.b[start] != b'0')).then_some(n)
    }

    fn uint(&mut self) -> Option<u64> {
        self.digits()
    }

    /// A canonical integer of a body: u64, or a negative i64 other than -0.
    fn int(&mut self) -> Option<()> {
        if self.lit(b"-").is_some() {
            let n = self.digits()?;
            return (n != 0 && n <= 1 << 63).then_some(());
        }
        self.digits().map(|_| ())
    }

    /// 64 lowercase hex digits (the text between a hash's quotes).
    fn hex_hash(&mut self) -> Option<Hash> {
        let t = std::str::from_utf8(self.b.get(self.i..self.i + 64)?).ok()?;
        let h = t.parse().ok()?;
        self.i += 64;
        Some(h)
    }

    /// A string in canonical form, decoded when `out` is given. Escapes allowed: `\"`,
    /// `\\`, `\b \t \n \f \r`, and `\u00xx` (lowercase) for the other control characters;
    /// every other character raw (control characters raw are not JSON).
    fn string_into(&mut self, mut out: Option<&mut Vec<u8>>) -> Option<()> {
        self.lit(b"\"")?;
        loop {
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(&self.b[start..self.i]);
            }
            let c = match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'b' => 0x08,
                        b't' => 0x09,
                        b'n' => 0x0a,
                        b'f' => 0x0c,
                        b'r' => 0x0d,
                        b'u' => self.control_escape()?,
                        _ => return None,
                    }
                }
                _ => return None,
            };
            if let Some(o) = out.as_deref_mut() {
                o.push(c);
            }
        }
    }

    /// The `00xx` of a `\u` escape: a control character without a short escape.
    fn control_escape(&mut self) -> Option<u8> {
        let d = self.b.get(self.i..self.i + 4)?;
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if d[..2] != *b"00" {
            return None;
        }
        let c = hex(d[2])? << 4 | hex(d[3])?;
        self.i += 4;
        (c < 0x20 && ![0x08, 0x09, 0x0a, 0x0c, 0x0d].contains(&c)).then_some(c)
    }

    fn string(&mut self) -> Option<String> {
        let mut out = Vec::new();
        self.string_into(Some(&mut out))?;
        String::from_utf8(out).ok()
    }

    /// Any canonical value nested `depth` deep; an object at depth 0 (the body) hands its
    /// wanted string members to `want`.
    fn value(&mut self, depth: usize, mut want: Wanted<'_, '_>) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.i += 1;
                if self.lit(b"}").is_some() {
                    return Some(());
                }
                let mut last: Option<&[u8]> = None;
                loop {
                    let key_start = self.i + 1;
                    self.string_into(None)?;
                    let key = &self.b[key_start..self.i - 1];
                    // Keys sort by their decoded bytes: only escape-free keys are compared
                    // here (an escaped key goes the slow way). Strictly increasing: sorted
                    // and no key twice.
                    if key.contains(&b'\\') || last.is_some_and(|l| key <= l) {
                        return None;
                    }
                    last = Some(key);
                    self.lit(b":")?;
                    let slot = want.as_mut().and_then(|(names, out)| {
                        let k = std::str::from_utf8(key).ok()?;
                        let at = names.iter().position(|n| *n == k)?;
                        Some(&mut out[at])
                    });
                    match slot {
                        Some(slot) if self.peek() == Some(b'"') => *slot = Some(self.string()?),
                        _ => self.value(depth + 1, None)?,
                    }
                    if self.lit(b",").is_none() {
                        return self.lit(b"}");
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.lit(b"]").is_some() {
                    return Some(());
                }
                loop {
                    self.value(depth + 1, None)?;
                    if self.lit(b",").is_none() {
                        return self.lit(b"]");
                    }
                }
            }
            b'"' => self.string_into(None),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            _ => self.int(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Chain, Draft};

    const NAMES: [&str; 3] = ["agent", "op", "decision"];

    fn text_of(corr: Option<&str>, body: Value) -> String {
        let mut c = Chain::new("h\u{e9}st").unwrap();
        let mut d = Draft::new(1_700_000_000_000, Kind::EventHeld, body);
        d.corr = corr.map(str::to_owned);
        let r = c.seal(d).unwrap();
        String::from_utf8(r.to_canonical().unwrap()).unwrap()
    }

    fn bodies() -> Vec<Value> {
        vec![
            json!({"agent": "claude", "op": "exec", "argv": ["apt-get", "-y"], "pid": 42,
                   "neg": -9_223_372_036_854_775_808_i64, "big": u64::MAX, "z": null,
                   "t": true, "f": false, "nested": {"a": [], "b": {}, "": "e"}}),
            json!({"op": "q\"b\\/\u{1}\u{1f}\n\t\u{8}\u{c}\r\u{7f}é😀", "agent": 7, "decision": ["x"]}),
            json!("a string body"),
            json!([1, 0, -1]),
            json!({}),
        ]
    }

    /// The fast way accepts the canonical texts of all these records, with what the
    /// definition reads.
    #[test]
    fn canonical_texts_are_read_the_fast_way_as_by_definition() {
        for body in bodies() {
            for corr in [None, Some("r-1"), Some("\u{0}\"")] {
                let t = text_of(corr, body.clone());
                let fast = scan(&t, &NAMES).unwrap_or_else(|| panic!("not scanned: {t}"));
                assert!(fast.hash_matches());
                assert_eq!(fast, read_by_definition(&t, &NAMES).unwrap());
            }
        }
        let t = text_of(None, bodies().remove(1));
        let r = Record::read_canonical(&t, &NAMES).unwrap();
        assert_eq!(r.body_strings[0], None, "a number is not a string");
        assert_eq!(
            r.body_strings[1].as_deref(),
            Some("q\"b\\/\u{1}\u{1f}\n\t\u{8}\u{c}\r\u{7f}é😀")
        );
        assert_eq!(r.body_strings[2], None);
    }

    /// A tiny deterministic generator (no dependency for one test).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 as usize
        }
    }

    /// Texts one or two edits away from canonical ones: whatever the fast way accepts, the
    /// definition accepts too, with the same fields (the fast way is never looser).
    #[test]
    fn the_fast_way_accepts_nothing_the_definition_refuses() {
        let pieces: [&str; 22] = [
            "\"", "\\", "{", "}", "[", "]", ",", ":", "0", "1", "-", ".", "e", "a", "\n", " ", "u",
            "\\u0041", "\\/", "\\u001F", "\u{1}", "é",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut tried, mut accepted) = (0, 0);
        for body in bodies() {
            let base = text_of(Some("c"), body);
            for _ in 0..4000 {
                let mut t = base.clone();
                for _ in 0..1 + rng.next() % 2 {
                    let mut at = rng.next() % (t.len() + 1);
                    while !t.is_char_boundary(at) {
                        at -= 1;
                    }
                    let piece = pieces[rng.next() % pieces.len()];
                    match rng.next() % 3 {
                        0 => t.insert_str(at, piece),
                        1 if at < t.len() => {
                            let end = (at + 1..=t.len()).find(|&e| t.is_char_boundary(e)).unwrap();
                            t.replace_range(at..end, piece);
                        }
                        _ if at < t.len() => {
                            let end = (at + 1..=t.len()).find(|&e| t.is_char_boundary(e)).unwrap();
                            t.replace_range(at..end, "");
                        }
                        _ => {}
                    }
                }
                tried += 1;
                if let Some(fast) = scan(&t, &NAMES) {
                    accepted += 1;
                    match read_by_definition(&t, &NAMES) {
                        Ok(slow) => assert_eq!(fast, slow, "{t}"),
                        Err(e) => {
                            panic!("the fast way accepted what the definition refuses ({e}): {t}")
                        }
                    }
                }
            }
        }
        // Some edits keep a text canonical (inside a string, say): both ways must agree there.
        assert!(accepted > 0 && accepted < tried, "{accepted} of {tried}");
    }

    #[test]
    fn texts_the_fast_way_leaves_are_read_by_definition() {
        // An escaped key, and nesting deeper than the scan follows: canonical all the same.
        let mut deep = json!("x");
        for _ in 0..MAX_DEPTH + 2 {
            deep = json!([deep]);
        }
        for body in [json!({"a\"b": 1, "a": 2}), deep] {
            let t = text_of(None, body);
            assert!(scan(&t, &NAMES).is_none());
            assert!(Record::read_canonical(&t, &NAMES).unwrap().hash_matches());
        }
    }

    #[test]
    fn texts_that_are_not_canonical_are_refused_as_by_definition() {
        let t = text_of(
            Some("c"),
            json!({"op": "exec", "argv": ["a", "b/c"], "n": 10}),
        );
        let hash = Record::read_canonical(&t, &[]).unwrap().hash.to_string();
        // Refused by serde or by the comparison: the first six are records whose text is
        // not their canonical encoding.
        let not_canonical = [
            format!("{t} "),
            t.replacen(':', ": ", 1),
            t.replacen(
                "\"argv\":[\"a\",\"b/c\"],\"n\":10,\"op\"",
                "\"n\":10,\"argv\":[\"a\",\"b/c\"],\"op\"",
                1,
            ),
            t.replacen("\"n\":10,", "\"n\":10,\"n\":10,", 1),
            t.replacen("b/c", "b\\/c", 1),
            t.replacen("\"a\"", "\"\\u0061\"", 1),
            t.replacen(&hash, &hash.to_uppercase(), 1),
            t.replacen("\"n\":10", "\"n\":010", 1),
            t.replacen("\"n\":10", "\"n\":-0", 1),
        ];
        for v in &not_canonical {
            assert!(scan(v, &[]).is_none(), "{v}");
            assert!(Record::read_canonical(v, &[]).is_err(), "{v}");
        }
        for v in &not_canonical[..6] {
            assert!(
                matches!(
                    Record::read_canonical(v, &[]),
                    Err(ReadError::NotCanonical { seq: 1 })
                ),
                "{v}: {:?}",
                Record::read_canonical(v, &[])
            );
        }
        // Not JSON, not a v1 record.
        for v in [
            t.replacen("\"n\":10", "\"n\":1\u{1}", 1),
            "{\"v\":1}".to_string(),
        ] {
            assert!(
                matches!(
                    Record::read_canonical(&v, &[]),
                    Err(ReadError::Malformed(_))
                ),
                "{v}"
            );
        }
        let float = t.replacen("\"n\":10", "\"n\":1.5", 1);
        assert!(matches!(
            Record::read_canonical(&float, &[]),
            Err(ReadError::NoCanonicalForm { seq: 1 })
        ));
        // Canonical, but changed after it was hashed.
        let changed = t.replacen("\"op\":\"exec\"", "\"op\":\"exed\"", 1);
        assert!(
            !Record::read_canonical(&changed, &[])
                .unwrap()
                .hash_matches()
        );
    }
}
