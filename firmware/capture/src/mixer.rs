//! The capture mixer check (issue 11): before each recording, read the mic's sound card capture
//! mixer and fix what a box can fix by itself — a muted capture switch (the most common cause of
//! a silent lecture that is not the lecturer's doing) and a capture volume far from the level the
//! AV team configured. What it found and changed is reported (status, log).
//!
//! The rule ([`plan`]) is pure and tested here against simulated mixers; [`AlsaMixer`] reads and
//! writes a real card through the design card's `alsa` crate (alsa-lib's simple mixer API, what
//! `amixer` uses). On a machine without sound cards only the rule runs; the QEMU guest's
//! `snd-dummy` card (which has `Capture` switch and volume controls) is where the real mixer is
//! exercised.

use std::fmt;

/// One simple-mixer element that can capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub name: String,
    pub index: u32,
    /// `Some(on)` when it has a capture switch: on only if every channel is on.
    pub switch: Option<bool>,
    /// Every capture channel's volume in dB (empty without a dB scale): a stereo mic with one
    /// channel turned down is as wrong as one turned down whole.
    pub volumes_db: Vec<f64>,
    /// The dB range, when it has one.
    pub range_db: Option<(f64, f64)>,
}

impl Element {
    /// The quietest channel's capture volume, what `status` reports.
    pub fn volume_db(&self) -> Option<f64> {
        self.volumes_db.iter().copied().reduce(f64::min)
    }
}

/// What to check, from `[capture]` (`mixer_element`, `mic_gain_db`).
#[derive(Debug, Clone, PartialEq)]
pub struct MixerPolicy {
    /// The element to look after; `None` picks the first capture element with a switch or a dB
    /// volume among `Capture`, `Mic`, `Mic Capture`, `Digital`, `ADC`, then any.
    pub element: Option<String>,
    /// The capture volume the AV team wants, in dB; `None` leaves the volume alone.
    pub gain_db: Option<f64>,
    /// How far from `gain_db` a volume may be before it is corrected.
    pub tolerance_db: f64,
}

impl Default for MixerPolicy {
    fn default() -> Self {
        MixerPolicy { element: None, gain_db: None, tolerance_db: 3.0 }
    }
}

/// One correction.
#[derive(Debug, Clone, PartialEq)]
pub enum Fix {
    /// The capture switch was off.
    Unmute { element: String },
    /// The capture volume was `from` dB, set to `to` dB (the configured level, within range).
    Volume { element: String, from: f64, to: f64 },
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fix::Unmute { element } => write!(f, "{element}: capture switch was off, turned on"),
            Fix::Volume { element, from, to } => write!(f, "{element}: capture volume was {from:.1} dB, set to {to:.1} dB"),
        }
    }
}

/// The element `policy` looks after, among `elements`, or why there is none.
pub fn pick<'a>(elements: &'a [Element], policy: &MixerPolicy) -> Result<&'a Element, String> {
    let usable = |e: &&Element| e.switch.is_some() || !e.volumes_db.is_empty();
    if let Some(want) = &policy.element {
        return elements.iter().find(|e| &e.name == want).ok_or_else(|| {
            let names: Vec<&str> = elements.iter().map(|e| e.name.as_str()).collect();
            format!("no capture control {want:?} on the card (it has: {})", if names.is_empty() { "none".to_owned() } else { names.join(", ") })
        });
    }
    for name in ["Capture", "Mic", "Mic Capture", "Digital", "ADC"] {
        if let Some(e) = elements.iter().filter(usable).find(|e| e.name == name) {
            return Ok(e);
        }
    }
    elements.iter().find(usable).ok_or_else(|| "the card has no capture switch or capture volume".to_owned())
}

