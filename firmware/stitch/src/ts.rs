//! MPEG-TS demultiplexing for one part: reads the part's segment files as one
//! byte stream (segments of a part are byte-contiguous pieces of one muxer
//! session), follows PAT → PMT to the H.264 (stream type 0x1b) and AAC ADTS
//! (0x0f) PIDs, and reassembles PES packets, handing each complete one to a
//! sink with its raw 33-bit PTS/DTS. It knows nothing about timelines or MP4.
//!
//! A PES that lost packets inside the part is dropped, never handed on: the
//! decoder would show it as a damaged picture (or a burst of noise) in the
//! middle of the stitched file. Lost packets show as a jump of the packet's
//! 4-bit continuity counter (a muxer counts every packet of a PID that carries
//! payload) or as a bounded PES that a new PES start cuts short. One muxer
//! session never loses packets, so either means the journal lost bytes (a
//! chunk the writer could not take in time); the rest of the part stitches.
//!
//! A PES ends when its declared length is reached or, for unbounded PES
//! (length 0, how muxers carry video), when the next PES of that PID starts.
//! At the end of a part the pending PES of each stream is complete only if it
//! reached its declared length, or, when unbounded, if the part ended cleanly
//! or its last TS packet was padded with adaptation-field stuffing (a muxer
//! pads only the final packet of a PES; crash recovery cuts at a packet
//! boundary, usually inside a PES, leaving an unpadded packet last).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{malformed, Pos, Result, StitchError};

/// Size of one transport stream packet.
pub const PACKET_LEN: usize = 188;
const SYNC: u8 = 0x47;
/// Packets read per `read` call: about 750 KiB, a few reads per segment.
const READ_PACKETS: usize = 4096;

/// Which elementary stream a PES belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// H.264, Annex-B byte stream.
    Video,
    /// AAC in ADTS frames.
    Audio,
}

/// One complete PES packet.
pub struct Pes<'a> {
    pub kind: Kind,
    /// Raw 33-bit PTS, if the header carries one.
    pub pts: Option<u64>,
    /// Raw 33-bit DTS; equal to `pts` when the header carries only a PTS.
    pub dts: Option<u64>,
    /// The elementary stream bytes.
    pub data: &'a [u8],
    /// Where the PES started.
    pub pos: &'a Pos,
    /// The PES of this stream before this one was dropped for lost packets,
    /// so a picture this one refers to may be missing.
    pub after_loss: bool,
}

/// What the demuxer found besides the PES packets.
#[derive(Debug, Default)]
pub struct DemuxStats {
    /// The PMT announced an H.264 stream.
    pub has_video: bool,
    /// Trailing PES packets dropped because they were cut short.
    pub dropped_tail: u32,
    /// PES packets dropped inside the part because they lost packets.
    pub dropped_damaged: u32,
}

#[derive(Default)]
struct Assembler {
    buf: Vec<u8>,
    active: bool,
    pos: Option<Pos>,
    /// The last packet appended carried adaptation-field stuffing.
    last_stuffed: bool,
    /// The continuity counter of this PID's last packet with payload.
    cc: Option<u8>,
    /// The pending PES lost packets (a continuity counter jump).
    damaged: bool,
    /// The last PES of this stream was dropped as damaged.
    lost_before: bool,
    /// PES of this stream dropped as damaged so far.
    dropped_damaged: u32,
}

impl Assembler {
    /// Declared total length (header included) of the pending PES, if bounded.
    fn declared_len(&self) -> Option<usize> {
        if self.buf.len() < 6 {
            return None;
        }
        let len = u16::from_be_bytes([self.buf[4], self.buf[5]]) as usize;
        (len > 0).then_some(6 + len)
    }
}

/// Where a packet is, without allocating (a [`Pos`] is made only for a PES
/// start or an error).
#[derive(Clone, Copy)]
struct Loc<'a> {
    file: &'a Path,
    offset: u64,
}

impl Loc<'_> {
    fn pos(self) -> Pos {
        Pos {
            file: self.file.to_owned(),
            offset: self.offset,
        }
    }
}

