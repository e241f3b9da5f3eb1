//! The upload room inside the daemon: wiring only. The main loop hands every stitched recording
//! to [`Uploads::enqueue`] (one SQLite transaction into the journal's upload job store, with the
//! random start delay); `lectern-upload`'s runner threads replay the jobs through the configured
//! targets. This module maps the config to targets, the runner's events to Opencast recording
//! states, and the store and the runner's view to `status` and `lectern uploads`.
//!
//! Opencast hears about an upload through the outbox like every other state: `uploading` when
//! a scheduled event's job starts, `upload_finished` when it is done (queued from the runner's
//! thread *before* the job is marked done, so a crash in between at worst queues it twice),
//! `upload_error` when it is parked. Only jobs whose target is Opencast report states.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern_config::{Config, TargetKind, UploadConfig};
use lectern_journal::{Created, Outbox, RecordingSummary, StitchRow, UploadRow, UploadStore};
use lectern_opencast::{Queue, RecordingState};
use lectern_upload::runner::Clock as RunnerClock;
use lectern_upload::{enqueue, EventMeta, FileRef, Rng, Runner, UploadEvent, UploadSpec};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::stitcher::StitchDone;
use lectern_recorder::State;

/// What the uploads need of the Opencast agent: its outbox (for recording states), a way to wake
/// its states lane, and its "uploading" flag (agent state `uploading` instead of `idle`).
pub struct AgentHooks {
    pub db_path: std::path::PathBuf,
    pub wake_states: Arc<dyn Fn() + Send + Sync>,
    pub uploading: Arc<AtomicBool>,
}

/// The daemon's handle on uploads; see the module doc.
pub struct Uploads {
    store: UploadStore,
    runner: Runner,
    config: UploadConfig,
    rng: Rng,
    uploading: Option<Arc<AtomicBool>>,
    /// Done jobs at the last tick: a change means media may have become evictable.
    last_done: std::sync::atomic::AtomicI64,
    /// Wakes the agent's states lane, so a changed `uploading` flag is reported at once.
    wake_states: Option<Arc<dyn Fn() + Send + Sync>>,
}

