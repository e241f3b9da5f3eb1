//! The V4L2 camera before each recording (issue 11): `lectern_capture::v4l2` does the ioctls;
//! this room resolves a stable camera identity (`video_device = "bus:…"` or `"card:…"`) to the
//! node it has today, says when the camera cannot do the configured size (naming what it can),
//! sets the configured controls (`capture.camera_controls`, `capture.power_line_hz`) and reads
//! them back, and keeps the report for `status.devices.camera_setup`. Nothing here stops a
//! recording: a problem is logged and shown, and the pipeline's own start decides.

use std::path::PathBuf;

use lectern_capture::v4l2::{offers, resolve, Device};
use lectern_capture::{CaptureSettings, VideoSource};
use lectern_config::{CaptureConfig, VideoInput};
use serde_json::{json, Map, Value};

#[derive(Debug, Default)]
pub(crate) struct CameraState {
    pub last: Option<Value>,
}

impl CameraState {
    pub fn before_recording(&mut self, cfg: &CaptureConfig, settings: &mut CaptureSettings, recording_id: &str) {
        let VideoInput::V4l2 { device: spec } = &cfg.video else { return };
        let spec = spec.display().to_string();
        let mut errors: Vec<String> = Vec::new();
        let path = match resolve(&spec) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                PathBuf::from(&spec)
            }
        };
        if spec.starts_with("bus:") || spec.starts_with("card:") {
            log::info!(target: "lecternd", "recording {recording_id}: camera {spec} is {}", path.display());
        }
        settings.video = VideoSource::V4l2 { device: path.clone() };
        let mut report = json!({ "spec": spec, "device": path.display().to_string() });
        match Device::open(&path).and_then(|d| d.caps().map(|c| (d, c))) {
            Err(e) => errors.push(e),
            Ok((dev, caps)) => {
                report["card"] = json!(caps.card);
                report["driver"] = json!(caps.driver);
                report["bus_info"] = json!(caps.bus_info);
                if !caps.video_capture {
                    errors.push(format!("{} captures no video (a UVC camera's metadata node?)", path.display()));
                }
                let sizes = dev.frame_sizes();
                let ok = offers(&sizes, cfg.width, cfg.height);
                if ok == Some(false) {
                    errors.push(format!("camera {} cannot do {}x{}; it can do: {}", caps.card, cfg.width, cfg.height, sizes.join(", ")));
                }
                report["size_ok"] = json!(ok);
                report["sizes"] = json!(sizes);
                report["controls"] = Value::Object(set_controls(&dev, &cfg.camera_controls, &mut errors));
            }
        }
        for e in &errors {
            log::error!(target: "lecternd", "recording {recording_id}: camera: {e}");
        }
        report["errors"] = json!(errors);
        report["recording_id"] = json!(recording_id);
        self.last = Some(report);
    }
}

/// Sets each wanted control and reads it back: `{key: {wanted, now}}`.
fn set_controls(dev: &Device, wanted: &std::collections::BTreeMap<String, i64>, errors: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    if wanted.is_empty() {
        return out;
    }
    let have = dev.controls();
    for (key, &value) in wanted {
        let Some(c) = have.iter().find(|c| &c.key == key) else {
            let keys: Vec<&str> = have.iter().map(|c| c.key.as_str()).collect();
            errors.push(format!("no control {key:?} on this camera; it has: {}", keys.join(", ")));
            continue;
        };
        if value < i64::from(c.min) || value > i64::from(c.max) {
            errors.push(format!("control {key}: {value} is outside {}..={}", c.min, c.max));
            continue;
        }
        if let Err(e) = dev.set(c.id, value as i32) {
            errors.push(format!("control {key}: setting {value} failed: {e}"));
        }
        let now = dev.get(c.id).ok();
        if now.is_some_and(|n| i64::from(n) != value) {
            errors.push(format!("control {key}: set to {value}, reads back {}", now.unwrap_or_default()));
        }
        out.insert(key.clone(), json!({ "wanted": value, "now": now }));
    }
    out
}