/// Demultiplexes one part and calls `sink` for every complete PES of the
/// video and audio streams, in stream order.
pub fn demux_part(
    files: &[PathBuf],
    may_be_torn: bool,
    mut sink: impl FnMut(Pes<'_>) -> Result<()>,
) -> Result<DemuxStats> {
    let mut d = Demuxer::default();
    let mut buf = vec![0u8; PACKET_LEN * READ_PACKETS];
    // Bytes of a packet that straddles two reads (or files), and where it
    // started.
    let mut carry = 0usize;
    let mut carry_loc: Option<Loc<'_>> = None;
    for path in files {
        let mut file = File::open(path).map_err(|source| StitchError::Read {
            path: path.clone(),
            source,
        })?;
        let mut file_off: u64 = 0;
        loop {
            let n =
                read_full(&mut file, &mut buf[carry..]).map_err(|source| StitchError::Read {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            let avail = carry + n;
            let whole = avail / PACKET_LEN * PACKET_LEN;
            // Offset in this file of buf[0]; the first packet may have begun
            // in the previous file.
            let mut off = file_off as i64 - carry as i64;
            for (i, pkt) in buf[..whole].chunks_exact(PACKET_LEN).enumerate() {
                let loc = match carry_loc.take() {
                    Some(l) if i == 0 => l,
                    _ => Loc {
                        file: path,
                        offset: off.max(0) as u64,
                    },
                };
                d.packet(pkt, loc, &mut sink)?;
                off += PACKET_LEN as i64;
            }
            file_off += n as u64;
            buf.copy_within(whole..avail, 0);
            carry = avail - whole;
            if carry > 0 && carry_loc.is_none() {
                carry_loc = Some(Loc {
                    file: path,
                    offset: file_off - carry as u64,
                });
            }
        }
    }
    if carry > 0 {
        // Crash recovery truncates to whole packets, so this is a torn packet
        // from some other tool; it cannot hold anything we can use.
        log::warn!(target: "stitch", "ignoring {carry} trailing bytes of a partial TS packet");
    }
    d.finish(may_be_torn, &mut sink)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[derive(Default)]
struct Demuxer {
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    video: Assembler,
    audio: Assembler,
    stats: DemuxStats,
}

impl Demuxer {
    fn packet(
        &mut self,
        pkt: &[u8],
        loc: Loc<'_>,
        sink: &mut impl FnMut(Pes<'_>) -> Result<()>,
    ) -> Result<()> {
        if pkt[0] != SYNC {
            return Err(StitchError::NotTs {
                pos: loc.pos(),
                found: pkt[0],
            });
        }
        let pusi = pkt[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([pkt[1] & 0x1f, pkt[2]]);
        let afc = (pkt[3] >> 4) & 3;
        let (payload_start, stuffed) = match afc {
            0b01 => (4, false),
            0b11 => {
                let af_len = pkt[4] as usize;
                if af_len > 183 {
                    return Err(malformed(
                        &loc.pos(),
                        format!("adaptation field length {af_len}"),
                    ));
                }
                (5 + af_len, has_stuffing(&pkt[4..5 + af_len]))
            }
            // Adaptation field only, or reserved: no payload.
            _ => return Ok(()),
        };
        let payload = &pkt[payload_start..];
        // The adaptation field's discontinuity_indicator: the counter may restart.
        let discontinuity = afc == 0b11 && pkt[4] > 0 && pkt[5] & 0x80 != 0;
        let cc = pkt[3] & 0x0f;
        if pid == 0 {
            if pusi {
                self.pmt_pid = parse_pat(payload, &loc.pos())?.or(self.pmt_pid);
            }
        } else if Some(pid) == self.pmt_pid {
            if pusi {
                self.parse_pmt(payload, &loc.pos())?;
            }
        } else {
            let stream = if Some(pid) == self.video_pid {
                Some((&mut self.video, Kind::Video))
            } else if Some(pid) == self.audio_pid {
                Some((&mut self.audio, Kind::Audio))
            } else {
                None
            };
            if let Some((asm, kind)) = stream {
                match asm.cc.replace(cc) {
                    // A duplicate packet (the standard allows one): already taken.
                    Some(last) if last == cc && !discontinuity => return Ok(()),
                    Some(last) if (last + 1) & 0x0f != cc && !discontinuity => {
                        // Packets are missing before this one: they belonged to the
                        // pending PES (its middle, or its end when this one starts a
                        // new PES), or, with none pending, to whole PES now gone.
                        if asm.active {
                            asm.damaged = true;
                        } else {
                            asm.lost_before = true;
                        }
                    }
                    _ => {}
                }
                push(asm, kind, pusi, payload, stuffed, loc, sink)?;
            }
        }
        Ok(())
    }

    fn parse_pmt(&mut self, payload: &[u8], pos: &Pos) -> Result<()> {
        let sec = psi_section(payload, 0x02, pos)?;
        let info_len = (u16::from_be_bytes([sec[10] & 0x0f, sec[11]])) as usize;
        let mut i = 12 + info_len;
        // The ES loop ends before the 4-byte CRC.
        let end = sec.len() - 4;
        let (mut video, mut audio) = (None, None);
        while i + 5 <= end {
            let stream_type = sec[i];
            let pid = u16::from_be_bytes([sec[i + 1] & 0x1f, sec[i + 2]]);
            let es_info = (u16::from_be_bytes([sec[i + 3] & 0x0f, sec[i + 4]])) as usize;
            match stream_type {
                0x1b if video.is_none() => video = Some(pid),
                0x0f if audio.is_none() => audio = Some(pid),
                _ => {}
            }
            i += 5 + es_info;
        }
        self.video_pid = video;
        self.audio_pid = audio;
        if video.is_some() {
            self.stats.has_video = true;
        }
        Ok(())
    }

    fn finish(
        mut self,
        may_be_torn: bool,
        sink: &mut impl FnMut(Pes<'_>) -> Result<()>,
    ) -> Result<DemuxStats> {
        for (asm, kind) in [
            (&mut self.video, Kind::Video),
            (&mut self.audio, Kind::Audio),
        ] {
            if !asm.active {
                continue;
            }
            if asm.damaged {
                drop_damaged(asm, kind);
                continue;
            }
            // A bounded PES still pending never reached its length.
            let complete = asm.declared_len().is_none() && (!may_be_torn || asm.last_stuffed);
            if complete {
                emit(asm, kind, sink)?;
            } else {
                log::info!(
                    target: "stitch",
                    "dropping a {kind:?} PES cut short at the end of the part ({})",
                    asm.pos.as_ref().map(ToString::to_string).unwrap_or_default()
                );
                self.stats.dropped_tail += 1;
            }
        }
        self.stats.dropped_damaged = self.video.dropped_damaged + self.audio.dropped_damaged;
        Ok(self.stats)
    }
}

/// Appends one packet's payload to a PES being assembled, emitting the
/// previous PES when a new one starts and a bounded PES once it is whole. A
/// previous PES that lost packets, or that the new start cuts short of its
/// declared length, is dropped instead.
fn push(
    asm: &mut Assembler,
    kind: Kind,
    pusi: bool,
    payload: &[u8],
    stuffed: bool,
    loc: Loc<'_>,
    sink: &mut impl FnMut(Pes<'_>) -> Result<()>,
) -> Result<()> {
    if pusi {
        if asm.active {
            hand_on(asm, kind, sink)?;
        }
        asm.damaged = false;
        asm.buf.clear();
        asm.active = true;
        asm.pos = Some(loc.pos());
    } else if !asm.active {
        // The part began inside a PES (never for our segments); skip to the
        // next PES start.
        return Ok(());
    }
    asm.buf.extend_from_slice(payload);
    asm.last_stuffed = stuffed;
    if let Some(len) = asm.declared_len() {
        if asm.buf.len() >= len {
            asm.buf.truncate(len);
            hand_on(asm, kind, sink)?;
        }
    }
    Ok(())
}

/// Emits the pending PES, or drops it if it lost packets or is shorter than
/// its declared length (cut short by the next PES start).
fn hand_on(
    asm: &mut Assembler,
    kind: Kind,
    sink: &mut impl FnMut(Pes<'_>) -> Result<()>,
) -> Result<()> {
    let short = asm.declared_len().is_some_and(|len| asm.buf.len() < len);
    if asm.damaged || short {
        drop_damaged(asm, kind);
        Ok(())
    } else {
        emit(asm, kind, sink)
    }
}

/// Drops the pending PES, which lost packets inside the part.
fn drop_damaged(asm: &mut Assembler, kind: Kind) {
    log::warn!(
        target: "stitch",
        "dropping a {kind:?} PES that lost packets ({}, {} bytes kept): the journal is missing bytes there",
        asm.pos.as_ref().map(ToString::to_string).unwrap_or_default(),
        asm.buf.len()
    );
    asm.active = false;
    asm.damaged = false;
    asm.lost_before = true;
    asm.dropped_damaged += 1;
}

fn emit(
    asm: &mut Assembler,
    kind: Kind,
    sink: &mut impl FnMut(Pes<'_>) -> Result<()>,
) -> Result<()> {
    asm.active = false;
    let pos = asm.pos.as_ref().expect("an active PES has a position");
    let b = &asm.buf;
    if b.len() < 9 || b[0..3] != [0, 0, 1] {
        return Err(malformed(pos, format!("{kind:?} PES without a start code")));
    }
    let flags = b[7] >> 6;
    let header_len = 9 + b[8] as usize;
    if header_len > b.len() {
        return Err(malformed(pos, "PES header longer than the PES"));
    }
    let pts = if flags & 2 != 0 {
        Some(read_ts(&b[9..], pos)?)
    } else {
        None
    };
    let dts = if flags == 3 {
        Some(read_ts(&b[14..], pos)?)
    } else {
        pts
    };
    let after_loss = std::mem::take(&mut asm.lost_before);
    sink(Pes {
        kind,
        pts,
        dts,
        data: &b[header_len..],
        pos,
        after_loss,
    })
}

pub(crate) fn read_ts(b: &[u8], pos: &Pos) -> Result<u64> {
    if b.len() < 5 {
        return Err(malformed(pos, "PES header too short for its PTS/DTS"));
    }
    Ok((((b[0] >> 1) & 0x07) as u64) << 30
        | (b[1] as u64) << 22
        | ((b[2] >> 1) as u64) << 15
        | (b[3] as u64) << 7
        | (b[4] >> 1) as u64)
}

/// Whether an adaptation field (starting at its length byte) ends in stuffing
/// bytes, i.e. is longer than the fields its flags announce.
fn has_stuffing(af: &[u8]) -> bool {
    let len = af[0] as usize;
    if len == 0 {
        // A zero-length adaptation field is exactly one byte of stuffing.
        return true;
    }
    let flags = af[1];
    let mut used = 1;
    if flags & 0x10 != 0 {
        used += 6; // PCR
    }
    if flags & 0x08 != 0 {
        used += 6; // OPCR
    }
    if flags & 0x04 != 0 {
        used += 1; // splice countdown
    }
    // Private data and extensions have their own lengths; treat such packets
    // as unpadded, which at worst drops one complete frame of a torn part.
    if flags & 0x03 != 0 {
        return false;
    }
    len > used
}

/// Returns the section (from table_id to the CRC) of a PSI packet payload.
fn psi_section<'a>(payload: &'a [u8], table_id: u8, pos: &Pos) -> Result<&'a [u8]> {
    let pointer = *payload
        .first()
        .ok_or_else(|| malformed(pos, "empty PSI packet"))? as usize;
    let sec = payload
        .get(1 + pointer..)
        .filter(|s| s.len() >= 12)
        .ok_or_else(|| malformed(pos, "PSI pointer field past the packet"))?;
    if sec[0] != table_id {
        return Err(malformed(
            pos,
            format!("PSI table id 0x{:02x}, expected 0x{table_id:02x}", sec[0]),
        ));
    }
    let len = 3 + (u16::from_be_bytes([sec[1] & 0x0f, sec[2]]) as usize);
    // mpegtsmux writes PAT and PMT in one packet each; a section spanning
    // packets would need reassembly we have no use for.
    sec.get(..len)
        .filter(|s| s.len() >= 12)
        .ok_or_else(|| malformed(pos, "PSI section longer than one packet"))
}

/// Returns the PMT PID of the first program in a PAT.
fn parse_pat(payload: &[u8], pos: &Pos) -> Result<Option<u16>> {
    let sec = psi_section(payload, 0x00, pos)?;
    let end = sec.len() - 4;
    let mut i = 8;
    while i + 4 <= end {
        let program = u16::from_be_bytes([sec[i], sec[i + 1]]);
        let pid = u16::from_be_bytes([sec[i + 2] & 0x1f, sec[i + 3]]);
        // Program 0 points at the network information table, not a PMT.
        if program != 0 {
            return Ok(Some(pid));
        }
        i += 4;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_detection() {
        // [length, flags, ...]: PCR only, exactly filled: not stuffed.
        assert!(!has_stuffing(&[7, 0x10, 0, 0, 0, 0, 0, 0]));
        // PCR plus two stuffing bytes.
        assert!(has_stuffing(&[9, 0x10, 0, 0, 0, 0, 0, 0, 0xff, 0xff]));
        // Flags byte only, then stuffing.
        assert!(has_stuffing(&[3, 0x00, 0xff, 0xff]));
        assert!(has_stuffing(&[0]));
        assert!(!has_stuffing(&[1, 0x00]));
    }

    #[test]
    fn timestamp_fields() {
        // 0x1_2345_6789 encoded per ISO/IEC 13818-1 2.4.3.7 with marker bits.
        let v: u64 = 0x1_2345_6789;
        let b = [
            0x21 | (((v >> 30) as u8 & 7) << 1),
            (v >> 22) as u8,
            ((v >> 14) as u8) | 1,
            (v >> 7) as u8,
            ((v << 1) as u8) | 1,
        ];
        let pos = Pos {
            file: "x".into(),
            offset: 0,
        };
        assert_eq!(read_ts(&b, &pos).unwrap(), v);
    }
}
