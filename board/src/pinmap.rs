//! Pin maps: which gpiochip and lines the button, LED and power-fail signal are wired to, plus
//! the optional extra lights (`[led2]`, a second single-colour LED with a role, and `[rgb]`, an
//! RGB LED, which may stand in for `[led]`; what each shows is the table in `led.rs`).
//!
//! Built-in maps live in `board/pinmaps/*.toml` and are embedded with `include_str!`, so a box
//! never depends on files beside the binary; a deployment with different wiring points
//! `board.pinmap` at its own file instead. Parsing goes raw → validated (every key optional in
//! the raw struct, then checked once) so errors can name the file and the exact key.

use std::path::Path;

use serde::Deserialize;

use crate::error::{BoardError, Result};
use crate::led::LedRole;

/// The built-in pin maps, by name.
pub const BUILTIN_PINMAPS: &[(&str, &str)] = &[
    ("rpi4", include_str!("../pinmaps/rpi4.toml")),
    ("rpi5", include_str!("../pinmaps/rpi5.toml")),
    ("generic", include_str!("../pinmaps/generic.toml")),
];

/// Pull resistor configuration for an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bias {
    /// Leave whatever the firmware or device tree configured.
    AsIs,
    Disabled,
    PullUp,
    PullDown,
}

/// An input line (button, power-fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLine {
    pub line: u32,
    pub active_low: bool,
    pub bias: Bias,
}

/// An output line (LED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub line: u32,
    pub active_low: bool,
}

/// `[led2]`: a second single-colour LED and what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondLed {
    pub line: OutputLine,
    /// [`LedRole::Tally`] or [`LedRole::Alert`].
    pub role: LedRole,
}

/// `[rgb]`: an RGB LED, one line per colour; common anode LEDs are `active_low`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbLed {
    pub red: u32,
    pub green: u32,
    pub blue: u32,
    pub active_low: bool,
}

