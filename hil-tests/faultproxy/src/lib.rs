//! A seeded TCP fault proxy for the upload tests: a bad network between the box's HTTP client
//! and a real server (the Opencast double, moto's S3 server), on loopback.
//!
//! There is no `tc netem` on the CI machines (no kernel modules), so the network's failures are
//! made at the one place a test controls: a proxy that the client is pointed at instead of the
//! server ([`Proxy::url`]). It forwards bytes both ways and applies a [`Plan`]:
//!
//! * **cut** a connection once N bytes have passed in a direction, counted across connections
//!   ("cut every 16 MiB of upload"), with a FIN or a reset; the server has received exactly N;
//! * **stall** a direction for a while (at once, or after N bytes), so that the client's read or
//!   write timeout fires; new connections stall too, as on a network that went silent;
//! * **throttle** a direction to a byte rate shared by all its connections (one link);
//! * **reset** (RST rather than FIN, SO_LINGER 0);
//! * **garbage**: replace the server's next reply with bytes that are not HTTP, then close;
//! * **down**: refuse connects (listener closed), or accept and reset, or accept and close, and
//!   end the open connections — for good, for a while, or **flapping** on a schedule;
//! * **a reply lost after the server committed**: a cut of the reply direction at byte 0.
//!
//! Byte positions count from the moment a plan is applied; durations are on the plan's
//! [`Clock`], which a test can accelerate or drive by hand, so an hour-long outage runs in a
//! second. Random faults (cut points, stall positions and lengths) come from the plan's seed
//! through a built-in SplitMix64, one stream per fault, so a seed replays the same byte positions
//! whatever the timing; the seed is logged and printed, and `LECTERN_FAULTPROXY_SEED` replaces it
//! to replay a failure. [`Stats`] count bytes per direction, connections and faults, and log
//! every fault with its plan time and byte position.
//!
//! What it cannot model: anything below TCP — packet loss, reordering, duplication, corruption
//! that TCP would repair or detect, MTU or window effects (the kernel's loopback TCP is always
//! perfect); latency or jitter other than what stalls and throttling produce (no fixed
//! round-trip delay); faults by meaning rather than by position (a wrong status, a body cut at
//! an HTTP boundary: it forwards bytes and speaks no HTTP — the Opencast double's own fault
//! switches do those); DNS; more than one network path. It runs on
//! loopback with one thread per direction per connection: fine for tens of connections, not for
//! thousands. Connects refused by [`DownMode::Refuse`] are refused by the kernel, so the proxy
//! cannot count them.
//!
//! Layout: [`plan`] (what to do), `engine` (the sans-IO rules: positions, stalls, pacing),
//! `proxy` (sockets and threads), [`stats`], [`cli`] (the `faultproxy` binary's flags).

pub mod cli;
mod engine;
pub mod plan;
mod proxy;
pub mod stats;

pub use engine::SplitMix64;
pub use plan::{env_seed, Clock, Close, Dir, DownMode, Gap, Plan, Span, DEFAULT_GARBAGE, MIB, SEED_ENV};
pub use proxy::Proxy;
pub use stats::{FaultEvent, Flow, Stats, What};
