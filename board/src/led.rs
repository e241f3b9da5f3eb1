//! Status LED: the pattern vocabulary, the sans-IO timing function [`led_level`], the optional
//! extra lights ([`LedRole`]: a second LED as a tally or alert lamp, an RGB LED), and
//! [`LedDriver`], the thread that owns every LED output and plays the current pattern on all of
//! them.
//!
//! # One pattern, several lights
//!
//! The recorder decides one [`LedPattern`]; each light shows it in its own way, all on the same
//! timing (so an RGB LED and the status LED blink in step):
//!
//! | pattern           | `[led]` status     | `[led2]` tally | `[led2]` alert | `[rgb]`                 |
//! |-------------------|--------------------|----------------|----------------|-------------------------|
//! | `off`             | dark               | dark           | dark           | dark                    |
//! | `idle`            | 50 ms blip / 3 s   | dark           | dark           | green blip              |
//! | `recording`       | steady             | steady         | dark           | red, steady             |
//! | `error`           | 4 Hz blink         | dark           | 4 Hz blink     | amber (red+green) blink |
//! | `not_provisioned` | double blink / 1.5 s | dark         | double blink   | blue double blink       |
//! | `backlog`         | 0.5 Hz blink       | dark           | 0.5 Hz blink   | cyan (green+blue) blink |
//! | `recording_alarm` | on 0.7 s, off 0.3 s | steady        | on 0.7 s, off 0.3 s | magenta (red+blue), same |
//!
//! `recording_alarm` is a recording with a signal alarm raised (silent mic, black or frozen
//! picture, no signal: `lectern-signals`): still capturing, so the tally stays steady, but
//! the status LED dips once a second and the alert lamp joins in, so a lecturer or a passing
//! technician sees at a glance that the recording may be worthless.
//!
//! The tally is lit exactly while media is being captured (`recording`; a recording waiting to
//! retry after a capture error shows `error`, and nothing is captured then), so it can face the
//! room as an "on air" lamp. The alert lamp is dark in normal operation, so it can sit with the
//! AV team's other fault lamps. On the RGB LED red means recording, as on every camera's tally;
//! faults are amber rather than red so that a lecturer never mistakes a failed recording for a
//! running one; blink timings stay distinct, so no state relies on colour alone.
//!
//! # Threading and lock order
//!
//! `LedDriver` shares one `Mutex<Shared>` + `Condvar` with its thread. The thread computes the
//! level under the lock, releases it, then drives the pin, so `set_pattern` never waits on GPIO
//! I/O. It then sleeps on the condvar exactly until the next level change (or forever for a
//! steady pattern); `set_pattern` and drop wake it. The sim LED pin takes the sim's own lock
//! inside `LedOutput::set`, always *after* this one is released, so there is no lock order to
//! get wrong.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{BoardError, Result};
use crate::pins::LedOutput;

/// What the status LED is saying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Ready, not recording: a short blip every 3 s, visible in a dark room but not distracting.
    Idle,
    /// Recording: solid on, so a lecturer can tell at a glance.
    Recording,
    /// Something needs attention: fast 4 Hz blink.
    Error,
    /// No configuration yet: a double blink every 1.5 s.
    NotProvisioned,
    /// Ready, but recordings are waiting to be uploaded for longer than they should (or were
    /// refused): a slow 0.5 Hz blink, so the AV team sees a stuck backlog from the door.
    Backlog,
    /// Recording, with a signal alarm raised: on 0.7 s, off 0.3 s.
    RecordingAlarm,
}

impl LedPattern {
    /// Every pattern, for tests and for listing in help text.
    pub const ALL: [LedPattern; 7] = [
        LedPattern::Off,
        LedPattern::Idle,
        LedPattern::Recording,
        LedPattern::Error,
        LedPattern::NotProvisioned,
        LedPattern::Backlog,
        LedPattern::RecordingAlarm,
    ];