/// The fixes `element` needs under `policy`, in the order to apply them.
pub fn plan(element: &Element, policy: &MixerPolicy) -> Vec<Fix> {
    let mut fixes = Vec::new();
    if element.switch == Some(false) {
        fixes.push(Fix::Unmute { element: element.name.clone() });
    }
    if let Some(want) = policy.gain_db {
        let to = element.range_db.map_or(want, |(lo, hi)| want.clamp(lo, hi));
        // The channel furthest from the wanted level decides; the fix sets them all.
        let furthest = element.volumes_db.iter().copied().max_by(|a, b| (a - to).abs().total_cmp(&(b - to).abs()));
        if let Some(now) = furthest.filter(|now| (now - to).abs() > policy.tolerance_db) {
            fixes.push(Fix::Volume { element: element.name.clone(), from: now, to });
        }
    }
    fixes
}

/// The sound card of an ALSA PCM name, for its mixer: `hw:1,0` → `hw:1`, `plughw:CARD=USB,DEV=0`
/// → `hw:CARD=USB`, `dsnoop:CARD=Dummy` → `hw:CARD=Dummy`. `None` for names that are not one card's
/// (`default`, `pulse`, a plugin defined in a config file), whose mixer Lectern does not guess.
pub fn card_of(pcm: &str) -> Option<String> {
    let (_, args) = pcm.split_once(':')?;
    let first = args.split(',').next()?.trim();
    let card = first.strip_prefix("CARD=").unwrap_or(first);
    if card.is_empty() || card.contains(['=', ' ']) {
        return None;
    }
    Some(if card.bytes().all(|b| b.is_ascii_digit()) { format!("hw:{card}") } else { format!("hw:CARD={card}") })
}

/// A card's capture mixer: the seam between the rule and alsa-lib.
pub trait CaptureMixer {
    fn elements(&self) -> Result<Vec<Element>, String>;
    fn set_switch(&mut self, element: &Element, on: bool) -> Result<(), String>;
    fn set_volume_db(&mut self, element: &Element, db: f64) -> Result<(), String>;
}

/// What one check found: the element, its state before, and what was fixed (or failed to be).
#[derive(Debug, Clone, PartialEq)]
pub struct MixerReport {
    pub card: String,
    pub element: Option<Element>,
    pub fixed: Vec<Fix>,
    pub error: Option<String>,
}

