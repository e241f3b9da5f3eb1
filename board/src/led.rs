//! Status LED: the pattern vocabulary, the sans-IO timing function [`led_level`], and
//! [`LedDriver`], the thread that owns the LED output and plays the current pattern.
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
}

impl LedPattern {
    /// Every pattern, for tests and for listing in help text.
    pub const ALL: [LedPattern; 6] = [
        LedPattern::Off,
        LedPattern::Idle,
        LedPattern::Recording,
        LedPattern::Error,
        LedPattern::NotProvisioned,
        LedPattern::Backlog,
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
    /// Starts the LED thread with pattern `Off`.
    pub fn spawn(mut out: Box<dyn LedOutput>) -> Result<LedDriver> {
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
        if let Err(e) = out.set(false) {
            log::warn!(target: "board", "LED: initial off failed: {e}");
        }
        let cell = shared.clone();
        let thread = std::thread::Builder::new()
            .name("board-led".into())
            .spawn(move || run(cell, out))
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

fn run(cell: SharedCell, mut out: Box<dyn LedOutput>) {
    // Only log the first failure of a streak; a broken LED must not flood the journal at 4 Hz.
    let mut failing = false;
    let mut guard = lock(&cell);
    loop {
        if guard.stop {
            break;
        }
        let pattern = guard.pattern;
        let (on, next) = led_level(pattern, guard.started.elapsed());
        if on != guard.level {
            drop(guard);
            match out.set(on) {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    log::warn!(target: "board", "LED: setting {} failed: {e}", if on { "on" } else { "off" });
                }
                Err(_) => {}
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
    if let Err(e) = out.set(false) {
        log::warn!(target: "board", "LED: turning off on shutdown failed: {e}");
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
}
