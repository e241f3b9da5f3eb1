//! The upload policy, sans-IO: what happens after a step fails (retry when, park, start over),
//! the random start delay, and which endpoint of a target jobs use (failover and fail-back).
//! Time comes in as an argument and randomness from a seeded [`Rng`], so every rule is tested
//! without a clock or a network.
//!
//! # Retry (`decide`)
//!
//! | class | decision |
//! |---|---|
//! | `Transient` | retry after full jitter: uniform in `[0, window]`, the window 100 ms after the first failure since a success, then `initial × 2^(failures − 2)` up to `max`; never sooner than the server's `Retry-After` |
//! | `Auth` | as transient (an operator fixes credentials; the queue must survive it), and raised as an alarm |
//! | `Restart` | progress dropped, retried at once on the same endpoint |
//! | `Refused`, `Local` | parked with the reason; the media is kept |
//!
//! Full jitter (rather than plain doubling) spreads fifty rooms that lost the same server at the
//! same moment over the whole back-off window instead of retrying in lockstep.
//!
//! # Failover ([`Failover`])
//!
//! Per target, one endpoint is *current*. Each step's outcome on an endpoint and each health
//! check feed it. After `after_failures` consecutive failures of the current endpoint, the next
//! one (in configured order, wrapping) becomes current, preferring one whose last health check
//! passed. An endpoint earlier in the list than the current one becomes current again once it
//! has passed every health check for `failback_after`. Jobs follow the current endpoint; the
//! runner decides per job whether its progress moves with it (see `Target::abandon`).

use std::time::Duration;

use crate::target::{Class, UploadError};

