//! Turns the `level` element's per-channel dB arrays into one meter reading (sans-IO).

/// Peak is the loudest channel; RMS is the power mean over channels, so one silent channel of a
/// stereo mic lowers the reading by 3 dB rather than dragging it to −∞.
pub fn combine(peaks_db: &[f64], rms_db: &[f64]) -> Option<(f64, f64)> {
    if peaks_db.is_empty() || rms_db.is_empty() {
        return None;
    }
    let peak = peaks_db.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean_power =
        rms_db.iter().map(|db| 10f64.powf(db / 10.0)).sum::<f64>() / rms_db.len() as f64;
    Some((peak, 10.0 * mean_power.log10()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peaks: &[f64], rms: &[f64], expect: Option<(f64, f64)>) {
        let got = combine(peaks, rms);
        match (got, expect) {
            (None, None) => {}
            (Some((p, r)), Some((ep, er))) => {
                assert!((p - ep).abs() < 1e-9 || (p == ep), "peak {p} != {ep}");
                assert!((r - er).abs() < 1e-6 || (r == er), "rms {r} != {er}");
            }
            _ => panic!("{got:?} != {expect:?}"),
        }
    }

    #[test]
    fn combine_cases() {
        check(&[], &[], None);
        check(&[-6.0], &[-9.0], Some((-6.0, -9.0)));
        check(&[-6.0, -3.0], &[-10.0, -10.0], Some((-3.0, -10.0)));
        // One silent channel halves the power: −3 dB.
        check(
            &[-6.0, f64::NEG_INFINITY],
            &[-10.0, f64::NEG_INFINITY],
            Some((-6.0, -10.0 - 10.0 * 2f64.log10())),
        );
        check(
            &[f64::NEG_INFINITY],
            &[f64::NEG_INFINITY],
            Some((f64::NEG_INFINITY, f64::NEG_INFINITY)),
        );
    }
}
