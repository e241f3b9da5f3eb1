//! The runner: worker threads that replay the upload jobs in the journal through their targets,
//! one step at a time, committing each step's progress before the next (the I/O shell around
//! [`crate::policy`]).
//!
//! # Shape
//!
//! - [`enqueue`] is the producer's call (the main loop, when a stitch is done): one SQLite
//!   transaction, a random start delay, no network.
//! - [`Runner::spawn`] starts `workers` threads (the concurrency cap) and one health thread.
//!   A worker takes the oldest due job nobody else holds, runs its steps until it is done, a
//!   step fails, the target's current endpoint changes or the runner stops, and then takes the
//!   next. Between steps nothing is held but the job's claim.
//! - The health thread checks every endpoint but the current one of each target with more than
//!   one endpoint, every `health_interval`, feeding [`Failover`] (fail-back).
//! - [`UploadEvent`]s go to the daemon's callback from the worker thread: `Started` when a job
//!   sends its first byte, `Done` *before* the job is marked done (so a follow-up the daemon
//!   queues, e.g. Opencast's `upload_finished`, is never lost to a crash in between — at worst
//!   it is queued twice), `Parked`, and `Failed` for each retried failure.
//!
//! # Moving a job between endpoints
//!
//! A job whose progress lives on another endpoint than its target's current one is moved
//! before its next step: unless the target resumes across endpoints, the old endpoint is asked
//! to [`Target::abandon`] the upload — which may reveal that the recording in fact arrived
//! there (a lost reply), and then the job is done there and does not move — and the job starts
//! from empty progress on the new endpoint. Every move is logged in the job's endpoint log. So
//! one server never gets a silent duplicate.
//!
//! Lock order: the runner's one mutex (`State`) is never held across a step, a store call or an
//! event callback.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use lectern_journal::{Created, NewUpload, UploadRow, UploadState, UploadStore};
use serde_json::Value;

use crate::policy::{counts_against_endpoint, decide, Decision, Failover, Move, RetryPolicy, Rng};
use crate::target::{Class, Step, StepIo, Target, UploadError, UploadSpec};
use crate::throttle::Throttle;

/// The injected wall clock, Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Makes a target by its configured name (`None`: no such target any more).
pub type TargetFactory = Arc<dyn Fn(&str) -> Option<Box<dyn Target>> + Send + Sync>;

/// What the daemon hears about jobs; see the module doc.
#[derive(Debug, Clone)]
pub enum UploadEvent {
    Started { recording_id: String, target: String, kind: &'static str, endpoint: String, spec: UploadSpec },
    Done { recording_id: String, target: String, kind: &'static str, endpoint: String, remote_ref: String, spec: UploadSpec },
    Parked { recording_id: String, target: String, kind: &'static str, reason: String, spec: UploadSpec },
    Failed { recording_id: String, target: String, class: Class, error: String, retry_at_ms: i64 },
}

/// The runner's settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Worker threads: uploads at once.
    pub workers: usize,
    pub retry: RetryPolicy,
    pub failover_after: u32,
    pub failback_after: Duration,
    pub health_interval: Duration,
    /// Longest a worker sleeps before it looks at the store again.
    pub poll: Duration,
}

/// Creates the job of a final recording, due after a random delay in `[0, delay_max]`.
pub fn enqueue(store: &mut UploadStore, target: &str, spec: &UploadSpec, now_ms: i64, delay_max: Duration, rng: &mut Rng) -> lectern_journal::Result<Created> {
    let json = serde_json::to_string(spec).expect("upload specs serialise");
    let u = NewUpload { recording_id: &spec.recording_id, target, spec: &json, bytes_total: spec.bytes_total(), not_before_ms: now_ms + rng.below_ms(delay_max) };
    store.create(&u, now_ms)
}

/// What one running job looks like now (for `status` and `lectern uploads`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveJob {
    pub recording_id: String,
    pub endpoint: String,
    /// Bytes a second over the recent steps (exponentially weighted).
    pub rate: f64,
    pub bytes_confirmed: u64,
    pub since_ms: i64,
    last: (i64, u64),
}

/// A target's endpoints as the runner sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub target: String,
    pub kind: &'static str,
    pub endpoints: Vec<String>,
    pub current: usize,
    /// Consecutive failures per endpoint.
    pub failures: Vec<u32>,
}

