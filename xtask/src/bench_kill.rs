//! `cargo xtask bench-kill`: the kill comparison of issue 4 (docs/benchmarks.md, "Kill
//! comparison: Lectern vs pyCA"). What is left of a recording when the box dies N seconds in?
//!
//! Every system under test records and is killed N seconds (`--seconds`, default 20) after its
//! own capture started:
//!
//! * **Lectern**: the release `lecternd` on the sim board, 1280x720 at 30 fps, x264 veryfast (tune zerolatency),
//!   4000 kbit/s, 2 s segments, ad-hoc recording (`lectern record start`);
//! * **pyca 4.4** from PyPI (the virtualenv of `anchor.rs`) against the Opencast test double
//!   (`opencast-double --basic --event ...`), one instance per capture command: pyca's built-in
//!   default (WebM), and its two Raspberry Pi recipes (`hil-tests/anchors/pyca/rec-pi-*.sh`: MKV
//!   from docs/recording/raspivid.rst, MP4 from capture_plugins/raspberry-pi-vo-ffmpeg.py), whose
//!   camera is a pre-encoded H.264 stream played in real time (the scripts say what changed).
//!
//! The kill modes ("killed the same way"), each a round for Lectern and then one for the three
//! pyca instances together (they take turns for the CPU, see [`Side`]), five rounds a trial:
//!
//! 1. `sigkill`: SIGKILL to each system's whole process group. The page cache survives, as in a
//!    crash of the software alone.
//! 2. `cut`: the media directories live on one cutfs mount (`lectern_cutfs`); SIGKILL, then the
//!    cut, which drops everything not fsynced, as a power loss does.
//! 3. `cut+warn` (Lectern only): as 2, but `lectern sim powerfail on` (the board's GPIO warning)
//!    comes 1.5 s before the kill: the hold-up a supercap/UPS HAT gives, and enough for the
//!    daemon's two-phase power cut to drain the encoder (`power.drain_ms`, 1 s) before the rail
//!    dies.
//!
//! Afterwards: Lectern is started again on what survived; with `resume_adhoc_window_minutes = 0`
//! it declares the interrupted recording final and stitches it, and the stitched MP4 is measured.
//! For pyca every file left in its recording directory is measured. "Recovered" is the decodable
//! video duration (`ffmpeg -v error -i F -map 0:v:0 -f null -`: where the last decoded frame
//! ends); a file that does not open counts 0 s, with ffmpeg's error text. "Captured" is the
//! wall time from the start of capture (Lectern: `record start` sent; pyca: its capture process
//! seen, polled every 20 ms) to the kill, so start-up latency counts as lost on both sides; for a
//! warned Lectern it ends at the warning (the promise is "nothing lost up to the edge").
//! On a machine too busy to encode in real time the simulated camera falls behind the wall clock
//! instead of dropping frames, so for Lectern the table also gives what had entered the encoder
//! by the kill (`lectern status` frames_in ÷ 30, read just before it) and the part of that the
//! kill itself lost; ffmpeg offers no such reading from outside.
//!
//! Every process group is killed and the cutfs mount unmounted when this module's guards drop,
//! on errors and panics too; SIGINT/SIGTERM make the run stop at its next poll and clean up.
//! Results go to stdout as a markdown table and to OUT/report.md.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::anchor::{self, first_line, DoubleEvent, OC_PASSWORD, OC_USER};
use crate::child::Managed;
use crate::procfs;

/// Command-line options.
pub struct Options {
    pub seconds: u64,
    pub trials: u32,
    pub out: PathBuf,
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Options> {
        let mut o = Options {
            seconds: 20,
            trials: 1,
            out: root.join("target/bench-kill"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--seconds" => {
                    o.seconds = value()?.parse().context("--seconds N (whole seconds)")?
                }
                "--trials" => o.trials = value()?.parse().context("--trials N")?,
                "--out" => o.out = PathBuf::from(value()?),
                _ => bail!("unknown option {a}\n{}", crate::USAGE),
            }
        }
        if !(3..=600).contains(&o.seconds) || o.trials == 0 {
            bail!("--seconds must be 3..=600 and --trials at least 1");
        }
        if o.out.is_relative() {
            o.out = std::env::current_dir()?.join(&o.out);
        }
        Ok(o)
    }
}

