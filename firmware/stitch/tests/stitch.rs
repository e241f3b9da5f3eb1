//! End-to-end tests of the stitcher on real media: parts encoded by
//! GStreamer (x264 + AAC in mpegtsmux, as the capture pipeline does), given
//! arbitrary clock bases (one across the 33-bit PTS wrap), cut into segments
//! at keyframes, stitched, then decoded by ffmpeg and measured by ffprobe.
//! A test whose tools are missing says so and skips; CI installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use lectern_stitch::{stitch, synth, verify, Part, StitchError};
use serde_json::Value;

const WRAP: i64 = 1 << 33;
/// One AAC frame at 48 kHz, in seconds.
const AUDIO_FRAME_S: f64 = 1024.0 / 48_000.0;

fn have_tools() -> bool {
    let ok = ["gst-launch-1.0", "ffmpeg", "ffprobe"].iter().all(|t| {
        Command::new(t)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
            || Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
    });
    if !ok {
        eprintln!(
            "SKIPPED: gst-launch-1.0, ffmpeg and ffprobe are needed (scripts/install-deps.sh)"
        );
    }
    ok
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Encodes `frames` frames of `width`x240@30 video (none if `width` is 0)
/// plus as long a 48 kHz tone,
/// with keyframes every 30 frames, with the capture pipeline's encoder
/// settings (x264 veryfast, so B-frames and composition offsets).
fn encode_part(path: &Path, frames: u32, width: u32) -> Result<()> {
    let video = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={width},height=240,framerate=30/1 \
         ! videoconvert ! video/x-raw,format=I420 ! x264enc key-int-max=30 speed-preset=veryfast \
         ! h264parse config-interval=-1 ! m. "
    );
    let pipeline = format!(
        "mpegtsmux name=m ! filesink location={} {} audiotestsrc num-buffers={frames} samplesperbuffer=1600 \
         ! audio/x-raw,rate=48000,channels=2 ! avenc_aac ! aacparse ! m.",
        path.display(),
        if width > 0 { video } else { String::new() },
    );
    run(Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace()))?;
    Ok(())
}

fn ffprobe_json(path: &Path, args: &[&str]) -> Result<Value> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path))?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or(f64::NAN)
}

/// (video packets, audio packets, format duration s) of a media file.
fn probe_counts(path: &Path) -> Result<(u64, u64, f64)> {
    let p = synth::ffprobe(path)?;
    Ok((p.video_packets, p.audio_packets, p.duration_s))
}

/// Packets as (is_video, pts seconds, duration seconds).
fn packets(path: &Path) -> Result<Vec<(bool, f64, f64)>> {
    let j = ffprobe_json(
        path,
        &["-show_entries", "packet=codec_type,pts_time,duration_time"],
    )?;
    Ok(j["packets"]
        .as_array()
        .context("packets")?
        .iter()
        .map(|p| {
            (
                p["codec_type"] == "video",
                num(&p["pts_time"]),
                num(&p["duration_time"]),
            )
        })
        .collect())
}

/// Presentation start of each stream (video, audio) among packets in [from, to).
fn starts(pk: &[(bool, f64, f64)], from: f64, to: f64) -> (f64, f64) {
    let first = |video: bool| {
        pk.iter()
            .filter(|p| p.0 == video && p.1 >= from - 1e-6 && p.1 < to - 1e-6)
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
    };
    (first(true), first(false))
}

/// Presentation end of each stream (video, audio).
fn ends(pk: &[(bool, f64, f64)]) -> (f64, f64) {
    let last = |video: bool| {
        pk.iter()
            .filter(|p| p.0 == video)
            .map(|p| p.1 + p.2)
            .fold(f64::MIN, f64::max)
    };
    (last(true), last(false))
}

