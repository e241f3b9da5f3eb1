//! The recorder: a sans-IO state machine deciding what the box records and when.
//!
//! [`Recorder::handle`] takes an [`Event`] and the current time and returns the [`Action`]s the
//! daemon must carry out, in order. It performs no I/O and reads no clock, so every decision is a
//! table-driven test. The daemon executes actions synchronously: when `StartCapture` fails or a
//! running pipeline reports an error, the daemon feeds back [`Event::CaptureFailed`].
//!
//! # States and transitions
//!
//! ```text
//!            press / cli start / schedule due
//!   Idle ───────────────────────────────────────▶ Recording
//!    ▲  ◀─── press (ad-hoc) / long-press / cli stop / end reached / event cancelled
//!    │                                              │ capture failed
//!    │                                              ▼
//!    └──── stop / end reached ─────────────────  Retrying ── retry time reached ──▶ Recording (new part)
//!
//!   any state ── shutdown ──▶ Stopped (terminal; the recording is left "interrupted")
//! ```
//!
//! # Rules (documented for AV teams in docs/architecture.md)
//! - A short press starts an ad-hoc recording when idle and stops an ad-hoc recording. During a
//!   *scheduled* recording a short press is ignored (a bumped button must not end a lecture); a
//!   long press stops it early. A long press when idle starts an ad-hoc recording.
//! - Overlapping scheduled events: the one that started first wins (ties: smaller UID); the other
//!   starts when the first ends, if it is still running then. Back-to-back events are switched in
//!   the same step, so no time is lost between them.
//! - A scheduled event that becomes due while an ad-hoc recording runs ends the ad-hoc recording
//!   (kept, completed) and starts the scheduled one: the timetable is what the institution asked for.
//! - A scheduled recording stopped by hand is not restarted by the schedule.
//! - An event already in progress at boot is recorded for its remainder (same recording id, so the
//!   journal appends a part); an in-progress event whose end moves is followed; a cancelled one is
//!   stopped cleanly and its media kept.
//! - A capture failure ends the current part as failed and retries with exponential back-off while
//!   the recording is still wanted. A recording that had a failure ends "interrupted", never
//!   "completed".
//! - At start-up an ad-hoc recording cut short less than the configured window ago resumes as a
//!   new part of the same recording (the daemon sends `ResumeAdhoc`); a scheduled one resumes
//!   because the schedule says it is due.
//! - Scheduled recordings start only once the daemon reports the wall clock trusted
//!   (`ClockTrust(true)`); an event in progress then is recorded for its remainder.
//! - Power-fail edge: everything captured is made durable at once (`PowerCut`), the recording is
//!   marked "interrupted: power" and nothing new starts while the line is asserted. If the line
//!   clears and stays clear for `power_hold_ms` while the recording is still wanted (scheduled end
//!   ahead; ad-hoc cap not reached, and nobody stopped it), it resumes as a new part of the same
//!   recording. A flapping line therefore never ends a recording for good.
//! - The LED while idle says whether the box is ready for the next lecture: `error` while the
//!   idle-time device probe says a configured camera or mic cannot be opened
//!   (`DevicesProbed`), else `not_provisioned` when the box has no schedule source at all (no
//!   `.ics`, no `ics_url`, no Opencast: it records only when someone presses the button), else
//!   `backlog` while uploads are stuck (`UploadBacklog`), else `idle`. Recording and retrying
//!   patterns win while a recording is wanted. The probe changes
//!   only the LED: a scheduled start with a device missing still tries, fails and retries.

use std::collections::BTreeMap;

use serde::Serialize;

/// Wall-clock time in milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// Why a recording exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    /// Started by the front-panel button or the CLI.
    Adhoc,
    /// From the schedule; `uid` is the calendar event UID.
    Scheduled { uid: String },
}

/// What the journal needs to create (or reuse) a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingSpec {
    pub id: String,
    pub title: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub started_at_ms: Millis,
    /// When the recording should end by itself (event end, or the ad-hoc cap).
    pub planned_end_ms: Millis,
}

/// One entry of the schedule, as the recorder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub uid: String,
    pub title: String,
    pub start_ms: Millis,
    pub end_ms: Millis,
}

/// How a part ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PartEnd {
    Closed,
    Interrupted(String),
    Failed(String),
}

/// How a recording ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Completed,
    Interrupted(String),
}

