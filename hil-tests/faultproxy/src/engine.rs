//! The fault engine, sans-IO: a [`Plan`] applied to byte counts and times. The proxy's pumps ask
//! it, before writing each piece they read, how much of it may pass and what happens next
//! ([`Engine::admit`]); it answers from the plan and its own counters and never touches a socket
//! or a clock (time comes in as an argument), so every rule here is unit-tested without a
//! network.
//!
//! Counting: each direction has one byte counter for the plan's lifetime, across connections.
//! A byte-triggered fault at position `p` falls between byte `p-1` and byte `p`: exactly `p`
//! bytes have passed in that direction when it fires. Admission reserves bytes (the counter
//! moves when the pump is told it may write), so two connections racing in one direction still
//! see each position exactly once, and a cut lands on the connection that carried the byte
//! before it. Each repeating fault draws its gaps from its own stream of the seed, so its
//! positions depend on the seed alone, not on the traffic in the other direction or on timing.

use std::time::Duration;

use crate::plan::{Availability, Close, Dir, DownMode, Gap, Plan, Span};
use crate::stats::{FaultEvent, What};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to place faults.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (multiply-shift, no modulo bias worth the name at these ranges).
    pub fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        let width = u128::from(hi.saturating_sub(lo)) + 1;
        lo + ((u128::from(self.next_u64()) * width) >> 64) as u64
    }

    /// An independent stream for the `k`-th user of one seed.
    fn stream(seed: u64, k: u64) -> SplitMix64 {
        SplitMix64::new(SplitMix64::new(seed ^ (k + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64())
    }
}

/// A byte position that moves on each time it fires.
#[derive(Debug, Clone)]
struct Trigger {
    next: u64,
    gap: Gap,
    left: Option<u64>,
    rng: SplitMix64,
}

impl Trigger {
    fn new(gap: Gap, times: Option<u64>, rng: SplitMix64) -> Trigger {
        let mut t = Trigger { next: 0, gap, left: times, rng };
        t.next = if times == Some(0) { u64::MAX } else { t.draw() };
        t
    }

    fn draw(&mut self) -> u64 {
        match self.gap {
            Gap::Fixed(n) => n,
            Gap::Random(lo, hi) => self.rng.in_range(lo, hi),
        }
    }

    fn due(&self, count: u64) -> bool {
        self.next <= count
    }

    fn fire(&mut self) {
        self.left = self.left.map(|l| l.saturating_sub(1));
        if self.left == Some(0) {
            self.next = u64::MAX;
        } else {
            self.next = self.next.saturating_add(self.draw());
        }
    }
}

/// A rate limit in the GCRA (virtual scheduling) form: each piece moves a theoretical arrival
/// time on by its cost; a piece may go once that time is no more than `slack` ahead of now.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    rate: u64,
    slack_ns: u64,
    tat_ns: u64,
}

/// How far ahead of the rate a link may run: small, so a one-second measurement is within a
/// few percent of the rate.
const PACE_SLACK: Duration = Duration::from_millis(20);

impl Pace {
    pub(crate) fn new(rate: u64) -> Pace {
        Pace { rate: rate.max(1), slack_ns: PACE_SLACK.as_nanos() as u64, tat_ns: 0 }
    }

    /// How long to wait before sending `n` bytes at `now_ns`.
    pub(crate) fn take(&mut self, n: u64, now_ns: u64) -> Duration {
        let cost = (u128::from(n) * 1_000_000_000 / u128::from(self.rate)) as u64;
        self.tat_ns = self.tat_ns.max(now_ns) + cost;
        Duration::from_nanos(self.tat_ns.saturating_sub(self.slack_ns).saturating_sub(now_ns))
    }

    /// The largest piece worth reading at once: what the slack allows, within sane bounds.
    pub(crate) fn piece(&self) -> usize {
        ((u128::from(self.rate) * u128::from(self.slack_ns) / 1_000_000_000) as usize).clamp(512, 64 * 1024)
    }
}

/// What a pump does with the piece it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Write the first `n` bytes; then, if `cut` says so, end the connection that way.
    Forward { n: usize, cut: Option<Close> },
    /// The direction is stalled: hold the piece and ask again shortly.
    Wait,
    /// End the connection now, writing nothing.
    Cut(Close),
    /// Write these bytes to the client instead of the server's, then close.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone, Default)]
struct DirState {
    count: u64,
    cuts: Vec<(Trigger, Close)>,
    stalls: Vec<(Trigger, Span, SplitMix64)>,
    stalled_until: Option<Duration>,
    pace: Option<Pace>,
}

