//! What the proxy should do to the traffic: a [`Plan`] of faults, built with chained methods,
//! with the seed its random parts come from and the [`Clock`] its durations are measured on.
//!
//! Byte positions in a plan are counted per direction, across all connections, from the moment
//! the plan is applied ([`crate::Proxy::start`] or [`crate::Proxy::set_plan`]); durations (stalls,
//! outages, flaps) are on the plan's clock from that same moment. Throttle rates are real bytes
//! per real second whatever the clock, because they exist to be measured against a wall clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable that replaces the seed of every [`Plan::seeded`] and [`Plan::new`]
/// plan, to replay a failure.
pub const SEED_ENV: &str = "LECTERN_FAULTPROXY_SEED";

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client → server: the request, the upload.
    Up,
    /// Server → client: the reply.
    Down,
}

impl Dir {
    pub(crate) fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }
}

/// How the proxy ends a connection it cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// An orderly close: both peers read end-of-file (and a peer still writing then gets a reset
    /// from its kernel, as with a server that closes early).
    Fin,
    /// A reset (SO_LINGER 0): both peers get `ECONNRESET`.
    Rst,
}

/// What "down" looks like to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownMode {
    /// The listening socket is closed: connects are refused. Open connections are reset.
    Refuse,
    /// Connects are accepted and reset at once; open connections are reset.
    Reset,
    /// Connects are accepted and closed at once (FIN, like a front end with no back end); open
    /// connections are closed the same way.
    Close,
}

/// When the server behind the proxy is reachable, on the plan's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    Up,
    Down,
    /// Down from the plan's start for this long, then up for good.
    DownFor(Duration),
    /// Repeating `first` then `second`; `down_first` says which of them is the outage.
    Flap { down: Duration, up: Duration, down_first: bool },
}

impl Availability {
    pub(crate) fn is_up(self, t: Duration) -> bool {
        match self {
            Availability::Up => true,
            Availability::Down => false,
            Availability::DownFor(d) => t >= d,
            Availability::Flap { down, up, down_first } => {
                let period = (down + up).as_nanos().max(1);
                let phase = t.as_nanos() % period;
                if down_first {
                    phase >= down.as_nanos()
                } else {
                    phase < up.as_nanos()
                }
            }
        }
    }
}

/// Where byte-triggered faults fall: the gap from the plan's start (or the previous fault) to the
/// next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Always this many bytes.
    Fixed(u64),
    /// Uniform in `lo..=hi` bytes, drawn from the plan's seed.
    Random(u64, u64),
}