/// How long before the event pyca gets to start and fetch its calendar.
const PYCA_LEAD: Duration = Duration::from_secs(12);
/// The board's power-fail warning comes this long before the kill in the `cut+warn` round: a
/// supercap/UPS HAT's hold-up, longer than the daemon's encoder drain bound (`power.drain_ms`).
const WARN_LEAD: Duration = Duration::from_millis(1500);
/// How often the run polls for capture starts and kill instants.
const POLL: Duration = Duration::from_millis(20);

/// How a round ends the systems under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Sigkill,
    Cut,
    CutWarned,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Sigkill, Mode::Cut, Mode::CutWarned];

    fn name(self) -> &'static str {
        match self {
            Mode::Sigkill => "sigkill",
            Mode::Cut => "cut",
            Mode::CutWarned => "cut+warn",
        }
    }

    /// The table's wording.
    fn label(self) -> &'static str {
        match self {
            Mode::Sigkill => "SIGKILL (page cache survives)",
            Mode::Cut => "power cut (SIGKILL + cutfs cut)",
            Mode::CutWarned => "power cut, GPIO warning 1.5 s before",
        }
    }

    fn cuts(self) -> bool {
        self != Mode::Sigkill
    }
}

/// Which systems record in a round. Lectern and pyca take turns rather than share the machine:
/// on 2 cores, pyca's default VP9 encoder next to Lectern's x264 starves both, and a system that
/// cannot encode in real time loses media to that, not to the kill.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Lectern,
    Pyca,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Lectern => "lectern",
            Side::Pyca => "pyca",
        }
    }
}

/// A pyca capture command under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// pyca 4.4's built-in default (`config.py`): testsrc 320x240 at 25 fps into WebM.
    Default,
    /// docs/recording/raspivid.rst: camera H.264 1280x720 2 Mbit/s + audio, remuxed into MKV.
    PiMkv,
    /// capture_plugins/raspberry-pi-vo-ffmpeg.py: camera H.264 1920x1080 4 Mbit/s into MP4.
    PiMp4,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Default, Variant::PiMkv, Variant::PiMp4];

    fn slug(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::PiMkv => "pi-mkv",
            Variant::PiMp4 => "pi-mp4",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Default => "pyca 4.4, default command (WebM)",
            Variant::PiMkv => "pyca 4.4, Raspberry Pi command (MKV)",
            Variant::PiMp4 => "pyca 4.4, Raspberry Pi command (MP4)",
        }
    }

    /// The camera stream a Pi recipe plays instead of raspivid: (width, height, bit/s).
    fn camera(self) -> Option<(u32, u32, u32)> {
        match self {
            Variant::Default => None,
            Variant::PiMkv => Some((1280, 720, 2_000_000)),
            Variant::PiMp4 => Some((1920, 1080, 4_000_000)),
        }
    }

    /// The `[capture]` lines for kill.conf.in (none: pyca's defaults).
    fn capture_lines(self, anchors: &Path, camera: Option<&Path>) -> String {
        let (script, ext) = match self {
            Variant::Default => return String::new(),
            Variant::PiMkv => ("rec-pi-mkv.sh", "mkv"),
            Variant::PiMp4 => ("rec-pi-mp4.sh", "mp4"),
        };
        format!(
            "command = '{} {{{{time}}}} {{{{dir}}}}/{{{{name}}}}.{ext} {}'\nfiles = {{{{dir}}}}/{{{{name}}}}.{ext}",
            anchors.join(script).display(),
            camera.expect("a Pi recipe has a camera").display()
        )
    }
}

/// One measured system in one round.
struct Row {
    trial: u32,
    mode: Mode,
    system: String,
    captured: f64,
    /// Media that had entered the encoder by the kill (Lectern's `frames_in` ÷ 30), where known.
    encoded: Option<f64>,
    recovered: f64,
    /// What was left, in words (files, sizes, errors).
    left: String,
}

/// What the whole run shares.
struct Ctx {
    root: PathBuf,
    out: PathBuf,
    bin: PathBuf,
    setup: anchor::Setup,
    seconds: u64,
    /// Camera streams for the Pi recipes, by variant.
    cameras: Vec<(Variant, PathBuf)>,
    stop: Arc<AtomicBool>,
}

impl Ctx {
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}

