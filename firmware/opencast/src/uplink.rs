//! Delivery: the outbox replayed through the [`Client`] with retry back-off on an injected clock.
//! This is how every agent and recording state reaches Opencast; nothing calls the client for
//! them directly, so an unreachable server only ever delays them, in order. Recordings do not go
//! this way: they are `lectern-upload`'s jobs.
//!
//! # Shape
//!
//! - [`Queue`] is the producer's handle (the main loop, the upload room): [`Queue::agent_state`]
//!   and [`Queue::recording_state`] only enqueue, one SQLite transaction each, and never touch
//!   the network.
//! - [`Uplink`] is the consumer with its own outbox connection and client, serving the one
//!   [`Lane`], [`Lane::States`]: agent and recording states, oldest first; nothing overtakes
//!   anything.
//! - Ingests an earlier firmware queued (`Operation::Ingest`, kind `ingest`) are never sent from
//!   here: the lane skips them, and the daemon adopts each as an upload job and acks it.
//!
//! # Rules of [`Uplink::pump`]
//!
//! - Entries are sent oldest first until the lane is empty or one fails. A transient failure
//!   ([`OpencastError::is_transient`]) leaves the entry at the head and arms the lane's
//!   [`Backoff`]. A permanent refusal (a 4xx other than 408/429) parks the entry with the reason,
//!   for an operator, and goes on with the next one.
//! - Agent state: the state reported is the newest one queued, except that `idle` is reported as
//!   `uploading` while the shared `uploading` flag is set (the upload room sets it while a job
//!   runs). After the lane drains, if the server's last word differs from that, or a heartbeat
//!   interval passed since anything reached the server, it is sent again. `offline` is never
//!   sent (see [`crate::ops`]).
//!
//! `pump` blocks for as long as its HTTP calls take (bounded by the client's timeouts), so the
//! lane runs on its own thread ([`spawn`]), never on the main loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use lectern_journal::{Enqueued, NewEntry, Outbox, OutboxEntry};

use crate::client::Client;
use crate::error::{OpencastError, Result};
use crate::ops::{AgentState, Operation, RecordingState};

/// Exponential back-off, sans-IO: `initial`, doubling per consecutive failure up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    next_at_ms: Option<i64>,
}

impl Backoff {
    /// A back-off that has seen no failure.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), failures: 0, next_at_ms: None }
    }

    /// Whether a new attempt may be made at `now_ms`.
    pub fn ready(&self, now_ms: i64) -> bool {
        self.next_at_ms.is_none_or(|t| now_ms >= t)
    }

    /// When the next attempt may be made, if a failure is pending.
    pub fn next_at_ms(&self) -> Option<i64> {
        self.next_at_ms
    }

    /// Records a failure at `now_ms`; returns the delay before the next attempt.
    pub fn failed(&mut self, now_ms: i64) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.next_at_ms = Some(now_ms.saturating_add(delay.as_millis() as i64));
        delay
    }

    /// Records a success: the next failure starts from `initial` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next_at_ms = None;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The producer's handle on the outbox; see the module doc.
#[derive(Debug)]
pub struct Queue {
    outbox: Outbox,
}

impl Queue {
    /// Wraps an outbox connection.
    pub fn new(outbox: Outbox) -> Queue {
        Queue { outbox }
    }

    /// The outbox, for status queries.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Queues one operation under its coalescing and exactly-once rules. A full outbox is logged
    /// and reported, not an error: the recording goes on.
    pub fn push(&mut self, op: &Operation, now_ms: i64) -> Result<Enqueued> {
        let key = op.once_key();
        let payload = op.to_payload();
        let e = NewEntry { kind: op.kind(), payload: &payload, coalesce: op.coalesces(), once_key: key.as_deref() };
        let r = self.outbox.enqueue(&e, now_ms)?;
        if let Enqueued::Full { capacity } = r {
            log::error!(target: "opencast", "outbox full ({capacity} entries): {} not queued", describe(op));
        }
        Ok(r)
    }

    /// The agent's real state changed (idle, capturing, error, shutting down).
    pub fn agent_state(&mut self, state: AgentState, now_ms: i64) -> Result<Enqueued> {
        self.push(&Operation::AgentState(state), now_ms)
    }

    /// A scheduled recording changed state.
    pub fn recording_state(&mut self, event_uid: &str, state: RecordingState, now_ms: i64) -> Result<Enqueued> {
        self.push(&Operation::RecordingState { event_uid: event_uid.to_owned(), state }, now_ms)
    }
}

