//! The sans-IO button debouncer: raw pin levels and timestamps in, `Press` / `LongPress` out.
//!
//! It owns no clock and no thread; the I/O shell (`monitor.rs`) feeds it edges and asks
//! [`Debouncer::next_deadline`] how long it may sleep, so a long press fires on time without
//! polling.
//!
//! # State transitions
//!
//! The debouncer tracks the last *raw* level and when it last changed (`raw_since`), and the
//! *stable* (debounced) level. A raw level that differs from the stable one is committed once it
//! has held for `debounce`; shorter excursions are bounce and vanish without a trace, both
//! spurious presses and brief drop-outs during a hold.
//!
//! - released → pressed (commit): no event yet; remember `pressed_at = raw_since`.
//! - pressed, held for `long_press` since `pressed_at`: emit `LongPress` once.
//! - pressed → released (commit): emit `Press` unless `LongPress` already fired (or the press
//!   started before we were watching, see [`Debouncer::with_initial`]).
//!
//! Times are "duration since an arbitrary epoch" so tests can use plain milliseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The debounced meaning of what the user did with the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonEvent {
    /// A short press, reported on release.
    Press,
    /// The button has been held for at least the long-press time; reported while still held.
    LongPress,
}

impl std::fmt::Display for ButtonEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ButtonEvent::Press => "press",
            ButtonEvent::LongPress => "long_press",
        })
    }
}

/// Default debounce: mechanical tact switches settle well within this.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(30);

/// Turns raw button levels into [`ButtonEvent`]s. See the module docs for the state machine.
#[derive(Debug, Clone)]
pub struct Debouncer {
    debounce: Duration,
    long_press: Duration,
    raw: bool,
    raw_since: Duration,
    stable: bool,
    /// When the current stable press began (the raw edge time, not the commit time).
    pressed_at: Duration,
    /// True once this press has produced its one event (or must produce none).
    press_spent: bool,
}

impl Debouncer {
    /// A debouncer that assumes the button starts released.
    pub fn new(debounce: Duration, long_press: Duration) -> Debouncer {
        Debouncer {
            debounce,
            long_press,
            raw: false,
            raw_since: Duration::ZERO,
            stable: false,
            pressed_at: Duration::ZERO,
            press_spent: false,
        }
    }

    /// Starts from the level read when monitoring begins. A button already held at that point
    /// (stuck, or someone leaning on it during boot) produces no event at all: we cannot know
    /// how long it has been held, and acting on it at boot would be a surprise.
    pub fn with_initial(mut self, pressed: bool, now: Duration) -> Debouncer {
        self.raw = pressed;
        self.raw_since = now;
        self.stable = pressed;
        self.pressed_at = now;
        self.press_spent = pressed;
        self
    }