/// How long a stall lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Fixed(Duration),
    /// Uniform in `lo..=hi`, drawn from the plan's seed.
    Random(Duration, Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CutSpec {
    pub dir: Dir,
    pub gap: Gap,
    /// `None`: repeat for ever.
    pub times: Option<u64>,
    pub close: Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StallSpec {
    pub dir: Dir,
    pub gap: Gap,
    pub times: Option<u64>,
    pub span: Span,
}

/// The clock a plan's durations are measured on: elapsed time from an arbitrary origin.
/// Cloning shares the source.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Duration + Send + Sync>);

impl Clock {
    /// The monotonic clock.
    pub fn real() -> Clock {
        let origin = Instant::now();
        Clock(Arc::new(move || origin.elapsed()))
    }

    /// The monotonic clock running `factor` times faster: with 3600.0 an hour-long outage takes
    /// one real second.
    pub fn accelerated(factor: f64) -> Clock {
        let origin = Instant::now();
        Clock(Arc::new(move || origin.elapsed().mul_f64(factor)))
    }

    /// Any elapsed-time source, e.g. a test's manual clock. It must never go backwards.
    pub fn from_fn(f: impl Fn() -> Duration + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    pub fn now(&self) -> Duration {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now={:?})", self.now())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::real()
    }
}

/// A set of faults. `Plan::new()` alone is a clean link. Every builder method adds to the plan,
/// so faults combine: `Plan::seeded(7).cut_random(Dir::Up, 8 * MIB, 24 * MIB).throttle(Dir::Up, 10 * MIB)`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) seed: u64,
    pub(crate) clock: Clock,
    pub(crate) cuts: Vec<CutSpec>,
    pub(crate) stalls: Vec<StallSpec>,
    pub(crate) throttle: [Option<u64>; 2],
    pub(crate) garbage: u64,
    pub(crate) garbage_bytes: Vec<u8>,
    pub(crate) availability: Availability,
    pub(crate) down_mode: DownMode,
}

/// One mebibyte, for readable plans.
pub const MIB: u64 = 1 << 20;

/// What a garbage reply is by default: a line that is not HTTP, then bytes that are not UTF-8.
pub const DEFAULT_GARBAGE: &[u8] = b"LECTERN-FAULTPROXY GARBAGE, NOT HTTP\r\n\xde\xad\xbe\xef\xff\xfe\r\n\r\n";

impl Default for Plan {
    fn default() -> Plan {
        Plan::new()
    }
}

impl Plan {
    /// A clean link with a fresh seed (or the one in `LECTERN_FAULTPROXY_SEED`).
    pub fn new() -> Plan {
        Plan::seeded(fresh_seed())
    }

    /// A clean link whose random faults come from `seed`, unless `LECTERN_FAULTPROXY_SEED` is
    /// set: then from that, so a failure seen in CI can be replayed.
    pub fn seeded(seed: u64) -> Plan {
        Plan::exact_seed(env_seed().unwrap_or(seed))
    }

    /// Like [`Plan::seeded`] but deaf to `LECTERN_FAULTPROXY_SEED`: for tests of the proxy's own
    /// seeding, which compare seeds.
    pub fn exact_seed(seed: u64) -> Plan {
        Plan {
            seed,
            clock: Clock::real(),
            cuts: Vec::new(),
            stalls: Vec::new(),
            throttle: [None, None],
            garbage: 0,
            garbage_bytes: DEFAULT_GARBAGE.to_vec(),
            availability: Availability::Up,
            down_mode: DownMode::Refuse,
        }
    }

    /// The seed this plan's random faults come from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether anything in the plan is drawn from the seed.
    pub fn is_random(&self) -> bool {
        self.cuts.iter().any(|c| matches!(c.gap, Gap::Random(..)))
            || self.stalls.iter().any(|s| matches!(s.gap, Gap::Random(..)) || matches!(s.span, Span::Random(..)))
    }

    /// Measures the plan's durations on `clock` (default: the real monotonic clock).
    pub fn clock(mut self, clock: Clock) -> Plan {
        self.clock = clock;
        self
    }

    /// Cuts the one connection that carries the `n`-th byte in `dir`, right after that byte;
    /// once.
    pub fn cut_after(self, dir: Dir, n: u64) -> Plan {
        self.cut(dir, Gap::Fixed(n), Some(1), Close::Fin)
    }

    /// Cuts every `n` bytes in `dir` (at n, 2n, 3n… counted across connections).
    pub fn cut_every(self, dir: Dir, n: u64) -> Plan {
        self.cut(dir, Gap::Fixed(n), None, Close::Fin)
    }

    /// Cuts after a random `lo..=hi` bytes in `dir`, again and again, from the seed.
    pub fn cut_random(self, dir: Dir, lo: u64, hi: u64) -> Plan {
        self.cut(dir, Gap::Random(lo.min(hi), lo.max(hi)), None, Close::Fin)
    }

    /// The general form of the cuts: gaps, how many (`None`: for ever), and how the connection
    /// ends.
    pub fn cut(mut self, dir: Dir, gap: Gap, times: Option<u64>, close: Close) -> Plan {
        self.cuts.push(CutSpec { dir, gap, times, close });
        self
    }

    /// Makes every cut in the plan so far a reset rather than an orderly close.
    pub fn resets(mut self) -> Plan {
        for c in &mut self.cuts {
            c.close = Close::Rst;
        }
        self
    }

    /// Stops forwarding in `dir` for `span` as soon as the plan applies, on every connection
    /// (new ones included): the network goes silent. Once.
    pub fn stall(self, dir: Dir, span: Duration) -> Plan {
        self.stall_at(dir, Gap::Fixed(0), Some(1), Span::Fixed(span))
    }

    /// Stops forwarding in `dir` for `span` once `n` bytes have passed in it. Once.
    pub fn stall_after(self, dir: Dir, n: u64, span: Duration) -> Plan {
        self.stall_at(dir, Gap::Fixed(n), Some(1), Span::Fixed(span))
    }

    /// Stalls for a random `span` after every random `gap` bytes in `dir`, from the seed.
    pub fn stall_random(self, dir: Dir, gap: (u64, u64), span: (Duration, Duration)) -> Plan {
        let gap = Gap::Random(gap.0.min(gap.1), gap.0.max(gap.1));
        self.stall_at(dir, gap, None, Span::Random(span.0.min(span.1), span.0.max(span.1)))
    }

    /// The general form of the stalls.
    pub fn stall_at(mut self, dir: Dir, gap: Gap, times: Option<u64>, span: Span) -> Plan {
        self.stalls.push(StallSpec { dir, gap, times, span });
        self
    }

    /// At most `bytes_per_s` real bytes a real second in `dir`, shared by all connections (one
    /// link). 0 removes the cap.
    pub fn throttle(mut self, dir: Dir, bytes_per_s: u64) -> Plan {
        self.throttle[dir.index()] = (bytes_per_s > 0).then_some(bytes_per_s);
        self
    }

    /// Replaces the next reply (the next bytes any server sends) with [`DEFAULT_GARBAGE`], then
    /// closes that connection. Each call adds one.
    pub fn garbage_reply(mut self) -> Plan {
        self.garbage += 1;
        self
    }

    /// The bytes a garbage reply consists of.
    pub fn garbage_bytes(mut self, bytes: &[u8]) -> Plan {
        self.garbage_bytes = bytes.to_vec();
        self
    }

    /// The server is down until another plan is set.
    pub fn down(mut self) -> Plan {
        self.availability = Availability::Down;
        self
    }

    /// The server is down from the plan's start for `span` (on the plan's clock), then up.
    pub fn down_for(mut self, span: Duration) -> Plan {
        self.availability = Availability::DownFor(span);
        self
    }

    /// Down for `down`, up for `up`, repeating, starting down.
    pub fn flap(mut self, down: Duration, up: Duration) -> Plan {
        self.availability = Availability::Flap { down, up, down_first: true };
        self
    }

    /// Up for `up`, down for `down`, repeating, starting up.
    pub fn flap_up_first(mut self, up: Duration, down: Duration) -> Plan {
        self.availability = Availability::Flap { down, up, down_first: false };
        self
    }

    /// How "down" looks (default [`DownMode::Refuse`]).
    pub fn down_mode(mut self, mode: DownMode) -> Plan {
        self.down_mode = mode;
        self
    }
}

/// The seed in `LECTERN_FAULTPROXY_SEED`, if set. A value that is not a number is reported and
/// ignored rather than silently replaced, so the log shows which seed really ran.
pub fn env_seed() -> Option<u64> {
    let v = std::env::var(SEED_ENV).ok()?;
    match v.trim().parse() {
        Ok(s) => Some(s),
        Err(_) => {
            log::error!(target: "faultproxy", "{SEED_ENV}={v:?} is not a decimal u64; ignored");
            None
        }
    }
}

/// A seed nobody chose: the time and the process id, mixed.
fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    crate::engine::SplitMix64::new(t ^ (u64::from(std::process::id()) << 32)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_follows_the_schedule() {
        let s = Duration::from_secs;
        let check = |a: Availability, t: u64, up: bool| assert_eq!(a.is_up(s(t)), up, "{a:?} at {t}s");
        check(Availability::Up, 0, true);
        check(Availability::Down, 1000, false);
        check(Availability::DownFor(s(3600)), 0, false);
        check(Availability::DownFor(s(3600)), 3599, false);
        check(Availability::DownFor(s(3600)), 3600, true);
        let flap = Availability::Flap { down: s(10), up: s(20), down_first: true };
        check(flap, 0, false);
        check(flap, 9, false);
        check(flap, 10, true);
        check(flap, 29, true);
        check(flap, 30, false);
        let flap = Availability::Flap { down: s(10), up: s(20), down_first: false };
        check(flap, 0, true);
        check(flap, 19, true);
        check(flap, 20, false);
        check(flap, 30, true);
    }
}
