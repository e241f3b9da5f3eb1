//! A week of lectures on a card that holds two days, with the server reachable only at night
//! (issue 9 §4): the real journal on a real, small tmpfs, the real upload `Runner` with the
//! folder target, and an injected clock that drives simulated days.
//!
//! Everything is the daemon's defaults at 1:1000 scale: a lecture hour is 1.8 GB of 2 s segments
//! (here 30 segments of 64 KiB), its stitched MP4 as much again, the card 32 GB (32 MiB), the
//! storage guard's reserve `journal.min_free_mb = 256` (256 KiB) and the low water mark
//! `upload.evict_below_mb = 4096` (4 MiB). Four lectures a day fill 15 MiB, so the card holds
//! two days. The retention window is one day.
//!
//! A simulated day: each lecture is recorded through the journal's `PartWriter` (one keyframe
//! chunk per segment, the clock following the lecture), ended, stitched through its `StitchJob`
//! as the daemon's stitcher does (the stitched bytes are the segments concatenated; a write error
//! fails the stitch, as `lecternd/src/stitcher.rs` does) and queued for upload. Retention runs as
//! `lecternd`'s `maybe_evict` does: while idle after each lecture and through the night, and
//! during a recording only below the low water mark, 100 files a turn. The "server" is a
//! directory outside the tmpfs that exists only from 22:00 to 06:00; by day it is renamed away
//! and the folder target's steps fail. Sim time passes at night only while no upload step runs,
//! so how fast this machine copies does not decide how much a night uploads.
//!
//! Checked after every retention run: no recording whose upload is not `done` lost a segment
//! file or its stitched file (against the test's own list of files, not the journal's rows,
//! which eviction deletes), and none was evicted. Free space is read after every segment commit,
//! stitch and retention run.
//!
//! Needs root for `mount -t tmpfs`; without it the tests say so loudly and pass, except under
//! `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_journal::{
    sha256_file, statvfs_free, EvictReason, Journal, JournalError, JournalOptions, NewRecording, Outcome, PartEnd,
    PartWriter, RecordingKind, RetentionPolicy, StitchedInfo, UploadState, UploadStore,
};
use lectern_upload::folder::FolderTarget;
use lectern_upload::runner::{Clock, TargetFactory};
use lectern_upload::{enqueue, FileRef, RetryPolicy, Rng, Runner, RunnerConfig, Target, Throttle, UploadEvent, UploadSpec};
use serde_json::json;
use sha2::{Digest, Sha256};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const CARD_MIB: u64 = 32;
/// `journal.min_free_mb = 256` at 1:1000.
const RESERVE: u64 = 256 * KIB;
/// `upload.evict_below_mb = 4096` at 1:1000.
const LOW_WATER: u64 = 4 * MIB;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const WINDOW_MS: i64 = DAY_MS;
/// Monday 2026-01-05 00:00 UTC.
const MONDAY_MS: i64 = 1_767_571_200_000;
/// 348 TS packets: 64 KiB, give or take a packet.
const SEGMENT_PACKETS: usize = 348;
const SEGMENTS: usize = 30;
const SEGMENT_MEDIA_NS: u64 = 2_000_000_000;
const LECTURE_MS: i64 = HOUR_MS;
const SEGMENT_WALL_MS: i64 = LECTURE_MS / SEGMENTS as i64;
const LECTURE_HOURS: [i64; 4] = [8, 10, 13, 15];
const DUSK_H: i64 = 22;
const DAWN_H: i64 = 6;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The tmpfs standing for the SD card, unmounted (lazily) however the test ends.
struct Card {
    media: PathBuf,
    _dir: tempfile::TempDir,
}

impl Card {
    /// Mounts a `CARD_MIB` tmpfs in a temp dir; `None` (after saying so) when that is impossible
    /// outside CI.
    fn mount() -> Option<Card> {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("card");
        fs::create_dir(&media).unwrap();
        let size = format!("size={CARD_MIB}m");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(&media).status();
        if status.as_ref().is_ok_and(|s| s.success()) {
            return Some(Card { media, _dir: dir });
        }
        let why = format!("cannot mount a tmpfs on {} (needs root): {status:?}", media.display());
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}; CI must run this test as root");
        eprintln!("\n*** SKIPPED: {why} ***\n");
        None
    }

    /// The temp dir beside the card: outside the tmpfs.
    fn outside(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.media).status();
    }
}

