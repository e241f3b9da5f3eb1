//! Board detection feeds the encoder choice: `encoder = "auto"` asks `lectern-board`'s detection
//! table what this machine is and hands `lectern-capture` an [`EncoderHint`]. This is the one
//! place that knows both crates, so `capture` never depends on `board` (and `board` knows nothing
//! of GStreamer).
//!
//! Detection reads the device tree whatever `board.backend` says: a Pi 5 running the sim board for
//! a bench test still has no H.264 block.

use lectern_board::BoardKind;
use lectern_capture::EncoderHint;

/// What a detected board means for the H.264 encoder.
pub(crate) fn encoder_hint(kind: BoardKind) -> EncoderHint {
    match kind {
        // Pi 4, Pi 400, CM4 and any bcm2711 carrier: the VideoCore encoder behind bcm2835-codec.
        BoardKind::RaspberryPi4 => EncoderHint::PiH264Block,
        // Pi 5, Pi 500, CM5 (bcm2712): no H.264 encoder block; x264 in software.
        BoardKind::RaspberryPi5 => EncoderHint::PiNoH264Block,
        // Older Pis go the generic GPIO way; they do have bcm2835-codec, which the full probe
        // tries first anyway.
        BoardKind::GenericGpiochip | BoardKind::Unknown => EncoderHint::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/device-tree/compatible` as the kernel exposes it (NUL-separated, NUL-terminated),
    /// recorded from the boards' device trees, → the first encoder `auto` tries.
    fn check(compatible: &str, model: &str, first: &str) {
        let kind = lectern_board::classify(compatible, model, true).kind;
        let candidates = lectern_capture::auto_candidates(encoder_hint(kind));
        assert_eq!(
            candidates.first().copied(),
            Some(first),
            "compatible {compatible:?} (model {model:?}) detected as {kind:?}: candidates {candidates:?}"
        );
    }

    #[test]
    fn recorded_boards_pick_their_encoder() {
        // bcm2711-rpi-4-b.dts
        check(
            "raspberrypi,4-model-b\0brcm,bcm2711\0",
            "Raspberry Pi 4 Model B Rev 1.5\0",
            "v4l2h264enc",
        );
        // bcm2711-rpi-cm4.dts
        check(
            "raspberrypi,4-compute-module\0brcm,bcm2711\0",
            "Raspberry Pi Compute Module 4 Rev 1.1\0",
            "v4l2h264enc",
        );
        // bcm2711-rpi-400.dts
        check(
            "raspberrypi,400\0brcm,bcm2711\0",
            "Raspberry Pi 400 Rev 1.1\0",
            "v4l2h264enc",
        );
        // bcm2712-rpi-5-b.dts
        check(
            "raspberrypi,5-model-b\0brcm,bcm2712\0",
            "Raspberry Pi 5 Model B Rev 1.0\0",
            "x264enc",
        );
        // bcm2712-rpi-500.dts and the CM5 trees carry the same SoC entry.
        check(
            "raspberrypi,500\0brcm,bcm2712\0",
            "Raspberry Pi 500 Rev 1.0\0",
            "x264enc",
        );
        check(
            "raspberrypi,5-compute-module\0brcm,bcm2712\0",
            "",
            "x264enc",
        );
        // Not a Pi: am335x-boneblack.dts; the full probe order, best first.
        check(
            "ti,am335x-bone-black\0ti,am335x-bone\0ti,am33xx\0",
            "TI AM335x BeagleBone Black\0",
            "v4l2h264enc",
        );
        // No device tree at all (x86_64).
        check("", "", "v4l2h264enc");
    }

    #[test]
    fn pi5_never_tries_hardware_and_pi4_never_tries_vaapi() {
        let pi5 = lectern_capture::auto_candidates(encoder_hint(BoardKind::RaspberryPi5));
        assert!(
            !pi5.contains(&"v4l2h264enc") && !pi5.contains(&"vaapih264enc"),
            "{pi5:?}"
        );
        let pi4 = lectern_capture::auto_candidates(encoder_hint(BoardKind::RaspberryPi4));
        assert!(
            !pi4.contains(&"vaapih264enc") && pi4.contains(&"x264enc"),
            "{pi4:?}"
        );
    }
}
