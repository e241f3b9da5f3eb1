//! Counters a running capture exposes, and the frame-drop arithmetic on them.

use std::fmt;
use std::time::Duration;

/// A snapshot of a capture's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Video frames that reached the encoder's sink pad.
    pub frames_in: u64,
    /// Frames the source should have delivered in `running_time` at the configured rate.
    pub frames_expected: u64,
    /// `frames_expected − frames_in`, with one frame of tolerance for the one in flight.
    pub dropped: u64,
    /// Pipeline running time when the snapshot was taken.
    pub running_time: Duration,
    /// `MediaEvent::Data` chunks delivered, and their bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// Chunks that started at a keyframe.
    pub keyframes: u64,
    /// Chunks discarded because the consumer stalled while the pipeline was being torn down.
    pub chunks_dropped: u64,
    /// Level readings discarded because the media channel was full (the bus thread never blocks).
    pub levels_dropped: u64,
    /// Frames the analysis branch delivered as `MediaEvent::Luma`, and those it could not
    /// because the media channel was full.
    pub analysed: u64,
    pub analysis_dropped: u64,
    /// Muxer output before the first keyframe, which nothing could decode (see `chunker`).
    pub leading_bytes_discarded: u64,
    /// Keyframe chunks that got copies of PAT/PMT put at their head.
    pub psi_injected: u64,
}

/// Frames expected after `running_time` at `fps`: the frame at t = 0 counts, so
/// `floor(t × fps)` frames have fully elapsed and one more may be in flight.
pub fn frames_expected(running_time: Duration, fps: u32) -> u64 {
    (running_time.as_nanos() * u128::from(fps) / 1_000_000_000) as u64
}

/// Dropped frames, treating a difference of one as the frame currently in flight.
pub fn dropped(expected: u64, frames_in: u64) -> u64 {
    let missing = expected.saturating_sub(frames_in);
    if missing <= 1 {
        0
    } else {
        missing
    }
}

impl fmt::Display for CaptureStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames in / {} expected ({} dropped) over {:.1}s, {} chunks ({} keyframes, {} bytes), {} chunks and {} levels dropped, {} frames analysed ({} dropped), {} leading bytes discarded, PAT/PMT injected {} times",
            self.frames_in,
            self.frames_expected,
            self.dropped,
            self.running_time.as_secs_f64(),
            self.chunks,
            self.keyframes,
            self.bytes,
            self.chunks_dropped,
            self.levels_dropped,
            self.analysed,
            self.analysis_dropped,
            self.leading_bytes_discarded,
            self.psi_injected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_arithmetic() {
        for (rt_ms, fps, frames_in, expect_expected, expect_dropped) in [
            (0, 30, 0, 0, 0),
            (1000, 30, 30, 30, 0),
            (1000, 30, 29, 30, 0),
            (1000, 30, 31, 30, 0),
            (1000, 30, 25, 30, 5),
            (2033, 30, 60, 60, 0),
        ] {
            let e = frames_expected(Duration::from_millis(rt_ms), fps);
            assert_eq!(e, expect_expected, "expected at {rt_ms} ms");
            assert_eq!(
                dropped(e, frames_in),
                expect_dropped,
                "dropped at {rt_ms} ms, {frames_in} in"
            );
        }
    }
}