fn first_pts_90k(ts: &[u8]) -> Result<i64> {
    let j = String::from_utf8_lossy(ts);
    drop(j);
    // The first PES header in the file: mpegtsmux starts with PAT, PMT, then
    // a video PES with PTS (and DTS), so scan for the first start code.
    for pkt in ts.chunks_exact(188) {
        if pkt[1] & 0x40 == 0 || pkt[1] & 0x1f == 0 && pkt[2] < 0x20 {
            continue;
        }
        let p = if pkt[3] & 0x20 != 0 {
            5 + pkt[4] as usize
        } else {
            4
        };
        let pes = &pkt[p..];
        if pes.len() > 14 && pes[..3] == [0, 0, 1] && pes[7] & 0x80 != 0 {
            let b = &pes[9..14];
            return Ok((((b[0] >> 1) & 7) as i64) << 30
                | (b[1] as i64) << 22
                | ((b[2] >> 1) as i64) << 15
                | (b[3] as i64) << 7
                | (b[4] >> 1) as i64);
        }
    }
    anyhow::bail!("no PES with a PTS")
}

/// A recording of three parts written as segment files under `dir`. Returns
/// the parts and the unsegmented TS of each (for ffprobe).
struct Recording {
    parts: Vec<Part>,
    whole: Vec<PathBuf>,
}

fn make_recording(dir: &Path, frames: &[u32], bases: &[i64]) -> Result<Recording> {
    let mut parts = Vec::new();
    let mut whole = Vec::new();
    for (i, (&n, &base)) in frames.iter().zip(bases).enumerate() {
        let raw = dir.join(format!("raw-{i}.ts"));
        encode_part(&raw, n, 320)?;
        let mut ts = std::fs::read(&raw)?;
        let first = first_pts_90k(&ts)?;
        synth::retime(&mut ts, base - first);
        let part_ts = dir.join(format!("part-{i}.ts"));
        std::fs::write(&part_ts, &ts)?;
        let part_dir = dir.join(format!("part-{:04}", i + 1));
        std::fs::create_dir_all(&part_dir)?;
        let mut segments = Vec::new();
        for (k, seg) in synth::split_at_keyframes(&ts, 1).into_iter().enumerate() {
            let p = part_dir.join(format!("seg-{:06}.ts", k + 1));
            std::fs::write(&p, seg)?;
            segments.push(p);
        }
        ensure!(
            segments.len() >= 2,
            "part {i} split into {} segments",
            segments.len()
        );
        parts.push(Part {
            segments,
            may_be_torn: false,
        });
        whole.push(part_ts);
    }
    Ok(Recording { parts, whole })
}

fn stitch_to(dir: &Path, parts: &[Part]) -> Result<(PathBuf, lectern_stitch::Report)> {
    let out = dir.join("out.mp4");
    let file = std::fs::File::create(&out)?;
    let report = stitch(parts, file)?;
    Ok((out, report))
}

/// MD5 of every decoded video frame, in presentation order.
fn frame_hashes(path: &Path) -> Result<Vec<String>> {
    let out = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect())
}

