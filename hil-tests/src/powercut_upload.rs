//! Power cuts while an upload is in flight (issue 9 §1): the real `lecternd` on the sim board,
//! its media directory on cutfs, records one short ad-hoc lecture, stitches it and uploads it
//! through the upload room's Opencast target to the Opencast double over loopback; the harness
//! SIGKILLs the daemon and cuts cutfs at seeded random instants of the upload, checks what
//! survived against what the server holds, and reboots the daemon on it. The double is not on
//! cutfs: it is the server, and keeps everything it confirmed.
//!
//! Cuts come in three kinds ([`CutKind`]): `random` (a seeded instant after the reboot), and two
//! forced ones for windows a random instant almost never hits: `server-ahead` (the double has
//! appended a chunk and holds its reply, so the journal is one chunk behind the server when the
//! power goes: the target must ask the job where it is rather than guess) and `ingest-held` (the
//! double has taken the ingest and holds its reply: the lookup after the reboot must find it
//! rather than ingest again). A last reboot after the upload is done must send nothing again.
//!
//! Invariants after every cut, before the reboot: the database opens and passes
//! `PRAGMA integrity_check`; every segment is still committed with its length and checksum;
//! the stitch row is `done` and the stitched file has its SHA-256; the journal is never ahead of
//! the server and at most one step behind it (its committed chunk position is the server's, or
//! one less; a journal that says uploaded or done names what the server has).
//! After every reboot, once the upload moved on: it continued from the server's position — no
//! new upload job and no new media package unless the journal had none when the power went
//! (the cut landed before the first chunk's job was committed), and no chunk refused as "wrong
//! chunk number" (the daemon asked, it did not guess).
//! At the end: the job is `done` with every byte confirmed; the server has exactly one ingest
//! for the recording, of one media package whose one ingested track has the stitched file's
//! bytes and SHA-256 (no gap, in order) and whose manifest attachment is there once; bytes sent
//! again are at most one chunk per cut, by the server's count (bytes received minus accepted)
//! and by the journal's (`bytes_sent − bytes_total`); the journal invariants hold.
//!
//! What the counts cannot see: the part of a chunk that was on the wire when the daemon died.
//! The double counts a chunk's bytes only once its body arrived whole, and the journal counts
//! a step's bytes when the step ends; the lost part is at most the one chunk in flight (one
//! upload at a time, one chunk per request), so the bound above is stated for what the server
//! got twice, and the chunk in flight comes on top (docs/powercut-harness.md).
//!
//! A violation is a [`Violation`] naming the cut and the seed (`LECTERN_POWERCUT_SEED` replays
//! the instants; the daemon's own timing still varies).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lectern_control::Request;
use lectern_opencast_double::state::UploadJob;
use lectern_opencast_double::{Config as DoubleConfig, Double, Faults, Snapshot};
use serde_json::Value;

use crate::powercut::{check_committed, check_nothing_open, open_ro, tail, violation, Rng, Violation};
use crate::{segments, sha256_file, wait_until, Daemon, SMALL};

const USER: &str = "opencast_system_account";
const PASSWORD: &str = "CHANGE_ME";
/// How long the double holds a reply it has already committed, for the forced cuts (the harness
/// kills the daemon inside this window).
const HOLD: Duration = Duration::from_secs(5);

/// Harness-side faults for the self-test: what a broken upload store would leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HarnessFault {
    /// After every cut that finds a chunk confirmed, the job's progress is wiped from the
    /// journal before the reboot (a store that did not persist it): the upload starts over.
    ForgetProgress,
}

/// How a run is shaped; [`UploadOptions::new`] gives the defaults for `cuts` random cuts.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Random cuts during the upload.
    pub cuts: usize,
    pub seed: u64,
    /// How long the lecture records (its size sets how long the upload lasts).
    pub record: Duration,
    /// `capture.video_bitrate_kbps` of the lecture (`video_pattern = "snow"`, so the encoder
    /// spends all of it).
    pub video_kbps: u32,
    /// `upload.chunk_mb`.
    pub chunk_mb: u64,
    /// `upload.rate_limit_kbps`: the upload's pace, so that it lasts long enough to be cut.
    pub rate_kbps: u64,
    /// Each random cut comes this long after the (re)start of the upload: uniformly in range.
    pub cut_after: (Duration, Duration),
    /// Which random cut (1-based) is replaced by a `server-ahead` cut; `None`: none.
    pub server_ahead_at: Option<usize>,
    /// End with an `ingest-held` cut.
    pub ingest_cut: bool,
    pub fault: Option<HarnessFault>,
}