/// A small seeded PRNG (splitmix64): jitter needs spread, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the clock and the process id: boxes booted together still differ.
    pub fn from_entropy() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]` milliseconds.
    pub fn below_ms(&mut self, max: Duration) -> i64 {
        let max = max.as_millis().min(i64::MAX as u128) as u64;
        if max == 0 {
            0
        } else {
            (self.next_u64() % (max + 1)) as i64
        }
    }
}

/// Back-off settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

/// The jitter window of the first failure after a success: a link that dropped once (a Wi-Fi
/// roam, a proxy restart, a cut every few minutes) is asked again at once rather than after
/// seconds of idle, while a server that stays down still gets the doubling back-off from the
/// second failure on. Measured by `cargo xtask bench-upload`: with a cut every 16 MiB, a first
/// retry in `[0, retry_initial]` left the link idle ~2.7 s per cut (goodput 0.26 of clean).
pub const FIRST_RETRY_WINDOW: Duration = Duration::from_millis(100);

impl RetryPolicy {
    /// The ceiling of the jitter window after `failures` consecutive failures (1 = the first
    /// since the last success): [`FIRST_RETRY_WINDOW`] (or `initial`, if smaller), then `initial`
    /// doubling per further failure up to `max`.
    pub fn window(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return FIRST_RETRY_WINDOW.min(self.initial).min(self.max);
        }
        let factor = 1u32.checked_shl(failures.saturating_sub(2).min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Full jitter: uniform in `[0, window(failures)]`.
    pub fn delay(&self, failures: u32, rng: &mut Rng) -> Duration {
        Duration::from_millis(rng.below_ms(self.window(failures)) as u64)
    }
}

/// What the runner does after a failed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep the progress and try again at `at_ms`.
    Retry { at_ms: i64 },
    /// Drop the progress (the server lost it) and try again at `at_ms`.
    Restart { at_ms: i64 },
    /// Refused for good: park with the reason.
    Park { reason: String },
}

/// Decides what follows a failed step; `failures` counts this one (≥ 1).
pub fn decide(err: &UploadError, failures: u32, now_ms: i64, retry: &RetryPolicy, rng: &mut Rng) -> Decision {
    let jitter = |rng: &mut Rng| retry.delay(failures, rng).as_millis() as i64;
    match &err.class {
        Class::Transient { retry_after } => {
            let floor = retry_after.map_or(0, |d| d.as_millis() as i64);
            Decision::Retry { at_ms: now_ms + jitter(rng).max(floor) }
        }
        Class::Auth => Decision::Retry { at_ms: now_ms + jitter(rng) },
        // Repeated restarts (a server that loses every upload) back off like failures do.
        Class::Restart if failures > 1 => Decision::Restart { at_ms: now_ms + jitter(rng) },
        Class::Restart => Decision::Restart { at_ms: now_ms },
        Class::Refused | Class::Local => Decision::Park { reason: err.message.clone() },
    }
}

/// Whether a failure says something about the endpoint (and so counts toward failover).
pub fn counts_against_endpoint(err: &UploadError) -> bool {
    matches!(err.class, Class::Transient { .. } | Class::Auth)
}

/// Which endpoint of one target is current; see the module doc.
#[derive(Debug, Clone)]
pub struct Failover {
    current: usize,
    failures: Vec<u32>,
    /// Since when each endpoint has passed every health check (None: last check failed or none).
    healthy_since: Vec<Option<i64>>,
    after_failures: u32,
    failback_ms: i64,
}

/// A change of the current endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub to: usize,
    pub why: String,
}

impl Failover {
    /// `n` endpoints (≥ 1); the primary (0) is current.
    pub fn new(n: usize, after_failures: u32, failback_after: Duration) -> Failover {
        let n = n.max(1);
        Failover { current: 0, failures: vec![0; n], healthy_since: vec![None; n], after_failures: after_failures.max(1), failback_ms: failback_after.as_millis() as i64 }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn len(&self) -> usize {
        self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Consecutive failures of endpoint `i`.
    pub fn failures(&self, i: usize) -> u32 {
        self.failures[i]
    }

    /// A step on endpoint `i` succeeded.
    pub fn succeeded(&mut self, i: usize, now_ms: i64) {
        self.failures[i] = 0;
        self.healthy_since[i].get_or_insert(now_ms);
    }

    /// A step on endpoint `i` failed in a way that counts against it. Returns the move this
    /// causes, if any.
    pub fn failed(&mut self, i: usize, _now_ms: i64) -> Option<Move> {
        self.failures[i] = self.failures[i].saturating_add(1);
        self.healthy_since[i] = None;
        if i != self.current || self.len() == 1 || self.failures[i] < self.after_failures {
            return None;
        }
        let n = self.len();
        let order = (1..n).map(|k| (i + k) % n);
        // Prefer the next endpoint that answers health checks; else simply the next one.
        let to = order.clone().find(|&j| self.healthy_since[j].is_some()).unwrap_or((i + 1) % n);
        let why = format!("endpoint {i} failed {} times in a row", self.failures[i]);
        self.current = to;
        self.failures[to] = 0;
        Some(Move { from: i, to, why })
    }

    /// A health check of endpoint `i`. Returns a fail-back move when an earlier endpoint has
    /// now been healthy for `failback_after`.
    pub fn health(&mut self, i: usize, ok: bool, now_ms: i64) -> Option<Move> {
        if ok {
            self.healthy_since[i].get_or_insert(now_ms);
        } else {
            self.healthy_since[i] = None;
        }
        self.failback(now_ms)
    }

    /// The earliest endpoint before the current one that has been healthy long enough.
    pub fn failback(&mut self, now_ms: i64) -> Option<Move> {
        let to = (0..self.current).find(|&j| self.healthy_since[j].is_some_and(|t| now_ms - t >= self.failback_ms))?;
        let from = self.current;
        self.current = to;
        self.failures[to] = 0;
        Some(Move { from, to, why: format!("endpoint {to} healthy for {} s", self.failback_ms / 1000) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryPolicy {
        RetryPolicy { initial: Duration::from_secs(5), max: Duration::from_secs(300) }
    }

    #[test]
    fn the_jitter_window_is_short_after_a_success_then_doubles_to_the_cap() {
        let w: Vec<u64> = (1..=10).map(|f| retry().window(f).as_millis() as u64).collect();
        assert_eq!(w, [100, 5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000]);
        assert_eq!(retry().window(1000), Duration::from_secs(300), "no overflow");
        let tiny = RetryPolicy { initial: Duration::from_millis(20), max: Duration::from_millis(80) };
        assert_eq!(tiny.window(1), Duration::from_millis(20), "never longer than initial");
    }

    #[test]
    fn full_jitter_spreads_fifty_rooms_over_the_whole_window() {
        // Fifty boxes that lost the server at the same instant, each with its own seed.
        let delays: Vec<u64> = (0..50).map(|seed| retry().delay(4, &mut Rng::new(seed)).as_millis() as u64).collect();
        let window = retry().window(4).as_millis() as u64;
        assert!(delays.iter().all(|&d| d <= window));
        let mut buckets = [0; 4];
        for d in &delays {
            buckets[(*d * 4 / (window + 1)) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| b >= 5), "every quarter of the window gets retries: {buckets:?}");
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() >= 45, "not in lockstep: {} distinct of 50", distinct.len());
    }

    #[test]
    fn decisions_by_class() {
        let mut rng = Rng::new(1);
        let e = |class| UploadError::new(class, "x");
        let check = |err: UploadError, failures: u32, rng: &mut Rng| decide(&err, failures, 1_000, &retry(), rng);
        // Transient: within the window; Retry-After is a floor.
        match check(e(Class::Transient { retry_after: None }), 1, &mut rng) {
            Decision::Retry { at_ms } => assert!((1_000..=1_100).contains(&at_ms), "the first retry after a success is quick: {at_ms}"),
            d => panic!("{d:?}"),
        }
        match check(e(Class::Transient { retry_after: None }), 2, &mut rng) {
            Decision::Retry { at_ms } => assert!((1_000..=6_000).contains(&at_ms), "{at_ms}"),
            d => panic!("{d:?}"),
        }
        match check(e(Class::Transient { retry_after: Some(Duration::from_secs(120)) }), 1, &mut rng) {
            Decision::Retry { at_ms } => assert_eq!(at_ms, 121_000),
            d => panic!("{d:?}"),
        }
        assert!(matches!(check(e(Class::Auth), 3, &mut rng), Decision::Retry { at_ms } if at_ms <= 11_000));
        assert_eq!(check(e(Class::Restart), 1, &mut rng), Decision::Restart { at_ms: 1_000 });
        assert!(matches!(check(e(Class::Restart), 3, &mut rng), Decision::Restart { at_ms } if at_ms <= 11_000));
        assert_eq!(check(UploadError::new(Class::Refused, "HTTP 403 forbidden"), 1, &mut rng), Decision::Park { reason: "HTTP 403 forbidden".into() });
        assert!(matches!(check(e(Class::Local), 1, &mut rng), Decision::Park { .. }));
        assert!(counts_against_endpoint(&e(Class::Auth)) && !counts_against_endpoint(&e(Class::Refused)));
    }

    #[test]
    fn failover_moves_after_repeated_failures_preferring_a_healthy_endpoint() {
        let mut f = Failover::new(3, 3, Duration::from_secs(600));
        assert_eq!(f.failed(0, 0), None);
        f.succeeded(0, 1);
        assert_eq!(f.failed(0, 2), None, "a success in between resets the count");
        assert_eq!(f.failed(0, 3), None);
        f.health(2, true, 3);
        let m = f.failed(0, 4).unwrap();
        assert_eq!((m.from, m.to), (0, 2), "the healthy standby, not simply the next");
        assert_eq!(f.current(), 2);
        // Failures on a non-current endpoint move nothing.
        assert_eq!(f.failed(0, 5), None);
        // With no endpoint known healthy, the next in order (wrapping).
        for t in 0..2 {
            assert_eq!(f.failed(2, 10 + t), None);
        }
        assert_eq!(f.failed(2, 20).map(|m| m.to), Some(0));
    }

    #[test]
    fn failback_waits_until_the_primary_has_been_healthy_long_enough() {
        let ten_min = 600_000;
        let mut f = Failover::new(2, 1, Duration::from_millis(ten_min as u64));
        assert_eq!(f.failed(0, 0).map(|m| m.to), Some(1));
        assert_eq!(f.health(0, true, 1_000), None, "healthy just now");
        assert_eq!(f.health(0, false, 300_000), None, "a failed check restarts the wait");
        assert_eq!(f.health(0, true, 301_000), None);
        assert_eq!(f.health(0, true, 301_000 + ten_min - 1), None);
        let m = f.health(0, true, 301_000 + ten_min).unwrap();
        assert_eq!((m.from, m.to), (1, 0));
        assert_eq!(f.current(), 0);
    }

    #[test]
    fn a_single_endpoint_never_moves() {
        let mut f = Failover::new(1, 1, Duration::ZERO);
        for t in 0..10 {
            assert_eq!(f.failed(0, t), None);
        }
        assert_eq!(f.current(), 0);
    }
}
