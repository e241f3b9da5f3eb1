//! Turns the muxer's transport-stream buffers into chunks the journal can cut at (sans-IO).
//!
//! What mpegtsmux (GStreamer 1.22) actually emits, measured through our appsink: 188-byte
//! buffers; DELTA_UNIT on every one except the start of each video keyframe's PES (and the very
//! first PAT); PAT/PMT every 100 ms on their own schedule, *not* in front of keyframes; and a
//! few audio packets before the first PAT. Its `alignment=7` mode (1316-byte buffers) clears
//! all flags, losing the keyframe marks, so the muxer keeps its default alignment and we:
//!
//! 1. coalesce packets into chunks of at least `target` bytes, starting a new chunk at every
//!    keyframe buffer, so a keyframe chunk begins exactly where a segment may begin;
//! 2. put copies of the latest PAT and PMT at the head of each keyframe chunk that does not
//!    already start with a PAT, so a segment starting there decodes on its own (h264parse
//!    `config-interval=-1` already puts SPS/PPS in the IDR). The copies keep the continuity
//!    counters of the originals: in a standalone segment the next real PAT/PMT follows on
//!    without a gap, and in the full stream a copy reads as a duplicate, which demuxers drop;
//! 3. discard what precedes the first keyframe (no PAT/PMT precedes it, so nothing could
//!    decode it), counting the bytes.

use std::collections::HashMap;

/// MPEG-TS packet size.
pub const TS_PACKET: usize = 188;

/// One coalesced run of transport-stream packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// PTS of the first muxer buffer in the chunk, in nanoseconds.
    pub pts_ns: Option<u64>,
    /// True if the chunk starts at a keyframe boundary (and then begins with PAT/PMT).
    pub keyframe: bool,
}

/// Accumulates packets until `target` bytes or the next keyframe boundary.
#[derive(Debug)]
pub struct Chunker {
    target: usize,
    pending: Option<Chunk>,
    started: bool,
    pmt_pid: Option<u16>,
    /// Latest PSI section per PID (PAT and PMT), as the packets that carried it.
    psi: HashMap<u16, Vec<[u8; TS_PACKET]>>,
    /// Bytes discarded before the first keyframe.
    pub leading_bytes_discarded: u64,
    /// Keyframe chunks that got PAT/PMT copies at their head.
    pub psi_injected: u64,
}

impl Chunker {
    pub fn new(target: usize) -> Self {
        Chunker {
            target: target.max(1),
            pending: None,
            started: false,
            pmt_pid: None,
            psi: HashMap::new(),
            leading_bytes_discarded: 0,
            psi_injected: 0,
        }
    }

    /// Adds one muxer buffer; returns the chunks it completed (zero, one or two).
    pub fn push(&mut self, data: &[u8], pts_ns: Option<u64>, keyframe: bool) -> Vec<Chunk> {
        let mut done = Vec::new();
        if keyframe {
            done.extend(self.pending.take());
            self.started = true;
            let mut bytes = Vec::with_capacity(self.target.max(data.len() + 2 * TS_PACKET));
            if pid(data) != Some(0) {
                let pat = self.psi.get(&0);
                let pmt = self.pmt_pid.and_then(|p| self.psi.get(&p));
                if let (Some(pat), Some(pmt)) = (pat, pmt) {
                    pat.iter()
                        .chain(pmt.iter())
                        .for_each(|p| bytes.extend_from_slice(p));
                    self.psi_injected += 1;
                }
            }
            self.pending = Some(Chunk {
                bytes,
                pts_ns,
                keyframe: true,
            });
        }
        // PSI is remembered after deciding on injection, so a PAT that itself carries the
        // keyframe mark is not injected in front of itself.
        self.remember_psi(data);
        if !self.started {
            self.leading_bytes_discarded += data.len() as u64;
            return done;
        }
        let chunk = self.pending.get_or_insert_with(|| Chunk {
            bytes: Vec::with_capacity(self.target),
            pts_ns,
            keyframe: false,
        });
        chunk.bytes.extend_from_slice(data);
        if chunk.bytes.len() >= self.target {
            done.extend(self.pending.take());
        }
        done
    }

    /// Returns the partial chunk, if any (at EOS).
    pub fn flush(&mut self) -> Option<Chunk> {
        self.pending.take()
    }

    fn remember_psi(&mut self, data: &[u8]) {
        for packet in data.chunks_exact(TS_PACKET) {
            let Some(p) = pid(packet) else { continue };
            if p != 0 && Some(p) != self.pmt_pid {
                continue;
            }
            let packet: [u8; TS_PACKET] =
                packet.try_into().expect("chunks_exact yields full packets");
            let unit_start = packet[1] & 0x40 != 0;
            if unit_start {
                if p == 0 {
                    if let Some(pmt) = pat_first_pmt_pid(&packet) {
                        self.pmt_pid = Some(pmt);
                    }
                }
                self.psi.insert(p, vec![packet]);
            } else if let Some(section) = self.psi.get_mut(&p) {
                section.push(packet);
            }
        }
    }
}

/// The PID of the TS packet at the start of `data`, if it is one.
fn pid(data: &[u8]) -> Option<u16> {
    (data.len() >= TS_PACKET && data[0] == 0x47)
        .then(|| (u16::from(data[1] & 0x1f) << 8) | u16::from(data[2]))
}

