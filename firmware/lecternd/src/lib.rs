//! The daemon's supervisor: wires the crates together and runs the main loop. It decides nothing
//! itself — the recorder decides, the journal stores, capture captures, the board blinks.
//!
//! Start-up order matters and is the invariant "nothing touches media before the config is
//! valid": config (validated by the binary) → logging → GStreamer and encoder probe → journal
//! (recovery of whatever a crash left) → board → control socket → schedule → READY.
//!
//! The main loop consumes one closed [`Event`] enum from a channel fed by the button and
//! power-fail monitors, the control socket, pipeline error reports and signals, and ticks at least
//! once a second (and exactly at the recorder's next deadline) to drive time-based decisions and
//! the systemd watchdog.

mod agent;
mod board_encoder;
mod clock;
mod enrol;
mod ics_url;
mod camera;
pub mod logging;
mod mixer;
mod preview;
mod prober;
mod provision;
mod session;
mod signals;
mod status_page;
mod stitcher;
mod update;
mod uploads;
mod watchdog;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use lectern_board::{BoardIo, ButtonEvent, LedPattern};
use lectern_capture::{AudioSource, CaptureSettings, CaptureStats, EncoderChoice, EncoderInfo, VideoSource};
use lectern_config::{AudioInput, BoardBackend, Config, VideoInput};
use lectern_control::Request;
use lectern_journal::{Journal, JournalOptions, NewRecording, RecordingKind};
use lectern_recorder::{Action, Kind, Led, Outcome, PartEnd, Recorder, Settings, Slot, State};
use lectern_schedule::SkippedEvent;
use serde_json::{json, Value};

pub use clock::{Clock, SteadyClock};
use session::Session;
use agent::Agent;
use lectern_opencast::{AgentState, CalendarFetch, RecordingState as OcState};
use prober::{Probed, Prober};
use stitcher::{StitchDone, Stitcher};
use uploads::Uploads;

/// Everything that can wake the main loop.
enum Event {
    Recorder(lectern_recorder::Event),
    Control(Request, SyncSender<Result<Value, String>>),
    /// The power-fail input changed, with the instant the edge was seen.
    PowerFail(bool, Instant),
    /// A pipeline or journal error from the session of that generation.
    CaptureError { generation: u64, message: String },
    /// The stitch worker finished a recording.
    Stitched(StitchDone),
    /// A reply (or failure) of the Opencast calendar poller.
    Calendar(Result<CalendarFetch, String>),
    /// A fetch of `[schedule] ics_url`.
    IcsFetched(ics_url::Fetched),
    /// A check of the zero-touch enrolment URL.
    Enrol(enrol::Fetch),
    /// The device probe worker checked (or skipped) the camera and mic.
    DevicesProbed(Probed),
    Signal(i32),
}

/// Runs the daemon until SIGTERM/SIGINT. Returns an error only for start-up failures.
/// lecternd's provisioning flags (docs/provisioning.md).
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// `--provision-store`: where bundles are applied (default `/var/lib/lectern/provision`), and
    /// the next start runs what was applied.
    pub store: Option<std::path::PathBuf>,
    /// `--enrol`: the zero-touch enrolment file (`enrol.rs`).
    pub enrol: Option<std::path::PathBuf>,
    /// `--fleet-keys`: the trusted public keys.
    pub fleet_keys: std::path::PathBuf,
}

pub fn run(config: Config, provisioning: Provisioning) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SteadyClock::system());
    let mut daemon = Daemon::start(config, clock)?;
    daemon.provisioner.keys = provisioning.fleet_keys;
    if let Some(store) = provisioning.store {
        daemon.provisioner.store = store;
        daemon.provisioner.store_aware = true;
    }
    daemon.report_provision();
    if let Some(path) = provisioning.enrol {
        daemon.start_enrolment(&path);
    }
    daemon.main_loop();
    Ok(())
}

struct Daemon {
    config: Config,
    clock: Arc<dyn Clock>,
    recorder: Recorder,
    journal: Journal,
    board: BoardIo,
    settings: CaptureSettings,
    encoder: EncoderInfo,
    session: Option<Session>,
    /// While the recorder retries after a capture failure: the failed part's signal watch,
    /// ticked by `alarm_turn`, so the inputs that stopped (an unplugged camera) raise their loss alarms.
    retry_signals: Option<signals::SignalWatch>,
    generation: u64,
    last_stats: Option<CaptureStats>,
    power_fail: bool,
    /// When the last power-fail edge was seen, to measure edge → durable.
    power_edge: Option<Instant>,
    /// Edge → everything durable of the last power cut, in milliseconds.
    last_power_flush_ms: Option<f64>,
    /// How long the encoder took to drain into the part after that edge.
    last_power_drain_ms: Option<f64>,
    /// Where that edge → durable time went: main loop pickup, writer lock, fsync (ms).
    last_power_split_ms: Option<[f64; 3]>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    started: Instant,
    schedule_mtime: Option<SystemTime>,
    schedule_checked: Instant,
    schedule_error: Option<String>,
    /// The local schedule's (`ics` / `ics_url`) bad events, skipped; logged once per change.
    schedule_skipped: Vec<SkippedEvent>,
    _control: lectern_control::Server,
    /// The local status page (`[status_page] listen`), `None` when off or when it could not listen.
    _status_page: Option<lectern_statuspage::StatusPage>,
    /// Where the page listens, or why it does not: `status.status_page`.
    status_page_json: Value,
    stop_monitors: Arc<AtomicBool>,
    watchdog: Option<watchdog::Watchdog>,
    status_line: String,
    stitcher: Stitcher,
    /// The recording the stitch worker is busy with.
    stitching: Option<String>,
    /// A full card delays stitches until then; the last such note (logged once per change).
    stitch_wait_until: Instant,
    stitch_space_note: Option<String>,
    /// Whether the wall clock may drive the schedule, and why (see `clock.rs`).
    clock_trusted: bool,
    clock_reason: String,
    /// The Opencast agent, when `[opencast]` is configured.
    agent: Option<Agent>,
    /// The upload room, when an upload target is configured.
    uploads: Option<Uploads>,
    /// When the retention policy runs next (`maybe_evict`).
    next_retention: Instant,
    /// What the recorder was last told about the upload backlog.
    upload_backlog: bool,
    /// Uploads confirmed since this time still owe their manifest annotation.
    manifests_recorded_ms: i64,
    /// The schedule's two sources; the recorder gets their union.
    ics_slots: Vec<Slot>,
    oc_slots: Vec<Slot>,
    /// Last calendar reply that reached us, and the last failure since (for `status`).
    calendar_ok_ms: Option<i64>,
    calendar_error: Option<String>,
    /// The Opencast calendar's bad events, skipped in the last applied reply.
    calendar_skipped: Vec<SkippedEvent>,
    /// Stops the `ics_url` fetch thread when dropped.
    _ics_fetch: Option<Sender<()>>,
    /// Zero-touch enrolment (`--enrol`): the last check and the bundle waiting for an idle turn.
    enrol: Option<enrol::EnrolState>,
    _enrol_fetch: Option<Sender<()>>,
    /// The signal alarms last told to Opencast (comma-separated; `alarm_turn`).
    reported_alarms: String,
    /// The mic card's capture mixer: its last check and the cards (`mixer.rs`).
    mixer: mixer::MixerState,
    /// The V4L2 camera's identity, sizes and controls at the last recording's start (`camera.rs`).
    camera_setup: camera::CameraState,
    /// The confidence preview is open until then (`preview.rs`).
    preview_until: Option<Instant>,
    /// The idle-time device probe (`None` with `capture.probe_interval_s = 0`), whether a
    /// request is out, when the next one is due, and whether a recording has claimed the devices.
    prober: Option<Prober>,
    probe_in_flight: bool,
    next_probe: Instant,
    devices_claimed: bool,
    /// What the last probe found, for `status` (the failing inputs, for STATUS= and the LED,
    /// live in the recorder: `Recorder::device_problem`).
    camera: DeviceView,
    mic: Option<DeviceView>,
    /// A requested system update and when it may run (`update.rs`).
    updater: update::Updater,
    /// Offline enrolment from signed bundles (`provision.rs`).
    provisioner: provision::Provisioner,
}