/// A plan in force; see the module doc.
#[derive(Debug)]
pub(crate) struct Engine {
    /// Which plan this is (0 for the one given at start), for the event log.
    plan_no: u32,
    dirs: [DirState; 2],
    garbage: u64,
    garbage_bytes: Vec<u8>,
    availability: Availability,
    down_mode: DownMode,
}

impl Engine {
    /// Applies `plan` at plan time zero; stalls that start at once are logged into `ev`.
    pub(crate) fn new(plan: &Plan, plan_no: u32, ev: &mut Vec<FaultEvent>) -> Engine {
        let mut dirs: [DirState; 2] = Default::default();
        let mut k = 0;
        for c in &plan.cuts {
            k += 1;
            dirs[c.dir.index()].cuts.push((Trigger::new(c.gap, c.times, SplitMix64::stream(plan.seed, k)), c.close));
        }
        for s in &plan.stalls {
            k += 1;
            let rng = SplitMix64::stream(plan.seed, k);
            let spans = SplitMix64::stream(plan.seed, k | 1 << 32);
            dirs[s.dir.index()].stalls.push((Trigger::new(s.gap, s.times, rng), s.span, spans));
        }
        for (d, rate) in dirs.iter_mut().zip(plan.throttle) {
            d.pace = rate.map(Pace::new);
        }
        let mut e = Engine { plan_no, dirs, garbage: plan.garbage, garbage_bytes: plan.garbage_bytes.clone(), availability: plan.availability, down_mode: plan.down_mode };
        for dir in [Dir::Up, Dir::Down] {
            e.start_due_stall(dir, Duration::ZERO, None, ev);
        }
        e
    }

    pub(crate) fn is_up(&self, now: Duration) -> bool {
        self.availability.is_up(now)
    }

    pub(crate) fn down_mode(&self) -> DownMode {
        self.down_mode
    }

    /// The largest piece a pump should read in `dir`.
    pub(crate) fn piece(&self, dir: Dir, buf: usize) -> usize {
        self.dirs[dir.index()].pace.as_ref().map_or(buf, |p| p.piece().min(buf))
    }

    /// How long to wait before writing `n` admitted bytes in `dir` at real time `real_ns`.
    pub(crate) fn pace(&mut self, dir: Dir, n: usize, real_ns: u64) -> Duration {
        self.dirs[dir.index()].pace.as_mut().map_or(Duration::ZERO, |p| p.take(n as u64, real_ns))
    }

    pub(crate) fn event(&self, now: Duration, conn: Option<u64>, dir: Option<Dir>, what: What) -> FaultEvent {
        let byte = dir.map_or(0, |d| self.dirs[d.index()].count);
        FaultEvent { plan: self.plan_no, at: now, conn, dir, byte, what }
    }

    /// Starts the first stall due at the current count, if any; true if one started.
    fn start_due_stall(&mut self, dir: Dir, now: Duration, conn: Option<u64>, ev: &mut Vec<FaultEvent>) -> bool {
        let d = &mut self.dirs[dir.index()];
        let count = d.count;
        let Some((t, span, rng)) = d.stalls.iter_mut().find(|(t, _, _)| t.due(count)) else { return false };
        t.fire();
        let span = match *span {
            Span::Fixed(s) => s,
            Span::Random(lo, hi) => Duration::from_nanos(rng.in_range(lo.as_nanos() as u64, hi.as_nanos() as u64)),
        };
        d.stalled_until = Some(now + span);
        ev.push(self.event(now, conn, Some(dir), What::Stall(span)));
        true
    }

    /// Fires the first cut due at the current count, if any.
    fn fire_due_cut(&mut self, dir: Dir, now: Duration, conn: u64, ev: &mut Vec<FaultEvent>) -> Option<Close> {
        let d = &mut self.dirs[dir.index()];
        let count = d.count;
        let (t, close) = d.cuts.iter_mut().find(|(t, _)| t.due(count))?;
        t.fire();
        let close = *close;
        ev.push(self.event(now, Some(conn), Some(dir), What::Cut(close)));
        Some(close)
    }

