//! The signal monitor: knows whether what is being recorded is worth recording (sans-IO).
//!
//! It is fed the capture's audio level readings ([`Monitor::level`], one per `level` interval),
//! per-frame video statistics ([`Monitor::frame`], a few a second from the analysis branch) and
//! the news that video frames are still reaching the encoder ([`Monitor::video`]; `no_video`
//! comes from that and not from the analysis branch, which is built to lose frames under load
//! rather than delay the recording, so a starved analysis thread must not look like a lost camera),
//! plus [`Monitor::tick`] from the owner's loop so that an input that stops delivering is noticed.
//! Time comes in as an argument: a [`Duration`] since the monitor started (the start of the
//! capture session), which is also the time base of the quality report. It performs no I/O and
//! reads no clock.
//!
//! # Alarms
//!
//! | alarm | condition (thresholds from `[signals]`) |
//! | --- | --- |
//! | `silent_mic` | audio RMS ≤ `silence_db` |
//! | `clipping` | audio peak ≥ `clip_db` |
//! | `black_picture` | mean luma ≤ `black_luma` and luma standard deviation ≤ [`BLACK_MAX_STDDEV`] |
//! | `frozen_picture` | the frame fingerprint equals the previous one |
//! | `no_video` | no video frame ([`Monitor::video`]) for `video_loss` since the last one |
//! | `no_audio` | no level reading for `audio_loss` since the last one |
//!
//! # State transitions (each alarm on its own)
//!
//! `Clear → Pending(since)` when its condition is first seen; `Pending → Clear` when a reading
//! shows it gone (the hold restarts from zero next time: it must last without a break);
//! `Pending(since) → Raised(since)` once `now − since` reaches the alarm's hold time — the
//! raise is reported with `since`, when the condition began, not when it was confirmed.
//! `Raised → Clearing(at)` when a reading is past the threshold *plus hysteresis* (a level
//! between the threshold and the hysteresis band keeps it raised); `Clearing → Raised` if the
//! condition comes back before `clear_hold`; `Clearing(at) → Clear` once `now − at` reaches
//! `clear_hold`, reported as cleared at `at`. A level hovering on a threshold therefore never
//! flaps: it raises once and clears once.
//!
//! The loss alarms are armed by the first reading of their input, so a pipeline still starting
//! raises nothing (a camera that never starts fails the capture instead); their condition is
//! "the last reading is older than the loss time" (dated from that last reading, as a frozen
//! picture is dated from the first of its identical frames), and a new reading is the clearing
//! evidence.
//! While `no_video` is raised the picture alarms keep their state: nothing is known about a
//! picture that is not there.

use std::time::Duration;

use lectern_config::SignalsConfig;

/// Mean luma must rise this far above `black_luma` before a black-picture alarm clears.
pub const BLACK_HYSTERESIS: f64 = 0.02;

/// A black picture is also flat: a dark frame with anything lit in it (a white ball on black, a
/// projected slide in a dark hall) has a luma standard deviation well above this, while a capped
/// lens or a dead HDMI source shows only noise. The clear needs the same 0.02 more.
pub const BLACK_MAX_STDDEV: f64 = 0.03;

/// One kind of alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alarm {
    SilentMic,
    Clipping,
    BlackPicture,
    FrozenPicture,
    NoVideo,
    NoAudio,
}

impl Alarm {
    pub const ALL: [Alarm; 6] =
        [Alarm::SilentMic, Alarm::Clipping, Alarm::BlackPicture, Alarm::FrozenPicture, Alarm::NoVideo, Alarm::NoAudio];

