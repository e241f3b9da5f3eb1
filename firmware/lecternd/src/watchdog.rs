//! The systemd watchdog (`WatchdogSec=` in packaging/lecternd.service): when the main loop may
//! send `WATCHDOG=1`, and when it must stop so that systemd kills and restarts the daemon.
//!
//! Two faults must end in a restart (issue 13):
//! - **A wedged main loop.** The ping is sent only from the main loop's turn ([`Watchdog::tick`]
//!   in `publish_status`), never from another thread, so a loop stuck in a call stops the pings
//!   by itself. The loop turns at least once a second; pings go out at half the interval.
//! - **A recording whose pipeline stops delivering** (a hung camera, or a writer stuck on the
//!   card: the bounded channel fills and the appsink stops taking buffers). While a capture
//!   session runs, its delivered byte count must grow; when it has not grown for `stall_after`
//!   (the whole watchdog interval, so a slow pipeline start never trips it) the pings stop, and
//!   systemd kills the daemon within one more interval. The restart resumes the recording as a
//!   new part (the recorder's ad-hoc resume, or the schedule), which a stuck process never would.
//!
//! [`Watchdog::poll`] is sans-IO: time comes in as an argument and the verdict goes out;
//! [`Watchdog::tick`] is the shell that notifies systemd and logs a withheld ping once.

use std::time::{Duration, Instant};

/// What the main loop should do about the watchdog on this turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send `WATCHDOG=1` now.
    Ping,
    /// Healthy, but a ping went out less than half an interval ago.
    Wait,
    /// Send nothing: systemd is to restart the daemon. The reason is for the log.
    Withhold(String),
}

/// The capture progress the watchdog watches: a session's generation and the bytes its pipeline
/// has delivered so far (`CaptureStats::bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub generation: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Watchdog {
    /// Half of `WatchdogSec`, as systemd recommends.
    ping_every: Duration,
    /// How long a running session may deliver nothing.
    stall_after: Duration,
    last_ping: Option<Instant>,
    /// The last progress seen and when it last changed.
    progress: Option<(Progress, Instant)>,
    /// Whether the last verdict withheld the ping (so the log says it once).
    withholding: bool,
}

impl Watchdog {
    /// For systemd's `WATCHDOG_USEC` (the whole interval).
    pub fn new(interval: Duration) -> Watchdog {
        Watchdog { ping_every: interval / 2, stall_after: interval, last_ping: None, progress: None, withholding: false }
    }

    /// This turn's verdict. `capture` is the running session's progress, `None` with no session
    /// (idle, retrying after a failure, power lost).
    pub fn poll(&mut self, now: Instant, capture: Option<Progress>) -> Verdict {
        self.progress = match (capture, self.progress) {
            (None, _) => None,
            // Same session, no new bytes: the stall clock keeps running.
            (Some(p), Some((seen, since))) if p == seen => Some((seen, since)),
            // New bytes, or a new session (whose clock starts now).
            (Some(p), _) => Some((p, now)),
        };
        if let Some((p, since)) = self.progress {
            let stalled = now.saturating_duration_since(since);
            if stalled >= self.stall_after {
                return Verdict::Withhold(format!(
                    "capture session {} delivered nothing for {:.1} s (at {} bytes)",
                    p.generation,
                    stalled.as_secs_f64(),
                    p.bytes
                ));
            }
        }
        if self.last_ping.is_some_and(|at| now.saturating_duration_since(at) < self.ping_every) {
            return Verdict::Wait;
        }
        self.last_ping = Some(now);
        Verdict::Ping
    }