    /// A pump on connection `conn` holds `want` (> 0) bytes read in `dir` at plan time `now`.
    pub(crate) fn admit(&mut self, dir: Dir, want: usize, now: Duration, conn: u64, ev: &mut Vec<FaultEvent>) -> Step {
        let i = dir.index();
        if let Some(until) = self.dirs[i].stalled_until {
            if now < until {
                return Step::Wait;
            }
            self.dirs[i].stalled_until = None;
            ev.push(self.event(now, Some(conn), Some(dir), What::StallEnd));
        }
        if dir == Dir::Down && self.garbage > 0 {
            self.garbage -= 1;
            ev.push(self.event(now, Some(conn), Some(dir), What::Garbage));
            return Step::Garbage(self.garbage_bytes.clone());
        }
        if let Some(close) = self.fire_due_cut(dir, now, conn, ev) {
            return Step::Cut(close);
        }
        if self.start_due_stall(dir, now, Some(conn), ev) {
            return Step::Wait;
        }
        let d = &mut self.dirs[i];
        let count = d.count;
        let room = d.cuts.iter().map(|(t, _)| t.next).chain(d.stalls.iter().map(|(t, _, _)| t.next)).min().map_or(u64::MAX, |next| next - count);
        let n = (want as u64).min(room) as usize;
        d.count += n as u64;
        let cut = self.fire_due_cut(dir, now, conn, ev);
        Step::Forward { n, cut }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::MIB;

    /// Pushes `total` bytes through one direction in pieces of `piece`, as one connection that
    /// reconnects after every cut; returns the positions of the cuts.
    fn cut_positions(plan: &Plan, dir: Dir, total: u64, piece: usize) -> Vec<u64> {
        let mut ev = Vec::new();
        let mut e = Engine::new(plan, 0, &mut ev);
        let (mut sent, mut conn) = (0u64, 0u64);
        while sent < total {
            match e.admit(dir, piece.min((total - sent) as usize), Duration::ZERO, conn, &mut ev) {
                Step::Forward { n, cut } => {
                    sent += n as u64;
                    if cut.is_some() {
                        conn += 1;
                    }
                }
                Step::Cut(_) => conn += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        ev.iter().filter(|e| matches!(e.what, What::Cut(_))).map(|e| e.byte).collect()
    }

    #[test]
    fn cuts_fall_exactly_on_their_positions_whatever_the_piece_size() {
        let check = |plan: Plan, total: u64, expect: &[u64]| {
            for piece in [1, 7, 1000, 65536] {
                if total / piece as u64 <= 100_000 {
                    assert_eq!(cut_positions(&plan, Dir::Up, total, piece), expect, "piece {piece}");
                }
            }
        };
        check(Plan::exact_seed(1).cut_every(Dir::Up, 1000), 4000, &[1000, 2000, 3000, 4000]);
        check(Plan::exact_seed(1).cut_after(Dir::Up, 123), 4000, &[123]);
        check(Plan::exact_seed(1).cut_every(Dir::Down, 1000), 4000, &[]);
        check(Plan::exact_seed(1).cut(Dir::Up, Gap::Fixed(1000), Some(2), Close::Rst), 4000, &[1000, 2000]);
        check(Plan::exact_seed(1).cut_every(Dir::Up, MIB), 4 * MIB, &[MIB, 2 * MIB, 3 * MIB, 4 * MIB]);
    }

    #[test]
    fn a_cut_at_zero_cuts_before_the_first_byte_and_a_boundary_cut_lands_on_the_carrier() {
        let mut ev = Vec::new();
        let mut e = Engine::new(&Plan::exact_seed(1).cut_after(Dir::Down, 0), 0, &mut ev);
        assert_eq!(e.admit(Dir::Down, 100, Duration::ZERO, 7, &mut ev), Step::Cut(Close::Fin));
        assert_eq!(e.admit(Dir::Down, 100, Duration::ZERO, 8, &mut ev), Step::Forward { n: 100, cut: None });

        let mut e = Engine::new(&Plan::exact_seed(1).cut_after(Dir::Up, 150).resets(), 0, &mut ev);
        assert_eq!(e.admit(Dir::Up, 100, Duration::ZERO, 1, &mut ev), Step::Forward { n: 100, cut: None });
        assert_eq!(e.admit(Dir::Up, 100, Duration::ZERO, 1, &mut ev), Step::Forward { n: 50, cut: Some(Close::Rst) });
        assert_eq!(e.admit(Dir::Up, 100, Duration::ZERO, 2, &mut ev), Step::Forward { n: 100, cut: None }, "a second connection passes");
    }

    #[test]
    fn random_cuts_replay_from_the_seed_and_differ_between_seeds() {
        let plan = |seed| Plan::exact_seed(seed).cut_random(Dir::Up, 8 * MIB, 24 * MIB);
        let total = 256 * MIB;
        let a = cut_positions(&plan(7), Dir::Up, total, 65536);
        assert_eq!(a, cut_positions(&plan(7), Dir::Up, total, 4000), "same seed, other piece size");
        assert_ne!(a, cut_positions(&plan(8), Dir::Up, total, 65536));
        let gaps: Vec<u64> = std::iter::once(a[0]).chain(a.windows(2).map(|w| w[1] - w[0])).collect();
        assert!(gaps.iter().all(|g| (8 * MIB..=24 * MIB).contains(g)), "{gaps:?}");
        assert!(gaps.len() > 10 && gaps.iter().any(|&g| g != gaps[0]), "{gaps:?}");
        // A cut spec's positions do not depend on what else the plan holds.
        let busy = plan(7).stall_random(Dir::Up, (MIB, 2 * MIB), (Duration::ZERO, Duration::ZERO)).cut_every(Dir::Down, 100);
        let mut e = Engine::new(&busy, 0, &mut Vec::new());
        let mut ev = Vec::new();
        let mut sent = 0;
        while sent < total {
            if let Step::Forward { n, .. } = e.admit(Dir::Up, 65536, Duration::from_secs(1), 0, &mut ev) {
                sent += n as u64;
            }
        }
        let b: Vec<u64> = ev.iter().filter(|e| matches!(e.what, What::Cut(_))).map(|e| e.byte).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn a_stall_holds_its_direction_until_its_time_has_passed() {
        let ms = Duration::from_millis;
        let mut ev = Vec::new();
        let mut e = Engine::new(&Plan::exact_seed(1).stall_after(Dir::Up, 10, ms(500)), 0, &mut ev);
        assert_eq!(e.admit(Dir::Up, 100, ms(0), 1, &mut ev), Step::Forward { n: 10, cut: None });
        assert_eq!(e.admit(Dir::Up, 90, ms(1), 1, &mut ev), Step::Wait);
        assert_eq!(e.admit(Dir::Up, 90, ms(300), 2, &mut ev), Step::Wait, "every connection in that direction");
        assert_eq!(e.admit(Dir::Down, 90, ms(300), 2, &mut ev), Step::Forward { n: 90, cut: None }, "not the other direction");
        assert_eq!(e.admit(Dir::Up, 90, ms(501), 1, &mut ev), Step::Forward { n: 90, cut: None });
        let whats: Vec<_> = ev.iter().map(|e| (e.what.clone(), e.byte)).collect();
        assert_eq!(whats, [(What::Stall(ms(500)), 10), (What::StallEnd, 10)]);

        // A stall at byte 0 starts when the plan applies, traffic or not.
        let mut ev = Vec::new();
        let mut e = Engine::new(&Plan::exact_seed(1).stall(Dir::Down, ms(100)), 0, &mut ev);
        assert_eq!(ev.len(), 1);
        assert_eq!(e.admit(Dir::Down, 5, ms(99), 1, &mut ev), Step::Wait);
        assert_eq!(e.admit(Dir::Down, 5, ms(100), 1, &mut ev), Step::Forward { n: 5, cut: None });
    }

    #[test]
    fn garbage_replaces_the_next_reply_once() {
        let mut ev = Vec::new();
        let mut e = Engine::new(&Plan::exact_seed(1).garbage_reply().garbage_bytes(b"junk"), 0, &mut ev);
        assert_eq!(e.admit(Dir::Up, 5, Duration::ZERO, 1, &mut ev), Step::Forward { n: 5, cut: None });
        assert_eq!(e.admit(Dir::Down, 5, Duration::ZERO, 1, &mut ev), Step::Garbage(b"junk".to_vec()));
        assert_eq!(e.admit(Dir::Down, 5, Duration::ZERO, 2, &mut ev), Step::Forward { n: 5, cut: None });
    }

    #[test]
    fn pacing_holds_the_rate_after_a_small_slack() {
        let mut p = Pace::new(1_000_000);
        let ms = |n: u64| n * 1_000_000;
        assert_eq!(p.take(20_000, 0), Duration::ZERO, "the slack passes at once");
        assert_eq!(p.take(10_000, 0), Duration::from_millis(10));
        assert_eq!(p.take(10_000, ms(10)), Duration::from_millis(10));
        // Idle time earns no more than the slack.
        assert_eq!(p.take(20_000, ms(1000)), Duration::ZERO);
        assert_eq!(p.take(1_000, ms(1000)), Duration::from_millis(1));
        assert_eq!(p.piece(), 20_000);
        assert_eq!(Pace::new(1).piece(), 512);
    }

    #[test]
    fn splitmix_ranges_are_inclusive_and_seeded() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF, "the published first output for seed 0");
        let mut r = SplitMix64::new(42);
        let v: Vec<u64> = (0..1000).map(|_| r.in_range(3, 5)).collect();
        assert!(v.iter().all(|x| (3..=5).contains(x)) && [3, 4, 5].iter().all(|x| v.contains(x)));
        assert_eq!(SplitMix64::new(9).in_range(0, u64::MAX), SplitMix64::new(9).next_u64());
    }
}
