//! The lab runner (`lectern_hil_tests::lab`, docs/hil.md) tested with its fake transport: the
//! real `lecternd` on the sim board in a temp directory stands for the board, the relay SIGKILLs
//! it and starts it again with a new boot id, and every action is logged in order. The happy
//! paths run each scenario end to end; the rest make the rig misbehave (a board that never comes
//! back, a relay that cuts nothing, a reboot that never happens, a card that loses a flushed
//! segment at the cut) and require the runner to say exactly that. The SSH transport and the `lab`
//! binary run against a stand-in `ssh` that executes the command locally.

use std::path::Path;
use std::time::{Duration, Instant};

use lectern_hil_tests::lab::fake::{Event, FakeBoard};
use lectern_hil_tests::lab::{self, parse_line, parse_relay, LabError, Line, Options, Rig, Scenario, Ssh, Timeouts, Transport};

/// Short waits: a fake board boots in milliseconds, and a failing test should fail fast.
fn opts() -> Options {
    let s = Duration::from_secs;
    Options {
        record: Duration::from_millis(3_000),
        off_for: Duration::from_millis(500),
        timeouts: Timeouts {
            command: s(30),
            probe: s(5),
            down: s(2),
            boot: s(20),
            daemon: s(20),
            state: s(20),
            stitch: s(60),
            fetch: s(30),
            poll: Duration::from_millis(100),
        },
        ..Options::default()
    }
}

struct Lab {
    root: tempfile::TempDir,
    out: tempfile::TempDir,
    fake: FakeBoard,
    board: lab::Board,
}

fn lab() -> Lab {
    let root = tempfile::tempdir().unwrap();
    let (fake, board) = FakeBoard::with_daemon(root.path(), "[power]\nhold_ms = 500\n").unwrap();
    Lab { root, out: tempfile::tempdir().unwrap(), fake, board }
}

impl Lab {
    fn run(&mut self, s: Scenario, opts: &Options) -> lab::Report {
        lab::run(&mut self.fake, &self.board, opts, s, &self.out.path().join(s.name()))
    }

    fn events(&self) -> Vec<Event> {
        self.fake.events().lock().unwrap().clone()
    }
}

/// Runs `s` on a fresh fake board (after `tweak`) and requires it to pass and to have left its
/// results behind; a failure shows the steps and the daemon's log tail.
fn passing(s: Scenario, tweak: impl FnOnce(&mut FakeBoard)) -> (Lab, lab::Report) {
    let mut l = lab();
    tweak(&mut l.fake);
    let r = l.run(s, &opts());
    if let Err(e) = &r.result {
        let log = std::fs::read_to_string(l.root.path().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!("{} failed: {e}\nsteps: {:#?}\ndaemon log tail:\n{}", s.name(), r.steps, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    assert_collected(&r, true);
    (l, r)
}

/// Position of the first event equal to `e`, or a panic naming it and the whole log.
fn at(events: &[Event], e: &Event) -> usize {
    events.iter().position(|x| x == e).unwrap_or_else(|| panic!("{e:?} never happened: {events:#?}"))
}

/// What every run leaves behind: the report (ok as expected), the steps, the daemon's log, and
/// for a passing run the manifest and the MP4 the runner checked.
fn assert_collected(r: &lab::Report, ok: bool) {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["ok"], ok, "{report:#}");
    assert_eq!(report["scenario"], r.scenario.name());
    assert!(std::fs::read_to_string(r.dir.join("steps.log")).unwrap().contains(r.scenario.name()));
    if ok {
        let id = r.facts["recording"].as_str().unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.dir.join(format!("{id}.manifest.json"))).unwrap()).unwrap();
        let sha = lectern_hil_tests::sha256_file(&r.dir.join(format!("{id}.mp4"))).unwrap();
        assert_eq!(manifest["stitched"]["sha256"], sha.as_str());
        assert!(std::fs::read_to_string(r.dir.join("daemon.log")).unwrap().contains(id), "the daemon's log was not collected");
        assert!(std::fs::read_to_string(r.dir.join("recordings.json")).unwrap().contains(id));
    }
}

#[test]
fn button_scenario_presses_through_the_line_and_checks_the_stitched_recording() {
    let (l, _) = passing(Scenario::Button, |_| {});
    let presses = l.events().iter().filter(|e| **e == Event::Line(Line::Button, true)).count();
    assert_eq!(presses, 2, "{:#?}", l.events());
    assert!(!l.events().iter().any(|e| matches!(e, Event::Power(_) | Event::Reboot)), "the button scenario touched the power");
}

