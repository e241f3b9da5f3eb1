//! The simulated board: in-process button, power-fail and LED pins driven by a [`SimHandle`].
//!
//! It is the real backend's twin for development machines, CI and system tests. The pins
//! implement the same seams ([`EdgeInput`], [`LedOutput`]) as the hardware backends, plus the
//! embedded-hal 1.0 digital traits.
//!
//! # Time
//!
//! The sim does not fake the clock. `press()` and `long_press()` hold the simulated button
//! down for real (short) durations, so the very same monitor thread and debouncer that run on
//! a Pi run here, with nothing special-cased. The hold times are configurable on the handle
//! ([`SimHandle::set_hold_times`]): lecternd sets them from its configured debounce and
//! long-press times, and tests use a short long-press time so they stay fast. The sans-IO
//! [`Debouncer`](crate::Debouncer) itself is tested with injected time.
//!
//! # Lock order
//!
//! One `Mutex<SimState>` guards all pins; the condvar beside it wakes inputs waiting for edges.
//! The LED driver's lock is never held while this one is taken (see `led.rs`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::led::{LedPattern, LedWatch};
use crate::pins::{EdgeInput, LedOutput};

/// Edges queued beyond this are dropped (oldest first): nobody is consuming them.
const MAX_QUEUED_EDGES: usize = 64;

#[derive(Debug, Default)]
struct SimLine {
    active: bool,
    /// Edges not yet taken by `wait_edge`, so a quick down/up is never lost between waits.
    edges: VecDeque<bool>,
}

impl SimLine {
    fn set(&mut self, active: bool, name: &str) {
        if self.active == active {
            return;
        }
        self.active = active;
        if self.edges.len() == MAX_QUEUED_EDGES {
            log::debug!(target: "board", "sim {name}: nobody is reading edges; dropping the oldest");
            self.edges.pop_front();
        }
        self.edges.push_back(active);
    }
}

#[derive(Debug)]
struct SimState {
    button: SimLine,
    power_fail: SimLine,
    led_on: bool,
    press_hold: Duration,
    long_hold: Duration,
}

struct SimShared {
    state: Mutex<SimState>,
    edge: Condvar,
    led: Mutex<Option<LedWatch>>,
}

impl SimShared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which simulated input a pin reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Button,
    PowerFail,
}

impl Which {
    fn line(self, s: &mut SimState) -> &mut SimLine {
        match self {
            Which::Button => &mut s.button,
            Which::PowerFail => &mut s.power_fail,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Which::Button => "button",
            Which::PowerFail => "power_fail",
        }
    }
}

/// A snapshot of the simulated board, as the sim socket's `state` command reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimSnapshot {
    /// The LED driver's current pattern, or `None` if no driver is attached.
    pub led: Option<LedPattern>,
    pub led_on: bool,
    /// `"down"` or `"up"`.
    pub button: &'static str,
    pub powerfail: bool,
}

/// Controls the simulated board from tests, the sim socket or a REPL. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<SimShared>,
}

/// The pins of a fresh simulated board, ready to hand to monitors and the LED driver.
pub struct SimBoard {
    pub handle: SimHandle,
    pub button: SimInput,
    pub power_fail: SimInput,
    pub led: SimLed,
}

impl SimBoard {
    /// Button up, power good, LED off; default hold times 100 ms (press) and 2.1 s (long).
    pub fn new() -> SimBoard {
        let shared = Arc::new(SimShared {
            state: Mutex::new(SimState {
                button: SimLine::default(),
                power_fail: SimLine::default(),
                led_on: false,
                press_hold: Duration::from_millis(100),
                long_hold: Duration::from_millis(2100),
            }),
            edge: Condvar::new(),
            led: Mutex::new(None),
        });
        SimBoard {
            handle: SimHandle {
                shared: shared.clone(),
            },
            button: SimInput {
                shared: shared.clone(),
                which: Which::Button,
            },
            power_fail: SimInput {
                shared: shared.clone(),
                which: Which::PowerFail,
            },
            led: SimLed { shared },
        }
    }
}

impl Default for SimBoard {
    fn default() -> Self {
        SimBoard::new()
    }
}

impl SimHandle {
    fn set_line(&self, which: Which, active: bool) {
        let mut s = self.shared.lock();
        which.line(&mut s).set(active, which.name());
        drop(s);
        self.shared.edge.notify_all();
    }

    /// Sets how long [`press`](Self::press) and [`long_press`](Self::long_press) hold the button.
    /// Pick `press_hold` above the debounce time and `long_hold` above the long-press time.
    pub fn set_hold_times(&self, press_hold: Duration, long_hold: Duration) {
        let mut s = self.shared.lock();
        s.press_hold = press_hold;
        s.long_hold = long_hold;
    }

    /// The current `(press_hold, long_hold)`.
    pub fn hold_times(&self) -> (Duration, Duration) {
        let s = self.shared.lock();
        (s.press_hold, s.long_hold)
    }

    pub fn button_down(&self) {
        log::info!(target: "board", "sim: button down");
        self.set_line(Which::Button, true);
    }

    pub fn button_up(&self) {
        log::info!(target: "board", "sim: button up");
        self.set_line(Which::Button, false);
    }

    /// A short press: down, hold `press_hold` (blocking the caller), up.
    pub fn press(&self) {
        let (hold, _) = self.hold_times();
        self.hold(hold);
    }

