//! Table-driven tests of the recorder: each case is a script of `(seconds, event)` steps with the
//! actions expected from each step, written compactly as strings.

use super::*;

/// 2026-11-26T09:00:00Z, the base of every script.
const T0: Millis = 1_795_683_600_000;

fn at(s: i64) -> Millis {
    T0 + s * 1000
}

fn slot(uid: &str, start_s: i64, end_s: i64) -> Slot {
    Slot { uid: uid.into(), title: format!("Lecture {uid}"), start_ms: at(start_s), end_ms: at(end_s) }
}

/// A compact rendering of an action, so expectations read like a log.
fn show(a: &Action) -> String {
    match a {
        Action::BeginRecording(s) => format!("begin {} until {}", s.id, (s.planned_end_ms - T0) / 1000),
        Action::StartCapture { recording_id } => format!("start {recording_id}"),
        Action::StopCapture { recording_id, end } => format!("stop {recording_id} {end:?}"),
        Action::PowerCut { recording_id } => format!("powercut {recording_id}"),
        Action::FinishRecording { recording_id, outcome } => format!("finish {recording_id} {outcome:?}"),
        Action::SetLed(l) => format!("led {l:?}"),
        Action::PowerOff => "poweroff".into(),
        Action::Rejected(why) => format!("rejected: {why}"),
        Action::Note(_) => String::new(),
    }
}

fn check(settings: Settings, steps: &[(i64, Event, &[&str])]) -> Recorder {
    let mut r = Recorder::new(settings);
    for (i, (s, event, want)) in steps.iter().enumerate() {
        let got: Vec<String> = r.handle(event.clone(), at(*s)).iter().map(show).filter(|s| !s.is_empty()).collect();
        assert_eq!(got, *want, "step {i}: {event:?} at {s}s (state now {:?})", r.state().name());
    }
    r
}

fn adhoc(s: i64) -> String {
    format!("adhoc-{}", chrono_stamp(at(s)))
}

#[test]
fn stamp_is_utc_civil_time() {
    assert_eq!(chrono_stamp(T0), "20261126T090000Z");
    assert_eq!(chrono_stamp(0), "19700101T000000Z");
    assert_eq!(chrono_stamp(951_782_400_000), "20000229T000000Z");
}

#[test]
fn button_starts_and_stops_an_adhoc_recording() {
    let id = adhoc(0);
    check(
        Settings::default(),
        &[
            (0, Event::ButtonPress, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (5, Event::Tick, &[]),
            (10, Event::ButtonPress, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Idle"]),
            (11, Event::Tick, &[]),
        ],
    );
}

#[test]
fn cli_start_while_recording_is_rejected_and_cli_stop_when_idle_too() {
    let id = adhoc(0);
    check(
        Settings::default(),
        &[
            (0, Event::CliStop, &["rejected: not recording"]),
            (0, Event::CliStart { title: Some("Guest talk".into()) }, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (1, Event::CliStart { title: None }, &[&format!("rejected: already recording {id}")]),
            (2, Event::CliStop, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Idle"]),
        ],
    );
}

#[test]
fn two_adhoc_recordings_in_the_same_second_get_distinct_ids() {
    let mut r = Recorder::new(Settings::default());
    r.handle(Event::ButtonPress, T0);
    r.handle(Event::ButtonPress, T0 + 100);
    let acts = r.handle(Event::ButtonPress, T0 + 200);
    let Action::BeginRecording(spec) = &acts[0] else { panic!("{acts:?}") };
    assert_ne!(spec.id, adhoc(0));
    assert!(spec.id.starts_with(&adhoc(0)));
}

#[test]
fn adhoc_recording_stops_at_its_maximum() {
    let id = adhoc(0);
    let settings = Settings { adhoc_max_ms: 60_000, ..Settings::default() };
    check(
        settings,
        &[
            (0, Event::ButtonLongPress, &[&format!("begin {id} until 60"), &format!("start {id}"), "led Recording"]),
            (59, Event::Tick, &[]),
            (60, Event::Tick, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Idle"]),
        ],
    );
}

#[test]
fn scheduled_event_records_and_ignores_a_short_press() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("lec-1", 10, 70)]), &[]),
            (9, Event::Tick, &[]),
            (10, Event::Tick, &["begin lec-1 until 70", "start lec-1", "led Recording"]),
            (30, Event::ButtonPress, &[]),
            (70, Event::Tick, &["stop lec-1 Closed", "finish lec-1 Completed", "led Idle"]),
            (71, Event::Tick, &[]),
        ],
    );
}

