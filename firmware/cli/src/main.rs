//! `lectern`: the operator CLI. It talks to `lecternd` over the control socket (and to the
//! simulated board's socket for `lectern sim ...`); it never opens the journal itself, so it cannot
//! race the daemon. `--json` prints the daemon's response shapes unchanged (docs/control-api.md).
//!
//! Exit codes: 0 success, 1 the daemon refused or could not be reached, 2 bad usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use lectern_config::Config;
use lectern_control::Request;
use serde_json::Value;

const USAGE: &str = "\
usage: lectern [--config FILE | --socket PATH] [--json] COMMAND
commands:
  status                      what the box is doing
  record start [--title T]    start an ad-hoc recording
  record stop                 stop the current recording
  recordings                  recordings with durations, parts, segments, bytes
  segments ID                 the segments of one recording
  schedule parse FILE         the events the agent would store from an .ics file, as JSON
                              (uid, start/end RFC 3339 UTC, title, workflow, device names...;
                              recurrences 14 days ahead); a bad file: FILE:LINE: why, exit 1
  sim button [press|long|down|up]   press the simulated board's button
  sim powerfail on|off        assert or clear the simulated power-fail line
  sim led | sim state         the simulated board's LED and inputs
The config defaults to $LECTERN_CONFIG, else the embedded defaults.";

