//! The stitcher: turns a recording's parts (each an ordered list of MPEG-TS
//! segment files) into one MP4 with the index (`moov`) in front of the media
//! (`mdat`), by remuxing — never re-encoding — with one continuous timeline.
//!
//! **Invariant:** this crate creates, renames and fsyncs nothing. It reads
//! the segment paths it is given and writes one byte stream to the writer the
//! caller hands in (the journal owns everything under the media directory).
//! It links no GStreamer.
//!
//! # How
//!
//! Two passes over the input, so that memory is bounded by the sample table
//! (a few tens of bytes per sample; 24–29 MB peak RSS for an hour) and never
//! by media size:
//!
//! 1. *Plan*: demux every part (`ts.rs`; parts on up to four threads), split
//!    H.264 access units into NAL units to learn each AVCC sample's size and
//!    keyframe flag (`h264.rs`), split audio PES into ADTS frames (`adts.rs`),
//!    place every sample on the output timeline, and group each track's
//!    samples into chunks of about a second, ordered by where they start in
//!    the stream. Then `ftyp` and `moov` can be written (`mp4.rs`).
//! 2. *Copy*: demux again and stream the converted samples into `mdat` in
//!    chunk order; a sample whose chunk is not yet due (the other track's
//!    earlier chunk is still open) is held back, a few seconds of media at
//!    most. A writer thread hashes (SHA-256) and writes while the main thread
//!    demuxes, so the two overlap on a two-core board. Any disagreement with
//!    pass 1 is [`StitchError::Changed`].
//!
//! Writing `moov` first avoids the alternatives' costs: reserving space and
//! patching needs a seekable output and a guess at `moov`'s size, and
//! writing `moov` last then moving it (ffmpeg's `+faststart`) rewrites the
//! whole file.
//!
//! # Timeline
//!
//! All times are in the 90 kHz TS clock, unwrapped per part (33-bit PTS wrap).
//! A part starts at `base` = the smallest PTS of either stream and ends at
//! `end` = the largest of (last PTS + frame duration) over both streams. One
//! offset maps the whole part (both tracks) so that its `base` lands on the
//! previous part's `end`: the outage is cut out, and because both tracks move
//! together they stay in sync across the seam. A hole a track leaves before
//! the seam is closed by lengthening its last sample (MP4 durations are
//! implicit: the next sample's decode time minus this one's).
//!
//! The video track copies decode times and composition offsets (B-frames)
//! from the TS; its edit list starts presentation at the first picture.
//! The audio track runs at the sample rate with 1024-sample frames; a frame
//! whose PTS lies within half a frame of where the previous one ends is
//! placed exactly there, so rounding jitter in the TS does not break the
//! duration table into many entries. Tracks that start later than the other
//! get an empty edit, which keeps the start in sync too.
//!
//! # Torn tails
//!
//! The last segment of an interrupted part may end inside a PES. Parts marked
//! [`Part::may_be_torn`] drop a trailing unbounded video PES unless its last
//! packet was padded (see `ts.rs`); bounded PES and ADTS frames that are cut
//! short are always dropped. That costs at most one frame per stream.
//!
//! # Lost packets
//!
//! A PES that lost TS packets inside a part (a jump in its PID's continuity
//! counter, or a bounded PES cut short by the next PES start: bytes the
//! journal never got) is dropped, and so are the video pictures after it up
//! to the next keyframe, which refer to it: the file holds the last good
//! picture for up to a GOP rather than a smeared one, and never a frame that
//! decodes with errors. [`PartReport::dropped_damaged_units`] counts them.

mod adts;
mod error;
mod h264;
mod mp4;
pub mod synth;
mod ts;

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

pub use error::{Pos, Result, StitchError};
pub use mp4::{verify, TrackInfo, VerifyReport};

use mp4::{Entry, Track};
use ts::Kind;

/// The 33-bit PTS/DTS modulus.
const WRAP: i64 = 1 << 33;
/// Output is handed to the writer thread in buffers of about this size.
const WRITE_BUF: usize = 1 << 20;
/// Video frame duration assumed for a part with a single frame (30 fps).
const DEFAULT_FRAME_90K: i64 = 3000;

