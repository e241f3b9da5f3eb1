//! Fleet keys as text files: a public key is one line `lectern-fleet-public KEY_ID BASE64` (the
//! 32-byte ed25519 key), a secret key one line `lectern-fleet-secret KEY_ID BASE64` (the 32-byte
//! seed; the file is written 0600 and stays with the AV team, never on a box). A box trusts the
//! public keys in its keyring directory (one `*.pub` file each, from the image), looked up by the
//! bundle's key id; several keys let a fleet rotate its key without re-imaging.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};

const PUBLIC_TAG: &str = "lectern-fleet-public";
const SECRET_TAG: &str = "lectern-fleet-secret";

/// A key file that cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("key file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("key files {first} and {second} both define key id {key_id:?}")]
    Duplicate { key_id: String, first: PathBuf, second: PathBuf },
}

/// Is this a usable key id: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn parse_line(text: &str, tag: &str, path: &Path) -> Result<(String, [u8; 32]), KeyError> {
    let invalid = |message: String| KeyError::Invalid { path: path.to_owned(), message };
    let line = text.trim();
    let mut parts = line.split_ascii_whitespace();
    let (Some(t), Some(id), Some(b64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(format!("expected one line `{tag} KEY_ID BASE64`")));
    };
    if t != tag {
        return Err(invalid(format!("starts with {t:?}, expected {tag:?}")));
    }
    if !valid_key_id(id) {
        return Err(invalid(format!("key id {id:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")));
    }
    let bytes = B64.decode(b64).map_err(|e| invalid(format!("key is not base64: {e}")))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| invalid(format!("key has {} bytes, expected 32", b.len())))?;
    Ok((id.to_owned(), bytes))
}

/// A fleet signing key (the AV team's side).
pub struct SecretKey {
    pub key_id: String,
    pub signing: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A key from a 32-byte seed (keygen reads it from the OS's random source).
    pub fn from_seed(key_id: &str, seed: [u8; 32]) -> SecretKey {
        SecretKey { key_id: key_id.to_owned(), signing: SigningKey::from_bytes(&seed) }
    }

    pub fn parse(text: &str, path: &Path) -> Result<SecretKey, KeyError> {
        let (key_id, seed) = parse_line(text, SECRET_TAG, path)?;
        Ok(SecretKey::from_seed(&key_id, seed))
    }

    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        SecretKey::parse(&text, path)
    }

    /// The secret key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_TAG} {} {}\n", self.key_id, B64.encode(self.signing.to_bytes()))
    }

    /// The public key file's text.
    pub fn public_file_text(&self) -> String {
        format!("{PUBLIC_TAG} {} {}\n", self.key_id, B64.encode(self.signing.verifying_key().to_bytes()))
    }
}

/// The public keys a box trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, (VerifyingKey, PathBuf)>,
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds one public key file's text.
    pub fn add(&mut self, text: &str, path: &Path) -> Result<(), KeyError> {
        let (id, bytes) = parse_line(text, PUBLIC_TAG, path)?;
        let key = crate::verifying_key(&bytes)
            .ok_or_else(|| KeyError::Invalid { path: path.to_owned(), message: "not a valid ed25519 public key".into() })?;
        if let Some((_, first)) = self.keys.get(&id) {
            return Err(KeyError::Duplicate { key_id: id, first: first.clone(), second: path.to_owned() });
        }
        self.keys.insert(id, (key, path.to_owned()));
        Ok(())
    }

    /// Loads a `.pub` file, or every `*.pub` file of a directory (sorted by name).
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| KeyError::Read { path: p.to_owned(), source });
        let mut ring = Keyring::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            files.sort();
            for f in files {
                ring.add(&read(&f)?, &f)?;
            }
        } else {
            ring.add(&read(path)?, path)?;
        }
        Ok(ring)
    }

    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id).map(|(k, _)| k)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
