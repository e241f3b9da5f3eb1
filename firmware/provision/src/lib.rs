//! Provisioning bundles: what a fleet operator signs and a box accepts, as a sans-IO core.
//!
//! A *bundle* is one JSON file, the envelope:
//!
//! ```json
//! {"format": "lectern-bundle/1", "key_id": "fleet-2026", "signature": "<base64, 64 bytes>",
//!  "payload": "<base64 of the payload bytes>"}
//! ```
//!
//! The signature is ed25519 (docs/decisions.md D21) over the *exact* payload bytes, so nothing is
//! canonicalised and nothing outside the payload is trusted except `key_id`, which only selects
//! the public key to try. The payload is TOML:
//!
//! ```toml
//! version = 7                          # monotonic; a box applies only a version above its own
//! device = "*"                         # a device id (/etc/machine-id) or "*" for any box
//! not_after = "2027-01-31T00:00:00Z"   # RFC 3339; a box refuses the bundle after this instant
//! agent_name = "hall-a-101"            # optional: becomes `agent.name`
//! pinmap = "lectern-hat-v1"            # optional: becomes `board.pinmap`
//! [config]                             # optional: an overlay of lecternd's config (any table of it)
//! opencast.url = "https://opencast.example.edu"
//! [secrets]                            # optional: never written into the config, never logged
//! opencast_password = "..."
//! ```
//!
//! [`verify`] takes the bundle's bytes, the trusted keys, the box's identity, the applied version
//! and the time (injected) and returns a [`Verified`] bundle or a [`Rejection`]; it performs no I/O
//! and reads no clock. Checks run in this order: envelope (malformed, missing signature), key id
//! (unknown key), signature, payload (malformed), device, expiry, version (rollback or replay). A
//! payload is parsed only after its signature checked, so an attacker's bytes never reach the TOML
//! parser on a box. What a verified bundle becomes on disk is [`store`]'s job.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

pub mod keys;
pub mod remote;
pub mod store;

pub use keys::{KeyError, Keyring, SecretKey};

/// The envelope's `format` value this code writes and accepts.
pub const FORMAT: &str = "lectern-bundle/1";

/// The largest bundle a box reads: a config overlay and a few secrets are a few KiB.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// Secret names a bundle may carry, and the config key each one feeds (through a `*_file` key).
/// `s3_secret_key` goes to every `[[config.upload.target]]` of kind `s3` (one campus bucket).
pub const SECRETS: &[(&str, &str)] = &[("opencast_password", "opencast.password_file"), ("s3_secret_key", "upload.target[kind = s3].secret_key_file")];

/// Why a bundle was refused. Nothing on the box changes for any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Rejection {
    /// Not a bundle: bad JSON, wrong format, bad base64, too large, or a payload that is not a
    /// valid payload (after its signature checked).
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// The envelope has no signature.
    #[error("bundle is not signed")]
    MissingSignature,
    /// The bundle names a key this box does not trust.
    #[error("bundle is signed with key {0:?}, which this box does not trust")]
    UnknownKey(String),
    /// The signature does not match the payload under the named key: tampered or mis-signed.
    #[error("bad signature: the payload was not signed by key {0:?}")]
    BadSignature(String),
    /// The bundle is for another box.
    #[error("bundle is for device {bundle:?}, this box is {this:?}")]
    OtherDevice { bundle: String, this: String },
    /// `not_after` has passed.
    #[error("bundle expired at {not_after} (now {now})")]
    Expired { not_after: String, now: String },
    /// The version is not above the applied one: a rollback or a replay.
    #[error("bundle version {version} is not newer than the applied version {applied}")]
    NotNewer { version: u64, applied: u64 },
    /// The config the bundle would produce is not one the daemon accepts.
    #[error("bundle config rejected: {0}")]
    Config(String),
}

/// The envelope as it is on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: String,
    pub key_id: String,
    #[serde(default)]
    pub signature: Option<String>,
    pub payload: String,
}

/// The payload's fields, as signed.
#[derive(Clone, PartialEq)]
pub struct Payload {
    pub version: u64,
    /// A device id or `*`.
    pub device: String,
    pub not_after: DateTime<Utc>,
    pub agent_name: Option<String>,
    pub pinmap: Option<String>,
    /// The config overlay: tables of lecternd's config.
    pub config: toml::Table,
    /// Secret name → value; names are from [`SECRETS`].
    pub secrets: BTreeMap<String, String>,
}

