//! The MP4 side: the sample tables the stitcher collects in pass 1, the
//! `ftyp` + `moov` it writes in front of `mdat` (so the file streams), and
//! [`verify`], which reads those boxes back from a finished file.
//!
//! Layout written: `ftyp`, `moov` (two `trak`s: video `avc1` + audio `mp4a`,
//! each with an edit list that places it on the common timeline), `mdat`. Boxes
//! whose times can exceed 32 bits (`mvhd`, `tkhd`, `mdhd`, `elst`) use version
//! 1; chunk offsets use `co64` only when the file passes 4 GiB.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::adts;
use crate::error::{Result, StitchError};

/// The movie timescale: the 90 kHz MPEG-TS clock, so that video times are
/// copied exactly.
pub const MOVIE_TIMESCALE: u32 = 90_000;

/// What a track's sample entry (`stsd`) describes.
pub enum Entry {
    Video {
        width: u32,
        height: u32,
        avcc: Vec<u8>,
    },
    Audio {
        config: adts::Config,
    },
}

/// One track's sample table, built in pass 1.
pub struct Track {
    pub entry: Entry,
    pub timescale: u32,
    /// Decode time of each sample in `timescale` units, strictly increasing,
    /// starting at 0.
    pub times: Vec<u64>,
    /// Duration of the last sample.
    pub last_duration: u32,
    pub sizes: Vec<u32>,
    /// Composition offsets (PTS − DTS); empty when all are zero.
    pub cts: Vec<u32>,
    /// 1-based numbers of sync samples; `None` when every sample is one.
    pub sync: Option<Vec<u32>>,
    /// Chunks as (offset from the start of mdat's payload, sample count).
    pub chunks: Vec<(u64, u32)>,
    /// Empty time before the track starts on the movie timeline (movie units).
    pub empty: u64,
    /// Where presentation starts in the media (track units).
    pub media_time: u64,
    /// Presented duration (movie units).
    pub presented: u64,
}

impl Track {
    /// Sum of all sample durations in track units.
    pub fn media_duration(&self) -> u64 {
        self.times
            .last()
            .map_or(0, |t| t + self.last_duration as u64)
    }

    fn is_video(&self) -> bool {
        matches!(self.entry, Entry::Video { .. })
    }
}