impl UploadOptions {
    pub fn new(cuts: usize, seed: u64) -> UploadOptions {
        UploadOptions {
            cuts,
            seed,
            // About 1.5 MB a second: a chunk and a half of upload per cut, so the upload
            // outlasts the cuts.
            record: Duration::from_secs((cuts as u64 * 3 / 2).max(6)),
            video_kbps: 12_000,
            chunk_mb: 1,
            rate_kbps: 4_000,
            cut_after: (Duration::from_millis(300), Duration::from_millis(3_000)),
            server_ahead_at: Some(1 + (seed % cuts.max(1) as u64) as usize),
            ingest_cut: true,
            fault: None,
        }
    }
}

/// The kind of a cut; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutKind {
    Random,
    ServerAhead,
    IngestHeld,
}

/// One cut as it happened.
#[derive(Clone, Debug)]
pub struct UploadCut {
    pub kind: CutKind,
    /// The journal's upload phase when the power went (`none`: no job row yet; `queued`: no
    /// progress; else the target's phase, e.g. `chunks`; `done`).
    pub phase: String,
    /// Chunks the server had accepted on the journal's job (or the newest job) at the cut.
    pub server_chunks: u64,
    /// Chunks the journal had committed as confirmed (its `next`), in phase `chunks`.
    pub journal_chunks: Option<u64>,
    /// Bytes the server received again (received − accepted) between this cut and the next
    /// (or the end): what this cut made the daemon send twice, complete chunks only.
    pub resent_server: u64,
    /// What cutfs dropped at this cut.
    pub dropped_bytes: u64,
}

impl UploadCut {
    /// The cut landed while the server was a chunk ahead of the journal.
    pub fn server_ahead(&self) -> bool {
        self.journal_chunks.is_some_and(|j| self.server_chunks > j)
    }
}

/// The outcome of a run without violations.
#[derive(Debug)]
pub struct UploadReport {
    pub seed: u64,
    pub cuts: Vec<UploadCut>,
    pub elapsed: Duration,
    /// The stitched file and the chunk size.
    pub file_bytes: u64,
    pub chunk_bytes: u64,
    /// Server: chunk bytes received minus accepted over every job of the recording.
    pub resent_server: u64,
    /// Journal: `bytes_sent − bytes_total` of the job.
    pub resent_journal: u64,
    /// Upload jobs and media package creations the server saw for the recording.
    pub upload_jobs: usize,
    pub creations: u32,
    /// From the end of the stitch to the job done, reboots included.
    pub upload_time: Duration,
}

/// The journal's upload row as the harness reads it.
#[derive(Debug, Clone, Default)]
struct Row {
    state: String,
    progress: Value,
    bytes_total: u64,
    bytes_confirmed: u64,
    bytes_sent: u64,
}

impl Row {
    fn phase(&self) -> String {
        match self.progress["phase"].as_str() {
            _ if self.state == "done" => "done".into(),
            Some(p) => p.into(),
            None => self.state.clone(),
        }
    }

    fn job(&self) -> Option<&str> {
        self.progress["job"].as_str()
    }

    /// Before the journal knew an upload job: a reboot may start one (and the media package).
    fn before_job(&self) -> bool {
        matches!(self.phase().as_str(), "none" | "queued" | "active" | "package")
    }
}

fn upload_row(db: &rusqlite::Connection, id: &str) -> Result<Option<Row>> {
    use rusqlite::OptionalExtension;
    Ok(db
        .query_row("SELECT state, progress, bytes_total, bytes_confirmed, bytes_sent FROM uploads WHERE recording_id = ?1", [id], |r| {
            let progress: Option<String> = r.get(1)?;
            Ok(Row {
                state: r.get(0)?,
                progress: progress.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(Value::Null),
                bytes_total: r.get::<_, i64>(2)? as u64,
                bytes_confirmed: r.get::<_, i64>(3)? as u64,
                bytes_sent: r.get::<_, i64>(4)? as u64,
            })
        })
        .optional()?)
}