pub fn run(opts: Options, root: &Path) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    crate::cargo_build_release(root, anchor::BENCH_PACKAGES)?;
    let setup = anchor::prepare(&out)?;
    let mut cameras = Vec::new();
    for v in Variant::ALL {
        if let Some(spec) = v.camera() {
            // The stream must outlast the kill; pyca's `-t` is longer but is cut by the kill.
            cameras.push((v, camera_stream(&out, spec, opts.seconds + 30)?));
        }
    }
    let ctx = Ctx {
        root: root.to_owned(),
        out: out.clone(),
        bin: crate::target_dir(root).join("release"),
        setup,
        seconds: opts.seconds,
        cameras,
        stop,
    };
    let mut rows = Vec::new();
    let mut failed = None;
    'trials: for trial in 1..=opts.trials {
        for mode in Mode::ALL {
            let sides: &[Side] = if mode == Mode::CutWarned {
                &[Side::Lectern]
            } else {
                &[Side::Lectern, Side::Pyca]
            };
            for &side in sides {
                eprintln!(
                    "xtask: trial {trial}, round {} {}",
                    mode.name(),
                    side.name()
                );
                match round(&ctx, mode, side, trial) {
                    Ok(r) => rows.extend(r),
                    Err(e) => {
                        failed = Some(e.context(format!(
                            "trial {trial}, round {} {}",
                            mode.name(),
                            side.name()
                        )));
                        break 'trials;
                    }
                }
            }
        }
    }
    // The rounds that finished are reported even when a later one failed.
    let report = report(&ctx, &opts, &rows);
    print!("{report}");
    std::fs::write(out.join("report.md"), &report)?;
    std::fs::write(out.join("pip-freeze.txt"), &ctx.setup.freeze)?;
    eprintln!("xtask: report in {}", out.join("report.md").display());
    failed.map_or(Ok(()), Err)
}

/// A pyca instance in a round.
struct Pyca {
    variant: Variant,
    group: Group,
    recordings: PathBuf,
    started: Option<Instant>,
    killed: Option<f64>,
}

/// One round: everyone records, is killed, and what survived is measured.
fn round(ctx: &Ctx, mode: Mode, side: Side, trial: u32) -> Result<Vec<Row>> {
    let dir = ctx
        .out
        .join(format!("trial{trial}-{}-{}", mode.name(), side.name()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| {
            format!(
                "removing the previous {} (a stale mount under it?)",
                dir.display()
            )
        })?;
    }
    let card = dir.join("card");
    std::fs::create_dir_all(&card)?;
    // Declared first, so dropped last: every process using the card is gone by then.
    let mut cutfs = if mode.cuts() {
        Some(
            lectern_cutfs::CutFs::mount(&card)
                .context("mounting cutfs (needs /dev/fuse and fusermount3)")?,
        )
    } else {
        None
    };
    let variants: &[Variant] = if side == Side::Pyca {
        &Variant::ALL
    } else {
        &[]
    };
    // The media directories exist before the recordings, as on a card that was set up long ago:
    // their names are made durable (a directory fsync of the card's root).
    let lectern_media = card.join("lectern");
    if side == Side::Lectern {
        std::fs::create_dir(&lectern_media)?;
    }
    for v in variants {
        std::fs::create_dir(card.join(format!("pyca-{}", v.slug())))?;
    }
    File::open(&card)?
        .sync_all()
        .context("fsync of the card's root")?;

    // The Opencast double with one event per pyca instance, and the instances.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let lead = if side == Side::Pyca {
        PYCA_LEAD
    } else {
        Duration::ZERO
    };
    let start_epoch = (now + lead).as_secs() + 1;
    let event_start = Instant::now() + (Duration::from_secs(start_epoch) - now);
    let mut double = None;
    let mut pycas = Vec::new();
    if !variants.is_empty() {
        let (d, url) = start_double(ctx, &dir, variants, start_epoch)?;
        double = Some(d);
        for &v in variants {
            pycas.push(start_pyca(ctx, &dir, &card, v, &url)?);
        }
    }
    let mut lectern = match side {
        Side::Lectern => Some(Lectern::start(ctx, &dir, &lectern_media)?),
        Side::Pyca => None,
    };

    // Record, and kill everyone `seconds` after their own start.
    let span = Duration::from_secs(ctx.seconds);
    loop {
        ctx.check_stop()?;
        let now = Instant::now();
        if let Some(lectern) = lectern.as_mut() {
            lectern.poll(mode, now, event_start, span)?;
        }
        for p in &mut pycas {
            if let Some(st) = p.group.exited() {
                bail!(
                    "pyca ({}) exited early ({st}); see {}",
                    p.variant.slug(),
                    p.group.log.display()
                );
            }
            if p.started.is_none() {
                if capture_process(p.group.pid()).is_some() {
                    p.started = Some(now);
                } else if now > event_start + Duration::from_secs(20) {
                    bail!(
                        "pyca ({}) did not start its capture within 20 s of the event; see {}",
                        p.variant.slug(),
                        p.group.log.display()
                    );
                }
            }
            if let (Some(t0), None) = (p.started, p.killed) {
                if now >= t0 + span {
                    p.killed = Some(t0.elapsed().as_secs_f64());
                    p.group.kill_and_wait()?;
                }
            }
        }
        if lectern.as_ref().is_none_or(|l| l.killed.is_some())
            && pycas.iter().all(|p| p.killed.is_some())
        {
            break;
        }
        std::thread::sleep(POLL);
    }
    drop(double);
    if let Some(fs) = cutfs.as_mut() {
        let stats = fs.cut()?;
        eprintln!(
            "xtask: cut dropped {} bytes, {} inodes",
            stats.last_cut_dropped_bytes, stats.last_cut_dropped_inodes
        );
    }

    // What survived.
    let mut rows = Vec::new();
    let row = |system: String,
               captured: f64,
               encoded: Option<f64>,
               (recovered, left): (f64, String)| Row {
        trial,
        mode,
        system,
        captured,
        encoded,
        recovered,
        left,
    };
    if let Some(lectern) = lectern.as_mut() {
        let killed = lectern.killed.expect("the loop ends after the kill");
        let encoded = lectern.encoded;
        let (recovered, mut left) = lectern.measure(ctx)?;
        // A warned recording is captured up to the edge; the kill comes after it.
        let (label, captured) = match lectern.edge {
            Some(edge) => {
                left.push_str(&format!(
                    "; warning {:.0} ms before the kill",
                    (killed - edge) * 1e3
                ));
                ("Lectern (warned)", edge)
            }
            None => ("Lectern", killed),
        };
        rows.push(row(label.into(), captured, encoded, (recovered, left)));
    }
    for p in &pycas {
        rows.push(row(
            p.variant.label().into(),
            p.killed.expect("killed"),
            None,
            measure_pyca(&p.recordings),
        ));
    }
    drop(lectern);
    drop(pycas);
    if let Some(fs) = cutfs.take() {
        fs.unmount()?;
    }
    Ok(rows)
}