#[test]
fn event_in_progress_at_boot_records_the_remainder() {
    check(
        Settings::default(),
        &[(0, Event::ScheduleLoaded(vec![slot("lec-1", -600, 600)]), &["begin lec-1 until 600", "start lec-1", "led Recording"])],
    );
}

#[test]
fn untrusted_clock_holds_the_schedule_but_not_the_button() {
    let id = adhoc(30);
    check(
        Settings::default(),
        &[
            (0, Event::ClockTrust(false), &[]),
            // Due by the (untrusted) clock, but nothing starts.
            (0, Event::ScheduleLoaded(vec![slot("lec-1", -600, 600)]), &[]),
            (10, Event::Tick, &[]),
            // The button needs no wall time.
            (30, Event::ButtonPress, &[&format!("begin {id} until 14430"), &format!("start {id}"), "led Recording"]),
            (40, Event::ButtonPress, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Idle"]),
            // NTP synchronised: the lecture in progress is recorded for its remainder.
            (50, Event::ClockTrust(true), &["begin lec-1 until 600", "start lec-1", "led Recording"]),
            (600, Event::Tick, &["stop lec-1 Closed", "finish lec-1 Completed", "led Idle"]),
        ],
    );
}

#[test]
fn recording_ids_of_calendar_uids() {
    let cases = [
        ("c5e2b1c4-6f3a-4d1e-9d7a-0a1b2c3d4e5f", "c5e2b1c4-6f3a-4d1e-9d7a-0a1b2c3d4e5f"),
        ("lecture-1", "lecture-1"),
        ("1234@timetable.example.edu", "1234_timetable.example.edu-"),
        (".hidden", "hidden-"),
        ("a/b", "a_b-"),
    ];
    for (uid, prefix) in cases {
        let id = recording_id_for_uid(uid);
        assert!(id.starts_with(prefix), "{uid} -> {id}");
        assert!(id.len() <= 128 && !id.starts_with('.') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{uid} -> {id}");
        assert_eq!(recording_id_for_uid(uid), id, "deterministic");
    }
    assert_ne!(recording_id_for_uid("a@b"), recording_id_for_uid("a_b"), "the hash keeps sanitised UIDs apart");
    assert_eq!(recording_id_for_uid(&"x".repeat(300)).len(), 100 + 17);
}

#[test]
fn back_to_back_events_switch_in_one_step() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 0, 60), slot("b", 60, 120)]), &["begin a until 60", "start a", "led Recording"]),
            (
                60,
                Event::Tick,
                &["stop a Closed", "finish a Completed", "led Idle", "begin b until 120", "start b", "led Recording"],
            ),
        ],
    );
}

#[test]
fn overlapping_events_earliest_start_wins_then_the_other_continues() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("late", 30, 120), slot("early", 0, 60)]), &["begin early until 60", "start early", "led Recording"]),
            (30, Event::Tick, &[]),
            (
                60,
                Event::Tick,
                &["stop early Closed", "finish early Completed", "led Idle", "begin late until 120", "start late", "led Recording"],
            ),
        ],
    );
}

#[test]
fn same_start_overlap_is_broken_by_uid() {
    check(
        Settings::default(),
        &[(0, Event::ScheduleLoaded(vec![slot("zz", 0, 60), slot("aa", 0, 60)]), &["begin aa until 60", "start aa", "led Recording"])],
    );
}

#[test]
fn pre_and_post_roll_widen_the_recording() {
    let settings = Settings { preroll_ms: 5_000, postroll_ms: 10_000, ..Settings::default() };
    check(
        settings,
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 60, 120)]), &[]),
            (55, Event::Tick, &["begin a until 130", "start a", "led Recording"]),
            (129, Event::Tick, &[]),
            (130, Event::Tick, &["stop a Closed", "finish a Completed", "led Idle"]),
        ],
    );
}