/// The injected wall clock: the runner reads it, the test moves it.
#[derive(Clone)]
struct SimClock(Arc<AtomicI64>);

impl SimClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

/// One simulated day: how many lectures, and whether the server is reachable that night.
#[derive(Clone, Copy)]
struct Day {
    lectures: usize,
    server_at_night: bool,
}

/// What the test knows independently of the journal about one recording.
#[derive(Default)]
struct Truth {
    /// Every committed segment file and its size, as the lecture ended.
    segments: Vec<(PathBuf, u64)>,
    /// The stitched file and its size, once committed.
    stitched: Option<(PathBuf, u64)>,
    /// SHA-256 of the bytes the journal accepted, in order: the stitched file's content.
    sha256: String,
}

/// How one lecture went.
#[derive(Debug, Default, Clone, Copy)]
struct Lecture {
    /// Segments the journal accepted (of `SEGMENTS`).
    segments: usize,
    /// `open_part` attempts the storage guard refused.
    refused: usize,
    /// Parts the storage guard ended at a cut.
    cut: usize,
}

/// One row of the per-day table.
#[derive(Debug, Default, Clone)]
struct DayRow {
    name: &'static str,
    full: usize,
    partial: usize,
    refused: usize,
    stitch_failed: usize,
    min_free: u64,
    free_end_of_day: u64,
    free_after_night: u64,
    on_card: usize,
    uploaded: i64,
    evicted: usize,
}

/// What a week came to.
struct Week {
    days: Vec<DayRow>,
    lectures: BTreeMap<String, Lecture>,
    /// Stitches that failed for good, with the reason.
    stitch_failed: Vec<(String, String)>,
    /// Every eviction, in order: recording, reason, sim time.
    evictions: Vec<(String, EvictReason, i64)>,
    min_free: u64,
    /// Recordings whose upload never got done, with its state.
    not_uploaded: Vec<(String, Option<UploadState>)>,
}

struct World {
    // Dropped first: no worker touches the card or the database after this.
    runner: Option<Runner>,
    journal: Journal,
    store: UploadStore,
    clock: SimClock,
    /// `Instant` that sim time `MONDAY_MS` maps to (the writer's fsync timing).
    t0: Instant,
    policy: RetentionPolicy,
    rng: Rng,
    server: PathBuf,
    away: PathBuf,
    truth: BTreeMap<String, Truth>,
    lectures: BTreeMap<String, Lecture>,
    stitch_failed: Vec<(String, String)>,
    /// Stitches a full card delayed (not counted as attempts; done once space is free).
    stitch_delayed: usize,
    evictions: Vec<(String, EvictReason, i64)>,
    min_free: u64,
    day_min_free: u64,
    card: Card,
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One segment's worth of MPEG-TS-shaped bytes, distinct per recording and segment.
fn segment_bytes(recording: u64, seg: u64) -> Vec<u8> {
    let mut state = recording.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seg.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut out = Vec::with_capacity(SEGMENT_PACKETS * 188);
    for cc in 0..SEGMENT_PACKETS {
        out.extend_from_slice(&[0x47, if cc == 0 { 0x41 } else { 0x01 }, 0x00, 0x10 | (cc as u8 & 0x0f)]);
        for _ in 0..23 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (state ^ (state >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 29)).to_le_bytes());
        }
    }
    out
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