    /// The lowercase name used in logs, the sim socket and serde.
    pub fn name(self) -> &'static str {
        match self {
            LedPattern::Off => "off",
            LedPattern::Idle => "idle",
            LedPattern::Recording => "recording",
            LedPattern::Error => "error",
            LedPattern::NotProvisioned => "not_provisioned",
            LedPattern::Backlog => "backlog",
            LedPattern::RecordingAlarm => "recording_alarm",
        }
    }

    /// The cycle as `(level, duration_ms)` segments; a single segment means steady.
    fn segments(self) -> &'static [(bool, u64)] {
        match self {
            LedPattern::Off => &[(false, 0)],
            LedPattern::Recording => &[(true, 0)],
            LedPattern::Idle => &[(true, 50), (false, 2950)],
            LedPattern::Error => &[(true, 125), (false, 125)],
            LedPattern::NotProvisioned => &[(true, 100), (false, 150), (true, 100), (false, 1150)],
            LedPattern::Backlog => &[(true, 1000), (false, 1000)],
            LedPattern::RecordingAlarm => &[(true, 700), (false, 300)],
        }
    }
}

impl fmt::Display for LedPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LedPattern {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<LedPattern, String> {
        LedPattern::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown LED pattern {s:?}"))
    }
}

/// One LED output and what it shows of the current pattern (table in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedRole {
    /// `[led]`: plays every pattern.
    Status,
    /// `[led2]` with `role = "tally"`: steady while recording, dark otherwise.
    Tally,
    /// `[led2]` with `role = "alert"`: plays the patterns that need someone (error, not
    /// provisioned, backlog), dark otherwise.
    Alert,
    /// `[rgb]`'s three channels.
    Red,
    Green,
    Blue,
}

impl LedRole {
    /// The pin map key of this light, for messages (`led`, `led2`, `rgb.red`, ...).
    pub fn key(self) -> &'static str {
        match self {
            LedRole::Status => "led",
            LedRole::Tally | LedRole::Alert => "led2",
            LedRole::Red => "rgb.red",
            LedRole::Green => "rgb.green",
            LedRole::Blue => "rgb.blue",
        }
    }

    /// Whether this light is on while pattern `p` is at level `on` (the status LED's level).
    /// Pure; the table in the module doc.
    pub fn level(self, p: LedPattern, on: bool) -> bool {
        use LedPattern::*;
        // (red, green, blue) while the pattern is "on".
        let colour = match p {
            Off => (false, false, false),
            Idle => (false, true, false),
            Recording => (true, false, false),
            Error => (true, true, false),
            NotProvisioned => (false, false, true),
            Backlog => (false, true, true),
            RecordingAlarm => (true, false, true),
        };
        // The tally says "on air" and media is being captured: it does not blink with the alarm.
        if self == LedRole::Tally && p == RecordingAlarm {
            return true;
        }
        // `Off` is dark on every light even if a caller passes `on` (its only segment is dark).
        on && p != Off
            && match self {
                LedRole::Status => true,
                LedRole::Tally => p == Recording,
                LedRole::Alert => matches!(p, Error | NotProvisioned | Backlog | RecordingAlarm),
                LedRole::Red => colour.0,
                LedRole::Green => colour.1,
                LedRole::Blue => colour.2,
            }
    }
}

/// The LED level `t` after pattern `p` started, and how long that level lasts
/// (`None` = steady forever). Pure, so the pattern table is tested without a thread.
pub fn led_level(p: LedPattern, t: Duration) -> (bool, Option<Duration>) {
    let segs = p.segments();
    if segs.len() == 1 {
        return (segs[0].0, None);
    }
    let period: u64 = segs.iter().map(|s| s.1).sum();
    // Work in microseconds so sub-millisecond wakeups still land in the right segment.
    let mut phase = (t.as_micros() % (u128::from(period) * 1000)) as u64;
    for &(level, ms) in segs {
        let len = ms * 1000;
        if phase < len {
            return (level, Some(Duration::from_micros(len - phase)));
        }
        phase -= len;
    }
    unreachable!("phase is below the period by construction")
}

struct Shared {
    pattern: LedPattern,
    started: Instant,
    level: bool,
    stop: bool,
}

type SharedCell = Arc<(Mutex<Shared>, Condvar)>;

/// A read-only view of a running [`LedDriver`]; the sim handle uses it to report the pattern.
#[derive(Clone)]
pub struct LedWatch(SharedCell);

impl LedWatch {
    pub fn pattern(&self) -> LedPattern {
        lock(&self.0).pattern
    }
    /// The level the driver last wrote to the pin.
    pub fn level(&self) -> bool {
        lock(&self.0).level
    }
}