#[test]
fn moved_end_is_followed_and_cancellation_stops_cleanly() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 0, 60)]), &["begin a until 60", "start a", "led Recording"]),
            (10, Event::ScheduleLoaded(vec![slot("a", 0, 90)]), &[]),
            (60, Event::Tick, &[]),
            (70, Event::ScheduleLoaded(vec![]), &["stop a Closed", "finish a Completed", "led Idle"]),
            (80, Event::Tick, &[]),
        ],
    );
}

#[test]
fn scheduled_event_preempts_adhoc_recording() {
    let id = adhoc(0);
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("lec", 30, 90)]), &[]),
            (0, Event::ButtonPress, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (
                30,
                Event::Tick,
                &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Idle", "begin lec until 90", "start lec", "led Recording"],
            ),
        ],
    );
}

#[test]
fn scheduled_recording_stopped_by_hand_is_not_restarted() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 0, 60)]), &["begin a until 60", "start a", "led Recording"]),
            (10, Event::ButtonLongPress, &["stop a Closed", "finish a Completed", "led Idle"]),
            (11, Event::Tick, &[]),
            (30, Event::ScheduleLoaded(vec![slot("a", 0, 60)]), &[]),
        ],
    );
}

#[test]
fn capture_failure_retries_with_backoff_and_never_ends_completed() {
    let settings = Settings { retry_initial_ms: 2_000, retry_max_ms: 5_000, ..Settings::default() };
    let id = adhoc(0);
    let fail = || Event::CaptureFailed { message: "no camera".into() };
    check(
        settings,
        &[
            (0, Event::ButtonPress, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (1, fail(), &[&format!("stop {id} Failed(\"no camera\")"), "led Error"]),
            (2, Event::Tick, &[]),
            (3, Event::Tick, &[&format!("start {id}"), "led Recording"]),
            (3, fail(), &[&format!("stop {id} Failed(\"no camera\")"), "led Error"]),
            (6, Event::Tick, &[]),
            (7, Event::Tick, &[&format!("start {id}"), "led Recording"]),
            (7, fail(), &[&format!("stop {id} Failed(\"no camera\")"), "led Error"]),
            // Capped at retry_max: 7 + 5.
            (12, Event::Tick, &[&format!("start {id}"), "led Recording"]),
            (20, Event::ButtonPress, &[&format!("stop {id} Closed"), &format!("finish {id} Interrupted(\"device error: no camera\")"), "led Idle"]),
        ],
    );
}

#[test]
fn stop_while_retrying_does_not_stop_a_pipeline_that_is_not_running() {
    let id = adhoc(0);
    check(
        Settings::default(),
        &[
            (0, Event::ButtonPress, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (1, Event::CaptureFailed { message: "x".into() }, &[&format!("stop {id} Failed(\"x\")"), "led Error"]),
            (2, Event::CliStop, &[&format!("finish {id} Interrupted(\"device error: x\")"), "led Idle"]),
        ],
    );
}

#[test]
fn shutdown_interrupts_the_recording_and_is_terminal() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 0, 60)]), &["begin a until 60", "start a", "led Recording"]),
            (5, Event::Shutdown, &["stop a Interrupted(\"shutdown\")", "finish a Interrupted(\"shutdown\")", "led Off"]),
            (6, Event::Tick, &[]),
            (7, Event::ButtonPress, &[]),
            (8, Event::CliStart { title: None }, &["rejected: the daemon is shutting down"]),
        ],
    );
}

#[test]
fn next_deadline_is_the_earliest_of_end_retry_and_next_start() {
    let mut r = Recorder::new(Settings::default());
    r.handle(Event::ScheduleLoaded(vec![slot("a", 100, 200), slot("b", 300, 400)]), at(0));
    assert_eq!(r.next_deadline(at(0)), Some(at(100)));
    r.handle(Event::Tick, at(100));
    assert_eq!(r.next_deadline(at(100)), Some(at(200)));
    r.handle(Event::CaptureFailed { message: "x".into() }, at(150));
    assert_eq!(r.next_deadline(at(150)), Some(at(152)));
}

