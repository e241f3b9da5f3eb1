//! The Raspberry Pi backend on `rppal::gpio` (memory-mapped `/dev/gpiomem` on Pi 1–4,
//! `/dev/gpiomem0` on the Pi 5's RP1). Line numbers are BCM GPIO numbers.
//!
//! Edges: rppal's synchronous `poll_interrupt` takes one lock shared by *all* pins for as long as
//! it blocks, so the button and power-fail monitors would starve each other. We therefore use
//! `set_async_interrupt`, whose rppal-owned thread forwards each edge into a channel that
//! `wait_edge` receives from with a timeout.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use rppal::gpio::{Gpio, InputPin, Level, OutputPin, Trigger};

use crate::error::{BoardError, Result};
use crate::led::LedRole;
use crate::pinmap::{Bias, InputLine, OutputLine};
use crate::pins::{EdgeInput, LedOutput};

fn gpio_err(pin: &str, op: &'static str, e: rppal::gpio::Error) -> BoardError {
    BoardError::Gpio {
        pin: pin.to_owned(),
        op,
        source: Box::new(e),
    }
}

fn bcm(role: &str, line: u32) -> Result<u8> {
    u8::try_from(line).map_err(|_| BoardError::Gpio {
        pin: format!("{role} (line {line})"),
        op: "map to a BCM GPIO number",
        source: "rppal addresses GPIOs 0-255 only".into(),
    })
}

/// An input pin with an async interrupt feeding a channel.
pub struct RppalInput {
    pin: InputPin,
    edges: Receiver<bool>,
    active_low: bool,
    label: String,
}

impl RppalInput {
    pub fn open(gpio: &Gpio, role: &str, spec: &InputLine) -> Result<RppalInput> {
        let label = format!("{role} (BCM GPIO{})", spec.line);
        let pin = gpio
            .get(bcm(role, spec.line)?)
            .map_err(|e| gpio_err(&label, "claim pin", e))?;
        let mut pin = match spec.bias {
            Bias::PullUp => pin.into_input_pullup(),
            Bias::PullDown => pin.into_input_pulldown(),
            // rppal has no "leave bias alone" mode for inputs; `into_input` disables the pull,
            // which is what an externally biased line wants anyway.
            Bias::AsIs | Bias::Disabled => pin.into_input(),
        };
        let (tx, rx) = mpsc::channel();
        let active_low = spec.active_low;
        pin.set_async_interrupt(Trigger::Both, None, move |ev| {
            let high = ev.trigger == Trigger::RisingEdge;
            // The receiver only disappears when the pin is dropped, which also stops this thread.
            let _ = tx.send(high != active_low);
        })
        .map_err(|e| gpio_err(&label, "set interrupt", e))?;
        log::info!(target: "board", "rppal: {label} opened as input, bias {:?}, active_low {active_low}", spec.bias);
        Ok(RppalInput {
            pin,
            edges: rx,
            active_low,
            label,
        })
    }
}

impl EdgeInput for RppalInput {
    fn is_active(&mut self) -> Result<bool> {
        Ok((self.pin.read() == Level::High) != self.active_low)
    }

    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<bool>> {
        match self.edges.recv_timeout(timeout) {
            Ok(active) => Ok(Some(active)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(BoardError::EdgeSourceClosed {
                pin: self.label.clone(),
            }),
        }
    }
}

/// An LED output pin (the status LED or an optional light).
pub struct RppalLed {
    pin: OutputPin,
    active_low: bool,
}

impl RppalLed {
    pub fn open(gpio: &Gpio, role: LedRole, spec: &OutputLine) -> Result<RppalLed> {
        let key = role.key();
        let label = format!("{key} (BCM GPIO{})", spec.line);
        let pin = gpio
            .get(bcm(key, spec.line)?)
            .map_err(|e| gpio_err(&label, "claim pin", e))?;
        // Start dark: high only if the LED is active-low.
        let pin = if spec.active_low {
            pin.into_output_high()
        } else {
            pin.into_output_low()
        };
        log::info!(target: "board", "rppal: {label} opened as output, active_low {}", spec.active_low);
        Ok(RppalLed {
            pin,
            active_low: spec.active_low,
        })
    }
}

impl LedOutput for RppalLed {
    fn set(&mut self, on: bool) -> Result<()> {
        // Register writes cannot fail once the pin is claimed.
        if on != self.active_low {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }
}

/// What `open` hands back: button, power-fail, and the lights with their roles.
pub type Opened = (RppalInput, RppalInput, Vec<(LedRole, RppalLed)>);

/// Opens the pins of a pin map: button, power-fail and every light ([`crate::PinMap::lights`]).
pub fn open(map: &crate::PinMap) -> Result<Opened> {
    let gpio = Gpio::new().map_err(|e| gpio_err("GPIO peripheral (/dev/gpiomem)", "open", e))?;
    let button = RppalInput::open(&gpio, "button", &map.button)?;
    let power_fail = RppalInput::open(&gpio, "power_fail", &map.power_fail)?;
    let lights = map
        .lights()
        .into_iter()
        .map(|(role, spec)| Ok((role, RppalLed::open(&gpio, role, &spec)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((button, power_fail, lights))
}