#[test]
fn powerfail_scenario_warns_cuts_releases_and_restores_in_that_order_and_loses_nothing() {
    // A board that takes a while to answer after power-on: the runner must wait, not fail.
    let (l, r) = passing(Scenario::PowerFail, |f| f.boot_delay = Duration::from_millis(1_500));
    let ev = l.events();
    let edge = at(&ev, &Event::Line(Line::PowerFail, true));
    let off = at(&ev, &Event::Power(false));
    let released = ev.iter().rposition(|e| *e == Event::Line(Line::PowerFail, false)).unwrap();
    let on = ev.iter().rposition(|e| *e == Event::Power(true)).unwrap();
    assert!(edge < off && off < released && released < on, "warn → cut → release → power: {ev:#?}");
    // The runner saw the daemon's `power_lost` before it cut: a status request sits in between.
    assert!(ev[edge..off].iter().any(|e| matches!(e, Event::Run(c) if c.ends_with("--json status"))), "{ev:#?}");
    assert!(r.facts["boot_s"].as_f64().unwrap() >= 1.4, "the runner did not wait for the slow boot: {:?}", r.facts);
    assert!(r.facts["lost_ms"].as_f64().unwrap() <= 150.0, "{:?}", r.facts);
    assert!(r.facts["edge_to_power_lost_ms"].as_f64().is_some(), "{:?}", r.facts);
    assert_eq!(r.facts["card"], "fake card", "{:?}", r.facts);
}

#[test]
fn cut_scenario_cuts_with_no_warning_and_finds_a_crash_gap() {
    let (l, _) = passing(Scenario::Cut, |_| {});
    let ev = l.events();
    assert!(!ev.contains(&Event::Line(Line::PowerFail, true)), "an unwarned cut asserted power-fail: {ev:#?}");
    assert!(at(&ev, &Event::Power(false)) < ev.iter().rposition(|e| *e == Event::Power(true)).unwrap());
}

#[test]
fn reboot_scenario_resumes_after_a_clean_reboot_with_a_shutdown_gap() {
    let (l, _) = passing(Scenario::Reboot, |_| {});
    assert_eq!(l.events().iter().filter(|e| **e == Event::Reboot).count(), 1);
}

