//! What the proxy did: bytes per direction, connections, and a log of every fault it performed
//! with the plan time and byte count at which it happened.

use std::time::Duration;

use crate::plan::{Close, Dir, DownMode};

/// At most this many events are kept; later ones are counted but not logged.
pub const MAX_EVENTS: usize = 100_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A byte-triggered cut ended the connection.
    Cut(Close),
    /// Forwarding in the direction stopped for this long.
    Stall(Duration),
    /// The stall was over (logged when the next piece passed).
    StallEnd,
    /// The server's reply was replaced with garbage.
    Garbage,
    /// The schedule took the server down; open connections were ended.
    Down,
    /// The schedule brought it back.
    Up,
    /// A connect while down was accepted and ended at once (not logged for
    /// [`DownMode::Refuse`]: the kernel refuses those, the proxy never sees them).
    Refused(DownMode),
    /// An open connection was ended because the server went down.
    Killed(Close),
    /// The real server could not be reached; the client's connection was reset.
    UpstreamFailed,
}

/// One fault performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// Which plan was in force: 0 for the one given at start, then one more per `set_plan`.
    pub plan: u32,
    /// Plan time (on the plan's clock, from when it was applied).
    pub at: Duration,
    /// The connection (numbered from 0 in accept order), where one was involved.
    pub conn: Option<u64>,
    pub dir: Option<Dir>,
    /// Bytes passed in `dir` under this plan when it happened, across connections.
    pub byte: u64,
    pub what: What,
}

/// Bytes in one direction, since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Read from the sender (for `up`, what the client sent that reached the proxy).
    pub read: u64,
    /// Written to the receiver. `read - forwarded` was dropped by cuts and garbage (or is still
    /// held by a stalled pump).
    pub forwarded: u64,
}

/// Counters and the event log, since the proxy started (across plans).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client → server.
    pub up: Flow,
    /// Server → client.
    pub down: Flow,
    /// Connections accepted and connected through to the server.
    pub connections: u64,
    /// Connections accepted while down and ended at once.
    pub refused: u64,
    /// Connections whose server could not be reached.
    pub upstream_failures: u64,
    /// Byte-triggered cuts, whether by FIN or RST.
    pub cuts: u64,
    /// Connections the proxy ended with a reset (cuts with [`Close::Rst`], outages, refusals).
    pub resets: u64,
    pub stalls: u64,
    pub garbage: u64,
    /// Open connections ended by an outage.
    pub killed: u64,
    /// Transitions into "down".
    pub outages: u64,
    /// The seed of the plan in force.
    pub seed: u64,
    pub events: Vec<FaultEvent>,
}

impl Stats {
    /// The positions of the byte-triggered cuts in `dir`, in order: what a replay must repeat.
    pub fn cut_points(&self, dir: Dir) -> Vec<u64> {
        self.events.iter().filter(|e| e.dir == Some(dir) && matches!(e.what, What::Cut(_))).map(|e| e.byte).collect()
    }

    /// One line of `key=value` pairs, for the binary and bench logs.
    pub fn summary(&self) -> String {
        format!(
            "up_read={} up_forwarded={} down_read={} down_forwarded={} connections={} refused={} upstream_failures={} cuts={} resets={} stalls={} garbage={} killed={} outages={} seed={}",
            self.up.read, self.up.forwarded, self.down.read, self.down.forwarded, self.connections, self.refused, self.upstream_failures,
            self.cuts, self.resets, self.stalls, self.garbage, self.killed, self.outages, self.seed
        )
    }

    pub(crate) fn record(&mut self, e: FaultEvent) {
        match &e.what {
            What::Cut(c) => {
                self.cuts += 1;
                self.resets += u64::from(*c == Close::Rst);
            }
            What::Stall(_) => self.stalls += 1,
            What::StallEnd | What::Up => {}
            What::Garbage => self.garbage += 1,
            What::Down => self.outages += 1,
            What::Refused(m) => {
                self.refused += 1;
                self.resets += u64::from(*m != DownMode::Close);
            }
            What::Killed(c) => {
                self.killed += 1;
                self.resets += u64::from(*c == Close::Rst);
            }
            What::UpstreamFailed => {
                self.upstream_failures += 1;
                self.resets += 1;
            }
        }
        log::info!(target: "faultproxy", "plan {} t={:?} conn {:?} {:?} byte {}: {:?}", e.plan, e.at, e.conn, e.dir, e.byte, e.what);
        if self.events.len() < MAX_EVENTS {
            self.events.push(e);
        }
    }
}