/// The row, or an empty one in phase `none` while the table or the row does not exist.
fn row_now(media: &Path, id: &str) -> Row {
    open_ro(media).ok().and_then(|db| upload_row(&db, id).ok().flatten()).unwrap_or_else(|| Row { state: "none".into(), ..Row::default() })
}

/// What the server holds for the recording's media package.
struct Server<'a> {
    snap: &'a Snapshot,
    mp_id: &'a str,
}

impl Server<'_> {
    fn jobs(&self) -> impl Iterator<Item = &UploadJob> {
        self.snap.upload_jobs.iter().filter(|j| j.mediapackage_id.as_deref() == Some(self.mp_id))
    }

    /// Chunks accepted on `job`, or on the newest job of the package.
    fn chunks(&self, job: Option<&str>) -> u64 {
        let j = match job {
            Some(id) => self.jobs().find(|j| j.id == id),
            None => self.jobs().last(),
        };
        j.map_or(0, |j| (j.current_chunk + 1).max(0) as u64)
    }

    fn complete(&self) -> bool {
        self.jobs().any(|j| j.state == "COMPLETE")
    }

    fn ingested(&self) -> bool {
        self.snap.mediapackages.iter().any(|m| m.id == self.mp_id && m.ingested.is_some())
    }

    fn creations(&self) -> u32 {
        self.snap.mediapackages.iter().filter(|m| m.id == self.mp_id).map(|m| m.creations).sum()
    }

    /// (received, accepted) chunk bytes over the package's jobs.
    fn bytes(&self) -> (u64, u64) {
        self.jobs().fold((0, 0), |(r, a), j| (r + j.bytes_received, a + j.current_size))
    }

    fn wrong_chunk_refusals(&self) -> usize {
        self.jobs().flat_map(|j| j.refusals.iter()).filter(|r| r.starts_with("Wrong chunk number")).count()
    }

    /// Ingest requests, whatever the answer (a second ingest of the package is refused, and is
    /// a duplicate all the same). A held reply is logged once it is written, after [`HOLD`].
    fn ingests(&self) -> usize {
        self.snap.requests.iter().filter(|r| r.method == "POST" && r.target.starts_with("/ingest/ingest")).count()
    }
}