    /// Polls and acts: `WATCHDOG=1` to systemd, or one error line when the pings stop.
    pub fn tick(&mut self, now: Instant, capture: Option<Progress>, recording_id: Option<&str>) {
        match self.poll(now, capture) {
            Verdict::Ping => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                self.withholding = false;
            }
            Verdict::Wait => self.withholding = false,
            Verdict::Withhold(why) => {
                if !self.withholding {
                    let id = recording_id.unwrap_or("-");
                    log::error!(target: "lecternd", "recording {id}: {why}; withholding the watchdog ping so systemd restarts the daemon");
                }
                self.withholding = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One turn of the main loop: at `t_ms`, with this capture progress, expect this verdict.
    type Turn = (u64, Option<(u64, u64)>, &'static str);

    /// Runs `turns` through a watchdog of `interval_ms` on an injected clock and compares each
    /// verdict (`ping`, `wait`, `withhold`).
    fn check(interval_ms: u64, turns: &[Turn]) {
        let t0 = Instant::now();
        let mut w = Watchdog::new(Duration::from_millis(interval_ms));
        for (i, &(t_ms, capture, want)) in turns.iter().enumerate() {
            let capture = capture.map(|(generation, bytes)| Progress { generation, bytes });
            let got = match w.poll(t0 + Duration::from_millis(t_ms), capture) {
                Verdict::Ping => "ping",
                Verdict::Wait => "wait",
                Verdict::Withhold(_) => "withhold",
            };
            assert_eq!(got, want, "turn {i} at {t_ms} ms with {capture:?}");
        }
    }

    #[test]
    fn idle_loop_pings_at_half_the_interval() {
        check(10_000, &[(0, None, "ping"), (1_000, None, "wait"), (4_999, None, "wait"), (5_000, None, "ping"), (6_000, None, "wait"), (10_100, None, "ping")]);
    }

    #[test]
    fn wedged_loop_sends_nothing_between_turns() {
        // The loop's last turn before it wedged pinged at 1 s; the next turn, 30 s later, is
        // after systemd's deadline (1 s + 10 s): nothing was sent in between because pings come
        // only from `poll`. The first turn after a wedge pings (too late to matter).
        check(10_000, &[(0, None, "ping"), (1_000, None, "wait"), (31_000, None, "ping")]);
    }

    #[test]
    fn recording_that_delivers_keeps_pinging() {
        let turns: Vec<Turn> = (0..=40).map(|s| (s * 1_000, Some((1, s * 50_000)), if s % 5 == 0 { "ping" } else { "wait" })).collect();
        check(10_000, &turns);
    }

    #[test]
    fn capture_stall_withholds_the_ping_after_one_interval() {
        check(
            10_000,
            &[
                (0, Some((1, 0)), "ping"),
                (2_000, Some((1, 9_000)), "wait"),
                (5_000, Some((1, 20_000)), "ping"),
                // Nothing new from 5 s on.
                (10_000, Some((1, 20_000)), "ping"),
                (14_999, Some((1, 20_000)), "wait"),
                (15_000, Some((1, 20_000)), "withhold"),
                (16_000, Some((1, 20_000)), "withhold"),
                (40_000, Some((1, 20_000)), "withhold"),
            ],
        );
    }

    #[test]
    fn slow_pipeline_start_is_not_a_stall() {
        // The new session's clock starts at its first turn: 9 s to the first byte is fine.
        check(10_000, &[(0, None, "ping"), (3_000, Some((1, 0)), "wait"), (6_000, Some((1, 0)), "ping"), (12_000, Some((1, 0)), "ping"), (12_500, Some((1, 100)), "wait")]);
    }

    #[test]
    fn stall_ends_with_the_session_or_new_bytes() {
        check(
            10_000,
            &[
                (0, Some((1, 500)), "ping"),
                (10_000, Some((1, 500)), "withhold"),
                // The main loop stopped the stuck session (capture error path): idle pings again.
                (10_500, None, "ping"),
                // A new session with a byte count equal to the old one's is still a new session.
                (11_000, Some((2, 500)), "wait"),
                (20_999, Some((2, 500)), "ping"),
                (21_000, Some((2, 500)), "withhold"),
                (21_500, Some((2, 600)), "wait"),
            ],
        );
    }
}