/// Which operations an [`Uplink`] delivers. Ingests had a lane of their own until recordings
/// moved to `lectern-upload`; the states lane is the one left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Agent and recording states.
    States,
}

/// The outbox kind of [`Operation::Ingest`], which the lane leaves to the daemon.
const INGEST: &str = "ingest";

/// What one [`Uplink::pump`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PumpReport {
    /// Operations delivered (acked), in order.
    pub delivered: Vec<Operation>,
    /// Operations parked after a permanent refusal.
    pub parked: usize,
    /// The transient failure that stopped the pump, if any.
    pub failed: Option<String>,
    /// Whether the pump waited for the back-off and sent nothing.
    pub backing_off: bool,
}

/// One delivery lane; see the module doc.
pub struct Uplink {
    lane: Lane,
    client: Client,
    outbox: Outbox,
    backoff: Backoff,
    heartbeat_ms: i64,
    /// Set while an upload job runs (the daemon's upload room); `idle` is reported as `uploading`.
    uploading: Arc<AtomicBool>,
    /// The newest agent state delivered from the queue: what the agent really is.
    current: Option<AgentState>,
    /// What the server last accepted as the agent state.
    last_sent: Option<AgentState>,
    last_contact_ms: Option<i64>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink").field("lane", &self.lane).field("current", &self.current).field("backoff", &self.backoff).finish_non_exhaustive()
    }
}

impl Uplink {
    /// A lane over its own `client` and `outbox` connection. `uploading` is shared with whoever
    /// uploads recordings; `heartbeat` is how often the lane re-sends the agent state when
    /// nothing else reaches the server.
    pub fn new(lane: Lane, client: Client, outbox: Outbox, backoff: Backoff, heartbeat: Duration, uploading: Arc<AtomicBool>) -> Uplink {
        Uplink {
            lane,
            client,
            outbox,
            backoff,
            heartbeat_ms: heartbeat.as_millis() as i64,
            uploading,
            current: None,
            last_sent: None,
            last_contact_ms: None,
        }
    }

    /// The client, for the calls that are not queued (calendar, configuration).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The outbox, for status queries.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the last attempt to reach the server succeeded (`false` before the first).
    pub fn online(&self) -> bool {
        self.last_contact_ms.is_some() && self.backoff.failures() == 0
    }

    /// The back-off state.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The next entry of this lane that may be sent now: the oldest that is not an ingest.
    fn next(&self) -> Result<Option<OutboxEntry>> {
        match self.lane {
            Lane::States => Ok(self.outbox.peek_other_than(INGEST)?),
        }
    }

    /// Sends what is queued for this lane; see the module doc. `now` is read once per
    /// operation so a long upload moves the clock on.
    pub fn pump(&mut self, now: &mut dyn FnMut() -> i64) -> Result<PumpReport> {
        let mut report = PumpReport::default();
        if !self.backoff.ready(now()) {
            report.backing_off = true;
            return Ok(report);
        }
        while let Some(entry) = self.next()? {
            let op = match Operation::from_entry(&entry) {
                Ok(op) => op,
                Err(e) => {
                    log::error!(target: "opencast", "{e}; parked");
                    self.outbox.park(entry.id, &e.to_string())?;
                    report.parked += 1;
                    continue;
                }
            };
            match self.deliver(&op) {
                Ok(()) => {
                    let t = now();
                    self.outbox.ack(entry.id, t)?;
                    self.contact(t);
                    report.delivered.push(op);
                }
                Err(e) if e.is_transient() => {
                    self.outbox.record_failure(entry.id, &e.to_string())?;
                    return Ok(self.fail(e, now(), report));
                }
                Err(e) => {
                    log::error!(target: "opencast", "{} refused for good, parked: {e}", describe(&op));
                    self.contact(now());
                    self.outbox.park(entry.id, &e.to_string())?;
                    report.parked += 1;
                }
            }
        }
        if let Some(reported) = self.current.map(|s| self.reported(s)) {
            let t = now();
            let stale = self.last_contact_ms.is_none_or(|c| t - c >= self.heartbeat_ms);
            if self.last_sent != Some(reported) || stale {
                match self.client.set_agent_state(reported) {
                    Ok(()) => {
                        self.last_sent = Some(reported);
                        self.contact(now());
                    }
                    Err(e) if e.is_transient() => return Ok(self.fail(e, now(), report)),
                    Err(e) => log::error!(target: "opencast", "agent state {} refused: {e}", reported.as_str()),
                }
            }
        }
        Ok(report)
    }

