//! Helpers that build synthetic recordings for tests and `cargo xtask
//! bench-stitch`: shifting every PTS, DTS and PCR of a transport stream (to
//! give parts arbitrary clock bases, across the 33-bit wrap, or to repeat a
//! clip end to end), and cutting a stream into segments at video keyframes
//! with the latest PAT and PMT copied in front, as the capture chunker does;
//! and asking `ffprobe` what a media file holds. Nothing here is used by
//! [`crate::stitch`].

use std::path::Path;
use std::process::Command;

use crate::ts::PACKET_LEN;

const WRAP: u64 = 1 << 33;

/// Adds `delta` ticks (90 kHz, modulo 2^33) to every PTS, DTS and PCR base
/// in `ts`, which must be whole 188-byte packets.
pub fn retime(ts: &mut [u8], delta: i64) {
    let add = |v: u64| (v as i64 + delta).rem_euclid(WRAP as i64) as u64;
    for pkt in ts.chunks_exact_mut(PACKET_LEN) {
        let afc = (pkt[3] >> 4) & 3;
        let mut payload = 4;
        if afc & 2 != 0 {
            let af_len = pkt[4] as usize;
            if af_len > 0 && pkt[5] & 0x10 != 0 {
                let b = &mut pkt[6..12];
                let base = (b[0] as u64) << 25
                    | (b[1] as u64) << 17
                    | (b[2] as u64) << 9
                    | (b[3] as u64) << 1
                    | (b[4] >> 7) as u64;
                let base = add(base);
                b[0] = (base >> 25) as u8;
                b[1] = (base >> 17) as u8;
                b[2] = (base >> 9) as u8;
                b[3] = (base >> 1) as u8;
                b[4] = (b[4] & 0x7f) | ((base & 1) as u8) << 7;
            }
            payload = 5 + af_len;
        }
        let pusi = pkt[1] & 0x40 != 0;
        if !pusi || afc & 1 == 0 || payload + 19 > PACKET_LEN {
            continue;
        }
        let pes = &mut pkt[payload..];
        if pes[0..3] != [0, 0, 1] || pes[3] < 0xbc {
            continue;
        }
        let flags = pes[7] >> 6;
        for (present, at) in [(flags & 2 != 0, 9), (flags == 3, 14)] {
            if present {
                let b = &mut pes[at..at + 5];
                let v = ((b[0] >> 1) as u64 & 7) << 30
                    | (b[1] as u64) << 22
                    | ((b[2] >> 1) as u64) << 15
                    | (b[3] as u64) << 7
                    | (b[4] >> 1) as u64;
                let v = add(v);
                b[0] = (b[0] & 0xf1) | (((v >> 30) as u8 & 7) << 1);
                b[1] = (v >> 22) as u8;
                b[2] = ((v >> 14) as u8 & 0xfe) | 1;
                b[3] = (v >> 7) as u8;
                b[4] = ((v << 1) as u8) | 1;
            }
        }
    }
}

fn pid(pkt: &[u8]) -> u16 {
    u16::from_be_bytes([pkt[1] & 0x1f, pkt[2]])
}

fn payload(pkt: &[u8]) -> &[u8] {
    match (pkt[3] >> 4) & 3 {
        0b01 => &pkt[4..],
        0b11 => pkt.get(5 + pkt[4] as usize..).unwrap_or(&[]),
        _ => &[],
    }
}

/// Splits a transport stream (whole packets) into segments of at least
/// `min_packets` packets each, cutting only where a video PES with an SPS or
/// IDR slice starts, and puts copies of the latest PAT and PMT in front of
/// each segment after the first. Returns the segments' bytes.
pub fn split_at_keyframes(ts: &[u8], min_packets: usize) -> Vec<Vec<u8>> {
    let mut pmt_pid = None;
    let mut video_pid = None;
    let mut pat: Option<&[u8]> = None;
    let mut pmt: Option<&[u8]> = None;
    let mut segments: Vec<Vec<u8>> = vec![Vec::new()];
    let mut in_segment = 0usize;
    for pkt in ts.chunks_exact(PACKET_LEN) {
        let p = pid(pkt);
        let pusi = pkt[1] & 0x40 != 0;
        if p == 0 && pusi {
            pat = Some(pkt);
            let sec = &payload(pkt)[1..];
            pmt_pid = Some(u16::from_be_bytes([sec[10] & 0x1f, sec[11]]));
        } else if Some(p) == pmt_pid && pusi {
            pmt = Some(pkt);
            let sec = &payload(pkt)[1..];
            let info = u16::from_be_bytes([sec[10] & 0x0f, sec[11]]) as usize;
            let mut i = 12 + info;
            let end = 3 + u16::from_be_bytes([sec[1] & 0x0f, sec[2]]) as usize - 4;
            while i + 5 <= end {
                if sec[i] == 0x1b {
                    video_pid = Some(u16::from_be_bytes([sec[i + 1] & 0x1f, sec[i + 2]]));
                }
                i += 5 + (u16::from_be_bytes([sec[i + 3] & 0x0f, sec[i + 4]]) as usize);
            }
        } else if Some(p) == video_pid
            && pusi
            && in_segment >= min_packets
            && starts_keyframe(payload(pkt))
        {
            let mut next = Vec::new();
            for psi in [pat, pmt].into_iter().flatten() {
                next.extend_from_slice(psi);
            }
            segments.push(next);
            in_segment = 0;
        }
        segments
            .last_mut()
            .expect("one segment")
            .extend_from_slice(pkt);
        in_segment += 1;
    }
    segments
}