#[test]
fn power_fail_flushes_and_resumes_as_a_new_part_when_power_stays() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 0, 600)]), &["begin a until 600", "start a", "led Recording"]),
            (10, Event::PowerFail, &["powercut a", "finish a Interrupted(\"power\")", "led Error"]),
            (11, Event::Tick, &[]),
            // A glitch: restored, but it fails again before the hold time.
            (12, Event::PowerRestored, &[]),
            (13, Event::PowerFail, &[]),
            (15, Event::Tick, &[]),
            (20, Event::PowerRestored, &[]),
            (21, Event::Tick, &[]),
            (22, Event::Tick, &["begin a until 600", "start a", "led Recording"]),
            (600, Event::Tick, &["stop a Closed", "finish a Completed", "led Idle"]),
        ],
    );
}

#[test]
fn power_fail_while_retrying_or_idle_and_nothing_starts_while_failing() {
    let id = adhoc(0);
    check(
        Settings::default(),
        &[
            (0, Event::ButtonPress, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (1, Event::CaptureFailed { message: "x".into() }, &[&format!("stop {id} Failed(\"x\")"), "led Error"]),
            (2, Event::PowerFail, &[&format!("finish {id} Interrupted(\"power\")"), "led Error"]),
            // Stopping by hand cancels the resume; the journal already has it interrupted.
            (3, Event::ButtonPress, &["led Error"]),
            (4, Event::ButtonPress, &["rejected: power is failing; not starting a recording"]),
            (5, Event::ScheduleLoaded(vec![slot("b", 0, 60)]), &[]),
            // With no recording to resume, nothing holds back once power is back: b is due now.
            (6, Event::PowerRestored, &["begin b until 60", "start b", "led Recording"]),
            (7, Event::Tick, &[]),
        ],
    );
}

#[test]
fn power_lost_past_the_scheduled_end_does_not_resume() {
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("a", 0, 30)]), &["begin a until 30", "start a", "led Recording"]),
            (10, Event::PowerFail, &["powercut a", "finish a Interrupted(\"power\")", "led Error"]),
            (30, Event::Tick, &["led Error"]),
            (31, Event::PowerRestored, &[]),
            (40, Event::Tick, &[]),
            (50, Event::Shutdown, &["led Off"]),
        ],
    );
}

#[test]
fn an_interrupted_adhoc_recording_resumes_at_start_up_unless_past_its_cap_or_busy() {
    let settings = Settings { adhoc_max_ms: 3_600_000, ..Settings::default() };
    let resume = |id: &str, started_s: i64| Event::ResumeAdhoc { id: id.into(), title: "t".into(), started_at_ms: at(started_s) };
    check(
        settings.clone(),
        &[
            (0, resume("adhoc-x", -600), &["begin adhoc-x until 3000", "start adhoc-x", "led Recording"]),
            (1, resume("adhoc-y", -600), &[]),
        ],
    );
    check(settings, &[(0, resume("adhoc-old", -3_600), &[])]);
}

#[test]
fn a_power_fail_line_that_stays_asserted_powers_off_once_if_configured() {
    let settings = Settings { poweroff_after_ms: Some(5_000), ..Settings::default() };
    check(
        settings.clone(),
        &[
            (0, Event::PowerFail, &[]),
            (4, Event::Tick, &[]),
            (5, Event::Tick, &["poweroff"]),
            (6, Event::Tick, &[]),
        ],
    );
    // Power back in time: no power-off.
    check(settings, &[(0, Event::PowerFail, &[]), (3, Event::PowerRestored, &[]), (10, Event::Tick, &[])]);
    // Not configured: never.
    check(Settings::default(), &[(0, Event::PowerFail, &[]), (100_000, Event::Tick, &[])]);
}

fn probed(problem: Option<&str>) -> Event {
    Event::DevicesProbed { problem: problem.map(str::to_owned) }
}