/// One part of a recording: one muxer session's segment files, in order.
#[derive(Debug, Clone)]
pub struct Part {
    /// The segment files; together they are one contiguous MPEG-TS stream.
    pub segments: Vec<PathBuf>,
    /// The part did not end cleanly (crash, power cut), so its last segment
    /// may end inside a frame. The journal knows this from the part's state.
    pub may_be_torn: bool,
}

/// What one part became in the output.
#[derive(Debug, Clone, PartialEq)]
pub struct PartReport {
    /// Start on the output timeline, ns.
    pub start_ns: u64,
    /// End on the output timeline, ns (the next part's start).
    pub end_ns: u64,
    /// The input span covered: the part's first PTS, ns on its own (unwrapped)
    /// clock.
    pub input_start_ns: i64,
    /// The input span's end (last PTS plus one frame), ns.
    pub input_end_ns: i64,
    pub video_samples: u32,
    pub audio_samples: u32,
    /// PES packets or ADTS frames dropped because the part ended inside them.
    pub dropped_tail_units: u32,
    /// PES packets dropped inside the part because they lost TS packets
    /// (`ts.rs`): frames the journal is missing bytes of.
    pub dropped_damaged_units: u32,
}

/// The outcome of [`stitch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub parts: Vec<PartReport>,
    pub video_samples: u64,
    pub audio_samples: u64,
    /// Length of the output timeline, ns.
    pub duration_ns: u64,
    /// Bytes written to the output.
    pub bytes_written: u64,
    /// SHA-256 of the output, lowercase hex.
    pub sha256: String,
}

fn ticks_to_ns(t: i64) -> i64 {
    (t as i128 * 100_000 / 9) as i64
}

/// Stitches `parts` into one MP4 written to `out` from its current position.
/// `out` is only written to, never seeked; flushing is done, syncing is the
/// caller's business.
pub fn stitch<W: Write + Send>(parts: &[Part], out: W) -> Result<Report> {
    if parts.is_empty() {
        return Err(StitchError::NoInput("no parts".into()));
    }
    if let Some(i) = parts.iter().position(|p| p.segments.is_empty()) {
        return Err(StitchError::NoInput(format!(
            "part {i} has no segment files"
        )));
    }
    let plan = plan(parts)?;
    let (sha, bytes) = copy(parts, &plan, out)?;
    let mut report = plan.report;
    report.bytes_written = bytes;
    report.sha256 = sha;
    log::info!(
        target: "stitch",
        "stitched {} parts: {} video + {} audio samples, {:.3} s, {} bytes",
        parts.len(),
        report.video_samples,
        report.audio_samples,
        report.duration_ns as f64 / 1e9,
        bytes
    );
    let damaged: u32 = report.parts.iter().map(|p| p.dropped_damaged_units).sum();
    if damaged > 0 {
        log::warn!(target: "stitch", "left out {damaged} frames that lost bytes in the journal, or referred to one that did");
    }
    Ok(report)
}

/// One sample as the demux walk hands it over.
enum Sample<'a> {
    Video {
        pts: i64,
        dts: i64,
        au: &'a [u8],
    },
    Audio {
        pts: i64,
        frame: &'a [u8],
        config: adts::Config,
    },
}

/// Unwraps 33-bit timestamps relative to the previous one seen in the part.
#[derive(Default)]
struct Unwrap(Option<i64>);

impl Unwrap {
    fn next(&mut self, raw: u64) -> i64 {
        let v = match self.0 {
            None => raw as i64,
            Some(last) => {
                let d = (raw as i64 - last).rem_euclid(WRAP);
                last + if d >= WRAP / 2 { d - WRAP } else { d }
            }
        };
        self.0 = Some(v);
        v
    }
}