/// A snapshot for status.
#[derive(Debug, Clone, Default)]
pub struct RunnerView {
    pub live: Vec<LiveJob>,
    pub endpoints: Vec<EndpointView>,
    /// Per target, the last authentication failure (cleared by the next success): an alarm.
    pub auth_alarms: Vec<(String, String)>,
}

struct TargetState {
    kind: &'static str,
    endpoints: Vec<String>,
    failover: Failover,
}

#[derive(Default)]
struct State {
    stop: bool,
    /// Bumped by `wake` so a sleeping worker can tell it was woken.
    wakes: u64,
    claimed: HashSet<String>,
    targets: HashMap<String, TargetState>,
    live: HashMap<String, LiveJob>,
    auth_alarms: HashMap<String, String>,
}

struct Shared {
    db_path: PathBuf,
    cfg: RunnerConfig,
    factory: TargetFactory,
    clock: Clock,
    throttle: Arc<Throttle>,
    events: Arc<dyn Fn(&UploadEvent) + Send + Sync>,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.lock().stop
    }

    /// Sleeps until woken, stopped or `wait` passed.
    fn sleep(&self, wait: Duration) {
        let st = self.lock();
        if st.stop {
            return;
        }
        let seen = st.wakes;
        let _ = self.cv.wait_timeout_while(st, wait, |s| !s.stop && s.wakes == seen);
    }

    fn current(&self, target: &str) -> Option<(usize, &'static str, String)> {
        let st = self.lock();
        let t = st.targets.get(target)?;
        let i = t.failover.current();
        Some((i, t.kind, t.endpoints[i].clone()))
    }

    fn note_move(&self, target: &str, m: &Move) {
        let st = self.lock();
        if let Some(t) = st.targets.get(target) {
            log::warn!(target: "upload", "target {target}: moving to {} from {}: {}", t.endpoints[m.to], t.endpoints[m.from], m.why);
        }
        drop(st);
        self.cv.notify_all();
    }
}

/// The running uploader; see the module doc. Dropping it stops the workers at their next step
/// boundary (it does not wait for a step in flight).
pub struct Runner {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("db_path", &self.shared.db_path).finish_non_exhaustive()
    }
}

impl Runner {
    /// Starts the workers and the health thread over the journal database at `db_path`.
    /// `targets` are the configured target names; each is made once here (to learn its
    /// endpoints) and once per worker.
    pub fn spawn(
        cfg: RunnerConfig,
        db_path: &Path,
        targets: &[String],
        factory: TargetFactory,
        clock: Clock,
        throttle: Arc<Throttle>,
        events: Arc<dyn Fn(&UploadEvent) + Send + Sync>,
    ) -> std::io::Result<Runner> {
        let mut state = State::default();
        let mut health_targets = Vec::new();
        for name in targets {
            let t = factory(name).ok_or_else(|| std::io::Error::other(format!("upload target {name} cannot be made")))?;
            let endpoints = t.endpoints().to_vec();
            state.targets.insert(
                name.clone(),
                TargetState { kind: t.kind(), failover: Failover::new(endpoints.len(), cfg.failover_after, cfg.failback_after), endpoints },
            );
            health_targets.push((name.clone(), t));
        }
        let shared = Arc::new(Shared { db_path: db_path.to_owned(), cfg, factory, clock, throttle, events, state: Mutex::new(state), cv: Condvar::new() });
        let mut threads = Vec::new();
        for n in 0..shared.cfg.workers.max(1) {
            let s = shared.clone();
            threads.push(std::thread::Builder::new().name(format!("upload-{n}")).spawn(move || worker(&s, n as u64))?);
        }
        let s = shared.clone();
        threads.push(std::thread::Builder::new().name("upload-health".into()).spawn(move || health(&s, health_targets))?);
        Ok(Runner { shared, threads })
    }

    /// Makes idle workers look at the store now (after [`enqueue`] or a retry).
    pub fn wake(&self) {
        self.shared.lock().wakes += 1;
        self.shared.cv.notify_all();
    }