/// One input as `status` reports it: `ok` is `None` until it was probed.
#[derive(Debug, Clone)]
struct DeviceView {
    device: String,
    ok: Option<bool>,
    error: Option<String>,
    checked_ms: Option<i64>,
}

impl DeviceView {
    fn unprobed(device: String) -> DeviceView {
        DeviceView { device, ok: None, error: None, checked_ms: None }
    }

    fn json(&self) -> Value {
        json!({ "ok": self.ok, "device": self.device, "error": self.error, "checked": self.checked_ms.map_or(Value::Null, rfc3339) })
    }

    /// Takes a probe's result; returns the log line when the verdict changed (so the log gets a
    /// line per change, not per probe).
    fn update(&mut self, check: &lectern_capture::InputCheck, now_ms: i64) -> Option<(log::Level, String)> {
        let error = check.result.as_ref().err().map(|e| e.to_string());
        let ok = error.is_none();
        let line = match (&error, self.ok) {
            (Some(e), _) if self.error.as_ref() != Some(e) => Some((log::Level::Warn, format!("device probe: {e}"))),
            (None, Some(false)) => Some((log::Level::Info, format!("device probe: {} {} can be opened again", check.input.name(), check.device))),
            (None, None) => Some((log::Level::Info, format!("device probe: {} {} can be opened", check.input.name(), check.device))),
            _ => None,
        };
        *self = DeviceView { device: check.device.clone(), ok: Some(ok), error, checked_ms: Some(now_ms) };
        line
    }
}

/// What the control socket and the status page call: the request goes to the main loop as an
/// event and the answer comes back on a channel of its own.
fn control_handler(tx: Sender<Event>) -> Box<lectern_control::Handler> {
    Box::new(move |req| {
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
        tx.send(Event::Control(req, reply_tx)).map_err(|_| "daemon is stopping".to_string())?;
        // Stopping a recording waits for the pipeline to drain, which is bounded by the capture
        // stop timeout; allow for it.
        reply_rx.recv_timeout(Duration::from_secs(30)).map_err(|_| "daemon did not answer".to_string())?
    })
}

/// Whether an interrupted ad-hoc recording's end is one `resume_adhoc` continues at start-up (a
/// crash, a shutdown, a power cut). One a capture failure ended ("device error: …") never resumes,
/// so it is final at once (`maybe_stitch`) rather than after the resume window.
fn resumes_at_start(end_reason: Option<&str>) -> bool {
    matches!(end_reason, Some("crash" | "shutdown" | "power"))
}

/// A box with no schedule source at all (no `.ics`, no `ics_url`, no Opencast) records only
/// when someone presses the button: it is not provisioned, and its idle LED says so.
fn provisioned(config: &Config) -> bool {
    config.schedule.ics.is_some() || config.schedule.ics_url.is_some() || config.opencast.is_some()
}

fn capture_settings(config: &Config) -> CaptureSettings {
    let c = &config.capture;
    CaptureSettings {
        video: match &c.video {
            VideoInput::Test { pattern } => VideoSource::Test { pattern: pattern.clone() },
            // A stable identity (`bus:…`, `card:…`) is resolved to today's node here, for the
            // idle probe, and again at each recording's start (`camera.rs`): nodes renumber.
            VideoInput::V4l2 { device } => VideoSource::V4l2 { device: lectern_capture::v4l2::resolve(&device.display().to_string()).unwrap_or_else(|_| device.clone()) },
        },
        audio: match &c.audio {
            AudioInput::None => AudioSource::None,
            AudioInput::Test => AudioSource::Test { freq_hz: 440.0 },
            AudioInput::Alsa { device } => AudioSource::Alsa { device: device.clone() },
        },
        width: c.width,
        height: c.height,
        framerate: c.framerate,
        video_bitrate_kbps: c.video_bitrate_kbps,
        audio_bitrate_kbps: c.audio_bitrate_kbps,
        encoder: c.encoder.clone().map_or(EncoderChoice::Auto, EncoderChoice::Named),
        x264_preset: c.x264_preset.clone(),
        x264_tune: c.x264_tune.clone(),
        keyframe_interval: config.journal.segment,
        analysis_fps: if config.signals.enabled { config.signals.analysis_fps } else { 0 },
        preview_width: c.preview_width,
        ..CaptureSettings::default()
    }
}

fn board_config(config: &Config) -> lectern_board::BoardConfig {
    lectern_board::BoardConfig {
        backend: match config.board.backend {
            BoardBackend::Sim => lectern_board::Backend::Sim,
            BoardBackend::Rppal => lectern_board::Backend::Rppal,
            BoardBackend::Gpiocdev => lectern_board::Backend::Gpiocdev,
            BoardBackend::Auto => lectern_board::Backend::Auto,
        },
        pinmap: config.board.pinmap.clone(),
        sim_socket: Some(config.board.sim_socket.clone()),
    }
}

fn led_pattern(led: Led) -> LedPattern {
    match led {
        Led::Off => LedPattern::Off,
        Led::Idle => LedPattern::Idle,
        Led::Recording => LedPattern::Recording,
        Led::Error => LedPattern::Error,
        Led::NotProvisioned => LedPattern::NotProvisioned,
        Led::Backlog => LedPattern::Backlog,
    }
}

fn slot_of(e: &lectern_schedule::ScheduledEvent) -> Slot {
    Slot { uid: e.uid.clone(), title: e.title.clone(), start_ms: e.start.timestamp_millis(), end_ms: e.end.timestamp_millis() }
}

/// A new local schedule `new` (a whole calendar that skipped `skipped`), with every slot of `old`
/// that a skipped event covers kept as it was: a bad copy does not cancel a lecture. Returns the
/// slots and the uids kept.
fn keep_covered(old: &[Slot], mut new: Vec<Slot>, skipped: &[SkippedEvent]) -> (Vec<Slot>, Vec<String>) {
    let mut kept = Vec::new();
    for o in old {
        if !new.iter().any(|n| n.uid == o.uid) && skipped.iter().any(|s| s.covers(&o.uid)) {
            new.push(o.clone());
            kept.push(o.uid.clone());
        }
    }
    new.sort_by(|a, b| (a.start_ms, &a.uid).cmp(&(b.start_ms, &b.uid)));
    (new, kept)
}

/// Logs a calendar's skipped events once per change (one line each, and the cached events kept
/// because of them) and remembers them for `status`.
fn note_skipped(prev: &mut Vec<SkippedEvent>, skipped: Vec<SkippedEvent>, kept: &[String], source: &str) {
    if *prev == skipped {
        return;
    }
    if skipped.is_empty() {
        log::info!(target: "lecternd", "schedule {source}: no bad events any more");
    }
    for s in &skipped {
        log::warn!(target: "lecternd", "schedule {source}: {s}");
    }
    if !kept.is_empty() {
        log::warn!(target: "lecternd", "schedule {source}: {} skipped, keeping the cached {} as they were: {}", skipped.len(), kept.len(), kept.join(", "));
    }
    *prev = skipped;
}

/// The box as the stitched recordings' manifests describe it.
fn device_json(config: &Config) -> Value {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).ok();
    json!({
        "agent": config.agent_name,
        "hostname": hostname,
        "board": format!("{:?}", config.board.backend).to_lowercase(),
        "software": format!("lecternd {}", env!("CARGO_PKG_VERSION")),
        "arch": std::env::consts::ARCH,
    })
}

fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

impl Daemon {
    fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Daemon> {
        lectern_capture::init().context("GStreamer")?;
        let settings = capture_settings(&config);
        // `encoder = "auto"` follows the detected board (board_encoder.rs).
        let hint = board_encoder::encoder_hint(lectern_board::detect().kind);
        let encoder = lectern_capture::probe_encoder_for(&settings.encoder, hint).context("no usable H.264 encoder")?;
        log::info!(target: "lecternd", "encoder {}: {}", encoder.element, encoder.reason);

        let opts = JournalOptions {
            segment_target: config.journal.segment,
            fsync_interval: config.journal.fsync_interval,
            min_free_bytes: config.journal.min_free_bytes,
            free_space: lectern_journal::FreeSpace::STATVFS,
        };
        let (mut journal, report) = Journal::open(&config.journal.media_dir, opts, clock.now_ms())
            .with_context(|| format!("journal in {}", config.journal.media_dir.display()))?;
        for action in &report.actions {
            log::warn!(target: "lecternd", "journal recovery: {action}");
        }
        if report.actions.is_empty() {
            log::info!(target: "lecternd", "journal {} opened; nothing to recover", config.journal.media_dir.display());
        }
        let _ = journal.log_state(None, "daemon_start", &format!("lecternd {}", env!("CARGO_PKG_VERSION")), clock.now_ms());

        let board = lectern_board::open(&board_config(&config)).context("board")?;
        if let Some(sim) = &board.sim {
            // The simulated button must be held past the configured thresholds to mean the same
            // thing it means on a real board.
            sim.set_hold_times(config.board.debounce * 3, config.board.long_press + Duration::from_millis(100));
        }
        let (tx, rx) = channel();
        let stop_monitors = Arc::new(AtomicBool::new(false));
        Self::spawn_inputs(&config, &board, &tx, &stop_monitors)?;

        let control = lectern_control::Server::spawn(&config.control_socket, control_handler(tx.clone()))?;
        let (status_page, status_page_json) = status_page::spawn(config.status_page, control_handler(tx.clone()));

        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT]).context("signals")?;
        let sig_tx = tx.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })?;

        let c = &config;
        let recorder = Recorder::new(Settings {
            adhoc_max_ms: c.recorder.adhoc_max.as_millis() as i64,
            retry_initial_ms: c.capture.retry_initial.as_millis() as i64,
            retry_max_ms: c.capture.retry_max.as_millis() as i64,
            power_hold_ms: c.power.hold.as_millis() as i64,
            poweroff_after_ms: c.power.poweroff_after.map(|d| d.as_millis() as i64),
            provisioned: provisioned(c),
            ..Settings::default()
        });
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| watchdog::Watchdog::new(Duration::from_micros(usec)));
        let stitch_tx = tx.clone();
        let stitcher = Stitcher::spawn(device_json(&config), clock.clone(), move |done| {
            let _ = stitch_tx.send(Event::Stitched(done));
        })?;
        let prober = match config.capture.probe_interval {
            Some(_) => {
                let probe_tx = tx.clone();
                Some(Prober::spawn(settings.clone(), move |probed| {
                    let _ = probe_tx.send(Event::DevicesProbed(probed));
                })?)
            }
            None => None,
        };
        let camera = DeviceView::unprobed(settings.camera_device());
        let mic = settings.mic_device().map(DeviceView::unprobed);
        let mut daemon = Daemon {
            config,
            clock,
            recorder,
            journal,
            board,
            settings,
            encoder,
            session: None,
            retry_signals: None,
            generation: 0,
            last_stats: None,
            power_fail: false,
            power_edge: None,
            last_power_flush_ms: None,
            last_power_drain_ms: None,
            last_power_split_ms: None,
            tx,
            rx,
            started: Instant::now(),
            schedule_mtime: None,
            schedule_checked: Instant::now(),
            schedule_error: None,
            schedule_skipped: Vec::new(),
            _control: control,
            _status_page: status_page,
            status_page_json,
            stop_monitors,
            watchdog,
            status_line: String::new(),
            stitcher,
            stitching: None,
            stitch_wait_until: Instant::now(),
            stitch_space_note: None,
            clock_trusted: false,
            clock_reason: String::new(),
            agent: None,
            uploads: None,
            next_retention: Instant::now(),
            upload_backlog: false,
            manifests_recorded_ms: 0,
            ics_slots: Vec::new(),
            oc_slots: Vec::new(),
            calendar_ok_ms: None,
            calendar_error: None,
            calendar_skipped: Vec::new(),
            _ics_fetch: None,
            enrol: None,
            _enrol_fetch: None,
            reported_alarms: String::new(),
            mixer: mixer::MixerState::new(),
            camera_setup: camera::CameraState::default(),
            preview_until: None,
            prober,
            probe_in_flight: false,
            // The first probe right away: a box booted without its camera should say so at once.
            next_probe: Instant::now(),
            devices_claimed: false,
            camera,
            mic,
            updater: update::Updater::new(Arc::new(update::Rauc::default())),
            provisioner: provision::Provisioner::system(),
        };
        daemon.check_clock();
        daemon.start_agent()?;
        let hooks = daemon.agent.as_ref().map(|a| a.upload_hooks(&daemon.journal.db_path()));
        daemon.uploads = Uploads::start(&daemon.config, &daemon.journal.db_path(), daemon.clock.clone(), hooks)?;
        daemon.manifests_recorded_ms = daemon.clock.now_ms();
        if let Some(u) = daemon.uploads.as_mut() {
            u.adopt_outbox_ingests(&daemon.journal.db_path(), &daemon.journal, &daemon.config.journal.media_dir, daemon.clock.now_ms());
        }
        if let Some(url) = daemon.config.schedule.ics_url.clone() {
            let tx = daemon.tx.clone();
            daemon._ics_fetch = Some(ics_url::spawn(url, daemon.config.schedule.reload, move |f| {
                let _ = tx.send(Event::IcsFetched(f));
            })?);
        }
        daemon.board.led.set_pattern(led_pattern(daemon.recorder.idle_led()));
        if !provisioned(&daemon.config) {
            log::warn!(target: "lecternd", "not provisioned: no [schedule] ics, ics_url or [opencast] url; recording only on the button or `lectern record start`");
        }
        daemon.reload_schedule(true);
        daemon.resume_adhoc();
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        log::info!(
            target: "lecternd",
            "ready: agent {}, media {}, control {}, board {:?}",
            daemon.config.agent_name,
            daemon.config.journal.media_dir.display(),
            daemon.config.control_socket.display(),
            daemon.config.board.backend
        );
        daemon.publish_status();
        daemon.maybe_probe();
        Ok(daemon)
    }

    fn spawn_inputs(config: &Config, board: &BoardIo, tx: &Sender<Event>, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
        let btn_tx = tx.clone();
        lectern_board::spawn_button_monitor(
            board.take_button()?,
            config.board.debounce,
            config.board.long_press,
            stop.clone(),
            move |ev| {
                let ev = match ev {
                    ButtonEvent::Press => lectern_recorder::Event::ButtonPress,
                    ButtonEvent::LongPress => lectern_recorder::Event::ButtonLongPress,
                };
                let _ = btn_tx.send(Event::Recorder(ev));
            },
        )?;
        let pf_tx = tx.clone();
        lectern_board::spawn_power_fail_monitor(board.take_power_fail()?, stop.clone(), move |asserted| {
            let _ = pf_tx.send(Event::PowerFail(asserted, Instant::now()));
        })?;
        Ok(())
    }

    fn main_loop(mut self) {
        // The recorder's clock turns on a tick at least every TICK and at each deadline it names,
        // however busy the channel is: a status poll every 50 ms must not keep a scheduled
        // lecture from starting (ticks used to be fed only when the wait timed out).
        const TICK: Duration = Duration::from_secs(1);
        let mut last_tick = Instant::now();
        loop {
            let now = self.clock.now_ms();
            let mut wait = TICK.saturating_sub(last_tick.elapsed());
            let deadline = self.recorder.next_deadline(now);
            if let Some(deadline) = deadline {
                wait = wait.min(Duration::from_millis((deadline - now).max(0) as u64));
            }
            let event = match self.rx.recv_timeout(wait) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if *self.recorder.state() == State::Idle {
                // Only while idle: a step during a recording must not cut or stretch it.
                if let Some(step) = self.clock.reanchor() {
                    log::warn!(target: "lecternd", "wall clock stepped by {:+.3} s; following it (idle)", step as f64 / 1e3);
                    let _ = self.journal.log_state(None, "clock_step", &format!("{step:+} ms"), self.clock.now_ms());
                }
            }
            if !self.clock_trusted {
                self.check_clock();
            }
            let stop = match event {
                None => false,
                Some(ev) => self.on_event(ev),
            };
            let tick_due = last_tick.elapsed() >= TICK || deadline.is_some_and(|d| d <= self.clock.now_ms());
            if !stop && tick_due {
                last_tick = Instant::now();
                self.reload_schedule(false);
                let _ = self.feed(lectern_recorder::Event::Tick);
            }
            if !stop {
                self.maybe_stitch();
                self.maybe_probe();
                self.uploads_turn();
                self.update_turn();
                self.provision_turn();
                self.alarm_turn();
                self.preview_turn();
            }
            self.publish_status();
            if stop {
                break;
            }
        }
        self.stop_monitors.store(true, Ordering::SeqCst);
        let _ = self.journal.log_state(None, "daemon_stop", "clean shutdown", self.clock.now_ms());
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        log::info!(target: "lecternd", "stopped");
    }

    /// Returns true when the daemon should exit.
    fn on_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Recorder(ev) => self.feed(ev).map(|_| false).unwrap_or(false),
            Event::Control(req, reply) => {
                let answer = self.control(req);
                let _ = reply.send(answer);
                false
            }
            Event::PowerFail(asserted, at) => {
                self.power_fail = asserted;
                if asserted {
                    log::warn!(target: "lecternd", "power-fail line asserted");
                    self.power_edge = Some(at);
                    let _ = self.feed(lectern_recorder::Event::PowerFail);
                } else {
                    log::info!(target: "lecternd", "power-fail line cleared");
                    let _ = self.feed(lectern_recorder::Event::PowerRestored);
                }
                false
            }
            Event::CaptureError { generation, message } => {
                if self.session.as_ref().is_some_and(|s| s.generation == generation) {
                    log::error!(target: "lecternd", "recording {}: capture failed: {message}", self.session.as_ref().unwrap().recording_id);
                    let _ = self.feed(lectern_recorder::Event::CaptureFailed { message });
                } else {
                    log::debug!(target: "lecternd", "stale error from session {generation}: {message}");
                }
                false
            }
            Event::Stitched(done) => {
                if let Err(e) = &done.result {
                    log::warn!(target: "lecternd", "recording {}: stitch ended without a file: {e}", done.recording_id);
                }
                self.stitching = None;
                self.queue_upload(&done);
                false
            }
            Event::Calendar(reply) => {
                self.on_calendar(reply);
                false
            }
            Event::IcsFetched(fetched) => {
                self.on_ics_fetched(fetched);
                false
            }
            Event::Enrol(fetch) => {
                let now = self.clock.now_ms();
                if let Some(e) = self.enrol.as_mut() {
                    e.on_fetch(fetch, now);
                }
                false
            }
            Event::DevicesProbed(probed) => {
                self.on_probed(probed);
                false
            }
            Event::Signal(sig) => {
                log::info!(target: "lecternd", "signal {sig}: stopping");
                let _ = self.feed(lectern_recorder::Event::Shutdown);
                true
            }
        }
    }

    /// Feeds the recorder and carries out its actions. Returns the rejection, if any.
    fn feed(&mut self, ev: lectern_recorder::Event) -> Result<(), String> {
        let now = self.clock.now_ms();
        let mut queue: std::collections::VecDeque<Action> = self.recorder.handle(ev, now).into();
        let mut rejected = Ok(());
        while let Some(action) = queue.pop_front() {
            match action {
                Action::BeginRecording(spec) => {
                    let rec = NewRecording {
                        id: spec.id.clone(),
                        title: spec.title.clone(),
                        kind: match spec.kind {
                            Kind::Adhoc => RecordingKind::Adhoc,
                            Kind::Scheduled { .. } => RecordingKind::Scheduled,
                        },
                        event_uid: match &spec.kind {
                            Kind::Scheduled { uid } => Some(uid.clone()),
                            Kind::Adhoc => None,
                        },
                    };
                    log::info!(target: "lecternd", "recording {}: begins ({:?}, {:?})", spec.id, spec.kind, spec.title);
                    if let Err(e) = self.journal.start_recording(&rec, now) {
                        log::error!(target: "lecternd", "recording {}: journal refused it: {e}", spec.id);
                    }
                    if let Some(agent) = self.agent.as_mut() {
                        agent.agent_state(AgentState::Capturing, now);
                        if let Some(uid) = rec.event_uid.as_deref().filter(|u| self.oc_slots.iter().any(|s| s.uid == *u)) {
                            agent.recording_state(uid, OcState::Capturing, now);
                        }
                    }
                }
                Action::StartCapture { recording_id } => {
                    self.claim_devices(&recording_id);
                    self.mixer.before_recording(&self.config.capture, &self.settings, &recording_id);
                    self.camera_setup.before_recording(&self.config.capture, &mut self.settings, &recording_id);
                    self.generation += 1;
                    let generation = self.generation;
                    // `Sender` is Clone + Sync, so the reporter is a plain cloneable closure.
                    let tx = self.tx.clone();
                    let report = move |generation: u64, message: String| {
                        let _ = tx.send(Event::CaptureError { generation, message });
                    };
                    match Session::start(
                        &mut self.journal,
                        &recording_id,
                        &self.settings,
                        &self.encoder,
                        generation,
                        &self.clock,
                        &self.config.signals,
                        report,
                    ) {
                        Ok(s) => {
                            log::info!(target: "lecternd", "recording {recording_id}: capturing with {}", s.encoder().element);
                            self.session = Some(s);
                            self.retry_signals = None;
                        }
                        Err(message) => {
                            log::error!(target: "lecternd", "recording {recording_id}: capture did not start: {message}");
                            // The failed part is already closed; the recorder decides the retry.
                            queue.extend(self.recorder.handle(lectern_recorder::Event::CaptureFailed { message }, self.clock.now_ms()));
                            // StopCapture for a session that never started is a no-op below.
                        }
                    }
                }
                Action::StopCapture { recording_id, end } => {
                    if let Some(session) = self.session.take() {
                        let watch = session.signals().clone();
                        self.retry_signals = matches!(end, PartEnd::Failed(_)).then(|| watch.clone());
                        let end = match end {
                            PartEnd::Closed => lectern_journal::PartEnd::Closed,
                            PartEnd::Interrupted(r) => lectern_journal::PartEnd::Interrupted(r),
                            PartEnd::Failed(r) => lectern_journal::PartEnd::Failed(r),
                        };
                        match session.stop(end, &*self.clock) {
                            Ok((part, stats)) => {
                                signals::persist(&mut self.journal, &watch, &part);
                                log::info!(target: "lecternd", "recording {recording_id}: part closed: {part:?}; capture {stats:?}");
                                self.last_stats = Some(stats);
                            }
                            Err(e) => log::error!(target: "lecternd", "{e}"),
                        }
                    }
                }
                Action::PowerCut { recording_id } => {
                    if let Some(session) = self.session.take() {
                        let watch = session.signals().clone();
                        match session.power_cut(&*self.clock, self.config.power.drain) {
                            Ok((part, times)) => {
                                signals::persist(&mut self.journal, &watch, &part);
                                let ms_between = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
                                let ms = self.power_edge.map(|t| ms_between(t, times.durable_at));
                                self.last_power_flush_ms = ms;
                                self.last_power_split_ms = self.power_edge.map(|t| {
                                    [ms_between(t, times.began), ms_between(times.began, times.locked_at), ms_between(times.locked_at, times.durable_at)]
                                });
                                self.last_power_drain_ms = times.drained.map(|d| d.as_secs_f64() * 1000.0);
                                let drain = match times.drained {
                                    Some(d) => format!("encoder drained in {:.0} ms", d.as_secs_f64() * 1000.0),
                                    None => "encoder not drained".to_owned(),
                                };
                                log::warn!(
                                    target: "lecternd",
                                    "recording {recording_id}: power-fail: everything captured durable {:.1} ms after the edge ({}); {drain}; {} segments committed",
                                    ms.unwrap_or(f64::NAN),
                                    self.last_power_split_ms.map(|[a, b, c]| format!("main loop {a:.1} ms, writer {b:.1} ms, fsync {c:.1} ms")).unwrap_or_default(),
                                    part.segments,
                                );
                                let _ = self.journal.log_state(
                                    Some(&recording_id),
                                    "power_cut",
                                    &format!("durable {:.1} ms after the edge; {drain}", ms.unwrap_or(f64::NAN)),
                                    self.clock.now_ms(),
                                );
                            }
                            Err(e) => log::error!(target: "lecternd", "{e}"),
                        }
                    }
                }
                Action::FinishRecording { recording_id, outcome } => {
                    let outcome = match outcome {
                        Outcome::Completed => lectern_journal::Outcome::Completed,
                        Outcome::Interrupted(r) => lectern_journal::Outcome::Interrupted(r),
                    };
                    let completed = outcome == lectern_journal::Outcome::Completed;
                    match self.journal.finish_recording(&recording_id, outcome, self.clock.now_ms()) {
                        Ok(()) => {
                            // A completed recording is final at once; an interrupted one only when
                            // it will not be resumed (see `maybe_stitch`).
                            if let Some(agent) = self.agent.as_mut() {
                                agent.agent_state(AgentState::Idle, self.clock.now_ms());
                            }
                            if completed {
                                self.declare_final(&recording_id);
                            }
                            if let Ok(Some(r)) = self.journal.recording(&recording_id) {
                                log::info!(
                                    target: "lecternd",
                                    "recording {recording_id}: {} ({} segments, {} bytes, {:.1} s) in {}",
                                    r.state,
                                    r.segments,
                                    r.bytes,
                                    r.media_duration_ns as f64 / 1e9,
                                    self.config.journal.media_dir.join("recordings").join(&recording_id).display()
                                );
                            }
                        }
                        Err(e) => log::error!(target: "lecternd", "recording {recording_id}: cannot finish: {e}"),
                    }
                }
                Action::SetLed(led) => self.board.led.set_pattern(led_pattern(led)),
                Action::PowerOff => {
                    // Everything is already committed (the power cut came first); ask systemd for
                    // an orderly power-off, which SIGTERMs us like any other shutdown.
                    let _ = self.journal.log_state(None, "poweroff", "power-fail line stayed asserted", now);
                    match std::process::Command::new("systemctl").arg("poweroff").status() {
                        Ok(st) if st.success() => log::warn!(target: "lecternd", "power-off requested"),
                        Ok(st) => log::error!(target: "lecternd", "systemctl poweroff failed: {st}"),
                        Err(e) => log::error!(target: "lecternd", "cannot run systemctl poweroff: {e}"),
                    }
                }
                Action::Rejected(why) => {
                    log::info!(target: "lecternd", "request rejected: {why}");
                    rejected = Err(why);
                }
                Action::Note(note) => log::info!(target: "lecternd", "{note}"),
            }
        }
        self.release_devices_if_idle();
        rejected
    }

    /// Before a capture opens the camera and mic: no probe may start, and a running one is
    /// waited for (bounded; `prober.rs` has the ordering).
    fn claim_devices(&mut self, recording_id: &str) {
        self.devices_claimed = true;
        let Some(prober) = &self.prober else { return };
        match prober.gate.claim(prober::CLAIM_WAIT) {
            Ok(waited) if waited >= Duration::from_millis(10) => {
                log::info!(target: "lecternd", "recording {recording_id}: waited {} ms for the device probe to close the devices", waited.as_millis());
            }
            Ok(_) => {}
            Err(waited) => log::warn!(
                target: "lecternd",
                "recording {recording_id}: the device probe still holds the devices after {} ms; starting the capture anyway",
                waited.as_millis()
            ),
        }
    }

    /// Once the recorder is idle again the devices are free: probes may run, and the next one
    /// comes at once so the idle LED shows what holds now, not what held before the recording.
    fn release_devices_if_idle(&mut self) {
        if self.devices_claimed && *self.recorder.state() == State::Idle {
            self.devices_claimed = false;
            if let Some(prober) = &self.prober {
                prober.gate.release();
            }
            self.next_probe = Instant::now();
        }
    }

    /// Asks the probe worker for a probe when one is due and the box is idle.
    fn maybe_probe(&mut self) {
        let Some(prober) = &self.prober else { return };
        if self.probe_in_flight || self.devices_claimed || *self.recorder.state() != State::Idle || Instant::now() < self.next_probe {
            return;
        }
        if prober.request() {
            self.probe_in_flight = true;
        } else {
            log::error!(target: "lecternd", "the device probe worker is gone; devices are no longer checked while idle");
            self.prober = None;
        }
    }

    /// A probe's result: status, a log line per change, and the recorder's idle LED.
    fn on_probed(&mut self, probed: Probed) {
        self.probe_in_flight = false;
        self.next_probe = Instant::now() + self.config.capture.probe_interval.unwrap_or_default();
        let report = match probed {
            Probed::Report(r) => r,
            Probed::Skipped => {
                log::debug!(target: "lecternd", "device probe skipped: a recording has the devices");
                return;
            }
        };
        let now = self.clock.now_ms();
        let mut lines = vec![self.camera.update(&report.camera, now)];
        if let (Some(view), Some(check)) = (self.mic.as_mut(), report.mic.as_ref()) {
            lines.push(view.update(check, now));
        }
        for (level, line) in lines.into_iter().flatten() {
            log::log!(target: "lecternd", level, "{line}");
        }
        let failing: Vec<String> = [("camera", Some(&self.camera)), ("mic", self.mic.as_ref())]
            .into_iter()
            .filter_map(|(input, view)| view.filter(|v| v.ok == Some(false)).map(|v| format!("{input} {} unavailable", v.device)))
            .collect();
        let _ = self.feed(lectern_recorder::Event::DevicesProbed { problem: (!failing.is_empty()).then(|| failing.join(", ")) });
    }

    fn control(&mut self, req: Request) -> Result<Value, String> {
        match req {
            Request::Status => Ok(self.status_json()),
            Request::RecordStart { title } => {
                self.feed(lectern_recorder::Event::CliStart { title })?;
                Ok(self.status_json())
            }
            Request::RecordStop => {
                let id = self.recorder.state().active().map(|a| a.spec.id.clone());
                self.feed(lectern_recorder::Event::CliStop)?;
                let rec = id.and_then(|id| self.journal.recording(&id).ok().flatten());
                Ok(json!({ "stopped": rec }))
            }
            Request::Recordings => {
                let list = self.journal.recordings().map_err(|e| e.to_string())?;
                Ok(json!({ "recordings": self.recording_rows(list)? }))
            }
            Request::NewestRecordings { n } => {
                let (list, total) = self.journal.newest_recordings(n).map_err(|e| e.to_string())?;
                Ok(json!({ "recordings": self.recording_rows(list)?, "total": total }))
            }
            Request::Segments { recording_id } => {
                let segs = self.journal.segments(&recording_id).map_err(|e| e.to_string())?;
                Ok(json!({ "recording_id": recording_id, "segments": segs }))
            }
            Request::Uploads => match &self.uploads {
                Some(u) => u.list_json(self.clock.now_ms()),
                None => Ok(json!({ "uploads": [], "endpoints": [], "alarms": [], "note": "no upload target configured" })),
            },
            Request::UploadRetry { recording_id } => match &mut self.uploads {
                Some(u) => u.retry(&recording_id, self.clock.now_ms()),
                None => Err("no upload target configured".to_owned()),
            },
            Request::Update { bundle } => self.update_request(&bundle),
            Request::Provision { bundle } => self.provision_request(&bundle),
            Request::Preview => self.preview_request(),
        }
    }

    /// The `recordings` rows: each recording with its stitch and the signal report's verdict
    /// (the manifest's `quality`: ok, flagged, or empty_room, with the alarms' names).
    fn recording_rows(&self, list: Vec<lectern_journal::RecordingSummary>) -> Result<Vec<Value>, String> {
        let mut out = Vec::with_capacity(list.len());
        for r in list {
            let stitch = self.journal.stitch_status(&r.id).map_err(|e| e.to_string())?;
            let mut v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
            v["stitch"] = stitch.map_or(Value::Null, |s| {
                json!({ "state": s.state, "path": s.path, "manifest": s.manifest_path, "bytes": s.bytes, "sha256": s.sha256, "error": s.error })
            });
            let (verdict, alarms) = self.journal.quality(&r.id, r.kind == RecordingKind::Scheduled).map_err(|e| e.to_string())?;
            v["quality"] = json!({ "verdict": verdict, "alarms": alarms });
            out.push(v);
        }
        Ok(out)
    }

    /// Free space on the media volume against the journal's reserve, read when asked (one
    /// `statvfs`): `full` is what makes the journal refuse parts. `free_mb` is null when the
    /// volume reports no size or cannot be read (the error is then given).
    fn storage_json(&self) -> Value {
        let reserve = self.config.journal.min_free_bytes;
        let (free, error) = match lectern_journal::statvfs_free(&self.config.journal.media_dir) {
            Ok(free) => (free, None),
            Err(e) => (None, Some(format!("statvfs {}: {e}", self.config.journal.media_dir.display()))),
        };
        json!({
            "free_mb": free.map(|f| f / (1024 * 1024)),
            "reserve_mb": reserve / (1024 * 1024),
            "full": reserve > 0 && free.is_some_and(|f| f < reserve),
            "error": error,
        })
    }

    fn status_json(&self) -> Value {
        let state = self.recorder.state();
        let recording = state.active().map(|a| {
            let (kind, uid) = match &a.spec.kind {
                Kind::Adhoc => ("adhoc", None),
                Kind::Scheduled { uid } => ("scheduled", Some(uid.clone())),
            };
            json!({
                "id": a.spec.id,
                "title": a.spec.title,
                "kind": kind,
                "event_uid": uid,
                "started_at": rfc3339(a.spec.started_at_ms),
                "planned_end": rfc3339(a.spec.planned_end_ms),
                "failures": a.failures,
                "last_error": a.last_error,
            })
        });
        let retry_at = match state {
            State::Retrying { retry_at_ms, .. } => rfc3339(*retry_at_ms),
            _ => Value::Null,
        };
        let stats = self.session.as_ref().map(|s| s.stats()).or(self.last_stats.clone());
        let retrying = matches!(state, State::Retrying { .. });
        let watch = self.session.as_ref().map(Session::signals).or(self.retry_signals.as_ref().filter(|_| retrying));
        let now = self.clock.now_ms();
        let next = self.recorder.schedule().iter().find(|s: &&Slot| s.end_ms > now).map(|s| {
            json!({ "uid": s.uid, "title": s.title, "start": rfc3339(s.start_ms), "end": rfc3339(s.end_ms) })
        });
        json!({
            "agent": self.config.agent_name,
            "version": env!("CARGO_PKG_VERSION"),
            "state": state.name(),
            "recording": recording,
            "retry_at": retry_at,
            "led": self.board.led.pattern().to_string(),
            "power_fail": self.power_fail,
            "power": {
                "failing": self.power_fail,
                "last_flush_ms": self.last_power_flush_ms,
                "last_flush_split_ms": self.last_power_split_ms.map(|[a, b, c]| json!({ "main_loop": a, "writer": b, "fsync": c })),
                "last_drain_ms": self.last_power_drain_ms,
            },
            "encoder": { "element": self.encoder.element, "reason": self.encoder.reason },
            "capture": stats.map(|s| json!({
                "frames_in": s.frames_in,
                "frames_expected": s.frames_expected,
                "frames_dropped": s.dropped,
                "running_time_s": s.running_time.as_secs_f64(),
            })),
            "schedule": {
                "source": self.config.schedule.ics.as_ref().map(|p| p.display().to_string()).or(self.config.schedule.ics_url.clone()),
                "events": self.recorder.schedule().len(),
                "next": next,
                "error": self.schedule_error,
                "skipped": self.schedule_skipped,
            },
            "media_dir": self.config.journal.media_dir.display().to_string(),
            "storage": self.storage_json(),
            "stitching": self.stitching,
            "clock": { "trusted": self.clock_trusted, "reason": self.clock_reason },
            "opencast": self.agent.as_ref().map(|a| json!({
                "url": a.config.url,
                "calendar": {
                    "reachable": self.calendar_error.is_none() && self.calendar_ok_ms.is_some(),
                    "last_ok": self.calendar_ok_ms.map_or(Value::Null, rfc3339),
                    "error": self.calendar_error,
                    "skipped": self.calendar_skipped,
                    "cached_events": self.oc_slots.len(),
                },
                "outbox_pending": a.pending(),
            })),
            "uploads": self.uploads.as_ref().map(|u| u.status_json(now)),
            "update": self.updater.status_json(),
            "provision": self.provision_status(),
            "signals": signals::status_json(&self.config.signals, watch, Instant::now()),
            "devices": {
                "camera": self.camera.json(),
                "mic": self.mic.as_ref().map(DeviceView::json),
                "mixer": self.mixer.last,
                "camera_setup": self.camera_setup.last,
                "cards": self.mixer.cards,
            },
            "provisioned": provisioned(&self.config),
            "status_page": self.status_page_json,
            "uptime_s": self.started.elapsed().as_secs(),
        })
    }

    /// At start-up: resumes the most recent ad-hoc recording that a crash, reboot or power cut
    /// interrupted less than `resume_adhoc_window` ago. (Scheduled ones resume through the
    /// schedule: their event is still due.)
    fn resume_adhoc(&mut self) {
        let window = self.config.recorder.resume_adhoc_window.as_millis() as i64;
        if window == 0 || *self.recorder.state() != State::Idle {
            return;
        }
        let now = self.clock.now_ms();
        let recordings = match self.journal.recordings() {
            Ok(r) => r,
            Err(e) => {
                log::error!(target: "lecternd", "cannot look for recordings to resume: {e}");
                return;
            }
        };
        let candidate = recordings
            .into_iter()
            .filter(|r| r.kind == lectern_journal::RecordingKind::Adhoc && r.state == lectern_journal::RecordingState::Interrupted)
            .filter(|r| resumes_at_start(r.end_reason.as_deref()))
            .filter(|r| r.ended_at_ms.is_some_and(|t| t >= now - window))
            .max_by_key(|r| r.ended_at_ms);
        if let Some(r) = candidate {
            log::info!(target: "lecternd", "recording {}: interrupted ({}) {} s ago; resuming", r.id, r.end_reason.as_deref().unwrap_or("?"), (now - r.ended_at_ms.unwrap_or(now)) / 1000);
            let _ = self.feed(lectern_recorder::Event::ResumeAdhoc { id: r.id, title: r.title, started_at_ms: r.started_at_ms });
        }
    }

    /// Asks whether the wall clock can be trusted yet and tells the recorder when that changes.
    fn check_clock(&mut self) {
        let policy = match self.config.clock_trust {
            lectern_config::ClockTrust::Auto => clock::TrustPolicy::Auto,
            lectern_config::ClockTrust::Always => clock::TrustPolicy::Always,
            lectern_config::ClockTrust::Never => clock::TrustPolicy::Never,
        };
        let (trusted, reason) = clock::trust(policy, &clock::TrustProbe::default());
        let first = self.clock_reason.is_empty();
        if reason != self.clock_reason {
            if trusted {
                log::info!(target: "lecternd", "clock trusted: {reason}");
            } else {
                log::warn!(target: "lecternd", "clock not trusted, scheduled recordings wait: {reason}");
            }
        }
        self.clock_reason = reason;
        if trusted && *self.recorder.state() == State::Idle {
            // NTP usually steps the clock when it first synchronises: follow it before the
            // schedule is applied.
            if let Some(step) = self.clock.reanchor() {
                log::warn!(target: "lecternd", "wall clock stepped by {:+.3} s when it became trusted", step as f64 / 1e3);
            }
        }
        if trusted != self.clock_trusted || first {
            self.clock_trusted = trusted;
            let _ = self.feed(lectern_recorder::Event::ClockTrust(trusted));
        }
    }

    /// Declares interrupted recordings final once they will not be resumed, and hands the oldest
    /// pending stitch to the worker. Only while idle: a stitch competes with a recording for the
    /// card, and a recording that is about to resume is not final.
    ///
    /// An interrupted recording will not be resumed when it is ad-hoc and older than
    /// `resume_adhoc_window` or ended by a capture failure (`resumes_at_start`), or scheduled and
    /// its event (still in the schedule) has ended or is gone from the schedule. A power-lost
    /// recording is never idle, so never final here.
    fn maybe_stitch(&mut self) {
        if self.stitching.is_some() || *self.recorder.state() != State::Idle {
            return;
        }
        let now = self.clock.now_ms();
        let window = self.config.recorder.resume_adhoc_window.as_millis() as i64;
        match self.journal.interrupted_not_final() {
            Ok(list) => {
                for r in list {
                    let resumable = match (&r.kind, &r.event_uid) {
                        (RecordingKind::Scheduled, Some(uid)) => self.recorder.schedule().iter().any(|s| &s.uid == uid && s.end_ms > now),
                        _ => r.ended_at_ms.is_some_and(|t| t >= now - window) && window > 0 && resumes_at_start(r.end_reason.as_deref()),
                    };
                    if !resumable {
                        log::info!(target: "lecternd", "recording {}: interrupted ({}) and not resumable; final", r.id, r.end_reason.as_deref().unwrap_or("?"));
                        self.declare_final(&r.id);
                    }
                }
            }
            Err(e) => log::error!(target: "lecternd", "cannot look for interrupted recordings: {e}"),
        }
        let pending = match self.journal.pending_stitches() {
            Ok(p) => p,
            Err(e) => {
                log::error!(target: "lecternd", "cannot list pending stitches: {e}");
                return;
            }
        };
        if Instant::now() < self.stitch_wait_until {
            return;
        }
        for id in pending {
            match self.journal.stitch_job(&id, now) {
                Ok(job) => {
                    self.stitching = Some(id);
                    self.stitcher.submit(job);
                    return;
                }
                // A full card delays stitches (uploads and retention free the space): look again
                // in a minute, and say so once per change.
                Err(e @ lectern_journal::JournalError::StitchNeedsSpace { .. }) => {
                    let msg = e.to_string();
                    if self.stitch_space_note.as_deref() != Some(msg.as_str()) {
                        log::warn!(target: "lecternd", "{msg}");
                        self.stitch_space_note = Some(msg);
                    }
                    self.stitch_wait_until = Instant::now() + Duration::from_secs(60);
                    return;
                }
                // Gave up after too many attempts, or raced with a resume: try the next one.
                Err(e) => log::warn!(target: "lecternd", "recording {id}: not stitched: {e}"),
            }
        }
    }

    /// A recording will not change any more: it owes a stitch, and Opencast hears how the
    /// capture ended (for a scheduled event it knows).
    fn declare_final(&mut self, recording_id: &str) {
        let now = self.clock.now_ms();
        if let Err(e) = self.journal.request_stitch(recording_id, now) {
            log::error!(target: "lecternd", "recording {recording_id}: cannot queue its stitch: {e}");
        }
        let Some(agent) = self.agent.as_mut() else { return };
        let Ok(Some(rec)) = self.journal.recording(recording_id) else { return };
        if let Some(uid) = rec.event_uid.as_deref().filter(|_| rec.kind == RecordingKind::Scheduled) {
            let state = if rec.segments > 0 { OcState::CaptureFinished } else { OcState::CaptureError };
            agent.recording_state(uid, state, now);
        }
    }

    /// Starts the Opencast agent if configured, with the cached calendar as the schedule until
    /// the server answers (a server that is down for days must not stop lectures being recorded).
    fn start_agent(&mut self) -> anyhow::Result<()> {
        let Some(oc) = self.config.opencast.clone() else { return Ok(()) };
        let cached = self.journal.cached_schedule().context("cached schedule")?;
        let etag = self.journal.schedule_meta().context("schedule cache")?.and_then(|m| m.etag);
        log::info!(target: "lecternd", "opencast {}: {} cached events until the calendar answers", oc.url, cached.len());
        self.oc_slots = cached.iter().map(slot_of).collect();
        let mut capabilities = std::collections::BTreeMap::new();
        capabilities.insert("capture.device.names".to_owned(), "presenter".to_owned());
        capabilities.insert("capture.device.presenter.flavor".to_owned(), oc.flavor.clone());
        capabilities.insert("capture.device.presenter.src".to_owned(), format!("{:?}", self.settings.video));
        capabilities.extend(self.provisioner.capabilities());
        capabilities.insert("lectern.signals.alarms".to_owned(), String::new());
        let tx = self.tx.clone();
        let agent = Agent::start(&oc, &self.config.agent_name, capabilities, &self.journal.db_path(), self.clock.clone(), etag, move |reply| {
            let _ = tx.send(Event::Calendar(reply));
        })?;
        self.agent = Some(agent);
        self.feed_schedule();
        Ok(())
    }

    /// One reply of the calendar poller: only a complete calendar changes the cache.
    fn on_calendar(&mut self, reply: Result<CalendarFetch, String>) {
        let now = self.clock.now_ms();
        let Some(agent) = self.agent.as_ref() else { return };
        let source = agent.source.clone();
        let opts = lectern_schedule::ParseOptions::around(chrono::DateTime::from_timestamp_millis(now).unwrap_or_default());
        let (status, etag, body) = match &reply {
            Ok(CalendarFetch::NotModified) => (304, None, &[][..]),
            Ok(CalendarFetch::Calendar { etag, bytes }) => (200, etag.as_deref(), &bytes[..]),
            Err(e) => {
                if self.calendar_error.as_deref() != Some(e) {
                    log::warn!(target: "lecternd", "opencast calendar unreachable, recording from the {} cached events: {e}", self.oc_slots.len());
                }
                self.calendar_error = Some(e.clone());
                return;
            }
        };
        match self.journal.apply_calendar_reply(&source, status, etag, body, &opts, now) {
            Ok(lectern_journal::ReplyOutcome::Applied { changes, skipped, kept }) => {
                self.calendar_ok_ms = Some(now);
                self.calendar_error = None;
                note_skipped(&mut self.calendar_skipped, skipped, &kept, &source);
                agent.set_etag(etag.map(str::to_owned));
                if !changes.is_empty() || self.oc_slots.is_empty() {
                    match self.journal.cached_schedule() {
                        Ok(events) => {
                            self.oc_slots = events.iter().map(slot_of).collect();
                            log::info!(target: "lecternd", "opencast calendar: {} events ({} changes, {} skipped)", self.oc_slots.len(), changes.len(), self.calendar_skipped.len());
                            self.feed_schedule();
                        }
                        Err(e) => log::error!(target: "lecternd", "cannot read the schedule cache: {e}"),
                    }
                }
            }
            Ok(lectern_journal::ReplyOutcome::NotModified) => {
                self.calendar_ok_ms = Some(now);
                self.calendar_error = None;
            }
            Ok(lectern_journal::ReplyOutcome::Rejected(e)) => self.calendar_error = Some(format!("calendar rejected, cache kept: {e}")),
            Err(e) => log::error!(target: "lecternd", "cannot store the calendar: {e}"),
        }
    }

    /// A fetch of `[schedule] ics_url`: only a complete, parsable calendar replaces the slots.
    fn on_ics_fetched(&mut self, fetched: ics_url::Fetched) {
        let Some(url) = self.config.schedule.ics_url.clone() else { return };
        let now = self.clock.now_ms();
        let opts = lectern_schedule::ParseOptions::around(chrono::DateTime::from_timestamp_millis(now).unwrap_or_default());
        let result = fetched.and_then(|(status, body)| lectern_schedule::parse_reply(status, &body, &opts).map_err(|e| format!("{url}: {e}")));
        match result {
            Ok(lectern_schedule::Reply::Calendar(cal)) => {
                if self.schedule_error.take().is_some() || self.ics_slots.len() != cal.events.len() {
                    log::info!(target: "lecternd", "schedule {url}: {} events, {} skipped", cal.events.len(), cal.skipped.len());
                }
                let (slots, kept) = keep_covered(&self.ics_slots, cal.events.iter().map(slot_of).collect(), &cal.skipped);
                note_skipped(&mut self.schedule_skipped, cal.skipped, &kept, &url);
                if slots != self.ics_slots {
                    self.ics_slots = slots;
                    self.feed_schedule();
                }
            }
            Ok(lectern_schedule::Reply::NotModified) => self.schedule_error = None,
            Err(msg) => {
                if self.schedule_error.as_deref() != Some(&msg) {
                    log::error!(target: "lecternd", "schedule not updated, keeping {} events: {msg}", self.ics_slots.len());
                }
                self.schedule_error = Some(msg);
            }
        }
    }

    /// The recorder's schedule: the Opencast calendar's cached events and the local `.ics`.
    fn feed_schedule(&mut self) {
        let mut slots = self.oc_slots.clone();
        slots.extend(self.ics_slots.iter().filter(|s| !self.oc_slots.iter().any(|o| o.uid == s.uid)).cloned());
        let _ = self.feed(lectern_recorder::Event::ScheduleLoaded(slots));
    }

    /// Reloads the local `.ics` file when it changed. A file that fails to parse never replaces
    /// the schedule the box already has.
    fn reload_schedule(&mut self, force: bool) {
        let Some(path) = self.config.schedule.ics.clone() else { return };
        if !force && self.schedule_checked.elapsed() < self.config.schedule.reload {
            return;
        }
        self.schedule_checked = Instant::now();
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if !force && mtime == self.schedule_mtime {
            return;
        }
        match lectern_schedule::load_file(&path) {
            Ok(cal) => {
                self.schedule_mtime = mtime;
                self.schedule_error = None;
                log::info!(target: "lecternd", "schedule {}: {} events, {} skipped", path.display(), cal.events.len(), cal.skipped.len());
                let (slots, kept) = keep_covered(&self.ics_slots, cal.events.iter().map(slot_of).collect(), &cal.skipped);
                note_skipped(&mut self.schedule_skipped, cal.skipped, &kept, &path.display().to_string());
                self.ics_slots = slots;
                self.feed_schedule();
            }
            Err(e) => {
                let msg = format!("{}: {e}", path.display());
                if self.schedule_error.as_deref() != Some(&msg) {
                    log::error!(target: "lecternd", "schedule not updated, keeping {} cached events: {msg}", self.recorder.schedule().len());
                }
                self.schedule_error = Some(msg);
            }
        }
    }

    /// systemd STATUS= on change, WATCHDOG=1 at half the watchdog interval unless `watchdog.rs`
    /// withholds it (a recording's pipeline stalled).
    /// Signal alarms reach the room and the server within a turn (≤ 1 s) of being raised: the
    /// LED shows `recording_alarm` instead of `recording` while one is raised, and Opencast's
    /// agent configuration `lectern.signals.alarms` lists them (posted at once: the calendar
    /// poller is woken). Cleared the same way.
    fn alarm_turn(&mut self) {
        let alarms: Vec<&'static str> = match (self.recorder.state(), self.session.as_ref()) {
            (State::Recording { .. }, Some(s)) => s.signals().active_names(),
            (State::Retrying { .. }, None) => self.retry_signals.as_ref().map_or_else(Vec::new, |w| {
                w.tick(Instant::now());
                w.active_names()
            }),
            _ => Vec::new(),
        };
        let led = self.board.led.pattern();
        let want = match (led, alarms.is_empty()) {
            (LedPattern::Recording, false) => Some(LedPattern::RecordingAlarm),
            (LedPattern::RecordingAlarm, true) if matches!(self.recorder.state(), State::Recording { .. }) => Some(LedPattern::Recording),
            // Not recording any more and the recorder did not say otherwise: what it would show idle.
            (LedPattern::RecordingAlarm, true) => Some(led_pattern(self.recorder.idle_led())),
            _ => None,
        };
        if let Some(p) = want {
            self.board.led.set_pattern(p);
        }
        let joined = alarms.join(",");
        if joined != self.reported_alarms {
            if let Some(agent) = self.agent.as_ref() {
                agent.set_capabilities([("lectern.signals.alarms".to_owned(), joined.clone())]);
            }
            self.reported_alarms = joined;
        }
    }

    fn publish_status(&mut self) {
        let mut line = match self.recorder.state().active() {
            Some(a) => format!("{} {}", self.recorder.state().name(), a.spec.id),
            None => self.recorder.state().name().to_owned(),
        };
        // Like the LED: a device problem is news while idle; during a recording its own state says more.
        if let Some(problem) = self.recorder.device_problem().filter(|_| *self.recorder.state() == State::Idle) {
            line.push_str(&format!("; {problem}"));
        }
        if !provisioned(&self.config) {
            line.push_str("; not provisioned");
        }
        if line != self.status_line {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&line)]);
            self.status_line = line;
        }
        if let Some(w) = self.watchdog.as_mut() {
            let s = self.session.as_ref();
            let progress = s.map(|s| watchdog::Progress { generation: s.generation, bytes: s.stats().bytes });
            w.tick(Instant::now(), progress, s.map(|s| s.recording_id.as_str()));
        }
    }
}
