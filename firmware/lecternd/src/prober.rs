//! The idle-time device probe worker: one thread that, when the main loop asks, checks that the
//! configured camera and mic can be opened (`lectern_capture::probe_inputs`) and reports back
//! through the main loop's event channel. The main loop decides *when* (only while the recorder
//! is idle, every `capture.probe_interval_s`) and what follows (status, LED, log); the probe
//! runs here because opening a device can take a while and the main loop feeds the watchdog.
//!
//! # Ordering with a recording (the [`DeviceGate`])
//!
//! A probe must never hold a device a recording is opening (an ALSA `hw:` PCM is exclusive). The
//! gate has two flags under one mutex: `claimed` (a recording owns the devices: set by the main
//! loop just before it starts a capture, cleared when the recorder is idle again) and `probing`
//! (a probe has the devices open). The worker starts a probe only if the devices are not claimed
//! and marks `probing` in the same critical section; the main loop sets `claimed` and then waits
//! until `probing` is false. So whichever comes first, a probe and a capture never overlap: a
//! probe that began first finishes (milliseconds) before the capture opens anything, and a probe
//! asked for before a recording but picked up after it is skipped. The wait is bounded: a probe
//! stuck in a driver longer than that is logged and the capture goes ahead anyway (its own
//! failure then takes the existing retry path).

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lectern_capture::{CaptureSettings, DeviceReport};

/// How long a starting capture waits for a running probe before going ahead anyway.
pub const CLAIM_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct GateState {
    claimed: bool,
    probing: bool,
}

/// Who has the capture devices: a recording, a probe, or nobody (module doc).
#[derive(Debug, Default)]
pub struct DeviceGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl DeviceGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker, before a probe: false (skip it) while a recording owns the devices.
    fn begin_probe(&self) -> bool {
        let mut s = self.lock();
        if s.claimed {
            return false;
        }
        s.probing = true;
        true
    }

    /// The worker, after a probe: the devices are closed again.
    fn end_probe(&self) {
        self.lock().probing = false;
        self.changed.notify_all();
    }

    /// The main loop, before a capture opens the devices: no probe starts from now on, and a
    /// running one is waited for, at most `wait`. `Err` with the time waited if it is still
    /// running then. Idempotent.
    pub fn claim(&self, wait: Duration) -> Result<Duration, Duration> {
        let started = Instant::now();
        let mut s = self.lock();
        s.claimed = true;
        let (s, _) = self.changed.wait_timeout_while(s, wait, |s| s.probing).unwrap_or_else(|e| e.into_inner());
        if s.probing {
            Err(started.elapsed())
        } else {
            Ok(started.elapsed())
        }
    }

    /// The main loop, once the recorder is idle again: probes may run. Idempotent.
    pub fn release(&self) {
        self.lock().claimed = false;
    }
}

/// What the worker reports for one request (generic so the gate's ordering is testable
/// without devices).
#[derive(Debug)]
pub enum Probed<R = DeviceReport> {
    /// The devices were checked.
    Report(R),
    /// A recording claimed the devices before the probe could start; nothing was opened.
    Skipped,
}

/// The worker thread's handle: requests go in, [`Probed`] comes back through `report`.
pub struct Prober {
    requests: Sender<()>,
    pub gate: Arc<DeviceGate>,
}

impl Prober {
    /// Starts the worker for the inputs of `settings`.
    pub fn spawn(settings: CaptureSettings, report: impl Fn(Probed) + Send + 'static) -> std::io::Result<Prober> {
        let gate = Arc::new(DeviceGate::default());
        let (requests, rx) = channel::<()>();
        let worker_gate = gate.clone();
        std::thread::Builder::new().name("device-probe".into()).spawn(move || {
            for () in rx {
                let started = Instant::now();
                let probed = probe_once(&worker_gate, || lectern_capture::probe_inputs(&settings));
                if matches!(probed, Probed::Report(_)) {
                    log::debug!(target: "lecternd", "device probe took {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
                }
                report(probed);
            }
        })?;
        Ok(Prober { requests, gate })
    }

    /// Asks the worker for one probe. Returns false if the worker is gone.
    pub fn request(&self) -> bool {
        self.requests.send(()).is_ok()
    }
}

/// One probe under the gate; `probe` opens the devices.
fn probe_once<R>(gate: &DeviceGate, probe: impl FnOnce() -> R) -> Probed<R> {
    if !gate.begin_probe() {
        return Probed::Skipped;
    }
    let report = probe();
    gate.end_probe();
    Probed::Report(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn a_claimed_gate_skips_the_probe_and_a_released_one_runs_it() {
        let gate = DeviceGate::default();
        assert!(gate.claim(CLAIM_WAIT).is_ok());
        assert!(matches!(probe_once(&gate, || panic!("a probe opened the devices during a recording")), Probed::<()>::Skipped));
        gate.release();
        assert!(matches!(probe_once(&gate, || 7), Probed::Report(7)));
    }

    #[test]
    fn a_starting_capture_waits_for_a_running_probe_to_close_the_devices() {
        let gate = Arc::new(DeviceGate::default());
        let (opened_tx, opened_rx) = sync_channel(0);
        let (closed_at_tx, closed_at_rx) = sync_channel(1);
        let worker = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                probe_once(&gate, || {
                    opened_tx.send(()).unwrap();
                    // The devices stay open a while; the capture must not get them before this ends.
                    std::thread::sleep(Duration::from_millis(300));
                    closed_at_tx.send(Instant::now()).unwrap();
                })
            })
        };
        opened_rx.recv().unwrap();
        let waited = gate.claim(CLAIM_WAIT).expect("the probe ends within the wait");
        let claimed_at = Instant::now();
        let closed_at = closed_at_rx.recv().unwrap();
        assert!(closed_at <= claimed_at, "the capture went ahead while the probe still had the devices");
        assert!(waited >= Duration::from_millis(200), "claim returned after {waited:?}, before the probe ended");
        assert!(matches!(worker.join().unwrap(), Probed::Report(())));
    }

    #[test]
    fn a_probe_stuck_in_a_driver_does_not_hold_a_capture_forever() {
        let gate = Arc::new(DeviceGate::default());
        assert!(gate.begin_probe());
        let waited = gate.claim(Duration::from_millis(100)).expect_err("the probe never ends");
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        gate.end_probe();
        // Still claimed: the next probe is skipped until the recorder is idle again.
        assert!(!gate.begin_probe());
    }
}