    /// The debounced level.
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// Reports the raw level at `now` (an edge, or a re-read of the same level).
    ///
    /// Time is processed up to `now` first, so a commit or long press that was due before this
    /// edge is still reported even if the shell never called [`poll`](Self::poll) in between.
    pub fn feed(&mut self, pressed: bool, now: Duration) -> Option<ButtonEvent> {
        let event = self.poll(now);
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now;
        }
        event
    }

    /// Advances time to `now` without a new edge; call it when a deadline passes.
    pub fn poll(&mut self, now: Duration) -> Option<ButtonEvent> {
        if self.raw != self.stable && now.saturating_sub(self.raw_since) >= self.debounce {
            self.stable = self.raw;
            if self.stable {
                self.pressed_at = self.raw_since;
                self.press_spent = false;
            } else if !self.press_spent {
                self.press_spent = true;
                return Some(ButtonEvent::Press);
            }
        }
        if self.stable
            && !self.press_spent
            && now.saturating_sub(self.pressed_at) >= self.long_press
        {
            self.press_spent = true;
            return Some(ButtonEvent::LongPress);
        }
        None
    }

    /// The earliest time at which [`poll`](Self::poll) could return something or change state;
    /// `None` means "nothing until the next edge", so the shell may block indefinitely.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.raw != self.stable {
            Some(self.raw_since + self.debounce)
        } else if self.stable && !self.press_spent {
            Some(self.pressed_at + self.long_press)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ButtonEvent::*;

    /// One step of a script: a raw edge or a bare poll, at a time in milliseconds.
    #[derive(Clone, Copy)]
    enum Step {
        Down(u64),
        Up(u64),
        Poll(u64),
    }
    use Step::*;

    /// Runs `script` with 30 ms debounce and 1000 ms long press, polling at every deadline the
    /// debouncer asks for (as the real shell does), and compares the `(ms, event)` list.
    fn check(script: &[Step], expect: &[(u64, ButtonEvent)]) {
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(30), ms(1000));
        let mut got = Vec::new();
        let run_deadlines = |d: &mut Debouncer, until: u64, got: &mut Vec<(u64, ButtonEvent)>| {
            while let Some(dl) = d.next_deadline() {
                if dl > ms(until) {
                    break;
                }
                if let Some(e) = d.poll(dl) {
                    got.push((dl.as_millis() as u64, e));
                }
            }
        };
        for step in script {
            let (t, ev) = match *step {
                Down(t) => {
                    run_deadlines(&mut d, t, &mut got);
                    (t, d.feed(true, ms(t)))
                }
                Up(t) => {
                    run_deadlines(&mut d, t, &mut got);
                    (t, d.feed(false, ms(t)))
                }
                Poll(t) => {
                    run_deadlines(&mut d, t, &mut got);
                    (t, d.poll(ms(t)))
                }
            };
            if let Some(e) = ev {
                got.push((t, e));
            }
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn short_press_emits_press_after_release_settles() {
        check(&[Down(0), Up(200), Poll(5000)], &[(230, Press)]);
    }

    #[test]
    fn bounce_shorter_than_debounce_is_ignored() {
        check(&[Down(0), Up(10), Down(20), Up(25), Poll(5000)], &[]);
    }

    #[test]
    fn contact_chatter_on_press_and_release_is_one_press() {
        check(
            &[
                Down(0),
                Up(3),
                Down(6),
                Up(150),
                Down(155),
                Up(158),
                Poll(5000),
            ],
            &[(188, Press)],
        );
    }

    #[test]
    fn dropout_during_hold_does_not_split_the_press() {
        check(
            &[Down(0), Up(100), Down(110), Up(300), Poll(5000)],
            &[(330, Press)],
        );
    }

    #[test]
    fn long_press_fires_while_held_and_release_is_silent() {
        check(&[Down(0), Up(2500), Poll(5000)], &[(1000, LongPress)]);
    }

    #[test]
    fn long_press_measured_from_the_first_edge_not_the_commit() {
        check(
            &[Down(100), Poll(1099), Poll(1100), Up(1500), Poll(5000)],
            &[(1100, LongPress)],
        );
    }

    #[test]
    fn long_press_fires_once_only() {
        check(
            &[
                Down(0),
                Poll(1000),
                Poll(2000),
                Poll(3000),
                Up(3100),
                Poll(5000),
            ],
            &[(1000, LongPress)],
        );
    }

    #[test]
    fn two_presses_in_a_row() {
        check(
            &[Down(0), Up(100), Down(300), Up(400), Poll(5000)],
            &[(130, Press), (430, Press)],
        );
    }

    #[test]
    fn press_just_under_long_press_is_short() {
        check(&[Down(0), Up(999), Poll(5000)], &[(1029, Press)]);
    }

    #[test]
    fn press_exactly_debounce_long_counts() {
        check(&[Down(0), Up(30), Poll(5000)], &[(60, Press)]);
    }

    #[test]
    fn late_feed_still_reports_the_due_long_press() {
        // The shell was asleep past the deadline; the next edge must not lose the long press.
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(30), ms(1000));
        assert_eq!(d.feed(true, ms(0)), None);
        assert_eq!(d.feed(false, ms(1500)), Some(LongPress));
        assert_eq!(d.poll(ms(2000)), None);
    }

    #[test]
    fn deadlines_point_at_commit_then_long_press_then_nothing() {
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(30), ms(1000));
        assert_eq!(d.next_deadline(), None);
        d.feed(true, ms(10));
        assert_eq!(d.next_deadline(), Some(ms(40)));
        d.poll(ms(40));
        assert_eq!(d.next_deadline(), Some(ms(1010)));
        d.poll(ms(1010));
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn button_held_at_start_produces_nothing_until_a_fresh_press() {
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(30), ms(1000)).with_initial(true, ms(0));
        assert_eq!(d.poll(ms(5000)), None);
        assert_eq!(d.feed(false, ms(6000)), None);
        assert_eq!(d.poll(ms(6100)), None);
        assert_eq!(d.feed(true, ms(7000)), None);
        assert_eq!(d.feed(false, ms(7100)), None);
        assert_eq!(d.poll(ms(7200)), Some(Press));
    }
}