impl fmt::Debug for Payload {
    // Secrets never reach a log: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("version", &self.version)
            .field("device", &self.device)
            .field("not_after", &self.not_after)
            .field("agent_name", &self.agent_name)
            .field("pinmap", &self.pinmap)
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    version: u64,
    device: String,
    not_after: String,
    agent_name: Option<String>,
    pinmap: Option<String>,
    #[serde(default)]
    config: toml::Table,
    /// Any TOML values, checked by hand: a type error from serde would quote the value, and a
    /// secret must never reach a rejection message.
    #[serde(default)]
    secrets: toml::Table,
}

/// Who is asking: the box's identity, what it has applied, and the time.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub keys: &'a Keyring,
    pub device_id: &'a str,
    /// The applied version, 0 when nothing was ever applied.
    pub applied_version: u64,
    pub now: DateTime<Utc>,
}

/// A bundle that passed every check; holds the payload and the key that signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key_id: String,
    pub payload: Payload,
}

/// Parses the envelope only (no signature check): for `inspect` and for messages.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, Rejection> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(Rejection::Malformed(format!("{} bytes, more than the {MAX_BUNDLE_BYTES} a bundle may have", bytes.len())));
    }
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(format!("envelope: {e}")))?;
    if env.format != FORMAT {
        return Err(Rejection::Malformed(format!("format {:?}, expected {FORMAT:?}", env.format)));
    }
    Ok(env)
}

/// Decodes the envelope's payload bytes (not yet trusted).
pub fn payload_bytes(env: &Envelope) -> Result<Vec<u8>, Rejection> {
    B64.decode(env.payload.as_bytes()).map_err(|e| Rejection::Malformed(format!("payload is not base64: {e}")))
}

/// Parses payload bytes into a [`Payload`]; used after the signature checked (and by the fleet
/// tool before it signs, so an operator never signs a payload a box would refuse as malformed).
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|_| Rejection::Malformed("payload is not UTF-8".into()))?;
    let raw: RawPayload = toml::from_str(text).map_err(|e| Rejection::Malformed(format!("payload: {}", e.message())))?;
    let not_after = DateTime::parse_from_rfc3339(&raw.not_after)
        .map_err(|e| Rejection::Malformed(format!("payload: not_after {:?} is not an RFC 3339 time: {e}", raw.not_after)))?
        .with_timezone(&Utc);
    if raw.version == 0 {
        return Err(Rejection::Malformed("payload: version must be at least 1".into()));
    }
    if raw.device.is_empty() || raw.device.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Rejection::Malformed(format!("payload: device {:?} is not a device id or \"*\"", raw.device)));
    }
    let mut secrets = BTreeMap::new();
    for (name, value) in raw.secrets {
        if !SECRETS.iter().any(|(n, _)| *n == name) {
            let known: Vec<_> = SECRETS.iter().map(|(n, _)| *n).collect();
            return Err(Rejection::Malformed(format!("payload: unknown secret {name:?} (known: {})", known.join(", "))));
        }
        let toml::Value::String(value) = value else {
            return Err(Rejection::Malformed(format!("payload: secrets.{name} must be a string (in quotes)")));
        };
        secrets.insert(name, value);
    }
    // A secret must never sit in the config, where `status`, logs and backups could see it.
    if let Some(toml::Value::Table(oc)) = raw.config.get("opencast") {
        if oc.contains_key("password") {
            return Err(Rejection::Malformed("payload: config.opencast.password: put the password in [secrets] opencast_password".into()));
        }
    }
    if s3_targets(&raw.config).any(|t| t.contains_key("secret_key")) {
        return Err(Rejection::Malformed("payload: config.upload.target.secret_key: put the key in [secrets] s3_secret_key".into()));
    }
    for (field, key) in [(&raw.agent_name, ("agent", "name")), (&raw.pinmap, ("board", "pinmap"))] {
        if field.is_some() {
            if let Some(toml::Value::Table(t)) = raw.config.get(key.0) {
                if t.contains_key(key.1) {
                    return Err(Rejection::Malformed(format!("payload: {}.{} is set both in [config] and at the top", key.0, key.1)));
                }
            }
        }
    }
    Ok(Payload {
        version: raw.version,
        device: raw.device,
        not_after,
        agent_name: raw.agent_name,
        pinmap: raw.pinmap,
        config: raw.config,
        secrets,
    })
}