/// Demuxes one part and calls `f` for every sample, with unwrapped times.
/// Returns the number of units dropped at a torn tail. Both passes use this,
/// so they see exactly the same samples.
fn walk_part(
    index: usize,
    part: &Part,
    mut f: impl FnMut(Sample<'_>, &Pos) -> Result<()>,
) -> Result<Dropped> {
    let mut unwrap = Unwrap::default();
    let mut dropped = 0;
    // After a video PES was dropped for lost packets, the pictures up to the
    // next keyframe refer to it: they are dropped too, so the file shows the
    // last good picture for up to a GOP instead of a smeared one.
    let mut await_key = false;
    let mut skipped_to_key = 0;
    let stats = ts::demux_part(&part.segments, part.may_be_torn, |pes| {
        if pes.kind == Kind::Video && (await_key || pes.after_loss) {
            await_key = !h264::is_key(pes.data);
            if await_key {
                skipped_to_key += 1;
                return Ok(());
            }
        }
        let pts = pes
            .pts
            .ok_or_else(|| error::malformed(pes.pos, format!("{:?} PES without PTS", pes.kind)))?;
        let pts = unwrap.next(pts);
        match pes.kind {
            Kind::Video => {
                let dts = unwrap.next(pes.dts.unwrap_or(pes.pts.unwrap_or_default()));
                f(
                    Sample::Video {
                        pts,
                        dts,
                        au: pes.data,
                    },
                    pes.pos,
                )
            }
            Kind::Audio => {
                let mut rest = pes.data;
                let mut n = 0i64;
                while !rest.is_empty() {
                    let Some(fr) = adts::parse(rest, pes.pos)? else {
                        // An ADTS frame cut short: only a torn tail does that.
                        dropped += 1;
                        break;
                    };
                    let rate = fr.config.sample_rate() as i64;
                    let frame_pts = pts + n * adts::FRAME_SAMPLES as i64 * 90_000 / rate;
                    f(
                        Sample::Audio {
                            pts: frame_pts,
                            frame: &rest[fr.header_len..fr.frame_len],
                            config: fr.config,
                        },
                        pes.pos,
                    )?;
                    rest = &rest[fr.frame_len..];
                    n += 1;
                }
                Ok(())
            }
        }
    })?;
    if !stats.has_video {
        return Err(StitchError::NoVideo {
            part: index,
            first_file: part.segments[0].clone(),
        });
    }
    Ok(Dropped {
        tail: dropped + stats.dropped_tail,
        damaged: stats.dropped_damaged + skipped_to_key,
    })
}

/// Samples [`walk_part`] left out of a part.
#[derive(Default, Clone, Copy)]
struct Dropped {
    /// Cut short at the part's end.
    tail: u32,
    /// Lost packets inside the part, or referred to a picture that did.
    damaged: u32,
}

/// The result of pass 1.
struct Plan {
    tracks: Vec<Track>,
    /// Track index (into `tracks`) of every sample in stream order.
    order: Vec<u8>,
    /// The chunks in mdat order, as (track, sample count).
    chunks: Vec<(u8, u32)>,
    report: Report,
}

struct VIn {
    pts: i64,
    dts: i64,
    size: u32,
    key: bool,
}

/// What pass 1 learned from one part, before it is placed on the timeline.
struct PartScan {
    video: Vec<VIn>,
    audio: Vec<(i64, u32)>,
    /// Track (0 video, 1 audio) of each sample in stream order.
    order: Vec<u8>,
    dropped: Dropped,
    params: h264::ParamSets,
    audio_config: Option<(adts::Config, Pos)>,
}

/// Pass 1 for one part: sample sizes, flags and unwrapped times.
fn scan_part(index: usize, part: &Part) -> Result<PartScan> {
    let mut scan = PartScan {
        video: Vec::new(),
        audio: Vec::new(),
        order: Vec::new(),
        dropped: Dropped::default(),
        params: h264::ParamSets::default(),
        audio_config: None,
    };
    scan.dropped = walk_part(index, part, |s, pos| {
        match s {
            Sample::Video { pts, dts, au } => {
                let info = h264::scan_au(au, pos, &mut scan.params)?;
                if scan.video.is_empty() && !info.key {
                    log::warn!(target: "stitch", "{pos}: part {index} does not start with a keyframe");
                }
                scan.video.push(VIn {
                    pts,
                    dts,
                    size: info.size,
                    key: info.key,
                });
                scan.order.push(0);
            }
            Sample::Audio { pts, frame, config } => {
                check_audio(&mut scan.audio_config, config, pos)?;
                scan.audio.push((pts, frame.len() as u32));
                scan.order.push(1);
            }
        }
        Ok(())
    })?;
    if scan.video.is_empty() {
        return Err(StitchError::EmptyPart {
            part: index,
            first_file: part.segments[0].clone(),
        });
    }
    Ok(scan)
}

/// Records the first AAC configuration seen and refuses a different one.
fn check_audio(
    known: &mut Option<(adts::Config, Pos)>,
    config: adts::Config,
    pos: &Pos,
) -> Result<()> {
    match known {
        None => *known = Some((config, pos.clone())),
        Some((c, _)) if *c == config => {}
        Some(_) => {
            return Err(StitchError::Incompatible {
                pos: pos.clone(),
                what: "AAC configuration",
            })
        }
    }
    Ok(())
}

/// Runs [`scan_part`] for all parts on up to four threads (parts are
/// independent until they are placed on the timeline) and returns the
/// results in part order.
fn scan_parts(parts: &[Part]) -> Vec<Result<PartScan>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(parts.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::from_iter((0..parts.len()).map(|_| None)));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(part) = parts.get(i) else { break };
                let r = scan_part(i, part);
                results.lock().expect("no panics while holding the lock")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("no panics while holding the lock")
        .into_iter()
        .map(|r| r.expect("every part was scanned"))
        .collect()
}

