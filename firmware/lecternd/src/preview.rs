//! The confidence preview (issue 11): `lectern preview` (the `preview` control request) opens the
//! running capture's preview branch for [`OPEN_FOR`] and answers with the newest JPEG and the
//! audio meter; the main loop closes the branch again once nobody has asked for that long, so a
//! box nobody looks at encodes no JPEG at all. The branch never touches the recording
//! (`lectern_capture`: a leaky queue and a valve off the tee).

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long one request keeps the preview open.
pub(crate) const OPEN_FOR: Duration = Duration::from_secs(15);

/// A JPEG older than this is not the picture now (the branch makes about one a second).
const FRESH: Duration = Duration::from_millis(2_500);

impl crate::Daemon {
    /// The `preview` request.
    pub(crate) fn preview_request(&mut self) -> Result<Value, String> {
        let Some(session) = self.session.as_ref() else {
            return Err("not recording: the preview comes from a running capture".into());
        };
        if self.config.capture.preview_width == 0 {
            return Err("the preview is off (capture.preview_width = 0)".into());
        }
        session.want_preview(true);
        self.preview_until = Some(Instant::now() + OPEN_FOR);
        let meter = session.signals().last_level().map(|(peak, rms)| json!({ "peak_db": peak, "rms_db": rms }));
        let recording_id = self.recorder.state().active().map(|a| a.spec.id.clone());
        Ok(match session.preview().filter(|(_, age)| *age <= FRESH) {
            Some((jpeg, age)) => json!({
                "recording_id": recording_id,
                "pending": false,
                "age_ms": age.as_millis() as u64,
                "jpeg_base64": base64::engine::general_purpose::STANDARD.encode(jpeg),
                "meter": meter,
            }),
            None => json!({ "recording_id": recording_id, "pending": true, "meter": meter }),
        })
    }

    /// One main-loop turn: closes the preview once nobody asked for [`OPEN_FOR`].
    pub(crate) fn preview_turn(&mut self) {
        if self.preview_until.is_some_and(|t| Instant::now() >= t) {
            self.preview_until = None;
            if let Some(s) = self.session.as_ref() {
                s.want_preview(false);
            }
        }
    }
}