struct Opts {
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    json: bool,
    rest: Vec<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts { config: std::env::var_os("LECTERN_CONFIG").map(PathBuf::from), socket: None, json: false, rest: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => opts.config = Some(args.next().ok_or("--config needs a file")?.into()),
            "--socket" => opts.socket = Some(args.next().ok_or("--socket needs a path")?.into()),
            "--json" => opts.json = true,
            "--help" | "-h" => return Err(String::new()),
            _ => opts.rest.push(a),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("lectern: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lectern: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Appends one formatted line to a `String` (formatting into a `String` cannot fail).
macro_rules! out_line {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Writes the command's output to stdout. A reader that stopped reading (`lectern ... | grep -q`,
/// `| head`) is not an error of ours: a broken pipe ends the output quietly, where `println!`
/// would panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("lectern: writing to stdout: {e}");
        }
    }
}

fn config(opts: &Opts) -> anyhow::Result<Config> {
    Ok(match &opts.config {
        Some(p) => Config::load(p)?,
        None => Config::defaults(),
    })
}

fn ask(opts: &Opts, req: Request) -> anyhow::Result<Value> {
    let socket = match &opts.socket {
        Some(s) => s.clone(),
        None => config(opts)?.control_socket,
    };
    Ok(lectern_control::request(&socket, &req, Duration::from_secs(40))?)
}

fn run(opts: &Opts) -> anyhow::Result<ExitCode> {
    let words: Vec<&str> = opts.rest.iter().map(String::as_str).collect();
    let value = match words.as_slice() {
        ["status"] => ask(opts, Request::Status)?,
        ["record", "start"] => ask(opts, Request::RecordStart { title: None })?,
        ["record", "start", "--title", t] => ask(opts, Request::RecordStart { title: Some((*t).to_owned()) })?,
        ["record", "stop"] => ask(opts, Request::RecordStop)?,
        ["recordings"] => ask(opts, Request::Recordings)?,
        ["segments", id] => ask(opts, Request::Segments { recording_id: (*id).to_owned() })?,
        ["schedule", "parse", file] => return schedule_parse(Path::new(file)),
        ["sim", rest @ ..] => return sim(opts, rest),
        _ => {
            eprintln!("{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    if opts.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&value)?));
    } else {
        emit(&human(&words, &value));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a calendar exactly as the daemon does (same crate, same horizon: recurrences from a day
/// ago to `ParseOptions::DEFAULT_LOOKAHEAD_DAYS` ahead) and prints the events it would store.
/// A bad calendar prints `FILE:LINE: what was wrong`, the form editors and CI logs link to.
fn schedule_parse(file: &Path) -> anyhow::Result<ExitCode> {
    match lectern_schedule::load_file(file) {
        Ok(events) => {
            emit(&format!("{}\n", serde_json::to_string_pretty(&events)?));
            Ok(ExitCode::SUCCESS)
        }
        Err(lectern_schedule::ScheduleError::Parse { line, message }) => {
            eprintln!("{}:{line}: {message}", file.display());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("lectern: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn sim(opts: &Opts, words: &[&str]) -> anyhow::Result<ExitCode> {
    let line = match words {
        ["button"] => "button press".to_owned(),
        ["button", how @ ("press" | "long" | "down" | "up")] => format!("button {how}"),
        ["powerfail", how @ ("on" | "off")] => format!("powerfail {how}"),
        ["led"] => "led".to_owned(),
        ["state"] => "state".to_owned(),
        _ => bail!("unknown sim command {:?}\n{USAGE}", words.join(" ")),
    };
    let socket = config(opts)?.board.sim_socket;
    let reply = lectern_board::sim_request(&socket, &line)?;
    emit(&format!("{reply}\n"));
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn human(words: &[&str], v: &Value) -> String {
    let mut out = String::new();
    match words.first().copied() {
        Some("recordings") => {
            let empty = Vec::new();
            let list = v["recordings"].as_array().unwrap_or(&empty);
            out_line!(out, "{:<36} {:<11} {:<9} {:>9} {:>5} {:>5} {:>12}  title", "id", "state", "kind", "duration", "parts", "segs", "bytes");
            for r in list {
                let dur = r["media_duration_ns"].as_f64().unwrap_or(0.0) / 1e9;
                out_line!(out, 
                    "{:<36} {:<11} {:<9} {:>8.1}s {:>5} {:>5} {:>12}  {}",
                    s(&r["id"]),
                    s(&r["state"]),
                    s(&r["kind"]),
                    dur,
                    s(&r["parts"]),
                    s(&r["segments"]),
                    s(&r["bytes"]),
                    s(&r["title"])
                );
            }
            if list.is_empty() {
                out_line!(out, "(no recordings)");
            }
        }
        Some("segments") => {
            let empty = Vec::new();
            for seg in v["segments"].as_array().unwrap_or(&empty) {
                out_line!(out, "{}", serde_json::to_string(seg).unwrap_or_default());
            }
        }
        _ => {
            if v.get("state").is_some() {
                out_line!(out, "state:     {}", s(&v["state"]));
            }
            if let Some(r) = v.get("recording").filter(|r| !r.is_null()) {
                out_line!(out, "recording: {} ({}) \"{}\" since {}, until {}", s(&r["id"]), s(&r["kind"]), s(&r["title"]), s(&r["started_at"]), s(&r["planned_end"]));
                if !r["last_error"].is_null() {
                    out_line!(out, "error:     {} (retry at {})", s(&r["last_error"]), s(&v["retry_at"]));
                }
            }
            if let Some(st) = v.get("stopped").filter(|r| !r.is_null()) {
                out_line!(out, "stopped:   {} {} ({} segments, {} bytes)", s(&st["id"]), s(&st["state"]), s(&st["segments"]), s(&st["bytes"]));
            }
            if v.get("led").is_some() {
                out_line!(out, "led:       {}", s(&v["led"]));
                out_line!(out, "encoder:   {}", s(&v["encoder"]["element"]));
                out_line!(out, "media:     {}", s(&v["media_dir"]));
            }
            for (name, d) in [("camera", &v["devices"]["camera"]), ("mic", &v["devices"]["mic"])] {
                if !d.is_null() {
                    out_line!(out, "{:<10} {}", format!("{name}:"), device_line(d));
                }
            }
            if v["provisioned"] == false {
                out_line!(out, "provision: none (no schedule.ics, schedule.ics_url or opencast.url): ad-hoc recordings only");
            }
        }
    }
    out
}

/// One line for a probed input of `status.devices`: its device and whether it opened when last
/// checked (docs/control-api.md).
fn device_line(d: &Value) -> String {
    let device = d["device"].as_str().unwrap_or("?");
    match d["ok"].as_bool() {
        None => format!("{device} (not probed yet)"),
        Some(true) => format!("{device} ok (checked {})", d["checked"].as_str().unwrap_or("?")),
        Some(false) => format!("{device} UNAVAILABLE: {}", d["error"].as_str().unwrap_or("?")),
    }
}

#[cfg(test)]
mod tests {
    use super::device_line;
    use serde_json::json;

    #[test]
    fn device_lines() {
        let check = |d: serde_json::Value, want: &str| assert_eq!(device_line(&d), want);
        check(json!({"ok": null, "device": "/dev/video0"}), "/dev/video0 (not probed yet)");
        check(json!({"ok": true, "device": "hw:1,0", "checked": "2026-11-26T08:59:00.000Z"}), "hw:1,0 ok (checked 2026-11-26T08:59:00.000Z)");
        check(
            json!({"ok": false, "device": "/dev/video0", "error": "camera /dev/video0 cannot be opened: no such device node"}),
            "/dev/video0 UNAVAILABLE: camera /dev/video0 cannot be opened: no such device node",
        );
    }
}
