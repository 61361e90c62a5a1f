//! Checkpoint signing keys: Ed25519 through ring, stored root-only, and their public halves
//! in the signed-note verifier key text form.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

use crate::record::Hash;

/// Signed-note signature type byte of Ed25519.
const ALG_ED25519: u8 = 0x01;
/// First line of a key file.
const KEY_FILE_MAGIC: &str = "airlock-audit-signing-key v1";

/// Key generation, storage and parsing failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key name is non-empty, has no whitespace and no `+` (signed-note rule).
    #[error("bad key name {0:?}")]
    BadName(String),
    /// ring could not make or read the key pair.
    #[error("the Ed25519 key is invalid or could not be generated")]
    Crypto,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key file readable or writable by group or others is refused: anyone who could
    /// read it could sign checkpoints for this host.
    #[error("{}: mode {mode:o} lets others at the key; it must be 0600", path.display())]
    Permissions { path: PathBuf, mode: u32 },
    /// Not a key file of this format.
    #[error("{}: not an airlock audit signing key file", path.display())]
    BadKeyFile { path: PathBuf },
    /// A verifier key text is not `name+hexid+base64`.
    #[error("not a verifier key (name+hexkeyid+base64(0x01||key))")]
    BadVerifierKey,
    /// The key id in a verifier key text does not match its name and key.
    #[error("the verifier key's id does not match its name and public key")]
    KeyIdMismatch,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// The signed-note key id of an Ed25519 key: the first 4 bytes of
/// SHA-256(name || 0x0A || 0x01 || public key), read big-endian.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut input = Vec::with_capacity(name.len() + 34);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ALG_ED25519);
    input.extend_from_slice(public);
    let h = Hash::of(&input);
    u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]])
}

/// A host's checkpoint signing key.
pub struct SigningKey {
    name: String,
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        write!(f, "SigningKey({})", self.verifier())
    }
}

impl SigningKey {
    /// Generates a new key named `name` (airlock uses the checkpoint origin,
    /// `airlock/<host>`).
    pub fn generate(name: &str) -> Result<SigningKey, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Crypto)?;
        SigningKey::from_pkcs8(name, doc.as_ref())
    }

    /// A key from its PKCS#8 v2 document (as ring generates).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::Crypto)?;
        Ok(SigningKey {
            name: name.to_owned(),
            pkcs8: pkcs8.to_vec(),
            pair,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, for verifiers.
    pub fn verifier(&self) -> VerifierKey {
        let mut public = [0; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifierKey::new(&self.name, public).expect("the name was checked when the key was made")
    }

    /// Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut s = [0; 64];
        s.copy_from_slice(self.pair.sign(msg).as_ref());
        s
    }

    /// Writes the key to a new file at `path` with mode 0600 (refuses to overwrite: a
    /// replaced key would orphan every checkpoint signed so far) and syncs it.
    ///
    /// File format (text): `airlock-audit-signing-key v1`, `name <name>`,
    /// `pkcs8 <base64 of the PKCS#8 document>`, one per line.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // The umask can only clear bits of 0600, but say it explicitly anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        let text = format!(
            "{KEY_FILE_MAGIC}\nname {}\npkcs8 {}\n",
            self.name,
            B64.encode(&self.pkcs8)
        );
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a key written by [`SigningKey::write_new`]; refuses a file that group or
    /// others may read or write.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let bad = || KeyError::BadKeyFile {
            path: path.to_path_buf(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_MAGIC) {
            return Err(bad());
        }
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("name "))
            .ok_or_else(bad)?;
        let pkcs8 = lines
            .next()
            .and_then(|l| l.strip_prefix("pkcs8 "))
            .and_then(|b| B64.decode(b).ok())
            .ok_or_else(bad)?;
        SigningKey::from_pkcs8(name, &pkcs8)
    }
}

/// A public key that checkpoints are verified with. Its text form is the signed-note
/// verifier key: `<name>+<8 hex digits of the key id>+<base64(0x01 || 32-byte key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    public: [u8; 32],
}

impl VerifierKey {
    /// The verifier for an Ed25519 public key named `name`.
    pub fn new(name: &str, public: [u8; 32]) -> Result<VerifierKey, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::BadName(name.to_owned()));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id: key_id(name, &public),
            public,
        })
    }

    /// The key's name (the name on signature lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed-note key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Whether `sig` is this key's Ed25519 signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.public)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut k = Vec::with_capacity(33);
        k.push(ALG_ED25519);
        k.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(k))
    }
}

impl FromStr for VerifierKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<VerifierKey, KeyError> {
        let s = s.trim();
        // At most three parts: the base64 key may itself contain '+'.
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::BadVerifierKey);
        };
        if hex_id.len() != 8 {
            return Err(KeyError::BadVerifierKey);
        }
        let id = u32::from_str_radix(hex_id, 16).map_err(|_| KeyError::BadVerifierKey)?;
        let raw = B64.decode(b64).map_err(|_| KeyError::BadVerifierKey)?;
        let [ALG_ED25519, key @ ..] = raw.as_slice() else {
            return Err(KeyError::BadVerifierKey);
        };
        let public: [u8; 32] = key.try_into().map_err(|_| KeyError::BadVerifierKey)?;
        let v = VerifierKey::new(name, public)?;
        if v.id != id {
            return Err(KeyError::KeyIdMismatch);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let k = SigningKey::generate("airlock/h1").unwrap();
        k.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = SigningKey::load(&path).unwrap();
        assert_eq!(back.verifier(), k.verifier());
        assert!(matches!(k.write_new(&path), Err(KeyError::Io { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SigningKey::load(&path),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn verifier_text_round_trips_and_checks_the_id() {
        let k = SigningKey::generate("airlock/h1").unwrap();
        let text = k.verifier().to_string();
        assert!(text.starts_with("airlock/h1+"));
        assert_eq!(text.parse::<VerifierKey>().unwrap(), k.verifier());
        let other_id = format!(
            "airlock/h1+00000000+{}",
            text.splitn(3, '+').nth(2).unwrap()
        );
        assert!(matches!(
            other_id.parse::<VerifierKey>(),
            Err(KeyError::KeyIdMismatch)
        ));
        assert!("nope".parse::<VerifierKey>().is_err());
        let sig = k.sign(b"m");
        assert!(k.verifier().verify(b"m", &sig));
        assert!(!k.verifier().verify(b"n", &sig));
    }

    #[test]
    fn key_id_matches_the_signed_note_definition() {
        // The verifier key of golang.org/x/mod/sumdb/note's tests:
        // PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW.
        let raw = B64
            .decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .unwrap();
        let public: [u8; 32] = raw[1..].try_into().unwrap();
        assert_eq!(key_id("PeterNeumann", &public), 0xc74f20a3);
        let text = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        assert_eq!(text.parse::<VerifierKey>().unwrap().to_string(), text);
        // transparency-dev's test key whose base64 contains a '+'.
        let plus = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
        assert_eq!(plus.parse::<VerifierKey>().unwrap().to_string(), plus);
    }
}
