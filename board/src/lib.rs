//! `lectern-board` owns everything electrical on a Lectern box: the record button, the status
//! LED and the power-fail input, on a real Raspberry Pi (rppal), any Linux board with a GPIO
//! character device (gpiocdev), or an in-process simulation with a control socket.
//!
//! **Architecture Invariant:** only this crate touches `/dev/gpiochip*`, `/dev/gpiomem*` or sysfs
//! GPIO. Everything above it sees two seams, [`EdgeInput`] and [`LedOutput`], and the events
//! they produce.
//!
//! Code map:
//! - `debounce.rs`: sans-IO button debouncer ([`Debouncer`] → [`ButtonEvent`]).
//! - `led.rs`: LED patterns, the pure [`led_level`] and the [`LedDriver`] thread.
//! - `pins.rs`: the seams, plus [`HalOutput`] to wrap any embedded-hal `OutputPin`.
//! - `sim.rs`, `sim_server.rs`: the simulated board and its Unix control socket.
//! - `backend_rppal.rs`, `backend_gpiocdev.rs`: the real backends, each behind its feature.
//! - `pinmap.rs` + `pinmaps/*.toml`: which lines the signals are wired to.
//! - `detect.rs`: the one board-detection table.
//! - `monitor.rs`: threads that block on edges and call back with events.
//! - `open.rs`: [`open`] ties it together from a [`BoardConfig`].
//!
//! Every log line uses target `board`.

mod debounce;
mod detect;
mod error;
mod led;
mod monitor;
mod open;
mod pinmap;
mod pins;
mod sim;
mod sim_server;

#[cfg(feature = "gpiocdev")]
pub mod backend_gpiocdev;
#[cfg(feature = "rppal")]
pub mod backend_rppal;

pub use debounce::{ButtonEvent, Debouncer, DEFAULT_DEBOUNCE};
pub use detect::{classify, detect, BoardKind, Detected};
pub use error::{BoardError, Result};
pub use led::{led_level, LedDriver, LedPattern, LedRole, LedWatch};
pub use monitor::{spawn_button_monitor, spawn_power_fail_monitor, STOP_CHECK};
pub use open::{open, Backend, BoardConfig, BoardIo};
pub use pinmap::{Bias, InputLine, OutputLine, PinMap, RgbLed, SecondLed, BUILTIN_PINMAPS};
pub use pins::{EdgeInput, HalOutput, LedOutput};
pub use sim::{SimBoard, SimHandle, SimInput, SimLed, SimSnapshot};
pub use sim_server::{handle_line, parse_request, sim_request, SimRequest, SimServer};
