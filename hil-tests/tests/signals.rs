//! Signal alarms on the real daemon (sim board): a mic that goes silent raises `silent_mic`
//! within seconds and clears it when sound returns; a black camera raises `black_picture`. Both
//! show in `status` and the log, the part's report is logged when it ends, and the stitched
//! recording's manifest carries them as `quality`.
//!
//! The silent mic is an ALSA PCM the test controls: alsa-lib's `file` plugin over the `null` PCM
//! reading a FIFO that this test fills at real-time pace with silence or a tone (how and why:
//! firmware/capture/tests/alsa_file_pcm.rs; `lectern_hil_tests::file_pcm`). The config's own
//! test source is a steady sine, so it could not go quiet and come back within one recording.
//! `ALSA_CONFIG_PATH` reaches only the daemon (`Daemon::start_in_env`).
//!
//! Seen while writing this test (1 run in 3, load average about 2, the daemon inheriting
//! `nice -n 19` from the test): `no_video` raised for 1.8 s with 0 frames dropped by the
//! recording, when it came from the analysis branch, which is built to lose frames rather than
//! delay the recording. It now follows the frames entering the encoder, and the test asserts
//! that only the mic alarm is raised.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_control::Request;
use lectern_hil_tests::{file_pcm, wait_until, Daemon, SMALL};
use serde_json::Value;

const RATE: usize = 48_000;