#[test]
fn an_unprovisioned_box_shows_not_provisioned_when_idle_and_still_records_on_the_button() {
    let id = adhoc(0);
    let r = check(
        Settings { provisioned: false, ..Settings::default() },
        &[
            (0, Event::ButtonPress, &[&format!("begin {id} until 14400"), &format!("start {id}"), "led Recording"]),
            (10, Event::ButtonPress, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led NotProvisioned"]),
        ],
    );
    assert_eq!(r.idle_led(), Led::NotProvisioned);
    assert_eq!(Recorder::new(Settings::default()).idle_led(), Led::Idle);
}

#[test]
fn a_device_problem_while_idle_shows_error_and_its_recovery_the_idle_pattern_again() {
    let cam = "camera /dev/video0 cannot be opened: no such device node";
    for (provisioned, idle) in [(true, "led Idle"), (false, "led NotProvisioned")] {
        let r = check(
            Settings { provisioned, ..Settings::default() },
            &[
                (0, probed(None), &[]),
                (60, probed(Some(cam)), &["led Error"]),
                // Another failing probe changes nothing: no repeated LED action.
                (120, probed(Some("camera /dev/video0 cannot be opened: busy")), &[]),
                (180, probed(None), &[idle]),
            ],
        );
        assert_eq!(r.state(), &State::Idle);
    }
}

#[test]
fn a_stuck_upload_backlog_shows_while_idle_below_a_device_problem() {
    let id = adhoc(4);
    let cam = "camera /dev/video0 cannot be opened: no such device node";
    check(
        Settings::default(),
        &[
            (0, Event::UploadBacklog(true), &["led Backlog"]),
            (1, Event::UploadBacklog(true), &[]),
            // A device problem says more; when it goes, the backlog shows again.
            (2, probed(Some(cam)), &["led Error"]),
            (3, probed(None), &["led Backlog"]),
            // A recording's pattern wins; the backlog returns when it ends.
            (4, Event::ButtonPress, &[&format!("begin {id} until 14404"), &format!("start {id}"), "led Recording"]),
            (5, Event::UploadBacklog(false), &[]),
            (6, Event::UploadBacklog(true), &[]),
            (10, Event::ButtonPress, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Backlog"]),
            (11, Event::UploadBacklog(false), &["led Idle"]),
        ],
    );
}

#[test]
fn a_device_problem_never_overrides_a_recording_and_shows_again_when_it_ends() {
    let id = adhoc(1);
    let cam = "camera /dev/video0 cannot be opened: no such device node";
    check(
        Settings::default(),
        &[
            (0, probed(Some(cam)), &["led Error"]),
            // The button still starts a recording; the recording pattern wins while it runs.
            (1, Event::ButtonPress, &[&format!("begin {id} until 14401"), &format!("start {id}"), "led Recording"]),
            (2, probed(None), &[]),
            (3, probed(Some(cam)), &[]),
            (10, Event::ButtonPress, &[&format!("stop {id} Closed"), &format!("finish {id} Completed"), "led Error"]),
            (70, probed(None), &["led Idle"]),
        ],
    );
}

#[test]
fn a_scheduled_start_with_a_device_missing_still_tries_and_retries() {
    let cam = "camera /dev/video0 cannot be opened: no such device node";
    check(
        Settings::default(),
        &[
            (0, Event::ScheduleLoaded(vec![slot("lec-1", 10, 70)]), &[]),
            (5, probed(Some(cam)), &["led Error"]),
            (10, Event::Tick, &["begin lec-1 until 70", "start lec-1", "led Recording"]),
            (10, Event::CaptureFailed { message: "vsrc: Cannot identify device '/dev/video0'.".into() }, &["stop lec-1 Failed(\"vsrc: Cannot identify device '/dev/video0'.\")", "led Error"]),
            (12, Event::Tick, &["start lec-1", "led Recording"]),
            (70, Event::Tick, &["stop lec-1 Closed", "finish lec-1 Interrupted(\"device error: vsrc: Cannot identify device '/dev/video0'.\")", "led Error"]),
        ],
    );
}

#[test]
fn after_a_power_loss_ends_an_unprovisioned_box_goes_back_to_not_provisioned() {
    check(
        Settings { provisioned: false, ..Settings::default() },
        &[
            (0, Event::CliStart { title: None }, &[&format!("begin {} until 14400", adhoc(0)), &format!("start {}", adhoc(0)), "led Recording"]),
            (1, Event::PowerFail, &[&format!("powercut {}", adhoc(0)), &format!("finish {} Interrupted(\"power\")", adhoc(0)), "led Error"]),
            (2, Event::PowerRestored, &[]),
            (3, Event::CliStop, &["led NotProvisioned"]),
        ],
    );
}
