//! The config the image and the .deb install (`packaging/lectern.toml`) is valid and is the
//! appliance's: detected board, a real camera and mic.

use std::path::Path;

use lectern_config::{AudioInput, BoardBackend, Config, VideoInput};

#[test]
fn packaged_config_is_valid_and_targets_real_devices() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/lectern.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.board.backend, BoardBackend::Auto);
    assert!(matches!(c.capture.video, VideoInput::V4l2 { .. }), "{:?}", c.capture.video);
    assert!(matches!(c.capture.audio, AudioInput::Alsa { .. }), "{:?}", c.capture.audio);
}
