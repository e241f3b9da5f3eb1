//! The device probe on the ALSA path, without a sound card: alsa-lib's `file` PCM plugin opens
//! its `infile` in `snd_pcm_open`, which `alsasrc` calls on NULL → READY. With the infile gone
//! the PCM cannot be opened, exactly like a USB mic that was unplugged; put back, it opens again.
//! (A regular file, not a FIFO: opening a FIFO with no writer would block the probe.)
//!
//! `ALSA_CONFIG_PATH` must be set before alsa-lib first reads its configuration, so this test
//! lives alone in its own binary and sets it before GStreamer is initialised.

mod common;

use lectern_capture::{probe_inputs, AudioSource, CaptureError, CaptureSettings};

#[test]
fn an_alsa_mic_that_disappears_and_comes_back_is_seen_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let infile = dir.path().join("mic.raw");
    let Some(conf) = common::file_pcm_config("alsa_probe", dir.path(), "lectern_probe_mic", &infile) else { return };
    // Before any alsa-lib or GStreamer call in this process (see the module doc).
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
    if !common::have_elements("alsa_probe", &["alsasrc"]) {
        return;
    }
    let settings = CaptureSettings { audio: AudioSource::Alsa { device: "lectern_probe_mic".into() }, ..Default::default() };
    let mic = |s: &CaptureSettings| probe_inputs(s).mic.expect("an ALSA mic is checked");

    let gone = mic(&settings);
    assert_eq!(gone.device, "lectern_probe_mic");
    let err = gone.result.unwrap_err();
    assert!(matches!(err, CaptureError::DeviceUnavailable { input: "mic", .. }), "{err:?}");
    let text = err.to_string();
    eprintln!("mic gone: {text}");
    assert!(text.contains("mic lectern_probe_mic cannot be opened") && text.contains("No such file"), "{text}");

    std::fs::write(&infile, vec![0u8; 4096]).unwrap();
    let back = mic(&settings);
    assert!(back.result.is_ok(), "{back:?}");

    std::fs::remove_file(&infile).unwrap();
    assert!(mic(&settings).result.is_err(), "the mic is gone again");

    // An unknown PCM name is an error naming it too.
    let other = CaptureSettings { audio: AudioSource::Alsa { device: "lectern_no_such_pcm".into() }, ..Default::default() };
    let text = mic(&other).result.unwrap_err().to_string();
    assert!(text.contains("lectern_no_such_pcm"), "{text}");
}