/// Whether the first packet of a video PES shows an SPS or IDR NAL unit.
fn starts_keyframe(pes: &[u8]) -> bool {
    if pes.len() < 9 {
        return false;
    }
    let es = pes.get(9 + pes[8] as usize..).unwrap_or(&[]);
    es.windows(4)
        .any(|w| w[0..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7))
}

/// What `ffprobe -count_packets` reports about a media file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub video_packets: u64,
    pub audio_packets: u64,
    /// Container start time, seconds.
    pub start_s: f64,
    /// Container duration, seconds.
    pub duration_s: f64,
}

/// Runs `ffprobe -count_packets` (which demuxes the whole file) on `path`.
pub fn ffprobe(path: &Path) -> std::io::Result<Probe> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-of",
            "default",
            "-show_entries",
        ])
        .arg("stream=codec_type,nb_read_packets:format=start_time,duration")
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut p = Probe {
        video_packets: 0,
        audio_packets: 0,
        start_s: f64::NAN,
        duration_s: f64::NAN,
    };
    let mut kind = String::new();
    // Transport streams list their streams twice, also inside [PROGRAM].
    let mut in_program = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line {
            "[PROGRAM]" => in_program = true,
            "[/PROGRAM]" => in_program = false,
            _ => {}
        }
        let Some((key, value)) = line.split_once('=').filter(|_| !in_program) else {
            continue;
        };
        match key {
            "codec_type" => kind = value.to_owned(),
            "nb_read_packets" => {
                let n: u64 = value.parse().unwrap_or(0);
                match kind.as_str() {
                    "video" => p.video_packets += n,
                    "audio" => p.audio_packets += n,
                    _ => {}
                }
            }
            "start_time" => p.start_s = value.parse().unwrap_or(f64::NAN),
            "duration" => p.duration_s = value.parse().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retime_wraps_pts_and_pcr() {
        // One video PES start packet with a PCR and PTS+DTS.
        let mut pkt = vec![0xffu8; PACKET_LEN];
        pkt[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x30]);
        pkt[4] = 7; // adaptation field: flags + PCR
        pkt[5] = 0x10;
        let pcr_base: u64 = WRAP - 100;
        pkt[6] = (pcr_base >> 25) as u8;
        pkt[7] = (pcr_base >> 17) as u8;
        pkt[8] = (pcr_base >> 9) as u8;
        pkt[9] = (pcr_base >> 1) as u8;
        pkt[10] = ((pcr_base & 1) << 7) as u8 | 0x7e;
        pkt[11] = 0;
        let pes = [0, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10];
        pkt[12..21].copy_from_slice(&pes);
        let ts = |v: u64, tag: u8| {
            [
                tag | ((v >> 29) as u8 & 0x0e) | 1,
                (v >> 22) as u8,
                (v >> 14) as u8 | 1,
                (v >> 7) as u8,
                (v << 1) as u8 | 1,
            ]
        };
        pkt[21..26].copy_from_slice(&ts(WRAP - 50, 0x30));
        pkt[26..31].copy_from_slice(&ts(WRAP - 60, 0x10));
        retime(&mut pkt, 1000);
        let b = &pkt[6..11];
        let pcr = (b[0] as u64) << 25
            | (b[1] as u64) << 17
            | (b[2] as u64) << 9
            | (b[3] as u64) << 1
            | (b[4] >> 7) as u64;
        assert_eq!(pcr, 900);
        assert_eq!(pkt[10] & 0x7e, 0x7e, "reserved bits kept");
        let pos = crate::Pos {
            file: "x".into(),
            offset: 0,
        };
        let seen: Vec<u64> = [21, 26]
            .iter()
            .map(|&at| crate::ts::read_ts(&pkt[at..], &pos).unwrap())
            .collect();
        assert_eq!(seen, vec![950, 940]);
        assert_eq!(pkt[21] & 0xf0, 0x30, "PTS prefix kept");
    }
}
