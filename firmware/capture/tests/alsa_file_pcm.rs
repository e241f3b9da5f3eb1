//! The ALSA code path without a sound card, through alsa-lib's `file` PCM plugin.
//!
//! What we found about alsasrc on `type file` + `slave.pcm "null"` (alsa-lib 1.2.8,
//! GStreamer 1.22):
//!
//! * The null PCM has no clock: every `snd_pcm_readi` completes at once. Backed by a regular
//!   `infile`, alsasrc reads as fast as the CPU allows — `arecord -d 3` finishes in 8 ms, 400
//!   alsasrc buffers take 5 ms — its audio clock races ahead (level timestamps at 15–40 s after
//!   a fraction of a second), it posts "Can't record audio fast enough", and at the end of the
//!   file `readi` returns 0 frames (the plugin's `read()` hits EOF), so the tone is gone at once.
//!   Useless for a live pipeline.
//! * The `file` plugin calls plain `read()` on `infile` for every `readi`, and alsasrc loops
//!   until a period is complete. So if `infile` is a FIFO that a writer fills at real-time
//!   pace, the FIFO paces alsasrc: timestamps advance at 1 s per second and the levels show the
//!   tone. That is what this test does. The plugin opens `infile` in `snd_pcm_open` (alsasrc's
//!   NULL→READY), so the writer blocks in `open()` until then, and gets EPIPE when alsasrc
//!   closes the PCM; it loops to serve a re-open.
//! * The null PCM accepts any format, so alsasrc negotiates what downstream prefers: with our
//!   `audioconvert ! audioresample ! audio/x-raw,rate=48000 ! level ! voaacenc` chain that is
//!   S16LE, 1 channel, 48 kHz (seen with `gst-launch-1.0 -v`; with `avenc_aac` it was F32LE
//!   stereo). The writer therefore writes S16LE mono. If the encoder or GStreamer negotiates
//!   differently, the level assertions below fail with wild values rather than a clean −12 dB
//!   (and the clock runs at the wrong pace) — check the negotiated caps first.
//! * Only `readi` reads `infile`; the mmap path does not, so a `plug` in front (which would make
//!   the format fixed) would capture silence. Hence no `plug`.
//!
//! `ALSA_CONFIG_PATH` must be set before alsa-lib first reads its configuration, so this test
//! lives alone in its own binary and sets it before GStreamer is initialised.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lectern_capture::{AudioSource, Capture, CaptureSettings, EncoderChoice};

const RATE: usize = 48_000;
const AMPLITUDE: f32 = 0.25; // −12.0 dBFS peak, −15.1 dBFS RMS for a sine.

/// Writes a 440 Hz S16LE mono tone into the FIFO at real-time pace, re-opening it whenever
/// the reader goes away. Runs detached until the test process exits.
fn feed_fifo(fifo: &Path) {
    let fifo = fifo.to_path_buf();
    std::thread::spawn(move || {
        let period = RATE / 100; // 10 ms
        let mut phase = 0usize;
        loop {
            let Ok(mut f) = OpenOptions::new().write(true).open(&fifo) else {
                return;
            };
            let t0 = Instant::now();
            let mut written = 0usize;
            loop {
                let mut buf = Vec::with_capacity(period * 2);
                for i in 0..period {
                    let t = (phase + i) as f32 / RATE as f32;
                    let v = AMPLITUDE * (2.0 * std::f32::consts::PI * 440.0 * t).sin();
                    buf.extend_from_slice(&((v * 32767.0).round() as i16).to_le_bytes());
                }
                phase = (phase + period) % RATE;
                if f.write_all(&buf).is_err() {
                    break; // EPIPE: alsasrc closed the PCM; wait for the next open.
                }
                written += period;
                let due = t0 + Duration::from_secs_f64(written as f64 / RATE as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
    });
}

#[test]
fn alsa_source_through_the_file_pcm_shows_the_tone() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("tone.s16");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("SKIPPED alsa_file_pcm: mkfifo failed: {other:?}");
            return;
        }
    }
    let Some(conf) = common::file_pcm_config("alsa_file_pcm", dir.path(), "lecterntest", &fifo) else {
        return;
    };
    // Before any alsa-lib or GStreamer call in this process (see the module doc).
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
    if !common::have_elements(
        "alsa_file_pcm",
        &["alsasrc", "videotestsrc", "x264enc", "level"],
    ) {
        return;
    }
    feed_fifo(&fifo);

    let settings = CaptureSettings {
        width: 160,
        height: 120,
        audio: AudioSource::Alsa {
            device: "lecterntest".into(),
        },
        encoder: EncoderChoice::Named("x264enc".into()),
        ..Default::default()
    };
    let (tx, collector) = common::collect(256);
    let (status, status_fn) = common::status_log();
    let cap = Capture::start(&settings, tx, status_fn).expect("start with the file PCM");
    std::thread::sleep(Duration::from_secs(2));
    let stats = cap.stop(Duration::from_secs(5)).expect("stop");
    let events = collector.handle.join().unwrap();
    eprintln!("stats: {stats}\nstatuses: {:?}", status.lock().unwrap());

    let levels = common::levels(&events);
    eprintln!(
        "{} level readings: {:?}",
        levels.len(),
        &levels[..levels.len().min(5)]
    );
    // 2 s at 100 ms; a clock racing ahead (regular infile) gives far fewer or far more.
    assert!(
        (12..=25).contains(&levels.len()),
        "{} level readings in 2 s",
        levels.len()
    );
    // The first two settle; the last may be the level element's reading at EOS, which on a
    // loaded machine can cover an interval with no samples (-350 dB: seen once in CI at load 6).
    for (peak, rms) in &levels[2..levels.len() - 1] {
        assert!(
            (-14.0..=-10.0).contains(peak),
            "peak {peak} dB, expected ≈ −12 dB from the tone (not silence)"
        );
        assert!(
            (-17.0..=-13.0).contains(rms),
            "rms {rms} dB, expected ≈ −15 dB"
        );
    }
    assert!(
        stats.frames_in >= 50,
        "video stalled next to the ALSA source: {stats}"
    );
}