    /// `idle` while an upload runs is `uploading`.
    fn reported(&self, s: AgentState) -> AgentState {
        if s == AgentState::Idle && self.uploading.load(Ordering::SeqCst) {
            AgentState::Uploading
        } else {
            s
        }
    }

    fn contact(&mut self, now_ms: i64) {
        if self.backoff.failures() > 0 {
            log::info!(target: "opencast", "{:?} lane: server reachable again after {} failed attempts", self.lane, self.backoff.failures());
        }
        self.backoff.succeeded();
        self.last_contact_ms = Some(now_ms);
    }

    fn fail(&mut self, e: OpencastError, now_ms: i64, mut report: PumpReport) -> PumpReport {
        let delay = self.backoff.failed(now_ms);
        log::warn!(target: "opencast", "{e}; {:?} lane retries in {} s", self.lane, delay.as_secs());
        if matches!(e, OpencastError::Transport { .. }) && self.backoff.failures().is_multiple_of(4) {
            // A service that keeps failing may have moved: ask the registry again next time.
            self.client.forget_endpoints();
        }
        report.failed = Some(e.to_string());
        report
    }

    fn deliver(&mut self, op: &Operation) -> Result<()> {
        match op {
            Operation::AgentState(s) => {
                let reported = self.reported(*s);
                self.client.set_agent_state(reported)?;
                self.current = Some(*s);
                self.last_sent = Some(reported);
                Ok(())
            }
            Operation::RecordingState { event_uid, state } => self.client.set_recording_state(event_uid, *state),
            // `next` never yields an entry of kind `ingest`, and `Operation::from_entry` checks
            // that the payload is of the entry's kind.
            Operation::Ingest(_) => unreachable!("the states lane never takes an ingest"),
        }
    }
}

/// A lane running on its own thread; see [`spawn`]. Dropping it stops the thread after the
/// current pump (bounded by the client's timeouts) and joins it.
#[derive(Debug)]
pub struct LaneThread {
    /// The only strong reference: dropping it disconnects the channel and stops the thread,
    /// even while [`LaneThread::waker`]s (weak) live on elsewhere (the upload room).
    wake: Option<Arc<mpsc::SyncSender<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LaneThread {
    /// A handle that wakes this lane from elsewhere (the upload room), like [`LaneThread::wake`].
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let w = self.wake.as_ref().map(Arc::downgrade);
        move || {
            if let Some(w) = w.as_ref().and_then(std::sync::Weak::upgrade) {
                let _ = w.try_send(());
            }
        }
    }

    /// Makes the lane pump now (call after queueing something); never blocks.
    pub fn wake(&self) {
        if let Some(w) = &self.wake {
            // A full channel means a wake-up is already pending, which is all this asks for.
            let _ = w.try_send(());
        }
    }
}

impl Drop for LaneThread {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `uplink` on a thread named after its lane: it pumps when woken, when its back-off
/// expires, and at least every `poll` (which also carries the agent state's heartbeat). `clock`
/// is the injected wall clock in Unix milliseconds. A store error is logged and retried at the
/// next poll rather than ending the thread: delivery must outlive a busy database.
pub fn spawn(mut uplink: Uplink, clock: Arc<dyn Fn() -> i64 + Send + Sync>, poll: Duration) -> std::io::Result<LaneThread> {
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    let name = match uplink.lane {
        Lane::States => "oc-states",
    };
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || loop {
        if let Err(e) = uplink.pump(&mut || clock()) {
            log::error!(target: "opencast", "{:?} lane: {e}", uplink.lane);
        }
        let now = clock();
        let wait = match uplink.backoff.next_at_ms() {
            Some(at) => Duration::from_millis(at.saturating_sub(now).max(0) as u64).min(poll),
            None => poll,
        };
        match rx.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    })?;
    Ok(LaneThread { wake: Some(Arc::new(tx)), thread: Some(thread) })
}

fn describe(op: &Operation) -> String {
    match op {
        Operation::AgentState(s) => format!("agent state {}", s.as_str()),
        Operation::RecordingState { event_uid, state } => format!("recording {event_uid} state {}", state.as_str()),
        Operation::Ingest(job) => format!("recording {}: ingest", job.recording_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        assert!(b.ready(0));
        let delays: Vec<u64> = (0..6).map(|i| b.failed(i * 1000).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
        assert!(!b.ready(5_000 + 59_999) && b.ready(5_000 + 60_000));
        b.succeeded();
        assert!(b.ready(0));
        assert_eq!(b.failed(0), Duration::from_secs(5));
        for _ in 0..100 {
            b.failed(0);
        }
        assert_eq!(b.failed(0), Duration::from_secs(60), "no overflow after many failures");
    }
}