/// Feeds S16LE mono into `fifo` at real-time pace: a −12 dBFS 440 Hz tone while `loud`, digital
/// silence otherwise; re-opens the FIFO whenever the reader goes away.
fn feed_fifo(fifo: &Path, loud: Arc<AtomicBool>) {
    let fifo = fifo.to_path_buf();
    std::thread::spawn(move || {
        let period = RATE / 100;
        let mut phase = 0usize;
        loop {
            let Ok(mut f) = OpenOptions::new().write(true).open(&fifo) else { return };
            let t0 = Instant::now();
            let mut written = 0usize;
            loop {
                let amplitude = if loud.load(Ordering::SeqCst) { 0.25f32 } else { 0.0 };
                let mut buf = Vec::with_capacity(period * 2);
                for i in 0..period {
                    let t = (phase + i) as f32 / RATE as f32;
                    let v = amplitude * (2.0 * std::f32::consts::PI * 440.0 * t).sin();
                    buf.extend_from_slice(&((v * 32767.0).round() as i16).to_le_bytes());
                }
                phase = (phase + period) % RATE;
                if f.write_all(&buf).is_err() {
                    break;
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

fn alarms(d: &Daemon) -> Vec<String> {
    d.status()["signals"]["alarms"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["alarm"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The `quality` of the recording's manifest, once it is stitched.
fn quality(d: &Daemon, id: &str) -> Value {
    let mut stitch = Value::Null;
    wait_until("the stitch", Duration::from_secs(30), || {
        let list = d.ctl(Request::Recordings).unwrap();
        stitch = list["recordings"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["stitch"].clone();
        stitch["state"] == "done"
    })
    .unwrap_or_else(|e| panic!("{e}: {stitch}\n{}", d.log_text()));
    let manifest: Value = serde_json::from_slice(&std::fs::read(d.media().join(stitch["manifest"].as_str().unwrap())).unwrap()).unwrap();
    manifest["quality"].clone()
}

fn count(d: &Daemon, needle: &str) -> usize {
    d.log_text().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_silent_mic_raises_the_alarm_within_seconds_and_it_clears_when_sound_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("mic.s16");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let Some(conf) = file_pcm(dir.path(), "lectern_hil_mic", &fifo) else { return };
    let loud = Arc::new(AtomicBool::new(false));
    feed_fifo(&fifo, loud.clone());
    // Short holds so the test takes seconds; the rules are the same as with Extron's 10 s.
    let extra = format!(
        "{SMALL}audio = \"alsa\"\naudio_device = \"lectern_hil_mic\"\nprobe_interval_s = 0\n[signals]\nsilence_hold_s = 2\nclear_hold_s = 1\n"
    );
    let mut d = Daemon::start_in_env(dir, &extra, &[("ALSA_CONFIG_PATH", &conf)]).unwrap();
    assert_eq!(d.status()["signals"], serde_json::json!({ "enabled": true, "alarms": [], "report": [] }), "idle: nothing");

    let started = Instant::now();
    let id = d.ctl(Request::RecordStart { title: None }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    wait_until("silent_mic raised", Duration::from_secs(15), || alarms(&d).contains(&"silent_mic".to_owned())).unwrap();
    let raised_after = started.elapsed();
    eprintln!("silent_mic raised {raised_after:?} after the start");
    assert!(raised_after >= Duration::from_secs(2), "not before the hold: {raised_after:?}");
    // The ball moves and has something lit in it, and the camera delivers: only the mic.
    assert_eq!(alarms(&d), ["silent_mic"], "{}", d.status());
    assert_eq!(count(&d, &format!("recording {id}: alarm silent_mic raised")), 1, "{}", d.log_text());
    // The LED says so within a main-loop turn; a tally lamp would stay lit.
    wait_until("the LED's recording_alarm", Duration::from_secs(3), || d.status()["led"] == "recording_alarm").unwrap();

    loud.store(true, Ordering::SeqCst);
    let back = Instant::now();
    wait_until("silent_mic cleared", Duration::from_secs(10), || !alarms(&d).contains(&"silent_mic".to_owned())).unwrap();
    eprintln!("silent_mic cleared {:?} after sound returned", back.elapsed());
    wait_until("the LED back to recording", Duration::from_secs(3), || d.status()["led"] == "recording").unwrap();
    let report = d.status()["signals"]["report"].clone();
    let mic: Vec<&Value> = report.as_array().unwrap().iter().filter(|s| s["alarm"] == "silent_mic").collect();
    assert_eq!((mic.len(), report.as_array().unwrap().len()), (1, 1), "{report}");
    assert!(mic[0]["to_s"].as_f64().unwrap() > mic[0]["from_s"].as_f64().unwrap(), "{report}");
    // The tone keeps it clear: no flapping.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!alarms(&d).contains(&"silent_mic".to_owned()));
    assert_eq!(count(&d, "alarm silent_mic cleared"), 1, "{}", d.log_text());
    assert_eq!(count(&d, "alarm silent_mic raised"), 1, "{}", d.log_text());

    d.ctl(Request::RecordStop).unwrap();
    wait_until("the part's report logged", Duration::from_secs(10), || count(&d, &format!("recording {id}: signal report: silent_mic")) == 1).unwrap();
    assert_eq!(d.status()["signals"]["alarms"], Value::Array(vec![]), "idle again");
    let q = quality(&d, &id);
    assert_eq!((q["verdict"].as_str(), q["stretches"].as_array().map(Vec::len)), (Some("flagged"), Some(1)), "{q}");
    // `lectern recordings`: the verdict per recording, in JSON and in its quality column.
    let listed = d.ctl(Request::Recordings).unwrap();
    let r = listed["recordings"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap().clone();
    assert_eq!(r["quality"], serde_json::json!({ "verdict": "flagged", "alarms": ["silent_mic"] }), "{r}");
    let table = d.cli(&["recordings"]).unwrap();
    assert!(table.lines().any(|l| l.starts_with(&id) && l.split_whitespace().nth(2) == Some("flagged")), "{table}");
    assert_eq!(q["stretches"][0]["alarm"], "silent_mic", "{q}");
    let lasted = q["stretches"][0]["duration_s"].as_f64().unwrap();
    assert!((1.5..15.0).contains(&lasted), "silent from the start until the tone: {q}");
    assert!(d.terminate().unwrap().success());
}

#[test]
fn a_still_picture_raises_frozen_picture_after_its_hold() {
    // Solid white scrolled is the same frame every time: the fingerprint never changes.
    let mut d = Daemon::start(&format!("{SMALL}video_pattern = \"white\"\n[signals]\nfrozen_hold_s = 2\n")).unwrap();
    let started = Instant::now();
    let id = d.ctl(Request::RecordStart { title: None }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    wait_until("frozen_picture raised", Duration::from_secs(15), || alarms(&d).contains(&"frozen_picture".to_owned())).unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "not before the hold");
    assert_eq!(alarms(&d), ["frozen_picture"], "white is not black, and the tone is loud: {}", d.status());
    assert_eq!(count(&d, &format!("recording {id}: alarm frozen_picture raised")), 1, "{}", d.log_text());
    d.ctl(Request::RecordStop).unwrap();
    assert_eq!(quality(&d, &id)["stretches"][0]["alarm"], "frozen_picture");
    assert!(d.terminate().unwrap().success());
}

#[test]
fn a_black_camera_raises_black_picture_and_not_silent_mic() {
    let mut d = Daemon::start(&format!("{SMALL}video_pattern = \"black\"\n[signals]\nblack_hold_s = 1\n")).unwrap();
    let id = d.ctl(Request::RecordStart { title: None }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    wait_until("black_picture raised", Duration::from_secs(15), || alarms(&d).contains(&"black_picture".to_owned())).unwrap();
    // The test tone is loud, and the frozen hold (30 s) has not passed.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(alarms(&d), ["black_picture"], "{}", d.status());
    assert_eq!(count(&d, &format!("recording {id}: alarm black_picture raised")), 1, "{}", d.log_text());
    d.ctl(Request::RecordStop).unwrap();
    wait_until("the part's report logged", Duration::from_secs(10), || count(&d, "signal report: black_picture from") == 1).unwrap();
    // Black to the end: the stretch ends with the part.
    let q = quality(&d, &id);
    assert_eq!((q["verdict"].as_str(), q["stretches"][0]["alarm"].as_str()), (Some("flagged"), Some("black_picture")), "{q}");
    assert!(q["stretches"][0]["to"].is_string(), "{q}");
    assert!(d.terminate().unwrap().success());
}

#[test]
fn opencast_hears_of_a_raised_alarm_within_seconds_and_of_its_end() {
    // The agent configuration's `lectern.signals.alarms` (the shared Opencast double).
    use lectern_opencast_double::{Config as DoubleConfig, Double};
    let double = Double::start(DoubleConfig::digest("opencast_system_account", "CHANGE_ME")).unwrap();
    let mut d = Daemon::start(&format!(
        "{SMALL}video_pattern = \"black\"\n[signals]\nblack_hold_s = 1\n[opencast]\nurl = \"{}\"\nusername = \"opencast_system_account\"\npassword = \"CHANGE_ME\"\ncalendar_poll_s = 60\n",
        double.url()
    ))
    .unwrap();
    let shown = |want: &'static str| {
        double
            .wait_for(Duration::from_secs(15), |s| s.agent_configs.last().and_then(|c| c.properties.get("lectern.signals.alarms")).map(String::as_str) == Some(want))
            .unwrap_or_else(|| panic!("lectern.signals.alarms never {want:?}: {:?}", double.snapshot().agent_configs.last()))
    };
    shown("");
    d.ctl(Request::RecordStart { title: None }).unwrap();
    wait_until("black_picture raised", Duration::from_secs(15), || alarms(&d).contains(&"black_picture".to_owned())).unwrap();
    let raised = Instant::now();
    // Posted at once, not at the next calendar poll (60 s).
    shown("black_picture");
    assert!(raised.elapsed() < Duration::from_secs(10), "posted {:?} after the raise", raised.elapsed());
    d.ctl(Request::RecordStop).unwrap();
    shown("");
    assert!(d.terminate().unwrap().success());
}

#[test]
fn lectern_preview_saves_the_running_recordings_picture_and_prints_the_meter() {
    let mut d = Daemon::start(SMALL).unwrap();
    let out = d.dir.path().join("look.jpg");
    let idle = d.cli(&["preview", "--out", out.to_str().unwrap()]).unwrap_err().to_string();
    assert!(idle.contains("not recording"), "{idle}");
    let id = d.ctl(Request::RecordStart { title: None }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    wait_until("recording", Duration::from_secs(10), || d.status()["state"] == "recording").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let said = d.cli(&["preview", "--out", out.to_str().unwrap()]).unwrap();
    let jpeg = std::fs::read(&out).unwrap();
    assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]), "a whole JPEG ({} bytes)", jpeg.len());
    assert!(said.contains(&format!("of {id}")) && said.contains("audio:     peak"), "{said}");
    // A second look a moment later gets a newer picture while the preview stays open.
    let v = d.ctl(Request::Preview).unwrap();
    assert_eq!(v["pending"], false, "{v}");
    assert!(v["age_ms"].as_u64().unwrap() < 2_500, "{v}");
    d.ctl(Request::RecordStop).unwrap();
    let frames = d.status()["capture"].clone();
    assert_eq!(frames["frames_dropped"], 0, "the preview cost the recording no frame: {frames}");
    assert!(d.terminate().unwrap().success());
}