/// The PMT PID of the first program in a single-packet PAT.
fn pat_first_pmt_pid(packet: &[u8; TS_PACKET]) -> Option<u16> {
    let afc = (packet[3] >> 4) & 0x3;
    let mut i = 4;
    if afc & 0x2 != 0 {
        i += 1 + usize::from(packet[4]);
    }
    if afc & 0x1 == 0 {
        return None;
    }
    i += 1 + usize::from(*packet.get(i)?); // pointer_field
    let section = packet.get(i..)?;
    if *section.first()? != 0x00 {
        return None; // not a PAT
    }
    let section_length = (usize::from(section[1] & 0x0f) << 8) | usize::from(section[2]);
    // 5 bytes of header after section_length, 4 bytes of CRC at the end.
    let programs = section.get(8..(3 + section_length).checked_sub(4)?)?;
    programs.chunks_exact(4).find_map(|e| {
        let program_number = u16::from_be_bytes([e[0], e[1]]);
        (program_number != 0).then(|| (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload-only TS packet on `pid`, filled with `fill`.
    fn packet(pid: u16, unit_start: bool, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; TS_PACKET];
        p[0] = 0x47;
        p[1] = ((pid >> 8) as u8 & 0x1f) | if unit_start { 0x40 } else { 0 };
        p[2] = pid as u8;
        p[3] = 0x10;
        p
    }

    /// A PAT naming PMT PID 32 for program 1, as mpegtsmux writes it.
    fn pat(fill: u8) -> Vec<u8> {
        let mut p = packet(0, true, 0xff);
        let section = [
            0x00, 0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xe0, 0x20, 0, 0, 0,
            fill,
        ];
        p[4..4 + section.len()].copy_from_slice(&section);
        p
    }

    /// Feeds (packet, keyframe) with increasing PTS; returns (pids in chunk, keyframe) per chunk.
    fn check(
        target: usize,
        feed: &[(Vec<u8>, bool)],
        expect: &[(&[u16], bool)],
        expect_discarded: u64,
    ) {
        let mut c = Chunker::new(target);
        let mut out = Vec::new();
        for (i, (p, key)) in feed.iter().enumerate() {
            out.extend(c.push(p, Some(i as u64), *key));
        }
        out.extend(c.flush());
        let got: Vec<(Vec<u16>, bool)> = out
            .iter()
            .map(|c| {
                (
                    c.bytes.chunks(TS_PACKET).map(|p| pid(p).unwrap()).collect(),
                    c.keyframe,
                )
            })
            .collect();
        let want: Vec<(Vec<u16>, bool)> = expect.iter().map(|(p, k)| (p.to_vec(), *k)).collect();
        assert_eq!(got, want);
        assert_eq!(c.leading_bytes_discarded, expect_discarded);
    }

    #[test]
    fn parses_pmt_pid_from_pat() {
        assert_eq!(pat_first_pmt_pid(&pat(0).try_into().unwrap()), Some(32));
        assert_eq!(
            pat_first_pmt_pid(&packet(0, true, 0xff).try_into().unwrap()),
            None
        );
    }

    #[test]
    fn the_measured_mpegtsmux_start() {
        // Audio before the first PAT is discarded; the PAT carries the first keyframe mark.
        let feed = vec![
            (packet(66, true, 1), false),
            (pat(0), true),
            (packet(32, true, 2), false),
            (packet(65, true, 3), false),
            (packet(66, true, 4), false),
        ];
        check(1316, &feed, &[(&[0, 32, 65, 66], true)], 188);
    }

    #[test]
    fn pat_and_pmt_are_injected_before_a_later_keyframe() {
        let feed = vec![
            (pat(0), true),
            (packet(32, true, 2), false),
            (packet(65, true, 3), false),
            (packet(66, true, 4), false),
            (packet(65, true, 5), true),
            (packet(65, false, 6), false),
        ];
        check(
            1316,
            &feed,
            &[(&[0, 32, 65, 66], true), (&[0, 32, 65, 65], true)],
            0,
        );
    }

    #[test]
    fn coalesces_to_target_between_keyframes() {
        let feed = vec![
            (pat(0), true),
            (packet(32, true, 2), false),
            (packet(65, false, 3), false),
            (packet(66, true, 4), false),
            (packet(65, false, 5), false),
        ];
        check(
            376,
            &feed,
            &[(&[0, 32], true), (&[65, 66], false), (&[65], false)],
            0,
        );
    }

    #[test]
    fn latest_psi_is_used() {
        let mut c = Chunker::new(10_000);
        c.push(&pat(1), Some(0), true);
        c.push(&packet(32, true, 1), Some(0), false);
        c.push(&pat(2), Some(0), false);
        c.push(&packet(32, true, 2), Some(0), false);
        let out = c.push(&packet(65, true, 9), Some(1), true);
        assert_eq!(out.len(), 1);
        let key = c.flush().unwrap();
        assert_eq!(&key.bytes[..TS_PACKET], &pat(2)[..]);
        assert_eq!(key.bytes[TS_PACKET + 10], 2, "PMT copy is the latest one");
        assert_eq!(c.psi_injected, 1);
    }
}
