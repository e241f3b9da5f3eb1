//! The uplink: the outbox replayed through the [`Client`], with retry back-off on an injected
//! clock. This is how every state change and every ingest reaches Opencast; nothing calls the
//! client for them directly, so an unreachable server only ever delays them, in order.
//!
//! # Rules
//!
//! - [`Uplink::agent_state`], [`Uplink::recording_state`] and [`Uplink::ingest`] only enqueue
//!   (one SQLite transaction each) and never touch the network, so the recorder's thread can call
//!   them without waiting on a server.
//! - [`Uplink::pump`] sends queued operations oldest first until the queue is empty or one fails.
//!   A transient failure ([`OpencastError::is_transient`]) leaves the entry at the head and
//!   arms the [`Backoff`]; nothing behind it overtakes it. A permanent refusal (a 4xx other than
//!   408/429) parks the entry with the reason and goes on with the next one.
//! - An ingest is acked only after its final `ingest/` call succeeded (see [`crate::ingest`]).
//!   Around it the uplink reports `uploading` for the recording and, when the agent is otherwise
//!   idle, for the agent, then `upload_finished` (or `upload_error` when the server refuses the
//!   ingest for good).
//! - After the queue drains, if the last agent state the server got is not the current one, or a
//!   heartbeat interval has passed since anything reached the server, the current agent state is
//!   sent (see the agent state rule in [`crate::ops`]).
//!
//! `pump` blocks for as long as the HTTP calls take (bounded by the client's timeouts), so it runs
//! on the uplink's own thread, never on the main loop.

use std::time::Duration;

use lectern_journal::{Enqueued, NewEntry, Outbox};

use crate::client::Client;
use crate::error::{OpencastError, Result};
use crate::ingest::IngestJob;
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

/// The outbox, the client and the back-off; see the module doc.
pub struct Uplink {
    client: Client,
    outbox: Outbox,
    backoff: Backoff,
    heartbeat_ms: i64,
    current: AgentState,
    last_sent: Option<AgentState>,
    last_contact_ms: Option<i64>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink").field("current", &self.current).field("backoff", &self.backoff).finish_non_exhaustive()
    }
}