/// The LED pattern the recorder wants shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Led {
    Off,
    Idle,
    Recording,
    Error,
    NotProvisioned,
    /// Idle with uploads stuck past their threshold, or refused (see `Event::UploadBacklog`).
    Backlog,
}

/// Inputs to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed; the daemon sends it at least once a second and at [`Recorder::next_deadline`].
    Tick,
    ButtonPress,
    ButtonLongPress,
    CliStart { title: Option<String> },
    CliStop,
    /// The whole local schedule, replacing the previous one.
    ScheduleLoaded(Vec<Slot>),
    /// The capture pipeline failed to start or failed while running.
    CaptureFailed { message: String },
    /// At start-up: an ad-hoc recording that was cut short (crash, reboot, power) recently enough
    /// to continue. Scheduled recordings need no such event: the schedule says they are due.
    ResumeAdhoc { id: String, title: String, started_at_ms: Millis },
    /// The power-fail input asserted: the supply is going away.
    PowerFail,
    /// The power-fail input cleared: the supply is back (or it was a glitch).
    PowerRestored,
    /// Whether the wall clock can be trusted (NTP synchronised, an RTC, or config). Until it is,
    /// no scheduled recording starts; ad-hoc recordings need no wall time and still do.
    ClockTrust(bool),
    /// The idle-time device probe's verdict: `None` when every configured input opened, else
    /// what failed (e.g. "camera /dev/video0 cannot be opened: ..."). Only the LED follows it.
    DevicesProbed { problem: Option<String> },
    /// Whether uploads are stuck (pending longer than `upload.stuck_after_minutes`, or parked).
    /// Only the idle LED follows it, below a device problem and a missing configuration.
    UploadBacklog(bool),
    /// The daemon is stopping (SIGTERM).
    Shutdown,
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the recording in the journal (or reuse it if the id exists).
    BeginRecording(RecordingSpec),
    /// Open a new part of the recording and start the capture pipeline into it.
    StartCapture { recording_id: String },
    /// Stop the pipeline, flush and close the part.
    StopCapture { recording_id: String, end: PartEnd },
    /// Power is failing: make everything captured so far durable *now*, accept nothing captured
    /// after the edge, drain what the encoder still holds into the part (bounded), and close the
    /// part as interrupted by power.
    PowerCut { recording_id: String },
    /// Mark the recording finished in the journal.
    FinishRecording { recording_id: String, outcome: Outcome },
    SetLed(Led),
    /// The power-fail line stayed asserted past `poweroff_after_ms`: ask the OS to power off
    /// cleanly while the hold-up supply still lasts.
    PowerOff,
    /// A request that cannot be done now; the daemon reports it to the caller and logs it.
    Rejected(String),
    /// Something worth a log line at info level (ignored presses and the like).
    Note(String),
}

/// Tunables, from the validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub adhoc_max_ms: Millis,
    pub retry_initial_ms: Millis,
    pub retry_max_ms: Millis,
    /// Seconds before a scheduled start at which recording begins.
    pub preroll_ms: Millis,
    /// Seconds after a scheduled end at which recording stops.
    pub postroll_ms: Millis,
    /// How long power must stay restored after a power-fail edge before recording resumes.
    pub power_hold_ms: Millis,
    /// If set, how long the power-fail line may stay asserted before the box powers off.
    pub poweroff_after_ms: Option<Millis>,
    /// Whether the box has a schedule source (an `.ics` file or URL, or Opencast). An
    /// unprovisioned box still records ad hoc; its idle LED says `not_provisioned`.
    pub provisioned: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { adhoc_max_ms: 4 * 3_600_000, retry_initial_ms: 2_000, retry_max_ms: 60_000, preroll_ms: 0, postroll_ms: 0, power_hold_ms: 2_000, poweroff_after_ms: None, provisioned: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Active {
    pub spec: RecordingSpec,
    /// Capture failures so far in this recording.
    pub failures: u32,
    pub last_error: Option<String>,
}

/// The recorder's state. See the module doc for the transitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    Idle,
    Recording { active: Active },
    Retrying { active: Active, retry_at_ms: Millis },
    /// Power failed during a recording: the part is closed and the recording marked interrupted
    /// by power. If power comes back and stays for `power_hold_ms` while the recording is still
    /// wanted, it resumes as a new part.
    PowerLost { active: Active, restored_at_ms: Option<Millis> },
    Stopped,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Recording { .. } => "recording",
            State::Retrying { .. } => "retrying",
            State::PowerLost { .. } => "power_lost",
            State::Stopped => "stopped",
        }
    }

    pub fn active(&self) -> Option<&Active> {
        match self {
            State::Recording { active } | State::Retrying { active, .. } | State::PowerLost { active, .. } => Some(active),
            _ => None,
        }
    }
}

