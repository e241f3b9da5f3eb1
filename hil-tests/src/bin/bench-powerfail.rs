//! Benchmark: power-fail edge → everything durable, on the sim board; with `--upload`, the same
//! while an upload runs at full speed (issue 9 §1).
//!
//! ```sh
//! target/release/bench-powerfail [TRIALS]                      # the recording alone (issue 4)
//! target/release/bench-powerfail --upload [--gib N] [--out DIR] [--only a,b,c] [TRIALS]
//! ```
//!
//! Each trial lets a recording run for a random 0.5–2.5 s into a part (so the open segment holds
//! a varying amount of data), asserts the sim power-fail line, and reads the daemon's own
//! measurement: from the instant its power-fail monitor saw the edge to the instant the open
//! segment was fsynced, its directory fsynced and the journal row committed. Then it clears the
//! line and waits for the recording to resume as a new part. Prints a table of percentiles.
//!
//! `--upload` runs the same trials (same seed, so the same run lengths) four times, each on a
//! fresh daemon: (a) no upload, (b) an upload to a folder target under the default recording
//! cap (`recording_rate_limit_kbps = 8000`), (c) the same upload with no cap at all, (d) the
//! upload under the default cap to the Opencast double over loopback (chunked upload service;
//! the double keeps what it receives on tmpfs, as a server keeps it on its own disk): the
//! common case, where only the job store's commits and the source's reads touch the card. The folder
//! target lives in the daemon's own directory, on the same filesystem as the media directory:
//! the worst case for the card, since the upload's reads and the destination's writes and
//! fsyncs compete with the recording's fsyncs. The uploaded file is real data (a seeded
//! pseudo-random stream, never a sparse file) of `--gib` GiB (default 2), created once beside
//! the binaries and reused; the bench queues enough upload jobs of it (one a recording id, all
//! the same file) that the upload outlasts the trials, checks that a job is still running at
//! the end, and deletes each copy from the folder once it is complete (at a trial boundary, so
//! the disk holds at most about two copies). The upload rate is what reached the folder
//! (partial files included) between the first and the last trial, all of it while recording.
//! Frames: each part's capture counters, read just before its edge (a power cut leaves no
//! counters behind in `status`), summed over the trials. Per-trial samples go to
//! `DIR/samples.csv` (default: `lectern-bench-powerfail` in the temp directory), never the tree.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lectern_control::Request;
use lectern_hil_tests::{bin_dir, wait_until, Daemon};
use lectern_journal::UploadStore;
use lectern_opencast_double::{Config as DoubleConfig, Double};
use lectern_upload::{enqueue, FileRef, Rng, UploadSpec};
use sha2::{Digest, Sha256};

/// The capture every trial records: 720p30 x264 (the daemon's defaults otherwise).
const CAPTURE: &str = "[capture]\nwidth = 1280\nheight = 720\n[power]\nhold_ms = 200\n";

/// The folder target's name in the daemon's config.
const TARGET: &str = "nas";

/// The Opencast double's account.
const OC_USER: &str = "opencast_system_account";
const OC_PASSWORD: &str = "bench";

/// What one set of trials measured.
#[derive(Default)]
struct Trials {
    /// Edge → durable, ms, in trial order.
    flush_ms: Vec<f64>,
    /// Where each went (`power.last_flush_split_ms`: main loop, writer lock, fsync).
    split_ms: Vec<[f64; 3]>,
    frames_in: u64,
    frames_expected: u64,
    frames_dropped: u64,
}

