//! AAC ADTS headers: the frame length that splits a PES into AAC frames and
//! the profile, sample rate and channel layout that become the MP4 `esds`
//! AudioSpecificConfig. The MP4 sample is the raw frame after the header.

use crate::error::{malformed, Pos, Result};

const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Samples per AAC frame (AAC-LC; ADTS has no way to say 960).
pub const FRAME_SAMPLES: u32 = 1024;

/// The stream configuration an ADTS header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// MPEG-4 audio object type minus one (ADTS `profile`).
    pub profile: u8,
    pub rate_index: u8,
    pub channels: u8,
}

impl Config {
    pub fn sample_rate(&self) -> u32 {
        RATES[self.rate_index as usize]
    }

    /// The two-byte AudioSpecificConfig for `esds`.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        let aot = (self.profile + 1) as u16;
        let v = (aot << 11) | ((self.rate_index as u16) << 7) | ((self.channels as u16) << 3);
        v.to_be_bytes()
    }
}

/// One ADTS frame within a buffer.
pub struct Frame {
    pub config: Config,
    /// Header length (7, or 9 with CRC).
    pub header_len: usize,
    /// Whole frame length including the header.
    pub frame_len: usize,
}

/// Parses the ADTS header at the start of `b`. Returns `Ok(None)` when `b`
/// holds only part of a frame (a torn tail).
pub fn parse(b: &[u8], pos: &Pos) -> Result<Option<Frame>> {
    if b.len() < 7 {
        return Ok(None);
    }
    if b[0] != 0xff || b[1] & 0xf6 != 0xf0 {
        return Err(malformed(pos, "audio PES does not hold ADTS frames"));
    }
    let protection_absent = b[1] & 1 == 1;
    let profile = b[2] >> 6;
    let rate_index = (b[2] >> 2) & 0x0f;
    let channels = ((b[2] & 1) << 2) | (b[3] >> 6);
    let frame_len = (((b[3] & 3) as usize) << 11) | ((b[4] as usize) << 3) | (b[5] >> 5) as usize;
    let blocks = (b[6] & 3) + 1;
    let header_len = if protection_absent { 7 } else { 9 };
    if rate_index as usize >= RATES.len() || channels == 0 || frame_len < header_len {
        return Err(malformed(pos, "invalid ADTS header"));
    }
    if blocks != 1 {
        return Err(malformed(pos, "ADTS frame with several raw data blocks"));
    }
    if b.len() < frame_len {
        return Ok(None);
    }
    Ok(Some(Frame {
        config: Config {
            profile,
            rate_index,
            channels,
        },
        header_len,
        frame_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_asc() {
        // AAC-LC, 48 kHz, stereo, 10-byte frame.
        let frame = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 1, 2, 3];
        let pos = Pos {
            file: "x".into(),
            offset: 0,
        };
        let f = parse(&frame, &pos).unwrap().unwrap();
        assert_eq!(f.frame_len, 10);
        assert_eq!(f.header_len, 7);
        assert_eq!(f.config.sample_rate(), 48000);
        assert_eq!(f.config.channels, 2);
        assert_eq!(f.config.audio_specific_config(), [0x11, 0x90]);
        assert!(parse(&frame[..9], &pos).unwrap().is_none());
        assert!(parse(&[0x47; 10], &pos).is_err());
    }
}