    /// The stable name used in `status`, logs and the quality report.
    pub fn name(self) -> &'static str {
        match self {
            Alarm::SilentMic => "silent_mic",
            Alarm::Clipping => "clipping",
            Alarm::BlackPicture => "black_picture",
            Alarm::FrozenPicture => "frozen_picture",
            Alarm::NoVideo => "no_video",
            Alarm::NoAudio => "no_audio",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Statistics of one analysed video frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    /// Mean luma, 0 (black) to 1 (white).
    pub luma_mean: f64,
    /// Luma variance on the same scale.
    pub luma_var: f64,
    /// A hash of the (downscaled) luma plane; equal for two frames with the same picture.
    pub fingerprint: u64,
}

impl FrameStats {
    /// Statistics of an 8-bit luma plane (`width` bytes per row, no padding), e.g. the
    /// downscaled GRAY8 frame of the capture's analysis branch. `None` for an empty plane.
    pub fn from_luma(luma: &[u8]) -> Option<FrameStats> {
        if luma.is_empty() {
            return None;
        }
        let n = luma.len() as f64;
        let (sum, sum_sq) = luma.iter().fold((0u64, 0u64), |(s, q), &y| (s + u64::from(y), q + u64::from(y) * u64::from(y)));
        let mean = sum as f64 / n / 255.0;
        let var = (sum_sq as f64 / n / (255.0 * 255.0) - mean * mean).max(0.0);
        Some(FrameStats { luma_mean: mean, luma_var: var, fingerprint: fnv1a(luma) })
    }
}

/// FNV-1a 64: no dependency, and a fingerprint only needs to tell "the same bytes" from "not".
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// An alarm going up or down; times are on the monitor's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The condition has lasted its hold time; `since` is when it began.
    Raised { alarm: Alarm, since: Duration },
    /// The condition has been gone for `clear_hold`; `at` is when it ended.
    Cleared { alarm: Alarm, since: Duration, at: Duration },
}

/// A stretch of the recording during which an alarm's condition held (the quality report).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub alarm: Alarm,
    pub from: Duration,
    /// `None`: still going.
    pub to: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Clear,
    Pending { since: Duration },
    Raised { since: Duration },
    Clearing { since: Duration, at: Duration },
}

/// What one reading says about one alarm's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Obs {
    /// The condition holds.
    Bad,
    /// Past the threshold but inside the hysteresis band: not bad, not yet good enough to clear.
    Between,
    /// Clearly gone.
    Good,
}

/// The monitor. See the module doc for the rules.
#[derive(Debug, Clone)]
pub struct Monitor {
    cfg: SignalsConfig,
    states: [State; 6],
    last_frame: Option<(Duration, u64)>,
    last_video: Option<Duration>,
    last_level: Option<Duration>,
    stretches: Vec<Stretch>,
}

impl Monitor {
    pub fn new(cfg: &SignalsConfig) -> Monitor {
        Monitor { cfg: cfg.clone(), states: [State::Clear; 6], last_frame: None, last_video: None, last_level: None, stretches: Vec::new() }
    }

    fn hold(&self, alarm: Alarm) -> Duration {
        match alarm {
            Alarm::SilentMic => self.cfg.silence_hold,
            Alarm::Clipping => self.cfg.clip_hold,
            Alarm::BlackPicture => self.cfg.black_hold,
            Alarm::FrozenPicture => self.cfg.frozen_hold,
            // The loss alarms' condition already waited the loss time (see `tick`).
            Alarm::NoVideo | Alarm::NoAudio => Duration::ZERO,
        }
    }

    /// One audio level reading (dBFS, channels combined).
    pub fn level(&mut self, now: Duration, peak_db: f64, rms_db: f64) -> Vec<Change> {
        let mut out = self.tick(now);
        self.last_level = Some(now);
        let c = &self.cfg;
        let silent = band(rms_db <= c.silence_db, rms_db > c.silence_db + c.hysteresis_db);
        let clipped = band(peak_db >= c.clip_db, peak_db < c.clip_db - c.hysteresis_db);
        self.observe(Alarm::NoAudio, now, Obs::Good, &mut out);
        self.observe(Alarm::SilentMic, now, silent, &mut out);
        self.observe(Alarm::Clipping, now, clipped, &mut out);
        out
    }

    /// One analysed video frame.
    pub fn frame(&mut self, now: Duration, f: FrameStats) -> Vec<Change> {
        let mut out = self.tick(now);
        // A frozen picture is dated from the first of the identical frames.
        let (frozen, frozen_from) = match self.last_frame {
            Some((t, fp)) if fp == f.fingerprint => (Obs::Bad, t),
            _ => (Obs::Good, now),
        };
        self.last_frame = Some((now, f.fingerprint));
        let sd = f.luma_var.max(0.0).sqrt();
        let black = band(
            f.luma_mean <= self.cfg.black_luma && sd <= BLACK_MAX_STDDEV,
            f.luma_mean > self.cfg.black_luma + BLACK_HYSTERESIS || sd > BLACK_MAX_STDDEV + BLACK_HYSTERESIS,
        );
        self.observe(Alarm::BlackPicture, now, black, &mut out);
        self.observe_at(Alarm::FrozenPicture, now, frozen_from, frozen, &mut out);
        out
    }