fn recording_state_hook(hooks: AgentHooks) -> Arc<dyn Fn(&UploadEvent) + Send + Sync> {
    let queue = Mutex::new(None::<Queue>);
    Arc::new(move |e: &UploadEvent| {
        let (kind, spec, state) = match e {
            UploadEvent::Started { kind, spec, .. } => (kind, spec, RecordingState::Uploading),
            UploadEvent::Done { kind, spec, .. } => (kind, spec, RecordingState::UploadFinished),
            UploadEvent::Parked { kind, spec, .. } => (kind, spec, RecordingState::UploadError),
            UploadEvent::Failed { .. } => return,
        };
        if matches!(e, UploadEvent::Started { .. }) {
            hooks.uploading.store(true, Ordering::SeqCst);
        }
        let Some(event) = spec.event.as_ref().filter(|_| *kind == "opencast") else { return };
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_none() {
            match Outbox::open(&hooks.db_path) {
                Ok(o) => *q = Some(Queue::new(o)),
                Err(err) => {
                    log::error!(target: "upload", "recording {}: cannot open the outbox for its {} state: {err}", spec.recording_id, state.as_str());
                    return;
                }
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        if let Some(Err(err)) = q.as_mut().map(|q| q.recording_state(&event.uid, state, now)) {
            log::error!(target: "upload", "recording {}: cannot queue {}: {err}", spec.recording_id, state.as_str());
        }
        (hooks.wake_states)();
    })
}

impl Uploads {
    /// Starts the runner when at least one target is configured.
    pub fn start(config: &Config, db_path: &Path, clock: Arc<dyn Clock>, hooks: Option<AgentHooks>) -> anyhow::Result<Option<Uploads>> {
        let u = &config.upload;
        if u.targets.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = u.targets.iter().map(|t| t.name.clone()).collect();
        let runner_clock: RunnerClock = {
            let clock = clock.clone();
            Arc::new(move || clock.now_ms())
        };
        let uploading = hooks.as_ref().map(|h| h.uploading.clone());
        let wake_states = hooks.as_ref().map(|h| h.wake_states.clone());
        let events: Arc<dyn Fn(&UploadEvent) + Send + Sync> = match hooks {
            Some(h) => recording_state_hook(h),
            None => Arc::new(|_: &UploadEvent| {}),
        };
        let cfg = lectern_upload::configured::runner_config(u);
        let throttle = lectern_upload::configured::throttle(u);
        let runner = Runner::spawn(cfg, db_path, &names, lectern_upload::configured::factory(config), runner_clock, throttle, events)?;
        let store = UploadStore::open(db_path)?;
        log::info!(target: "upload", "targets: {}", u.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "));
        Ok(Some(Uploads { store, runner, config: u.clone(), rng: Rng::from_entropy(), uploading, wake_states, last_done: std::sync::atomic::AtomicI64::new(-1) }))
    }

    /// A stitched recording owes an upload: the job goes to the first target that takes it.
    /// Returns whether the recording has a job now.
    pub fn enqueue(&mut self, rec: &RecordingSummary, stitch: &StitchRow, media_dir: &Path, event: Option<EventMeta>, now_ms: i64) -> bool {
        let Some(target) = self.config.target_for(event.is_some()) else {
            log::info!(target: "upload", "recording {}: no upload target takes it; it stays on the card", rec.id);
            return false;
        };
        let (Some(path), Some(bytes), Some(sha256)) = (stitch.path.as_deref(), stitch.bytes, stitch.sha256.clone()) else {
            log::error!(target: "upload", "recording {}: stitch row has no file; nothing to upload", rec.id);
            return false;
        };
        let manifest = stitch.manifest_path.as_deref().map(|m| media_dir.join(m)).and_then(|p| {
            let bytes = std::fs::metadata(&p).ok()?.len();
            let sha256 = lectern_journal::sha256_file(&p).ok()?;
            Some(FileRef { path: p, bytes, sha256 })
        });
        let spec = UploadSpec {
            recording_id: rec.id.clone(),
            title: rec.title.clone(),
            started_at_ms: rec.started_at_ms,
            media: FileRef { path: media_dir.join(path), bytes, sha256 },
            manifest,
            event,
        };
        let queued = match enqueue(&mut self.store, &target.name, &spec, now_ms, self.config.start_delay_max, &mut self.rng) {
            Ok(Created::Added) => {
                log::info!(target: "upload", "recording {}: upload to {} queued", rec.id, target.name);
                true
            }
            Ok(Created::Exists(state)) => {
                log::info!(target: "upload", "recording {}: upload already {}", rec.id, state.as_str());
                true
            }
            Err(e) => {
                log::error!(target: "upload", "recording {}: cannot queue its upload: {e}", rec.id);
                false
            }
        };
        self.runner.wake();
        queued
    }

    /// Ingests an earlier firmware queued in the outbox become upload jobs, once, so nothing
    /// queued before an update is lost: each entry is acked only after its job exists.
    pub fn adopt_outbox_ingests(&mut self, db_path: &Path, journal: &lectern_journal::Journal, media_dir: &Path, now_ms: i64) {
        let Ok(mut outbox) = Outbox::open(db_path) else { return };
        let entries = outbox.pending(10_000).unwrap_or_default();
        for e in entries.into_iter().filter(|e| e.kind == "ingest") {
            let Ok(lectern_opencast::Operation::Ingest(job)) = lectern_opencast::Operation::from_entry(&e) else { continue };
            let (Ok(Some(rec)), Ok(Some(stitch))) = (journal.recording(&job.recording_id), journal.stitch_status(&job.recording_id)) else {
                log::warn!(target: "upload", "recording {}: queued ingest without a recording or stitch; left in the outbox", job.recording_id);
                continue;
            };
            let event = job.scheduled.then(|| EventMeta {
                uid: job.event_uid.clone(),
                episode_dc: job.episode_dc.clone(),
                series_dc: job.series_dc.clone(),
                workflow: job.workflow.clone(),
                workflow_config: job.workflow_config.clone(),
            });
            if self.enqueue(&rec, &stitch, media_dir, event, now_ms) {
                let _ = outbox.ack(e.id, now_ms);
                log::info!(target: "upload", "recording {}: the ingest queued by an earlier firmware is now an upload job", job.recording_id);
            }
        }
    }

    /// Called every main-loop turn: the bandwidth cap follows the recorder, and the agent's
    /// `uploading` flag follows the running jobs. Returns true when a job finished since the
    /// last turn (the retention policy may have work).
    pub fn tick(&self, recording: bool) -> bool {
        self.runner.set_recording(recording);
        let live = !self.runner.view().live.is_empty();
        // The Started hook raises the flag at once; this lowers it (and raises it for a job that
        // resumed without a Started event). A change wakes the states lane to report it.
        if let Some(flag) = &self.uploading {
            if flag.swap(live, Ordering::SeqCst) != live {
                if let Some(wake) = &self.wake_states {
                    wake();
                }
            }
        }
        let done = self.store.counts().map_or(-1, |c| c.done);
        let before = self.last_done.swap(done, Ordering::SeqCst);
        before >= 0 && done > before
    }

    /// Jobs confirmed since `since_ms`, for the manifest annotation.
    pub fn done_since(&self, since_ms: i64) -> Vec<String> {
        self.store.done_since(since_ms).unwrap_or_default()
    }

    /// `lectern uploads retry ID`.
    pub fn retry(&mut self, recording_id: &str, now_ms: i64) -> Result<Value, String> {
        match self.store.retry(recording_id, now_ms).map_err(|e| e.to_string())? {
            None => Err(format!("no upload job for recording {recording_id:?}")),
            Some(lectern_journal::UploadState::Done) => Err(format!("recording {recording_id} is already uploaded")),
            Some(before) => {
                self.runner.wake();
                Ok(json!({ "recording_id": recording_id, "was": before.as_str(), "state": "queued" }))
            }
        }
    }

    fn job_json(&self, r: &UploadRow, live: Option<&lectern_upload::runner::LiveJob>, now_ms: i64) -> Value {
        let kind = self.config.targets.iter().find(|t| t.name == r.target).map(|t| match t.kind {
            TargetKind::Opencast { .. } => "opencast",
            TargetKind::S3(_) => "s3",
            TargetKind::Folder { .. } => "folder",
        });
        let confirmed = live.map_or(r.bytes_confirmed, |l| l.bytes_confirmed.max(r.bytes_confirmed));
        let rate = live.map(|l| l.rate).filter(|r| *r > 0.0);
        let eta = rate.map(|rate| (r.bytes_total.saturating_sub(confirmed) as f64 / rate).round());
        json!({
            "recording_id": r.recording_id,
            "target": r.target,
            "kind": kind,
            "state": r.state.as_str(),
            "endpoint": r.endpoint,
            "bytes_total": r.bytes_total,
            "bytes_confirmed": confirmed,
            "bytes_sent": r.bytes_sent,
            "fraction": if r.bytes_total == 0 { 1.0 } else { confirmed as f64 / r.bytes_total as f64 },
            "rate_bps": rate,
            "eta_s": eta,
            "attempts": r.attempts,
            "last_error": r.last_error,
            "next_try": (r.not_before_ms > now_ms && r.state != lectern_journal::UploadState::Done).then(|| crate::rfc3339(r.not_before_ms)),
            "created": crate::rfc3339(r.created_at_ms),
            "started": r.started_at_ms.map(crate::rfc3339),
            "done": r.done_at_ms.map(crate::rfc3339),
            "remote_ref": r.remote_ref,
            "endpoint_log": r.endpoint_log.iter().map(|m| json!({ "endpoint": m.endpoint, "at": crate::rfc3339(m.at_ms), "why": m.why })).collect::<Vec<_>>(),
        })
    }

    /// `lectern uploads`: every job (newest first), the targets' endpoints and the alarms.
    pub fn list_json(&self, now_ms: i64) -> Result<Value, String> {
        let view = self.runner.view();
        let rows = self.store.list(500).map_err(|e| e.to_string())?;
        let jobs: Vec<Value> = rows.iter().map(|r| self.job_json(r, view.live.iter().find(|l| l.recording_id == r.recording_id), now_ms)).collect();
        Ok(json!({
            "uploads": jobs,
            "endpoints": view.endpoints.iter().map(|e| json!({ "target": e.target, "kind": e.kind, "endpoints": e.endpoints, "current": e.current, "failures": e.failures })).collect::<Vec<_>>(),
            "alarms": self.alarms(now_ms),
        }))
    }

    /// What an operator must look at: parked jobs, authentication failures, a backlog.
    fn alarms(&self, now_ms: i64) -> Vec<String> {
        let mut alarms: Vec<String> = self.runner.view().auth_alarms.iter().map(|(t, e)| format!("target {t}: authentication failing: {e}")).collect();
        if let Ok(c) = self.store.counts() {
            if c.parked > 0 {
                alarms.push(format!("{} upload(s) parked (refused by the server; media kept): see `lectern uploads`", c.parked));
            }
        }
        if let Some(n) = self.stuck(now_ms) {
            alarms.push(format!("{n} upload(s) pending for more than {} minutes", self.config.stuck_after.as_secs() / 60));
        }
        alarms
    }

    /// How many pending jobs are older than `stuck_after` (None: none).
    fn stuck(&self, now_ms: i64) -> Option<usize> {
        let n = self.store.pending_created_before(now_ms - self.config.stuck_after.as_millis() as i64).ok()?;
        (n > 0).then_some(n as usize)
    }

    /// Whether uploads are stuck (a backlog): the LED and STATUS= say so while idle.
    pub fn backlog(&self, now_ms: i64) -> bool {
        self.stuck(now_ms).is_some() || self.store.counts().is_ok_and(|c| c.parked > 0)
    }

    /// `status.uploads`.
    pub fn status_json(&self, now_ms: i64) -> Value {
        let c = self.store.counts().unwrap_or_default();
        let view = self.runner.view();
        json!({
            "queued": c.queued,
            "active": c.active,
            "parked": c.parked,
            "done": c.done,
            "bytes_pending": c.bytes_pending,
            "running": view.live.iter().map(|l| json!({ "recording_id": l.recording_id, "endpoint": l.endpoint, "rate_bps": l.rate })).collect::<Vec<_>>(),
            "backlog": self.backlog(now_ms),
            "alarms": self.alarms(now_ms),
        })
    }
}

/// The daemon's side of the upload room: what the main loop does for it each turn.
impl crate::Daemon {
    /// One main-loop turn: retention when due, the bandwidth cap and the agent's `uploading`
    /// flag, newly confirmed uploads into their manifests, and the backlog for the idle LED.
    pub(crate) fn uploads_turn(&mut self) {
        self.maybe_evict();
        if self.uploads.as_ref().is_some_and(|u| u.tick(*self.recorder.state() != State::Idle)) {
            self.next_retention = Instant::now();
            self.record_uploads_in_manifests();
        }
        self.check_backlog();
    }

    /// After a stitch: the stitched MP4 and its manifest owe an upload, a resumable job of the
    /// upload room for the first target that takes it. If the stitch failed, Opencast hears
    /// `upload_error` for a scheduled event.
    pub(crate) fn queue_upload(&mut self, done: &StitchDone) {
        let now = self.clock.now_ms();
        let Ok(Some(rec)) = self.journal.recording(&done.recording_id) else { return };
        let event = rec.event_uid.as_deref().and_then(|uid| self.journal.cached_schedule().ok()?.into_iter().find(|e| e.uid == uid));
        let stitch = match (&done.result, self.journal.stitch_status(&rec.id)) {
            (Ok(_), Ok(Some(row))) if row.state == "done" => row,
            _ => {
                if let (Some(agent), Some(e)) = (self.agent.as_mut(), &event) {
                    agent.recording_state(&e.uid, RecordingState::UploadError, now);
                }
                return;
            }
        };
        let Some(uploads) = self.uploads.as_mut() else { return };
        let meta = event.as_ref().map(|e| lectern_upload::EventMeta {
            uid: e.uid.clone(),
            episode_dc: e.episode_xml.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
            series_dc: e.series_xml.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
            workflow: e.workflow.clone(),
            workflow_config: e.workflow_config.clone(),
        });
        uploads.enqueue(&rec, &stitch, &self.config.journal.media_dir, meta, now);
    }

    /// Newly confirmed uploads go into their recordings' manifests (where each one went), which
    /// the card keeps after the media is evicted.
    fn record_uploads_in_manifests(&mut self) {
        let Some(u) = &self.uploads else { return };
        let now = self.clock.now_ms();
        for id in u.done_since(self.manifests_recorded_ms) {
            if let Err(e) = self.journal.record_upload_in_manifest(&id) {
                log::warn!(target: "lecternd", "recording {id}: upload not recorded in its manifest: {e}");
            }
        }
        self.manifests_recorded_ms = now;
    }

    /// Tells the recorder (for the idle LED) when the upload backlog appears or clears.
    fn check_backlog(&mut self) {
        let Some(u) = &self.uploads else { return };
        let backlog = u.backlog(self.clock.now_ms());
        if backlog != self.upload_backlog {
            self.upload_backlog = backlog;
            if backlog {
                log::warn!(target: "lecternd", "upload backlog: uploads pending longer than {} minutes or refused (see `lectern uploads`)", self.config.upload.stuck_after.as_secs() / 60);
            } else {
                log::info!(target: "lecternd", "upload backlog cleared");
            }
            let _ = self.feed(lectern_recorder::Event::UploadBacklog(backlog));
        }
    }

    /// The retention policy (the journal decides what may go: only media its target confirmed).
    /// Once a minute while idle, in slices of at most 2,000 files; while a recording runs only
    /// when free space is under `upload.evict_below_mb`, 100 files a turn, so the main loop stays
    /// responsive to a power-fail edge. A box with no upload target never evicts anything.
    fn maybe_evict(&mut self) {
        if self.uploads.is_none() || Instant::now() < self.next_retention {
            return;
        }
        let idle = *self.recorder.state() == State::Idle;
        let policy = lectern_journal::RetentionPolicy {
            window_ms: self.config.upload.retention.as_millis() as i64,
            low_water_bytes: self.config.upload.evict_below_bytes,
        };
        if !idle {
            let low = lectern_journal::statvfs_free(&self.config.journal.media_dir).ok().flatten().is_some_and(|f| f < policy.low_water_bytes);
            if !low {
                self.next_retention = Instant::now() + Duration::from_secs(60);
                return;
            }
        }
        let budget = if idle { 2000 } else { 100 };
        let now = self.clock.now_ms();
        self.next_retention = Instant::now() + Duration::from_secs(60);
        match self.journal.enforce_retention_bounded(policy, now, budget) {
            Ok(r) => {
                for e in &r.evicted {
                    log::info!(
                        target: "lecternd",
                        "recording {}: media evicted ({:?}): {} segments, {:.1} MB freed; the manifest stays",
                        e.recording_id,
                        e.why,
                        e.segments,
                        e.bytes_freed as f64 / 1e6
                    );
                }
                if r.unfinished {
                    self.next_retention = Instant::now();
                } else if r.still_low {
                    log::warn!(target: "lecternd", "free space is low and every recording on the card still awaits its upload; nothing evicted");
                }
            }
            Err(e) => log::error!(target: "lecternd", "retention: {e}"),
        }
    }
}
