//! The lab runner: the sim board's scenarios on a real board over SSH (docs/hil.md). A scenario
//! is a sequence of steps — check the board is up and idle, press the button or assert the
//! power-fail line through the GPIO loopback, cut the supply with the relay, wait for the board
//! to come back with a new boot id, wait for `lecternd` to answer and resume, then check what
//! the card kept: every segment committed before the cut still committed with its checksum (read
//! back on the card with `sha256sum`), no holes, the media lost per cut within the allowance of
//! the CI power-cut harness, and the stitched MP4 and its manifest copied off the board and
//! checked (SHA-256, parts, the gap's cause, every segment listed, decodes cleanly).
//!
//! Everything the runner does to the board goes through [`Transport`] (`transport.rs`): [`Ssh`]
//! in the lab, [`fake::FakeBoard`] in CI, which runs the real daemon on the sim board in a temp
//! directory so the runner's ordering, waits, timeouts, result collection and error messages are
//! tested for real. Each run writes `steps.log`, `report.json`, the fetched manifest and MP4,
//! `recordings.json` and the daemon's log into its output directory, whether it passed or not.
//!
//! Ordering of a warned cut, which is what a UPS/supercap supervisor does: assert power-fail →
//! wait until the daemon reports `power_lost` (and at least `warn_lead` since the edge) → relay
//! off → the board must stop answering → stay off `off_for` → release power-fail → relay on. The
//! line is released before power returns because a supervisor's line clears when input power does.

pub mod fake;
pub mod transport;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use transport::{parse_line, parse_relay, run_ok, sh_quote, Action, LabError, Line, LineDrive, Output, Rig, Ssh, Transport};

use crate::powercut::{UNWARNED_LOSS, WARNED_LOSS};

/// How to reach the daemon on the board: shell prefixes, run through the transport.
#[derive(Clone, Debug)]
pub struct Board {
    /// The CLI with its config (`--json WORDS` is appended).
    pub lectern: String,
    /// Prefix that runs a command as the daemon's user, who owns the media (mode 0600); empty
    /// when the transport already is that user.
    pub as_daemon: String,
    /// Prints an id that changes at every boot.
    pub boot_id: String,
    /// Prints the daemon's log of the current boot.
    pub logs: String,
    /// Prints what identifies the card under test (results belong to a card model); may fail.
    pub card: String,
}

impl Board {
    /// A board installed from the image or the .deb (packaging/): the `lectern` system user owns
    /// the control socket and the media, and the SSH user has passwordless sudo.
    pub fn packaged() -> Board {
        Board {
            lectern: "sudo -n -u lectern lectern --config /etc/lectern/lectern.toml".into(),
            as_daemon: "sudo -n -u lectern".into(),
            boot_id: "cat /proc/sys/kernel/random/boot_id".into(),
            logs: "sudo -n journalctl -u lecternd -b --no-pager -o short-monotonic".into(),
            card: "cd /sys/block/mmcblk0/device && echo $(cat name manfid oemid date)".into(),
        }
    }

    fn as_daemon(&self, cmd: &str) -> String {
        if self.as_daemon.is_empty() {
            cmd.to_owned()
        } else {
            format!("{} {cmd}", self.as_daemon)
        }
    }
}

/// Every wait of the runner; `lab()` suits a Raspberry Pi, tests shorten them.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// One command on the board.
    pub command: Duration,
    /// One boot-id probe while waiting for the board to go or come back.
    pub probe: Duration,
    /// Relay off → the board stops answering.
    pub down: Duration,
    /// Power on or reboot → the board answers with a new boot id.
    pub boot: Duration,
    /// The board answers → `lectern status` answers.
    pub daemon: Duration,
    /// A state the daemon must reach (recording after a press, resumed after a boot, ...).
    pub state: Duration,
    /// Recording final → its stitch `done`.
    pub stitch: Duration,
    /// Copying the stitched file off the board.
    pub fetch: Duration,
    /// Between two polls.
    pub poll: Duration,
}

impl Timeouts {
    pub fn lab() -> Timeouts {
        let s = Duration::from_secs;
        Timeouts {
            command: s(30),
            probe: s(10),
            down: s(30),
            boot: s(180),
            daemon: s(90),
            state: s(60),
            stitch: s(600),
            fetch: s(600),
            poll: Duration::from_millis(250),
        }
    }
}

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long each part records before the next step.
    pub record: Duration,
    /// How long a button press holds the line (the daemon debounces 30 ms by default).
    pub press: Duration,
    /// Power-fail edge → relay off, at least (the supply's hold-up time).
    pub warn_lead: Duration,
    /// How long the board stays unpowered.
    pub off_for: Duration,
    /// The encoder the board must have picked (`v4l2h264enc` on a Pi 4).
    pub expect_encoder: Option<String>,
    /// Decode the fetched MP4 locally (ffmpeg and gst-discoverer on the controller).
    pub decode: bool,
    pub timeouts: Timeouts,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            record: Duration::from_secs(20),
            press: Duration::from_millis(200),
            warn_lead: Duration::from_millis(300),
            off_for: Duration::from_secs(5),
            expect_encoder: None,
            decode: true,
            timeouts: Timeouts::lab(),
        }
    }
}