/// Starts `opencast-double` with one event per variant and returns it with its URL.
fn start_double(
    ctx: &Ctx,
    dir: &Path,
    variants: &[Variant],
    start_epoch: u64,
) -> Result<(Managed, String)> {
    // The event outlasts the kill by a minute, so pyca's `-t` never ends a capture first.
    let end = start_epoch + ctx.seconds + 60;
    let events: Vec<DoubleEvent> = variants
        .iter()
        .map(|v| DoubleEvent {
            uid: format!("bench-kill-{}", v.slug()),
            agent: agent_name(*v),
            start: start_epoch,
            end,
            title: format!("bench-kill {}", v.slug()),
        })
        .collect();
    anchor::start_double(&ctx.bin, dir, &events)
}

fn agent_name(v: Variant) -> String {
    format!("bench-kill-{}", v.slug())
}

/// Writes a pyca config from kill.conf.in and starts `pyca run` in its own process group.
fn start_pyca(ctx: &Ctx, dir: &Path, card: &Path, v: Variant, url: &str) -> Result<Pyca> {
    let anchors = ctx.root.join("hil-tests/anchors/pyca");
    let home = dir.join(format!("pyca-{}", v.slug()));
    std::fs::create_dir_all(home.join("previews"))?;
    let recordings = card.join(format!("pyca-{}", v.slug()));
    let camera = ctx
        .cameras
        .iter()
        .find(|(c, _)| *c == v)
        .map(|(_, p)| p.as_path());
    let template = std::fs::read_to_string(anchors.join("kill.conf.in"))?;
    let conf = home.join("pyca.conf");
    std::fs::write(
        &conf,
        template
            .replace("@NAME@", &agent_name(v))
            .replace("@DB@", &home.join("pyca.db").display().to_string())
            .replace("@RECORDINGS@", &recordings.display().to_string())
            .replace("@PREVIEW@", &home.join("previews").display().to_string())
            .replace("@CAPTURE@", &v.capture_lines(&anchors, camera))
            .replace("@URL@", url)
            .replace("@USER@", OC_USER)
            .replace("@PASSWORD@", OC_PASSWORD),
    )?;
    let group = Group::spawn(
        &format!("pyca ({})", v.slug()),
        Command::new(ctx.setup.pyca_bin())
            .arg("-c")
            .arg(&conf)
            .arg("run")
            .current_dir(&home),
        &home.join("pyca.log"),
    )?;
    Ok(Pyca {
        variant: v,
        group,
        recordings,
        started: None,
        killed: None,
    })
}