/// Runs the scenario. `Err` is either a [`Violation`] (downcast to tell) or a failure to run.
pub fn run(opts: &UploadOptions) -> Result<UploadReport> {
    let started = Instant::now();
    let mut rng = Rng(opts.seed);
    let double = Double::start(DoubleConfig::digest(USER, PASSWORD))?;
    // The card is dropped after the mount (declared first, dropped last), as in `powercut::run`.
    let card = tempfile::tempdir()?;
    let media = card.path().join("card");
    std::fs::create_dir(&media)?;
    let mut fs = lectern_cutfs::CutFs::mount(&media)?;
    let dir = tempfile::tempdir()?;
    let extra = format!(
        "{SMALL}video_pattern = \"snow\"\nvideo_bitrate_kbps = {}\n\
         [journal]\nmedia_dir = \"{}\"\n\
         [agent]\nname = \"room-powercut\"\n\
         [opencast]\nurl = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nauth = \"digest\"\ncalendar_poll_s = 60\n\
         [upload]\nstart_delay_max_s = 0\nretry_initial_s = 1\nretry_max_s = 2\nchunk_mb = {}\nrate_limit_kbps = {}\n",
        opts.video_kbps,
        media.display(),
        double.url(),
        opts.chunk_mb,
        opts.rate_kbps
    );
    let mut d = Daemon::start_in(dir, &extra)?;
    let id = d.ctl(Request::RecordStart { title: Some("power-cut upload".into()) })?["recording"]["id"]
        .as_str()
        .context("record start returned no id")?
        .to_owned();
    let mp_id = format!("lectern-adhoc-{id}");
    std::thread::sleep(opts.record);
    d.ctl(Request::RecordStop)?;
    wait_until("the stitched file", Duration::from_secs(120), || open_ro(&media).is_ok_and(|db| stitched(&db, &id).is_ok_and(|s| s.is_some())))
        .with_context(|| tail(&d.log_text(), 30))?;
    let (file, file_sha) = stitched(&open_ro(&media)?, &id)?.context("stitch row")?;
    let file_bytes = std::fs::metadata(&file)?.len();
    let stitch_done = Instant::now();
    let chunk_bytes = opts.chunk_mb << 20;
    eprintln!("powercut-upload: stitched {} bytes ({} chunks of {chunk_bytes})", file_bytes, file_bytes.div_ceil(chunk_bytes));

    let ctx = Ctx { double: &double, media: &media, id: &id, mp_id: &mp_id, file_sha: &file_sha, file_bytes, seed: opts.seed };
    let mut cuts = Vec::new();
    let mut marks = Vec::new();
    let total = opts.cuts + usize::from(opts.ingest_cut);
    for n in 1..=total {
        let kind = match n {
            n if n > opts.cuts => CutKind::IngestHeld,
            n if Some(n) == opts.server_ahead_at => CutKind::ServerAhead,
            _ => CutKind::Random,
        };
        let err = |e: anyhow::Error| e.context(format!("cut {n} of {total} ({kind:?}; replay: LECTERN_POWERCUT_SEED={})", opts.seed));
        let (cut, mark) = one_cut(&mut d, &mut fs, &ctx, kind, opts, &mut rng).map_err(err)?;
        cuts.push(cut);
        marks.push(mark);
    }
    wait_until("the upload to finish", Duration::from_secs(180), || row_now(&media, &id).state == "done")
        .map_err(|e| violation(format!("{e}: {}", ctx.diag(&d))))?;
    let upload_time = stitch_done.elapsed();
    // Per cut, what the server got twice until the next cut (or now).
    let end = Server { snap: &double.snapshot(), mp_id: &mp_id }.bytes();
    for (i, cut) in cuts.iter_mut().enumerate() {
        let next = marks.get(i + 1).copied().unwrap_or(end);
        cut.resent_server = (next.0 - next.1).saturating_sub(marks[i].0 - marks[i].1);
    }
    // A reboot after the upload is done sends nothing again. The wait also lets a held reply
    // of the last forced cut be written, so the double's request log has it.
    d.kill()?;
    fs.cut()?;
    d.restart()?;
    std::thread::sleep(HOLD + Duration::from_secs(1));
    let _ = d.terminate();
    let report = check_end(&ctx, &cuts, file_bytes, chunk_bytes)?;
    fs.unmount()?;
    Ok(UploadReport { seed: opts.seed, cuts, elapsed: started.elapsed(), file_bytes, chunk_bytes, upload_time, ..report })
}

/// The run's fixed facts, for the checks.
struct Ctx<'a> {
    double: &'a Double,
    media: &'a Path,
    id: &'a str,
    mp_id: &'a str,
    file_sha: &'a str,
    file_bytes: u64,
    seed: u64,
}

impl Ctx<'_> {
    fn server<'s>(&'s self, snap: &'s Snapshot) -> Server<'s> {
        Server { snap, mp_id: self.mp_id }
    }

    /// The job row, the server's last requests and the daemon's log tail, for a timeout.
    fn diag(&self, d: &Daemon) -> String {
        let snap = self.double.snapshot();
        let requests: Vec<String> = snap.requests.iter().rev().take(12).rev().map(|r| format!("{} {} -> {} {:?} {:?}", r.method, r.target, r.status, r.fault, r.error)).collect();
        format!("job {:?}
server's last requests:
{}
daemon log tail:
{}", row_now(self.media, self.id), requests.join("\n"), tail(&d.log_text(), 30))
    }
}

/// The stitched file and its SHA-256 once the stitch row is `done`.
fn stitched(db: &rusqlite::Connection, id: &str) -> Result<Option<(PathBuf, String)>> {
    use rusqlite::OptionalExtension;
    let row: Option<(String, Option<String>, Option<String>)> =
        db.query_row("SELECT state, path, sha256 FROM stitches WHERE recording_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    Ok(match row {
        Some((state, Some(path), Some(sha))) if state == "done" => Some((db.path().map(Path::new).and_then(Path::parent).context("db path")?.join(path), sha)),
        _ => None,
    })
}