/// The scenarios; `lab SCENARIO` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Button starts and stops an ad-hoc recording through the GPIO loopback.
    Button,
    /// Power-fail edge, then a real cut: everything up to the edge kept, resumed, stitched.
    PowerFail,
    /// A cut with no warning: at most `UNWARNED_LOSS` lost, resumed, stitched.
    Cut,
    /// A clean reboot mid-recording: resumed as part 2, stitched with a `shutdown` gap.
    Reboot,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Scenario::Button, Scenario::PowerFail, Scenario::Cut, Scenario::Reboot];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Button => "button",
            Scenario::PowerFail => "powerfail",
            Scenario::Cut => "cut",
            Scenario::Reboot => "reboot",
        }
    }

    pub fn parse(word: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == word)
    }
}

/// What a run did and found. `result` is the first error; everything before it is in `steps`.
#[derive(Debug)]
pub struct Report {
    pub scenario: Scenario,
    pub result: Result<(), LabError>,
    /// Time since the start of the run, what happened.
    pub steps: Vec<(Duration, String)>,
    /// Measurements: encoder, edge → power_lost, boot time, media lost, ...
    pub facts: Map<String, Value>,
    pub dir: PathBuf,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario.name(),
            "ok": self.result.is_ok(),
            "error": self.result.as_ref().err().map(ToString::to_string),
            "facts": self.facts,
            "steps": self.steps.iter().map(|(t, s)| json!({"t_s": t.as_secs_f64(), "step": s})).collect::<Vec<_>>(),
        })
    }
}

/// Runs one scenario against the board behind `t`, writing its results into `out` (created).
/// Never panics on a board problem: the report says what failed and where.
pub fn run(t: &mut dyn Transport, board: &Board, opts: &Options, scenario: Scenario, out: &Path) -> Report {
    let mut r = Runner { t, board, opts, out: out.to_owned(), started: Instant::now(), steps: Vec::new(), facts: Map::new(), boot_id: String::new(), cut: false };
    let result = std::fs::create_dir_all(out)
        .map_err(|source| LabError::Io { what: format!("create {}", out.display()), source })
        .and_then(|()| r.scenario(scenario));
    match &result {
        Ok(()) => r.step(format!("{} passed", scenario.name())),
        Err(e) => r.step(format!("{} FAILED: {e}", scenario.name())),
    }
    r.collect(result.is_err());
    let report = Report { scenario, result, steps: r.steps, facts: r.facts, dir: out.to_owned() };
    let log: String = report.steps.iter().map(|(t, s)| format!("{:>8.1}s  {s}\n", t.as_secs_f64())).collect();
    let _ = std::fs::write(out.join("steps.log"), log);
    let _ = std::fs::write(out.join("report.json"), format!("{:#}\n", report.to_json()));
    report
}

/// One committed or open segment as `lectern --json segments` lists it.
#[derive(Clone, Debug)]
pub struct SegRow {
    pub part_seq: i64,
    pub seq: i64,
    pub abs_path: String,
    pub bytes: i64,
    pub sha256: String,
    pub duration_ns: i64,
    pub state: String,
}

impl SegRow {
    fn from_json(r: &Value) -> Option<SegRow> {
        Some(SegRow {
            part_seq: r["part_seq"].as_i64()?,
            seq: r["seq"].as_i64()?,
            abs_path: r["abs_path"].as_str()?.to_owned(),
            bytes: r["bytes"].as_i64()?,
            sha256: r["sha256"].as_str().unwrap_or_default().to_owned(),
            duration_ns: r["duration_ns"].as_i64().unwrap_or(0),
            state: r["state"].as_str()?.to_owned(),
        })
    }
}

struct Runner<'a> {
    t: &'a mut dyn Transport,
    board: &'a Board,
    opts: &'a Options,
    out: PathBuf,
    started: Instant,
    steps: Vec<(Duration, String)>,
    facts: Map<String, Value>,
    boot_id: String,
    /// The relay is off because of us (cleanup switches it back on).
    cut: bool,
}