/// Owns the LED output on its own thread and plays the current [`LedPattern`]. Stops (and turns
/// the LED off) on drop.
pub struct LedDriver {
    shared: SharedCell,
    thread: Option<JoinHandle<()>>,
}

fn lock(cell: &SharedCell) -> std::sync::MutexGuard<'_, Shared> {
    // A panic in the LED thread must not take the recorder down with a poisoned lock.
    cell.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl LedDriver {
    /// Starts the LED thread with pattern `Off`, driving one status LED.
    pub fn spawn(out: Box<dyn LedOutput>) -> Result<LedDriver> {
        LedDriver::spawn_lights(vec![(LedRole::Status, out)])
    }

    /// Starts the LED thread with pattern `Off`, driving every light of a pin map (status LED
    /// first; see [`crate::PinMap::lights`]).
    pub fn spawn_lights(mut outs: Vec<(LedRole, Box<dyn LedOutput>)>) -> Result<LedDriver> {
        let shared: SharedCell = Arc::new((
            Mutex::new(Shared {
                pattern: LedPattern::Off,
                started: Instant::now(),
                level: false,
                stop: false,
            }),
            Condvar::new(),
        ));
        // Write the initial level so the pin state matches `level` from the start.
        for (role, out) in &mut outs {
            if let Err(e) = out.set(false) {
                log::warn!(target: "board", "LED {}: initial off failed: {e}", role.key());
            }
        }
        let cell = shared.clone();
        let thread = std::thread::Builder::new()
            .name("board-led".into())
            .spawn(move || run(cell, outs))
            .map_err(|source| BoardError::Spawn {
                name: "board-led",
                source,
            })?;
        Ok(LedDriver {
            shared,
            thread: Some(thread),
        })
    }

    /// Switches pattern. Setting the pattern already playing is a no-op, so callers may re-assert
    /// it every tick without restarting the blink phase.
    pub fn set_pattern(&self, p: LedPattern) {
        let mut s = lock(&self.shared);
        if s.pattern != p {
            log::debug!(target: "board", "LED pattern {} -> {}", s.pattern, p);
            s.pattern = p;
            s.started = Instant::now();
            self.shared.1.notify_all();
        }
    }

    pub fn pattern(&self) -> LedPattern {
        lock(&self.shared).pattern
    }

    /// The level the driver last wrote to the pin.
    pub fn level(&self) -> bool {
        lock(&self.shared).level
    }

    pub fn watch(&self) -> LedWatch {
        LedWatch(self.shared.clone())
    }
}

impl Drop for LedDriver {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One light the thread drives: its role, its output, the level last written, and whether the
/// last write failed (only the first failure of a streak is logged: a broken LED must not flood
/// the journal at 4 Hz).
struct Light {
    role: LedRole,
    out: Box<dyn LedOutput>,
    level: bool,
    failing: bool,
}

impl Light {
    fn write(&mut self, on: bool) {
        match self.out.set(on) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                log::warn!(target: "board", "LED {}: setting {} failed: {e}", self.role.key(), if on { "on" } else { "off" });
            }
            Err(_) => {}
        }
        self.level = on;
    }
}