impl Trials {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.flush_ms.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    fn pct(&self, p: f64) -> f64 {
        let s = self.sorted();
        s[((s.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// Runs `n` power-fail trials on a recording daemon; `between` runs after each trial's
/// measurement, while the power-fail line is still asserted (the recording is not capturing).
fn run_trials(d: &Daemon, n: usize, mut between: impl FnMut() -> Result<()>) -> Result<Trials> {
    // A small deterministic generator: the bench must be repeatable, not random.
    let mut seed: u64 = 0x5eed;
    let mut t = Trials::default();
    for i in 0..n {
        wait_until("recording", Duration::from_secs(20), || d.status()["state"] == "recording")?;
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let run_ms = 500 + (seed >> 33) % 2000;
        // The first trial waits for the pipeline's first segment too.
        std::thread::sleep(Duration::from_millis(run_ms + if i == 0 { 1500 } else { 800 }));
        let before = d.status();
        let capture = &before["capture"];
        let count = |k: &str| capture[k].as_u64().unwrap_or(0);
        t.frames_in += count("frames_in");
        t.frames_expected += count("frames_expected");
        t.frames_dropped += count("frames_dropped");
        d.cli(&["sim", "powerfail", "on"])?;
        wait_until("power_lost", Duration::from_secs(10), || d.status()["state"] == "power_lost")?;
        let st = d.status();
        let ms = st["power"]["last_flush_ms"].as_f64().ok_or_else(|| anyhow::anyhow!("no measurement: {st}"))?;
        ensure!(st["power"]["last_flush_ms"] != before["power"]["last_flush_ms"] || i == 0, "measurement did not change");
        t.flush_ms.push(ms);
        let split = &st["power"]["last_flush_split_ms"];
        t.split_ms.push(["main_loop", "writer", "fsync"].map(|k| split[k].as_f64().unwrap_or(f64::NAN)));
        between()?;
        d.cli(&["sim", "powerfail", "off"])?;
    }
    Ok(t)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let flag = |args: &mut Vec<String>, name: &str| -> Option<String> {
        let i = args.iter().position(|a| a == name)?;
        args.remove(i);
        (i < args.len()).then(|| args.remove(i))
    };
    let upload = args.iter().position(|a| a == "--upload").map(|i| args.remove(i)).is_some();
    let gib: u64 = flag(&mut args, "--gib").map(|g| g.parse()).transpose()?.unwrap_or(2);
    let out = flag(&mut args, "--out").map_or_else(|| std::env::temp_dir().join("lectern-bench-powerfail"), PathBuf::from);
    let only: Vec<String> = flag(&mut args, "--only").map(|o| o.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let trials: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(50);
    if upload {
        return bench_upload(trials, gib, &out, &only);
    }
    let mut d = Daemon::start(CAPTURE)?;
    d.ctl(Request::RecordStart { title: Some("power-fail bench".into()) })?;
    let t = run_trials(&d, trials, || Ok(()))?;
    d.ctl(Request::RecordStop)?;
    let rec = &d.ctl(Request::Recordings)?["recordings"][0];
    d.terminate()?;
    let s = t.sorted();
    println!("power-fail edge -> durable, sim board, 1280x720@30 x264, {trials} trials");
    println!("| min | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!("| {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |", s[0], t.pct(0.5), t.pct(0.9), t.pct(0.99), s[s.len() - 1]);
    println!("recording: {} parts, {} segments, all committed", rec["parts"], rec["segments"]);
    Ok(())
}

/// One configuration of `--upload`.
struct Setup {
    name: &'static str,
    /// `None`: no upload at all; `Some(kbps)`: `recording_rate_limit_kbps` (0 = no cap).
    cap_kbps: Option<u64>,
    /// Upload to the Opencast double over loopback instead of the folder on the card.
    opencast: bool,
}

/// Where the upload lands: the folder on the card, or the Opencast double (its storage on
/// tmpfs, as a server on another machine's disk would be).
enum Dest {
    Folder(PathBuf),
    /// The double and its storage (removed after it).
    Opencast { double: Double, _storage: tempfile::TempDir },
}

impl Dest {
    /// Bytes that reached the destination so far (partial files and chunks included).
    fn landed(&self) -> u64 {
        match self {
            Dest::Folder(dir) => landed(dir),
            Dest::Opencast { double, .. } => double.snapshot().chunk_bytes().1,
        }
    }
}

/// What one configuration measured.
struct Outcome {
    name: &'static str,
    cap_kbps: Option<u64>,
    trials: Trials,
    /// Bytes that reached the folder between the first and the last trial, and the seconds.
    uploaded: u64,
    secs: f64,
    /// Copies finished during the trials, and whether a job was still running at the end.
    finished: u64,
    running_at_end: bool,
}

fn bench_upload(trials: usize, gib: u64, out: &Path, only: &[String]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let source = source_file(gib)?;
    let setups = [
        Setup { name: "(a) no upload", cap_kbps: None, opencast: false },
        Setup { name: "(b) upload, recording cap 8000 kbit/s (default)", cap_kbps: Some(8000), opencast: false },
        Setup { name: "(c) upload, no cap", cap_kbps: Some(0), opencast: false },
        Setup { name: "(d) upload to Opencast over loopback, default cap", cap_kbps: Some(8000), opencast: true },
    ];
    let mut outcomes = Vec::new();
    for s in setups.iter().filter(|s| only.is_empty() || only.iter().any(|o| s.name.starts_with(&format!("({o})")))) {
        eprintln!("{}: {trials} trials", s.name);
        outcomes.push(run_setup(s, trials, &source)?);
    }
    let mut csv = std::fs::File::create(out.join("samples.csv"))?;
    writeln!(csv, "configuration,trial,edge_to_durable_ms,main_loop_ms,writer_ms,fsync_ms")?;
    for o in &outcomes {
        for (i, (ms, [a, b, c])) in o.trials.flush_ms.iter().zip(&o.trials.split_ms).enumerate() {
            writeln!(csv, "\"{}\",{i},{ms:.3},{a:.3},{b:.3},{c:.3}", o.name)?;
        }
    }
    println!("power-fail edge -> durable while uploading, sim board, 1280x720@30 x264, {trials} trials each;");
    println!("folder target on the media directory's filesystem; upload source {gib} GiB of real data");
    println!();
    println!("| configuration | p50 | p90 | p99 | max | frames in (expected) | frames dropped | upload rate while recording | cap |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let s = o.trials.sorted();
        let (rate, cap) = match o.cap_kbps {
            None => ("n/a".to_owned(), "n/a".to_owned()),
            Some(kbps) => (
                format!(
                    "{:.2} MB/s ({} MB in {:.0} s; {} cop{} finished, {})",
                    o.uploaded as f64 / o.secs / 1e6,
                    o.uploaded / 1_000_000,
                    o.secs,
                    o.finished,
                    if o.finished == 1 { "y" } else { "ies" },
                    if o.running_at_end { "still running at the end" } else { "NOT running at the end" },
                ),
                if kbps == 0 { "none".to_owned() } else { format!("{:.2} MB/s", kbps as f64 * 1000.0 / 8.0 / 1e6) },
            ),
        };
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} ({}) | {} | {rate} | {cap} |",
            o.name,
            o.trials.pct(0.5),
            o.trials.pct(0.9),
            o.trials.pct(0.99),
            s[s.len() - 1],
            o.trials.frames_in,
            o.trials.frames_expected,
            o.trials.frames_dropped,
        );
    }
    println!();
    for o in &outcomes {
        let slow: Vec<String> = (o.trials.flush_ms.iter().zip(&o.trials.split_ms))
            .filter(|(ms, _)| **ms > 10.0)
            .map(|(ms, [a, b, c])| format!("{ms:.1} ({a:.1}/{b:.1}/{c:.1})"))
            .collect();
        println!("{}: {} trials over 10 ms (main loop / writer lock / fsync, ms): {}", o.name, slow.len(), slow.join(", "));
    }
    println!();
    println!("samples: {}", out.join("samples.csv").display());
    Ok(())
}

fn run_setup(s: &Setup, trials: usize, source: &FileRef) -> Result<Outcome> {
    // The daemon's directory holds both the media directory and the folder target.
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("media"))?;
    let (dest, target) = if s.opencast {
        let shm = tempfile::Builder::new().prefix("lectern-bench-oc-").tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?;
        let mut cfg = DoubleConfig::digest(OC_USER, OC_PASSWORD);
        cfg.dir = Some(shm.path().to_owned());
        (Dest::Opencast { double: Double::start(cfg)?, _storage: shm }, "opencast")
    } else {
        let dest = dir.path().join(TARGET);
        std::fs::create_dir_all(&dest)?;
        ensure!(std::fs::metadata(&dest)?.dev() == std::fs::metadata(dir.path().join("media"))?.dev(), "the folder target must share the media's filesystem");
        (Dest::Folder(dest), TARGET)
    };
    let extra = match (s.cap_kbps, &dest) {
        (None, _) => CAPTURE.to_owned(),
        (Some(kbps), Dest::Folder(dest)) => format!(
            "{CAPTURE}[upload]\nstart_delay_max_s = 0\nrate_limit_kbps = 0\nrecording_rate_limit_kbps = {kbps}\n\
             [[upload.target]]\nname = \"{TARGET}\"\nkind = \"folder\"\ndirs = [\"{}\"]\n",
            dest.display()
        ),
        (Some(kbps), Dest::Opencast { double, .. }) => format!(
            "{CAPTURE}[opencast]\nurl = \"{}\"\nusername = \"{OC_USER}\"\npassword = \"{OC_PASSWORD}\"\nauth = \"digest\"\n\
             [upload]\nstart_delay_max_s = 0\nrate_limit_kbps = 0\nrecording_rate_limit_kbps = {kbps}\n",
            double.url()
        ),
    };
    let mut d = Daemon::start_in(dir, &extra)?;
    d.ctl(Request::RecordStart { title: Some("interference bench".into()) })?;
    if s.cap_kbps.is_some() {
        // The journal created its database at start-up; the jobs go into it now and the runner
        // finds them at its next look at the store (within its 5 s poll).
        let mut store = UploadStore::open(&d.media().join("lectern.db"))?;
        let now = chrono::Utc::now().timestamp_millis();
        for k in 0..64 {
            let spec = UploadSpec {
                recording_id: format!("bench-upload-{k:03}"),
                title: "interference bench upload".into(),
                started_at_ms: now,
                media: source.clone(),
                manifest: None,
                event: None,
            };
            enqueue(&mut store, target, &spec, now + k, Duration::ZERO, &mut Rng::new(1))?;
        }
        wait_until("the upload to start", Duration::from_secs(30), || dest.landed() > 0)?;
    }
    let mut removed = 0u64;
    let mut finished = 0u64;
    let start = (Instant::now(), dest.landed());
    let t = run_trials(&d, trials, || {
        // A complete copy (its final name exists) leaves the folder, so the disk holds at most
        // the one being written and one finished.
        if let Dest::Folder(dest) = &dest {
            for (path, bytes) in complete_copies(dest) {
                std::fs::remove_dir_all(&path).with_context(|| path.display().to_string())?;
                removed += bytes;
                finished += 1;
            }
        }
        Ok(())
    })?;
    let secs = start.0.elapsed().as_secs_f64();
    let uploaded = (dest.landed() + removed).saturating_sub(start.1);
    let running_at_end = d.status()["uploads"]["running"].as_array().is_some_and(|r| !r.is_empty());
    if s.cap_kbps.is_some() && !running_at_end {
        eprintln!("{}: no upload was running at the end (all jobs done?): the rate undercounts", s.name);
    }
    d.ctl(Request::RecordStop)?;
    d.terminate()?;
    if let Dest::Folder(dest) = &dest {
        finished += complete_copies(dest).len() as u64;
    }
    Ok(Outcome { name: s.name, cap_kbps: s.cap_kbps, trials: t, uploaded, secs, finished, running_at_end })
}

/// Bytes in the folder target now, partial files included.
fn landed(dest: &Path) -> u64 {
    let Ok(dirs) = std::fs::read_dir(dest) else { return 0 };
    dirs.flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flatten()
        .flatten()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The recordings' directories in the folder whose copy is complete, with its size.
fn complete_copies(dest: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(dirs) = std::fs::read_dir(dest) else { return Vec::new() };
    dirs.flatten()
        .filter_map(|d| {
            let done = d.path().join(format!("{}.mp4", d.file_name().to_string_lossy()));
            Some((d.path(), std::fs::metadata(done).ok()?.len()))
        })
        .collect()
}

/// The upload's source: `gib` GiB of seeded pseudo-random bytes beside the binaries, made once
/// (a few seconds a GiB) and reused while its size and recorded SHA-256 are there.
fn source_file(gib: u64) -> Result<FileRef> {
    let path = bin_dir().join(format!("bench-upload-{gib}GiB.bin"));
    let sha_path = path.with_extension("sha256");
    let bytes = gib << 30;
    if let (Ok(m), Ok(sha256)) = (std::fs::metadata(&path), std::fs::read_to_string(&sha_path)) {
        if m.len() == bytes && m.blocks() * 512 >= bytes {
            return Ok(FileRef { path, bytes, sha256: sha256.trim().to_owned() });
        }
    }
    eprintln!("writing {} ({gib} GiB of pseudo-random data, once)", path.display());
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut h = Sha256::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(bytes >> 20) {
        for w in buf.chunks_exact_mut(8) {
            // xorshift64*: incompressible, and cheap enough to write a GiB in a few seconds.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        h.update(&buf);
        f.write_all(&buf)?;
    }
    f.into_inner()?.sync_all()?;
    let sha256: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&sha_path, &sha256)?;
    Ok(FileRef { path, bytes, sha256 })
}