impl World {
    fn new(card: Card) -> World {
        let clock = SimClock(Arc::new(AtomicI64::new(MONDAY_MS)));
        let opts = JournalOptions { min_free_bytes: RESERVE, ..JournalOptions::default() };
        let (journal, _) = Journal::open(&card.media, opts, MONDAY_MS).unwrap();
        let server = card.outside().join("server");
        let away = card.outside().join("server.unplugged");
        fs::create_dir(&away).unwrap();
        let dirs = vec![server.display().to_string()];
        let factory: TargetFactory =
            Arc::new(move |name| (name == "server").then(|| Box::new(FolderTarget::with_piece(dirs.clone(), MIB)) as Box<dyn Target>));
        let cfg = RunnerConfig {
            workers: 1,
            // Sim time: a job that failed by day is due again within ten minutes of dusk.
            retry: RetryPolicy { initial: Duration::from_secs(30), max: Duration::from_secs(600) },
            failover_after: 3,
            failback_after: Duration::from_secs(3600),
            health_interval: Duration::from_secs(1),
            // Real time: how often an idle worker looks at the store (and the sim clock) again.
            poll: Duration::from_millis(5),
        };
        let runner_clock: Clock = {
            let c = clock.clone();
            Arc::new(move || c.now())
        };
        let events: Arc<dyn Fn(&UploadEvent) + Send + Sync> = Arc::new(|_: &UploadEvent| {});
        let runner = Runner::spawn(cfg, &journal.db_path(), &["server".into()], factory, runner_clock, Arc::new(Throttle::unlimited()), events).unwrap();
        let store = UploadStore::open(&journal.db_path()).unwrap();
        let free = statvfs_free(&card.media).unwrap().unwrap();
        World {
            runner: Some(runner),
            journal,
            store,
            clock,
            t0: Instant::now(),
            policy: RetentionPolicy { window_ms: WINDOW_MS, low_water_bytes: LOW_WATER },
            rng: Rng::new(9),
            server,
            away,
            truth: BTreeMap::new(),
            lectures: BTreeMap::new(),
            stitch_failed: Vec::new(),
            stitch_delayed: 0,
            evictions: Vec::new(),
            min_free: free,
            day_min_free: free,
            card,
        }
    }

    fn runner(&self) -> &Runner {
        self.runner.as_ref().expect("runs until the week is over")
    }

    fn free(&mut self) -> u64 {
        let free = statvfs_free(&self.card.media).unwrap().expect("tmpfs states its size");
        self.min_free = self.min_free.min(free);
        self.day_min_free = self.day_min_free.min(free);
        free
    }

    fn upload_state(&self, id: &str) -> Option<UploadState> {
        self.store.get(id).unwrap().map(|j| j.state)
    }

    /// One run of the retention policy at the current sim time, then the invariant.
    fn retention(&mut self, budget: usize, when: &str) {
        loop {
            let now = self.clock.now();
            let r = self.journal.enforce_retention_bounded(self.policy, now, budget).unwrap();
            self.evictions.extend(r.evicted.iter().map(|e| (e.recording_id.clone(), e.why, now)));
            self.check_nothing_unuploaded_lost(when);
            self.free();
            // Idle, the daemon comes straight back for an unfinished eviction; while recording it
            // waits for its next turn.
            if !r.unfinished || budget < 2000 {
                break;
            }
        }
    }

    /// Every recording whose upload is not `done` still has every file it had, and none was
    /// evicted.
    fn check_nothing_unuploaded_lost(&self, when: &str) {
        let at = self.clock.now();
        for (id, t) in &self.truth {
            let state = self.upload_state(id);
            if state == Some(UploadState::Done) {
                continue;
            }
            let rec = self.journal.recording(id).unwrap().unwrap();
            assert_eq!(rec.evicted_at_ms, None, "{when} (sim {at}): recording {id} was evicted with its upload {state:?}");
            let files = t.segments.iter().chain(t.stitched.as_ref());
            for (path, len) in files {
                let on_card = fs::metadata(path).map(|m| m.len());
                assert!(
                    on_card.as_ref().is_ok_and(|l| l == len),
                    "{when} (sim {at}): recording {id} (upload {state:?}) lost {}: {on_card:?}, expected {len} bytes",
                    path.display()
                );
            }
        }
    }

    /// `lecternd`'s `maybe_evict` during a recording: only below the low water mark, 100 files.
    fn retention_while_recording(&mut self) {
        if self.free() < LOW_WATER {
            self.retention(100, "during a recording");
        }
    }