/// The capture command pyca started (ffmpeg, or a recipe's shell), if it runs: the first
/// descendant of `pyca run` that is not one of pyca's own (Python) processes.
fn capture_process(pyca: u32) -> Option<u32> {
    let own = procfs::comm(pyca);
    procfs::descendants(pyca).into_iter().find(|&p| {
        let c = procfs::comm(p);
        !c.is_empty() && c != own && !c.starts_with("python")
    })
}

/// Measures every file pyca left under `recordings`: (seconds recovered, description).
fn measure_pyca(recordings: &Path) -> (f64, String) {
    let mut files = Vec::new();
    walk(recordings, &mut files);
    if files.is_empty() {
        return (
            0.0,
            "no file: the recording's directory and file were never fsynced".into(),
        );
    }
    let mut best = 0.0f64;
    let mut parts = Vec::new();
    for f in files {
        let size = std::fs::metadata(&f).map_or(0, |m| m.len());
        let name = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let ext = Path::new(&name)
            .extension()
            .map_or_else(String::new, |e| e.to_string_lossy().into_owned());
        let d = decodable(&f);
        best = best.max(d.seconds);
        parts.push(format!("`*.{ext}` {}: {}", human_bytes(size), d.describe()));
    }
    (best, parts.join("; "))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// What ffmpeg can decode of a file's first video stream.
struct Decoded {
    seconds: f64,
    frames: u64,
    /// ffmpeg's error text (first line), if it complained.
    error: Option<String>,
}

impl Decoded {
    fn describe(&self) -> String {
        match (&self.error, self.frames) {
            (Some(e), 0) => format!("does not decode (\"{e}\")"),
            (Some(e), n) => format!(
                "{n} frames, {:.2} s decodable (ffmpeg: \"{e}\")",
                self.seconds
            ),
            (None, n) => format!("{n} frames, {:.2} s decodable", self.seconds),
        }
    }
}

/// Decodes the first video stream with ffmpeg; the duration is where the last decoded frame ends,
/// from `-progress` (`out_time_us`; the null muxer passes timestamps through, so frames dropped
/// before the kill show as gaps, not as shorter media).
fn decodable(path: &Path) -> Decoded {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostats", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Decoded {
                seconds: 0.0,
                frames: 0,
                error: Some(format!("cannot run ffmpeg: {e}")),
            }
        }
    };
    let progress = String::from_utf8_lossy(&out.stdout);
    let last = |key: &str| -> u64 {
        progress
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    let frames = last("frame=");
    let out_us = last("out_time_us=");
    let seconds = if frames == 0 {
        0.0
    } else {
        out_us as f64 / 1e6
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The first line is the demuxer's own reason ("moov atom not found"); later lines repeat it
    // as "FILE: Invalid data found when processing input".
    let error = stderr
        .lines()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m).to_owned())
        .or_else(|| (!out.status.success()).then(|| format!("ffmpeg exited {}", out.status)));
    Decoded {
        seconds,
        frames,
        error,
    }
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / (1 << 10) as f64)
    } else {
        format!("{n} B")
    }
}