/// One cycle: wait for the instant, kill, cut, check against the server, reboot, check that the
/// upload continued from the server's position. Returns the cut and the server's (received,
/// accepted) chunk bytes at it.
fn one_cut(d: &mut Daemon, fs: &mut lectern_cutfs::CutFs, ctx: &Ctx<'_>, kind: CutKind, opts: &UploadOptions, rng: &mut Rng) -> Result<(UploadCut, (u64, u64))> {
    let media = ctx.media;
    match kind {
        CutKind::Random => std::thread::sleep(rng.between(opts.cut_after)),
        CutKind::ServerAhead => {
            // Wait for a job, then hold the replies of the next chunk: the double appends it and
            // the daemon waits for the answer, so the journal is one chunk behind the server.
            wait_until("an upload job", Duration::from_secs(60), || row_now(media, ctx.id).job().is_some()).with_context(|| ctx.diag(d))?;
            ctx.double.set_faults(Faults { delay: HOLD, only_path_prefix: Some("/upload/job/".into()), ..Faults::default() });
            // Twice, 200 ms apart, with nothing moved: a reply held for 5 s, not the
            // milliseconds between an unheld reply and its commit.
            let ahead = || {
                let row = row_now(media, ctx.id);
                let snap = ctx.double.snapshot();
                let (next, on_server) = (row.progress["next"].as_u64()?, ctx.server(&snap).chunks(row.job()));
                (on_server > next).then_some((next, on_server))
            };
            wait_until("the server a chunk ahead of the journal", Duration::from_secs(30), || {
                ahead().is_some_and(|a| {
                    std::thread::sleep(Duration::from_millis(200));
                    ahead() == Some(a)
                })
            })
            .with_context(|| ctx.diag(d))?;
        }
        CutKind::IngestHeld => {
            ctx.double.set_faults(Faults { delay: HOLD, only_path_prefix: Some("/ingest/ingest".into()), ..Faults::default() });
            wait_until("the ingest taken and its answer held", Duration::from_secs(120), || {
                let snap = ctx.double.snapshot();
                ctx.server(&snap).ingested() && row_now(media, ctx.id).state != "done"
            })
            .with_context(|| ctx.diag(d))?;
        }
    }
    d.kill()?;
    // The server's view at the cut (its held replies never arrive: the daemon is dead).
    let at_cut = ctx.double.snapshot();
    ctx.double.set_faults(Faults::default());
    let stats = fs.cut()?;
    let row = {
        let db = open_ro(media)?;
        let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(violation(format!("integrity_check after the cut: {check}")));
        }
        // The recording ended before the upload: every segment was committed before the cut.
        let segs: Vec<_> = segments(&db, media, ctx.id)?.into_iter().filter(|s| s.state == "committed").collect();
        check_committed(&db, media, ctx.id, &segs)?;
        match stitched(&db, ctx.id)? {
            Some((file, sha)) if sha == ctx.file_sha && sha256_file(&file)? == sha => {}
            other => return Err(violation(format!("the stitched file did not survive the cut intact: {other:?}"))),
        }
        upload_row(&db, ctx.id)?.unwrap_or_else(|| Row { state: "none".into(), ..Row::default() })
    };
    let server = ctx.server(&at_cut);
    let server_chunks = server.chunks(row.job());
    let journal_chunks = check_against_server(&row, &server, ctx.file_bytes)?;
    let cut = UploadCut { kind, phase: row.phase(), server_chunks, journal_chunks, resent_server: 0, dropped_bytes: stats.last_cut_dropped_bytes };
    if opts.fault == Some(HarnessFault::ForgetProgress) && server_chunks > 0 {
        let db = rusqlite::Connection::open(media.join("lectern.db"))?;
        db.execute("UPDATE uploads SET progress = NULL, bytes_confirmed = 0, state = 'queued' WHERE recording_id = ?1", [ctx.id])?;
    }
    d.restart()?;
    check_continued(d, ctx, &row, &at_cut)?;
    Ok((cut, server.bytes()))
}