impl Runner<'_> {
    fn step(&mut self, text: impl Into<String>) {
        let (t, text) = (self.started.elapsed(), text.into());
        eprintln!("lab [{:>7.1}s] {text}", t.as_secs_f64());
        self.steps.push((t, text));
    }

    fn fact(&mut self, key: &str, value: impl Into<Value>) {
        self.facts.insert(key.to_owned(), value.into());
    }

    fn scenario(&mut self, s: Scenario) -> Result<(), LabError> {
        self.preflight(s)?;
        match s {
            Scenario::Button => self.button(),
            Scenario::PowerFail => self.power_cut(true),
            Scenario::Cut => self.power_cut(false),
            Scenario::Reboot => self.reboot(),
        }
    }

    // ---- the scenarios ----

    /// Up, idle, the encoder expected, and the rig parts the scenario needs answer (so a missing
    /// relay is found before a recording starts, not in the middle of it).
    fn preflight(&mut self, s: Scenario) -> Result<(), LabError> {
        self.step(format!("{}: checking {}", s.name(), self.t.name()));
        self.boot_id = self.probe_boot_id()?;
        let status = self.wait_daemon()?;
        if status["state"] != "idle" {
            return Err(LabError::Precondition(format!(
                "{} is not idle (state {}, recording {}): stop it first (`lectern record stop`)",
                self.t.name(),
                status["state"],
                status["recording"]["id"]
            )));
        }
        let card = self.board.card.clone();
        if let Ok(out) = self.t.run(&card, self.opts.timeouts.command) {
            self.fact("card", out.stdout.trim());
        }
        let encoder = status["encoder"]["element"].as_str().unwrap_or("").to_owned();
        self.fact("encoder", encoder.clone());
        self.fact("encoder_reason", status["encoder"]["reason"].clone());
        if let Some(want) = &self.opts.expect_encoder {
            if &encoder != want {
                return Err(LabError::Check(format!("the daemon picked encoder {encoder:?}, expected {want:?}: {}", status["encoder"]["reason"])));
            }
        }
        match s {
            Scenario::Button => self.t.line(Line::Button, false)?,
            Scenario::PowerFail => {
                self.t.line(Line::PowerFail, false)?;
                self.t.power(true)?;
            }
            Scenario::Cut => self.t.power(true)?,
            Scenario::Reboot => {}
        }
        self.step(format!("board up (boot {}), daemon idle, encoder {encoder}", self.boot_id));
        Ok(())
    }

    fn button(&mut self) -> Result<(), LabError> {
        self.press()?;
        let status = self.wait_status("recording after a button press", |s| s["state"] == "recording")?;
        let id = status["recording"]["id"].as_str().unwrap_or_default().to_owned();
        self.fact("recording", id.clone());
        if status["recording"]["kind"] != "adhoc" || status["led"] != "recording" {
            return Err(LabError::Check(format!("a press started kind {} with LED {}, expected adhoc and recording", status["recording"]["kind"], status["led"])));
        }
        self.first_segment(&id, 1)?;
        std::thread::sleep(self.opts.record);
        self.press()?;
        self.wait_status("idle after the second press", |s| s["state"] == "idle")?;
        let rec = self.recording(&id)?;
        if rec["state"] != "completed" || rec["parts"] != 1 {
            return Err(LabError::Check(format!("after two presses the recording is {} with {} parts, expected completed with 1: {rec}", rec["state"], rec["parts"])));
        }
        let segs = self.verify_segments(&id, &[])?;
        self.check_stitch(&id, &segs, None)
    }

    /// A warned cut (power-fail edge first) or an unwarned one; then resume and stitch.
    fn power_cut(&mut self, warned: bool) -> Result<(), LabError> {
        let id = self.start_recording(if warned { "lab powerfail" } else { "lab cut" })?;
        self.first_segment(&id, 1)?;
        std::thread::sleep(self.opts.record);
        let captured = self.captured()?;
        let snapshot = self.committed(&id)?;
        if warned {
            self.step(format!("power-fail asserted ({} segments committed, {captured:?} captured)", snapshot.len()));
            let edge = Instant::now();
            self.t.line(Line::PowerFail, true)?;
            let status = self.wait_status("power_lost after the power-fail edge", |s| s["state"] == "power_lost")?;
            let seen = edge.elapsed();
            self.fact("edge_to_power_lost_ms", seen.as_secs_f64() * 1e3);
            self.fact("flush_ms", status["power"]["last_flush_ms"].clone());
            self.fact("drain_ms", status["power"]["last_drain_ms"].clone());
            std::thread::sleep(self.opts.warn_lead.saturating_sub(seen));
        } else {
            self.step(format!("cutting with no warning ({} segments committed, {captured:?} captured)", snapshot.len()));
        }
        self.power_cycle(warned)?;
        self.resumed(&id)?;
        self.verify_segments(&id, &snapshot)?;
        self.finish_two_parts(&id, captured, if warned { WARNED_LOSS } else { UNWARNED_LOSS }, if warned { "power" } else { "crash" })
    }

    fn reboot(&mut self) -> Result<(), LabError> {
        let id = self.start_recording("lab reboot")?;
        self.first_segment(&id, 1)?;
        std::thread::sleep(self.opts.record);
        let captured = self.captured()?;
        let snapshot = self.committed(&id)?;
        self.step(format!("reboot requested ({} segments committed, {captured:?} captured)", snapshot.len()));
        self.t.reboot()?;
        self.wait_back()?;
        self.wait_daemon()?;
        self.resumed(&id)?;
        self.verify_segments(&id, &snapshot)?;
        // SIGTERM commits the open segment, so a reboot loses no more than a warned cut.
        self.finish_two_parts(&id, captured, WARNED_LOSS, "shutdown")
    }

    /// Part 2 records, the recording stops `completed` with 2 parts, part 1 kept what it had
    /// captured up to the cut (less `allowed`), and the stitch shows one gap of `cause`.
    fn finish_two_parts(&mut self, id: &str, captured: Duration, allowed: Duration, cause: &str) -> Result<(), LabError> {
        self.first_segment(id, 2)?;
        std::thread::sleep(self.opts.record);
        let stopped = self.lectern("record stop")?;
        let rec = &stopped["stopped"];
        if rec["state"] != "completed" || rec["parts"] != 2 {
            return Err(LabError::Check(format!("the recording stopped {} with {} parts, expected completed with 2: {rec}", rec["state"], rec["parts"])));
        }
        self.step(format!("stopped {id}: completed, 2 parts"));
        let segs = self.verify_segments(id, &[])?;
        let kept = Duration::from_nanos(segs.iter().filter(|s| s.part_seq == 1).map(|s| s.duration_ns.max(0) as u64).sum());
        let lost = captured.saturating_sub(kept);
        self.fact("lost_ms", lost.as_secs_f64() * 1e3);
        self.fact("allowed_loss_ms", allowed.as_secs_f64() * 1e3);
        if lost > allowed {
            return Err(LabError::Check(format!("part 1 kept {kept:?} of the {captured:?} captured before the cut: lost {lost:?}, allowed {allowed:?}")));
        }
        self.check_stitch(id, &segs, Some(cause))
    }

    // ---- steps ----

    fn press(&mut self) -> Result<(), LabError> {
        self.step("button pressed");
        self.t.line(Line::Button, true)?;
        std::thread::sleep(self.opts.press);
        self.t.line(Line::Button, false)
    }

    fn start_recording(&mut self, title: &str) -> Result<String, LabError> {
        let status = self.lectern(&format!("record start --title {}", sh_quote(title)))?;
        let id = status["recording"]["id"].as_str().ok_or_else(|| LabError::Check(format!("record start returned no recording id: {status}")))?.to_owned();
        self.fact("recording", id.clone());
        self.step(format!("recording {id} started"));
        Ok(id)
    }

    /// Relay off, the board goes away, stays off, (power-fail released), relay on, the board and
    /// the daemon come back.
    fn power_cycle(&mut self, release_power_fail: bool) -> Result<(), LabError> {
        self.step("relay off");
        self.cut = true;
        self.t.power(false)?;
        self.wait_down()?;
        std::thread::sleep(self.opts.off_for);
        if release_power_fail {
            self.t.line(Line::PowerFail, false)?;
        }
        self.step("relay on");
        self.t.power(true)?;
        self.cut = false;
        self.wait_back()?;
        self.wait_daemon()?;
        Ok(())
    }

    fn probe_boot_id(&mut self) -> Result<String, LabError> {
        let cmd = self.board.boot_id.clone();
        let id = run_ok(self.t, &cmd, self.opts.timeouts.probe)?.trim().to_owned();
        if id.is_empty() {
            return Err(LabError::Check(format!("`{cmd}` printed no boot id")));
        }
        Ok(id)
    }

    /// Polls until the board stops answering.
    fn wait_down(&mut self) -> Result<(), LabError> {
        let start = Instant::now();
        loop {
            match self.probe_boot_id() {
                Err(e) if e.is_unreachable() => break,
                Err(e) => return Err(e),
                Ok(_) if start.elapsed() >= self.opts.timeouts.down => {
                    return Err(LabError::StillPowered { host: self.t.name(), after: start.elapsed() })
                }
                Ok(_) => std::thread::sleep(self.opts.timeouts.poll),
            }
        }
        self.step(format!("board down after {:.1} s", start.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Polls until the board answers with a boot id other than the last one.
    fn wait_back(&mut self) -> Result<(), LabError> {
        let start = Instant::now();
        let mut same_boot = false;
        let mut last = String::from("no answer yet");
        while start.elapsed() < self.opts.timeouts.boot {
            match self.probe_boot_id() {
                Ok(id) if id != self.boot_id => {
                    self.boot_id = id;
                    self.fact("boot_s", start.elapsed().as_secs_f64());
                    self.step(format!("board back after {:.1} s (boot {})", start.elapsed().as_secs_f64(), self.boot_id));
                    return Ok(());
                }
                Ok(_) => same_boot = true,
                Err(e) if e.is_unreachable() => (same_boot, last) = (false, e.to_string()),
                Err(e) => return Err(e),
            }
            std::thread::sleep(self.opts.timeouts.poll);
        }
        let (host, after) = (self.t.name(), start.elapsed());
        Err(if same_boot { LabError::NotRebooted { host, after } } else { LabError::DidNotComeBack { host, after, last } })
    }

    /// Polls `lectern status` until it answers.
    fn wait_daemon(&mut self) -> Result<Value, LabError> {
        let start = Instant::now();
        loop {
            match self.lectern("status") {
                Ok(s) => {
                    self.fact("daemon_up_s", start.elapsed().as_secs_f64());
                    return Ok(s);
                }
                Err(e) if start.elapsed() >= self.opts.timeouts.daemon => {
                    return Err(LabError::DaemonDown { host: self.t.name(), after: start.elapsed(), last: e.to_string() })
                }
                Err(_) => std::thread::sleep(self.opts.timeouts.poll),
            }
        }
    }

    /// Polls `lectern status` until `pred` holds; the last status is in the error.
    fn wait_status(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value, LabError> {
        let start = Instant::now();
        let mut last = String::from("no status");
        while start.elapsed() < self.opts.timeouts.state {
            match self.lectern("status") {
                Ok(s) if pred(&s) => {
                    self.step(format!("{what}: after {:.1} s", start.elapsed().as_secs_f64()));
                    return Ok(s);
                }
                Ok(s) => last = s.to_string(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(self.opts.timeouts.poll);
        }
        Err(LabError::Check(format!("timed out after {:?} waiting for {what}; last status: {last}", self.opts.timeouts.state)))
    }

    fn resumed(&mut self, id: &str) -> Result<(), LabError> {
        let s = self.wait_status(&format!("{id} resumed"), |s| s["state"] == "recording" && s["recording"]["id"] == id)?;
        self.fact("frames_dropped_part2", s["capture"]["frames_dropped"].clone());
        Ok(())
    }

    /// Waits until part `part` of `id` has its first segment row (media is arriving).
    fn first_segment(&mut self, id: &str, part: i64) -> Result<(), LabError> {
        let start = Instant::now();
        while start.elapsed() < self.opts.timeouts.state {
            if self.segments(id)?.iter().any(|s| s.part_seq == part) {
                return Ok(());
            }
            std::thread::sleep(self.opts.timeouts.poll);
        }
        Err(LabError::Check(format!("part {part} of {id} got no segment within {:?}", self.opts.timeouts.state)))
    }

    /// Media that has entered the encoder in the current part: `frames_in` at the measured rate.
    fn captured(&mut self) -> Result<Duration, LabError> {
        let s = self.lectern("status")?;
        let c = &s["capture"];
        let (frames, expected, secs) = (c["frames_in"].as_f64(), c["frames_expected"].as_f64(), c["running_time_s"].as_f64());
        match (frames, expected, secs) {
            (Some(f), Some(e), Some(t)) if e > 0.0 && t > 0.0 => Ok(Duration::from_secs_f64(f / (e / t))),
            _ => Err(LabError::Check(format!("status has no capture counters: {c}"))),
        }
    }

    // ---- reading the board ----

    fn lectern(&mut self, words: &str) -> Result<Value, LabError> {
        let cmd = format!("{} --json {words}", self.board.lectern);
        let out = run_ok(self.t, &cmd, self.opts.timeouts.command)?;
        serde_json::from_str(&out).map_err(|e| LabError::Check(format!("`{cmd}` printed no JSON ({e}): {out:?}")))
    }

    fn recording(&mut self, id: &str) -> Result<Value, LabError> {
        let list = self.lectern("recordings")?;
        list["recordings"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["id"] == id))
            .cloned()
            .ok_or_else(|| LabError::Check(format!("recording {id} is not in `lectern recordings`")))
    }

    fn segments(&mut self, id: &str) -> Result<Vec<SegRow>, LabError> {
        let v = self.lectern(&format!("segments {}", sh_quote(id)))?;
        let rows = v["segments"].as_array().ok_or_else(|| LabError::Check(format!("`segments {id}` has no list: {v}")))?;
        rows.iter().map(|r| SegRow::from_json(r).ok_or_else(|| LabError::Check(format!("segment row lacks a field: {r}")))).collect()
    }

    /// The committed segments, which must be numbered 1..n with no hole.
    fn committed(&mut self, id: &str) -> Result<Vec<SegRow>, LabError> {
        let segs: Vec<SegRow> = self.segments(id)?.into_iter().filter(|s| s.state == "committed").collect();
        if let Some((i, s)) = segs.iter().enumerate().find(|(i, s)| s.seq != *i as i64 + 1) {
            return Err(LabError::Check(format!("committed segments of {id} have a hole: position {} holds seq {}", i + 1, s.seq)));
        }
        Ok(segs)
    }

    /// Every committed segment's file on the card has the journal's SHA-256, and every segment in
    /// `snapshot` (committed before a cut) is still committed with the same length and checksum.
    fn verify_segments(&mut self, id: &str, snapshot: &[SegRow]) -> Result<Vec<SegRow>, LabError> {
        let now = self.committed(id)?;
        for s in snapshot {
            match now.iter().find(|n| n.seq == s.seq) {
                None => return Err(LabError::Check(format!("segment {} ({}) was committed before the cut and is not committed after it", s.seq, s.abs_path))),
                Some(n) if (n.bytes, &n.sha256) != (s.bytes, &s.sha256) => {
                    return Err(LabError::Check(format!("segment {} ({}) changed across the cut: {} bytes {} before, {} bytes {} after", s.seq, s.abs_path, s.bytes, s.sha256, n.bytes, n.sha256)))
                }
                Some(_) => {}
            }
        }
        for chunk in now.chunks(100) {
            let paths: Vec<String> = chunk.iter().map(|s| sh_quote(&s.abs_path)).collect();
            let cmd = self.board.as_daemon(&format!("sha256sum -- {}", paths.join(" ")));
            // sha256sum exits 1 when a file is missing and still prints the others.
            let out = self.t.run(&cmd, self.opts.timeouts.fetch)?;
            for s in chunk {
                let found = out.stdout.lines().find_map(|l| l.split_once("  ").filter(|(_, p)| *p == s.abs_path).map(|(h, _)| h.to_owned()));
                match found {
                    None => return Err(LabError::Check(format!("segment {} ({}) is missing or unreadable on the card: {}", s.seq, s.abs_path, out.stderr.trim()))),
                    Some(h) if h != s.sha256 => {
                        return Err(LabError::Check(format!("segment {} ({}) fails its checksum on the card: the journal says {}, the file hashes to {h}", s.seq, s.abs_path, s.sha256)))
                    }
                    Some(_) => {}
                }
            }
        }
        let before = if snapshot.is_empty() { String::new() } else { format!(", all {} committed before the cut unchanged", snapshot.len()) };
        self.step(format!("{} committed segments of {id} match their checksums on the card{before}", now.len()));
        self.fact("segments", now.len());
        Ok(now)
    }

    /// The stitch is `done`; the manifest and the MP4 are copied off the board; the MP4's SHA-256
    /// is the row's and the manifest's; the manifest lists the parts, the gap cause and every
    /// segment with the journal's checksum; the MP4 decodes cleanly and lasts what the parts do.
    fn check_stitch(&mut self, id: &str, segs: &[SegRow], gap: Option<&str>) -> Result<(), LabError> {
        let start = Instant::now();
        let stitch = loop {
            let rec = self.recording(id)?;
            if matches!(rec["stitch"]["state"].as_str(), Some("done" | "failed")) {
                break rec["stitch"].clone();
            }
            if start.elapsed() >= self.opts.timeouts.stitch {
                return Err(LabError::Check(format!("{id} was not stitched within {:?}: {}", self.opts.timeouts.stitch, rec["stitch"])));
            }
            std::thread::sleep(self.opts.timeouts.poll);
        };
        if stitch["state"] != "done" {
            return Err(LabError::Check(format!("the stitch of {id} failed: {}", stitch["error"])));
        }
        self.step(format!("{id} stitched after {:.1} s", start.elapsed().as_secs_f64()));
        let media = self.lectern("status")?["media_dir"].as_str().unwrap_or_default().to_owned();
        let (Some(mp4_rel), Some(manifest_rel), Some(sha)) = (stitch["path"].as_str(), stitch["manifest"].as_str(), stitch["sha256"].as_str()) else {
            return Err(LabError::Check(format!("the stitch row lacks path, manifest or sha256: {stitch}")));
        };
        let manifest_path = self.out.join(format!("{id}.manifest.json"));
        let mp4 = self.out.join(format!("{id}.mp4"));
        for (rel, local) in [(manifest_rel, &manifest_path), (mp4_rel, &mp4)] {
            let cmd = self.board.as_daemon(&format!("cat -- {}", sh_quote(&format!("{media}/{rel}"))));
            self.t.fetch(&cmd, local, self.opts.timeouts.fetch)?;
        }
        let got = crate::sha256_file(&mp4).map_err(|e| LabError::Check(format!("hashing {}: {e:#}", mp4.display())))?;
        if got != sha {
            return Err(LabError::Check(format!("the stitched file copied off the board hashes to {got}, its row says {sha}")));
        }
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| LabError::Io { what: format!("read {}", manifest_path.display()), source })?;
        let m: Value = serde_json::from_str(&text).map_err(|e| LabError::Check(format!("the manifest of {id} is not JSON: {e}")))?;
        check_manifest(&m, id, sha, segs, gap)?;
        self.step(format!("manifest and MP4 of {id} fetched and match ({} parts, gap {:?})", m["parts"].as_array().map_or(0, Vec::len), gap));
        if self.opts.decode {
            let errors = crate::decode_errors(&mp4).map_err(|e| LabError::Check(format!("{e:#}")))?;
            if !errors.is_empty() {
                return Err(LabError::Check(format!("{} does not decode cleanly:\n{}", mp4.display(), errors.join("\n"))));
            }
            let found = crate::discover(&mp4).map_err(|e| LabError::Check(format!("{e:#}")))?;
            let parts_ns: i64 = segs.iter().map(|s| s.duration_ns).sum();
            let diff = (found.duration.as_secs_f64() - parts_ns as f64 / 1e9).abs();
            self.fact("stitched_s", found.duration.as_secs_f64());
            let parts = m["parts"].as_array().map_or(1, Vec::len) as f64;
            if !found.has_video || diff > 0.5 * parts {
                return Err(LabError::Check(format!("{} lasts {:?} (video: {}), its segments {:.2} s: the stitch must keep the parts and cut only the outage", mp4.display(), found.duration, found.has_video, parts_ns as f64 / 1e9)));
            }
            self.step(format!("{id}.mp4 decodes cleanly, {:.1} s", found.duration.as_secs_f64()));
        }
        Ok(())
    }

    /// Best effort after the scenario: the lines released and the power back on if we left them
    /// otherwise, the daemon's log and `recordings` saved, and a recording left running by a
    /// failure stopped (its media stays on the card, named in the report).
    fn collect(&mut self, failed: bool) {
        if failed {
            for line in [Line::Button, Line::PowerFail] {
                let _ = self.t.line(line, false);
            }
            if self.cut {
                let r = self.t.power(true);
                self.step(format!("cleanup: relay on: {}", r.as_ref().map_or_else(ToString::to_string, |()| "ok".into())));
            }
        }
        let logs = self.board.logs.clone();
        let path = self.out.join("daemon.log");
        if let Err(e) = self.t.fetch(&logs, &path, self.opts.timeouts.command) {
            self.step(format!("daemon log not collected: {e}"));
        }
        match self.lectern("recordings") {
            Ok(v) => {
                let _ = std::fs::write(self.out.join("recordings.json"), format!("{v:#}\n"));
            }
            Err(e) => self.step(format!("recordings not collected: {e}")),
        }
        if failed && self.lectern("status").is_ok_and(|s| s["state"] != "idle") {
            let r = self.lectern("record stop");
            self.step(format!("cleanup: stopped the recording left running: {}", r.map_or_else(|e| e.to_string(), |v| v["stopped"]["id"].to_string())));
        }
    }
}

/// The manifest names the recording, lists `segs` part by part with the journal's checksums,
/// carries the stitched file's SHA-256, and has exactly the expected gap.
pub fn check_manifest(m: &Value, id: &str, sha: &str, segs: &[SegRow], gap: Option<&str>) -> Result<(), LabError> {
    let bad = |what: String| Err(LabError::Check(format!("manifest of {id}: {what}")));
    if m["recording"]["id"] != id {
        return bad(format!("names recording {}", m["recording"]["id"]));
    }
    if m["stitched"]["sha256"] != sha {
        return bad(format!("says the stitched file hashes to {}, the row says {sha}", m["stitched"]["sha256"]));
    }
    let listed: Vec<(i64, i64, &str)> = m["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["segments"].as_array().into_iter().flatten().map(move |s| (p["seq"].as_i64().unwrap_or(-1), s["seq"].as_i64().unwrap_or(-1), s["sha256"].as_str().unwrap_or(""))))
        .collect();
    let journal: Vec<(i64, i64, &str)> = segs.iter().map(|s| (s.part_seq, s.seq, s.sha256.as_str())).collect();
    if listed != journal {
        return bad(format!("lists {} segments (part, seq, sha256) that differ from the journal's {}", listed.len(), journal.len()));
    }
    let parts = segs.iter().map(|s| s.part_seq).max().unwrap_or(0) as usize;
    if m["parts"].as_array().map_or(0, Vec::len) != parts {
        return bad(format!("has {} parts, the journal {parts}", m["parts"].as_array().map_or(0, Vec::len)));
    }
    let gaps: Vec<&str> = m["gaps"].as_array().into_iter().flatten().map(|g| g["cause"].as_str().unwrap_or("?")).collect();
    if gaps != gap.into_iter().collect::<Vec<_>>() {
        return bad(format!("has gaps {gaps:?}, expected {:?}", gap.into_iter().collect::<Vec<_>>()));
    }
    Ok(())
}

/// The `lab` command line, parsed and validated.
#[derive(Debug)]
pub struct Invocation {
    pub host: String,
    pub rig: Rig,
    pub board: Board,
    pub opts: Options,
    pub scenarios: Vec<Scenario>,
    pub repeat: u32,
    pub out: PathBuf,
}

pub const USAGE: &str = "\
usage: lab --host USER@HOST [rig] [options] SCENARIO...
scenarios: button | powerfail | cut | reboot | all   (docs/hil.md says what each proves)
rig (run on this machine, the controller):
  --relay usbrelay:ID | pinctrl:GPIO | exec:PROGRAM       the board's supply (on = powered)
  --button pinctrl:GPIO | exec:PROGRAM | sim              the board's button line (GPIO17)
  --powerfail pinctrl:GPIO | exec:PROGRAM | sim           the board's power-fail line (GPIO22)
options:
  --out DIR            results (default lab-results/<UTC time>)
  --record-s N         seconds each part records (20)
  --off-s N            seconds the board stays unpowered (5)
  --warn-lead-ms N     power-fail edge to relay off, at least (300)
  --repeat N           run the scenarios N times, stop at the first failure (1)
  --expect-encoder E   fail unless the daemon picked encoder E (v4l2h264enc on a Pi 4)
  --boot-timeout-s N   power on or reboot to the board answering (180)
  --no-decode          skip decoding the fetched MP4 here (needs ffmpeg, gst-discoverer-1.0)
  --lectern CMD        how to run the CLI on the board (sudo -n -u lectern lectern --config /etc/lectern/lectern.toml)
  --as CMD             prefix to read the media as the daemon's user (sudo -n -u lectern)
exit status: 0 all passed, 1 a scenario failed, 2 bad usage";

/// Parses `lab`'s arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let mut it = args.iter();
    let (mut host, mut relay, mut button, mut power_fail) = (None, None, None, None);
    let (mut opts, mut board, mut scenarios, mut repeat, mut out) = (Options::default(), Board::packaged(), Vec::new(), 1u32, None);
    let num = |flag: &str, v: Option<&String>| -> Result<u64, String> {
        v.ok_or(format!("{flag} needs a value"))?.parse::<u64>().map_err(|_| format!("{flag}: expected a whole number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host" => host = Some(it.next().ok_or("--host needs USER@HOST")?.clone()),
            "--relay" => relay = Some(parse_relay(it.next().ok_or("--relay needs a spec")?)?),
            "--button" => button = Some(parse_line(Line::Button, it.next().ok_or("--button needs a spec")?)?),
            "--powerfail" => power_fail = Some(parse_line(Line::PowerFail, it.next().ok_or("--powerfail needs a spec")?)?),
            "--out" => out = Some(PathBuf::from(it.next().ok_or("--out needs a directory")?)),
            "--record-s" => opts.record = Duration::from_secs(num(a, it.next())?),
            "--off-s" => opts.off_for = Duration::from_secs(num(a, it.next())?),
            "--warn-lead-ms" => opts.warn_lead = Duration::from_millis(num(a, it.next())?),
            "--boot-timeout-s" => opts.timeouts.boot = Duration::from_secs(num(a, it.next())?),
            "--repeat" => repeat = u32::try_from(num(a, it.next())?).map_err(|_| "--repeat: too many")?.max(1),
            "--expect-encoder" => opts.expect_encoder = Some(it.next().ok_or("--expect-encoder needs a name")?.clone()),
            "--no-decode" => opts.decode = false,
            "--lectern" => board.lectern = it.next().ok_or("--lectern needs a command")?.clone(),
            "--as" => board.as_daemon = it.next().ok_or("--as needs a command prefix (\"\" for none)")?.clone(),
            "all" => scenarios.extend(Scenario::ALL),
            w if w.starts_with('-') => return Err(format!("unknown option {w}")),
            w => scenarios.push(Scenario::parse(w).ok_or_else(|| format!("unknown scenario {w:?}: expected button, powerfail, cut, reboot or all"))?),
        }
    }
    let host = host.ok_or("--host is required")?;
    if scenarios.is_empty() {
        return Err("name at least one scenario".into());
    }
    // Say now what a scenario will need, rather than after a recording started.
    for s in &scenarios {
        let missing = match s {
            Scenario::Button if button.is_none() => Some("--button"),
            Scenario::PowerFail if power_fail.is_none() => Some("--powerfail"),
            Scenario::PowerFail | Scenario::Cut if relay.is_none() => Some("--relay"),
            _ => None,
        };
        if let Some(flag) = missing {
            return Err(format!("scenario {} needs {flag}", s.name()));
        }
    }
    let out = out.unwrap_or_else(|| PathBuf::from(format!("lab-results/{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))));
    Ok(Invocation { host, rig: Rig { relay, button, power_fail }, board, opts, scenarios, repeat, out })
}

/// Runs every scenario `repeat` times against `t`, each into `out/NNN-SCENARIO`, stopping at the
/// first failure. Returns the reports in order.
pub fn run_all(t: &mut dyn Transport, inv: &Invocation) -> Vec<Report> {
    let mut reports = Vec::new();
    for round in 1..=inv.repeat {
        for &s in &inv.scenarios {
            let dir = inv.out.join(format!("{:03}-{}", reports.len() + 1, s.name()));
            let r = run(t, &inv.board, &inv.opts, s, &dir);
            let failed = r.result.is_err();
            eprintln!("lab: round {round}/{}: {} {} ({})", inv.repeat, s.name(), if failed { "FAILED" } else { "passed" }, dir.display());
            reports.push(r);
            if failed {
                return reports;
            }
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_command_line_parses_or_names_what_is_missing() {
        let check = |line: &str, want: Result<&str, &str>| match (parse_args(&args(line)), want) {
            (Ok(inv), Ok(scenarios)) => {
                let names: Vec<&str> = inv.scenarios.iter().map(|s| s.name()).collect();
                assert_eq!(names.join(" "), scenarios, "{line}");
            }
            (Err(e), Err(msg)) => assert!(e.contains(msg), "{line}: {e:?} lacks {msg:?}"),
            (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
        };
        check("--host pi@b --relay usbrelay:R_1 --button pinctrl:5 --powerfail pinctrl:6 all", Ok("button powerfail cut reboot"));
        check("--host pi@b reboot", Ok("reboot"));
        check("--host pi@b --relay usbrelay:R_1 cut --record-s 5", Ok("cut"));
        check("reboot", Err("--host is required"));
        check("--host pi@b", Err("at least one scenario"));
        check("--host pi@b cut", Err("scenario cut needs --relay"));
        check("--host pi@b --relay usbrelay:R_1 powerfail", Err("scenario powerfail needs --powerfail"));
        check("--host pi@b button", Err("scenario button needs --button"));
        check("--host pi@b --record-s ten reboot", Err("--record-s: expected a whole number"));
        check("--host pi@b --relay gpio:5 reboot", Err("--relay \"gpio:5\""));
        check("--host pi@b resume", Err("unknown scenario \"resume\""));
        check("--host pi@b --frobnicate reboot", Err("unknown option --frobnicate"));
    }

    fn seg(part: i64, seq: i64, sha: &str) -> SegRow {
        SegRow { part_seq: part, seq, abs_path: format!("/m/{seq}.ts"), bytes: 1, sha256: sha.into(), duration_ns: 2_000_000_000, state: "committed".into() }
    }

    #[test]
    fn the_manifest_check_catches_each_kind_of_mismatch() {
        let segs = [seg(1, 1, "a"), seg(1, 2, "b"), seg(2, 3, "c")];
        let good = json!({
            "recording": {"id": "r"},
            "stitched": {"sha256": "S"},
            "parts": [{"seq": 1, "segments": [{"seq": 1, "sha256": "a"}, {"seq": 2, "sha256": "b"}]},
                      {"seq": 2, "segments": [{"seq": 3, "sha256": "c"}]}],
            "gaps": [{"cause": "power"}],
        });
        check_manifest(&good, "r", "S", &segs, Some("power")).unwrap();
        let cases: [(&str, Value, &str); 5] = [
            ("/recording/id", json!("other"), "names recording"),
            ("/stitched/sha256", json!("T"), "hashes to"),
            ("/parts/1/segments/0/sha256", json!("x"), "differ from the journal"),
            ("/gaps/0/cause", json!("crash"), "expected [\"power\"]"),
            ("/parts/1/segments", json!([]), "differ from the journal"),
        ];
        for (pointer, value, msg) in cases {
            let mut m = good.clone();
            *m.pointer_mut(pointer).unwrap() = value;
            let e = check_manifest(&m, "r", "S", &segs, Some("power")).unwrap_err().to_string();
            assert!(e.contains(msg), "{pointer}: {e}");
        }
        assert!(check_manifest(&good, "r", "S", &segs, None).unwrap_err().to_string().contains("has gaps [\"power\"], expected []"));
    }
}
