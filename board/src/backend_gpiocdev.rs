//! The GPIO character-device backend (`/dev/gpiochip*`, uAPI v2) on `gpiocdev`, for any Linux
//! board, including Pis when rppal is not wanted.
//!
//! Each role gets its own line request, so each [`EdgeInput`] owns its event file descriptor
//! and the two monitor threads never contend. Active-low inversion and bias are done by the
//! kernel (`as_active_low`, `with_bias`), so values read back are already "active" values and a
//! rising edge always means "became active".

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpiocdev::line::{Bias as CdevBias, EdgeDetection, EdgeKind, Value};
use gpiocdev::Request;

use crate::error::{BoardError, Result};
use crate::led::LedRole;
use crate::pinmap::{Bias, InputLine, OutputLine, PinMap};
use crate::pins::{EdgeInput, LedOutput};

fn gpio_err(pin: &str, op: &'static str, e: gpiocdev::Error) -> BoardError {
    BoardError::Gpio {
        pin: pin.to_owned(),
        op,
        source: Box::new(e),
    }
}

/// Finds the chip for a pin map: by label if one is given and present, else by name or path.
/// The label matters on the Pi 5, whose header chip was renamed between kernels.
pub fn resolve_chip(map: &PinMap) -> Result<PathBuf> {
    if let Some(label) = &map.chip_label {
        let chips = gpiocdev::chip::chips().map_err(|e| BoardError::ChipNotFound {
            wanted: format!("with label {label:?}"),
            detail: e.to_string(),
        })?;
        for path in chips {
            let found = gpiocdev::Chip::from_path(&path)
                .and_then(|c| c.info())
                .map(|i| i.label == *label);
            if let Ok(true) = found {
                log::info!(target: "board", "gpiocdev: chip label {label:?} is {}", path.display());
                return Ok(path);
            }
        }
        log::warn!(target: "board", "gpiocdev: no chip labelled {label:?}; falling back to {:?}", map.chip);
    }
    let path = if map.chip.starts_with('/') {
        PathBuf::from(&map.chip)
    } else {
        PathBuf::from("/dev").join(&map.chip)
    };
    gpiocdev::chip::is_chip(&path).map_err(|e| BoardError::ChipNotFound {
        wanted: format!("{} (pin map {})", path.display(), map.source),
        detail: e.to_string(),
    })
}

/// An input line requested with edge detection on both edges.
pub struct CdevInput {
    req: Request,
    line: u32,
    label: String,
}

impl CdevInput {
    pub fn open(chip: &Path, role: &str, spec: &InputLine) -> Result<CdevInput> {
        let label = format!("{role} (line {} on {})", spec.line, chip.display());
        let bias = match spec.bias {
            Bias::AsIs => None,
            Bias::Disabled => Some(CdevBias::Disabled),
            Bias::PullUp => Some(CdevBias::PullUp),
            Bias::PullDown => Some(CdevBias::PullDown),
        };
        let mut b = Request::builder();
        b.on_chip(chip)
            .with_consumer(format!("lectern-{role}"))
            .with_line(spec.line)
            .as_input()
            .with_bias(bias)
            .with_edge_detection(EdgeDetection::BothEdges);
        if spec.active_low {
            b.as_active_low();
        }
        // No kernel debounce: the software debouncer is the one place that decides what a press
        // is, identically on every backend.
        let req = b
            .request()
            .map_err(|e| gpio_err(&label, "request line", e))?;
        log::info!(target: "board", "gpiocdev: {label} requested as input, bias {:?}, active_low {}", spec.bias, spec.active_low);
        Ok(CdevInput {
            req,
            line: spec.line,
            label,
        })
    }
}

impl EdgeInput for CdevInput {
    fn is_active(&mut self) -> Result<bool> {
        let v = self
            .req
            .value(self.line)
            .map_err(|e| gpio_err(&self.label, "read value", e))?;
        Ok(v == Value::Active)
    }

    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<bool>> {
        let ready = self
            .req
            .wait_edge_event(timeout)
            .map_err(|e| gpio_err(&self.label, "wait for edge", e))?;
        if !ready {
            return Ok(None);
        }
        let ev = self
            .req
            .read_edge_event()
            .map_err(|e| gpio_err(&self.label, "read edge", e))?;
        Ok(Some(ev.kind == EdgeKind::Rising))
    }
}

/// An LED line (the status LED or an optional light) requested as an output.
pub struct CdevLed {
    req: Request,
    label: String,
}

impl CdevLed {
    pub fn open(chip: &Path, role: LedRole, spec: &OutputLine) -> Result<CdevLed> {
        let key = role.key();
        let label = format!("{key} (line {} on {})", spec.line, chip.display());
        let mut b = Request::builder();
        b.on_chip(chip)
            .with_consumer(format!("lectern-{}", key.replace('.', "-")))
            .with_line(spec.line)
            .as_output(Value::Inactive);
        if spec.active_low {
            b.as_active_low();
        }
        let req = b
            .request()
            .map_err(|e| gpio_err(&label, "request line", e))?;
        log::info!(target: "board", "gpiocdev: {label} requested as output, active_low {}", spec.active_low);
        Ok(CdevLed { req, label })
    }
}

impl LedOutput for CdevLed {
    fn set(&mut self, on: bool) -> Result<()> {
        let v = if on { Value::Active } else { Value::Inactive };
        self.req
            .set_lone_value(v)
            .map_err(|e| gpio_err(&self.label, "set value", e))
    }
}

/// What `open` hands back: button, power-fail, and the lights with their roles.
pub type Opened = (CdevInput, CdevInput, Vec<(LedRole, CdevLed)>);

/// Opens the lines of a pin map: button, power-fail and every light ([`PinMap::lights`]).
pub fn open(map: &PinMap) -> Result<Opened> {
    let chip = resolve_chip(map)?;
    let button = CdevInput::open(&chip, "button", &map.button)?;
    let power_fail = CdevInput::open(&chip, "power_fail", &map.power_fail)?;
    let lights = map
        .lights()
        .into_iter()
        .map(|(role, spec)| Ok((role, CdevLed::open(&chip, role, &spec)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((button, power_fail, lights))
}
