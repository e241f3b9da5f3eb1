//! The I/O shells around the inputs: one thread per input, blocked in
//! [`EdgeInput::wait_edge`], turning edges into callbacks.
//!
//! The button shell feeds the sans-IO [`Debouncer`] and sleeps exactly until its next deadline
//! (so a long press fires while the button is still held), capped at [`STOP_CHECK`] so the
//! shared stop flag is noticed promptly. Nothing here polls pin levels in a loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::debounce::{ButtonEvent, Debouncer};
use crate::error::{BoardError, Result};
use crate::pins::EdgeInput;

/// The longest a monitor blocks before looking at its stop flag. Short enough that shutdown
/// feels immediate, long enough that an idle box wakes only a few times a second.
pub const STOP_CHECK: Duration = Duration::from_millis(250);

/// After a failed read, wait this long before retrying so a vanished GPIO chip does not turn
/// into a hot loop that floods the journal.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Watches the button and calls `on_event` for every debounced [`ButtonEvent`]. The thread ends
/// when `stop` is set (within [`STOP_CHECK`]).
pub fn spawn_button_monitor(
    mut input: Box<dyn EdgeInput>,
    debounce: Duration,
    long_press: Duration,
    stop: Arc<AtomicBool>,
    mut on_event: impl FnMut(ButtonEvent) + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("board-button".into())
        .spawn(move || {
            let epoch = Instant::now();
            let now = || epoch.elapsed();
            let initial = match input.is_active() {
                Ok(v) => v,
                Err(e) => {
                    log::warn!(target: "board", "button: cannot read initial level, assuming released: {e}");
                    false
                }
            };
            if initial {
                log::warn!(target: "board", "button is already held at start; ignoring it until released");
            }
            let mut deb = Debouncer::new(debounce, long_press).with_initial(initial, now());
            let mut emit = |e: Option<ButtonEvent>| {
                if let Some(e) = e {
                    log::info!(target: "board", "button: {e}");
                    on_event(e);
                }
            };
            while !stop.load(Ordering::SeqCst) {
                let t = now();
                let timeout = deb.next_deadline().map_or(STOP_CHECK, |d| d.saturating_sub(t).min(STOP_CHECK));
                match input.wait_edge(timeout) {
                    Ok(Some(level)) => emit(deb.feed(level, now())),
                    Ok(None) => emit(deb.poll(now())),
                    Err(e) => backoff("button", &e, &stop),
                }
            }
            log::debug!(target: "board", "button monitor stopped");
        })
        .map_err(|source| BoardError::Spawn { name: "board-button", source })
}

/// Watches the power-fail input and calls `on_change(failing)` whenever its state changes. If
/// power is already failing when the monitor starts, that is reported at once as a change.
pub fn spawn_power_fail_monitor(
    mut input: Box<dyn EdgeInput>,
    stop: Arc<AtomicBool>,
    mut on_change: impl FnMut(bool) + Send + 'static,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("board-power-fail".into())
        .spawn(move || {
            let mut last = false;
            let mut report = |level: bool, last: &mut bool| {
                if level != *last {
                    *last = level;
                    if level {
                        log::warn!(target: "board", "power fail asserted");
                    } else {
                        log::info!(target: "board", "power restored");
                    }
                    on_change(level);
                }
            };
            match input.is_active() {
                Ok(level) => report(level, &mut last),
                Err(e) => log::warn!(target: "board", "power_fail: cannot read initial level, assuming power good: {e}"),
            }
            while !stop.load(Ordering::SeqCst) {
                match input.wait_edge(STOP_CHECK) {
                    Ok(Some(level)) => report(level, &mut last),
                    Ok(None) => {}
                    Err(e) => backoff("power_fail", &e, &stop),
                }
            }
            log::debug!(target: "board", "power-fail monitor stopped");
        })
        .map_err(|source| BoardError::Spawn { name: "board-power-fail", source })
}

fn backoff(what: &str, e: &BoardError, stop: &AtomicBool) {
    log::warn!(target: "board", "{what}: waiting for an edge failed, retrying in {ERROR_BACKOFF:?}: {e}");
    let until = Instant::now() + ERROR_BACKOFF;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(STOP_CHECK.min(until.saturating_duration_since(Instant::now())));
    }
}