/// Pass 1: the sample tables and the output timeline.
fn plan(parts: &[Part]) -> Result<Plan> {
    let mut params = h264::ParamSets::default();
    let mut audio_config: Option<(adts::Config, Pos)> = None;
    let mut tl = Timeline::default();
    let mut order = Vec::new();
    let mut part_ends = Vec::new();
    let mut reports = Vec::new();
    for (index, scan) in scan_parts(parts).into_iter().enumerate() {
        let scan = scan?;
        let pos = Pos {
            file: parts[index].segments[0].clone(),
            offset: 0,
        };
        params.merge(scan.params, &pos)?;
        if let Some((config, pos)) = &scan.audio_config {
            check_audio(&mut audio_config, *config, pos)?;
        }
        let rate = audio_config
            .as_ref()
            .map_or(48_000, |(c, _)| c.sample_rate());
        let mut r = tl.add_part(&scan.video, &scan.audio, rate);
        r.dropped_tail_units = scan.dropped.tail;
        r.dropped_damaged_units = scan.dropped.damaged;
        log::debug!(target: "stitch", "part {index}: {r:?}");
        order.extend_from_slice(&scan.order);
        part_ends.push(order.len());
        reports.push(r);
    }
    let sps = params
        .sps
        .ok_or_else(|| malformed_first(parts, "no H.264 SPS in the stream"))?;
    let pps = params
        .pps
        .ok_or_else(|| malformed_first(parts, "no H.264 PPS in the stream"))?;
    let (width, height) = h264::sps_dimensions(&sps)
        .ok_or_else(|| malformed_first(parts, "cannot parse the H.264 SPS"))?;
    let video_entry = Entry::Video {
        width,
        height,
        avcc: h264::avcc_record(&sps, &pps),
    };
    let mut tracks = vec![tl.video_track(video_entry)];
    if let Some((config, _)) = audio_config {
        tracks.push(tl.audio_track(config));
    }
    let chunks = layout_chunks(&mut tracks, &order, &part_ends);
    let duration = tl.offset;
    Ok(Plan {
        report: Report {
            parts: reports,
            video_samples: tracks[0].sizes.len() as u64,
            audio_samples: tracks.get(1).map_or(0, |t| t.sizes.len() as u64),
            duration_ns: ticks_to_ns(duration) as u64,
            bytes_written: 0,
            sha256: String::new(),
        },
        tracks,
        order,
        chunks,
    })
}

fn malformed_first(parts: &[Part], what: &str) -> StitchError {
    error::malformed(
        &Pos {
            file: parts[0].segments[0].clone(),
            offset: 0,
        },
        what,
    )
}

/// Places samples on the output timeline, part by part.
#[derive(Default)]
struct Timeline {
    /// Where the next part starts on the output timeline (90 kHz).
    offset: i64,
    /// Video media time minus output decode time (≥ 0 with B-frames).
    video_shift: Option<i64>,
    /// The first video presentation time on the output timeline.
    video_first_pres: Option<i64>,
    video_times: Vec<u64>,
    video_cts: Vec<u32>,
    video_sizes: Vec<u32>,
    video_sync: Vec<u32>,
    video_last_dur: u32,
    video_pres_end: i64,
    /// Audio time (sample-rate units) of the first audio sample on the output.
    audio_origin: Option<i64>,
    audio_first_pres: Option<i64>,
    audio_times: Vec<u64>,
    audio_sizes: Vec<u32>,
    audio_rate: u32,
}