/// A validated pin map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMap {
    /// The built-in name or the file path it came from, for messages.
    pub source: String,
    /// gpiochip name (`gpiochip0`) or path (`/dev/gpiochip0`).
    pub chip: String,
    /// If set and some chip carries this label, that chip is used instead of `chip`.
    pub chip_label: Option<String>,
    pub button: InputLine,
    /// The status LED; optional only when an RGB LED takes its place.
    pub led: Option<OutputLine>,
    pub power_fail: InputLine,
    /// Optional second LED.
    pub led2: Option<SecondLed>,
    /// Optional RGB LED.
    pub rgb: Option<RgbLed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPinMap {
    chip: Option<String>,
    chip_label: Option<String>,
    button: Option<RawLine>,
    led: Option<RawLine>,
    power_fail: Option<RawLine>,
    led2: Option<RawLed2>,
    rgb: Option<RawRgb>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLed2 {
    line: Option<i64>,
    active_low: Option<bool>,
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRgb {
    red: Option<i64>,
    green: Option<i64>,
    blue: Option<i64>,
    active_low: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    line: Option<i64>,
    active_low: Option<bool>,
    bias: Option<String>,
}

impl PinMap {
    /// Loads a built-in map by name (`rpi4`, `rpi5`, `generic`) or, if the argument contains a
    /// `/` or ends in `.toml`, a file by path.
    pub fn load(name_or_path: &str) -> Result<PinMap> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            let path = Path::new(name_or_path);
            let text = std::fs::read_to_string(path).map_err(|source| BoardError::PinMapRead {
                path: path.to_owned(),
                source,
            })?;
            return PinMap::parse(&text, &path.display().to_string());
        }
        match BUILTIN_PINMAPS.iter().find(|(n, _)| *n == name_or_path) {
            Some((name, text)) => PinMap::parse(text, &format!("pinmaps/{name}.toml")),
            None => Err(BoardError::UnknownPinMap {
                name: name_or_path.to_owned(),
                known: BUILTIN_PINMAPS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Parses and validates map text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<PinMap> {
        let raw: RawPinMap = toml::from_str(text).map_err(|e| BoardError::PinMapParse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let key_err = |key: &str, problem: String| BoardError::PinMapKey {
            file: file.to_owned(),
            key: key.to_owned(),
            problem,
        };

        let chip = raw
            .chip
            .ok_or_else(|| key_err("chip", "missing; expected e.g. \"gpiochip0\"".into()))?;
        if chip.trim().is_empty() {
            return Err(key_err("chip", "must not be empty".into()));
        }
        let button = input_line(raw.button, "button", &key_err)?;
        let power_fail = input_line(raw.power_fail, "power_fail", &key_err)?;
        let led = match raw.led {
            Some(led_raw) => {
                if led_raw.bias.is_some() {
                    return Err(key_err("led.bias", "bias applies to inputs only".into()));
                }
                Some(OutputLine {
                    line: line_number(led_raw.line, "led.line", &key_err)?,
                    active_low: led_raw.active_low.unwrap_or(false),
                })
            }
            None => None,
        };

        let led2 = match raw.led2 {
            None => None,
            Some(r) => {
                let role = match r.role.as_deref() {
                    Some("tally") => LedRole::Tally,
                    Some("alert") => LedRole::Alert,
                    None => {
                        return Err(key_err(
                            "led2.role",
                            "missing; expected \"tally\" (steady while recording) or \"alert\" (blinks when the box needs someone)".into(),
                        ))
                    }
                    Some(other) => {
                        return Err(key_err(
                            "led2.role",
                            format!("{other:?} is not one of \"tally\", \"alert\""),
                        ))
                    }
                };
                Some(SecondLed {
                    line: OutputLine {
                        line: line_number(r.line, "led2.line", &key_err)?,
                        active_low: r.active_low.unwrap_or(false),
                    },
                    role,
                })
            }
        };
        let rgb = match raw.rgb {
            None => None,
            Some(r) => {
                let colour = |v: Option<i64>, key: &str| match v {
                    None => Err(key_err(
                        key,
                        "missing; an RGB LED needs a line for each of red, green and blue".into(),
                    )),
                    v => line_number(v, key, &key_err),
                };
                Some(RgbLed {
                    red: colour(r.red, "rgb.red")?,
                    green: colour(r.green, "rgb.green")?,
                    blue: colour(r.blue, "rgb.blue")?,
                    active_low: r.active_low.unwrap_or(false),
                })
            }
        };

        // A box needs some light saying what it does: the status LED, or an RGB LED in its place.
        if led.is_none() && rgb.is_none() {
            return Err(key_err(
                "led",
                "missing table [led] (a box needs a status LED: [led], or an RGB LED in [rgb])"
                    .into(),
            ));
        }

        // Two roles on one line would make the button light the LED or similar nonsense.
        let mut roles = vec![("button.line", button.line)];
        if let Some(l) = &led {
            roles.push(("led.line", l.line));
        }
        roles.push(("power_fail.line", power_fail.line));
        if let Some(l) = &led2 {
            roles.push(("led2.line", l.line.line));
        }
        if let Some(c) = &rgb {
            roles.extend([
                ("rgb.red", c.red),
                ("rgb.green", c.green),
                ("rgb.blue", c.blue),
            ]);
        }
        for (i, (k1, l1)) in roles.iter().enumerate() {
            if let Some((k2, _)) = roles[i + 1..].iter().find(|(_, l2)| l2 == l1) {
                return Err(key_err(k2, format!("line {l1} is already used by `{k1}`")));
            }
        }

        Ok(PinMap {
            source: file.to_owned(),
            chip,
            chip_label: raw.chip_label,
            button,
            led,
            power_fail,
            led2,
            rgb,
        })
    }

    /// Every LED output with what it shows, the status LED first: what a backend opens and the
    /// LED driver plays.
    pub fn lights(&self) -> Vec<(LedRole, OutputLine)> {
        let mut v: Vec<(LedRole, OutputLine)> = self
            .led
            .iter()
            .map(|l| (LedRole::Status, l.clone()))
            .collect();
        if let Some(l) = &self.led2 {
            v.push((l.role, l.line.clone()));
        }
        if let Some(c) = &self.rgb {
            for (role, line) in [
                (LedRole::Red, c.red),
                (LedRole::Green, c.green),
                (LedRole::Blue, c.blue),
            ] {
                v.push((
                    role,
                    OutputLine {
                        line,
                        active_low: c.active_low,
                    },
                ));
            }
        }
        v
    }
}

fn line_number(
    v: Option<i64>,
    key: &str,
    key_err: &dyn Fn(&str, String) -> BoardError,
) -> Result<u32> {
    let v = v.ok_or_else(|| key_err(key, "missing; expected a line offset such as 17".into()))?;
    u32::try_from(v).map_err(|_| key_err(key, format!("{v} is not a valid line offset")))
}

fn input_line(
    raw: Option<RawLine>,
    role: &str,
    key_err: &dyn Fn(&str, String) -> BoardError,
) -> Result<InputLine> {
    let raw = raw.ok_or_else(|| key_err(role, format!("missing table [{role}]")))?;
    let bias = match raw.bias.as_deref() {
        None | Some("as-is") => Bias::AsIs,
        Some("disabled") => Bias::Disabled,
        Some("pull-up") => Bias::PullUp,
        Some("pull-down") => Bias::PullDown,
        Some(other) => {
            return Err(key_err(
                &format!("{role}.bias"),
                format!(
                    "{other:?} is not one of \"pull-up\", \"pull-down\", \"disabled\", \"as-is\""
                ),
            ))
        }
    };
    Ok(InputLine {
        line: line_number(raw.line, &format!("{role}.line"), key_err)?,
        active_low: raw.active_low.unwrap_or(false),
        bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_maps_all_parse() {
        for (name, _) in BUILTIN_PINMAPS {
            let m = PinMap::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.source, format!("pinmaps/{name}.toml"));
        }
    }

    #[test]
    fn rpi5_finds_the_header_by_rp1_label() {
        let m = PinMap::load("rpi5").unwrap();
        assert_eq!(m.chip_label.as_deref(), Some("pinctrl-rp1"));
        assert_eq!(m.chip, "gpiochip0");
    }

    #[test]
    fn rpi4_values() {
        let m = PinMap::load("rpi4").unwrap();
        assert_eq!(
            m.button,
            InputLine {
                line: 17,
                active_low: true,
                bias: Bias::PullUp
            }
        );
        assert_eq!(
            m.led,
            Some(OutputLine {
                line: 27,
                active_low: false
            })
        );
        assert_eq!(
            m.power_fail,
            InputLine {
                line: 22,
                active_low: true,
                bias: Bias::PullUp
            }
        );
        assert_eq!(m.chip_label, None);
    }

    const GOOD: &str =
        "chip = \"gpiochip0\"\n[button]\nline = 1\n[led]\nline = 2\n[power_fail]\nline = 3\n";

    /// Parses `text` and expects an error whose message contains every needle.
    fn check_err(text: &str, needles: &[&str]) {
        let err = PinMap::parse(text, "my.toml").unwrap_err().to_string();
        assert!(
            err.contains("my.toml"),
            "error does not name the file: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{err:?} lacks {n:?}");
        }
    }

    #[test]
    fn minimal_map_uses_defaults() {
        let m = PinMap::parse(GOOD, "my.toml").unwrap();
        assert_eq!(
            m.button,
            InputLine {
                line: 1,
                active_low: false,
                bias: Bias::AsIs
            }
        );
    }

    #[test]
    fn bad_maps_name_file_and_key() {
        check_err("[button]\nline = 1\n", &["`chip`", "missing"]);
        check_err(
            &GOOD.replace("[led]\nline = 2\n", ""),
            &["`led`", "missing table [led]", "[rgb]"],
        );
        check_err(
            &GOOD.replace("[button]\nline = 1\n", "[button]\n"),
            &["`button.line`", "missing"],
        );
        check_err(
            &GOOD.replace("line = 3", "line = -3"),
            &["`power_fail.line`", "-3"],
        );
        check_err(
            &GOOD.replace("line = 3", "line = 3\nbias = \"up\""),
            &["`power_fail.bias`", "\"up\""],
        );
        check_err(
            &GOOD.replace("line = 2", "line = 2\nbias = \"pull-up\""),
            &["`led.bias`", "inputs only"],
        );
        check_err(
            &GOOD.replace("line = 3", "line = 1"),
            &["`power_fail.line`", "already used by `button.line`"],
        );
        check_err(&GOOD.replace("line = 2", "line = \"two\""), &["line"]);
        check_err(&GOOD.replace("line = 2", "line = 2\npin = 4"), &["pin"]);
        check_err("chip = ", &["not valid"]);
    }

    #[test]
    fn optional_lights_parse_and_list_in_order() {
        let text = format!(
            "{GOOD}[led2]\nline = 5\nrole = \"tally\"\n[rgb]\nred = 6\ngreen = 13\nblue = 19\nactive_low = true\n"
        );
        let m = PinMap::parse(&text, "my.toml").unwrap();
        assert_eq!(
            m.led2,
            Some(SecondLed {
                line: OutputLine {
                    line: 5,
                    active_low: false
                },
                role: LedRole::Tally
            })
        );
        let lights: Vec<(LedRole, u32, bool)> = m
            .lights()
            .into_iter()
            .map(|(r, l)| (r, l.line, l.active_low))
            .collect();
        assert_eq!(
            lights,
            [
                (LedRole::Status, 2, false),
                (LedRole::Tally, 5, false),
                (LedRole::Red, 6, true),
                (LedRole::Green, 13, true),
                (LedRole::Blue, 19, true),
            ]
        );
        let alert = PinMap::parse(
            &format!("{GOOD}[led2]\nline = 5\nrole = \"alert\"\nactive_low = true\n"),
            "my.toml",
        )
        .unwrap();
        assert_eq!(
            alert.led2.map(|l| (l.role, l.line.active_low)),
            Some((LedRole::Alert, true))
        );
        // Without the optional tables only the status LED is driven.
        assert_eq!(PinMap::parse(GOOD, "my.toml").unwrap().lights().len(), 1);
    }

    #[test]
    fn an_rgb_led_may_take_the_status_leds_place() {
        let text = GOOD.replace(
            "[led]\nline = 2\n",
            "[rgb]\nred = 5\ngreen = 6\nblue = 26\n",
        );
        let m = PinMap::parse(&text, "my.toml").unwrap();
        assert_eq!(m.led, None);
        let roles: Vec<LedRole> = m.lights().into_iter().map(|(r, _)| r).collect();
        assert_eq!(roles, [LedRole::Red, LedRole::Green, LedRole::Blue]);
    }

    #[test]
    fn bad_optional_lights_name_file_and_key() {
        let led2 = |body: &str| format!("{GOOD}[led2]\n{body}");
        let rgb = |body: &str| format!("{GOOD}[rgb]\n{body}");
        check_err(
            &led2("line = 5\n"),
            &["`led2.role`", "missing", "\"tally\"", "\"alert\""],
        );
        check_err(
            &led2("line = 5\nrole = \"rec\"\n"),
            &["`led2.role`", "\"rec\""],
        );
        check_err(&led2("role = \"tally\"\n"), &["`led2.line`", "missing"]);
        check_err(
            &led2("line = 2\nrole = \"tally\"\n"),
            &["`led2.line`", "already used by `led.line`"],
        );
        check_err(
            &led2("line = 5\nrole = \"tally\"\nbias = \"pull-up\"\n"),
            &["bias"],
        );
        check_err(
            &rgb("red = 6\ngreen = 13\n"),
            &["`rgb.blue`", "red, green and blue"],
        );
        check_err(
            &rgb("red = 6\ngreen = -1\nblue = 19\n"),
            &["`rgb.green`", "-1"],
        );
        check_err(
            &rgb("red = 6\ngreen = 6\nblue = 19\n"),
            &["`rgb.green`", "already used by `rgb.red`"],
        );
        check_err(
            &rgb("red = 1\ngreen = 13\nblue = 19\n"),
            &["`rgb.red`", "already used by `button.line`"],
        );
        check_err(
            &format!(
                "{GOOD}[led2]\nline = 6\nrole = \"alert\"\n[rgb]\nred = 6\ngreen = 13\nblue = 19\n"
            ),
            &["`rgb.red`", "already used by `led2.line`"],
        );
        check_err(
            &rgb("red = 6\ngreen = 13\nblue = 19\nwhite = 26\n"),
            &["white"],
        );
    }

    #[test]
    fn unknown_name_lists_builtins() {
        let err = PinMap::load("rpi9").unwrap_err().to_string();
        assert!(
            err.contains("rpi9") && err.contains("rpi4, rpi5, generic"),
            "{err}"
        );
    }

    #[test]
    fn loads_from_path_and_names_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custom.toml");
        std::fs::write(&path, GOOD).unwrap();
        let m = PinMap::load(path.to_str().unwrap()).unwrap();
        assert_eq!(m.source, path.display().to_string());
        let missing = dir.path().join("nope.toml");
        let err = PinMap::load(missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }
}