/// The journal is never ahead of the server and at most one step behind it. Returns the
/// journal's committed chunk position in phase `chunks`.
fn check_against_server(row: &Row, server: &Server<'_>, file_bytes: u64) -> Result<Option<u64>> {
    let phase = row.phase();
    match phase.as_str() {
        "chunks" => {
            let job = row.job().unwrap_or_default();
            if !server.jobs().any(|j| j.id == job) {
                return Err(violation(format!("the journal names upload job {job}, which the server never created")));
            }
            let next = row.progress["next"].as_u64().context("chunks progress without next")?;
            let on_server = server.chunks(Some(job));
            if next > on_server {
                return Err(violation(format!("the journal says {next} chunks are confirmed, the server holds {on_server}: progress was committed before the server confirmed it")));
            }
            if on_server - next > 1 {
                return Err(violation(format!("the server holds {on_server} chunks, the journal only {next}: more than the one step in flight was lost")));
            }
            let accepted = server.jobs().find(|j| j.id == job).map_or(0, |j| j.current_size);
            // The job's total is the file and the manifest; the manifest went up with the package.
            let media_confirmed = row.bytes_confirmed.saturating_sub(row.bytes_total.saturating_sub(file_bytes));
            if media_confirmed > accepted {
                return Err(violation(format!("the journal counts {media_confirmed} media bytes confirmed, the server accepted {accepted}")));
            }
            Ok(Some(next))
        }
        "uploaded" | "ingesting" if !server.complete() => Err(violation(format!("the journal says {phase}, but no upload job of the package is complete on the server"))),
        "ingested" | "done" if !server.ingested() => Err(violation(format!("the journal says {phase}, but the server has no ingest of the package"))),
        _ => Ok(None),
    }
}

/// After the reboot the upload moves on from the server's position: waits until the server
/// accepted a chunk, took the ingest or the job is done, then checks how it got there.
fn check_continued(d: &Daemon, ctx: &Ctx<'_>, row: &Row, at_cut: &Snapshot) -> Result<()> {
    let before = ctx.server(at_cut);
    let (accepted0, ingested0) = (before.bytes().1, before.ingested());
    wait_until("the upload to continue after the reboot", Duration::from_secs(60), || {
        let snap = ctx.double.snapshot();
        let s = ctx.server(&snap);
        s.bytes().1 > accepted0 || s.ingested() != ingested0 || matches!(row_now(ctx.media, ctx.id).state.as_str(), "done" | "parked")
    })
    .map_err(|e| violation(format!("{e}: {}", ctx.diag(d))))?;
    let snap = ctx.double.snapshot();
    let after = ctx.server(&snap);
    if after.ingests() > 1 {
        return Err(violation(format!("the package was ingested again after the reboot ({} ingest requests): {}", after.ingests(), ctx.diag(d))));
    }
    if row_now(ctx.media, ctx.id).state == "parked" {
        return Err(violation(format!("the job was parked after the reboot: {}", ctx.diag(d))));
    }
    let phase = row.phase();
    if !row.before_job() {
        let (jobs0, jobs1) = (before.jobs().count(), after.jobs().count());
        if jobs1 > jobs0 {
            return Err(violation(format!(
                "the upload started over after the reboot: a new upload job ({jobs0} → {jobs1}) although the journal was in phase {phase} with the server at chunk {}",
                before.chunks(row.job())
            )));
        }
    }
    if !matches!(phase.as_str(), "none" | "queued" | "active") && after.creations() > before.creations() {
        return Err(violation(format!("the media package was created again after the reboot (journal phase {phase}, creations {} → {})", before.creations(), after.creations())));
    }
    let wrong = after.wrong_chunk_refusals() - before.wrong_chunk_refusals();
    if wrong > 0 {
        let why: Vec<&String> = after.jobs().flat_map(|j| j.refusals.iter()).filter(|r| r.starts_with("Wrong chunk number")).collect();
        return Err(violation(format!("after the reboot the daemon guessed its position instead of asking the job: {wrong} chunk(s) refused: {why:?}")));
    }
    Ok(())
}

