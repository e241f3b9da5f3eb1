//! The two GPIO seams the rest of the firmware sees: an input that can wait for an edge, and an
//! LED output. Each backend (`sim`, `rppal`, `gpiocdev`) implements both, side by side.
//!
//! Why not use embedded-hal's traits directly? embedded-hal 1.0 `InputPin` has no blocking edge
//! wait (that lives in embedded-hal-async), and without one a button monitor would have to poll.
//! So the input seam is our own; the output seam is so small that any embedded-hal
//! `OutputPin` can be wrapped into it with [`HalOutput`], and the sim pins implement the
//! embedded-hal traits for drivers written against them.

use std::time::Duration;

use crate::error::Result;

/// A digital input whose *active* state (pressed, power failing) can be read and waited for.
///
/// "Active" is after active-low inversion: backends apply the pin map's `active_low` so callers
/// never think about wiring.
pub trait EdgeInput: Send {
    /// Reads the current active state.
    fn is_active(&mut self) -> Result<bool>;

    /// Blocks until the input changes or `timeout` passes. Returns the new active state, or
    /// `None` on timeout. Spurious returns of the current state are allowed; callers dedupe.
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<bool>>;
}

/// An LED (or any on/off indicator) output. `on` is after active-low inversion.
pub trait LedOutput: Send {
    fn set(&mut self, on: bool) -> Result<()>;
}

impl<T: EdgeInput + ?Sized> EdgeInput for Box<T> {
    fn is_active(&mut self) -> Result<bool> {
        (**self).is_active()
    }
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<bool>> {
        (**self).wait_edge(timeout)
    }
}

impl<T: LedOutput + ?Sized> LedOutput for Box<T> {
    fn set(&mut self, on: bool) -> Result<()> {
        (**self).set(on)
    }
}

/// Adapts any embedded-hal 1.0 `OutputPin` into an [`LedOutput`], with optional active-low
/// inversion and a label for error messages.
pub struct HalOutput<P> {
    pin: P,
    active_low: bool,
    label: String,
}

impl<P> HalOutput<P> {
    pub fn new(pin: P, active_low: bool, label: impl Into<String>) -> HalOutput<P> {
        HalOutput {
            pin,
            active_low,
            label: label.into(),
        }
    }

    /// Gives back the wrapped pin.
    pub fn into_inner(self) -> P {
        self.pin
    }
}

impl<P> LedOutput for HalOutput<P>
where
    P: embedded_hal::digital::OutputPin + Send,
    P::Error: std::fmt::Debug,
{
    fn set(&mut self, on: bool) -> Result<()> {
        let high = on != self.active_low;
        let r = if high {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        };
        r.map_err(|e| crate::BoardError::Gpio {
            pin: self.label.clone(),
            op: "set level",
            // embedded-hal errors only promise Debug, so carry their Debug text.
            source: format!("{e:?}").into(),
        })
    }
}
