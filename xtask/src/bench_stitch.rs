//! `cargo xtask bench-stitch`: the stitching benchmark of issue 4 (docs/benchmarks.md, "Stitch").
//!
//! It builds a synthetic recording of N minutes (default 60) in three parts of 2 s MPEG-TS
//! segments, the way the capture pipeline and journal lay them out: a clip of 720p30 x264
//! veryfast at 4000 kbit/s (scrolling `smpte` bars, which use the whole bitrate) plus AAC 48 kHz
//! is encoded once by GStreamer, cut at its keyframes with PAT/PMT copied in front, and repeated
//! end to end with every PTS/DTS/PCR rewritten (`lectern_stitch::synth`). The parts get unrelated
//! clock bases, and the middle one crosses the 33-bit PTS wrap. Clip and recording are cached in
//! OUT, so reruns only time.
//!
//! Then, in the same run, it times three ways to make one MP4 from the same segments:
//! the release-built stitcher (`firmware/stitch/examples/stitch.rs`), `ffmpeg -f concat -safe 0
//! -i list.txt -c copy`, and the same with `-movflags +faststart` (index in front, as ours).
//! Caches cannot be dropped here, so each runs twice in turn and the second (warm page cache)
//! wall time is reported; `sync` runs before each (untimed), so no run pays for writing back the
//! previous one's output. ffprobe then counts both outputs' packets and reads their durations.
//!
//! Results go to stdout as a markdown table and to OUT/report.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

/// Command-line options.
pub struct Options {
    pub minutes: u32,
    pub out: PathBuf,
    /// Length of the encoded clip that is repeated, seconds.
    pub clip_seconds: u32,
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Options> {
        let mut o = Options {
            minutes: 60,
            out: root.join("target/bench-stitch"),
            clip_seconds: 60,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--minutes" => o.minutes = value()?.parse().context("--minutes N")?,
                "--out" => o.out = PathBuf::from(value()?),
                "--clip-seconds" => {
                    o.clip_seconds = value()?.parse().context("--clip-seconds S")?
                }
                _ => bail!("unknown option {a}\n{}", crate::USAGE),
            }
        }
        ensure!(
            o.minutes >= 1 && o.clip_seconds >= 4,
            "--minutes ≥ 1, --clip-seconds ≥ 4"
        );
        ensure!(
            o.clip_seconds.is_multiple_of(2),
            "--clip-seconds must be even (2 s GOPs)"
        );
        if o.out.is_relative() {
            o.out = std::env::current_dir()?.join(&o.out);
        }
        Ok(o)
    }
}

const PARTS: usize = 3;
const WRAP: i64 = 1 << 33;

pub fn run(opts: Options, root: &Path) -> Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;

    crate::cargo_build_release(root, &["-p", "lectern-stitch", "--example", "stitch"])?;
    let stitcher = crate::target_dir(root).join("release/examples/stitch");

    let clip = encode_clip(&out, opts.clip_seconds)?;
    let rec = build_recording(&out, &clip, opts.minutes, opts.clip_seconds)?;
    let expected_s = rec.period_90k as f64 * rec.copies as f64 / 90_000.0;
    let rec = rec.parts;
    let media_bytes: u64 = rec
        .iter()
        .flatten()
        .map(|p| p.metadata().map_or(0, |m| m.len()))
        .sum();

    // Inputs for the three contenders.
    let mut lists = Vec::new();
    for (i, segs) in rec.iter().enumerate() {
        let list = out.join(format!("part-{}.list", i + 1));
        let text: String = segs.iter().map(|p| format!("{}\n", p.display())).collect();
        std::fs::write(&list, text)?;
        lists.push(list);
    }
    let concat = out.join("concat.txt");
    let text: String = rec
        .iter()
        .flatten()
        .map(|p| format!("file '{}'\n", p.display()))
        .collect();
    std::fs::write(&concat, text)?;

    let ours = out.join("lectern.mp4");
    let ff = out.join("ffmpeg.mp4");
    let ff_fast = out.join("ffmpeg-faststart.mp4");
    let ffmpeg = |dst: &Path, faststart: bool| {
        let mut c = Command::new("ffmpeg");
        c.args([
            "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
        ])
        .arg(&concat);
        c.args(["-c", "copy"]);
        if faststart {
            c.args(["-movflags", "+faststart"]);
        }
        c.arg(dst);
        c
    };
    let mut contenders: Vec<(&str, PathBuf, Command)> = vec![
        ("lectern-stitch", ours.clone(), {
            let mut c = Command::new(&stitcher);
            c.arg(&ours).args(&lists);
            c
        }),
        ("ffmpeg -f concat -c copy", ff.clone(), ffmpeg(&ff, false)),
        (
            "ffmpeg … -movflags +faststart",
            ff_fast.clone(),
            ffmpeg(&ff_fast, true),
        ),
    ];
    // Two rounds, contenders interleaved; the second round's times are reported.
    let mut walls = vec![[0f64; 2]; contenders.len()];
    for round in [0, 1] {
        for ((name, dst, cmd), wall) in contenders.iter_mut().zip(walls.iter_mut()) {
            let _ = std::fs::remove_file(&*dst);
            // Start every run with no dirty pages queued, so that nobody pays
            // for writing back the previous contender's output.
            Command::new("sync").status()?;
            let t = Instant::now();
            let o = cmd.output().with_context(|| format!("run {name}"))?;
            wall[round] = t.elapsed().as_secs_f64();
            ensure!(
                o.status.success(),
                "{name} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            eprintln!("xtask: round {} {name}: {:.2} s", round + 1, wall[round]);
            if !o.stderr.is_empty() {
                eprintln!("{}", String::from_utf8_lossy(&o.stderr).trim_end());
            }
        }
    }

    let media_s = opts.minutes as f64 * 60.0;
    let ff_wall = walls[1][1];
    let mut table = String::new();
    writeln!(table, "| | wall s (run 1) | wall s (run 2, reported) | × real time | ratio to ffmpeg -c copy | output bytes | moov before mdat | duration s | video / audio packets |")?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|---|---:|---|")?;
    for (i, (name, dst, _)) in contenders.iter().enumerate() {
        let p = probe(dst)?;
        writeln!(
            table,
            "| {name} | {:.2} | {:.2} | {:.0}× | {:.2} | {} | {} | {:.3} | {} / {} |",
            walls[i][0],
            walls[i][1],
            media_s / walls[i][1],
            walls[i][1] / ff_wall,
            dst.metadata()?.len(),
            if p.moov_first { "yes" } else { "no" },
            p.duration,
            p.video,
            p.audio,
        )?;
    }
    let mut report = String::new();
    writeln!(
        report,
        "{} min synthetic recording ({PARTS} parts, {} segment files, {} bytes of TS; clip {} s of 720p30 x264 veryfast 4000 kbit/s + AAC 48 kHz, repeated; the parts' spans add up to {expected_s:.3} s). Warm page cache.\n",
        opts.minutes,
        rec.iter().map(Vec::len).sum::<usize>(),
        media_bytes,
        opts.clip_seconds
    )?;
    report.push_str(&table);
    print!("{report}");
    std::fs::write(out.join("report.md"), &report)?;
    Ok(())
}

