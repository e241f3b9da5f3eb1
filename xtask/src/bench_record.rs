//! `cargo xtask bench-record`: the recording benchmark of issue 2 (docs/benchmarks.md).
//!
//! It records N minutes of 1280x720 at 30 fps, x264 veryfast, 4000 kbit/s, 2 s segments with
//! the release `lecternd` on the simulated board, and, in the same run and at the same time, the
//! anchor: pyca 4.4 driving ffmpeg with the same encoder settings (see `anchor.rs`). Both sides
//! are sampled from `/proc` by pid:
//!
//! * memory as PSS from /proc/PID/smaps_rollup every `--interval` seconds (mean and max);
//! * CPU as utime+stime from /proc/PID/stat over the wall time of the recording, in % of one core;
//! * bytes sent to storage as write_bytes from /proc/PID/io, divided by the media bytes that the
//!   recording left on disk (write amplification: container, index and journal overhead);
//! * for Lectern, frames dropped / in / expected from `lectern --json status`, and segments per
//!   minute from `lectern --json recordings`; for ffmpeg, video packets in the MP4 (ffprobe)
//!   against 30 × its `-t`, and how long it ran against `-t` (it cannot drop, only fall behind).
//!
//! CPU and write counters are read every 250 ms, so that the last reading of ffmpeg is at most a
//! quarter of a second before it exits; PSS is read at the slower interval. Timeline:
//! pyca and the stand-in start, then lecternd; at the event start `lectern record start`; ffmpeg
//! appears within about a second; after N minutes `lectern record stop` (in a thread, so that
//! sampling goes on) and ffmpeg ends by itself at the end of its `-t`.
//!
//! With `--preview` someone "looks" during the recording: `lectern preview` every
//! [`PREVIEW_EVERY`], which keeps the daemon's confidence-preview branch open (one request opens
//! it for 15 s), as while a technician looks (the status page asks about once a second; the
//! branch is open either way). Without it the branch stays closed, as on a box nobody looks at.
//!
//! Results go to stdout as a markdown table and to OUT/report.md, the samples to OUT/samples.csv;
//! half-way through, where lecternd's memory goes (OUT/lectern/pss-by-mapping.txt, with its
//! anonymous memory split into malloc arenas, thread stacks and other mappings) and a copy of its
//! /proc/PID/smaps (OUT/lectern/smaps.txt).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::anchor::{self, first_line, Anchor};
use crate::child::Managed;
use crate::procfs::{self, Counters};

/// Command-line options.
pub struct Options {
    pub minutes: u32,
    pub out: PathBuf,
    pub anchor: bool,
    /// Seconds between PSS samples.
    pub interval: u64,
    /// Lectern's videotestsrc pattern (see `DEFAULT_PATTERN`).
    pub pattern: String,
    /// Keep the confidence preview open during the recording.
    pub preview: bool,
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Options> {
        let mut o = Options {
            minutes: 10,
            out: root.join("target/bench-record"),
            anchor: true,
            interval: 5,
            pattern: DEFAULT_PATTERN.into(),
            preview: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--minutes" => {
                    o.minutes = value()?.parse().context("--minutes N (whole minutes)")?
                }
                "--out" => o.out = PathBuf::from(value()?),
                "--interval" => o.interval = value()?.parse().context("--interval SECONDS")?,
                "--pattern" => o.pattern = value()?.clone(),
                "--no-anchor" => o.anchor = false,
                "--preview" => o.preview = true,
                _ => bail!("unknown option {a}\n{}", crate::USAGE),
            }
        }
        if o.minutes == 0 || o.interval == 0 {
            bail!("--minutes and --interval must be at least 1");
        }
        if o.out.is_relative() {
            o.out = std::env::current_dir()?.join(&o.out);
        }
        Ok(o)
    }
}

/// The `[capture]` section of Lectern's benchmark config, shared with `bench-kill`: the defaults
/// spelled out so that the report says what was measured, and x264enc named so that `auto`
/// cannot pick another encoder on a machine that has one. `@PATTERN@` is the sim camera pattern.
pub(crate) const CAPTURE_SECTION: &str = r#"[capture]
video = "test"
video_pattern = "@PATTERN@"
audio = "test"
width = 1280
height = 720
framerate = 30
video_bitrate_kbps = 4000
audio_bitrate_kbps = 128
encoder = "x264enc"
x264_preset = "veryfast"
x264_tune = "zerolatency"
"#;

