//! End-to-end through the public API on the sim backend: the control socket drives the sim
//! pins, the real monitor threads and debouncer turn that into events, and the LED driver's
//! pattern is visible through the socket. Hold times are shortened so the whole file runs in
//! about a second.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use lectern_board::{
    open, sim_request, spawn_button_monitor, spawn_power_fail_monitor, Backend, BoardConfig,
    BoardError, ButtonEvent, LedPattern,
};

const DEBOUNCE: Duration = Duration::from_millis(30);
const LONG_PRESS: Duration = Duration::from_millis(300);
/// Generous: only a failing test waits this long, and a loaded CI machine can be slow to schedule the monitor.
const WAIT: Duration = Duration::from_secs(10);

/// Field order is drop order: the board (and its socket server) goes before the directory
/// holding the socket.
struct Rig {
    io: lectern_board::BoardIo,
    socket: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Let the monitor threads of this test wind down instead of outliving it.
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn rig() -> (
    Rig,
    Box<dyn lectern_board::EdgeInput>,
    Box<dyn lectern_board::EdgeInput>,
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sim.sock");
    let cfg = BoardConfig {
        backend: Backend::Sim,
        pinmap: "rpi4".into(),
        sim_socket: Some(socket.clone()),
    };
    let io = open(&cfg).unwrap();
    io.sim.as_ref().unwrap().set_hold_times(
        Duration::from_millis(80),
        LONG_PRESS + Duration::from_millis(100),
    );
    let button = io.take_button().unwrap();
    let power_fail = io.take_power_fail().unwrap();
    (
        Rig {
            io,
            socket,
            stop: Arc::new(AtomicBool::new(false)),
            _dir: dir,
        },
        button,
        power_fail,
    )
}

/// An input that says when its monitor has read the initial level. A monitor that starts late
/// (a loaded CI machine) and reads the level in the middle of a press takes the button as held
/// since before it started and rightly ignores that press: the tests press only once the
/// monitor is watching.
struct Watched {
    inner: Box<dyn lectern_board::EdgeInput>,
    ready: Option<mpsc::Sender<()>>,
}

impl lectern_board::EdgeInput for Watched {
    fn is_active(&mut self) -> lectern_board::Result<bool> {
        let level = self.inner.is_active();
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        level
    }

    fn wait_edge(&mut self, timeout: Duration) -> lectern_board::Result<Option<bool>> {
        self.inner.wait_edge(timeout)
    }
}

/// `input`, and a receiver that hears once its monitor has read the initial level.
fn watched(input: Box<dyn lectern_board::EdgeInput>) -> (Box<dyn lectern_board::EdgeInput>, Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    (Box::new(Watched { inner: input, ready: Some(tx) }), rx)
}

fn button_events(rig: &Rig, input: Box<dyn lectern_board::EdgeInput>) -> Receiver<ButtonEvent> {
    let (tx, rx) = mpsc::channel();
    let (input, ready) = watched(input);
    spawn_button_monitor(input, DEBOUNCE, LONG_PRESS, rig.stop.clone(), move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    ready.recv_timeout(WAIT).expect("the button monitor reads the initial level");
    rx
}

fn req(path: &Path, line: &str) -> String {
    sim_request(path, line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn press_over_the_socket_reaches_the_button_monitor() {
    let (rig, button, _) = rig();
    let rx = button_events(&rig, button);
    assert_eq!(req(&rig.socket, "button press"), "press");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), ButtonEvent::Press);
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "exactly one event"
    );
}

#[test]
fn long_press_over_the_socket_is_one_long_press() {
    let (rig, button, _) = rig();
    let rx = button_events(&rig, button);
    assert_eq!(req(&rig.socket, "button long"), "long");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), ButtonEvent::LongPress);
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "release after a long press is silent"
    );
}

#[test]
fn down_up_over_the_socket_is_a_press_and_long_fires_while_held() {
    let (rig, button, _) = rig();
    let rx = button_events(&rig, button);
    assert_eq!(req(&rig.socket, "button down"), "down");
    // The long press arrives while the button is still down: the monitor slept to the deadline.
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), ButtonEvent::LongPress);
    assert!(req(&rig.socket, "state").contains(r#""button":"down""#));
    assert_eq!(req(&rig.socket, "button up"), "up");
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn powerfail_over_the_socket_reaches_the_monitor() {
    let (rig, _, power_fail) = rig();
    let (tx, rx) = mpsc::channel();
    spawn_power_fail_monitor(power_fail, rig.stop.clone(), move |on| {
        let _ = tx.send(on);
    })
    .unwrap();
    assert_eq!(req(&rig.socket, "powerfail on"), "powerfail on");
    assert!(rx.recv_timeout(WAIT).unwrap());
    assert_eq!(req(&rig.socket, "powerfail off"), "powerfail off");
    assert!(!rx.recv_timeout(WAIT).unwrap());
    // Repeating the same state is not a change.
    req(&rig.socket, "powerfail off");
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn led_and_state_report_the_drivers_pattern() {
    let (rig, _, _) = rig();
    assert_eq!(req(&rig.socket, "led"), "off off");
    rig.io.led.set_pattern(LedPattern::Recording);
    // The driver thread writes the pin asynchronously; wait for it rather than sleeping blindly.
    let t0 = std::time::Instant::now();
    while !rig.io.sim.as_ref().unwrap().led_on() && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(req(&rig.socket, "led"), "recording on");
    assert_eq!(
        req(&rig.socket, "state"),
        r#"{"led":"recording","led_on":true,"button":"up","powerfail":false}"#
    );
    rig.io.led.set_pattern(LedPattern::NotProvisioned);
    assert!(req(&rig.socket, "led").starts_with("not_provisioned "));
}

#[test]
fn bad_request_is_a_clear_error() {
    let (rig, _, _) = rig();
    match sim_request(&rig.socket, "button smash") {
        Err(BoardError::SimRejected { request, reason }) => {
            assert_eq!(request, "button smash");
            assert!(reason.contains("\"smash\""), "{reason}");
        }
        other => panic!("expected SimRejected, got {other:?}"),
    }
}

#[test]
fn monitors_exit_when_stop_is_set() {
    let (rig, button, power_fail) = rig();
    let b = spawn_button_monitor(button, DEBOUNCE, LONG_PRESS, rig.stop.clone(), |_| {}).unwrap();
    let p = spawn_power_fail_monitor(power_fail, rig.stop.clone(), |_| {}).unwrap();
    rig.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    b.join().unwrap();
    p.join().unwrap();
    assert!(t0.elapsed() < lectern_board::STOP_CHECK * 3);
}

#[test]
fn socket_goes_away_with_the_board() {
    let (mut rig, _, _) = rig();
    let path = rig.socket.clone();
    assert!(path.exists());
    drop(rig.io.sim_server.take());
    assert!(!path.exists());
    assert!(matches!(
        sim_request(&path, "state"),
        Err(BoardError::SimSocket { op: "connect", .. })
    ));
}
