//! Opening the board: pick a backend (explicitly or via the detection table), load the pin map,
//! claim the three pins and start the LED driver. This is the only place that knows which
//! backends were compiled in.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use crate::detect;
use crate::error::{BoardError, Result};
use crate::led::LedDriver;
use crate::pinmap::PinMap;
use crate::pins::EdgeInput;
use crate::sim::{SimBoard, SimHandle};
use crate::sim_server::SimServer;

/// Which GPIO backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-process simulated board.
    Sim,
    /// `rppal` (Raspberry Pi only).
    Rppal,
    /// `gpiocdev` (any board with `/dev/gpiochip*`).
    Gpiocdev,
    /// Ask the detection table (`detect.rs`); machines without a device tree get the sim.
    Auto,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sim => "sim",
            Backend::Rppal => "rppal",
            Backend::Gpiocdev => "gpiocdev",
            Backend::Auto => "auto",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        [
            Backend::Sim,
            Backend::Rppal,
            Backend::Gpiocdev,
            Backend::Auto,
        ]
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| {
            format!("unknown board backend {s:?}; expected sim, rppal, gpiocdev or auto")
        })
    }
}

/// What `open` needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardConfig {
    pub backend: Backend,
    /// A built-in pin map name, a path to a TOML file, or `""` / `"auto"` for the detection
    /// table's default (for `Backend::Auto`) or `rpi4` otherwise.
    pub pinmap: String,
    /// For the sim backend: serve the control socket here.
    pub sim_socket: Option<PathBuf>,
}

/// The opened board.
///
/// The two inputs are handed out once each with [`take_button`](BoardIo::take_button) and
/// [`take_power_fail`](BoardIo::take_power_fail) (from `&self`, so the board can already sit
/// inside the daemon's state), to be moved into the monitor threads of `monitor.rs`.
pub struct BoardIo {
    button: Mutex<Option<Box<dyn EdgeInput>>>,
    power_fail: Mutex<Option<Box<dyn EdgeInput>>>,
    pub led: LedDriver,
    /// Present on the sim backend, to drive it from tests or code.
    pub sim: Option<SimHandle>,
    /// The sim control socket, if one was asked for. It lives as long as the board: dropping
    /// it stops the server and removes the socket file.
    pub sim_server: Option<SimServer>,
    /// The backend actually opened (never `Auto`) and the pin map it used.
    pub backend: Backend,
    pub pinmap: PinMap,
}

impl BoardIo {
    fn new(
        button: Box<dyn EdgeInput>,
        power_fail: Box<dyn EdgeInput>,
        led: LedDriver,
        backend: Backend,
        pinmap: PinMap,
    ) -> BoardIo {
        BoardIo {
            button: Mutex::new(Some(button)),
            power_fail: Mutex::new(Some(power_fail)),
            led,
            sim: None,
            sim_server: None,
            backend,
            pinmap,
        }
    }

    /// Takes the button input; a second call is an error.
    pub fn take_button(&self) -> Result<Box<dyn EdgeInput>> {
        take(&self.button, "button")
    }

    /// Takes the power-fail input; a second call is an error.
    pub fn take_power_fail(&self) -> Result<Box<dyn EdgeInput>> {
        take(&self.power_fail, "power_fail")
    }
}

fn take(
    slot: &Mutex<Option<Box<dyn EdgeInput>>>,
    input: &'static str,
) -> Result<Box<dyn EdgeInput>> {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or(BoardError::InputTaken { input })
}

/// Opens the board described by `cfg`.
pub fn open(cfg: &BoardConfig) -> Result<BoardIo> {
    let auto_pinmap = cfg.pinmap.is_empty() || cfg.pinmap == "auto";
    let (backend, default_pinmap) = match cfg.backend {
        Backend::Auto => {
            let d = detect::detect();
            (d.backend, d.pinmap)
        }
        b => (b, "rpi4"),
    };
    let pinmap = PinMap::load(if auto_pinmap {
        default_pinmap
    } else {
        &cfg.pinmap
    })?;
    log::info!(target: "board", "opening board: backend {backend}, pin map {}", pinmap.source);

    if backend != Backend::Sim {
        if let Some(path) = &cfg.sim_socket {
            log::debug!(target: "board", "not the sim backend; ignoring sim socket {}", path.display());
        }
    }
    match backend {
        Backend::Sim | Backend::Auto => open_sim(cfg, pinmap),
        Backend::Rppal => open_rppal(pinmap),
        Backend::Gpiocdev => open_gpiocdev(pinmap),
    }
}