/// Reads `mixer`, applies [`plan`] and reads back; never fails the recording (a mixer that cannot
/// be read or written is reported, and the capture goes on).
pub fn check_and_fix(card: &str, mixer: &mut dyn CaptureMixer, policy: &MixerPolicy) -> MixerReport {
    let mut report = MixerReport { card: card.to_owned(), element: None, fixed: Vec::new(), error: None };
    let elements = match mixer.elements() {
        Ok(e) => e,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let element = match pick(&elements, policy) {
        Ok(e) => e.clone(),
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    for fix in plan(&element, policy) {
        let done = match &fix {
            Fix::Unmute { .. } => mixer.set_switch(&element, true),
            Fix::Volume { to, .. } => mixer.set_volume_db(&element, *to),
        };
        match done {
            Ok(()) => report.fixed.push(fix),
            Err(e) => report.error = Some(format!("{fix}: failed: {e}")),
        }
    }
    report.element = Some(element);
    report
}

/// The real mixer of one card, through alsa-lib.
pub struct AlsaMixer {
    mixer: alsa::mixer::Mixer,
}

impl AlsaMixer {
    /// Opens `card`'s mixer (`hw:N` or `hw:CARD=name`).
    pub fn open(card: &str) -> Result<AlsaMixer, String> {
        alsa::mixer::Mixer::new(card, false).map(|mixer| AlsaMixer { mixer }).map_err(|e| format!("cannot open the mixer: {e}"))
    }

    fn selem(&self, e: &Element) -> Result<alsa::mixer::Selem<'_>, String> {
        self.mixer.find_selem(&alsa::mixer::SelemId::new(&e.name, e.index)).ok_or_else(|| format!("control {:?} is gone", e.name))
    }
}

impl CaptureMixer for AlsaMixer {
    fn elements(&self) -> Result<Vec<Element>, String> {
        use alsa::mixer::{Selem, SelemChannelId};
        let mut out = Vec::new();
        for elem in self.mixer.iter() {
            let Some(s) = Selem::new(elem) else { continue };
            if !s.can_capture() {
                continue;
            }
            let id = s.get_id();
            let name = id.get_name().map_err(|e| e.to_string())?.to_owned();
            let channels: Vec<SelemChannelId> = SelemChannelId::all().iter().copied().filter(|c| s.has_capture_channel(*c)).collect();
            let switch = s.has_capture_switch().then(|| channels.iter().all(|c| s.get_capture_switch(*c).map(|v| v != 0).unwrap_or(false)));
            let (lo, hi) = s.get_capture_db_range();
            let has_db = s.has_capture_volume() && hi.0 > lo.0;
            let volumes_db = if has_db { channels.iter().filter_map(|c| s.get_capture_vol_db(*c).ok()).map(|v| v.0 as f64 / 100.0).collect() } else { Vec::new() };
            out.push(Element { name, index: id.get_index(), switch, volumes_db, range_db: has_db.then(|| (lo.0 as f64 / 100.0, hi.0 as f64 / 100.0)) });
        }
        Ok(out)
    }

    fn set_switch(&mut self, element: &Element, on: bool) -> Result<(), String> {
        self.selem(element)?.set_capture_switch_all(i32::from(on)).map_err(|e| e.to_string())
    }

    fn set_volume_db(&mut self, element: &Element, db: f64) -> Result<(), String> {
        let mb = alsa::mixer::MilliBel((db * 100.0).round() as i64);
        self.selem(element)?.set_capture_db_all(mb, alsa::Round::Floor).map_err(|e| e.to_string())
    }
}

/// The sound cards alsa-lib sees, as `hw:N name`, for `status`.
pub fn cards() -> Vec<String> {
    alsa::card::Iter::new()
        .filter_map(Result::ok)
        .map(|c| format!("hw:{} {}", c.get_index(), c.get_name().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(name: &str, switch: Option<bool>, volume_db: Option<f64>) -> Element {
        Element { name: name.into(), index: 0, switch, volumes_db: volume_db.into_iter().collect(), range_db: volume_db.map(|_| (-12.0, 30.0)) }
    }

    /// A simulated card: what a real one does with the same calls.
    struct Sim(Vec<Element>, bool);
    impl CaptureMixer for Sim {
        fn elements(&self) -> Result<Vec<Element>, String> {
            Ok(self.0.clone())
        }
        fn set_switch(&mut self, e: &Element, on: bool) -> Result<(), String> {
            if self.1 {
                return Err("Operation not permitted".into());
            }
            self.0.iter_mut().find(|x| x.name == e.name).unwrap().switch = Some(on);
            Ok(())
        }
        fn set_volume_db(&mut self, e: &Element, db: f64) -> Result<(), String> {
            for v in &mut self.0.iter_mut().find(|x| x.name == e.name).unwrap().volumes_db {
                *v = db;
            }
            Ok(())
        }
    }

    #[test]
    fn a_muted_capture_switch_is_turned_on_and_a_far_volume_set_back() {
        let policy = MixerPolicy { gain_db: Some(20.0), ..MixerPolicy::default() };
        let mut card = Sim(vec![el("Master", None, None), el("Capture", Some(false), Some(-6.0))], false);
        let r = check_and_fix("hw:1", &mut card, &policy);
        assert_eq!(r.fixed, [Fix::Unmute { element: "Capture".into() }, Fix::Volume { element: "Capture".into(), from: -6.0, to: 20.0 }]);
        assert_eq!((r.error, card.0[1].switch, card.0[1].volume_db()), (None, Some(true), Some(20.0)));
        // A second check finds nothing to do.
        assert!(check_and_fix("hw:1", &mut card, &policy).fixed.is_empty());
        // Within the tolerance, and with no configured gain, the volume is left alone.
        card.0[1].volumes_db = vec![18.0];
        assert!(check_and_fix("hw:1", &mut card, &policy).fixed.is_empty());
        card.0[1].volumes_db = vec![-12.0];
        assert!(check_and_fix("hw:1", &mut card, &MixerPolicy::default()).fixed.is_empty());
        assert_eq!(Fix::Unmute { element: "Capture".into() }.to_string(), "Capture: capture switch was off, turned on");
    }

    #[test]
    fn one_channel_turned_down_is_found_and_every_channel_set() {
        let policy = MixerPolicy { gain_db: Some(20.0), ..MixerPolicy::default() };
        // Left where it should be, right turned all the way down: the first channel alone looks fine.
        let mut card = Sim(vec![Element { volumes_db: vec![20.0, -12.0], ..el("Capture", Some(true), Some(20.0)) }], false);
        assert_eq!(card.0[0].volume_db(), Some(-12.0), "status reports the quietest channel");
        let r = check_and_fix("hw:1", &mut card, &policy);
        assert_eq!(r.fixed, [Fix::Volume { element: "Capture".into(), from: -12.0, to: 20.0 }]);
        assert_eq!(card.0[0].volumes_db, [20.0, 20.0]);
        // A channel too loud counts the same way.
        card.0[0].volumes_db = vec![20.0, 30.0];
        assert_eq!(plan(&card.0[0], &policy), [Fix::Volume { element: "Capture".into(), from: 30.0, to: 20.0 }]);
    }

    #[test]
    fn the_wanted_level_is_clamped_to_the_range_and_failures_are_reported_not_fatal() {
        let e = el("Mic", Some(true), Some(0.0));
        assert_eq!(plan(&e, &MixerPolicy { gain_db: Some(50.0), ..MixerPolicy::default() }), [Fix::Volume { element: "Mic".into(), from: 0.0, to: 30.0 }]);
        let mut locked = Sim(vec![el("Capture", Some(false), None)], true);
        let r = check_and_fix("hw:0", &mut locked, &MixerPolicy::default());
        assert!(r.fixed.is_empty() && r.error.as_deref().is_some_and(|e| e.contains("Operation not permitted")), "{r:?}");
    }

    #[test]
    fn the_element_is_the_configured_one_or_the_first_usual_capture_name() {
        let els = [el("Line", Some(true), None), el("Mic", Some(true), Some(0.0)), el("Capture", Some(true), Some(0.0))];
        assert_eq!(pick(&els, &MixerPolicy::default()).unwrap().name, "Capture");
        assert_eq!(pick(&els[..2], &MixerPolicy::default()).unwrap().name, "Mic");
        assert_eq!(pick(&els[..1], &MixerPolicy::default()).unwrap().name, "Line");
        let want = MixerPolicy { element: Some("ADC".into()), ..MixerPolicy::default() };
        assert_eq!(pick(&els, &want).unwrap_err(), "no capture control \"ADC\" on the card (it has: Line, Mic, Capture)");
        assert!(pick(&[], &MixerPolicy::default()).unwrap_err().contains("no capture switch"));
    }

    #[test]
    fn the_card_of_a_pcm_name() {
        for (pcm, card) in [
            ("hw:1,0", Some("hw:1")),
            ("plughw:1", Some("hw:1")),
            ("hw:CARD=USB,DEV=0", Some("hw:CARD=USB")),
            ("plughw:CARD=Dummy,DEV=0", Some("hw:CARD=Dummy")),
            ("dsnoop:Device", Some("hw:CARD=Device")),
            ("default", None),
            ("pulse", None),
            ("lectern_mic", None),
        ] {
            assert_eq!(card_of(pcm).as_deref(), card, "{pcm}");
        }
    }
}
