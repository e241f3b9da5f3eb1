//! The bandwidth cap: one token bucket shared by every upload, with two rates — one while the
//! box is idle, a lower one while a recording runs, so an upload at full speed never starves
//! the recording's fsyncs or the room's network. The bucket is sans-IO ([`TokenBucket`]: time
//! comes in as an argument); [`Throttle`] is its shell (a mutex and the monotonic clock) and
//! [`Throttled`] a reader that takes tokens before it hands bytes to the HTTP client.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest piece read (and paid for) at once: small enough that a rate change applies within a
/// fraction of a second, large enough to keep syscalls few.
const PIECE: usize = 64 * 1024;

/// A token bucket in bytes, sans-IO. Rate 0 means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    /// `rate` bytes a second (0 = unlimited); the bucket holds at most `burst` bytes.
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> TokenBucket {
        TokenBucket { rate, burst: burst.max(1), tokens: burst.max(1) as f64, last_ns: now_ns }
    }

    /// Changes the rate, keeping the tokens already earned (capped at the burst).
    pub fn set_rate(&mut self, rate: u64, now_ns: u64) {
        self.refill(now_ns);
        self.rate = rate;
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        if self.rate > 0 {
            self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst as f64);
        }
    }

    /// Takes `n` bytes' worth at `now_ns`; returns how long the caller must wait before sending
    /// them (zero when the tokens were there). Debt is allowed, so a piece larger than the burst
    /// still goes through at the configured rate.
    pub fn take(&mut self, n: u64, now_ns: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now_ns);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

/// The shared bandwidth cap with its idle and recording rates; see the module doc.
#[derive(Debug)]
pub struct Throttle {
    bucket: Mutex<TokenBucket>,
    idle_rate: u64,
    recording_rate: u64,
    recording: AtomicBool,
    epoch: Instant,
}

impl Throttle {
    /// Bytes a second while idle and while recording; 0 = unlimited.
    pub fn new(idle_rate: u64, recording_rate: u64) -> Throttle {
        // Half a second of the larger rate as burst: smooth on the wire, few wake-ups.
        let burst = (idle_rate.max(recording_rate) / 2).max(PIECE as u64);
        Throttle { bucket: Mutex::new(TokenBucket::new(idle_rate, burst, 0)), idle_rate, recording_rate, recording: AtomicBool::new(false), epoch: Instant::now() }
    }

    pub fn unlimited() -> Throttle {
        Throttle::new(0, 0)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The main loop says whether a recording runs; the rate follows at the next piece.
    pub fn set_recording(&self, recording: bool) {
        if self.recording.swap(recording, Ordering::SeqCst) != recording {
            let rate = if recording { self.recording_rate } else { self.idle_rate };
            let now = self.now_ns();
            self.bucket.lock().unwrap_or_else(|e| e.into_inner()).set_rate(rate, now);
        }
    }

    /// The rate in force, bytes a second (0 = unlimited).
    pub fn rate(&self) -> u64 {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).rate()
    }

    /// Blocks until `n` bytes may be sent.
    pub fn take(&self, n: u64) {
        let now = self.now_ns();
        let wait = self.bucket.lock().unwrap_or_else(|e| e.into_inner()).take(n, now);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A reader that pays the [`Throttle`] for every byte before handing it on, and counts them.
pub struct Throttled<R> {
    inner: R,
    throttle: Arc<Throttle>,
    read: u64,
}

impl<R: Read> Throttled<R> {
    pub fn new(inner: R, throttle: Arc<Throttle>) -> Throttled<R> {
        Throttled { inner, throttle, read: 0 }
    }

    /// Bytes handed on so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<R: Read> Read for Throttled<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(PIECE);
        let got = self.inner.read(&mut buf[..n])?;
        if got > 0 {
            self.throttle.take(got as u64);
            self.read += got as u64;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_paces_to_its_rate_and_allows_its_burst() {
        let mut b = TokenBucket::new(1000, 500, 0);
        assert_eq!(b.take(500, 0), Duration::ZERO, "the burst is there at once");
        assert_eq!(b.take(1000, 0), Duration::from_secs(1), "then one second per 1000 bytes");
        // After the wait the debt is paid; a further 100 bytes wait 0.1 s.
        assert_eq!(b.take(100, S), Duration::from_millis(100));
        // Idle for a long time earns no more than the burst.
        assert_eq!(b.take(500, 100 * S), Duration::ZERO);
        assert_eq!(b.take(100, 100 * S), Duration::from_millis(100));
    }

    #[test]
    fn rate_zero_is_unlimited_and_a_rate_change_applies_at_once() {
        let mut b = TokenBucket::new(0, 1, 0);
        assert_eq!(b.take(u64::MAX / 2, 0), Duration::ZERO);
        b.set_rate(100, 0);
        b.take(1, 0);
        assert_eq!(b.take(100, 0), Duration::from_secs(1));
        b.set_rate(0, 0);
        assert_eq!(b.take(1 << 40, 0), Duration::ZERO);
    }

    #[test]
    fn the_recording_rate_replaces_the_idle_rate_while_recording() {
        let t = Throttle::new(8000, 2000);
        assert_eq!(t.rate(), 8000);
        t.set_recording(true);
        assert_eq!(t.rate(), 2000);
        t.set_recording(false);
        assert_eq!(t.rate(), 8000);
    }

    #[test]
    fn a_throttled_reader_hands_on_every_byte() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut r = Throttled::new(&data[..], Arc::new(Throttle::unlimited()));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(r.bytes_read(), 200_000);
    }
}