fn run(cell: SharedCell, outs: Vec<(LedRole, Box<dyn LedOutput>)>) {
    let mut lights: Vec<Light> = outs
        .into_iter()
        .map(|(role, out)| Light {
            role,
            out,
            level: false,
            failing: false,
        })
        .collect();
    let mut guard = lock(&cell);
    loop {
        if guard.stop {
            break;
        }
        let pattern = guard.pattern;
        let (on, next) = led_level(pattern, guard.started.elapsed());
        let wanted: Vec<bool> = lights.iter().map(|l| l.role.level(pattern, on)).collect();
        let changed = lights.iter().zip(&wanted).any(|(l, w)| l.level != *w);
        if changed || on != guard.level {
            drop(guard);
            for (light, w) in lights.iter_mut().zip(wanted) {
                if light.level != w {
                    light.write(w);
                }
            }
            guard = lock(&cell);
            guard.level = on;
            // The pattern may have changed while the lock was released; recompute at once.
            if guard.pattern != pattern || guard.stop {
                continue;
            }
        }
        guard = match next {
            Some(d) => {
                cell.1
                    .wait_timeout(guard, d)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => cell.1.wait(guard).unwrap_or_else(|e| e.into_inner()),
        };
    }
    drop(guard);
    for light in &mut lights {
        if let Err(e) = light.out.set(false) {
            log::warn!(target: "board", "LED {}: turning off on shutdown failed: {e}", light.role.key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LedPattern::*;

    /// `(level, ms until the next change or None for steady)`.
    type Expect = (bool, Option<u64>);

    fn check(p: LedPattern, t_ms: u64, expect: Expect) {
        let (on, next) = led_level(p, Duration::from_millis(t_ms));
        let got = (on, next.map(|d| d.as_millis() as u64));
        assert_eq!(got, expect, "{p} at {t_ms} ms");
    }

    #[test]
    fn pattern_table() {
        let cases: &[(LedPattern, u64, Expect)] = &[
            (Off, 0, (false, None)),
            (Off, 123_456, (false, None)),
            (Recording, 0, (true, None)),
            (Recording, 99_999, (true, None)),
            (Idle, 0, (true, Some(50))),
            (Idle, 49, (true, Some(1))),
            (Idle, 50, (false, Some(2950))),
            (Idle, 2999, (false, Some(1))),
            (Idle, 3000, (true, Some(50))),
            (Idle, 3020, (true, Some(30))),
            (Error, 0, (true, Some(125))),
            (Error, 125, (false, Some(125))),
            (Error, 250, (true, Some(125))),
            (Error, 1000, (true, Some(125))),
            (NotProvisioned, 0, (true, Some(100))),
            (NotProvisioned, 100, (false, Some(150))),
            (NotProvisioned, 250, (true, Some(100))),
            (NotProvisioned, 350, (false, Some(1150))),
            (NotProvisioned, 1500, (true, Some(100))),
            (Backlog, 0, (true, Some(1000))),
            (Backlog, 1000, (false, Some(1000))),
            (Backlog, 2500, (true, Some(500))),
            (RecordingAlarm, 0, (true, Some(700))),
            (RecordingAlarm, 700, (false, Some(300))),
            (RecordingAlarm, 1100, (true, Some(600))),
        ];
        for &(p, t, e) in cases {
            check(p, t, e);
        }
    }

    #[test]
    fn error_blinks_at_4_hz() {
        let ons = (0..1000).step_by(5).filter(|&t| {
            led_level(Error, Duration::from_millis(t)).0
                && !led_level(Error, Duration::from_millis(t.saturating_sub(5))).0
        });
        // Rising edges in one second: at 250, 500, 750 (t=0 has no previous off sample).
        assert_eq!(ons.count(), 3);
    }

    #[test]
    fn names_round_trip_through_display_fromstr_and_serde() {
        for p in LedPattern::ALL {
            assert_eq!(p.to_string().parse::<LedPattern>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(NotProvisioned.to_string(), "not_provisioned");
    }

    /// `(pattern, role, expected level while the pattern is "on")`; while "off" every light is
    /// dark, which `lights_are_dark_when_the_pattern_is` checks for all of them.
    #[test]
    fn light_table() {
        use LedRole::*;
        let cases: &[(LedPattern, LedRole, bool)] = &[
            (Recording, Status, true),
            (Recording, Tally, true),
            (Recording, Alert, false),
            (Recording, Red, true),
            (Recording, Green, false),
            (Recording, Blue, false),
            (Idle, Status, true),
            (Idle, Tally, false),
            (Idle, Alert, false),
            (Idle, Green, true),
            (Idle, Red, false),
            (Error, Tally, false),
            (Error, Alert, true),
            (Error, Red, true),
            (Error, Green, true),
            (Error, Blue, false),
            (NotProvisioned, Alert, true),
            (NotProvisioned, Blue, true),
            (NotProvisioned, Red, false),
            (NotProvisioned, Green, false),
            (Backlog, Alert, true),
            (Backlog, Green, true),
            (Backlog, Blue, true),
            (Backlog, Red, false),
            (Backlog, Tally, false),
            (Off, Status, false),
            (Off, Alert, false),
            (RecordingAlarm, Status, true),
            (RecordingAlarm, Tally, true),
            (RecordingAlarm, Alert, true),
            (RecordingAlarm, Red, true),
            (RecordingAlarm, Green, false),
            (RecordingAlarm, Blue, true),
        ];
        for &(p, role, expect) in cases {
            assert_eq!(role.level(p, true), expect, "{role:?} during {p}");
        }
    }

    #[test]
    fn lights_are_dark_when_the_pattern_is() {
        let roles = [
            LedRole::Status,
            LedRole::Tally,
            LedRole::Alert,
            LedRole::Red,
            LedRole::Green,
            LedRole::Blue,
        ];
        for p in LedPattern::ALL {
            for role in roles {
                if (p, role) == (RecordingAlarm, LedRole::Tally) {
                    assert!(role.level(p, false), "the tally stays lit through an alarm's dark part");
                    continue;
                }
                assert!(
                    !role.level(p, false),
                    "{role:?} lit during the dark part of {p}"
                );
            }
        }
    }

    #[test]
    fn every_pattern_has_its_own_colour() {
        // A colour-only display (the RGB LED seen from across the room) must still tell the
        // lit patterns apart.
        let colour =
            |p: LedPattern| [LedRole::Red, LedRole::Green, LedRole::Blue].map(|r| r.level(p, true));
        let lit: Vec<_> = LedPattern::ALL
            .into_iter()
            .filter(|p| *p != Off)
            .map(|p| (p, colour(p)))
            .collect();
        for (i, (p, c)) in lit.iter().enumerate() {
            assert_ne!(*c, [false; 3], "{p} is dark on the RGB LED");
            for (q, d) in &lit[i + 1..] {
                assert_ne!(c, d, "{p} and {q} share a colour");
            }
        }
    }

    /// Records levels written, for driving `LedDriver` without hardware.
    #[derive(Clone, Default)]
    struct Rec(Arc<Mutex<Vec<bool>>>);
    impl LedOutput for Rec {
        fn set(&mut self, on: bool) -> Result<()> {
            self.0.lock().unwrap().push(on);
            Ok(())
        }
    }

    #[test]
    fn driver_plays_pattern_and_turns_off_on_drop() {
        let rec = Rec::default();
        let d = LedDriver::spawn(Box::new(rec.clone())).unwrap();
        d.set_pattern(Recording);
        assert_eq!(d.pattern(), Recording);
        let t0 = Instant::now();
        while !d.level() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(d.level());
        d.set_pattern(Error);
        std::thread::sleep(Duration::from_millis(300));
        drop(d);
        let levels = rec.0.lock().unwrap().clone();
        // Initial off, on for recording, then at least one off/on cycle of Error, then off at drop.
        assert_eq!(levels.first(), Some(&false));
        assert_eq!(levels.last(), Some(&false));
        assert!(levels.len() >= 4, "{levels:?}");
    }

    #[test]
    fn driver_plays_every_light_in_step() {
        let (status, tally, red, green) = (
            Rec::default(),
            Rec::default(),
            Rec::default(),
            Rec::default(),
        );
        let d = LedDriver::spawn_lights(vec![
            (LedRole::Status, Box::new(status.clone())),
            (LedRole::Tally, Box::new(tally.clone())),
            (LedRole::Red, Box::new(red.clone())),
            (LedRole::Green, Box::new(green.clone())),
        ])
        .unwrap();
        let last = |r: &Rec| r.0.lock().unwrap().last().copied();
        let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
            let t0 = Instant::now();
            while !ok() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "timed out waiting for {what}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        d.set_pattern(Recording);
        wait_for("recording lights", &|| {
            last(&status) == Some(true) && last(&tally) == Some(true) && last(&red) == Some(true)
        });
        assert_eq!(last(&green), Some(false), "green lit while recording");
        // Error keeps the status LED's level at the start of its blink but must put out the tally.
        d.set_pattern(Error);
        wait_for("tally off on error", &|| last(&tally) == Some(false));
        wait_for("amber on error", &|| last(&green) == Some(true));
        drop(d);
        for (name, r) in [
            ("status", &status),
            ("tally", &tally),
            ("red", &red),
            ("green", &green),
        ] {
            assert_eq!(last(r), Some(false), "{name} not dark after drop");
            assert_eq!(
                r.0.lock().unwrap().first(),
                Some(&false),
                "{name} did not start dark"
            );
        }
    }
}