/// ffmpeg decodes the whole file with no error output at all. Frames pass
/// through with their own times (`-fps_mode passthrough`, in the file's
/// time base: `-enc_time_base -1`): a hole in the
/// video (frames left out) is the file's timing, not a decoding error, and
/// ffmpeg's constant-rate output would complain about it.
fn decodes_cleanly(path: &Path) -> Result<()> {
    let out = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args([
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "-1",
            "-f",
            "null",
            "-",
        ]))?;
    ensure!(
        out.stderr.is_empty(),
        "ffmpeg said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn three_parts_become_one_streamable_mp4_in_sync() -> Result<()> {
    if !have_tools() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    // Part 2 starts one second before the 33-bit wrap and crosses it. The
    // first part outlasts ffmpeg's 5 s probe window: a seam inside it makes
    // ffmpeg guess 240 fps and then collide frames in `-f null`'s frame-rate
    // time base (its own `-f concat -c copy` output does the same).
    let rec = make_recording(
        dir.path(),
        &[180, 60, 75],
        &[900_000, WRAP - 90_000, 12_345],
    )?;
    let (out, report) = stitch_to(dir.path(), &rec.parts)?;

    let v = verify(&out)?;
    assert!(v.moov_before_mdat(), "top level: {:?}", v.top_level);
    assert_eq!(v.top_level, ["ftyp", "moov", "mdat"]);
    decodes_cleanly(&out)?;

    // No re-encode, nothing lost: every input packet is one output sample.
    let mut input = (0, 0, 0.0);
    for w in &rec.whole {
        let (vn, an, d) = probe_counts(w)?;
        input = (input.0 + vn, input.1 + an, input.2 + d);
    }
    let (vn, an, duration) = probe_counts(&out)?;
    assert_eq!((vn, an), (input.0, input.1));
    assert_eq!((report.video_samples, report.audio_samples), (vn, an));
    assert_eq!(v.tracks[0].samples as u64, vn);
    assert_eq!(
        v.tracks[0].sync_samples,
        Some(6 + 2 + 3),
        "one keyframe per 30 frames"
    );

    // The outage is cut out: duration is the sum of the parts within a frame.
    assert!(
        (duration - input.2).abs() < 1.0 / 30.0,
        "output {duration} s, parts {} s",
        input.2
    );
    assert!((report.duration_ns as f64 / 1e9 - duration).abs() < 1.0 / 30.0);
    assert_eq!(std::fs::metadata(&out)?.len(), report.bytes_written);

    // Sync across seams: in each part, audio starts relative to video where it
    // did in the input (within an audio sample plus rounding).
    let pk = packets(&out)?;
    for (i, (part, whole)) in report.parts.iter().zip(&rec.whole).enumerate() {
        let pin = packets(whole)?;
        let (vi, ai) = starts(&pin, f64::MIN, f64::MAX);
        let (vo, ao) = starts(&pk, part.start_ns as f64 / 1e9, part.end_ns as f64 / 1e9);
        let skew = (ao - vo) - (ai - vi);
        assert!(
            skew.abs() < 0.0015,
            "part {i}: A/V offset changed by {skew} s"
        );
        if i > 0 {
            assert_eq!(
                part.start_ns,
                report.parts[i - 1].end_ns,
                "parts tile the timeline"
            );
        }
    }
    // At the end the streams end where the last part's did, relative to each other.
    let (ve, ae) = ends(&pk);
    let (vi, ai) = ends(&packets(rec.whole.last().unwrap())?);
    assert!(
        ((ae - ve) - (ai - vi)).abs() < AUDIO_FRAME_S,
        "end skew {} vs {}",
        ae - ve,
        ai - vi
    );

    // Bit-exact: the decoded pictures are the input's, in order.
    let mut expected = Vec::new();
    for w in &rec.whole {
        expected.extend(frame_hashes(w)?);
    }
    assert_eq!(frame_hashes(&out)?, expected);

    // The report's hash is the file's.
    let sha = run(Command::new("sha256sum").arg(&out))?;
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(&report.sha256));
    Ok(())
}

/// Regression for crash recovery's torn tail: the last segment of a part ends
/// in the middle of a video PES, at a packet boundary.
#[test]
fn torn_tail_still_stitches_and_decodes() -> Result<()> {
    if !have_tools() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut rec = make_recording(dir.path(), &[60, 45], &[900_000, 5_000_000])?;
    let last = rec.parts[0].segments.last().unwrap().clone();
    let bytes = std::fs::read(&last)?;
    // The last video PES start whose next video packet continues it.
    let video_pid = |p: &[u8]| u16::from_be_bytes([p[1] & 0x1f, p[2]]) == 0x41;
    let pkts: Vec<&[u8]> = bytes.chunks_exact(188).collect();
    let cut = (0..pkts.len())
        .rev()
        .find(|&i| {
            video_pid(pkts[i])
                && pkts[i][1] & 0x40 != 0
                && pkts[i + 1..]
                    .iter()
                    .find(|p| video_pid(p))
                    .is_some_and(|p| p[1] & 0x40 == 0)
        })
        .context("a multi-packet video PES")?;
    std::fs::write(&last, &bytes[..(cut + 1) * 188])?;
    rec.parts[0].may_be_torn = true;

    let (out, report) = stitch_to(dir.path(), &rec.parts)?;
    decodes_cleanly(&out)?;
    assert!(verify(&out)?.moov_before_mdat());
    assert!(
        report.parts[0].dropped_tail_units >= 1,
        "{:?}",
        report.parts[0]
    );
    // Everything before the cut survives: at most the torn frame is lost.
    let cut_file = dir.path().join("cut.ts");
    let mut all = Vec::new();
    for s in &rec.parts[0].segments {
        all.extend(std::fs::read(s)?);
    }
    std::fs::write(&cut_file, &all)?;
    let (vn_in, _, _) = probe_counts(&cut_file)?;
    let (vn_in2, _, _) = probe_counts(&rec.whole[1])?;
    let (vn, _, _) = probe_counts(&out)?;
    // ffprobe counts the torn frame too (it keeps incomplete packets).
    assert!(
        vn + 1 >= vn_in + vn_in2 && vn <= vn_in + vn_in2,
        "{vn} of {vn_in}+{vn_in2}"
    );
    Ok(())
}