/// The final checks; returns the report's counts.
fn check_end(ctx: &Ctx<'_>, cuts: &[UploadCut], file_bytes: u64, chunk_bytes: u64) -> Result<UploadReport> {
    let db = open_ro(ctx.media)?;
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(violation(format!("integrity_check at the end: {check}")));
    }
    let segs: Vec<_> = segments(&db, ctx.media, ctx.id)?.into_iter().filter(|s| s.state == "committed").collect();
    check_committed(&db, ctx.media, ctx.id, &segs)?;
    check_nothing_open(&db, ctx.id, None)?;
    let row = upload_row(&db, ctx.id)?.context("the upload job vanished")?;
    let remote_ref: Option<String> = db.query_row("SELECT remote_ref FROM uploads WHERE recording_id = ?1", [ctx.id], |r| r.get(0))?;
    if row.state != "done" || row.bytes_confirmed != row.bytes_total || remote_ref.as_deref() != Some(ctx.mp_id) {
        return Err(violation(format!("the job ended {row:?} with remote_ref {remote_ref:?}, not done as {}", ctx.mp_id)));
    }
    let snap = ctx.double.snapshot();
    let s = ctx.server(&snap);
    // No duplicate: one ingest, of one package.
    let packages: Vec<_> = snap.mediapackages.iter().filter(|m| m.id == ctx.mp_id).collect();
    if s.ingests() != 1 || snap.ingest_count() != 1 || packages.len() != 1 {
        let requests: Vec<String> = snap.requests.iter().filter(|r| r.target.contains("ingest")).map(|r| format!("{} {} -> {} {:?}", r.method, r.target, r.status, r.fault)).collect();
        return Err(violation(format!(
            "{} ingest(s) accepted, {} package(s) ingested, {} package(s) named {}: not exactly one; ingest requests: {requests:?}",
            s.ingests(),
            snap.ingest_count(),
            packages.len(),
            ctx.mp_id
        )));
    }
    let early = cuts.iter().filter(|c| matches!(c.phase.as_str(), "none" | "queued" | "active")).count() as u32;
    if s.creations() > 1 + early {
        return Err(violation(format!("the package was created {} times; only {early} cut(s) landed before it was", s.creations())));
    }
    // No gap: the ingested track is the stitched file, byte for byte.
    let mp = packages[0];
    let tracks: Vec<_> = mp.ingested_tracks().collect();
    if tracks.len() != 1 {
        return Err(violation(format!("the ingest has {} tracks: {tracks:?}", tracks.len())));
    }
    if tracks[0].bytes != file_bytes || tracks[0].sha256 != ctx.file_sha || sha256_file(&tracks[0].path)? != ctx.file_sha {
        return Err(violation(format!("the ingested track ({} bytes, {}) is not the stitched file ({file_bytes} bytes, {})", tracks[0].bytes, tracks[0].sha256, ctx.file_sha)));
    }
    let ingested = mp.ingested.as_ref().expect("ingested");
    let manifests = mp.attachments.iter().filter(|a| a.flavor == "lectern/manifest" && ingested.elements.contains(&a.id)).count();
    if manifests != 1 {
        return Err(violation(format!("the ingest carries {manifests} manifest attachments")));
    }
    // Re-sent: at most one chunk per cut, by the server's count and by the journal's.
    let (received, accepted) = s.bytes();
    let resent_server = received - accepted.min(received);
    let resent_journal = row.bytes_sent.saturating_sub(row.bytes_total);
    let n = cuts.len() as u64;
    let manifest = row.bytes_total - file_bytes;
    if resent_server > n * chunk_bytes || accepted < file_bytes {
        return Err(violation(format!("the server received {received} chunk bytes and accepted {accepted} of a {file_bytes}-byte file over {n} cuts: more than one chunk ({chunk_bytes}) per cut sent again")));
    }
    if resent_journal > n * chunk_bytes + u64::from(s.creations().saturating_sub(1)) * manifest {
        return Err(violation(format!("the journal counts {} bytes sent for {} (re-sent {resent_journal}) over {n} cuts: more than one chunk per cut", row.bytes_sent, row.bytes_total)));
    }
    Ok(UploadReport {
        seed: ctx.seed,
        cuts: Vec::new(),
        elapsed: Duration::ZERO,
        file_bytes,
        chunk_bytes,
        resent_server,
        resent_journal,
        upload_jobs: s.jobs().count(),
        creations: s.creations(),
        upload_time: Duration::ZERO,
    })
}

/// Whether `e` is a broken invariant rather than a failure to run.
pub fn is_violation(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Violation>().is_some()
}