impl Timeline {
    fn add_part(&mut self, video: &[VIn], audio: &[(i64, u32)], rate: u32) -> PartReport {
        let rate_i = rate as i64;
        let frame = adts::FRAME_SAMPLES as i64;
        let audio_dur_90k = (frame * 90_000 + rate_i / 2) / rate_i;
        let video = snap_video(video);
        let video = &video[..];
        let video_min_pts = video.iter().map(|v| v.pts).min().expect("part has video");
        let base = audio
            .iter()
            .map(|a| a.0)
            .min()
            .map_or(video_min_pts, |a| a.min(video_min_pts));
        // The last positive DTS step estimates the last frame's duration.
        let vdur = video
            .windows(2)
            .rev()
            .map(|w| w[1].dts - w[0].dts)
            .find(|d| *d > 0)
            .unwrap_or(DEFAULT_FRAME_90K);
        let video_end = video.iter().map(|v| v.pts).max().unwrap() + vdur;
        let audio_end = audio
            .iter()
            .map(|a| a.0 + audio_dur_90k)
            .max()
            .unwrap_or(i64::MIN);
        let end = video_end.max(audio_end);
        let shift = self.offset - base;

        let shift_v = *self.video_shift.get_or_insert(-(video[0].dts + shift));
        self.video_first_pres.get_or_insert(video_min_pts + shift);
        for v in video {
            let mut t = v.dts + shift + shift_v;
            if let Some(&prev) = self.video_times.last() {
                if t <= prev as i64 {
                    log::warn!(target: "stitch", "video decode time not increasing ({t} after {prev}); nudged");
                    t = prev as i64 + 1;
                }
            }
            let cts = (v.pts - v.dts).max(0);
            self.video_times.push(t as u64);
            self.video_cts.push(cts as u32);
            self.video_sizes.push(v.size);
            if v.key {
                self.video_sync.push(self.video_times.len() as u32);
            }
            self.video_pres_end = self.video_pres_end.max(t + cts + vdur);
        }
        self.video_last_dur = vdur as u32;

        self.audio_rate = rate;
        for &(pts, size) in audio {
            let out = pts + shift;
            let at = ((out as i128 * rate as i128 + 45_000).div_euclid(90_000)) as i64;
            let origin = *self.audio_origin.get_or_insert(at);
            self.audio_first_pres.get_or_insert(out);
            let mut t = at - origin;
            if let Some(&prev) = self.audio_times.last() {
                let expect = prev as i64 + frame;
                if t < expect + frame / 2 {
                    if t < expect - frame / 2 {
                        log::warn!(target: "stitch", "audio frames overlap by {} samples; placed back to back", expect - t);
                    }
                    t = expect;
                }
            }
            self.audio_times.push(t as u64);
            self.audio_sizes.push(size);
        }

        let report = PartReport {
            start_ns: ticks_to_ns(self.offset) as u64,
            end_ns: ticks_to_ns(self.offset + end - base) as u64,
            input_start_ns: ticks_to_ns(base),
            input_end_ns: ticks_to_ns(end),
            video_samples: video.len() as u32,
            audio_samples: audio.len() as u32,
            dropped_tail_units: 0,
            dropped_damaged_units: 0,
        };
        self.offset += end - base;
        report
    }

    fn video_track(&mut self, entry: Entry) -> Track {
        let first_pres = self.video_first_pres.unwrap_or(0).max(0);
        let media_time = first_pres + self.video_shift.unwrap_or(0);
        let has_cts = self.video_cts.iter().any(|&c| c != 0);
        let all_sync = self.video_sync.len() == self.video_sizes.len();
        Track {
            entry,
            timescale: mp4::MOVIE_TIMESCALE,
            times: std::mem::take(&mut self.video_times),
            last_duration: self.video_last_dur,
            sizes: std::mem::take(&mut self.video_sizes),
            cts: if has_cts {
                std::mem::take(&mut self.video_cts)
            } else {
                Vec::new()
            },
            sync: (!all_sync).then(|| std::mem::take(&mut self.video_sync)),
            chunks: Vec::new(),
            empty: first_pres as u64,
            media_time: media_time as u64,
            presented: (self.video_pres_end - media_time).max(0) as u64,
        }
    }

