//! `lectern-fleet`: the AV team's signing tool (docs/provisioning.md). It makes a fleet key,
//! signs payloads into bundles, shows what a bundle holds (secrets by name only) and checks a
//! bundle the way a box would. It dispatches and owns the exit codes; the format and every check
//! are `lectern-provision`'s. Exit codes: 0 done (or verified), 1 the bundle was rejected,
//! 2 usage or I/O error.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use lectern_provision::{keys::valid_key_id, parse_envelope, parse_payload, payload_bytes, sign, verify, Context, Keyring, SecretKey};

const USAGE: &str = "usage:
  lectern-fleet keygen KEY_ID DIR          write DIR/KEY_ID.secret (0600, keep it offline) and DIR/KEY_ID.pub
  lectern-fleet sign --key FILE.secret PAYLOAD.toml [-o BUNDLE]
  lectern-fleet inspect BUNDLE             what a bundle holds (not verified; secrets by name only)
  lectern-fleet verify --keys DIR|FILE.pub [--device ID] [--applied N] [--now RFC3339] BUNDLE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lectern-fleet: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Splits `--flag value` options from positional arguments; every flag takes a value.
/// `--flag value` pairs in the order given.
type Options = Vec<(String, String)>;

fn options(args: &[String], allowed: &[&str]) -> anyhow::Result<(Options, Vec<String>)> {
    let (mut opts, mut pos) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.starts_with('-') && a.len() > 1 {
            if !allowed.contains(&a.as_str()) {
                bail!("unknown option {a}\n{USAGE}");
            }
            let v = it.next().with_context(|| format!("{a} needs a value"))?;
            opts.push((a.clone(), v.clone()));
        } else {
            pos.push(a.clone());
        }
    }
    Ok((opts, pos))
}

fn opt<'a>(opts: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    opts.iter().rev().find(|(k, _)| names.contains(&k.as_str())).map(|(_, v)| v.as_str())
}

fn one(pos: &[String], what: &str) -> anyhow::Result<PathBuf> {
    match pos {
        [p] => Ok(PathBuf::from(p)),
        _ => bail!("expected one {what}\n{USAGE}"),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!("{} exists: an existing key is never overwritten", path.display()),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

/// Loads the config the payload produces with the daemon's own loader, in a scratch directory
/// that is removed afterwards (it briefly holds the secrets, 0600).
fn check_config(payload: &[u8]) -> anyhow::Result<()> {
    let payload = parse_payload(payload)?;
    let dir = std::env::temp_dir().join(format!("lectern-fleet-check-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let result = lectern_provision::store::stage_and_check(&dir, &payload);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(result?)
}

fn run(args: &[String]) -> anyhow::Result<u8> {
    let Some((cmd, rest)) = args.split_first() else { bail!("{USAGE}") };
    match cmd.as_str() {
        "keygen" => {
            let [id, dir] = rest else { bail!("{USAGE}") };
            if !valid_key_id(id) {
                bail!("key id {id:?}: use 1 to 64 of A-Z a-z 0-9 . _ -");
            }
            let mut seed = [0u8; 32];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed).context("reading /dev/urandom")?;
            let key = SecretKey::from_seed(id, seed);
            let dir = Path::new(dir);
            if !dir.is_dir() {
                // Owner only: it is about to hold a secret key.
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("cannot create the key directory {}", dir.display()))?;
            }
            write_new(&dir.join(format!("{id}.secret")), key.to_file_text().as_bytes(), 0o600)?;
            write_new(&dir.join(format!("{id}.pub")), key.public_file_text().as_bytes(), 0o644)?;
            println!("wrote {0}/{id}.secret (keep it offline) and {0}/{id}.pub (goes into the image)", dir.display());
            Ok(0)
        }
        "sign" => {
            let (opts, pos) = options(rest, &["--key", "-o", "--out"])?;
            let key_path = opt(&opts, &["--key"]).context("sign needs --key FILE.secret")?;
            let key = SecretKey::load(Path::new(key_path))?;
            let payload_path = one(&pos, "PAYLOAD.toml")?;
            let payload = read(&payload_path)?;
            let bundle = sign(&payload, &key).map_err(|e| anyhow::anyhow!("{}: {e}", payload_path.display()))?;
            check_config(&payload).with_context(|| format!("{}: not signed", payload_path.display()))?;
            match opt(&opts, &["-o", "--out"]) {
                Some(out) => {
                    std::fs::write(out, &bundle).with_context(|| format!("cannot write {out}"))?;
                    eprintln!("signed {} with key {} into {out}", payload_path.display(), key.key_id);
                }
                None => std::io::stdout().write_all(&bundle)?,
            }
            Ok(0)
        }
        "inspect" => {
            let path = one(rest, "BUNDLE")?;
            let env = parse_envelope(&read(&path)?)?;
            let p = parse_payload(&payload_bytes(&env)?)?;
            println!("key_id     {}", env.key_id);
            println!("signed     {}", if env.signature.as_deref().is_some_and(|s| !s.is_empty()) { "yes (not verified here: use verify)" } else { "NO" });
            println!("version    {}", p.version);
            println!("device     {}", p.device);
            println!("not_after  {}", p.not_after.to_rfc3339());
            println!("secrets    {}", p.secrets.keys().cloned().collect::<Vec<_>>().join(", "));
            println!("--- config the box would run with ---");
            print!("{}", p.config_toml());
            Ok(0)
        }
        "verify" => {
            let (opts, pos) = options(rest, &["--keys", "--device", "--applied", "--now"])?;
            let keys = Keyring::load(Path::new(opt(&opts, &["--keys"]).context("verify needs --keys DIR|FILE.pub")?))?;
            let device = opt(&opts, &["--device"]).unwrap_or("*");
            let applied = opt(&opts, &["--applied"]).map(str::parse).transpose().context("--applied wants a number")?.unwrap_or(0);
            let now = match opt(&opts, &["--now"]) {
                Some(t) => DateTime::parse_from_rfc3339(t).context("--now wants an RFC 3339 time")?.with_timezone(&Utc),
                None => Utc::now(),
            };
            let bundle = read(&one(&pos, "BUNDLE")?)?;
            match verify(&bundle, &Context { keys: &keys, device_id: device, applied_version: applied, now }) {
                Ok(v) => {
                    println!("ok: version {} for device {} signed by {}", v.payload.version, v.payload.device, v.key_id);
                    Ok(0)
                }
                Err(r) => {
                    println!("rejected: {r}");
                    Ok(1)
                }
            }
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}