fn open_sim(cfg: &BoardConfig, pinmap: PinMap) -> Result<BoardIo> {
    // The sim ignores line numbers, but the pin map was still loaded and validated above so a
    // broken map is caught on a laptop before it reaches a box. It has one LED, the status LED;
    // what the optional lights show is the pure `LedRole::level`, tested in led.rs.
    let board = SimBoard::new();
    let led = LedDriver::spawn(Box::new(board.led))?;
    board.handle.attach_led(led.watch());
    let sim_server = match &cfg.sim_socket {
        Some(path) => Some(SimServer::spawn(path, board.handle.clone())?),
        None => None,
    };
    let mut io = BoardIo::new(
        Box::new(board.button),
        Box::new(board.power_fail),
        led,
        Backend::Sim,
        pinmap,
    );
    io.sim = Some(board.handle);
    io.sim_server = sim_server;
    Ok(io)
}

#[cfg(feature = "rppal")]
fn open_rppal(pinmap: PinMap) -> Result<BoardIo> {
    let (button, power_fail, lights) = crate::backend_rppal::open(&pinmap)?;
    let led = LedDriver::spawn_lights(boxed(lights))?;
    Ok(BoardIo::new(
        Box::new(button),
        Box::new(power_fail),
        led,
        Backend::Rppal,
        pinmap,
    ))
}

#[cfg(not(feature = "rppal"))]
fn open_rppal(_: PinMap) -> Result<BoardIo> {
    Err(BoardError::BackendDisabled { backend: "rppal" })
}

#[cfg(feature = "gpiocdev")]
fn open_gpiocdev(pinmap: PinMap) -> Result<BoardIo> {
    let (button, power_fail, lights) = crate::backend_gpiocdev::open(&pinmap)?;
    let led = LedDriver::spawn_lights(boxed(lights))?;
    Ok(BoardIo::new(
        Box::new(button),
        Box::new(power_fail),
        led,
        Backend::Gpiocdev,
        pinmap,
    ))
}

#[cfg(not(feature = "gpiocdev"))]
fn open_gpiocdev(_: PinMap) -> Result<BoardIo> {
    Err(BoardError::BackendDisabled {
        backend: "gpiocdev",
    })
}

/// Boxes a backend's lights for the LED driver.
#[cfg(any(feature = "rppal", feature = "gpiocdev"))]
fn boxed<L: crate::pins::LedOutput + 'static>(lights: Vec<(crate::led::LedRole, L)>) -> Vec<(crate::led::LedRole, Box<dyn crate::pins::LedOutput>)> {
    lights
        .into_iter()
        .map(|(role, l)| (role, Box::new(l) as Box<dyn crate::pins::LedOutput>))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in [
            Backend::Sim,
            Backend::Rppal,
            Backend::Gpiocdev,
            Backend::Auto,
        ] {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
        assert!("pigpio".parse::<Backend>().unwrap_err().contains("pigpio"));
    }

    #[test]
    fn sim_open_with_bad_pinmap_fails_early() {
        let cfg = BoardConfig {
            backend: Backend::Sim,
            pinmap: "nope".into(),
            sim_socket: None,
        };
        let err = open(&cfg).err().unwrap().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn inputs_can_be_taken_once() {
        let cfg = BoardConfig {
            backend: Backend::Sim,
            pinmap: "auto".into(),
            sim_socket: None,
        };
        let io = open(&cfg).unwrap();
        assert_eq!(io.backend, Backend::Sim);
        io.take_button().unwrap();
        io.take_power_fail().unwrap();
        let err = io.take_button().err().unwrap().to_string();
        assert!(
            err.contains("button") && err.contains("already taken"),
            "{err}"
        );
    }

    #[test]
    fn disabled_backend_error_names_the_feature() {
        let e = BoardError::BackendDisabled { backend: "rppal" };
        assert!(e.to_string().contains("feature `rppal`"), "{e}");
    }
}