    fn audio_track(&mut self, config: adts::Config) -> Track {
        let rate = self.audio_rate as u64;
        let mut t = Track {
            entry: Entry::Audio { config },
            timescale: self.audio_rate,
            times: std::mem::take(&mut self.audio_times),
            last_duration: adts::FRAME_SAMPLES,
            sizes: std::mem::take(&mut self.audio_sizes),
            cts: Vec::new(),
            sync: None,
            chunks: Vec::new(),
            empty: self.audio_first_pres.unwrap_or(0).max(0) as u64,
            media_time: 0,
            presented: 0,
        };
        t.presented = (t.media_duration() * 90_000 + rate / 2) / rate;
        t
    }
}

/// Removes the ±1 tick jitter that rounding nanoseconds to the 90 kHz clock
/// leaves in TS timestamps: a DTS within 2 ticks of the previous DTS plus the
/// part's median frame step is put exactly there, and a composition offset
/// (PTS − DTS) within 2 ticks of a whole number of steps is rounded to it.
/// Anything further off is a real gap or a variable frame rate and is kept;
/// the next frame snaps to it. Exact steps keep `stts` and `ctts` short, and
/// let players derive the true frame rate (ffmpeg otherwise guesses 240 fps
/// from 2999/3000/3001 steps, then a rate slightly under 30 from the seams,
/// and its frame-rate time base maps two frames onto one tick).
fn snap_video(video: &[VIn]) -> Vec<VIn> {
    let mut steps: Vec<i64> = video
        .windows(2)
        .map(|w| w[1].dts - w[0].dts)
        .filter(|d| *d > 0)
        .collect();
    steps.sort_unstable();
    let step = steps
        .get(steps.len() / 2)
        .copied()
        .unwrap_or(DEFAULT_FRAME_90K);
    let mut prev: Option<i64> = None;
    video
        .iter()
        .map(|v| {
            let dts = match prev {
                Some(p) if (v.dts - (p + step)).abs() <= 2 => p + step,
                _ => v.dts,
            };
            prev = Some(dts);
            let cts = v.pts - v.dts;
            let whole = (cts + step / 2).div_euclid(step) * step;
            let cts = if (cts - whole).abs() <= 2 { whole } else { cts };
            VIn {
                pts: dts + cts,
                dts,
                size: v.size,
                key: v.key,
            }
        })
        .collect()
}

/// A chunk closes once it spans this long (track time, first to last sample).
const CHUNK_SECONDS: u64 = 1;
/// A chunk also closes once this many samples of the stream have gone by since
/// it opened, so a track that stalls cannot make pass 2 buffer the other.
const CHUNK_MAX_SPAN: usize = 256;

/// Groups samples into chunks of about a second per track, closed at the end
/// of each part, and orders the chunks by their first sample's place in the
/// stream. Fills each track's chunk table (offsets relative to mdat's payload)
/// and returns the chunks in mdat order as (track, sample count). Pass 2
/// holds back samples of one track only while an earlier chunk of the other
/// is still open, which the two limits above keep to a few seconds of media.
fn layout_chunks(tracks: &mut [Track], order: &[u8], part_ends: &[usize]) -> Vec<(u8, u32)> {
    // (first sample's stream index, track, first sample's track index, count)
    let mut closed: Vec<(usize, u8, usize, u32)> = Vec::new();
    let mut open: Vec<Option<(usize, usize, u32)>> = vec![None; tracks.len()];
    let mut next = vec![0usize; tracks.len()];
    let mut part_end = part_ends.iter().peekable();
    for (k, &t) in order.iter().enumerate() {
        let tu = t as usize;
        let i = next[tu];
        next[tu] += 1;
        let c = open[tu].get_or_insert((k, i, 0));
        c.2 += 1;
        let track = &tracks[tu];
        let full = track.times[i] - track.times[c.1] >= track.timescale as u64 * CHUNK_SECONDS;
        let part_done = part_end.next_if(|&&e| e == k + 1).is_some();
        for (u, slot) in open.iter_mut().enumerate() {
            let close = part_done
                || (u == tu && full)
                || slot.is_some_and(|c| k + 1 - c.0 >= CHUNK_MAX_SPAN);
            if close {
                if let Some((k0, i0, n)) = slot.take() {
                    closed.push((k0, u as u8, i0, n));
                }
            }
        }
    }
    closed.extend(
        open.iter()
            .enumerate()
            .filter_map(|(u, c)| c.map(|(k0, i0, n)| (k0, u as u8, i0, n))),
    );
    closed.sort_unstable_by_key(|c| c.0);
    let mut offset = 0u64;
    closed
        .into_iter()
        .map(|(_, t, i0, n)| {
            let track = &mut tracks[t as usize];
            track.chunks.push((offset, n));
            offset += track.sizes[i0..i0 + n as usize]
                .iter()
                .map(|&s| s as u64)
                .sum::<u64>();
            (t, n)
        })
        .collect()
}

