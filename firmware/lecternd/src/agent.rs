//! The Opencast capture agent inside the daemon: a calendar poller thread and the states lane of
//! `lectern-opencast` (agent and recording states), fed by the main loop through the persistent
//! outbox. Recordings reach Opencast through the upload room (`uploads.rs`, `lectern-upload`'s
//! Opencast target), which reports `uploading`/`upload_finished`/`upload_error` through the same
//! outbox. Recording never waits for the server: the main loop only writes to the
//! outbox (one SQLite transaction each) and reads the cached calendar from the journal.
//!
//! What the main loop tells the server, and when (docs/opencast.md has it for AV teams):
//! - agent `capturing` when a recording begins, `idle` when it ends; recording `capturing`
//!   for a scheduled event when it begins;
//! - recording `capture_finished` once the recording is *final* (completed, or interrupted and
//!   not going to resume), `capture_error` when it failed with no media;
//! - the stitched MP4 goes up as an upload job (`uploads.rs` queues `uploading` and
//!   `upload_finished`/`upload_error` around it); `upload_error` if the stitch failed.
//!
//! The poller fetches `{scheduler}/calendars` every `calendar_poll` with the ETag of the
//! calendar the cache holds (the main loop sets it only after a reply was *applied*, so a
//! rejected reply is fetched again in full) and hands every reply to the main loop, which lets
//! only a complete calendar change the cache. It also posts the agent's capabilities once, on
//! its first contact with the server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};

use lectern_config::OpencastConfig;
use lectern_journal::Outbox;
use lectern_opencast::uplink::{spawn, LaneThread};
use lectern_opencast::{AgentState, Backoff, CalendarFetch, Client, Lane, Queue, RecordingState, Uplink};

use crate::clock::Clock;

/// The agent's handle on the main loop.
pub struct Agent {
    queue: Queue,
    /// Shared with the states lane: the agent reports `uploading` rather than `idle` while set.
    uploading: Arc<AtomicBool>,
    states: LaneThread,
    etag: Arc<Mutex<Option<String>>>,
    /// The calendar's source name in the schedule cache.
    pub source: String,
    pub config: OpencastConfig,
    /// The agent configuration Opencast shows for this box, and whether the server has the
    /// current one; the calendar poller (re-)posts it.
    capabilities: Arc<Mutex<(BTreeMap<String, String>, bool)>>,
    /// A message wakes the calendar poller early; dropping it stops the poller at its next wake-up.
    poller: Sender<()>,
}

impl Agent {
    /// Opens the outbox connections and starts the lanes and the calendar poller. `etag` is
    /// that of the cached calendar; `report` receives every calendar reply.
    pub fn start(
        config: &OpencastConfig,
        agent_name: &str,
        capabilities: BTreeMap<String, String>,
        db_path: &Path,
        clock: Arc<dyn Clock>,
        etag: Option<String>,
        report: impl Fn(Result<CalendarFetch, String>) + Send + 'static,
    ) -> anyhow::Result<Agent> {
        let uploading = Arc::new(AtomicBool::new(false));
        let backoff = || Backoff::new(config.retry_initial, config.retry_max);
        let now: Arc<dyn Fn() -> i64 + Send + Sync> = {
            let clock = clock.clone();
            Arc::new(move || clock.now_ms())
        };
        let uplink = |lane| -> anyhow::Result<Uplink> {
            Ok(Uplink::new(lane, Client::new(config, agent_name), Outbox::open(db_path)?, backoff(), config.calendar_poll, uploading.clone()))
        };
        let states = spawn(uplink(Lane::States)?, now.clone(), config.calendar_poll)?;
        let etag = Arc::new(Mutex::new(etag));
        let (stop, stopped) = channel::<()>();
        let poll = config.calendar_poll;
        let mut client = Client::new(config, agent_name);
        let poller_etag = etag.clone();
        let poller_clock = clock.clone();
        let capabilities = Arc::new(Mutex::new((capabilities, false)));
        let poller_caps = capabilities.clone();
        std::thread::Builder::new().name("oc-calendar".into()).spawn(move || {
            loop {
                let (caps, posted) = poller_caps.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if !posted {
                    match client.set_agent_configuration(&caps) {
                        Ok(()) => {
                            let mut now = poller_caps.lock().unwrap_or_else(|e| e.into_inner());
                            // Posted unless it changed meanwhile (then the next turn posts that).
                            if now.0 == caps {
                                now.1 = true;
                            }
                        }
                        Err(e) => log::warn!(target: "opencast", "agent configuration not posted yet: {e}"),
                    }
                }
                let etag = poller_etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
                report(client.fetch_calendar(etag.as_deref(), poller_clock.now_ms()).map_err(|e| e.to_string()));
                // A message wakes the poller early (the agent configuration changed); the
                // sender's drop stops it.
                match stopped.recv_timeout(poll) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })?;
        let source = match &config.scheduler_url {
            Some(url) => format!("{url}/calendars"),
            None => format!("{} (scheduler by service discovery)", config.url),
        };
        let mut agent = Agent { queue: Queue::new(Outbox::open(db_path)?), uploading, states, etag, source, config: config.clone(), capabilities, poller: stop };
        agent.agent_state(AgentState::Idle, clock.now_ms());
        Ok(agent)
    }

    /// What the upload room needs to report Opencast recording states (`uploads.rs`).
    pub fn upload_hooks(&self, db_path: &Path) -> crate::uploads::AgentHooks {
        let wake = self.states.waker();
        crate::uploads::AgentHooks { db_path: db_path.to_owned(), wake_states: Arc::new(wake), uploading: self.uploading.clone() }
    }

    /// Sets agent configuration entries; a change wakes the calendar poller, which posts it
    /// at once (and fetches the calendar, with its ETag: usually a 304).
    pub fn set_capabilities(&self, entries: impl IntoIterator<Item = (String, String)>) {
        let mut caps = self.capabilities.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for (k, v) in entries {
            if caps.0.get(&k) != Some(&v) {
                caps.0.insert(k, v);
                caps.1 = false;
                changed = true;
            }
        }
        drop(caps);
        if changed {
            let _ = self.poller.send(());
        }
    }

    /// The ETag of the calendar the cache now holds.
    pub fn set_etag(&self, etag: Option<String>) {
        *self.etag.lock().unwrap_or_else(|e| e.into_inner()) = etag;
    }

    /// Operations waiting for the server.
    pub fn pending(&self) -> i64 {
        self.queue.outbox().len().unwrap_or(-1)
    }

    pub fn agent_state(&mut self, state: AgentState, now_ms: i64) {
        if let Err(e) = self.queue.agent_state(state, now_ms) {
            log::error!(target: "opencast", "cannot queue agent state {}: {e}", state.as_str());
        }
        self.states.wake();
    }

    pub fn recording_state(&mut self, event_uid: &str, state: RecordingState, now_ms: i64) {
        if let Err(e) = self.queue.recording_state(event_uid, state, now_ms) {
            log::error!(target: "opencast", "recording {event_uid}: cannot queue state {}: {e}", state.as_str());
        }
        self.states.wake();
    }
}