/// Writes `pkts` to `path` without the packets `lost` picks (by index and bytes).
fn write_without(path: &Path, pkts: &[&[u8]], lost: impl Fn(usize, &[u8]) -> bool) -> Result<()> {
    let kept: Vec<u8> = pkts
        .iter()
        .enumerate()
        .filter(|(i, p)| !lost(*i, p))
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    Ok(std::fs::write(path, kept)?)
}

/// Packets lost inside a part (a chunk the journal never got): the frame
/// that lost them, and the frames up to the next keyframe that refer to it,
/// are left out, so the file decodes without a damaged picture; a lost audio
/// packet costs its own frames only. Without the continuity check the torn
/// frame went into the MP4.
#[test]
fn packets_lost_inside_a_part_drop_the_damaged_frames_only() -> Result<()> {
    if !have_tools() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let rec = make_recording(dir.path(), &[90, 45], &[900_000, 5_000_000])?;
    let seg = rec.parts[0].segments[1].clone();
    let bytes = std::fs::read(&seg)?;
    let pkts: Vec<&[u8]> = bytes.chunks_exact(188).collect();
    let pid = |p: &[u8]| u16::from_be_bytes([p[1] & 0x1f, p[2]]);
    let pusi = |p: &[u8]| p[1] & 0x40 != 0;
    // random_access_indicator: mpegtsmux sets it on a keyframe's first packet.
    let key = |p: &[u8]| p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x40 != 0;
    // The second packet of the third non-key picture in the segment.
    let starts: Vec<usize> = (0..pkts.len())
        .filter(|&i| pid(pkts[i]) == 0x41 && pusi(pkts[i]) && !key(pkts[i]))
        .collect();
    let start = *starts.get(2).context("three P pictures in the segment")?;
    let lost_video = (start + 1..pkts.len())
        .find(|&i| pid(pkts[i]) == 0x41)
        .filter(|&i| !pusi(pkts[i]))
        .context("a picture of more than one packet")?;
    // And one audio packet a few packets further on.
    let lost_audio = (lost_video + 1..pkts.len())
        .find(|&i| pid(pkts[i]) == 0x42)
        .context("audio after it")?;
    write_without(&seg, &pkts, |i, _| i == lost_video || i == lost_audio)?;

    let (out, report) = stitch_to(dir.path(), &rec.parts)?;
    decodes_cleanly(&out)?;
    let (vn_in, an_in, _) = probe_counts(&rec.whole[0])?;
    let p = &report.parts[0];
    // The damaged picture and the rest of its GOP (keyframes every 30): at
    // least the picture itself, at most a GOP.
    assert!((1..=30).contains(&p.dropped_damaged_units), "{p:?}");
    assert_eq!(
        u64::from(p.video_samples) + u64::from(p.dropped_damaged_units),
        vn_in,
        "{p:?}"
    );
    // One AAC frame lost (one PES); no other dropped.
    assert_eq!(u64::from(p.audio_samples), an_in - 1, "{p:?}");
    assert_eq!(
        (p.dropped_tail_units, report.parts[1].dropped_damaged_units),
        (0, 0),
        "{report:?}"
    );

    // A whole picture lost (every packet of one bounded PES, so no PES is left cut short):
    // the pictures after it up to the keyframe refer to it and are left out.
    let seg = rec.parts[1].segments[1].clone();
    let bytes = std::fs::read(&seg)?;
    let pkts: Vec<&[u8]> = bytes.chunks_exact(188).collect();
    let starts: Vec<usize> = (0..pkts.len())
        .filter(|&i| pid(pkts[i]) == 0x41 && pusi(pkts[i]))
        .collect();
    let (from, to) = starts
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|&(a, _)| !key(pkts[a]))
        .nth(2)
        .context("three P pictures in a segment of part 2")?;
    write_without(&seg, &pkts, |i, p| {
        (from..to).contains(&i) && pid(p) == 0x41
    })?;
    let (out, report) = stitch_to(dir.path(), &rec.parts)?;
    decodes_cleanly(&out)?;
    let (vn_in2, _, _) = probe_counts(&rec.whole[1])?;
    let p2 = &report.parts[1];
    // The lost picture is not counted (nothing of it is left); what refers to it is.
    assert!((1..=30).contains(&p2.dropped_damaged_units), "{p2:?}");
    assert_eq!(
        u64::from(p2.video_samples) + u64::from(p2.dropped_damaged_units) + 1,
        vn_in2,
        "{p2:?}"
    );
    Ok(())
}