impl Uplink {
    /// An uplink over `client` and `outbox`; `heartbeat` is how often the current agent state is
    /// re-sent when nothing else reaches the server.
    pub fn new(client: Client, outbox: Outbox, backoff: Backoff, heartbeat: Duration) -> Uplink {
        Uplink {
            client,
            outbox,
            backoff,
            heartbeat_ms: heartbeat.as_millis() as i64,
            current: AgentState::Idle,
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

    fn enqueue(&mut self, op: &Operation, now_ms: i64) -> Result<Enqueued> {
        let key = op.once_key();
        let payload = op.to_payload();
        let e = NewEntry { kind: op.kind(), payload: &payload, coalesce: op.coalesces(), once_key: key.as_deref() };
        let r = self.outbox.enqueue(&e, now_ms)?;
        if let Enqueued::Full { capacity } = r {
            log::error!(target: "opencast", "outbox full ({capacity} entries): {} not queued", op.kind());
        }
        Ok(r)
    }

    /// The agent's real state changed (idle, capturing, error, shutting down).
    pub fn agent_state(&mut self, state: AgentState, now_ms: i64) -> Result<Enqueued> {
        self.current = state;
        self.enqueue(&Operation::AgentState(state), now_ms)
    }

    /// A scheduled recording changed state.
    pub fn recording_state(&mut self, event_uid: &str, state: RecordingState, now_ms: i64) -> Result<Enqueued> {
        self.enqueue(&Operation::RecordingState { event_uid: event_uid.to_owned(), state }, now_ms)
    }

    /// A recording is finished and stitched: queue its ingest (once per recording id, ever).
    pub fn ingest(&mut self, job: IngestJob, now_ms: i64) -> Result<Enqueued> {
        self.enqueue(&Operation::Ingest(job), now_ms)
    }

    /// Sends what is queued; see the module doc. `now` is read once per operation so a long
    /// upload moves the clock on.
    pub fn pump(&mut self, now: &mut dyn FnMut() -> i64) -> Result<PumpReport> {
        let mut report = PumpReport::default();
        if !self.backoff.ready(now()) {
            report.backing_off = true;
            return Ok(report);
        }
        while let Some(entry) = self.outbox.peek()? {
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
                Err(e) if e.is_transient() => return self.fail(entry.id, e, now(), report),
                Err(e) => {
                    log::error!(target: "opencast", "{} refused for good, parked: {e}", describe(&op));
                    self.contact(now());
                    self.outbox.park(entry.id, &e.to_string())?;
                    if let Operation::Ingest(job) = &op {
                        // Best effort: the server refused the ingest, say so for the event.
                        let _ = self.upload_state(job, RecordingState::UploadError);
                    }
                    report.parked += 1;
                }
            }
        }
        let t = now();
        let stale = self.last_contact_ms.is_none_or(|c| t - c >= self.heartbeat_ms);
        if self.last_sent != Some(self.current) || stale {
            match self.client.set_agent_state(self.current) {
                Ok(()) => {
                    self.last_sent = Some(self.current);
                    self.contact(now());
                }
                Err(e) if e.is_transient() => return self.fail_state(e, now(), report),
                Err(e) => log::error!(target: "opencast", "agent state {} refused: {e}", self.current.as_str()),
            }
        }
        Ok(report)
    }

    fn contact(&mut self, now_ms: i64) {
        if self.backoff.failures() > 0 {
            log::info!(target: "opencast", "server reachable again after {} failed attempts", self.backoff.failures());
        }
        self.backoff.succeeded();
        self.last_contact_ms = Some(now_ms);
    }

    fn fail(&mut self, id: i64, e: OpencastError, now_ms: i64, report: PumpReport) -> Result<PumpReport> {
        self.outbox.record_failure(id, &e.to_string())?;
        self.fail_state(e, now_ms, report)
    }

    fn fail_state(&mut self, e: OpencastError, now_ms: i64, mut report: PumpReport) -> Result<PumpReport> {
        let delay = self.backoff.failed(now_ms);
        log::warn!(target: "opencast", "{e}; retrying in {} s", delay.as_secs());
        if matches!(e, OpencastError::Transport { .. }) && self.backoff.failures().is_multiple_of(4) {
            // A service that keeps failing may have moved: ask the registry again next time.
            self.client.forget_endpoints();
        }
        report.failed = Some(e.to_string());
        Ok(report)
    }

    fn deliver(&mut self, op: &Operation) -> Result<()> {
        match op {
            Operation::AgentState(s) => {
                self.client.set_agent_state(*s)?;
                self.last_sent = Some(*s);
                Ok(())
            }
            Operation::RecordingState { event_uid, state } => self.client.set_recording_state(event_uid, *state),
            Operation::Ingest(job) => {
                log::info!(target: "opencast", "recording {}: ingest of {:?} (event {}) starts", job.recording_id, job.title, job.event_uid);
                self.upload_state(job, RecordingState::Uploading)?;
                if self.current == AgentState::Idle {
                    self.client.set_agent_state(AgentState::Uploading)?;
                    self.last_sent = Some(AgentState::Uploading);
                }
                self.client.ingest(job)?;
                self.upload_state(job, RecordingState::UploadFinished)?;
                log::info!(target: "opencast", "recording {}: ingested", job.recording_id);
                Ok(())
            }
        }
    }
}

impl Uplink {
    /// A recording state around an ingest. The ingest matters more than the state: a refusal
    /// (the event was deleted meanwhile) is logged and the ingest goes on; an unreachable server
    /// fails the ingest attempt like any other call.
    fn upload_state(&mut self, job: &IngestJob, state: RecordingState) -> Result<()> {
        if !job.scheduled {
            return Ok(());
        }
        match self.client.set_recording_state(&job.event_uid, state) {
            Err(e) if !e.is_transient() => {
                log::warn!(target: "opencast", "recording {}: state {} refused: {e}", job.recording_id, state.as_str());
                Ok(())
            }
            r => r,
        }
    }
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