    /// The main loop says whether a recording runs (the bandwidth cap follows).
    pub fn set_recording(&self, recording: bool) {
        self.shared.throttle.set_recording(recording);
    }

    /// What runs now.
    pub fn view(&self) -> RunnerView {
        let st = self.shared.lock();
        let mut live: Vec<LiveJob> = st.live.values().cloned().collect();
        live.sort_by(|a, b| a.recording_id.cmp(&b.recording_id));
        let mut endpoints: Vec<EndpointView> = st
            .targets
            .iter()
            .map(|(name, t)| EndpointView {
                target: name.clone(),
                kind: t.kind,
                endpoints: t.endpoints.clone(),
                current: t.failover.current(),
                failures: (0..t.endpoints.len()).map(|i| t.failover.failures(i)).collect(),
            })
            .collect();
        endpoints.sort_by(|a, b| a.target.cmp(&b.target));
        let mut auth_alarms: Vec<(String, String)> = st.auth_alarms.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        auth_alarms.sort();
        RunnerView { live, endpoints, auth_alarms }
    }

    /// Stops the workers and waits up to `wait` for them (a step in flight finishes first).
    pub fn shutdown(mut self, wait: Duration) {
        self.stop();
        let deadline = std::time::Instant::now() + wait;
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn health(s: &Shared, mut targets: Vec<(String, Box<dyn Target>)>) {
    while !s.stopping() {
        for (name, t) in targets.iter_mut() {
            let n = t.endpoints().len();
            if n < 2 {
                continue;
            }
            for i in 0..n {
                let current = s.current(name).map_or(0, |c| c.0);
                if i == current || s.stopping() {
                    continue;
                }
                let ok = t.health(i).map_err(|e| log::debug!(target: "upload", "target {name}: health of {}: {e}", t.endpoints()[i])).is_ok();
                let now = (s.clock)();
                let m = s.lock().targets.get_mut(name.as_str()).and_then(|ts| ts.failover.health(i, ok, now));
                if let Some(m) = m {
                    s.note_move(name, &m);
                }
            }
        }
        s.sleep(s.cfg.health_interval);
    }
}

fn worker(s: &Shared, n: u64) {
    let mut rng = Rng::new(Rng::from_entropy().next_u64() ^ n);
    let mut store = loop {
        match UploadStore::open(&s.db_path) {
            Ok(st) => break st,
            Err(e) => {
                log::error!(target: "upload", "cannot open the upload store: {e}");
                if s.stopping() {
                    return;
                }
                s.sleep(s.cfg.poll);
            }
        }
    };
    let mut targets: HashMap<String, Box<dyn Target>> = HashMap::new();
    let io = StepIo::new(s.throttle.clone());
    while !s.stopping() {
        let job = match claim(s, &store) {
            Ok(Some(job)) => job,
            Ok(None) => {
                let now = (s.clock)();
                let next = store.next_due_ms().ok().flatten();
                let wait = next.map_or(s.cfg.poll, |t| Duration::from_millis(t.saturating_sub(now).max(0) as u64).min(s.cfg.poll));
                s.sleep(wait.max(Duration::from_millis(5)));
                continue;
            }
            Err(e) => {
                log::error!(target: "upload", "upload store: {e}");
                s.sleep(s.cfg.poll);
                continue;
            }
        };
        let id = job.recording_id.clone();
        if let Err(e) = run_job(s, &mut store, &mut targets, &io, &mut rng, job) {
            log::error!(target: "upload", "recording {id}: upload store: {e}");
        }
        let mut st = s.lock();
        st.claimed.remove(&id);
        st.live.remove(&id);
    }
}

/// The oldest due job nobody holds, claimed.
fn claim(s: &Shared, store: &UploadStore) -> lectern_journal::Result<Option<UploadRow>> {
    let now = (s.clock)();
    let due = store.due(now, 64)?;
    let mut st = s.lock();
    for job in due {
        if st.claimed.insert(job.recording_id.clone()) {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

fn run_job(
    s: &Shared,
    store: &mut UploadStore,
    targets: &mut HashMap<String, Box<dyn Target>>,
    io: &StepIo,
    rng: &mut Rng,
    job: UploadRow,
) -> lectern_journal::Result<()> {
    let id = job.recording_id.clone();
    let spec: UploadSpec = match serde_json::from_str(&job.spec) {
        Ok(spec) => spec,
        Err(e) => {
            log::error!(target: "upload", "recording {id}: job spec unreadable, parked: {e}");
            return store.park(&id, &format!("job spec unreadable: {e}"));
        }
    };
    if !targets.contains_key(&job.target) {
        match (s.factory)(&job.target) {
            Some(t) => {
                targets.insert(job.target.clone(), t);
            }
            None => {
                let reason = format!("upload target {:?} is not configured (any more)", job.target);
                log::error!(target: "upload", "recording {id}: {reason}; parked");
                return store.park(&id, &reason);
            }
        }
    }
    let target = targets.get_mut(&job.target).expect("inserted above");
    let Some((i, kind, endpoint)) = s.current(&job.target) else {
        return store.park(&id, &format!("upload target {:?} is not configured (any more)", job.target));
    };
    let mut progress: Value = job.progress.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);

    // Progress on another endpoint: move the job first (module doc).
    if let Some(old) = job.endpoint.as_deref().filter(|e| *e != endpoint) {
        let j = target.endpoints().iter().position(|e| e == old);
        let keep = target.resumable_across_endpoints();
        if !progress.is_null() && !keep {
            match j.map(|j| target.abandon(j, &spec, &progress)) {
                Some(Ok(Some(remote_ref))) => {
                    log::info!(target: "upload", "recording {id}: had already arrived at {old} ({remote_ref}); not moved");
                    (s.events)(&UploadEvent::Done { recording_id: id.clone(), target: job.target.clone(), kind, endpoint: old.to_owned(), remote_ref: remote_ref.clone(), spec: spec.clone() });
                    let p = progress.to_string();
                    store.complete(&id, old, &p, &remote_ref, 0, (s.clock)())?;
                    return Ok(());
                }
                Some(Err(e)) => log::warn!(target: "upload", "recording {id}: {old} could not abandon the partial upload ({e}); starting on {endpoint}"),
                _ => {}
            }
            progress = Value::Null;
        }
        store.move_endpoint(&id, &endpoint, &format!("target {} moved from {old}", job.target), keep, (s.clock)())?;
    }

    let started = (s.clock)();
    s.lock().live.insert(
        id.clone(),
        LiveJob { recording_id: id.clone(), endpoint: endpoint.clone(), rate: 0.0, bytes_confirmed: job.bytes_confirmed, since_ms: started, last: (started, job.bytes_confirmed) },
    );
    if store.mark_started(&id, started)? {
        log::info!(target: "upload", "recording {id}: upload to {} ({endpoint}) begins, {} bytes", job.target, spec.bytes_total());
        (s.events)(&UploadEvent::Started { recording_id: id.clone(), target: job.target.clone(), kind, endpoint: endpoint.clone(), spec: spec.clone() });
    }
    let mut failures = job.attempts.max(0) as u32;
    // A step that confirmed nothing new (a folder piece between checkpoints) is not committed:
    // a commit is a flush of the card, which a recording's fsync would wait behind. Its bytes
    // are counted with the next commit.
    // (The first step always commits: it marks the job active and clears an earlier failure.)
    let mut saved: Option<(String, u64)> = None;
    let mut unsaved_sent = 0u64;
    loop {
        if s.stopping() || s.current(&job.target).map(|c| c.0) != Some(i) {
            return store.add_sent(&id, unsaved_sent);
        }
        let result = target.step(i, &spec, &progress, io);
        let now = (s.clock)();
        match result {
            Ok(Step::Progress { progress: p, bytes_confirmed, sent }) => {
                let text = p.to_string();
                let still_ours = if saved.as_ref().is_some_and(|(t, b)| *t == text && *b == bytes_confirmed) {
                    unsaved_sent += sent;
                    store.get(&id)?.is_some_and(|r| matches!(r.state, UploadState::Queued | UploadState::Active))
                } else {
                    let ok = store.save_progress(&id, &endpoint, &text, bytes_confirmed, sent + unsaved_sent, now)?;
                    (saved, unsaved_sent) = (Some((text, bytes_confirmed)), 0);
                    ok
                };
                if !still_ours {
                    log::info!(target: "upload", "recording {id}: job changed under the upload (parked or retried); stopping it");
                    return Ok(());
                }
                failures = 0;
                progress = p;
                succeeded(s, &job.target, i, &id, bytes_confirmed, now);
            }
            Ok(Step::Done { progress: p, remote_ref, sent }) => {
                let sent = sent + std::mem::take(&mut unsaved_sent);
                succeeded(s, &job.target, i, &id, spec.bytes_total(), now);
                log::info!(target: "upload", "recording {id}: uploaded to {} ({endpoint}) as {remote_ref}", job.target);
                (s.events)(&UploadEvent::Done { recording_id: id.clone(), target: job.target.clone(), kind, endpoint: endpoint.clone(), remote_ref: remote_ref.clone(), spec: spec.clone() });
                store.complete(&id, &endpoint, &p.to_string(), &remote_ref, sent, now)?;
                return Ok(());
            }
            Err(mut e) => {
                failures = failures.saturating_add(1);
                // Counted with the failed step's own bytes, in one write.
                e.sent += unsaved_sent;
                return failed(s, store, &job.target, i, &endpoint, &spec, e, failures, now, rng);
            }
        }
    }
}

fn succeeded(s: &Shared, target: &str, i: usize, id: &str, confirmed: u64, now: i64) {
    let mut st = s.lock();
    if let Some(t) = st.targets.get_mut(target) {
        t.failover.succeeded(i, now);
    }
    st.auth_alarms.remove(target);
    if let Some(l) = st.live.get_mut(id) {
        let (t0, b0) = l.last;
        let dt = (now - t0).max(1) as f64 / 1000.0;
        let sample = confirmed.saturating_sub(b0) as f64 / dt;
        l.rate = if l.rate == 0.0 { sample } else { 0.7 * l.rate + 0.3 * sample };
        l.bytes_confirmed = confirmed;
        l.last = (now, confirmed);
    }
}

#[allow(clippy::too_many_arguments)]
fn failed(
    s: &Shared,
    store: &mut UploadStore,
    target: &str,
    i: usize,
    endpoint: &str,
    spec: &UploadSpec,
    e: UploadError,
    failures: u32,
    now: i64,
    rng: &mut Rng,
) -> lectern_journal::Result<()> {
    let id = &spec.recording_id;
    store.add_sent(id, e.sent)?;
    let moved = {
        let mut st = s.lock();
        if e.class == Class::Auth {
            st.auth_alarms.insert(target.to_owned(), e.message.clone());
        }
        match st.targets.get_mut(target) {
            Some(t) if counts_against_endpoint(&e) => t.failover.failed(i, now),
            _ => None,
        }
    };
    if let Some(m) = &moved {
        s.note_move(target, m);
    }
    let kind = s.current(target).map_or("?", |c| c.1);
    match decide(&e, failures, now, &s.cfg.retry, rng) {
        Decision::Retry { at_ms } => {
            log::warn!(target: "upload", "recording {id}: {e} (failure {failures}; next try in {:.1} s)", (at_ms - now) as f64 / 1e3);
            store.record_failure(id, &e.message, at_ms)?;
            (s.events)(&UploadEvent::Failed { recording_id: id.clone(), target: target.to_owned(), class: e.class.clone(), error: e.message.clone(), retry_at_ms: at_ms });
        }
        Decision::Restart { at_ms } => {
            log::warn!(target: "upload", "recording {id}: {endpoint} lost the upload ({e}); starting it again there");
            store.move_endpoint(id, endpoint, &format!("server lost the upload: {}", e.message), false, now)?;
            store.record_failure(id, &e.message, at_ms)?;
        }
        Decision::Park { reason } => {
            log::error!(target: "upload", "recording {id}: refused for good, parked with its media kept: {reason}");
            (s.events)(&UploadEvent::Parked { recording_id: id.clone(), target: target.to_owned(), kind, reason: reason.clone(), spec: spec.clone() });
            store.park(id, &reason)?;
        }
    }
    Ok(())
}