/// Pass 2: writes ftyp, moov, mdat. Returns (SHA-256 hex, bytes written).
fn copy<W: Write + Send>(parts: &[Part], plan: &Plan, mut out: W) -> Result<(String, u64)> {
    let payload: u64 = plan
        .tracks
        .iter()
        .flat_map(|t| t.sizes.iter())
        .map(|&s| s as u64)
        .sum();
    let ftyp = mp4::ftyp();
    let mdat_header = mp4::mdat_header(payload);
    let head = |co64| {
        let len = mp4::moov(&plan.tracks, 0, co64).len() as u64;
        (ftyp.len() as u64 + len + mdat_header.len() as u64, len)
    };
    let (data_start, _) = head(false);
    let co64 = data_start + payload > u32::MAX as u64;
    let (data_start, _) = head(co64);
    let moov = mp4::moov(&plan.tracks, data_start, co64);

    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(3);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
        let writer = s.spawn(move || -> Result<(String, u64)> {
            let mut sha = Sha256::new();
            let mut n = 0u64;
            for buf in rx {
                sha.update(&buf);
                out.write_all(&buf).map_err(StitchError::Write)?;
                n += buf.len() as u64;
                // The producer may be gone already; then the buffer is freed.
                let _ = spare_tx.send(buf);
            }
            out.flush().map_err(StitchError::Write)?;
            let hex = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
            Ok((hex, n))
        });
        let mut cur = Vec::with_capacity(WRITE_BUF + moov.len());
        cur.extend_from_slice(&ftyp);
        cur.extend_from_slice(&moov);
        cur.extend_from_slice(&mdat_header);
        let produced = produce(parts, plan, &mut cur, |buf| {
            let fresh = spare_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(WRITE_BUF));
            let full = std::mem::replace(buf, fresh);
            buf.clear();
            // A send error means the writer failed; its error is reported below.
            tx.send(full).is_ok()
        })
        .map(|()| {
            if !cur.is_empty() {
                let _ = tx.send(std::mem::take(&mut cur));
            }
        });
        drop(tx);
        let written = writer.join().expect("writer thread panicked");
        match (produced, written) {
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), Ok((hex, n))) => {
                let expected = data_start + payload;
                if n != expected {
                    return Err(StitchError::Write(std::io::Error::other(format!(
                        "wrote {n} bytes, planned {expected}"
                    ))));
                }
                Ok((hex, n))
            }
        }
    })
}

/// Pass 2's reordering from stream order into the planned chunk order.
struct Reorder<'a> {
    plan: &'a Plan,
    /// Index of the chunk being written (`plan.chunks`), and how many of its
    /// samples are still to come.
    head: usize,
    head_left: u32,
    /// Per track: samples already in the output, and bytes (with their sample
    /// count) held back because an earlier chunk of another track is open.
    written: [usize; 2],
    held: [Vec<u8>; 2],
    held_n: [usize; 2],
}

impl Reorder<'_> {
    /// Whether the next sample of track `t` goes straight to the output.
    fn direct(&self, t: usize) -> bool {
        self.held_n[t] == 0 && self.head_left > 0 && self.plan.chunks[self.head].0 as usize == t
    }

    /// Accounts for one sample written straight to the output.
    fn wrote(&mut self, t: usize, out: &mut Vec<u8>) {
        self.written[t] += 1;
        self.head_left -= 1;
        self.advance(out);
    }

    /// Moves to the next chunk while the current one is complete, moving
    /// held-back samples of its track to the output.
    fn advance(&mut self, out: &mut Vec<u8>) {
        while self.head_left == 0 {
            self.head += 1;
            let Some(&(t, n)) = self.plan.chunks.get(self.head) else {
                return;
            };
            let t = t as usize;
            self.head_left = n;
            let m = self.held_n[t].min(n as usize);
            if m > 0 {
                let sizes = &self.plan.tracks[t].sizes[self.written[t]..self.written[t] + m];
                let bytes: usize = sizes.iter().map(|&s| s as usize).sum();
                out.extend_from_slice(&self.held[t][..bytes]);
                self.held[t].drain(..bytes);
                self.held_n[t] -= m;
                self.written[t] += m;
                self.head_left -= m as u32;
            }
        }
    }
}