    /// Video frames reached the encoder since the last call (the recording's own frame counter
    /// moved).
    pub fn video(&mut self, now: Duration) -> Vec<Change> {
        let mut out = self.tick(now);
        self.last_video = Some(now);
        self.observe(Alarm::NoVideo, now, Obs::Good, &mut out);
        out
    }

    /// Advances time with no reading: raises the loss alarms for inputs that went quiet and
    /// completes pending raises and clears whose hold has passed. Call it from the owner's loop
    /// at least a few times a second.
    pub fn tick(&mut self, now: Duration) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(t) = self.last_video {
            if now.saturating_sub(t) >= self.cfg.video_loss {
                self.observe_at(Alarm::NoVideo, now, t, Obs::Bad, &mut out);
            }
        }
        if let Some(t) = self.last_level {
            if now.saturating_sub(t) >= self.cfg.audio_loss {
                self.observe_at(Alarm::NoAudio, now, t, Obs::Bad, &mut out);
            }
        }
        for alarm in Alarm::ALL {
            self.advance(alarm, now, &mut out);
        }
        out
    }

    /// The alarms raised now, each with when its condition began.
    pub fn active(&self) -> Vec<(Alarm, Duration)> {
        Alarm::ALL
            .iter()
            .filter_map(|&a| match self.states[a.index()] {
                State::Raised { since } | State::Clearing { since, .. } => Some((a, since)),
                _ => None,
            })
            .collect()
    }

    /// Every raised alarm's stretch so far, in the order they were raised; the open ones have
    /// `to: None`. This is the recording's quality report.
    pub fn report(&self) -> &[Stretch] {
        &self.stretches
    }

    fn observe(&mut self, alarm: Alarm, now: Duration, obs: Obs, out: &mut Vec<Change>) {
        self.observe_at(alarm, now, now, obs, out);
    }

    /// Applies one observation made at `now`; a condition that holds is dated from `began`.
    fn observe_at(&mut self, alarm: Alarm, now: Duration, began: Duration, obs: Obs, out: &mut Vec<Change>) {
        let i = alarm.index();
        self.states[i] = match (self.states[i], obs) {
            (State::Clear, Obs::Bad) => State::Pending { since: began },
            (State::Clear, _) => State::Clear,
            (State::Pending { since }, Obs::Bad) => State::Pending { since },
            (State::Pending { .. }, _) => State::Clear,
            (State::Raised { since }, Obs::Good) => State::Clearing { since, at: now },
            (State::Raised { since }, _) => State::Raised { since },
            (State::Clearing { since, at }, Obs::Good) => State::Clearing { since, at },
            (State::Clearing { since, .. }, _) => State::Raised { since },
        };
        self.advance(alarm, now, out);
    }

    /// Completes a raise or a clear whose hold time has passed.
    fn advance(&mut self, alarm: Alarm, now: Duration, out: &mut Vec<Change>) {
        let i = alarm.index();
        match self.states[i] {
            State::Pending { since } if now.saturating_sub(since) >= self.hold(alarm) => {
                self.states[i] = State::Raised { since };
                self.stretches.push(Stretch { alarm, from: since, to: None });
                out.push(Change::Raised { alarm, since });
            }
            State::Clearing { since, at } if now.saturating_sub(at) >= self.cfg.clear_hold => {
                self.states[i] = State::Clear;
                if let Some(s) = self.stretches.iter_mut().rev().find(|s| s.alarm == alarm && s.to.is_none()) {
                    s.to = Some(at);
                }
                out.push(Change::Cleared { alarm, since, at });
            }
            _ => {}
        }
    }
}

/// Bad below (or at) the threshold, good only past the hysteresis band, between otherwise.
fn band(bad: bool, good: bool) -> Obs {
    if bad {
        Obs::Bad
    } else if good {
        Obs::Good
    } else {
        Obs::Between
    }
}

#[cfg(test)]
mod tests;
