//! The S3 target against moto's real S3 server on loopback (`lectern-moto`): a full upload read
//! back, resume after a crash from what ListParts confirms, a lost CompleteMultipartUpload reply,
//! a server restart that loses the upload, stale uploads, `abandon`, wrong credentials (moto's
//! IAM authentication checks our SigV4 signatures), a missing bucket, a dead endpoint, and a
//! campus store behind an internal CA (moto serving HTTPS with a certificate from a CA the
//! `openssl` CLI makes for the run: refused without the target's `ca_file`, uploaded with it).
//!
//! moto is started with a 256 KiB minimum part size so a few-MB file has many parts; one test
//! keeps S3's 5 MiB rule and the target's production part-size check, and prints the throughput.
//! Without python3-venv the tests skip loudly (never under `CI=true`; see `lectern-moto`).
//!
//! The runner is not used: [`drive`] calls `step` in a loop and keeps the progress, the way the
//! runner does minus the journal and the retries.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lectern_moto::{MotoServer, Options};
use lectern_upload::s3::{Progress, S3Options, S3Target, Timeouts, MIN_PART_BYTES};
use lectern_upload::{Class, FileRef, Step, StepIo, Target, UploadError, UploadSpec};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const BUCKET: &str = "lectern-media";
/// The part size the test server accepts (moto's `S3_UPLOAD_PART_MIN_SIZE`).
const PART: u64 = 256 * 1024;
/// A few MB, not a whole number of parts.
const MEDIA_BYTES: u64 = 3 * 1024 * 1024 + 12_345;

struct Fixture {
    moto: MotoServer,
    spec: UploadSpec,
    _dir: TempDir,
}