#[test]
fn garbage_is_named_with_file_and_offset() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("seg-000001.ts");
    let mut bytes = vec![0x47u8; 188];
    bytes[1] = 0x1f; // a null packet: fine
    bytes[2] = 0xff;
    bytes[3] = 0x10;
    bytes.extend(std::iter::repeat_n(0x42u8, 188 * 3));
    std::fs::write(&junk, &bytes)?;
    let parts = [Part {
        segments: vec![junk.clone()],
        may_be_torn: false,
    }];
    let err = stitch(&parts, std::io::sink()).unwrap_err();
    match &err {
        StitchError::NotTs { pos, found } => {
            assert_eq!(
                (pos.file.as_path(), pos.offset, *found),
                (junk.as_path(), 188, 0x42)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("seg-000001.ts at byte 188"),
        "{err}"
    );

    let missing = dir.path().join("nope.ts");
    let parts = [Part {
        segments: vec![missing],
        may_be_torn: false,
    }];
    assert!(matches!(
        stitch(&parts, std::io::sink()),
        Err(StitchError::Read { .. })
    ));
    assert!(matches!(
        stitch(&[], std::io::sink()),
        Err(StitchError::NoInput(_))
    ));
    Ok(())
}

#[test]
fn audio_only_part_is_no_video() -> Result<()> {
    if !have_tools() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ts = dir.path().join("audio.ts");
    encode_part(&ts, 30, 0)?;
    let parts = [Part {
        segments: vec![ts.clone()],
        may_be_torn: false,
    }];
    match stitch(&parts, std::io::sink()) {
        Err(StitchError::NoVideo {
            part: 0,
            first_file,
        }) => assert_eq!(first_file, ts),
        other => panic!("unexpected {other:?}"),
    }
    Ok(())
}

/// A part from an encoder with other settings cannot share the first part's
/// `avcC`; the error names the part's file instead of writing a broken MP4.
#[test]
fn different_picture_size_is_incompatible() -> Result<()> {
    if !have_tools() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a.ts"), dir.path().join("b.ts"));
    encode_part(&a, 30, 320)?;
    encode_part(&b, 30, 160)?;
    let parts = [
        Part {
            segments: vec![a],
            may_be_torn: false,
        },
        Part {
            segments: vec![b.clone()],
            may_be_torn: false,
        },
    ];
    match stitch(&parts, std::io::sink()) {
        Err(StitchError::Incompatible { pos, what }) => {
            assert_eq!((pos.file, what), (b, "H.264 SPS"));
        }
        other => panic!("unexpected {other:?}"),
    }
    Ok(())
}