/// Streams every sample of every part into `buf` in the planned chunk order,
/// calling `flush` whenever `buf` holds a write buffer's worth. Checks each
/// sample against pass 1.
fn produce(
    parts: &[Part],
    plan: &Plan,
    buf: &mut Vec<u8>,
    mut flush: impl FnMut(&mut Vec<u8>) -> bool,
) -> Result<()> {
    let mut r = Reorder {
        plan,
        head: 0,
        head_left: plan.chunks.first().map_or(0, |c| c.1),
        written: [0; 2],
        held: [Vec::new(), Vec::new()],
        held_n: [0; 2],
    };
    let mut k = 0usize;
    let mut writer_gone = false;
    for (index, part) in parts.iter().enumerate() {
        walk_part(index, part, |s, pos| {
            if writer_gone {
                return Ok(());
            }
            let t = match s {
                Sample::Video { .. } => 0,
                Sample::Audio { .. } => 1,
            };
            let direct = r.direct(t);
            let target = if direct { &mut *buf } else { &mut r.held[t] };
            let n = match s {
                Sample::Video { au, .. } => h264::write_avcc(au, target),
                Sample::Audio { frame, .. } => {
                    target.extend_from_slice(frame);
                    frame.len()
                }
            };
            let planned = plan.order.get(k).copied();
            let size = plan
                .tracks
                .get(t)
                .and_then(|tr| tr.sizes.get(r.written[t] + r.held_n[t]))
                .copied();
            if planned != Some(t as u8) || size != Some(n as u32) {
                return Err(StitchError::Changed {
                    pos: pos.clone(),
                    what: format!("sample {k}: planned track {planned:?} size {size:?}, found track {t} size {n}"),
                });
            }
            if direct {
                r.wrote(t, buf);
            } else {
                r.held_n[t] += 1;
            }
            k += 1;
            if buf.len() >= WRITE_BUF && !flush(buf) {
                writer_gone = true;
            }
            Ok(())
        })?;
    }
    if k != plan.order.len() || r.head < plan.chunks.len() {
        return Err(StitchError::Changed {
            pos: Pos {
                file: parts[parts.len() - 1]
                    .segments
                    .last()
                    .cloned()
                    .unwrap_or_default(),
                offset: 0,
            },
            what: format!(
                "{k} samples found, {} planned; chunk {} of {} unfinished",
                plan.order.len(),
                r.head,
                plan.chunks.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snap_video_removes_rounding_jitter_but_keeps_gaps() {
        let v = |dts: i64, pts: i64| VIn {
            pts,
            dts,
            size: 1,
            key: false,
        };
        // (DTS, PTS) in, (DTS, PTS) out.
        let cases = [
            (
                vec![(0, 6001), (3000, 15000), (5999, 8999), (9001, 12001)],
                vec![(0, 6000), (3000, 15000), (6000, 9000), (9000, 12000)],
            ),
            // A 10-tick gap is real; the grid continues from it.
            (
                vec![
                    (0, 0),
                    (3000, 3000),
                    (6000, 6000),
                    (9010, 9010),
                    (12010, 12010),
                    (15011, 15011),
                ],
                vec![
                    (0, 0),
                    (3000, 3000),
                    (6000, 6000),
                    (9010, 9010),
                    (12010, 12010),
                    (15010, 15010),
                ],
            ),
        ];
        for (input, expect) in cases {
            let got: Vec<(i64, i64)> =
                snap_video(&input.iter().map(|&(d, p)| v(d, p)).collect::<Vec<_>>())
                    .iter()
                    .map(|x| (x.dts, x.pts))
                    .collect();
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn unwrap_follows_the_33_bit_wrap_both_ways() {
        let mut u = Unwrap::default();
        assert_eq!(u.next(WRAP as u64 - 10), WRAP - 10);
        assert_eq!(u.next(5), WRAP + 5);
        assert_eq!(u.next(WRAP as u64 - 3), WRAP - 3);
        assert_eq!(u.next(100), WRAP + 100);
    }
}
