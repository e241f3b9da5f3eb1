//! The daemon's notion of time, behind a trait so tests and the recorder never read the real
//! clock directly, and the rules for when the wall clock can be trusted.
//!
//! These boards have no RTC: until NTP has synchronised, the wall clock may be hours or years
//! off, and when NTP does synchronise it *steps*. Two rules follow (issue 3):
//! - Scheduled recordings wait until the clock is trusted ([`trust`]): systemd-timesyncd says it
//!   synchronised, the kernel's NTP status is synchronised (chrony, ntpd), an RTC is present, or
//!   the config says so.
//! - A step must not cut or stretch a running recording: [`SteadyClock`] is wall time *anchored*
//!   once and then advanced by the monotonic clock. The main loop re-anchors it only while idle,
//!   so during a recording every duration and planned end follows the monotonic clock.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Milliseconds since the Unix epoch, UTC.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;

    /// Re-reads the wall clock (call only while nothing records). Returns the step in ms when it
    /// moved by more than a second against the monotonic clock.
    fn reanchor(&self) -> Option<i64> {
        None
    }
}

/// Wall time anchored to the monotonic clock; see the module doc.
pub struct SteadyClock {
    wall: Box<dyn Fn() -> i64 + Send + Sync>,
    mono: Box<dyn Fn() -> Duration + Send + Sync>,
    /// (wall ms, monotonic reading) at the last anchoring.
    anchor: Mutex<(i64, Duration)>,
}

impl SteadyClock {
    /// The real clocks: `chrono::Utc::now()` and `Instant`.
    pub fn system() -> SteadyClock {
        let origin = Instant::now();
        Self::with_sources(|| chrono::Utc::now().timestamp_millis(), move || origin.elapsed())
    }

    /// Injected wall and monotonic sources, for tests.
    pub fn with_sources(
        wall: impl Fn() -> i64 + Send + Sync + 'static,
        mono: impl Fn() -> Duration + Send + Sync + 'static,
    ) -> SteadyClock {
        let anchor = (wall(), mono());
        SteadyClock { wall: Box::new(wall), mono: Box::new(mono), anchor: Mutex::new(anchor) }
    }
}

impl Clock for SteadyClock {
    fn now_ms(&self) -> i64 {
        let (wall, at) = *self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        wall + (self.mono)().saturating_sub(at).as_millis() as i64
    }

    fn reanchor(&self) -> Option<i64> {
        let (wall_now, mono_now) = ((self.wall)(), (self.mono)());
        let mut anchor = self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        let expected = anchor.0 + mono_now.saturating_sub(anchor.1).as_millis() as i64;
        *anchor = (wall_now, mono_now);
        let step = wall_now - expected;
        (step.abs() > 1_000).then_some(step)
    }
}

/// `[clock] trust` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustPolicy {
    Auto,
    Always,
    Never,
}

/// Where [`trust`] looks; the real paths, or a test directory's.
#[derive(Debug, Clone)]
pub struct TrustProbe {
    /// systemd-timesyncd creates it once synchronised (systemd ≥ 246).
    pub timesync_flag: PathBuf,
    /// The first RTC, if the board has one.
    pub rtc: PathBuf,
    /// Ask the kernel (adjtimex) whether NTP has synchronised the clock.
    pub ask_kernel: bool,
}

impl Default for TrustProbe {
    fn default() -> Self {
        TrustProbe {
            timesync_flag: PathBuf::from("/run/systemd/timesync/synchronized"),
            rtc: PathBuf::from("/sys/class/rtc/rtc0"),
            ask_kernel: true,
        }
    }
}

/// Whether the wall clock is trusted, and why (or why not).
pub fn trust(policy: TrustPolicy, probe: &TrustProbe) -> (bool, String) {
    match policy {
        TrustPolicy::Always => (true, "config: clock.trust = \"always\"".into()),
        TrustPolicy::Never => (false, "config: clock.trust = \"never\"".into()),
        TrustPolicy::Auto => {
            if probe.timesync_flag.exists() {
                (true, format!("systemd-timesyncd synchronised ({})", probe.timesync_flag.display()))
            } else if probe.rtc.exists() {
                (true, format!("RTC present ({})", probe.rtc.display()))
            } else if probe.ask_kernel && kernel_ntp_synchronised() {
                (true, "kernel NTP status synchronised (adjtimex)".into())
            } else {
                (false, "waiting for NTP: no timesyncd flag, no RTC, kernel clock unsynchronised".into())
            }
        }
    }
}

/// adjtimex(2) in read-only mode (modes = 0): the clock is synchronised when the call does not
/// report `TIME_ERROR` and `STA_UNSYNC` is clear. This is what `timedatectl` shows as
/// "System clock synchronized", and it works for chrony and ntpd as well as timesyncd.
fn kernel_ntp_synchronised() -> bool {
    // SAFETY: a zeroed `timex` with `modes = 0` only reads the kernel's state into the struct.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_wall_clock_step_does_not_move_time_until_reanchored() {
        let wall = Arc::new(AtomicI64::new(1_000_000));
        let mono = Arc::new(AtomicU64::new(0));
        let (w, m) = (wall.clone(), mono.clone());
        let clock = SteadyClock::with_sources(move || w.load(Ordering::SeqCst), move || Duration::from_millis(m.load(Ordering::SeqCst)));
        let advance = |ms: u64| {
            mono.fetch_add(ms, Ordering::SeqCst);
            wall.fetch_add(ms as i64, Ordering::SeqCst);
        };
        advance(5_000);
        assert_eq!(clock.now_ms(), 1_005_000);
        // NTP steps the wall clock forward an hour in the middle of a lecture...
        wall.fetch_add(3_600_000, Ordering::SeqCst);
        advance(10_000);
        // ...and the lecture's time still follows the monotonic clock.
        assert_eq!(clock.now_ms(), 1_015_000);
        // Once idle, the daemon re-anchors and learns of the step.
        assert_eq!(clock.reanchor(), Some(3_600_000));
        assert_eq!(clock.now_ms(), 4_615_000);
        advance(500);
        assert_eq!(clock.reanchor(), None, "no step, nothing to report");
        assert_eq!(clock.now_ms(), 4_615_500);
    }

    #[test]
    fn trust_rules() {
        let dir = tempfile::tempdir().unwrap();
        let probe = |flag: bool, rtc: bool| {
            let p = TrustProbe { timesync_flag: dir.path().join("synchronized"), rtc: dir.path().join("rtc0"), ask_kernel: false };
            let _ = std::fs::remove_file(&p.timesync_flag);
            let _ = std::fs::remove_file(&p.rtc);
            if flag {
                std::fs::write(&p.timesync_flag, "").unwrap();
            }
            if rtc {
                std::fs::write(&p.rtc, "").unwrap();
            }
            p
        };
        let cases = [
            (TrustPolicy::Auto, false, false, false, "waiting for NTP"),
            (TrustPolicy::Auto, true, false, true, "timesyncd"),
            (TrustPolicy::Auto, false, true, true, "RTC present"),
            (TrustPolicy::Always, false, false, true, "always"),
            (TrustPolicy::Never, true, true, false, "never"),
        ];
        for (policy, flag, rtc, expect, why) in cases {
            let (trusted, reason) = trust(policy, &probe(flag, rtc));
            assert_eq!(trusted, expect, "{policy:?} flag={flag} rtc={rtc}: {reason}");
            assert!(reason.contains(why), "{reason}");
        }
    }
}