/// Encodes (once, cached in OUT) the H.264 elementary stream a Pi recipe plays instead of the
/// camera module: testsrc2 at 30 fps, the recipe's size and bitrate.
fn camera_stream(out: &Path, (w, h, bps): (u32, u32, u32), seconds: u64) -> Result<PathBuf> {
    let path = out.join(format!("camera-{w}x{h}-{}k-{seconds}s.h264", bps / 1000));
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "xtask: encoding the stand-in camera stream {}",
        path.display()
    );
    let partial = path.with_extension("partial");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={w}x{h}:rate=30"))
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-b:v",
            &bps.to_string(),
            "-maxrate",
            &bps.to_string(),
            "-bufsize",
            &(bps / 2).to_string(),
        ])
        .args(["-f", "h264"])
        .arg(&partial)
        .status()
        .context("ffmpeg (apt: ffmpeg)")?;
    if !st.success() {
        bail!("encoding {} failed ({st})", path.display());
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The Lectern config of the comparison: bench-record's picture and encoder, media on the card,
/// power held "lost" so that a warned daemon never resumes before its kill, and no resume of an
/// interrupted ad-hoc recording, so the restart makes it final and stitches it at once.
const LECTERN_CONFIG: &str = r#"# Written by `cargo xtask bench-kill`.
[agent]
name = "lectern-bench-kill"
[board]
backend = "sim"
sim_socket = "run/sim.sock"
@CAPTURE@
[journal]
media_dir = "@MEDIA@"
segment_seconds = 2.0
[control]
socket = "run/control.sock"
[power]
hold_ms = 600000
[recorder]
resume_adhoc_window_minutes = 0
"#;

/// The Lectern side of a round.
struct Lectern {
    dir: PathBuf,
    config: PathBuf,
    cli: PathBuf,
    daemon: PathBuf,
    group: Group,
    recording: Option<String>,
    started: Option<Instant>,
    /// Seconds from `record start` to the power-fail warning (`cut+warn`) and to the kill.
    edge: Option<f64>,
    killed: Option<f64>,
    encoded: Option<f64>,
    media: PathBuf,
}

impl Lectern {
    fn start(ctx: &Ctx, dir: &Path, media: &Path) -> Result<Lectern> {
        let ldir = dir.join("lectern");
        std::fs::create_dir_all(&ldir)?;
        let config = ldir.join("lectern.toml");
        std::fs::write(
            &config,
            LECTERN_CONFIG
                .replace("@CAPTURE@", &crate::bench_record::CAPTURE_SECTION.replace("@PATTERN@", "smpte"))
                .replace("@MEDIA@", &media.display().to_string()),
        )?;
        let daemon = ctx.bin.join("lecternd");
        let group = Self::spawn(&daemon, &config, &ldir.join("lecternd.log"))?;
        let mut l = Lectern {
            dir: ldir,
            config,
            cli: ctx.bin.join("lectern"),
            daemon,
            group,
            recording: None,
            started: None,
            edge: None,
            killed: None,
            encoded: None,
            media: media.to_owned(),
        };
        l.wait_ready()?;
        let encoder = l.cli(&["status"])?["encoder"]["element"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        if encoder != "x264enc" {
            bail!("lecternd chose encoder {encoder}, not x264enc");
        }
        Ok(l)
    }

    fn spawn(daemon: &Path, config: &Path, log: &Path) -> Result<Group> {
        Group::spawn(
            "lecternd",
            Command::new(daemon).arg("--config").arg(config),
            log,
        )
    }

    fn wait_ready(&mut self) -> Result<()> {
        let up = Instant::now();
        while self.cli(&["status"]).is_err() {
            self.check_running()?;
            if up.elapsed() > Duration::from_secs(30) {
                bail!("lecternd's control socket did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(st) = self.group.exited() {
            bail!("lecternd exited ({st}); see {}", self.group.log.display());
        }
        Ok(())
    }

    /// `lectern --config F --json ARGS`, parsed.
    fn cli(&self, args: &[&str]) -> Result<Value> {
        let json = [&["--json"], args].concat();
        Ok(serde_json::from_slice(&self.cli_text(&json)?)?)
    }

    /// `lectern --config F ARGS`, its stdout (`sim` commands answer in plain text).
    fn cli_text(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new(&self.cli)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "lectern {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// One step of the round's loop: start at the event, warn (`cut+warn`), kill.
    fn poll(
        &mut self,
        mode: Mode,
        now: Instant,
        event_start: Instant,
        span: Duration,
    ) -> Result<()> {
        self.check_running()?;
        if self.started.is_none() && now >= event_start {
            self.record_start()?;
        }
        let Some(t0) = self.started else {
            return Ok(());
        };
        let warn_at = if mode == Mode::CutWarned {
            t0 + span - WARN_LEAD
        } else {
            t0 + span
        };
        if self.encoded.is_none() && now >= warn_at {
            // What had entered the encoder, read just before the warning or the kill (a few ms
            // early); a warning ends the capture, so nothing enters after it.
            let status = self.cli(&["status"])?;
            self.encoded = Some(
                status["capture"]["frames_in"]
                    .as_u64()
                    .context("status has no capture.frames_in")? as f64
                    / 30.0,
            );
            if mode == Mode::CutWarned {
                // The edge cannot reach the daemon before this instant: media up to here is
                // what the warning promises to keep.
                self.edge = Some(t0.elapsed().as_secs_f64());
                self.cli_text(&["sim", "powerfail", "on"])?;
            }
        }
        if self.killed.is_none() && self.encoded.is_some() && now >= t0 + span {
            // The clock is read before the kill, so the captured time errs short.
            self.killed = Some(t0.elapsed().as_secs_f64());
            self.group.kill_and_wait()?;
        }
        Ok(())
    }

    fn record_start(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let v = self.cli(&["record", "start", "--title", "bench-kill"])?;
        self.recording = Some(
            v["recording"]["id"]
                .as_str()
                .context("record start returned no recording id")?
                .to_owned(),
        );
        self.started = Some(t0);
        Ok(())
    }

    /// Starts the daemon again on what survived, waits for the stitch of the (now final)
    /// recording, and measures the stitched MP4.
    fn measure(&mut self, ctx: &Ctx) -> Result<(f64, String)> {
        let id = self.recording.clone().context("no recording was started")?;
        self.group = Self::spawn(
            &self.daemon,
            &self.config,
            &self.dir.join("lecternd-restart.log"),
        )?;
        self.wait_ready()?;
        let deadline = Instant::now() + Duration::from_secs(90);
        let rec = loop {
            ctx.check_stop()?;
            self.check_running()?;
            let list = self.cli(&["recordings"])?;
            let rec = list["recordings"]
                .as_array()
                .and_then(|l| l.iter().find(|r| r["id"] == id.as_str()))
                .cloned();
            let Some(rec) = rec else {
                break None;
            };
            if matches!(rec["stitch"]["state"].as_str(), Some("done" | "failed")) {
                break Some(rec);
            }
            if Instant::now() > deadline {
                bail!(
                    "recording {id}: not stitched 90 s after the restart ({})",
                    rec["stitch"]
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let Some(rec) = rec else {
            return Ok((0.0, format!("recording {id} is gone from the journal")));
        };
        let journal = format!(
            "{} parts, {} segments committed ({:.2} s by the journal)",
            rec["parts"],
            rec["segments"],
            rec["media_duration_ns"].as_u64().unwrap_or(0) as f64 / 1e9
        );
        let stitch = &rec["stitch"];
        let result = match stitch["path"].as_str() {
            Some(p) if stitch["state"] == "done" => {
                let mp4 = self.media.join(p);
                let size = std::fs::metadata(&mp4).map_or(0, |m| m.len());
                let d = decodable(&mp4);
                (
                    d.seconds,
                    format!(
                        "stitched MP4 {}: {}; {journal}",
                        human_bytes(size),
                        d.describe()
                    ),
                )
            }
            _ => (
                0.0,
                format!(
                    "no stitched MP4 (stitch {}: {}); {journal}",
                    stitch["state"], stitch["error"]
                ),
            ),
        };
        // Stopped before the cutfs unmount: the daemon holds the journal open.
        self.group.stop(Duration::from_secs(10))?;
        Ok(result)
    }
}

/// A process in its own process group (with everything it starts), killed as a group when
/// dropped; its stdout and stderr go to a log file.
struct Group {
    name: String,
    child: Option<Child>,
    pgid: u32,
    log: PathBuf,
}

impl Group {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Group> {
        use std::os::unix::process::CommandExt;
        let file = File::create(log).with_context(|| log.display().to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        Ok(Group {
            name: name.to_owned(),
            pgid: child.id(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        if self.child.is_some() {
            self.pgid
        } else {
            0
        }
    }

    /// `Some(status)` once the group's leader has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.pgid)])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGKILL to the whole group; returns once no member is left (zombies aside: they hold no
    /// files), so a cut after it finds nothing open.
    fn kill_and_wait(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        self.signal("-KILL");
        let _ = child.wait();
        self.wait_gone(Duration::from_secs(10))
    }

    /// SIGTERM to the group, up to `grace` for it to go, then SIGKILL.
    fn stop(&mut self, grace: Duration) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal("-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && group_alive(self.pgid) {
            if let Some(c) = self.child.as_mut() {
                let _ = c.try_wait();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if group_alive(self.pgid) {
            eprintln!(
                "xtask: {} did not exit within {grace:?} of SIGTERM; killing its group",
                self.name
            );
        }
        self.kill_and_wait()
    }

    fn wait_gone(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while group_alive(self.pgid) {
            if Instant::now() > deadline {
                bail!(
                    "{}: process group {} still alive {timeout:?} after SIGKILL",
                    self.name,
                    self.pgid
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_wait() {
            eprintln!("xtask: {e}");
        }
    }
}

/// Whether any process of group `pgid` is still running (not a zombie), from /proc/PID/stat.
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .any(|stat| stat_group(&stat).is_some_and(|(state, group)| group == pgid && state != 'Z'))
}

/// (state, process group) from a /proc/PID/stat line; the command name may contain spaces and
/// parentheses, so fields are counted from the last ')'.
fn stat_group(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// The markdown report: command, versions, the table, and how to read it.
fn report(ctx: &Ctx, opts: &Options, rows: &[Row]) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "### `cargo xtask bench-kill --seconds {} --trials {}`\n",
        opts.seconds, opts.trials
    );
    let gst = Command::new("gst-launch-1.0")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "GStreamer ?".into());
    let commit = first_line(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(&ctx.root),
    )
    .unwrap_or_else(|_| "?".into());
    let freeze: Vec<&str> = ctx
        .setup
        .freeze
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let _ = writeln!(r, "- lecternd: release build of {commit}; {gst}");
    let _ = writeln!(
        r,
        "- pyca {} from PyPI in a virtualenv; {}",
        ctx.setup.pyca_version, ctx.setup.ffmpeg_version
    );
    let _ = writeln!(
        r,
        "- `pip freeze` ({} packages): {}",
        freeze.len(),
        freeze.join(", ")
    );
    let _ = writeln!(
        r,
        "- machine: {} CPUs, load average at the end {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(r, "| trial | kill | system | captured (wall), s | in the encoder at the kill, s | recovered, s | lost, s | lost, % | lost to the kill itself, s | what is left |");
    let _ = writeln!(
        r,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for row in rows {
        let lost = (row.captured - row.recovered).max(0.0);
        let _ = writeln!(
            r,
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.0} % | {} | {} |",
            row.trial,
            row.mode.label(),
            row.system,
            row.captured,
            row.encoded.map_or("n/a".into(), |e| format!("{e:.2}")),
            row.recovered,
            lost,
            lost / row.captured.max(1e-9) * 100.0,
            row.encoded.map_or("n/a".into(), |e| format!(
                "{:.2}",
                (e - row.recovered).max(0.0)
            )),
            row.left.replace('|', "\\|")
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_group_reads_state_and_pgrp_past_odd_names() {
        assert_eq!(stat_group("42 (a) b)) S 1 77 77 0 -1"), Some(('S', 77)));
        assert_eq!(stat_group("43 (ffmpeg) Z 1 90 90"), Some(('Z', 90)));
        assert_eq!(stat_group("garbage"), None);
    }

    #[test]
    fn options_reject_nonsense() {
        let root = Path::new("/r");
        let parse =
            |a: &[&str]| Options::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>(), root);
        assert_eq!(parse(&[]).unwrap().seconds, 20);
        assert_eq!(
            parse(&["--seconds", "5", "--trials", "2"]).unwrap().trials,
            2
        );
        assert!(parse(&["--seconds", "0"]).is_err());
        assert!(parse(&["--trials", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--seconds"]).is_err());
    }

    #[test]
    fn pi_recipes_name_their_script_camera_and_file() {
        let lines = Variant::PiMkv.capture_lines(Path::new("/a"), Some(Path::new("/c.h264")));
        assert_eq!(lines, "command = '/a/rec-pi-mkv.sh {{time}} {{dir}}/{{name}}.mkv /c.h264'\nfiles = {{dir}}/{{name}}.mkv");
        assert_eq!(Variant::Default.capture_lines(Path::new("/a"), None), "");
    }

    /// The measurement itself, on real files: an MP4 whose writer was SIGKILLed has no moov and
    /// decodes to nothing; a complete one decodes to its length. Skips loudly without ffmpeg.
    #[test]
    fn decodable_tells_a_killed_mp4_from_a_complete_one() {
        if Command::new("ffmpeg").arg("-version").output().is_err() {
            eprintln!("SKIPPED: ffmpeg is not installed (apt-get install ffmpeg)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("bench-kill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let whole = dir.join("whole.mp4");
        let st = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x120:rate=25",
                "-t",
                "2",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .arg(&whole)
            .status()
            .unwrap();
        assert!(st.success());
        let d = decodable(&whole);
        assert_eq!(d.frames, 50);
        assert!((d.seconds - 2.0).abs() < 0.01, "{}", d.seconds);
        assert!(d.error.is_none());
        // A killed MP4 writer leaves mdat without moov: the first half of the file, say.
        let bytes = std::fs::read(&whole).unwrap();
        let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
        let torn = dir.join("torn.mp4");
        std::fs::write(&torn, &bytes[..moov - 4]).unwrap();
        let d = decodable(&torn);
        assert_eq!((d.frames, d.seconds), (0, 0.0));
        assert!(
            d.error.as_deref().unwrap().contains("moov atom not found"),
            "{:?}",
            d.error
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