#[test]
fn a_board_that_never_comes_back_fails_the_run_naming_the_host_and_the_wait() {
    let mut l = lab();
    l.fake.comes_back = false;
    let o = Options { timeouts: Timeouts { boot: Duration::from_secs(3), ..opts().timeouts }, ..opts() };
    let start = Instant::now();
    let r = l.run(Scenario::Cut, &o);
    match &r.result {
        Err(e @ LabError::DidNotComeBack { host, after, .. }) => {
            assert!(host.contains(&l.root.path().display().to_string()), "{e}");
            assert!(*after >= Duration::from_secs(3), "{e}");
            assert!(e.to_string().contains("did not come back with a new boot id within 3"), "{e}");
        }
        other => panic!("expected DidNotComeBack, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(60), "the runner waited {:?}", start.elapsed());
    assert_collected(&r, false);
    assert!(r.steps.iter().any(|(_, s)| s.starts_with("daemon log not collected")), "{:#?}", r.steps);
    assert!(!r.dir.join("daemon.log").exists(), "an empty daemon.log was left behind");
}

#[test]
fn a_relay_that_cuts_nothing_is_caught_and_the_recording_it_left_is_stopped() {
    let mut l = lab();
    l.fake.relay_cuts = false;
    let r = l.run(Scenario::Cut, &opts());
    let e = r.result.as_ref().unwrap_err();
    assert!(matches!(e, LabError::StillPowered { .. }), "{e:?}");
    assert!(e.to_string().contains("is the relay in the board's supply line"), "{e}");
    assert_collected(&r, false);
    let steps: Vec<&str> = r.steps.iter().map(|(_, s)| s.as_str()).collect();
    assert!(steps.iter().any(|s| s.starts_with("cleanup: relay on: ok")), "{steps:#?}");
    assert!(steps.iter().any(|s| s.starts_with("cleanup: stopped the recording left running")), "{steps:#?}");
}

#[test]
fn a_reboot_that_never_happens_is_caught_and_the_remaining_scenarios_do_not_run() {
    let mut l = lab();
    l.fake.reboots = false;
    let args: Vec<String> = ["--host", "fake", "--button", "sim", "--record-s", "2", "--out"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([l.out.path().display().to_string(), "reboot".into(), "button".into()])
        .collect();
    let mut inv = lab::parse_args(&args).unwrap();
    inv.board = l.board.clone();
    inv.opts.timeouts = Timeouts { boot: Duration::from_secs(3), ..opts().timeouts };
    let reports = lab::run_all(&mut l.fake, &inv);
    assert_eq!(reports.len(), 1, "the run went on after a failure");
    assert!(matches!(reports[0].result, Err(LabError::NotRebooted { .. })), "{:?}", reports[0].result);
    assert!(reports[0].dir.ends_with("001-reboot"), "{}", reports[0].dir.display());
    assert_collected(&reports[0], false);
}

/// Self-test: a card whose controller loses a segment it had acknowledged as flushed (what an SD
/// card's FTL may do at a real cut, and cutfs never does) must fail the run, naming the segment.
#[test]
fn self_test_a_card_that_loses_a_flushed_segment_at_the_cut_is_caught() {
    let mut l = lab();
    let damaged = std::sync::Arc::new(std::sync::Mutex::new(None));
    let d = damaged.clone();
    l.fake.on_cut = Some(Box::new(move |root: &Path| {
        let mut segs: Vec<_> = walk(&root.join("media")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "ts")).collect();
        segs.sort();
        let first = segs.first().expect("no segment on the card at the cut").clone();
        let len = std::fs::metadata(&first).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&first).unwrap().set_len(len / 2).unwrap();
        *d.lock().unwrap() = Some(first);
    }));
    let r = l.run(Scenario::Cut, &opts());
    let path = damaged.lock().unwrap().clone().expect("the cut hook did not run");
    match &r.result {
        Err(e @ LabError::Check(m)) => assert!(m.contains("segment 1 (") && m.contains(&path.display().to_string()), "{e}"),
        other => panic!("the runner did not catch a truncated committed segment: {other:?}"),
    }
}

/// The cut scenario with the fake board's card on cutfs: the relay's cut also drops everything
/// not fsynced, as a real cut does (but with no FTL), and the runner's checks and its loss
/// allowance still hold.
#[test]
fn cut_scenario_passes_on_a_card_that_drops_everything_unsynced_at_the_cut() {
    if !lectern_hil_tests::powercut::can_mount() {
        return;
    }
    // Declared first, dropped last: the mount goes (with the fake board) before its directory.
    let card = tempfile::tempdir().unwrap();
    let media = card.path().join("card");
    std::fs::create_dir(&media).unwrap();
    let mut fs = lectern_cutfs::CutFs::mount(&media).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (mut fake, board) = FakeBoard::with_daemon_on(root.path(), &media, "[power]\nhold_ms = 500\n").unwrap();
    let cuts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = cuts.clone();
    fake.on_cut = Some(Box::new(move |_: &Path| c.lock().unwrap().push(fs.cut().map(|s| s.last_cut_dropped_bytes).map_err(|e| e.to_string()))));
    let r = lab::run(&mut fake, &board, &opts(), Scenario::Cut, out.path());
    let cuts = cuts.lock().unwrap().clone();
    assert!(matches!(cuts.as_slice(), [Ok(_)]), "cutfs did not cut exactly once: {cuts:?}");
    eprintln!("cutfs dropped {:?} bytes at the cut; lost {:?} ms", cuts[0], r.facts.get("lost_ms"));
    if let Err(e) = &r.result {
        panic!("the cut scenario failed on cutfs: {e}\nsteps: {:#?}", r.steps);
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_command_that_hangs_is_killed_with_everything_it_started() {
    let root = tempfile::tempdir().unwrap();
    let mut fake = FakeBoard::boot(root.path(), None, "lectern").unwrap();
    let start = Instant::now();
    let e = fake.run("sleep 30 & echo $! > sleeper; wait", Duration::from_millis(500)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(matches!(e, LabError::Timeout { .. }) && e.to_string().contains("sleep 30"), "{e}");
    let pid = std::fs::read_to_string(root.path().join("sleeper")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Gone, or a zombie waiting for a reaper (PID 1 of a container may never reap it).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit_once(") ").map_or("", |(_, rest)| &rest[..1]);
    assert!(stat.is_empty() || state == "Z", "the command's child {} outlived the timeout: {stat}", pid.trim());
}

/// A stand-in for `ssh` on the controller: skips `-o` options, takes the host, runs the command
/// with the local shell; the host `down.invalid` fails the way ssh does (exit 255).
const FAKE_SSH: &str = r#"#!/bin/sh
while [ "$1" = "-o" ]; do shift 2; done
host=$1; shift
if [ "$host" = "down.invalid" ]; then echo "ssh: connect to host down.invalid port 22: No route to host" >&2; exit 255; fi
echo "$host" >> "$(dirname "$0")/hosts"
exec sh -c "$1"
"#;

fn script(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn ssh_transport_runs_fetches_and_drives_the_rig_through_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ssh = script(d, "ssh", FAKE_SSH);
    let relay = script(d, "relay", &format!("#!/bin/sh\necho \"relay $1\" >> {}/rig\n", d.display()));
    let button = script(d, "button", &format!("#!/bin/sh\necho \"button $1\" >> {}/rig\n", d.display()));
    let rig = Rig { relay: Some(parse_relay(&format!("exec:{relay}")).unwrap()), button: Some(parse_line(Line::Button, &format!("exec:{button}")).unwrap()), power_fail: None };
    let mut t = Ssh::new("pi@lab", rig, "echo lectern").unwrap();
    t.program = ssh;
    let long = Duration::from_secs(10);

    // A command goes as one word and keeps its quoting; its exit status comes back.
    let out = t.run(r#"printf '%s|' "a b" 'c'\''d'; exit 3"#, long).unwrap();
    assert_eq!((out.code, out.stdout.as_str()), (Some(3), "a b|c'd|"));
    assert_eq!(std::fs::read_to_string(d.join("hosts")).unwrap(), "pi@lab\n");

    // fetch streams a file with awkward name and binary content into a local file.
    let remote = d.join("it's a segment.ts");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&remote, &bytes).unwrap();
    let local = d.join("copy");
    t.fetch(&format!("cat -- {}", lab::sh_quote(&remote.display().to_string())), &local, long).unwrap();
    assert_eq!(std::fs::read(&local).unwrap(), bytes);
    let e = t.fetch("cat -- /nonexistent/file", &local, long).unwrap_err();
    assert!(matches!(e, LabError::Failed { code: Some(1), .. }) && e.to_string().contains("/nonexistent/file"), "{e}");
    assert!(!local.exists(), "a failed fetch left a partial copy behind");

    // The rig runs on the controller, in order; a missing line says which flag it needs.
    t.power(false).unwrap();
    t.line(Line::Button, true).unwrap();
    t.power(true).unwrap();
    assert_eq!(std::fs::read_to_string(d.join("rig")).unwrap(), "relay off\nbutton on\nrelay on\n");
    let e = t.line(Line::PowerFail, true).unwrap_err();
    assert!(e.to_string().contains("--powerfail"), "{e}");

    // A reboot whose session dies with the board is fine; a refused one is not.
    t.reboot_cmd = "exit 255".into();
    t.reboot().unwrap();
    t.reboot_cmd = "echo 'sudo: a password is required' >&2; exit 1".into();
    assert!(t.reboot().unwrap_err().to_string().contains("a password is required"));

    // ssh's own failure is an unreachable board, with ssh's reason.
    let mut down = Ssh::new("down.invalid", Rig::default(), "lectern").unwrap();
    down.program = t.program.clone();
    let e = down.run("true", long).unwrap_err();
    assert!(matches!(&e, LabError::Unreachable { detail, .. } if detail.contains("No route to host")), "{e:?}");
    assert!(Ssh::new("-oProxyCommand=evil", Rig::default(), "lectern").is_err());
}

#[test]
fn ssh_transport_drives_sim_lines_on_the_board_only_while_it_is_powered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let relay = script(d, "relay", "#!/bin/sh\nexit 0\n");
    let rig = Rig { relay: Some(parse_relay(&format!("exec:{relay}")).unwrap()), button: None, power_fail: Some(parse_line(Line::PowerFail, "sim").unwrap()) };
    let mut t = Ssh::new("pi@lab", rig, &format!("echo >> {}/sim", d.display())).unwrap();
    t.program = script(d, "ssh", FAKE_SSH);
    t.line(Line::PowerFail, true).unwrap();
    t.power(false).unwrap();
    t.line(Line::PowerFail, false).unwrap();
    t.power(true).unwrap();
    t.line(Line::PowerFail, false).unwrap();
    assert_eq!(std::fs::read_to_string(d.join("sim")).unwrap(), "sim powerfail on\nsim powerfail off\n");
}

/// The binary owns the exit status: 2 for a bad command line, 1 when a scenario fails (here: a
/// board that ssh cannot reach, through the stand-in `ssh` first on PATH), with the report written.
#[test]
fn the_lab_binary_exits_2_on_bad_usage_and_1_with_a_report_when_the_board_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "ssh", FAKE_SSH);
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let lab = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_lab")).args(args).env("PATH", &path).output().unwrap();

    let out = lab(&["--host", "pi@lab", "cut"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scenario cut needs --relay"), "{out:?}");

    let results = dir.path().join("results");
    let out = lab(&["--host", "down.invalid", "--out", &results.display().to_string(), "reboot"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reboot") && stdout.contains("FAILED: down.invalid is unreachable") && stdout.contains("No route to host"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("001-reboot/report.json")).unwrap()).unwrap();
    assert_eq!(report["ok"], false, "{report:#}");
}
