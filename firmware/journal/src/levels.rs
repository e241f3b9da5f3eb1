//! Per-segment audio level aggregation. Peaks combine by maximum; RMS values
//! combine as a power mean (dB → power, arithmetic mean, → dB), because
//! averaging decibels directly would under-weight loud passages. Pure
//! arithmetic, no I/O.

/// Values are clamped into this range before they reach SQLite or JSON,
/// because digital silence is −∞ dB and neither store can hold infinities.
pub const LEVEL_FLOOR_DB: f64 = -150.0;
/// Upper clamp, only to keep garbage from a broken level element bounded.
pub const LEVEL_CEIL_DB: f64 = 150.0;

/// Accumulates level messages for one segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelAccumulator {
    peak_db: Option<f64>,
    power_sum: f64,
    count: u64,
}

impl LevelAccumulator {
    /// Adds one level message. NaN components are ignored, since they carry
    /// no information and would poison the aggregate.
    pub fn push(&mut self, peak_db: f64, rms_db: f64) {
        if !peak_db.is_nan() {
            let peak = peak_db.clamp(LEVEL_FLOOR_DB, LEVEL_CEIL_DB);
            self.peak_db = Some(self.peak_db.map_or(peak, |p| p.max(peak)));
        }
        if !rms_db.is_nan() {
            let rms = rms_db.clamp(LEVEL_FLOOR_DB, LEVEL_CEIL_DB);
            self.power_sum += 10f64.powf(rms / 10.0);
            self.count += 1;
        }
    }

    /// Loudest peak, if any level was pushed.
    pub fn peak_db(&self) -> Option<f64> {
        self.peak_db
    }

    /// Power-mean RMS, if any level was pushed.
    pub fn rms_db(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let mean = self.power_sum / self.count as f64;
        Some((10.0 * mean.log10()).clamp(LEVEL_FLOOR_DB, LEVEL_CEIL_DB))
    }
}