    /// A long press: down, hold `long_hold` (blocking the caller), up.
    pub fn long_press(&self) {
        let (_, hold) = self.hold_times();
        self.hold(hold);
    }

    fn hold(&self, d: Duration) {
        self.button_down();
        std::thread::sleep(d);
        self.button_up();
    }

    pub fn set_power_fail(&self, failing: bool) {
        log::info!(target: "board", "sim: power fail {}", if failing { "on" } else { "off" });
        self.set_line(Which::PowerFail, failing);
    }

    pub fn button_is_down(&self) -> bool {
        self.shared.lock().button.active
    }

    pub fn power_fail(&self) -> bool {
        self.shared.lock().power_fail.active
    }

    /// Lets the handle report the pattern of the LED driver that owns the sim LED.
    pub fn attach_led(&self, watch: LedWatch) {
        *self.shared.led.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch);
    }

    /// The attached LED driver's pattern, `None` if none is attached.
    pub fn led_pattern(&self) -> Option<LedPattern> {
        self.shared
            .led
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.pattern())
    }

    /// The level currently on the simulated LED pin.
    pub fn led_on(&self) -> bool {
        self.shared.lock().led_on
    }

    pub fn snapshot(&self) -> SimSnapshot {
        let led = self.led_pattern();
        let s = self.shared.lock();
        SimSnapshot {
            led,
            led_on: s.led_on,
            button: if s.button.active { "down" } else { "up" },
            powerfail: s.power_fail.active,
        }
    }
}

/// A simulated input pin (button or power-fail). Active-high: there is no wiring to invert.
pub struct SimInput {
    shared: Arc<SimShared>,
    which: Which,
}

impl EdgeInput for SimInput {
    fn is_active(&mut self) -> Result<bool> {
        Ok(self.which.line(&mut self.shared.lock()).active)
    }

    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<bool>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        loop {
            if let Some(level) = self.which.line(&mut s).edges.pop_front() {
                return Ok(Some(level));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            s = self
                .shared
                .edge
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl embedded_hal::digital::ErrorType for SimInput {
    type Error = Infallible;
}

impl embedded_hal::digital::InputPin for SimInput {
    /// High = active; the sim has no active-low wiring.
    fn is_high(&mut self) -> std::result::Result<bool, Infallible> {
        Ok(self.which.line(&mut self.shared.lock()).active)
    }
    fn is_low(&mut self) -> std::result::Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

/// The simulated LED pin.
pub struct SimLed {
    shared: Arc<SimShared>,
}

impl LedOutput for SimLed {
    fn set(&mut self, on: bool) -> Result<()> {
        self.shared.lock().led_on = on;
        Ok(())
    }
}

impl embedded_hal::digital::ErrorType for SimLed {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for SimLed {
    fn set_high(&mut self) -> std::result::Result<(), Infallible> {
        self.shared.lock().led_on = true;
        Ok(())
    }
    fn set_low(&mut self) -> std::result::Result<(), Infallible> {
        self.shared.lock().led_on = false;
        Ok(())
    }
}

impl embedded_hal::digital::StatefulOutputPin for SimLed {
    fn is_set_high(&mut self) -> std::result::Result<bool, Infallible> {
        Ok(self.shared.lock().led_on)
    }
    fn is_set_low(&mut self) -> std::result::Result<bool, Infallible> {
        Ok(!self.shared.lock().led_on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::{InputPin, OutputPin};

    #[test]
    fn quick_down_up_is_queued_not_lost() {
        let mut b = SimBoard::new();
        b.handle.button_down();
        b.handle.button_up();
        assert_eq!(b.button.wait_edge(Duration::ZERO).unwrap(), Some(true));
        assert_eq!(b.button.wait_edge(Duration::ZERO).unwrap(), Some(false));
        assert_eq!(b.button.wait_edge(Duration::from_millis(5)).unwrap(), None);
    }

    #[test]
    fn setting_the_same_level_is_not_an_edge() {
        let mut b = SimBoard::new();
        b.handle.set_power_fail(false);
        assert_eq!(b.power_fail.wait_edge(Duration::ZERO).unwrap(), None);
        b.handle.set_power_fail(true);
        b.handle.set_power_fail(true);
        assert_eq!(b.power_fail.wait_edge(Duration::ZERO).unwrap(), Some(true));
        assert_eq!(b.power_fail.wait_edge(Duration::ZERO).unwrap(), None);
    }

    #[test]
    fn wait_edge_wakes_on_a_change_from_another_thread() {
        let mut b = SimBoard::new();
        let h = b.handle.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.button_down();
        });
        assert_eq!(
            b.button.wait_edge(Duration::from_secs(5)).unwrap(),
            Some(true)
        );
        t.join().unwrap();
    }

    #[test]
    fn embedded_hal_view_of_the_pins() {
        let mut b = SimBoard::new();
        assert!(b.button.is_low().unwrap());
        b.handle.button_down();
        assert!(b.button.is_high().unwrap());
        b.led.set_high().unwrap();
        assert!(b.handle.led_on());
        let mut wrapped = crate::pins::HalOutput::new(b.led, true, "sim led");
        wrapped.set(true).unwrap();
        assert!(!b.handle.led_on(), "active-low on drives the pin low");
    }
}
