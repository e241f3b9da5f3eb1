//! Board detection in one table: device-tree `compatible` / `model` → board kind, default
//! backend and default pin map.
//!
//! [`classify`] is pure and table-tested; [`detect`] is the thin reader of
//! `/proc/device-tree/{compatible,model}` and `/dev/gpiochip*`. A machine without a device tree
//! (an x86_64 laptop or CI runner) is `Unknown` and gets the sim, even if it happens to expose
//! gpiochips: opening arbitrary lines on a laptop's GPIO controller would be a bad surprise.

use std::path::Path;

use crate::open::Backend;

/// What kind of board we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardKind {
    RaspberryPi4,
    RaspberryPi5,
    /// A device-tree board with a GPIO character device that the table does not know by name.
    GenericGpiochip,
    /// No device tree, or no GPIO at all: use the sim.
    Unknown,
}

/// The outcome of detection: what to open by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub kind: BoardKind,
    pub backend: Backend,
    pub pinmap: &'static str,
}

/// How a table row recognises a board.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// One entry of the NUL-separated `compatible` list, exactly.
    Compatible(&'static str),
    /// A prefix of `model` (which carries a revision suffix such as " Rev 1.4").
    ModelPrefix(&'static str),
}

/// THE table. First match wins, so specific rows come before generic ones. Only boards with
/// a tested pin map are named; everything else with a device tree and a gpiochip falls through to
/// `GenericGpiochip`.
const TABLE: &[(Key, BoardKind, Backend, &str)] = &[
    // Pi 5 family: header on RP1; rppal 0.22 drives RP1 through /dev/gpiomem0.
    (
        Key::Compatible("raspberrypi,5-model-b"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    (
        Key::Compatible("raspberrypi,500"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    (
        Key::Compatible("raspberrypi,5-compute-module"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    (
        Key::Compatible("brcm,bcm2712"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    (
        Key::ModelPrefix("Raspberry Pi 5"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    (
        Key::ModelPrefix("Raspberry Pi 500"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    (
        Key::ModelPrefix("Raspberry Pi Compute Module 5"),
        BoardKind::RaspberryPi5,
        Backend::Rppal,
        "rpi5",
    ),
    // Pi 4 family.
    (
        Key::Compatible("raspberrypi,4-model-b"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    (
        Key::Compatible("raspberrypi,400"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    (
        Key::Compatible("raspberrypi,4-compute-module"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    (
        Key::Compatible("brcm,bcm2711"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    (
        Key::ModelPrefix("Raspberry Pi 4"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    (
        Key::ModelPrefix("Raspberry Pi 400"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    (
        Key::ModelPrefix("Raspberry Pi Compute Module 4"),
        BoardKind::RaspberryPi4,
        Backend::Rppal,
        "rpi4",
    ),
    // Older 40-pin Pis (3, Zero 2 W, ...): same header numbering on gpiochip0 as the Pi 4, but
    // untested with rppal here, so they take the generic character-device path.
    (
        Key::ModelPrefix("Raspberry Pi"),
        BoardKind::GenericGpiochip,
        Backend::Gpiocdev,
        "rpi4",
    ),
];

/// Classifies a board from its device-tree `compatible` (NUL-separated, as read from the file)
/// and `model`, plus whether any `/dev/gpiochip*` exists. Pure.
pub fn classify(compatible: &str, model: &str, has_gpiochip: bool) -> Detected {
    let model = model.trim_end_matches('\0').trim();
    let mut compat = compatible
        .split('\0')
        .map(str::trim)
        .filter(|s| !s.is_empty());
    for &(key, kind, backend, pinmap) in TABLE {
        let hit = match key {
            Key::Compatible(c) => compat.clone().any(|entry| entry == c),
            Key::ModelPrefix(p) => model.starts_with(p),
        };
        if hit {
            return Detected {
                kind,
                backend,
                pinmap,
            };
        }
    }
    let has_device_tree = compat.next().is_some() || !model.is_empty();
    if has_device_tree && has_gpiochip {
        Detected {
            kind: BoardKind::GenericGpiochip,
            backend: Backend::Gpiocdev,
            pinmap: "generic",
        }
    } else {
        Detected {
            kind: BoardKind::Unknown,
            backend: Backend::Sim,
            pinmap: "generic",
        }
    }
}

/// Reads the device tree and `/dev` and classifies this machine. Missing files simply mean
/// "no device tree" (x86_64), not an error.
///
/// The answer is read once per process and remembered: the device tree does not change while we
/// run, and both `open` (backend `auto`) and the daemon's encoder choice ask.
pub fn detect() -> Detected {
    static DETECTED: std::sync::OnceLock<Detected> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(detect_now)
}

fn detect_now() -> Detected {
    let read = |p: &str| match std::fs::read(p) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            log::debug!(target: "board", "detect: cannot read {p}: {e}");
            String::new()
        }
    };
    let compatible = read("/proc/device-tree/compatible");
    let model = read("/proc/device-tree/model");
    let has_gpiochip = has_gpiochip(Path::new("/dev"));
    let d = classify(&compatible, &model, has_gpiochip);
    log::info!(
        target: "board",
        "detected {:?} (model {:?}, gpiochip {}): backend {}, pin map {}",
        d.kind,
        model.trim_end_matches('\0'),
        if has_gpiochip { "present" } else { "absent" },
        d.backend,
        d.pinmap
    );
    d
}

fn has_gpiochip(dev: &Path) -> bool {
    std::fs::read_dir(dev)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("gpiochip"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BoardKind::*;

    fn check(compatible: &str, model: &str, gpiochip: bool, expect: (BoardKind, Backend, &str)) {
        let d = classify(compatible, model, gpiochip);
        assert_eq!(
            (d.kind, d.backend, d.pinmap),
            expect,
            "compatible={compatible:?} model={model:?}"
        );
    }

    #[test]
    fn detection_table() {
        check(
            "raspberrypi,5-model-b\0brcm,bcm2712\0",
            "Raspberry Pi 5 Model B Rev 1.0\0",
            true,
            (RaspberryPi5, Backend::Rppal, "rpi5"),
        );
        check(
            "raspberrypi,500\0brcm,bcm2712\0",
            "",
            true,
            (RaspberryPi5, Backend::Rppal, "rpi5"),
        );
        check(
            "raspberrypi,5-compute-module\0brcm,bcm2712\0",
            "",
            true,
            (RaspberryPi5, Backend::Rppal, "rpi5"),
        );
        check(
            "raspberrypi,4-model-b\0brcm,bcm2711\0",
            "Raspberry Pi 4 Model B Rev 1.4\0",
            true,
            (RaspberryPi4, Backend::Rppal, "rpi4"),
        );
        check(
            "raspberrypi,400\0brcm,bcm2711\0",
            "",
            true,
            (RaspberryPi4, Backend::Rppal, "rpi4"),
        );
        check(
            "raspberrypi,4-compute-module\0brcm,bcm2711\0",
            "",
            true,
            (RaspberryPi4, Backend::Rppal, "rpi4"),
        );
        // A compatible list we do not know, but the model string still identifies the Pi.
        check(
            "",
            "Raspberry Pi 4 Model B Rev 1.5",
            true,
            (RaspberryPi4, Backend::Rppal, "rpi4"),
        );
        check(
            "",
            "Raspberry Pi 5 Model B Rev 1.1",
            true,
            (RaspberryPi5, Backend::Rppal, "rpi5"),
        );
        // Older Pis go the generic way with the Pi header map.
        check(
            "raspberrypi,3-model-b-plus\0brcm,bcm2837\0",
            "Raspberry Pi 3 Model B Plus Rev 1.3\0",
            true,
            (GenericGpiochip, Backend::Gpiocdev, "rpi4"),
        );
        // Other SBCs with GPIO: am335x-boneblack.dts, and a Rock Pi 4.
        check(
            "ti,am335x-bone-black\0ti,am335x-bone\0ti,am33xx\0",
            "TI AM335x BeagleBone Black\0",
            true,
            (GenericGpiochip, Backend::Gpiocdev, "generic"),
        );
        check(
            "radxa,rockpi4b\0rockchip,rk3399\0",
            "Radxa ROCK Pi 4B\0",
            true,
            (GenericGpiochip, Backend::Gpiocdev, "generic"),
        );
        // A device-tree board without GPIO, and an x86_64 machine (no device tree at all).
        check(
            "qemu,virt\0",
            "linux,dummy-virt",
            false,
            (Unknown, Backend::Sim, "generic"),
        );
        check("", "", true, (Unknown, Backend::Sim, "generic"));
        check("", "", false, (Unknown, Backend::Sim, "generic"));
    }

    #[test]
    fn brcm_soc_alone_is_enough() {
        check(
            "vendor,custom-carrier\0brcm,bcm2711\0",
            "Custom CM4 carrier",
            true,
            (RaspberryPi4, Backend::Rppal, "rpi4"),
        );
    }

    #[test]
    fn every_table_pinmap_is_builtin() {
        for (_, _, _, pinmap) in TABLE {
            crate::PinMap::load(pinmap).unwrap();
        }
    }
}
