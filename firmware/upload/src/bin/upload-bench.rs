//! `upload-bench`: one recording through the real upload room, as a process of its own, for
//! `cargo xtask bench-upload` (docs/benchmarks.md, "Uploads over a flaky link (issue 9)").
//!
//! It reads a lecternd config file (so chunk size, retry policy and bandwidth caps are the
//! production ones unless the file says otherwise), makes the one `[[upload.target]]` it names
//! the way lecternd's `uploads.rs` does, opens a journal in `--db-dir`, enqueues the file with no
//! start delay, and runs the real [`Runner`] until the job is done, parked or `--timeout-s` has
//! passed. It then prints one JSON object on stdout: the outcome, the job's byte counters, the
//! seconds from enqueue to the `Done` event (for Opencast: the acknowledged ingest), the retried
//! failures, and the process's peak resident memory (`VmHWM`): the upload room's memory, since
//! nothing else runs in this process. No logger is installed: errors show in the JSON.
//!
//! ```text
//! upload-bench --config lectern.toml --db-dir DIR --media FILE --sha256 HEX [--manifest FILE]
//!              [--id RECORDING_ID] [--timeout-s N]
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern_config::Config;
use lectern_journal::{Journal, JournalOptions, UploadState, UploadStore};
use lectern_upload::runner::{Clock, TargetFactory};
use lectern_upload::{enqueue, FileRef, Rng, Runner, UploadEvent, UploadSpec};
use serde_json::json;

type Error = Box<dyn std::error::Error>;

struct Args {
    config: PathBuf,
    db_dir: PathBuf,
    media: PathBuf,
    sha256: String,
    manifest: Option<PathBuf>,
    id: String,
    timeout: Duration,
}

fn parse_args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let (mut config, mut db_dir, mut media, mut sha256, mut manifest) = (None, None, None, None, None);
    let (mut id, mut timeout) = ("bench-upload".to_owned(), Duration::from_secs(3600));
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--db-dir" => db_dir = Some(PathBuf::from(value()?)),
            "--media" => media = Some(PathBuf::from(value()?)),
            "--sha256" => sha256 = Some(value()?),
            "--manifest" => manifest = Some(PathBuf::from(value()?)),
            "--id" => id = value()?,
            "--timeout-s" => timeout = Duration::from_secs(value()?.parse().map_err(|e| format!("--timeout-s: {e}"))?),
            other => return Err(format!("unknown flag {other} (see the module doc of upload-bench.rs)").into()),
        }
    }
    let need = |v: Option<PathBuf>, f: &str| v.ok_or_else(|| format!("{f} is required"));
    Ok(Args {
        config: need(config, "--config")?,
        db_dir: need(db_dir, "--db-dir")?,
        media: need(media, "--media")?,
        sha256: sha256.ok_or("--sha256 is required")?,
        manifest,
        id,
        timeout,
    })
}

/// The config's first upload target, made as lecternd makes it (`lectern_upload::configured`).
fn make_target(config: &Config) -> Result<(String, TargetFactory), Error> {
    let t = config.upload.targets.first().ok_or("the config has no [[upload.target]]")?;
    Ok((t.name.clone(), lectern_upload::configured::factory(config)))
}

fn file_ref(path: PathBuf, sha256: String) -> Result<FileRef, Error> {
    let bytes = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    Ok(FileRef { path, bytes, sha256 })
}

/// `VmHWM` and `VmRSS` of this process, KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let u = &config.upload;
    let (target, factory) = make_target(&config)?;
    std::fs::create_dir_all(&args.db_dir)?;
    let (journal, _) = Journal::open(&args.db_dir, JournalOptions::default(), 0).map_err(|e| e.to_string())?;
    let db = journal.db_path();
    drop(journal);

    let manifest = match &args.manifest {
        Some(p) => {
            let bytes = std::fs::read(p)?;
            let sha = sha2_hex(&bytes);
            Some(FileRef { path: p.clone(), bytes: bytes.len() as u64, sha256: sha })
        }
        None => None,
    };
    let spec = UploadSpec {
        recording_id: args.id.clone(),
        title: format!("upload bench {}", args.id),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        media: file_ref(args.media.clone(), args.sha256.clone())?,
        manifest,
        event: None,
    };

    let epoch = Instant::now();
    let clock: Clock = Arc::new(|| chrono::Utc::now().timestamp_millis());
    let failures = Arc::new(AtomicU64::new(0));
    let first_byte = Arc::new(Mutex::new(None::<f64>));
    let done_at = Arc::new(Mutex::new(None::<f64>));
    let events = {
        let (failures, first_byte, done_at) = (failures.clone(), first_byte.clone(), done_at.clone());
        Arc::new(move |e: &UploadEvent| match e {
            UploadEvent::Started { .. } => *first_byte.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch.elapsed().as_secs_f64()),
            UploadEvent::Done { .. } | UploadEvent::Parked { .. } => *done_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch.elapsed().as_secs_f64()),
            UploadEvent::Failed { .. } => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut store = UploadStore::open(&db).map_err(|e| e.to_string())?;
    enqueue(&mut store, &target, &spec, clock(), Duration::ZERO, &mut Rng::from_entropy()).map_err(|e| e.to_string())?;
    let cfg = lectern_upload::configured::runner_config(u);
    let throttle = lectern_upload::configured::throttle(u);
    let runner = Runner::spawn(cfg, &db, std::slice::from_ref(&target), factory, clock, throttle, events)?;
    runner.wake();

    let deadline = epoch + args.timeout;
    let row = loop {
        let row = store.get(&args.id).map_err(|e| e.to_string())?.ok_or("the job vanished")?;
        if matches!(row.state, UploadState::Done | UploadState::Parked) || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = epoch.elapsed().as_secs_f64();
    runner.shutdown(Duration::from_secs(5));
    let (hwm, rss) = memory_kib();
    let outcome = match row.state {
        UploadState::Done => "done",
        UploadState::Parked => "parked",
        _ => "timeout",
    };
    let done_s = *done_at.lock().unwrap_or_else(|p| p.into_inner());
    let first_byte_s = *first_byte.lock().unwrap_or_else(|p| p.into_inner());
    let out = json!({
        "outcome": outcome,
        "target": target,
        "seconds": done_s.unwrap_or(wall),
        "first_byte_s": first_byte_s,
        "bytes_total": row.bytes_total,
        "bytes_confirmed": row.bytes_confirmed,
        "bytes_sent": row.bytes_sent,
        "failures": failures.load(Ordering::Relaxed),
        "last_error": row.last_error,
        "remote_ref": row.remote_ref,
        "chunk_bytes": u.chunk_bytes,
        "retry_initial_ms": u.retry_initial.as_millis() as u64,
        "retry_max_ms": u.retry_max.as_millis() as u64,
        "rate_limit": u.rate_limit,
        "vm_hwm_kib": hwm,
        "vm_rss_kib": rss,
    });
    println!("{out}");
    if outcome == "done" {
        Ok(())
    } else {
        Err(format!("upload {outcome}: {}", row.last_error.unwrap_or_default()).into())
    }
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