fn bx(out: &mut Vec<u8>, typ: &[u8; 4], f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(typ);
    f(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn full(out: &mut Vec<u8>, typ: &[u8; 4], version: u8, flags: u32, f: impl FnOnce(&mut Vec<u8>)) {
    bx(out, typ, |o| {
        o.extend_from_slice(&((version as u32) << 24 | flags).to_be_bytes());
        f(o);
    });
}

fn u16b(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u32b(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u64b(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The `ftyp` box.
pub fn ftyp() -> Vec<u8> {
    let mut o = Vec::new();
    bx(&mut o, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        u32b(o, 0x200);
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    o
}

/// The size of an `mdat` header for `payload` bytes: 16 with a 64-bit size.
pub fn mdat_header(payload: u64) -> Vec<u8> {
    let mut o = Vec::new();
    if payload + 8 > u32::MAX as u64 {
        u32b(&mut o, 1);
        o.extend_from_slice(b"mdat");
        u64b(&mut o, payload + 16);
    } else {
        u32b(&mut o, (payload + 8) as u32);
        o.extend_from_slice(b"mdat");
    }
    o
}

/// Builds `moov`; chunk offsets are `data_start` plus each chunk's offset.
pub fn moov(tracks: &[Track], data_start: u64, co64: bool) -> Vec<u8> {
    let duration = tracks
        .iter()
        .map(|t| t.empty + t.presented)
        .max()
        .unwrap_or(0);
    let mut o = Vec::new();
    bx(&mut o, b"moov", |o| {
        full(o, b"mvhd", 1, 0, |o| {
            u64b(o, 0);
            u64b(o, 0);
            u32b(o, MOVIE_TIMESCALE);
            u64b(o, duration);
            u32b(o, 0x0001_0000); // rate 1.0
            u16b(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            MATRIX.iter().for_each(|&m| u32b(o, m));
            o.extend_from_slice(&[0; 24]);
            u32b(o, tracks.len() as u32 + 1);
        });
        for (i, t) in tracks.iter().enumerate() {
            trak(o, t, i as u32 + 1, data_start, co64);
        }
    });
    o
}

fn trak(o: &mut Vec<u8>, t: &Track, id: u32, data_start: u64, co64: bool) {
    bx(o, b"trak", |o| {
        full(o, b"tkhd", 1, 3, |o| {
            u64b(o, 0);
            u64b(o, 0);
            u32b(o, id);
            u32b(o, 0);
            u64b(o, t.empty + t.presented);
            o.extend_from_slice(&[0; 8]);
            u16b(o, 0); // layer
            u16b(o, 0); // alternate group
            u16b(o, if t.is_video() { 0 } else { 0x0100 });
            u16b(o, 0);
            MATRIX.iter().for_each(|&m| u32b(o, m));
            let (w, h) = match t.entry {
                Entry::Video { width, height, .. } => (width, height),
                Entry::Audio { .. } => (0, 0),
            };
            u32b(o, w << 16);
            u32b(o, h << 16);
        });
        bx(o, b"edts", |o| {
            full(o, b"elst", 1, 0, |o| {
                let empty = t.empty > 0;
                u32b(o, if empty { 2 } else { 1 });
                if empty {
                    u64b(o, t.empty);
                    u64b(o, u64::MAX); // media_time -1: an empty edit
                    u32b(o, 0x0001_0000);
                }
                u64b(o, t.presented);
                u64b(o, t.media_time);
                u32b(o, 0x0001_0000);
            });
        });
        bx(o, b"mdia", |o| {
            full(o, b"mdhd", 1, 0, |o| {
                u64b(o, 0);
                u64b(o, 0);
                u32b(o, t.timescale);
                u64b(o, t.media_duration());
                u16b(o, 0x55c4); // "und"
                u16b(o, 0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                u32b(o, 0);
                o.extend_from_slice(if t.is_video() { b"vide" } else { b"soun" });
                o.extend_from_slice(&[0; 12]);
                o.extend_from_slice(if t.is_video() {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            bx(o, b"minf", |o| {
                if t.is_video() {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                } else {
                    full(o, b"smhd", 0, 0, |o| u32b(o, 0));
                }
                bx(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        u32b(o, 1);
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                stbl(o, t, data_start, co64);
            });
        });
    });
}

fn stbl(o: &mut Vec<u8>, t: &Track, data_start: u64, co64: bool) {
    bx(o, b"stbl", |o| {
        full(o, b"stsd", 0, 0, |o| {
            u32b(o, 1);
            sample_entry(o, &t.entry);
        });
        full(o, b"stts", 0, 0, |o| {
            let runs = run_lengths((0..t.times.len()).map(|i| match t.times.get(i + 1) {
                Some(next) => (next - t.times[i]) as u32,
                None => t.last_duration,
            }));
            u32b(o, runs.len() as u32);
            for (n, d) in runs {
                u32b(o, n);
                u32b(o, d);
            }
        });
        if !t.cts.is_empty() {
            full(o, b"ctts", 0, 0, |o| {
                let runs = run_lengths(t.cts.iter().copied());
                u32b(o, runs.len() as u32);
                for (n, c) in runs {
                    u32b(o, n);
                    u32b(o, c);
                }
            });
        }
        if let Some(sync) = &t.sync {
            full(o, b"stss", 0, 0, |o| {
                u32b(o, sync.len() as u32);
                sync.iter().for_each(|&s| u32b(o, s));
            });
        }
        full(o, b"stsc", 0, 0, |o| {
            let mut entries = Vec::new();
            let mut last = None;
            for (i, &(_, n)) in t.chunks.iter().enumerate() {
                if last != Some(n) {
                    entries.push((i as u32 + 1, n));
                    last = Some(n);
                }
            }
            u32b(o, entries.len() as u32);
            for (first, n) in entries {
                u32b(o, first);
                u32b(o, n);
                u32b(o, 1);
            }
        });
        full(o, b"stsz", 0, 0, |o| {
            u32b(o, 0);
            u32b(o, t.sizes.len() as u32);
            t.sizes.iter().for_each(|&s| u32b(o, s));
        });
        let typ = if co64 { b"co64" } else { b"stco" };
        full(o, typ, 0, 0, |o| {
            u32b(o, t.chunks.len() as u32);
            for &(off, _) in &t.chunks {
                if co64 {
                    u64b(o, data_start + off);
                } else {
                    u32b(o, (data_start + off) as u32);
                }
            }
        });
    });
}

fn sample_entry(o: &mut Vec<u8>, entry: &Entry) {
    match entry {
        Entry::Video {
            width,
            height,
            avcc,
        } => bx(o, b"avc1", |o| {
            o.extend_from_slice(&[0; 6]);
            u16b(o, 1); // data_reference_index
            o.extend_from_slice(&[0; 16]);
            u16b(o, *width as u16);
            u16b(o, *height as u16);
            u32b(o, 0x0048_0000); // 72 dpi
            u32b(o, 0x0048_0000);
            u32b(o, 0);
            u16b(o, 1); // frame_count
            o.extend_from_slice(&[0; 32]); // compressorname
            u16b(o, 0x0018); // depth
            u16b(o, 0xffff);
            bx(o, b"avcC", |o| o.extend_from_slice(avcc));
        }),
        Entry::Audio { config } => bx(o, b"mp4a", |o| {
            o.extend_from_slice(&[0; 6]);
            u16b(o, 1);
            o.extend_from_slice(&[0; 8]);
            u16b(o, config.channels as u16);
            u16b(o, 16);
            u32b(o, 0);
            u32b(o, config.sample_rate() << 16);
            full(o, b"esds", 0, 0, |o| {
                let asc = config.audio_specific_config();
                // ES_Descriptor ⊃ DecoderConfigDescriptor ⊃ DecoderSpecificInfo,
                // then SLConfigDescriptor (ISO/IEC 14496-1 7.2.6).
                let dsi_len = 2u8;
                let dcd_len = 13 + 2 + dsi_len;
                let es_len = 3 + 2 + dcd_len + 3;
                o.extend_from_slice(&[0x03, es_len, 0, 0, 0]);
                o.extend_from_slice(&[0x04, dcd_len, 0x40, 0x15, 0, 0, 0]);
                u32b(o, 0); // max bitrate: unknown
                u32b(o, 0); // average bitrate: unknown
                o.extend_from_slice(&[0x05, dsi_len, asc[0], asc[1]]);
                o.extend_from_slice(&[0x06, 1, 0x02]);
            });
        }),
    }
}

fn run_lengths(values: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for v in values {
        match runs.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => runs.push((1, v)),
        }
    }
    runs
}

/// What [`verify`] found in an MP4 file.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Top-level box types in file order.
    pub top_level: Vec<String>,
    /// One entry per track, in file order.
    pub tracks: Vec<TrackInfo>,
    /// Movie duration in nanoseconds (from `mvhd`).
    pub duration_ns: u64,
}

impl VerifyReport {
    /// `moov` comes before `mdat`, so the file plays while it downloads.
    pub fn moov_before_mdat(&self) -> bool {
        let pos = |t: &str| self.top_level.iter().position(|b| b == t);
        matches!((pos("moov"), pos("mdat")), (Some(m), Some(d)) if m < d)
    }
}

/// One track as read back by [`verify`].
#[derive(Debug, Clone)]
pub struct TrackInfo {
    /// Handler type: "vide" or "soun".
    pub handler: String,
    pub samples: u32,
    pub sync_samples: Option<u32>,
    pub timescale: u32,
    /// Media duration in track units (`mdhd`).
    pub media_duration: u64,
    pub bytes: u64,
}

fn verr(path: &Path, what: impl Into<String>) -> StitchError {
    StitchError::Verify {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// Reads the structure of an MP4 file back: top-level boxes, and for each
/// track its sample count, sizes and durations. Checks that every chunk lies
/// inside `mdat` and that the sample tables agree on the sample count. Reads
/// `moov` only, never the media.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let io = |e: std::io::Error| StitchError::Read {
        path: path.to_owned(),
        source: e,
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut off = 0u64;
    let mut top_level = Vec::new();
    let mut moov = None;
    let mut mdat = None;
    while off < len {
        let mut h = [0u8; 16];
        f.seek(SeekFrom::Start(off)).map_err(io)?;
        f.read_exact(&mut h[..8]).map_err(io)?;
        let mut size = u32::from_be_bytes(h[..4].try_into().unwrap()) as u64;
        let typ = String::from_utf8_lossy(&h[4..8]).into_owned();
        let mut header = 8;
        if size == 1 {
            f.read_exact(&mut h[8..16]).map_err(io)?;
            size = u64::from_be_bytes(h[8..16].try_into().unwrap());
            header = 16;
        }
        if size < header || off + size > len {
            return Err(verr(
                path,
                format!("box {typ:?} at {off} has bad size {size}"),
            ));
        }
        if typ == "moov" {
            let mut b = vec![0u8; (size - header) as usize];
            f.read_exact(&mut b).map_err(io)?;
            moov = Some(b);
        } else if typ == "mdat" {
            mdat = Some((off + header, off + size));
        }
        top_level.push(typ);
        off += size;
    }
    let moov = moov.ok_or_else(|| verr(path, "no moov box"))?;
    let (data_start, data_end) = mdat.ok_or_else(|| verr(path, "no mdat box"))?;
    let mvhd = find(&moov, &["mvhd"]).ok_or_else(|| verr(path, "no mvhd"))?;
    let (ts, dur) = timescale_duration(mvhd);
    let mut tracks = Vec::new();
    for trak in children(&moov)
        .filter(|(t, _)| *t == b"trak")
        .map(|(_, b)| b)
    {
        let get = |p: &[&str]| {
            find(trak, p).ok_or_else(|| verr(path, format!("trak without {}", p.join("/"))))
        };
        let hdlr = get(&["mdia", "hdlr"])?;
        let (timescale, media_duration) = timescale_duration(get(&["mdia", "mdhd"])?);
        let stbl = ["mdia", "minf", "stbl"];
        let with = |leaf: &'static str| [stbl[0], stbl[1], stbl[2], leaf];
        let stsz = get(&with("stsz"))?;
        let samples = be32(stsz, 8);
        let sizes: Vec<u64> = (0..samples as usize)
            .map(|i| be32(stsz, 12 + 4 * i) as u64)
            .collect();
        let stts = get(&with("stts"))?;
        let stts_count: u64 = (0..be32(stts, 4) as usize)
            .map(|i| be32(stts, 8 + 8 * i) as u64)
            .sum();
        if stts_count != samples as u64 {
            return Err(verr(
                path,
                format!("stts covers {stts_count} samples, stsz {samples}"),
            ));
        }
        let offsets: Vec<u64> = if let Some(co) = find(trak, &with("co64")) {
            (0..be32(co, 4) as usize)
                .map(|i| be64(co, 8 + 8 * i))
                .collect()
        } else {
            let co = get(&with("stco"))?;
            (0..be32(co, 4) as usize)
                .map(|i| be32(co, 8 + 4 * i) as u64)
                .collect()
        };
        let stsc = get(&with("stsc"))?;
        let runs: Vec<(u32, u32)> = (0..be32(stsc, 4) as usize)
            .map(|i| (be32(stsc, 8 + 12 * i), be32(stsc, 12 + 12 * i)))
            .collect();
        let mut sample = 0usize;
        // stsc runs are sorted by first chunk; walk them alongside the chunks.
        let mut run = 0usize;
        for (ci, &chunk_off) in offsets.iter().enumerate() {
            let chunk_no = ci as u32 + 1;
            while run + 1 < runs.len() && runs[run + 1].0 <= chunk_no {
                run += 1;
            }
            let n = runs
                .get(run)
                .filter(|(first, _)| *first <= chunk_no)
                .map_or(0, |r| r.1);
            let bytes: u64 = sizes
                .get(sample..sample + n as usize)
                .ok_or_else(|| verr(path, "stsc names more samples than stsz"))?
                .iter()
                .sum();
            if chunk_off < data_start || chunk_off + bytes > data_end {
                return Err(verr(
                    path,
                    format!("chunk {chunk_no} at {chunk_off} lies outside mdat"),
                ));
            }
            sample += n as usize;
        }
        if sample != samples as usize {
            return Err(verr(
                path,
                format!("chunks hold {sample} samples, stsz {samples}"),
            ));
        }
        tracks.push(TrackInfo {
            handler: String::from_utf8_lossy(&hdlr[8..12]).into_owned(),
            samples,
            sync_samples: find(trak, &with("stss")).map(|b| be32(b, 4)),
            timescale,
            media_duration,
            bytes: sizes.iter().sum(),
        });
    }
    Ok(VerifyReport {
        top_level,
        tracks,
        duration_ns: (dur as u128 * 1_000_000_000 / ts.max(1) as u128) as u64,
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_be_bytes(s.try_into().unwrap()))
}
fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_be_bytes(s.try_into().unwrap()))
}

/// (timescale, duration) of an `mvhd` or `mdhd` payload, either version.
fn timescale_duration(b: &[u8]) -> (u32, u64) {
    if b.first() == Some(&1) {
        (be32(b, 20), be64(b, 24))
    } else {
        (be32(b, 12), be32(b, 16) as u64)
    }
}

/// Child boxes of a container payload as (type, payload).
fn children(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let size = be32(b, off) as usize;
        if off + 8 > b.len() || size < 8 || off + size > b.len() {
            return None;
        }
        let item = (&b[off + 4..off + 8], &b[off + 8..off + size]);
        off += size;
        Some(item)
    })
}

/// Finds a box by path below a container payload and returns its payload.
fn find<'a>(b: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let (_, payload) = children(b).find(|(t, _)| *t == first.as_bytes())?;
    if rest.is_empty() {
        Some(payload)
    } else if *first == "stsd" {
        None
    } else {
        find(payload, rest)
    }
}