/// Deterministic bytes that differ from part to part (so do their MD5s).
fn media(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_ref(path: &Path, bytes: &[u8]) -> Result<FileRef> {
    std::fs::write(path, bytes)?;
    Ok(FileRef { path: path.to_owned(), bytes: bytes.len() as u64, sha256: format!("{:x}", Sha256::digest(bytes)) })
}

/// moto with `min_part` (None: S3's 5 MiB), the bucket, and a recording of `media_bytes`.
fn setup_with(min_part: Option<u64>, media_bytes: u64) -> Result<Option<Fixture>> {
    let Some(mut moto) = MotoServer::start_or_skip(Options { min_part_bytes: min_part, ..Options::default() })? else { return Ok(None) };
    moto.create_bucket(BUCKET)?;
    let dir = tempfile::Builder::new().prefix("lectern-s3-test-").tempdir()?;
    let id = "20260105T101500Z-ab12";
    let spec = UploadSpec {
        recording_id: id.into(),
        title: "Thermodynamics 3".into(),
        started_at_ms: 1_767_607_700_000,
        media: file_ref(&dir.path().join(format!("{id}.mp4")), &media(media_bytes, 7))?,
        manifest: Some(file_ref(&dir.path().join(format!("{id}.manifest.json")), br#"{"recording":"20260105T101500Z-ab12","gaps":[]}"#)?),
        event: None,
    };
    Ok(Some(Fixture { moto, spec, _dir: dir }))
}

fn setup() -> Result<Option<Fixture>> {
    setup_with(Some(PART), MEDIA_BYTES)
}

fn options(endpoint: &str) -> S3Options {
    S3Options {
        endpoints: vec![endpoint.to_owned()],
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        access_key: "lectern".into(),
        secret_key: "secret".into(),
        prefix: "rooms/hs1/".into(),
        path_style: true,
        part_bytes: PART,
        timeouts: Timeouts { connect: Duration::from_secs(2), read: Duration::from_secs(10), request: Duration::from_secs(20), part: Duration::from_secs(60) },
        same_storage: false,
        verify_etag: true,
        ca_pem: None,
    }
}

fn target(f: &Fixture) -> S3Target {
    S3Target::with_min_part_bytes(options(&f.moto.endpoint()), PART).expect("valid options")
}

/// What a [`drive`] did.
#[derive(Debug)]
struct Run {
    /// Every progress the steps returned, in order.
    progress: Vec<Value>,
    /// `remote_ref` when it ended Done.
    done: Option<String>,
    error: Option<UploadError>,
    /// Bytes put on the wire.
    sent: u64,
}

impl Run {
    fn last(&self) -> Value {
        self.progress.last().cloned().unwrap_or(Value::Null)
    }
}

/// Steps from `progress` until Done, an error, or `limit` steps.
fn drive(t: &mut S3Target, spec: &UploadSpec, mut progress: Value, limit: usize) -> Run {
    let io = StepIo::unthrottled();
    let mut run = Run { progress: Vec::new(), done: None, error: None, sent: 0 };
    for _ in 0..limit {
        match t.step(0, spec, &progress, &io) {
            Ok(Step::Progress { progress: p, sent, .. }) => {
                run.sent += sent;
                run.progress.push(p.clone());
                progress = p;
            }
            Ok(Step::Done { progress: p, remote_ref, sent }) => {
                run.sent += sent;
                run.progress.push(p);
                run.done = Some(remote_ref);
                break;
            }
            Err(e) => {
                run.sent += e.sent;
                run.error = Some(e);
                break;
            }
        }
    }
    run
}

fn to_end(t: &mut S3Target, spec: &UploadSpec, progress: Value) -> Result<Run> {
    let run = drive(t, spec, progress, 1000);
    if let Some(e) = &run.error {
        bail!("upload failed: {e} ({:?})", e.class);
    }
    Ok(run)
}

fn etags(progress: &Value) -> Vec<String> {
    match serde_json::from_value(progress.clone()) {
        Ok(Progress::Upload { etags, .. }) => etags,
        _ => Vec::new(),
    }
}

/// The MP4 and the manifest are on the server, byte for byte, with our SHA-256; no multipart
/// upload of the key is left.
fn check_arrived(f: &Fixture, key: &str) -> Result<()> {
    let obj = f.moto.get_object(BUCKET, key)?.context("the MP4 is not on the server")?;
    assert!(obj.body == std::fs::read(&f.spec.media.path)?, "the MP4 on the server differs from the file");
    assert_eq!(obj.header("x-amz-meta-sha256"), Some(f.spec.media.sha256.as_str()));
    assert_eq!(format!("{:x}", Sha256::digest(&obj.body)), f.spec.media.sha256);
    let manifest_key = key.replace(".mp4", ".manifest.json");
    let m = f.moto.get_object(BUCKET, &manifest_key)?.context("the manifest is not on the server")?;
    assert_eq!(m.body, std::fs::read(f.spec.manifest.as_ref().unwrap().path.as_path())?);
    assert!(!f.moto.multipart_uploads(BUCKET, key)?.iter().any(|(k, _)| k == key), "a multipart upload was left behind");
    Ok(())
}

fn parts_of(f: &Fixture) -> usize {
    f.spec.media.bytes.div_ceil(PART) as usize
}

#[test]
fn a_recording_uploads_in_parts_and_reads_back_identical() -> Result<()> {
    let Some(f) = setup()? else { return Ok(()) };
    let mut t = target(&f);
    t.health(0).map_err(|e| anyhow::anyhow!("health: {e}"))?;
    let run = to_end(&mut t, &f.spec, Value::Null)?;
    let key = run.done.clone().unwrap();
    assert_eq!(key, "rooms/hs1/20260105T101500Z-ab12/20260105T101500Z-ab12.mp4");
    check_arrived(&f, &key)?;
    // HeadObject, manifest, create, one step per part, complete.
    assert_eq!(run.progress.len(), 3 + parts_of(&f) + 1);
    assert_eq!(run.sent, f.spec.bytes_total(), "nothing is sent twice on a clean link");
    // Done is idempotent, and a new job for the same recording finds it there at once.
    let again = drive(&mut target(&f), &f.spec, Value::Null, 10);
    assert_eq!((again.done.as_deref(), again.sent, again.progress.len()), (Some(key.as_str()), 0, 1));
    Ok(())
}

#[test]
fn resume_after_a_crash_continues_from_list_parts_and_resends_nothing_confirmed() -> Result<()> {
    let Some(f) = setup()? else { return Ok(()) };
    // Null → Manifest → Create → Upload(0) → Upload(1) … : four parts on the server.
    let first = drive(&mut target(&f), &f.spec, Value::Null, 7);
    assert!(first.error.is_none() && first.done.is_none());
    assert_eq!(etags(&first.last()).len(), 4);
    // The crash also lost the journal's last commit: the progress says three parts, the server
    // confirmed four. A new target asks the server and sends part 5 next.
    let stale = first.progress[first.progress.len() - 2].clone();
    assert_eq!(etags(&stale).len(), 3);
    let mut t = target(&f);
    let rest = to_end(&mut t, &f.spec, stale)?;
    let media_sent = rest.sent;
    assert_eq!(media_sent, f.spec.media.bytes - 4 * PART, "only the parts the server did not confirm are sent");
    assert_eq!(etags(&rest.progress[0]).len(), 5, "the first step after the crash sends part 5");
    check_arrived(&f, rest.done.as_deref().unwrap())?;
    Ok(())
}

#[test]
fn a_lost_complete_reply_ends_done_without_a_second_upload() -> Result<()> {
    let Some(f) = setup()? else { return Ok(()) };
    let parts = parts_of(&f);
    let run = drive(&mut target(&f), &f.spec, Value::Null, 3 + parts);
    let before_complete = run.last();
    let Progress::Upload { upload_id, etags, .. } = serde_json::from_value(before_complete.clone())? else { bail!("not uploading: {before_complete}") };
    assert_eq!(etags.len(), parts);
    // The server completes the upload; the reply never reaches the box.
    let key = "rooms/hs1/20260105T101500Z-ab12/20260105T101500Z-ab12.mp4";
    let body: String = etags.iter().enumerate().map(|(n, e)| format!("<Part><PartNumber>{}</PartNumber><ETag>\"{e}\"</ETag></Part>", n + 1)).collect();
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = http
        .post(format!("{}/{BUCKET}/{key}?uploadId={upload_id}", f.moto.endpoint()))
        .header("authorization", lectern_moto::ANY_SIGNATURE)
        .send(format!("<CompleteMultipartUpload>{body}</CompleteMultipartUpload>"))?;
    assert_eq!(r.status(), 200);
    // After a reboot the runner replays the pre-complete progress with a new target.
    let resumed = drive(&mut target(&f), &f.spec, before_complete, 10);
    assert_eq!((resumed.done.as_deref(), resumed.sent, resumed.progress.len()), (Some(key), 0, 1), "{:?}", resumed.error);
    check_arrived(&f, key)?;
    Ok(())
}

#[test]
fn a_server_restart_that_loses_the_upload_restarts_it_cleanly() -> Result<()> {
    let Some(mut f) = setup()? else { return Ok(()) };
    let mut t = target(&f);
    let first = drive(&mut t, &f.spec, Value::Null, 6);
    assert_eq!(etags(&first.last()).len(), 3);
    f.moto.restart()?;
    // The runner retries a transient error with the same progress; the target then asks the
    // server (ListParts), which no longer knows the upload. (moto answers the UploadPart that
    // follows the restart with 500 instead of S3's 404 NoSuchUpload, hence the retry.)
    let mut classes = Vec::new();
    for _ in 0..2 {
        let e = drive(&mut t, &f.spec, first.last(), 1).error.context("a step after the restart succeeded")?;
        classes.push(e.class.clone());
        if e.class == Class::Restart {
            break;
        }
    }
    assert_eq!(classes.last(), Some(&Class::Restart), "{classes:?}");
    // The runner starts again from empty progress on the same endpoint.
    let again = to_end(&mut t, &f.spec, Value::Null)?;
    assert_eq!(again.sent, f.spec.bytes_total());
    check_arrived(&f, again.done.as_deref().unwrap())?;
    Ok(())
}

#[test]
fn stale_uploads_of_the_key_are_aborted_and_others_kept() -> Result<()> {
    let Some(f) = setup()? else { return Ok(()) };
    let key = "rooms/hs1/20260105T101500Z-ab12/20260105T101500Z-ab12.mp4";
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for k in [key, key, &format!("{key}.other")] {
        let r = http.post(format!("{}/{BUCKET}/{k}?uploads", f.moto.endpoint())).header("authorization", lectern_moto::ANY_SIGNATURE).send_empty()?;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(f.moto.multipart_uploads(BUCKET, key)?.len(), 3);
    let run = to_end(&mut target(&f), &f.spec, Value::Null)?;
    let left = f.moto.multipart_uploads(BUCKET, key)?;
    assert_eq!(left.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec![format!("{key}.other").as_str()]);
    check_arrived(&f, run.done.as_deref().unwrap())?;
    Ok(())
}

#[test]
fn abandon_aborts_our_upload_and_reports_a_finished_one() -> Result<()> {
    let Some(f) = setup()? else { return Ok(()) };
    let key = "rooms/hs1/20260105T101500Z-ab12/20260105T101500Z-ab12.mp4";
    let mut t = target(&f);
    let run = drive(&mut t, &f.spec, Value::Null, 5);
    assert_eq!(f.moto.multipart_uploads(BUCKET, key)?.len(), 1);
    assert_eq!(t.abandon(0, &f.spec, &run.last()).map_err(|e| anyhow::anyhow!("{e}"))?, None);
    assert_eq!(f.moto.multipart_uploads(BUCKET, key)?, vec![]);
    assert_eq!(f.moto.get_object(BUCKET, &key.replace(".mp4", ".manifest.json"))?, None, "the manifest alone stays behind");
    let done = to_end(&mut t, &f.spec, Value::Null)?;
    assert_eq!(t.abandon(0, &f.spec, &done.progress[done.progress.len() - 2]).map_err(|e| anyhow::anyhow!("{e}"))?, Some(key.to_owned()));
    Ok(())
}

#[test]
fn wrong_credentials_are_auth_and_right_ones_pass_motos_signature_check() -> Result<()> {
    let Some(mut f) = setup()? else { return Ok(()) };
    let (access_key, secret_key) = f.moto.enable_auth()?;
    let with = |access_key: &str, secret_key: &str| {
        let opts = S3Options { access_key: access_key.into(), secret_key: secret_key.into(), ..options(&f.moto.endpoint()) };
        S3Target::with_min_part_bytes(opts, PART).unwrap()
    };
    for (what, mut t) in [("wrong secret", with(&access_key, "not-the-secret")), ("unknown key", with("AKIANOTAKEY000000000", &secret_key))] {
        assert_eq!(t.health(0).unwrap_err().class, Class::Auth, "{what}: health");
        let run = drive(&mut t, &f.spec, Value::Null, 10);
        let e = run.error.context("a step succeeded")?;
        assert_eq!(e.class, Class::Auth, "{what}: {e}");
    }
    let mut t = with(&access_key, &secret_key);
    t.health(0).map_err(|e| anyhow::anyhow!("health with the right key: {e}"))?;
    let run = to_end(&mut t, &f.spec, Value::Null)?;
    assert!(run.done.is_some());
    Ok(())
}

#[test]
fn a_missing_bucket_is_refused() -> Result<()> {
    let Some(f) = setup()? else { return Ok(()) };
    let opts = S3Options { bucket: "no-such-bucket".into(), ..options(&f.moto.endpoint()) };
    let mut t = S3Target::with_min_part_bytes(opts, PART).unwrap();
    assert_eq!(t.health(0).unwrap_err().class, Class::Refused);
    let run = drive(&mut t, &f.spec, Value::Null, 10);
    let e = run.error.context("the upload went somewhere")?;
    assert_eq!(e.class, Class::Refused, "{e}");
    assert!(e.message.contains("NoSuchBucket"), "{e}");
    Ok(())
}

#[test]
fn a_dead_endpoint_is_transient() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let spec = UploadSpec {
        recording_id: "r".into(),
        title: "t".into(),
        started_at_ms: 0,
        media: file_ref(&dir.path().join("r.mp4"), b"x")?,
        manifest: None,
        event: None,
    };
    let mut t = S3Target::with_min_part_bytes(options(&format!("http://127.0.0.1:{port}")), PART).unwrap();
    assert!(matches!(t.health(0).unwrap_err().class, Class::Transient { .. }));
    let run = drive(&mut t, &spec, Value::Null, 1);
    assert!(matches!(run.error.unwrap().class, Class::Transient { .. }));
    Ok(())
}

#[test]
fn production_part_sizes_meet_s3s_rule_and_upload() -> Result<()> {
    assert!(S3Target::new(options("http://127.0.0.1:9")).is_err(), "256 KiB parts are refused outside tests");
    let Some(f) = setup_with(None, 4 * MIN_PART_BYTES + 777)? else { return Ok(()) };
    let opts = S3Options { part_bytes: MIN_PART_BYTES, ..options(&f.moto.endpoint()) };
    let mut t = S3Target::new(opts).unwrap();
    let start = Instant::now();
    let run = to_end(&mut t, &f.spec, Value::Null)?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("S3 upload to moto on loopback: {} bytes in 5 MiB parts, {secs:.2} s, {:.1} MB/s", f.spec.media.bytes, f.spec.media.bytes as f64 / secs / 1e6);
    check_arrived(&f, run.done.as_deref().unwrap())?;
    Ok(())
}

// A campus store behind an internal CA (the target's `ca_file`). The certificates are made the way
// firmware/opencast/tests/tls.rs makes them; the server is moto itself serving HTTPS
// (`moto_server --ssl-cert --ssl-key`, from lectern-moto's virtualenv), so the whole S3 exchange
// runs over the verified TLS connection.

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("openssl (apt: openssl)")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA named `name` (`{name}.pem`, `{name}.key`) and a certificate for 127.0.0.1 it signed
/// (`{name}-server.pem`, `{name}-server.key`).
fn make_ca(dir: &Path, name: &str) -> Result<()> {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-keyout", &key, "-out", &pem, "-subj", &format!("/CN=Lectern test {name}"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    let (spem, skey, csr) = (format!("{name}-server.pem"), format!("{name}-server.key"), format!("{name}-server.csr"));
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &skey, "-out", &csr, "-subj", "/CN=127.0.0.1"])?;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")?;
    openssl(dir, &["x509", "-req", "-in", &csr, "-CA", &pem, "-CAkey", &key, "-CAcreateserial", "-days", "2", "-out", &spem, "-extfile", "ext.cnf"])
}

/// moto serving HTTPS on a free loopback port with `{name}-server.pem`; killed when dropped.
struct TlsMoto {
    child: Child,
    port: u16,
}

impl Drop for TlsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsMoto {
    fn start(venv: &Path, dir: &Path, name: &str, ca: &[u8]) -> Result<TlsMoto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join("moto.log");
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(["--ssl-cert", &format!("{name}-server.pem"), "--ssl-key", &format!("{name}-server.key")])
            .env("S3_UPLOAD_PART_MIN_SIZE", PART.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("moto.err"))?)
            .spawn()
            .context("moto_server")?;
        let mut moto = TlsMoto { child, port };
        let s = Duration::from_secs(5);
        let http = lectern_opencast::client::agent(s, s, s, Some(ca));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http.get(format!("{}/moto-api/", moto.endpoint())).call().is_ok_and(|r| r.status().is_success()) {
            if let Some(st) = moto.child.try_wait()? {
                bail!("moto_server (HTTPS) exited ({st}): {}", std::fs::read_to_string(dir.join("moto.err")).unwrap_or_default());
            }
            if Instant::now() > deadline {
                bail!("moto_server (HTTPS) did not answer on {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// A certificate the box does not trust, as ureq and rustls name it.
fn is_certificate_error(message: &str) -> bool {
    message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer")
}

#[test]
fn a_store_behind_an_internal_ca_is_trusted_only_with_its_ca_file() -> Result<()> {
    let venv = lectern_moto::default_venv()?;
    if !lectern_moto::install(&venv)? {
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("lectern-s3-tls-").tempdir()?;
    make_ca(dir.path(), "campus")?;
    make_ca(dir.path(), "other")?;
    let campus = std::fs::read(dir.path().join("campus.pem"))?;
    let other = std::fs::read(dir.path().join("other.pem"))?;
    let moto = TlsMoto::start(&venv, dir.path(), "campus", &campus)?;
    let endpoint = moto.endpoint();
    let s = Duration::from_secs(10);
    let trusting = lectern_opencast::client::agent(s, s, s, Some(&campus));
    let r = trusting.put(format!("{endpoint}/{BUCKET}")).header("authorization", lectern_moto::ANY_SIGNATURE).send_empty()?;
    assert!(r.status().is_success(), "CreateBucket over HTTPS: {}", r.status());
    let id = "20260105T101500Z-ab12";
    let media_bytes = media(MEDIA_BYTES, 11);
    let spec = UploadSpec {
        recording_id: id.into(),
        title: "Thermodynamics 3".into(),
        started_at_ms: 1_767_607_700_000,
        media: file_ref(&dir.path().join(format!("{id}.mp4")), &media_bytes)?,
        manifest: Some(file_ref(&dir.path().join(format!("{id}.manifest.json")), br#"{"recording":"20260105T101500Z-ab12","gaps":[]}"#)?),
        event: None,
    };
    let with = |ca_pem: Option<Vec<u8>>| S3Target::with_min_part_bytes(S3Options { ca_pem, ..options(&endpoint) }, PART).expect("valid options");

    // The public roots (the default) and another CA: the handshake fails, nothing is sent.
    for (what, ca) in [("the public roots", None), ("another CA", Some(other))] {
        let mut t = with(ca);
        let e = t.health(0).expect_err(what);
        assert!(is_certificate_error(&e.message), "{what}: health: {e}");
        let run = drive(&mut t, &spec, Value::Null, 10);
        let e = run.error.with_context(|| format!("{what}: a step succeeded"))?;
        assert!(is_certificate_error(&e.message), "{what}: {e}");
        assert_eq!((run.sent, run.progress.len()), (0, 0), "{what}");
    }
    let key = format!("rooms/hs1/{id}/{id}.mp4");
    let get = |key: &str| trusting.get(format!("{endpoint}/{BUCKET}/{key}")).header("authorization", lectern_moto::ANY_SIGNATURE).call();
    assert_eq!(get(&key)?.status(), 404, "nothing reached the server");

    // The campus CA: the whole upload runs over the verified connection and reads back identical.
    let mut t = with(Some(campus.clone()));
    t.health(0).map_err(|e| anyhow::anyhow!("health with the campus CA: {e}"))?;
    let run = to_end(&mut t, &spec, Value::Null)?;
    assert_eq!(run.done.as_deref(), Some(key.as_str()));
    let mut obj = get(&key)?;
    assert_eq!(obj.status(), 200);
    assert!(obj.body_mut().with_config().limit(64 << 20).read_to_vec()? == media_bytes, "the MP4 on the server differs from the file");

    // The same through the config: the target's `ca_file` next to the config reaches the agents.
    let config = dir.path().join("lectern.toml");
    std::fs::write(
        &config,
        format!("[[upload.target]]\nkind = \"s3\"\nendpoints = [\"{endpoint}\"]\nbucket = \"{BUCKET}\"\naccess_key = \"k\"\nsecret_key = \"s\"\nca_file = \"campus.pem\"\n"),
    )?;
    let config = lectern_config::Config::load(&config)?;
    let mut t = lectern_upload::configured::make(&config.upload.targets[0], &config).context("the configured S3 target")?;
    t.health(0).map_err(|e| anyhow::anyhow!("health of the configured target: {e}"))?;
    Ok(())
}