    /// Records one lecture through the journal as the daemon's writer thread would, retrying a
    /// refused part at every segment slot (the capture back-off), and makes it final.
    fn lecture(&mut self, day: usize, slot: usize) -> Lecture {
        let start_ms = MONDAY_MS + day as i64 * DAY_MS + LECTURE_HOURS[slot] * HOUR_MS;
        let id = format!("{}-{:02}00", DAY_NAMES[day % 7].to_lowercase(), LECTURE_HOURS[slot]);
        let seed = (day * 10 + slot) as u64;
        self.clock.set(start_ms);
        let rec = NewRecording { id: id.clone(), title: format!("{} {}:00", DAY_NAMES[day % 7], LECTURE_HOURS[slot]), kind: RecordingKind::Scheduled, event_uid: Some(id.clone()) };
        self.journal.start_recording(&rec, start_ms).unwrap();
        let mut writer: Option<PartWriter> = None;
        let mut out = Lecture::default();
        let mut content = Sha256::new();
        for k in 0..SEGMENTS {
            let now_ms = start_ms + k as i64 * SEGMENT_WALL_MS;
            self.clock.set(now_ms);
            let now = self.t0 + Duration::from_millis((now_ms - MONDAY_MS) as u64);
            if writer.is_none() {
                match self.journal.open_part(&id, "x264enc", now_ms) {
                    Ok(w) => writer = Some(w),
                    Err(JournalError::StorageFull { .. }) => {
                        out.refused += 1;
                        self.retention_while_recording();
                        continue;
                    }
                    Err(e) => panic!("recording {id}: open part: {e}"),
                }
            }
            let chunk = segment_bytes(seed, k as u64);
            let w = writer.as_mut().expect("opened above");
            match w.push_data(&chunk, Some(k as u64 * SEGMENT_MEDIA_NS), true, now, now_ms) {
                Ok(committed) => {
                    content.update(&chunk);
                    out.segments += 1;
                    if committed.is_some() {
                        self.retention_while_recording();
                    }
                }
                Err(JournalError::StorageFull { .. }) => {
                    out.cut += 1;
                    writer.take().expect("open").finish(PartEnd::Interrupted("storage full".into()), now_ms).unwrap();
                }
                Err(e) => panic!("recording {id}: segment {k}: {e} (the card ran out under the journal)"),
            }
        }
        let end = start_ms + LECTURE_MS;
        self.clock.set(end);
        if let Some(w) = writer.take() {
            w.finish(PartEnd::Closed, end).unwrap();
        }
        self.free();
        self.journal.finish_recording(&id, Outcome::Completed, end).unwrap();
        let segments: Vec<(PathBuf, u64)> = self.journal.segments(&id).unwrap().into_iter().map(|s| (s.abs_path, s.bytes)).collect();
        assert_eq!(segments.len(), out.segments, "recording {id}: one segment per accepted chunk");
        if !segments.is_empty() {
            self.journal.request_stitch(&id, end).unwrap();
        }
        self.truth.insert(id.clone(), Truth { segments, stitched: None, sha256: hex(&content.finalize()) });
        self.lectures.insert(id, out);
        out
    }