/// The rest of the benchmark's config. Relative paths are relative to the config file (sockets
/// and media in OUT/lectern).
const LECTERN_CONFIG: &str = r#"# Written by `cargo xtask bench-record`.
[agent]
name = "lectern-bench"

[board]
backend = "sim"
sim_socket = "run/sim.sock"

@CAPTURE@
[journal]
media_dir = "media"
segment_seconds = 2.0

[control]
socket = "run/control.sock"
"#;

/// Lectern's sim camera pattern for the benchmark. The daemon's default, `ball`, is a small ball
/// on black that x264 squeezes to about 350 kbit/s, so Lectern's encoder would do far less work
/// than ffmpeg's on `testsrc2`, which fills the 4000 kbit/s. videotestsrc's `smpte` bars (scrolled
/// by the sim camera, with their noise patch) make x264 use the whole bitrate too: comparable
/// encoder load. `--pattern ball` measures the daemon's default picture instead.
const DEFAULT_PATTERN: &str = "smpte";

/// How long before the event start pyca gets to start and fetch its schedule.
const ANCHOR_LEAD: Duration = Duration::from_secs(30);
/// Counters are read this often.
const TICK: Duration = Duration::from_millis(250);
/// With `--preview`, `lectern preview` this often: well inside the 15 s one request keeps the
/// branch open, so it stays open for the whole recording.
const PREVIEW_EVERY: Duration = Duration::from_secs(5);
/// The PSS goal, Lectern ÷ (pyca + ffmpeg): issue 2 asked for 0.40, issue 11 keeps the recording
/// benchmark at 0.20 with the analysis and preview branches in the daemon.
const PSS_GOAL: f64 = 0.20;