/// Checks a bundle against the box's keys, identity, applied version and clock.
pub fn verify(bytes: &[u8], cx: &Context<'_>) -> Result<Verified, Rejection> {
    let env = parse_envelope(bytes)?;
    let sig_b64 = env.signature.as_deref().filter(|s| !s.is_empty()).ok_or(Rejection::MissingSignature)?;
    let key = cx.keys.get(&env.key_id).ok_or_else(|| Rejection::UnknownKey(env.key_id.clone()))?;
    let sig_bytes = B64.decode(sig_b64.as_bytes()).map_err(|e| Rejection::Malformed(format!("signature is not base64: {e}")))?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| Rejection::Malformed(format!("signature has {} bytes, expected 64", sig_bytes.len())))?;
    let payload = payload_bytes(&env)?;
    // `verify_strict` refuses the malleable and small-order edge cases the lenient check accepts.
    key.verify_strict(&payload, &sig).map_err(|_| Rejection::BadSignature(env.key_id.clone()))?;
    let payload = parse_payload(&payload)?;
    if payload.device != "*" && payload.device != cx.device_id {
        return Err(Rejection::OtherDevice { bundle: payload.device, this: cx.device_id.to_owned() });
    }
    if cx.now > payload.not_after {
        return Err(Rejection::Expired { not_after: payload.not_after.to_rfc3339(), now: cx.now.to_rfc3339() });
    }
    if payload.version <= cx.applied_version {
        return Err(Rejection::NotNewer { version: payload.version, applied: cx.applied_version });
    }
    Ok(Verified { key_id: env.key_id, payload })
}

/// Signs payload bytes into a bundle (the fleet tool's `sign`). The payload is parsed first so a
/// malformed one is never signed.
pub fn sign(payload: &[u8], key: &SecretKey) -> Result<Vec<u8>, Rejection> {
    parse_payload(payload)?;
    Ok(sign_unchecked(payload, &key.key_id, &key.signing))
}

/// Signs any bytes; for tests that need a validly signed but malformed payload.
pub fn sign_unchecked(payload: &[u8], key_id: &str, key: &SigningKey) -> Vec<u8> {
    let sig = key.sign(payload);
    let env = Envelope {
        format: FORMAT.to_owned(),
        key_id: key_id.to_owned(),
        signature: Some(B64.encode(sig.to_bytes())),
        payload: B64.encode(payload),
    };
    let mut out = serde_json::to_vec_pretty(&env).expect("an envelope serialises");
    out.push(b'\n');
    out
}

impl Payload {
    /// The config file this payload produces: the overlay with `agent_name`, `pinmap` and a
    /// `*_file` key for each secret (relative to the config's directory) merged in.
    pub fn config_toml(&self) -> String {
        let mut config = self.config.clone();
        let mut set = |table: &str, key: &str, value: toml::Value| {
            let t = config.entry(table.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = t {
                t.insert(key.to_owned(), value);
            }
        };
        if let Some(name) = &self.agent_name {
            set("agent", "name", toml::Value::String(name.clone()));
        }
        if let Some(pinmap) = &self.pinmap {
            set("board", "pinmap", toml::Value::String(pinmap.clone()));
        }
        if self.secrets.contains_key("opencast_password") {
            set("opencast", "password_file", toml::Value::String(secret_file_name("opencast_password")));
        }
        if self.secrets.contains_key("s3_secret_key") {
            for t in s3_targets_mut(&mut config) {
                t.insert("secret_key_file".into(), toml::Value::String(secret_file_name("s3_secret_key")));
            }
        }
        let mut text = format!("# Written by lectern provision from bundle version {}; do not edit.\n", self.version);
        text.push_str(&toml::to_string(&config).expect("a TOML table serialises"));
        text
    }
}

/// The overlay's `[[upload.target]]` tables of kind `s3`.
fn s3_targets(config: &toml::Table) -> impl Iterator<Item = &toml::Table> {
    let targets = config.get("upload").and_then(|u| u.get("target")).and_then(|t| t.as_array());
    targets.into_iter().flatten().filter_map(|t| t.as_table()).filter(|t| t.get("kind").and_then(|k| k.as_str()) == Some("s3"))
}

fn s3_targets_mut(config: &mut toml::Table) -> impl Iterator<Item = &mut toml::Table> {
    let targets = config.get_mut("upload").and_then(|u| u.get_mut("target")).and_then(|t| t.as_array_mut());
    targets.into_iter().flatten().filter_map(|t| t.as_table_mut()).filter(|t| t.get("kind").and_then(|k| k.as_str()) == Some("s3"))
}

/// The file name a secret is stored under, next to the config.
pub fn secret_file_name(name: &str) -> String {
    format!("{name}.secret")
}

/// Verifying key from raw bytes (for [`Keyring`]).
pub(crate) fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes.try_into().ok()?).ok()
}

#[cfg(test)]
mod tests;