/// What ffprobe says about an output.
struct Probe {
    duration: f64,
    video: u64,
    audio: u64,
    moov_first: bool,
}

fn probe(path: &Path) -> Result<Probe> {
    let p = lectern_stitch::synth::ffprobe(path)?;
    let moov_first = lectern_stitch::verify(path)?.moov_before_mdat();
    Ok(Probe {
        duration: p.duration_s,
        video: p.video_packets,
        audio: p.audio_packets,
        moov_first,
    })
}

/// Encodes the clip once (cached as OUT/clip-Ss.ts).
fn encode_clip(out: &Path, seconds: u32) -> Result<PathBuf> {
    let clip = out.join(format!("clip-{seconds}s.ts"));
    if clip.exists() {
        return Ok(clip);
    }
    let frames = seconds * 30;
    let tmp = out.join("clip.ts.partial");
    eprintln!(
        "xtask: encoding the {seconds} s clip (once; cached as {})",
        clip.display()
    );
    let pipeline = format!(
        "mpegtsmux name=m ! filesink location={} \
         videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=4 \
         ! video/x-raw,width=1280,height=720,framerate=30/1 ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc bitrate=4000 speed-preset=veryfast key-int-max=60 ! h264parse config-interval=-1 ! m. \
         audiotestsrc num-buffers={frames} samplesperbuffer=1600 wave=sine freq=440 \
         ! audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate=128000 ! aacparse ! m.",
        tmp.display()
    );
    let st = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .status()?;
    ensure!(st.success(), "gst-launch-1.0 failed");
    std::fs::rename(&tmp, &clip)?;
    Ok(clip)
}

/// The synthetic recording: each part's segment paths in order, and how it was built.
struct Recording {
    parts: Vec<Vec<PathBuf>>,
    copies: usize,
    /// The clip's span (both streams), the step between copies.
    period_90k: i64,
}

/// Writes the recording's segments (cached: a `done` file records what was built).
fn build_recording(out: &Path, clip: &Path, minutes: u32, clip_seconds: u32) -> Result<Recording> {
    let dir = out.join("recording");
    let stamp = dir.join(format!("done-{minutes}min-{clip_seconds}s"));
    let copies = (minutes * 60).div_ceil(clip_seconds) as usize;
    ensure!(
        copies >= PARTS,
        "--minutes too short for {PARTS} parts of this clip"
    );
    // The clip's own span (min start to max end over both streams) is its period when repeated,
    // so copies abut without overlapping audio.
    let p = lectern_stitch::synth::ffprobe(clip)?;
    let start = (p.start_s * 90_000.0).round() as i64;
    let period = (p.duration_s * 90_000.0).round() as i64;
    let bytes = std::fs::read(clip)?;
    let segments = lectern_stitch::synth::split_at_keyframes(&bytes, 1);
    let bases = [
        900_000,
        WRAP - period * (copies / PARTS) as i64 / 2,
        123_456_789,
    ];
    let mut parts = Vec::new();
    let mut seq = 0;
    let fresh = !stamp.exists();
    if fresh {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "xtask: writing {copies} copies of the clip as segments under {}",
            dir.display()
        );
    }
    for (p, base) in bases.iter().enumerate() {
        let part_dir = dir.join(format!("part-{:04}", p + 1));
        std::fs::create_dir_all(&part_dir)?;
        let first = copies * p / PARTS;
        let last = copies * (p + 1) / PARTS;
        let mut paths = Vec::new();
        for k in 0..last - first {
            let delta = base + k as i64 * period - start;
            for seg in &segments {
                seq += 1;
                let path = part_dir.join(format!("seg-{seq:06}.ts"));
                if fresh {
                    let mut s = seg.clone();
                    lectern_stitch::synth::retime(&mut s, delta);
                    std::fs::write(&path, &s)?;
                }
                paths.push(path);
            }
        }
        parts.push(paths);
    }
    if fresh {
        std::fs::write(&stamp, "")?;
    }
    Ok(Recording {
        parts,
        copies,
        period_90k: period,
    })
}
