//! MPEG-TS knowledge the journal needs, and nothing more: finding the longest
//! prefix of whole 188-byte packets that each start with the sync byte 0x47,
//! hashing that prefix, and reading the 33-bit 90 kHz PTS from PES headers so
//! that a segment recovered after a crash still gets a duration. The parser
//! ([`TsScanner`]) is sans-IO and can be fed arbitrary byte slices; the file
//! helpers at the bottom are thin shells around it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Size of one transport stream packet.
pub const TS_PACKET_LEN: usize = 188;
/// First byte of every transport stream packet.
pub const TS_SYNC_BYTE: u8 = 0x47;

/// PTS values are 33-bit counters that wrap after about 26.5 hours.
const PTS_MODULUS: u64 = 1 << 33;

/// Converts a 90 kHz clock value to nanoseconds.
pub fn pts90k_to_ns(pts: u64) -> u64 {
    // 1e9 / 90_000 = 100_000 / 9; a 33-bit value times 1e5 fits easily in u64.
    pts * 100_000 / 9
}

/// Reads the PTS from a packet that starts a PES packet, if it has one.
///
/// Returns `None` for packets without `payload_unit_start_indicator`, for PSI
/// packets (PAT/PMT start with a pointer field, not a PES start code), for
/// stream ids that have no optional PES header, and for anything truncated.
pub fn pes_pts(packet: &[u8]) -> Option<u64> {
    if packet.len() < TS_PACKET_LEN || packet[0] != TS_SYNC_BYTE {
        return None;
    }
    let payload_unit_start = packet[1] & 0x40 != 0;
    if !payload_unit_start {
        return None;
    }
    let adaptation_field_control = (packet[3] >> 4) & 0x3;
    let mut offset = 4;
    match adaptation_field_control {
        0b01 => {}
        0b11 => offset += 1 + packet[4] as usize,
        _ => return None,
    }
    let pes = packet.get(offset..)?;
    if pes.len() < 14 || pes[0..3] != [0x00, 0x00, 0x01] {
        return None;
    }
    let stream_id = pes[3];
    // These stream ids carry no optional PES header and hence no PTS
    // (ISO/IEC 13818-1, table 2-21).
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return None;
    }
    // The optional header starts with the marker bits '10'.
    if pes[6] & 0xC0 != 0x80 || pes[7] & 0x80 == 0 {
        return None;
    }
    let p = &pes[9..14];
    let pts = (u64::from(p[0] >> 1) & 0x07) << 30
        | u64::from(p[1]) << 22
        | u64::from(p[2] >> 1) << 15
        | u64::from(p[3]) << 7
        | u64::from(p[4] >> 1);
    Some(pts)
}

/// Writes a PTS into the five PES header bytes the way a muxer does. Used by
/// tests and handy for tools that synthesise streams.
pub fn encode_pts(pts: u64) -> [u8; 5] {
    let pts = pts % PTS_MODULUS;
    [
        0x21 | (((pts >> 30) as u8 & 0x07) << 1),
        (pts >> 22) as u8,
        (((pts >> 15) as u8) << 1) | 1,
        (pts >> 7) as u8,
        ((pts as u8) << 1) | 1,
    ]
}

/// Result of scanning a transport stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TsScan {
    /// Bytes fed in.
    pub total_bytes: u64,
    /// Length of the longest prefix made of whole packets starting with 0x47.
    pub valid_bytes: u64,
    /// Packets in that prefix.
    pub packets: u64,
    /// Lowercase hex SHA-256 of the valid prefix.
    pub sha256_valid: String,
    /// Earliest PTS in the valid prefix (90 kHz, wrapped into 33 bits).
    pub first_pts_90k: Option<u64>,
    /// Span from the earliest to the latest PTS, in nanoseconds.
    pub pts_span_ns: Option<u64>,
}

impl TsScan {
    /// True if every byte belongs to a valid packet.
    pub fn is_complete(&self) -> bool {
        self.valid_bytes == self.total_bytes
    }
}

/// Incremental scanner: feed bytes in any slicing, then [`TsScanner::finish`].
///
/// Scanning stops at the first packet that does not start with 0x47 (the
/// rest of the stream is untrusted after that), and a trailing partial
/// packet never counts as valid.
#[derive(Default)]
pub struct TsScanner {
    total: u64,
    valid: u64,
    packets: u64,
    stopped: bool,
    partial: Vec<u8>,
    hasher: Sha256,
    /// First PTS seen; other PTS values are tracked as signed offsets from it
    /// so that audio/video interleaving, B-frame reordering and a 33-bit wrap
    /// all come out right.
    anchor: Option<u64>,
    min_delta: i64,
    max_delta: i64,
}

impl TsScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.stopped {
            return;
        }
        if !self.partial.is_empty() {
            let need = TS_PACKET_LEN - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < TS_PACKET_LEN {
                return;
            }
            let packet = std::mem::take(&mut self.partial);
            self.packet(&packet);
        }
        let mut chunks = data.chunks_exact(TS_PACKET_LEN);
        for packet in &mut chunks {
            if self.stopped {
                return;
            }
            self.packet(packet);
        }
        if !self.stopped {
            self.partial.extend_from_slice(chunks.remainder());
        }
    }

    fn packet(&mut self, packet: &[u8]) {
        if packet[0] != TS_SYNC_BYTE {
            self.stopped = true;
            return;
        }
        self.hasher.update(packet);
        self.valid += TS_PACKET_LEN as u64;
        self.packets += 1;
        if let Some(pts) = pes_pts(packet) {
            match self.anchor {
                None => self.anchor = Some(pts),
                Some(anchor) => {
                    let forward = (pts + PTS_MODULUS - anchor) % PTS_MODULUS;
                    let delta = if forward >= PTS_MODULUS / 2 {
                        forward as i64 - PTS_MODULUS as i64
                    } else {
                        forward as i64
                    };
                    self.min_delta = self.min_delta.min(delta);
                    self.max_delta = self.max_delta.max(delta);
                }
            }
        }
    }

    /// Finishes the scan.
    pub fn finish(self) -> TsScan {
        let first_pts_90k = self
            .anchor
            .map(|anchor| (anchor as i64 + self.min_delta).rem_euclid(PTS_MODULUS as i64) as u64);
        let pts_span_ns = self
            .anchor
            .map(|_| pts90k_to_ns((self.max_delta - self.min_delta) as u64));
        TsScan {
            total_bytes: self.total,
            valid_bytes: self.valid,
            packets: self.packets,
            sha256_valid: hex(&self.hasher.finalize()),
            first_pts_90k,
            pts_span_ns,
        }
    }
}

/// Lowercase hex encoding.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Reads a file through a [`TsScanner`].
pub fn verify_ts_file(path: &Path) -> Result<TsScan> {
    let mut file = File::open(path).io("open segment for scan", path)?;
    let mut scanner = TsScanner::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).io("read segment for scan", path)?;
        if n == 0 {
            break;
        }
        scanner.feed(&buf[..n]);
    }
    Ok(scanner.finish())
}

/// Lowercase hex SHA-256 of a whole file, as stored in the `sha256` column.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).io("open file for checksum", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).io("read file for checksum", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}
