//! The local status page in a real browser: the real daemon on the sim board serves it on
//! loopback, and headless Chromium (Debian's `chromium` + `chromium-driver`, over WebDriver:
//! `lectern_hil_tests::browser`) loads it. The test watches what an AV technician would: the
//! state, the picture appearing and changing about once a second, the audio meter moving, an
//! alarm appearing without a reload, and the finished recording listed with its verdict; and
//! that the page broke no rule of its Content-Security-Policy and threw no script error.
//!
//! The alarm is `clipping`: the sim board's test tone peaks near −2 dBFS, so with
//! `signals.clip_db = -6` it clips from the first reading (held 500 ms).

use std::time::Duration;

use lectern_control::Request;
use lectern_hil_tests::browser::Browser;
use lectern_hil_tests::{wait_until, Daemon, SMALL};
use serde_json::Value;

fn page_url(d: &Daemon) -> String {
    let s = d.status();
    s["status_page"]["url"].as_str().unwrap_or_else(|| panic!("no status_page.url in status: {}", s["status_page"])).to_owned()
}

const LOOK: &str = r#"
    const img = document.getElementById('picture');
    return {
        state: document.getElementById('state').textContent,
        summary: document.getElementById('summary').textContent,
        shown: !img.hidden,
        width: img.naturalWidth,
        pictures: Number(img.dataset.pictures || 0),
        // The whole data: URL, hashed (FNV-1a): equal pictures, equal hashes.
        src: img.hidden ? '' : [...img.src].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261),
        peak: document.getElementById('meter-peak').value,
        meter: document.getElementById('meter-text').textContent,
        alarms: [...document.querySelectorAll('#alarms li.alarm')].map(li => li.dataset.alarm),
        alarm_text: document.getElementById('alarms').textContent,
        storage: document.getElementById('storage').textContent,
        rows: [...document.querySelectorAll('#recordings tr')].map(tr => [tr.dataset.id, tr.querySelector('[data-verdict]').dataset.verdict]),
        loaded_once: window.__lectern_test === 1,
    };"#;

#[test]
fn the_status_page_shows_the_picture_updating_the_meter_and_an_alarm_in_a_real_browser() {
    let Some(browser) = Browser::start().unwrap() else { return };
    let mut d = Daemon::start(&format!("{SMALL}[status_page]\nlisten = \"127.0.0.1:0\"\n[signals]\nclip_db = -6.0\n")).unwrap();
    let url = page_url(&d);
    let human = d.cli(&["status"]).unwrap();
    assert!(human.contains(&format!("page:      {url} (loopback")), "{human}");
    browser.goto(&url).unwrap();
    // Marks this document: a reload would lose it.
    browser.eval("window.__lectern_test = 1; return true;").unwrap();
    let idle = browser.wait_for("the idle state", Duration::from_secs(10), LOOK, |v| v["state"] == "idle").unwrap();
    assert_eq!(idle["alarms"], serde_json::json!([]), "{idle}");
    assert!(idle["alarm_text"].as_str().unwrap().contains("No alarms"), "{idle}");
    assert!(idle["storage"].as_str().unwrap().starts_with("Free on the card: "), "{idle}");
    assert_eq!(idle["shown"], false, "no picture while idle: {idle}");

    let id = d.ctl(Request::RecordStart { title: Some("Status page <b>test</b>".into()) }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    let first = browser
        .wait_for("the first picture", Duration::from_secs(20), LOOK, |v| v["state"] == "recording" && v["shown"] == true && v["width"] == 320)
        .unwrap();
    eprintln!("first picture: {first}");
    assert!(first["summary"].as_str().unwrap().contains("Status page <b>test</b>"), "the title as text, not HTML: {first}");
    // The picture updates: newer JPEGs of the moving ball, about one a second.
    let later = browser
        .wait_for("a newer picture", Duration::from_secs(10), LOOK, |v| {
            v["pictures"].as_u64() >= first["pictures"].as_u64().map(|n| n + 2) && v["src"] != first["src"] && v["width"] == 320
        })
        .unwrap();
    assert!(later["peak"].as_f64().unwrap() > -30.0, "the meter shows the tone: {later}");
    assert!(later["meter"].as_str().unwrap().starts_with("peak -"), "{later}");
    // The alarm appears on the open page.
    let alarmed = browser.wait_for("the clipping alarm", Duration::from_secs(15), LOOK, |v| v["alarms"] == serde_json::json!(["clipping"])).unwrap();
    assert!(alarmed["alarm_text"].as_str().unwrap().contains("Audio clipping for"), "{alarmed}");
    assert_eq!(alarmed["loaded_once"], true, "the page updated itself, without a reload: {alarmed}");

    d.ctl(Request::RecordStop).unwrap();
    let done = browser
        .wait_for("the recording in the table, flagged", Duration::from_secs(20), LOOK, |v| {
            v["state"] == "idle" && v["rows"].as_array().is_some_and(|rows| rows.iter().any(|r| r[0] == id.as_str() && r[1] == "flagged"))
        })
        .unwrap();
    let row = done["rows"].as_array().unwrap().iter().find(|r| r[0] == id.as_str()).unwrap().clone();
    assert_eq!(row[1], "flagged", "{done}");
    assert_eq!((done["shown"].clone(), done["alarms"].clone()), (Value::Bool(false), serde_json::json!([])), "idle again: {done}");
    assert_eq!(done["loaded_once"], true);

    let console = browser.console().unwrap();
    // The one error the page may meet: its last picture request racing the stop (a 409, "not
    // recording"), which Chromium logs like any failed fetch.
    let raced_the_stop = |m: &str| m.contains("/api/preview - Failed to load resource: the server responded with a status of 409");
    let bad: Vec<_> = console.iter().filter(|(level, m)| (level == "SEVERE" || level == "WARNING") && !raced_the_stop(m)).collect();
    assert!(bad.is_empty(), "the page logged errors (a CSP violation or a script error): {bad:?}");
    let frames = d.status()["capture"].clone();
    assert_eq!(frames["frames_dropped"], 0, "watching cost the recording no frame: {frames}");
    assert!(d.terminate().unwrap().success());
}

#[test]
fn a_taken_port_leaves_the_box_recording_without_its_page() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut d = Daemon::start(&format!("{SMALL}[status_page]\nlisten = \"{addr}\"\n")).unwrap();
    let page = d.status()["status_page"].clone();
    assert_eq!(page["url"], Value::Null, "{page}");
    assert!(page["error"].as_str().unwrap().contains(&addr.to_string()), "{page}");
    d.ctl(Request::RecordStart { title: None }).unwrap();
    wait_until("recording", Duration::from_secs(10), || d.status()["state"] == "recording").unwrap();
    d.ctl(Request::RecordStop).unwrap();
    assert!(d.log_text().contains("the box records without its status page"), "{}", d.log_text());
    assert!(d.cli(&["status"]).unwrap().contains(&format!("page:      none: status page: cannot listen on {addr}")));
    assert!(d.terminate().unwrap().success());
}

#[test]
fn no_page_by_default() {
    let mut d = Daemon::start(SMALL).unwrap();
    assert_eq!(d.status()["status_page"], Value::Null);
    assert!(d.terminate().unwrap().success());
}