    /// `lecternd`'s `maybe_stitch` and `stitcher.rs`: every pending stitch, the segments
    /// concatenated into the job's file. A card without room for the stitched file plus the
    /// reserve delays it (`StitchNeedsSpace`: the row stays pending, no attempt counted); a
    /// write that runs out of space postpones it the same way; any other write error fails it;
    /// a commit error leaves it pending. Then the upload job (`queue_upload`).
    fn stitch_pending(&mut self) {
        for id in self.journal.pending_stitches().unwrap() {
            let now = self.clock.now();
            let mut job = match self.journal.stitch_job(&id, now) {
                Ok(job) => job,
                Err(e @ lectern_journal::JournalError::StitchNeedsSpace { .. }) => {
                    eprintln!("{e}");
                    self.stitch_delayed += 1;
                    continue;
                }
                Err(e) => {
                    eprintln!("recording {id}: not stitched: {e}");
                    continue;
                }
            };
            let paths: Vec<PathBuf> = job.parts.iter().flat_map(|p| p.segments.iter().map(|s| s.abs_path.clone())).collect();
            let (mut hasher, mut bytes, mut error) = (Sha256::new(), 0u64, None);
            for p in &paths {
                match fs::read(p).and_then(|data| job.file().write_all(&data).map(|()| data)) {
                    Ok(data) => {
                        hasher.update(&data);
                        bytes += data.len() as u64;
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            self.free();
            match error {
                Some(e) if e.raw_os_error() == Some(libc_enospc()) => {
                    job.postpone(&format!("write stitched file: {e}")).unwrap();
                    self.stitch_delayed += 1;
                    continue;
                }
                Some(e) => {
                    let e = format!("write stitched file: {e}");
                    job.fail(&e, now).unwrap();
                    self.stitch_failed.push((id, e));
                    continue;
                }
                None => {}
            }
            let info = StitchedInfo {
                bytes,
                sha256: hex(&hasher.finalize()),
                duration_ns: paths.len() as u64 * SEGMENT_MEDIA_NS,
                video_frames: 0,
                audio_frames: 0,
                part_spans_ns: Vec::new(),
            };
            let row = match job.commit(&info, json!({ "agent": "week-test" }), now) {
                Ok(row) => row,
                Err(e) => {
                    eprintln!("recording {id}: stitch not committed: {e}");
                    continue;
                }
            };
            let media_dir = self.card.media.clone();
            let media = FileRef { path: media_dir.join(row.path.as_deref().unwrap()), bytes: row.bytes.unwrap(), sha256: row.sha256.clone().unwrap() };
            let truth = self.truth.get_mut(&id).unwrap();
            assert_eq!(media.sha256, truth.sha256, "recording {id}: stitched from exactly what the journal accepted");
            truth.stitched = Some((media.path.clone(), media.bytes));
            let manifest_path = media_dir.join(row.manifest_path.as_deref().unwrap());
            let manifest = FileRef { bytes: fs::metadata(&manifest_path).unwrap().len(), sha256: sha256_file(&manifest_path).unwrap(), path: manifest_path };
            let rec = self.journal.recording(&id).unwrap().unwrap();
            let spec = UploadSpec { recording_id: id, title: rec.title, started_at_ms: rec.started_at_ms, media, manifest: Some(manifest), event: None };
            enqueue(&mut self.store, "server", &spec, now, Duration::from_secs(300), &mut self.rng).unwrap();
            self.runner().wake();
        }
    }

    /// The daemon's idle turn: retention, the stitch it may now run, retention again.
    fn idle(&mut self, when: &str) {
        self.retention(2000, when);
        self.stitch_pending();
        self.retention(2000, when);
    }

    /// 22:00 to 06:00: the server is there (or not); uploads drain; retention runs after each
    /// finished upload and at both ends of the night.
    fn night(&mut self, day: usize, reachable: bool) {
        let dusk = MONDAY_MS + day as i64 * DAY_MS + DUSK_H * HOUR_MS;
        let dawn = MONDAY_MS + (day + 1) as i64 * DAY_MS + DAWN_H * HOUR_MS;
        self.clock.set(dusk);
        self.idle("at dusk");
        if reachable {
            fs::rename(&self.away, &self.server).unwrap();
        }
        let mut done = self.store.counts().unwrap().done;
        let real = Instant::now();
        while self.clock.now() < dawn {
            let busy = !self.runner().view().live.is_empty();
            // Sim time stands still while a step runs: a night is long enough for these uploads
            // however slowly this machine copies.
            if !busy {
                self.clock.set(self.clock.now() + if reachable { MINUTE_MS } else { HOUR_MS });
                self.runner().wake();
            }
            std::thread::sleep(Duration::from_millis(2));
            let c = self.store.counts().unwrap();
            if c.done != done {
                done = c.done;
                self.retention(2000, "after an upload");
            }
            if !reachable {
                self.retention(2000, "at night, server unreachable");
            } else if c.queued + c.active == 0 && !busy {
                break;
            }
            assert!(real.elapsed() < Duration::from_secs(120), "a night took more than two real minutes: {c:?}");
        }
        self.clock.set(dawn);
        self.idle("at dawn");
        if reachable {
            let real = Instant::now();
            while !self.runner().view().live.is_empty() && real.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(2));
            }
            fs::rename(&self.server, &self.away).unwrap();
        }
    }

    fn on_card(&self) -> usize {
        self.journal.recordings().unwrap().iter().filter(|r| r.segments > 0 && r.evicted_at_ms.is_none()).count()
    }

    fn run(mut self, days: &[Day]) -> Week {
        let mut rows = Vec::new();
        for (d, day) in days.iter().enumerate() {
            self.day_min_free = self.free();
            let failed_before = self.stitch_failed.len();
            let mut row = DayRow { name: DAY_NAMES[d % 7], ..DayRow::default() };
            for slot in 0..day.lectures {
                let l = self.lecture(d, slot);
                match (l.segments, l.refused + l.cut) {
                    (SEGMENTS, 0) => row.full += 1,
                    (0, _) => row.refused += 1,
                    _ => row.partial += 1,
                }
                self.idle("after a lecture");
            }
            row.free_end_of_day = self.free();
            self.night(d, day.server_at_night);
            row.stitch_failed = self.stitch_failed.len() - failed_before;
            row.min_free = self.day_min_free;
            row.free_after_night = self.free();
            row.on_card = self.on_card();
            row.uploaded = self.store.counts().unwrap().done;
            row.evicted = self.evictions.len();
            rows.push(row);
        }
        // The destination is checked with the server plugged in.
        fs::rename(&self.away, &self.server).unwrap();
        let not_uploaded = self
            .truth
            .keys()
            .filter(|id| !self.truth[*id].segments.is_empty())
            .map(|id| (id.clone(), self.upload_state(id)))
            .filter(|(_, s)| *s != Some(UploadState::Done))
            .collect();
        for (id, t) in &self.truth {
            if self.upload_state(id) != Some(UploadState::Done) {
                continue;
            }
            let dest = self.server.join(id).join(format!("{id}.mp4"));
            let got = sha256_file(&dest).unwrap_or_else(|e| panic!("recording {id}: uploaded, but {}: {e}", dest.display()));
            assert_eq!(got, t.sha256, "recording {id}: the server's copy differs from what was recorded");
            assert!(self.server.join(id).join(format!("{id}.manifest.json")).is_file(), "recording {id}: manifest missing at the server");
        }
        self.runner.take().expect("running").shutdown(Duration::from_secs(10));
        Week {
            days: rows,
            lectures: std::mem::take(&mut self.lectures),
            stitch_failed: std::mem::take(&mut self.stitch_failed),
            evictions: std::mem::take(&mut self.evictions),
            min_free: self.min_free,
            not_uploaded,
        }
    }
}

impl Week {
    fn print(&self, title: &str) {
        let mut t = format!("\n{title}\n");
        t += "day | full | partial | refused | stitch failed | min free MB | free MB end of day | free MB after night | on card | uploaded | evicted\n";
        for r in &self.days {
            let _ = writeln!(
                t,
                "{:3} | {:4} | {:7} | {:7} | {:13} | {:11.2} | {:18.2} | {:19.2} | {:7} | {:8} | {:7}",
                r.name,
                r.full,
                r.partial,
                r.refused,
                r.stitch_failed,
                mib(r.min_free),
                mib(r.free_end_of_day),
                mib(r.free_after_night),
                r.on_card,
                r.uploaded,
                r.evicted
            );
        }
        let _ = writeln!(t, "lowest free space all week: {:.2} MB (reserve {:.2} MB, low water {:.2} MB)", mib(self.min_free), mib(RESERVE), mib(LOW_WATER));
        for (id, why, at) in &self.evictions {
            let _ = writeln!(t, "evicted {id} ({}) on {} at {:02}:{:02}", why.as_str(), DAY_NAMES[((at - MONDAY_MS) / DAY_MS) as usize % 7], (at % DAY_MS) / HOUR_MS, (at % HOUR_MS) / MINUTE_MS);
        }
        for (id, e) in &self.stitch_failed {
            let _ = writeln!(t, "stitch failed for good: {id}: {e}");
        }
        eprintln!("{t}");
    }
}

fn weekdays(server_at_night: impl Fn(usize) -> bool) -> Vec<Day> {
    (0..5).map(|d| Day { lectures: LECTURE_HOURS.len(), server_at_night: server_at_night(d) }).collect()
}

#[test]
fn a_week_of_lectures_on_a_two_day_card_with_the_server_reachable_only_at_night() {
    let Some(card) = Card::mount() else { return };
    let started = Instant::now();
    let week = World::new(card).run(&weekdays(|_| true));
    week.print(&format!("a week, server every night ({:.1} s)", started.elapsed().as_secs_f64()));

    // Every lecture recorded in full: the storage guard never refused a part.
    assert_eq!(week.lectures.len(), 5 * LECTURE_HOURS.len());
    for (id, l) in &week.lectures {
        assert_eq!((l.segments, l.refused, l.cut), (SEGMENTS, 0, 0), "recording {id} was not recorded in full");
    }
    assert!(week.stitch_failed.is_empty(), "{:?}", week.stitch_failed);
    // Every recording uploaded (and, checked in `run`, byte-identical at the server).
    assert_eq!(week.not_uploaded, [], "recordings never uploaded");
    assert!(week.min_free >= RESERVE, "free space fell to {} bytes, under the {RESERVE} byte reserve", week.min_free);
    // The card really held only two days: the low water mark had to evict inside the window.
    assert!(week.evictions.iter().any(|e| e.1 == EvictReason::StorageLow), "the card never ran low: is it too big? {:?}", week.evictions);
    assert!(week.evictions.iter().any(|e| e.1 == EvictReason::RetentionWindow), "{:?}", week.evictions);
}

/// Monday to Wednesday night the server is gone; it is back on Thursday night.
fn three_nights_without_the_server() -> Option<Week> {
    let card = Card::mount()?;
    let started = Instant::now();
    let week = World::new(card).run(&weekdays(|d| d >= 3));
    week.print(&format!("a week, server gone for three nights ({:.1} s)", started.elapsed().as_secs_f64()));
    Some(week)
}

#[test]
fn three_nights_without_the_server_fill_the_card_and_recording_resumes_once_uploads_drain() {
    let Some(week) = three_nights_without_the_server() else { return };
    let server_back = MONDAY_MS + 3 * DAY_MS + DUSK_H * HOUR_MS;
    let by_day = |d: &str| week.lectures.iter().filter(move |(id, _)| id.starts_with(d)).map(|(_, l)| *l).collect::<Vec<_>>();
    // Two days fit without a single upload.
    for l in by_day("mon").into_iter().chain(by_day("tue")) {
        assert_eq!((l.segments, l.refused, l.cut), (SEGMENTS, 0, 0), "Monday and Tuesday fit on the card");
    }
    // Then the storage guard refuses, as it did before uploads existed, and nothing is evicted
    // to make room: nothing on the card is uploaded.
    let wed = by_day("wed");
    assert!(wed.iter().all(|l| l.refused > 0 || l.cut > 0), "Wednesday's lectures are refused (or cut at the reserve): {wed:?}");
    assert!(by_day("thu").iter().all(|l| l.segments == 0 && l.refused == SEGMENTS), "Thursday, the card is still full");
    assert!(week.evictions.iter().all(|e| e.2 >= server_back), "evicted before anything was uploaded: {:?}", week.evictions);
    // The server returns, the backlog drains, eviction makes room, and Friday is recorded in full.
    assert!(week.evictions.iter().any(|e| e.1 == EvictReason::StorageLow), "{:?}", week.evictions);
    for l in by_day("fri") {
        assert_eq!((l.segments, l.refused, l.cut), (SEGMENTS, 0, 0), "Friday is recorded in full again");
    }
    // Every recording that was stitched is at the server, byte-identical (checked in `run`);
    // the regression test below pins that none is missing.
    let failed: Vec<&String> = week.stitch_failed.iter().map(|(id, _)| id).collect();
    let missing: Vec<&String> = week.not_uploaded.iter().map(|(id, _)| id).collect();
    assert_eq!(missing, failed, "recordings never uploaded other than those whose stitch failed");
}

/// The bug this pins (found by this test): on a full card the stitch of the lecture that the
/// storage guard cut wrote a lecture's worth of bytes with no regard for the reserve, ran into
/// ENOSPC (taking free space to zero on the way), and `lecternd`'s stitcher failed the stitch
/// for good, so no upload job was ever queued: the lecture never reached the server, and, never
/// uploaded, its segments were never evicted either. Now a stitch waits until its file fits
/// above the reserve (`Journal::stitch_job` → `StitchNeedsSpace`) and ENOSPC postpones it.
#[test]
fn regression_a_stitch_on_a_full_card_fails_for_good_and_its_lecture_never_reaches_the_server() {
    let Some(week) = three_nights_without_the_server() else { return };
    assert_eq!(week.stitch_failed, [], "a full card must delay a stitch, not fail it");
    assert_eq!(week.not_uploaded, [], "every recorded lecture reaches the server once it is back");
    // The bug took the card to 0 bytes free (ENOSPC). At this 1:1000 scale the 256 KiB reserve
    // is smaller than what legitimately reaches past it (the segment open when free space
    // crossed it, and SQLite's WAL of up to 1,000 512-byte pages between checkpoints), so the
    // check is that the card never ran out, not that the reserve held to the byte.
    assert!(week.min_free > 0, "free space fell to {} bytes: the card ran out", week.min_free);
}

/// `ENOSPC` on Linux (every target the box runs on); the test crate links no `libc`.
fn libc_enospc() -> i32 {
    28
}