/// The recorder.
#[derive(Debug)]
pub struct Recorder {
    settings: Settings,
    state: State,
    schedule: Vec<Slot>,
    /// Scheduled events stopped by hand, with their end, so the schedule does not restart them.
    /// Pruned once their end has passed, so it stays bounded.
    suppressed: BTreeMap<String, Millis>,
    last_adhoc_id: Option<String>,
    /// True while the power-fail input is asserted; nothing new starts then.
    power_failing: bool,
    /// When the power-fail line was asserted, while it is; cleared once a power-off was asked for.
    power_fail_since: Option<Millis>,
    /// See [`Event::ClockTrust`]; true until the daemon says otherwise.
    clock_trusted: bool,
    /// The last [`Event::DevicesProbed`] problem; `None` until a probe says otherwise.
    device_problem: Option<String>,
    /// The last [`Event::UploadBacklog`].
    upload_backlog: bool,
}

impl Recorder {
    pub fn new(settings: Settings) -> Recorder {
        Recorder { settings, state: State::Idle, schedule: Vec::new(), suppressed: BTreeMap::new(), last_adhoc_id: None, power_failing: false, power_fail_since: None, clock_trusted: true, device_problem: None, upload_backlog: false }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn schedule(&self) -> &[Slot] {
        &self.schedule
    }

    /// What the last [`Event::DevicesProbed`] said failed, if anything.
    pub fn device_problem(&self) -> Option<&str> {
        self.device_problem.as_deref()
    }

    /// The LED pattern for an idle box (module doc): a device problem, then not provisioned.
    /// The daemon shows it at start-up; afterwards it arrives as [`Action::SetLed`].
    pub fn idle_led(&self) -> Led {
        if self.device_problem.is_some() {
            Led::Error
        } else if !self.settings.provisioned {
            Led::NotProvisioned
        } else if self.upload_backlog {
            Led::Backlog
        } else {
            Led::Idle
        }
    }

    /// The next instant at which a `Tick` may change something: a planned end, a retry, or the
    /// next scheduled start. The daemon sleeps until then (or its regular tick, if sooner).
    pub fn next_deadline(&self, now: Millis) -> Option<Millis> {
        let mut deadlines = Vec::new();
        match &self.state {
            State::Recording { active } => deadlines.push(active.spec.planned_end_ms),
            State::Retrying { active, retry_at_ms } => deadlines.extend([active.spec.planned_end_ms, *retry_at_ms]),
            State::PowerLost { active, restored_at_ms } => {
                deadlines.push(active.spec.planned_end_ms);
                deadlines.extend(restored_at_ms.map(|t| t + self.settings.power_hold_ms));
            }
            State::Idle | State::Stopped => {}
        }
        if let (Some(since), Some(after)) = (self.power_fail_since, self.settings.poweroff_after_ms) {
            deadlines.push(since + after);
        }
        deadlines.extend(self.schedule.iter().map(|s| s.start_ms - self.settings.preroll_ms).filter(|&t| t > now));
        deadlines.into_iter().min()
    }

    /// Feeds one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, event: Event, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Stopped {
            if matches!(event, Event::CliStart { .. } | Event::CliStop) {
                out.push(Action::Rejected("the daemon is shutting down".into()));
            }
            return out;
        }
        self.suppressed.retain(|_, end| *end > now);
        match event {
            Event::Tick => {}
            Event::ClockTrust(trusted) => {
                if trusted != self.clock_trusted {
                    out.push(Action::Note(if trusted {
                        "clock trusted: the schedule applies".to_string()
                    } else {
                        "clock not trusted: scheduled recordings wait for it".to_string()
                    }));
                }
                self.clock_trusted = trusted;
            }
            Event::ScheduleLoaded(mut slots) => {
                slots.sort_by(|a, b| (a.start_ms, &a.uid).cmp(&(b.start_ms, &b.uid)));
                self.schedule = slots;
                self.follow_schedule_edits(now, &mut out);
            }
            Event::ButtonPress => match self.state.active().map(|a| &a.spec.kind) {
                None => self.begin_adhoc(None, now, &mut out),
                Some(Kind::Adhoc) => self.finish(Outcome::Completed, "button", now, &mut out),
                Some(Kind::Scheduled { uid }) => out.push(Action::Note(format!(
                    "button press ignored during scheduled recording {uid}; hold the button to stop it early"
                ))),
            },
            Event::ButtonLongPress => match self.state.active() {
                None => self.begin_adhoc(None, now, &mut out),
                Some(_) => self.finish_by_hand(now, "button long-press", &mut out),
            },
            Event::CliStart { title } => match self.state.active() {
                None => self.begin_adhoc(title, now, &mut out),
                Some(a) => out.push(Action::Rejected(format!("already recording {}", a.spec.id))),
            },
            Event::CliStop => match self.state.active() {
                None => out.push(Action::Rejected("not recording".into())),
                Some(_) => self.finish_by_hand(now, "cli", &mut out),
            },
            Event::CaptureFailed { message } => {
                if let State::Recording { active } = &self.state {
                    let mut active = active.clone();
                    let backoff = self.settings.retry_initial_ms.saturating_mul(1 << active.failures.min(16)).min(self.settings.retry_max_ms);
                    active.failures += 1;
                    active.last_error = Some(message.clone());
                    out.push(Action::StopCapture { recording_id: active.spec.id.clone(), end: PartEnd::Failed(message) });
                    out.push(Action::SetLed(Led::Error));
                    self.state = State::Retrying { active, retry_at_ms: now + backoff };
                }
            }
            Event::ResumeAdhoc { id, title, started_at_ms } => {
                let planned_end_ms = started_at_ms + self.settings.adhoc_max_ms;
                if self.state != State::Idle || self.power_failing || now >= planned_end_ms {
                    out.push(Action::Note(format!("not resuming ad-hoc recording {id}")));
                } else {
                    out.push(Action::Note(format!("resuming ad-hoc recording {id} as a new part")));
                    self.last_adhoc_id = Some(id.clone());
                    self.begin(RecordingSpec { id, title, kind: Kind::Adhoc, started_at_ms, planned_end_ms }, &mut out);
                }
            }
            Event::PowerFail => {
                self.power_failing = true;
                self.power_fail_since.get_or_insert(now);
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::Recording { active } => {
                        out.push(Action::PowerCut { recording_id: active.spec.id.clone() });
                        out.push(Action::FinishRecording { recording_id: active.spec.id.clone(), outcome: Outcome::Interrupted("power".into()) });
                        out.push(Action::SetLed(Led::Error));
                        self.state = State::PowerLost { active, restored_at_ms: None };
                    }
                    State::Retrying { active, .. } => {
                        out.push(Action::FinishRecording { recording_id: active.spec.id.clone(), outcome: Outcome::Interrupted("power".into()) });
                        out.push(Action::SetLed(Led::Error));
                        self.state = State::PowerLost { active, restored_at_ms: None };
                    }
                    State::PowerLost { active, .. } => self.state = State::PowerLost { active, restored_at_ms: None },
                    other => {
                        out.push(Action::Note("power-fail input asserted while idle".into()));
                        self.state = other;
                    }
                }
            }
            Event::DevicesProbed { problem } => {
                let before = self.idle_led();
                self.device_problem = problem;
                // Only an idle box shows it: recording, retrying and power-lost patterns win,
                // and every return to idle sets `idle_led` anyway.
                if self.state == State::Idle && self.idle_led() != before {
                    out.push(Action::SetLed(self.idle_led()));
                }
            }
            Event::UploadBacklog(backlog) => {
                let before = self.idle_led();
                self.upload_backlog = backlog;
                if self.state == State::Idle && self.idle_led() != before {
                    out.push(Action::SetLed(self.idle_led()));
                }
            }
            Event::PowerRestored => {
                self.power_failing = false;
                self.power_fail_since = None;
                if let State::PowerLost { restored_at_ms, .. } = &mut self.state {
                    *restored_at_ms = Some(now);
                    out.push(Action::Note(format!("power restored; resuming after {} ms if it stays", self.settings.power_hold_ms)));
                }
            }
            Event::Shutdown => {
                if let State::PowerLost { .. } = self.state {
                    // The recording was already closed as interrupted by power.
                    out.push(Action::SetLed(Led::Off));
                    self.state = State::Stopped;
                    return out;
                }
                if let Some(active) = self.state.active().cloned() {
                    if matches!(self.state, State::Recording { .. }) {
                        out.push(Action::StopCapture { recording_id: active.spec.id.clone(), end: PartEnd::Interrupted("shutdown".into()) });
                    }
                    out.push(Action::FinishRecording { recording_id: active.spec.id, outcome: Outcome::Interrupted("shutdown".into()) });
                }
                out.push(Action::SetLed(Led::Off));
                self.state = State::Stopped;
                return out;
            }
        }
        self.on_time(now, &mut out);
        out
    }

    /// Time-driven transitions, run after every event: planned ends, retries, scheduled starts.
    fn on_time(&mut self, now: Millis, out: &mut Vec<Action>) {
        if let (Some(since), Some(after)) = (self.power_fail_since, self.settings.poweroff_after_ms) {
            if now >= since + after {
                out.push(Action::Note(format!("power-fail line asserted for {} ms: powering off", now - since)));
                out.push(Action::PowerOff);
                self.power_fail_since = None;
            }
        }
        if let State::PowerLost { active, restored_at_ms } = &self.state {
            if now >= active.spec.planned_end_ms {
                // Nothing left to resume: the recording stays interrupted by power.
                out.push(Action::Note(format!("recording {} ended while power was out", active.spec.id)));
                out.push(Action::SetLed(if self.power_failing { Led::Error } else { self.idle_led() }));
                self.state = State::Idle;
            } else if restored_at_ms.is_some_and(|t| now >= t + self.settings.power_hold_ms) {
                let active = active.clone();
                out.push(Action::Note(format!("power stayed up; resuming {} as a new part", active.spec.id)));
                self.begin_active(active, out);
            }
            if matches!(self.state, State::PowerLost { .. }) {
                return;
            }
        }
        if self.power_failing {
            return;
        }
        if let Some(active) = self.state.active() {
            if now >= active.spec.planned_end_ms {
                let why = match active.spec.kind {
                    Kind::Adhoc => "ad-hoc maximum duration reached",
                    Kind::Scheduled { .. } => "scheduled end",
                };
                self.finish(Outcome::Completed, why, now, out);
            }
        }
        if let State::Retrying { active, retry_at_ms } = &self.state {
            if now >= *retry_at_ms {
                let active = active.clone();
                out.push(Action::Note(format!("retrying capture for {} (attempt {})", active.spec.id, active.failures + 1)));
                out.push(Action::StartCapture { recording_id: active.spec.id.clone() });
                out.push(Action::SetLed(Led::Recording));
                self.state = State::Recording { active };
            }
        }
        // An untrusted clock may be years off: the schedule waits for it (ad-hoc does not).
        let due = if self.clock_trusted { self.due_slot(now).cloned() } else { None };
        if let Some(slot) = due {
            match self.state.active().map(|a| a.spec.kind.clone()) {
                None => self.begin_scheduled(&slot, now, out),
                Some(Kind::Adhoc) => {
                    self.finish(Outcome::Completed, &format!("scheduled event {} starts", slot.uid), now, out);
                    self.begin_scheduled(&slot, now, out);
                }
                Some(Kind::Scheduled { .. }) => {}
            }
        }
    }

    /// The scheduled event that should be recording now, by the overlap rule.
    fn due_slot(&self, now: Millis) -> Option<&Slot> {
        self.schedule.iter().find(|s| {
            s.start_ms - self.settings.preroll_ms <= now
                && now < s.end_ms + self.settings.postroll_ms
                && !self.suppressed.contains_key(&s.uid)
        })
    }

    /// A new schedule arrived: follow a moved end, stop a cancelled event.
    fn follow_schedule_edits(&mut self, now: Millis, out: &mut Vec<Action>) {
        let Some(Kind::Scheduled { uid }) = self.state.active().map(|a| a.spec.kind.clone()) else { return };
        match self.schedule.iter().find(|s| s.uid == uid) {
            Some(slot) => {
                let end = slot.end_ms + self.settings.postroll_ms;
                let title = slot.title.clone();
                if let State::Recording { active } | State::Retrying { active, .. } = &mut self.state {
                    if active.spec.planned_end_ms != end {
                        out.push(Action::Note(format!("scheduled recording {uid}: end moved to {end}")));
                        active.spec.planned_end_ms = end;
                    }
                    active.spec.title = title;
                }
            }
            None => self.finish(Outcome::Completed, &format!("scheduled event {uid} cancelled"), now, out),
        }
    }

    fn finish_by_hand(&mut self, now: Millis, why: &str, out: &mut Vec<Action>) {
        if let Some(Kind::Scheduled { uid }) = self.state.active().map(|a| a.spec.kind.clone()) {
            let end = self.schedule.iter().find(|s| s.uid == uid).map_or(now + 1, |s| s.end_ms + self.settings.postroll_ms);
            self.suppressed.insert(uid, end);
        }
        self.finish(Outcome::Completed, why, now, out);
    }

    fn finish(&mut self, outcome: Outcome, why: &str, _now: Millis, out: &mut Vec<Action>) {
        let (active, capturing) = match std::mem::replace(&mut self.state, State::Idle) {
            State::Recording { active } => (active, true),
            State::Retrying { active, .. } => (active, false),
            State::PowerLost { active, .. } => {
                // Already closed as interrupted by power; a stop only cancels the resume.
                out.push(Action::Note(format!("recording {} will not resume: {why}", active.spec.id)));
                out.push(Action::SetLed(if self.power_failing { Led::Error } else { self.idle_led() }));
                return;
            }
            other => {
                self.state = other;
                return;
            }
        };
        let id = active.spec.id.clone();
        if capturing {
            out.push(Action::StopCapture { recording_id: id.clone(), end: PartEnd::Closed });
        }
        let outcome = match (outcome, &active.last_error) {
            (Outcome::Completed, Some(err)) => Outcome::Interrupted(format!("device error: {err}")),
            (o, _) => o,
        };
        out.push(Action::Note(format!("recording {id} ends: {why}")));
        out.push(Action::FinishRecording { recording_id: id, outcome });
        out.push(Action::SetLed(self.idle_led()));
    }

    fn begin(&mut self, spec: RecordingSpec, out: &mut Vec<Action>) {
        self.begin_active(Active { spec, failures: 0, last_error: None }, out);
    }

    fn begin_active(&mut self, active: Active, out: &mut Vec<Action>) {
        out.push(Action::BeginRecording(active.spec.clone()));
        out.push(Action::StartCapture { recording_id: active.spec.id.clone() });
        out.push(Action::SetLed(Led::Recording));
        self.state = State::Recording { active };
    }

    fn begin_adhoc(&mut self, title: Option<String>, now: Millis, out: &mut Vec<Action>) {
        if self.power_failing {
            out.push(Action::Rejected("power is failing; not starting a recording".into()));
            return;
        }
        let stamp = chrono_stamp(now);
        let mut id = format!("adhoc-{stamp}");
        if self.last_adhoc_id.as_deref().is_some_and(|last| last.starts_with(&id)) {
            id = format!("{id}-{now}");
        }
        self.last_adhoc_id = Some(id.clone());
        let title = title.unwrap_or_else(|| format!("Ad-hoc recording {stamp}"));
        self.begin(
            RecordingSpec { id, title, kind: Kind::Adhoc, started_at_ms: now, planned_end_ms: now + self.settings.adhoc_max_ms },
            out,
        );
    }

    fn begin_scheduled(&mut self, slot: &Slot, now: Millis, out: &mut Vec<Action>) {
        self.begin(
            RecordingSpec {
                id: recording_id_for_uid(&slot.uid),
                title: slot.title.clone(),
                kind: Kind::Scheduled { uid: slot.uid.clone() },
                started_at_ms: now,
                planned_end_ms: slot.end_ms + self.settings.postroll_ms,
            },
            out,
        );
    }
}

/// The recording id of a scheduled event. Opencast's UIDs (UUIDs) are used as they are, so a
/// replacement box with the same schedule continues the same recording; other calendars' UIDs
/// (`1234@timetable.example.edu`) hold characters a directory name must not, so those are
/// replaced by `_` and an FNV-1a hash of the whole UID keeps two such UIDs apart. Deterministic:
/// the same UID always maps to the same id, on any box.
pub fn recording_id_for_uid(uid: &str) -> String {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !uid.is_empty() && uid.len() <= 128 && !uid.starts_with('.') && uid.bytes().all(ok) {
        return uid.to_owned();
    }
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let clean: String = uid.bytes().take(100).map(|b| if ok(b) { b as char } else { '_' }).collect();
    format!("{}-{hash:016x}", clean.trim_start_matches('.'))
}

/// `YYYYMMDDTHHMMSSZ` for a UTC millisecond timestamp, without a date library (days-to-civil).
fn chrono_stamp(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests;