pub fn run(opts: Options, root: &Path) -> Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    fresh_dir(&out.join("lectern"))?;
    fresh_dir(&out.join("anchor"))?;

    crate::cargo_build_release(root, anchor::BENCH_PACKAGES)?;
    let bin = crate::target_dir(root).join("release");
    let setup = if opts.anchor {
        Some(anchor::prepare(&out)?)
    } else {
        None
    };

    // Lectern: config, media directory (the journal refuses a missing one), daemon.
    let ldir = out.join("lectern");
    std::fs::create_dir_all(ldir.join("media"))?;
    let config = ldir.join("lectern.toml");
    std::fs::write(&config, LECTERN_CONFIG.replace("@CAPTURE@", &CAPTURE_SECTION.replace("@PATTERN@", &opts.pattern)))?;
    let cli = Cli {
        bin: bin.join("lectern"),
        config: config.clone(),
    };
    let mut daemon = Managed::spawn(
        "lecternd",
        Command::new(bin.join("lecternd"))
            .arg("--config")
            .arg(&config),
        &ldir.join("lecternd.log"),
    )?;
    let up = Instant::now();
    while cli.json(&["status"]).is_err() {
        if let Some(st) = daemon.exited() {
            bail!(
                "lecternd exited at start-up ({st}); see {}",
                ldir.join("lecternd.log").display()
            );
        }
        if up.elapsed() > Duration::from_secs(30) {
            bail!("lecternd's control socket did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lpid = daemon.pid();
    let encoder = cli.json(&["status"])?["encoder"]["element"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    if encoder != "x264enc" {
        bail!("lecternd chose encoder {encoder}, not x264enc");
    }

    let mut anchor = match &setup {
        Some(s) => Some(Anchor::start(s, root, &bin, &out, opts.minutes, ANCHOR_LEAD)?),
        None => None,
    };
    // Idle footprints, for the notes: the daemon waiting, pyca waiting for its event.
    if let Some(a) = &anchor {
        sleep_until(a.event_start - Duration::from_secs(2));
    }
    let lectern_idle_pss = procfs::pss_kib(lpid).unwrap_or(0);
    let pyca_idle_pss: Option<u64> = anchor.as_ref().map(|a| {
        a.pyca_pids()
            .iter()
            .filter_map(|&p| procfs::pss_kib(p))
            .sum()
    });
    if let Some(a) = &anchor {
        sleep_until(a.event_start);
    }

    // Both recordings start now.
    let l_base = procfs::counters(lpid).context("lecternd's /proc counters")?;
    let machine_base = procfs::machine_busy_ticks();
    let others_base = procfs::all_cpu_ticks();
    let l_t0 = Instant::now();
    let started = cli.json(&["record", "start", "--title", "bench-record"])?;
    let recording_id = started["recording"]["id"]
        .as_str()
        .context("record start returned no recording id")?
        .to_owned();
    eprintln!(
        "xtask: recording {recording_id} for {} min{}",
        opts.minutes,
        if anchor.is_some() {
            " (and the pyca anchor)"
        } else {
            ""
        }
    );
    let l_end = l_t0 + Duration::from_secs(u64::from(opts.minutes) * 60);

    let mut lectern = Side::default();
    let mut anchor_side = Side::default();
    let mut ffmpeg_pid: Option<u32> = None;
    let mut ffmpeg_args: Vec<String> = Vec::new();
    let mut a_window: (Option<Instant>, Option<Instant>) = (None, None);
    let mut stopping: Option<std::thread::JoinHandle<Result<(Instant, Counters)>>> = None;
    let mut l_stopped: Option<(Instant, Counters)> = None;
    let mut next_pss = Instant::now();
    let half = l_t0 + Duration::from_secs(u64::from(opts.minutes) * 30);
    let mut dumped = false;
    // Someone looking at the preview while Lectern records (`--preview`), on a thread of its own:
    // `lectern preview` waits for the first JPEG (up to a second after the branch opens).
    let looking = opts.preview.then(|| {
        let (cli, path) = (cli.clone(), ldir.join("preview.jpg"));
        std::thread::spawn(move || look_at_preview(&cli, &path, l_t0, l_end))
    });
    let mut csv =
        String::from("t_s,lectern_pss_kib,pyca_pss_kib,ffmpeg_pss_kib,lectern_frames_dropped\n");

    loop {
        let now = Instant::now();
        if daemon.exited().is_some() {
            bail!(
                "lecternd exited during the benchmark; see {}",
                ldir.join("lecternd.log").display()
            );
        }

        // The anchor: find ffmpeg, read everyone's counters, notice when ffmpeg has ended.
        if let Some(a) = anchor.as_mut() {
            a.check_running()?;
            if a_window.0.is_none() {
                if let Some(pid) = a.ffmpeg_pid() {
                    ffmpeg_pid = Some(pid);
                    ffmpeg_args = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|b| {
                            b.split(|&c| c == 0)
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    a_window.0 = Some(now);
                    // pyca's processes are measured from here on; ffmpeg from its start (zero).
                    for p in a.pyca_pids() {
                        anchor_side
                            .base
                            .insert(p, procfs::counters(p).unwrap_or_default());
                    }
                    anchor_side.base.insert(pid, Counters::default());
                } else if now > a.event_start + Duration::from_secs(20) {
                    bail!(
                        "pyca did not start ffmpeg within 20 s of the event; see {}",
                        a.dir.join("pyca.log").display()
                    );
                }
            }
            if a_window.0.is_some() && a_window.1.is_none() {
                let pid = ffmpeg_pid.expect("set with the window start");
                if procfs::alive(pid) {
                    for p in a.pyca_pids().into_iter().chain([pid]) {
                        anchor_side.observe(p);
                    }
                } else {
                    a_window.1 = Some(now);
                }
            }
        }

        // Lectern: stop after N minutes, in a thread; take its counters once the stop is done.
        if stopping.is_none() && l_stopped.is_none() && now >= l_end {
            let cli = cli.clone();
            stopping = Some(std::thread::spawn(move || cli.stop_and_wait_idle(lpid)));
        }
        if stopping.as_ref().is_some_and(|h| h.is_finished()) {
            l_stopped = Some(stopping.take().unwrap().join().expect("stop thread")?);
        }

        // PSS at the slower interval, each side only while it records.
        if now >= next_pss {
            next_pss += Duration::from_secs(opts.interval);
            let l = (now < l_end).then(|| procfs::pss_kib(lpid)).flatten();
            let (mut py, mut ff) = (None, None);
            if let (Some(a), Some(pid), (Some(_), None)) = (anchor.as_ref(), ffmpeg_pid, a_window) {
                py = Some(
                    a.pyca_pids()
                        .iter()
                        .filter_map(|&p| procfs::pss_kib(p))
                        .sum::<u64>(),
                );
                ff = procfs::pss_kib(pid);
            }
            if let Some(v) = l {
                lectern.pss.push(v);
            }
            // Once, half-way: where the memory goes, by mapping.
            if !dumped && now >= half {
                dumped = true;
                dump_pss_by_mapping(lpid, &ldir.join("pss-by-mapping.txt"));
                let _ = std::fs::copy(format!("/proc/{lpid}/smaps"), ldir.join("smaps.txt"));
                if let Some(pid) = ffmpeg_pid.filter(|&p| procfs::alive(p)) {
                    dump_pss_by_mapping(pid, &out.join("anchor/ffmpeg-pss-by-mapping.txt"));
                }
            }
            if let (Some(p), Some(f)) = (py, ff) {
                anchor_side.pss.push(p + f);
                anchor_side.pss_parts.push((p, f));
            }
            let dropped = if l.is_some() {
                cli.json(&["status"])
                    .ok()
                    .and_then(|s| s["capture"]["frames_dropped"].as_u64())
            } else {
                None
            };
            let cell = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            let _ = writeln!(
                csv,
                "{:.1},{},{},{},{}",
                now.duration_since(l_t0).as_secs_f64(),
                cell(l),
                cell(py),
                cell(ff),
                cell(dropped)
            );
        }

        let anchor_done = anchor.is_none() || a_window.1.is_some();
        if l_stopped.is_some() && anchor_done {
            break;
        }
        if now > l_end + Duration::from_secs(120) {
            bail!("the benchmark did not finish within 2 min of its end (lectern stopped: {}, ffmpeg ended: {anchor_done})", l_stopped.is_some());
        }
        std::thread::sleep(TICK);
    }
    std::fs::write(out.join("samples.csv"), &csv)?;
    let previews = looking.map(|h| h.join().expect("preview thread"));

    // Lectern's results from its own API.
    let (l_t1, l_last) = l_stopped.expect("loop ends after the stop");
    let machine_busy_pct = (procfs::machine_busy_ticks() - machine_base) as f64
        / procfs::clock_ticks_per_second() as f64
        / l_t0.elapsed().as_secs_f64()
        * 100.0;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // Everything else that ran during the window, by command name (processes that both started
    // and ended inside the window are not seen): on a shared machine this explains frame drops.
    let mut measured: Vec<u32> = vec![lpid, std::process::id()];
    measured.extend(anchor_side.last.keys());
    let mut others: HashMap<String, u64> = HashMap::new();
    for (pid, (name, ticks)) in procfs::all_cpu_ticks() {
        if measured.contains(&pid) {
            continue;
        }
        let base = others_base
            .get(&pid)
            .filter(|(n, _)| *n == name)
            .map_or(0, |(_, t)| *t);
        *others.entry(name).or_default() += ticks.saturating_sub(base);
    }
    let window_s = l_t0.elapsed().as_secs_f64();
    let mut others: Vec<(String, f64)> = others
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                t as f64 / procfs::clock_ticks_per_second() as f64 / window_s * 100.0,
            )
        })
        .filter(|(_, pct)| *pct >= 5.0)
        .collect();
    others.sort_by(|a, b| b.1.total_cmp(&a.1));
    let status = cli.json(&["status"])?;
    let recordings = cli.json(&["recordings"])?;
    let rec = recordings["recordings"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["id"] == recording_id.as_str()))
        .cloned()
        .context("the benchmark's recording is not in `lectern recordings`")?;
    let cap = &status["capture"];
    let l_wall = l_t1.duration_since(l_t0).as_secs_f64();
    let l_bytes = rec["bytes"].as_u64().unwrap_or(0);
    let l_media_s = rec["media_duration_ns"].as_u64().unwrap_or(0) as f64 / 1e9;
    let l_segments = rec["segments"].as_u64().unwrap_or(0);
    let first_segment = cli.json(&["segments", &recording_id]).ok().and_then(|v| {
        v["segments"][0]["path"]
            .as_str()
            .map(|p| ldir.join("media").join(p))
    });
    let lectern_result = Measured {
        pss_mean_kib: mean(&lectern.pss),
        pss_max_kib: lectern.pss.iter().copied().max().unwrap_or(0),
        cpu_pct: (l_last.cpu_ticks - l_base.cpu_ticks) as f64
            / procfs::clock_ticks_per_second() as f64
            / l_wall
            * 100.0,
        write_bytes: l_last.write_bytes - l_base.write_bytes,
        media_bytes: l_bytes,
        media_s: l_media_s,
        x264: first_segment.as_deref().and_then(x264_options),
    };
    drop(daemon);

    // The anchor's results from /proc and from the MP4.
    let mut anchor_result = None;
    if let Some(mut a) = anchor.take() {
        a.stop();
        let (Some(t0), Some(t1)) = a_window else {
            unreachable!("the loop waits for both")
        };
        let wall = t1.duration_since(t0).as_secs_f64();
        let (cpu, writes, ffmpeg_writes) = anchor_side.totals(ffmpeg_pid);
        let mp4 = a.recording().context("ffmpeg left no MP4")?;
        let probe = ffprobe(&mp4)?;
        let t_arg: f64 = ffmpeg_args
            .iter()
            .position(|s| s == "-t")
            .and_then(|i| ffmpeg_args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        anchor_result = Some((
            Measured {
                pss_mean_kib: mean(&anchor_side.pss),
                pss_max_kib: anchor_side.pss.iter().copied().max().unwrap_or(0),
                cpu_pct: cpu as f64 / procfs::clock_ticks_per_second() as f64 / wall * 100.0,
                write_bytes: writes,
                media_bytes: std::fs::metadata(&mp4)?.len(),
                media_s: probe.duration_s,
                x264: x264_options(&mp4),
            },
            AnchorExtra {
                pyca_pss_mean_kib: mean(
                    &anchor_side
                        .pss_parts
                        .iter()
                        .map(|p| p.0)
                        .collect::<Vec<_>>(),
                ),
                ffmpeg_pss_mean_kib: mean(
                    &anchor_side
                        .pss_parts
                        .iter()
                        .map(|p| p.1)
                        .collect::<Vec<_>>(),
                ),
                ffmpeg_write_bytes: ffmpeg_writes,
                packets: probe.video_packets,
                t_arg,
                wall,
            },
        ));
    }

    // The report.
    let machine = Machine::read(setup.as_ref());
    let mut r = String::new();
    let _ = writeln!(
        r,
        "## `cargo xtask bench-record --minutes {}{}{}{}`\n",
        opts.minutes,
        if opts.pattern == DEFAULT_PATTERN {
            String::new()
        } else {
            format!(" --pattern {}", opts.pattern)
        },
        if opts.anchor { "" } else { " --no-anchor" },
        if opts.preview { " --preview" } else { "" }
    );
    let _ = writeln!(r, "{}\n", machine.markdown());
    let lc = |v: &str| cap[v].as_u64().map_or("?".into(), |n| n.to_string());
    let minutes_media = l_media_s / 60.0;
    let mib = |k: f64| format!("{:.1}", k / 1024.0);
    if anchor_result.is_some() {
        let _ = writeln!(
            r,
            "| metric | Lectern (lecternd) | pyca 4.4 + ffmpeg |\n| --- | --- | --- |"
        );
    } else {
        let _ = writeln!(r, "| metric | Lectern (lecternd) |\n| --- | --- |");
    }
    let mut row = |name: &str, l: String, a: Option<String>| {
        let _ = writeln!(
            r,
            "| {name} | {l} |{}",
            a.map_or(String::new(), |a| format!(" {a} |"))
        );
    };
    let a = anchor_result.as_ref();
    row(
        "PSS mean, MiB",
        mib(lectern_result.pss_mean_kib),
        a.map(|(m, x)| {
            format!(
                "{} (pyca {} + ffmpeg {})",
                mib(m.pss_mean_kib),
                mib(x.pyca_pss_mean_kib),
                mib(x.ffmpeg_pss_mean_kib)
            )
        }),
    );
    row(
        "PSS max, MiB",
        mib(lectern_result.pss_max_kib as f64),
        a.map(|(m, _)| mib(m.pss_max_kib as f64)),
    );
    row(
        "CPU, % of one core",
        format!("{:.1}", lectern_result.cpu_pct),
        a.map(|(m, _)| format!("{:.1}", m.cpu_pct)),
    );
    row(
        "frames dropped",
        format!("{} (in {}, expected {})", lc("frames_dropped"), lc("frames_in"), lc("frames_expected")),
        a.map(|(_, x)| {
            let expected = (x.t_arg * 30.0).round() as u64;
            format!(
                "n/a: ffmpeg cannot drop, only lag; {} of {} frames encoded, ran {:.1} s for `-t {}`",
                x.packets, expected, x.wall, x.t_arg
            )
        }),
    );
    row(
        "write amplification (write_bytes ÷ media bytes)",
        format!(
            "{:.4} ({} ÷ {})",
            ratio(lectern_result.write_bytes, lectern_result.media_bytes),
            lectern_result.write_bytes,
            lectern_result.media_bytes
        ),
        a.map(|(m, x)| {
            format!(
                "{:.4} ({} ÷ {}; ffmpeg alone {:.4})",
                ratio(m.write_bytes, m.media_bytes),
                m.write_bytes,
                m.media_bytes,
                ratio(x.ffmpeg_write_bytes, m.media_bytes)
            )
        }),
    );
    row(
        "segments per minute",
        format!(
            "{:.1} per media minute, {:.1} per wall minute ({l_segments} in {l_media_s:.1} s of media, {l_wall:.1} s wall)",
            l_segments as f64 / minutes_media.max(1e-9),
            l_segments as f64 / (l_wall / 60.0)
        ),
        a.map(|(m, _)| format!("n/a: one MP4 ({:.1} s)", m.media_s)),
    );
    row(
        "media bitrate, kbit/s (all streams)",
        format!(
            "{:.0}",
            lectern_result.media_bytes as f64 * 8.0 / 1000.0 / l_media_s.max(1e-9)
        ),
        a.map(|(m, _)| {
            format!(
                "{:.0}",
                m.media_bytes as f64 * 8.0 / 1000.0 / m.media_s.max(1e-9)
            )
        }),
    );
    let _ = writeln!(r);
    if let Some((m, _)) = a {
        let q = lectern_result.pss_mean_kib / m.pss_mean_kib;
        let _ = writeln!(
            r,
            "Lectern PSS ÷ (pyca + ffmpeg) PSS: **{q:.2}** by mean, {:.2} by max (goal ≤ {PSS_GOAL:.2}: {}).\n",
            lectern_result.pss_max_kib as f64 / m.pss_max_kib as f64,
            if q <= PSS_GOAL { "met" } else { "not met" }
        );
    }
    let _ = writeln!(
        r,
        "Whole machine during the run: {machine_busy_pct:.0} % of one core busy (of {} %), load average at the end {}.",
        100 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let others_text: Vec<String> = others
        .iter()
        .map(|(n, p)| format!("{n} {p:.0} %"))
        .collect();
    let _ = writeln!(
        r,
        "Other processes during the run (≥ 5 % of one core): {}.",
        if others_text.is_empty() {
            "none".to_owned()
        } else {
            others_text.join(", ")
        }
    );
    let _ = writeln!(
        r,
        "Idle PSS before recording: lecternd {} MiB{}.",
        mib(lectern_idle_pss as f64),
        pyca_idle_pss.map_or(String::new(), |p| format!(
            ", pyca's processes {} MiB",
            mib(p as f64)
        ))
    );
    let _ = writeln!(
        r,
        "Confidence preview: {}.",
        match previews {
            Some((asked, failed)) => format!(
                "open for the whole recording (`lectern preview` every {} s: {asked} pictures asked for, {failed} not delivered)",
                PREVIEW_EVERY.as_secs()
            ),
            None => "closed (nobody looked)".to_owned(),
        }
    );
    let _ = writeln!(r, "Lectern recording {recording_id}: state {}, {l_wall:.1} s wall from `record start` to the end of `record stop`.\n", rec["state"].as_str().unwrap_or("?"));
    let _ = writeln!(r, "x264 options (from the SEI in the streams):\n");
    let _ = writeln!(
        r,
        "- Lectern: `{}`",
        lectern_result.x264.as_deref().unwrap_or("not found")
    );
    if let Some((m, _)) = a {
        let _ = writeln!(
            r,
            "- ffmpeg: `{}`",
            m.x264.as_deref().unwrap_or("not found")
        );
    }
    print!("{r}");
    std::fs::write(out.join("report.md"), &r)?;
    if let Some(s) = &setup {
        std::fs::write(out.join("anchor/pip-freeze.txt"), &s.freeze)?;
    }
    eprintln!(
        "xtask: report in {}, samples in {}",
        out.join("report.md").display(),
        out.join("samples.csv").display()
    );
    Ok(())
}

/// Counters and PSS samples of one side (Lectern, or pyca + ffmpeg).
#[derive(Default)]
struct Side {
    pss: Vec<u64>,
    /// The anchor's PSS samples split as (pyca, ffmpeg).
    pss_parts: Vec<(u64, u64)>,
    /// Counters per pid at the start of the window (zero for processes started inside it).
    base: HashMap<u32, Counters>,
    /// The latest counters per pid (kept after a process ends: its last reading stands).
    last: HashMap<u32, Counters>,
}

impl Side {
    fn observe(&mut self, pid: u32) {
        if let Some(c) = procfs::counters(pid) {
            self.base.entry(pid).or_default();
            self.last.insert(pid, c);
        }
    }

    /// (CPU ticks, write bytes, write bytes of `only`) accrued inside the window.
    fn totals(&self, only: Option<u32>) -> (u64, u64, u64) {
        let (mut cpu, mut writes, mut one) = (0, 0, 0);
        for (pid, last) in &self.last {
            let base = self.base.get(pid).copied().unwrap_or_default();
            cpu += last.cpu_ticks.saturating_sub(base.cpu_ticks);
            let w = last.write_bytes.saturating_sub(base.write_bytes);
            writes += w;
            if Some(*pid) == only {
                one = w;
            }
        }
        (cpu, writes, one)
    }
}

struct Measured {
    pss_mean_kib: f64,
    pss_max_kib: u64,
    cpu_pct: f64,
    write_bytes: u64,
    media_bytes: u64,
    media_s: f64,
    x264: Option<String>,
}

struct AnchorExtra {
    pyca_pss_mean_kib: f64,
    ffmpeg_pss_mean_kib: f64,
    ffmpeg_write_bytes: u64,
    packets: u64,
    t_arg: f64,
    wall: f64,
}

/// The `lectern` CLI against the benchmark's daemon.
#[derive(Clone)]
struct Cli {
    bin: PathBuf,
    config: PathBuf,
}

impl Cli {
    /// `lectern --config F --json ARGS`, parsed.
    fn json(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("--json")
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "lectern {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `lectern record stop`, then waits until the daemon is idle again (the last segment is
    /// committed by then); returns when that was seen.
    /// Stops the recording of lecternd `pid`; returns when it is idle again, and its counters as
    /// they were when the stop's reply arrived.
    fn stop_and_wait_idle(&self, pid: u32) -> Result<(Instant, Counters)> {
        self.json(&["record", "stop"])?;
        // The reply comes once the journal has the recording's last part; its stitch can start
        // only after that, on the main loop's next idle turn. So the counters are read now, with a
        // stitcher thread that already runs subtracted. Read after the box was idle, a short
        // recording's stitch had often finished and its thread exited, and an exited thread's
        // bytes are the process's: a 1-minute run reported a write amplification of 1.97.
        let counters = procfs::counters_excluding(pid, "stitcher").context("lecternd's counters after stop")?;
        let start = Instant::now();
        loop {
            if self.json(&["status"])?["state"] == "idle" {
                return Ok((Instant::now(), counters));
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("lecternd is not idle 60 s after `record stop`");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What the report says about the machine and the software measured.
struct Machine {
    lines: Vec<String>,
}

impl Machine {
    fn read(setup: Option<&anchor::Setup>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        });
        let kernel = first_line(Command::new("uname").arg("-r")).unwrap_or_default();
        let gst = Command::new("gst-launch-1.0")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().nth(1).map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        let mut lines = vec![
            format!(
                "- machine: {nproc} CPUs ({}), {} MiB RAM, Linux {kernel}",
                model.unwrap_or_else(|| "?".into()),
                mem.and_then(|k| k.parse::<u64>().ok())
                    .map_or(0, |k| k / 1024)
            ),
            format!("- {gst}; lecternd release build of this checkout"),
        ];
        if let Some(s) = setup {
            lines.push(format!(
                "- pyca {} (PyPI, virtualenv; `pip freeze` in OUT/anchor/pip-freeze.txt); {}",
                s.pyca_version, s.ffmpeg_version
            ));
        }
        Machine { lines }
    }

    fn markdown(&self) -> String {
        self.lines.join("\n")
    }
}

/// Removes a previous run's `dir` (only if it carries this tool's marker) and creates it anew.
fn fresh_dir(dir: &Path) -> Result<()> {
    let marker = dir.join(".bench-record");
    if dir.exists() {
        if !marker.exists() {
            bail!(
                "{} exists and was not made by bench-record; choose another --out",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        marker,
        "made by cargo xtask bench-record; removed by its next run\n",
    )?;
    Ok(())
}

/// `lectern preview --out PATH` every [`PREVIEW_EVERY`] from `t0` until `end`; returns how many
/// pictures were asked for and how many of those did not come.
fn look_at_preview(cli: &Cli, path: &Path, t0: Instant, end: Instant) -> (u32, u32) {
    let (mut asked, mut failed) = (0, 0);
    let mut next = t0;
    while next < end {
        sleep_until(next);
        next += PREVIEW_EVERY;
        asked += 1;
        let path = path.to_string_lossy();
        if let Err(e) = cli.json(&["preview", "--out", &path]) {
            failed += 1;
            eprintln!("xtask: lectern preview: {e:#}");
        }
    }
    (asked, failed)
}

/// Writes the 20 largest mappings of `pid` by PSS to `path`, then its anonymous memory by kind
/// (best effort: it is a diagnostic).
fn dump_pss_by_mapping(pid: u32, path: &Path) {
    let mut text = format!(
        "# PSS KiB by mapping of pid {pid} ({}), half-way through the recording\n",
        procfs::comm(pid)
    );
    for (name, kib) in procfs::pss_by_mapping(pid).into_iter().take(20) {
        let _ = writeln!(text, "{kib:>8}  {name}");
    }
    let _ = writeln!(
        text,
        "# AnonHugePages (transparent huge pages): {} KiB",
        procfs::anon_huge_pages_kib(pid)
    );
    let _ = writeln!(text, "# [anon] by kind: PSS KiB, mappings");
    for (kind, (kib, n)) in procfs::anon_by_kind(pid) {
        let _ = writeln!(text, "{kib:>8}  {kind} ({n})");
    }
    let _ = std::fs::write(path, text);
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// The options string x264 writes into an SEI of its first frame ("x264 - core N - H.264/MPEG-4
/// AVC codec - ... - options: cabac=1 ref=1 ..."): the ground truth of what each side encoded with.
/// The first video frame is copied out as a raw H.264 stream by ffmpeg first, because in MPEG-TS
/// the SEI is cut into 188-byte packets.
fn x264_options(path: &Path) -> Option<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-frames:v",
            "1",
            "-f",
            "h264",
            "-",
        ])
        .output()
        .ok()?;
    let data = out.stdout;
    let at = data.windows(11).position(|w| w == b"x264 - core")?;
    let end = data[at..]
        .iter()
        .position(|&b| b == 0)
        .map_or(data.len(), |n| at + n);
    Some(String::from_utf8_lossy(&data[at..end]).into_owned())
}

struct Probe {
    video_packets: u64,
    duration_s: f64,
}

/// Counts the video packets of a file and reads its duration with ffprobe.
fn ffprobe(path: &Path) -> Result<Probe> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .context("ffprobe (apt: ffmpeg)")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ffprobe {}", path.display()))?;
    Ok(Probe {
        video_packets: v["streams"][0]["nb_read_packets"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        duration_s: v["format"]["duration"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
    })
}
