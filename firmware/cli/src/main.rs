//! `lectern`: the operator CLI. It talks to `lecternd` over the control socket (and to the
//! simulated board's socket for `lectern sim ...`); it never opens the journal itself, so it cannot
//! race the daemon. `--json` prints the daemon's response shapes unchanged (docs/control-api.md).
//! The command line itself is declared in `args.rs` (clap); this file dispatches and owns the
//! exit-code policy.
//!
//! Exit codes: 0 success; 1 the daemon refused or could not be reached, or the file `schedule
//! parse` / `config check` read has problems; 2 bad usage (clap's usage errors).

mod args;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use args::{Cli, Command, ConfigCmd, Record, Schedule, Sim, Uploads};
use clap::{CommandFactory, Parser};
use lectern_config::Config;
use lectern_control::Request;
use serde_json::Value;

fn main() -> ExitCode {
    // clap prints help and version (exit 0) and usage errors with suggestions (exit 2) itself.
    let cli = Cli::parse();
    match run(&cli) {
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

fn config(cli: &Cli) -> anyhow::Result<Config> {
    Ok(match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::defaults(),
    })
}

fn ask(cli: &Cli, req: Request) -> anyhow::Result<Value> {
    let socket = match &cli.socket {
        Some(s) => s.clone(),
        None => config(cli)?.control_socket,
    };
    Ok(lectern_control::request(&socket, &req, Duration::from_secs(40))?)
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (kind, value) = match &cli.command {
        Command::Status => ("status", ask(cli, Request::Status)?),
        Command::Record(Record::Start { title }) => ("record", ask(cli, Request::RecordStart { title: title.clone() })?),
        Command::Record(Record::Stop) => ("record", ask(cli, Request::RecordStop)?),
        Command::Recordings { newest: None } => ("recordings", ask(cli, Request::Recordings)?),
        Command::Recordings { newest: Some(n) } => ("recordings", ask(cli, Request::NewestRecordings { n: *n })?),
        Command::Segments { id } => ("segments", ask(cli, Request::Segments { recording_id: id.clone() })?),
        Command::Uploads { action: None } => ("uploads", ask(cli, Request::Uploads)?),
        Command::Uploads { action: Some(Uploads::Retry { id }) } => ("uploads retry", ask(cli, Request::UploadRetry { recording_id: id.clone() })?),
        Command::Update { bundle } => ("update", ask(cli, Request::Update { bundle: absolute(bundle)? })?),
        Command::Provision { bundle } => ("provision", ask(cli, Request::Provision { bundle: absolute(bundle)? })?),
        Command::Preview { out } => ("preview", preview(cli, out)?),
        Command::Schedule(Schedule::Parse(f)) => return schedule_parse(&f.file),
        Command::Config(ConfigCmd::Check(f)) => return config_check(&f.file),
        Command::Sim(sim_cmd) => return sim(cli, sim_cmd),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "lectern", &mut out);
            emit(&String::from_utf8_lossy(&out));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            emit(&String::from_utf8_lossy(&out));
            return Ok(ExitCode::SUCCESS);
        }
    };
    if cli.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&value)?));
    } else {
        emit(&human(kind, &value));
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemon resolves nothing against the CLI's working directory: a relative bundle path is
/// made absolute here.
fn absolute(path: &Path) -> anyhow::Result<String> {
    let p = std::path::absolute(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(p.to_string_lossy().into_owned())
}

/// Parses a calendar exactly as the daemon does (same crate, same horizon: recurrences from a day
/// ago to `ParseOptions::DEFAULT_LOOKAHEAD_DAYS` ahead) and prints the events it would store.
/// Each bad event it would skip, and a calendar it would refuse whole, prints
/// `FILE:LINE: what was wrong` on stderr, the form editors and CI logs link to, and exits 1.
fn schedule_parse(file: &Path) -> anyhow::Result<ExitCode> {
    match lectern_schedule::load_file(file) {
        Ok(cal) => {
            emit(&format!("{}\n", serde_json::to_string_pretty(&cal.events)?));
            for s in &cal.skipped {
                let who = match &s.uid {
                    Some(uid) => format!("event {uid}"),
                    None => format!("event #{} (no UID, begins on line {})", s.position, s.begin),
                };
                eprintln!("{}:{}: {who} skipped: {}", file.display(), s.line, s.message);
            }
            if cal.skipped.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("{}: {} events, {} skipped", file.display(), cal.events.len(), cal.skipped.len());
            Ok(ExitCode::from(1))
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

/// Validates a config exactly as `lecternd` does (`Config::check` reports every problem
/// `Config::load` would stop at the first of) and prints each with file, key and expectation.
fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    let problems = Config::check(file);
    if problems.is_empty() {
        emit(&format!("{}: valid\n", file.display()));
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!("{}: {} problem(s); lecternd would refuse it (exit 2)", file.display(), problems.len());
    Ok(ExitCode::from(1))
}

fn sim(cli: &Cli, cmd: &Sim) -> anyhow::Result<ExitCode> {
    let line = match cmd {
        Sim::Button { how } => format!("button {}", how.word()),
        Sim::Powerfail { how } => format!("powerfail {}", how.word()),
        Sim::Led => "led".to_owned(),
        Sim::State => "state".to_owned(),
    };
    let socket = config(cli)?.board.sim_socket;
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

/// The human form of a reply; `kind` is the command (`"uploads retry"` for the retry).
/// Asks for the preview until a JPEG comes (the first one takes up to a second after the branch
/// opens), writes it to `out` and returns the reply with the JPEG replaced by where it went.
fn preview(cli: &Cli, out: &std::path::Path) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let mut v = ask(cli, Request::Preview)?;
        if let Some(b64) = v["jpeg_base64"].as_str() {
            let jpeg = base64::engine::general_purpose::STANDARD.decode(b64)?;
            std::fs::write(out, &jpeg).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            v["jpeg_base64"] = Value::Null;
            v["saved"] = serde_json::json!({ "path": out.display().to_string(), "bytes": jpeg.len() });
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("no preview picture within 6 s (is the camera delivering? see lectern status)");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn human(kind: &str, v: &Value) -> String {
    let mut out = String::new();
    match kind {
        "recordings" => {
            let empty = Vec::new();
            let list = v["recordings"].as_array().unwrap_or(&empty);
            out_line!(out, "{:<36} {:<11} {:<8} {:<9} {:>9} {:>5} {:>5} {:>12}  title", "id", "state", "quality", "kind", "duration", "parts", "segs", "bytes");
            for r in list {
                let dur = r["media_duration_ns"].as_f64().unwrap_or(0.0) / 1e9;
                out_line!(out, 
                    "{:<36} {:<11} {:<8} {:<9} {:>8.1}s {:>5} {:>5} {:>12}  {}",
                    s(&r["id"]),
                    s(&r["state"]),
                    s(&r["quality"]["verdict"]),
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
            if let Some(total) = v["total"].as_u64().filter(|t| *t > list.len() as u64) {
                out_line!(out, "(the newest {} of {total})", list.len());
            }
        }
        "uploads retry" => {
            out_line!(out, "{}: {} -> {}", s(&v["recording_id"]), s(&v["was"]), s(&v["state"]));
        }
        "uploads" => {
            let empty = Vec::new();
            let list = v["uploads"].as_array().unwrap_or(&empty);
            for j in list {
                out_line!(out, "{}", upload_line(j));
            }
            if list.is_empty() {
                out_line!(out, "(no uploads)");
            }
            for e in v["endpoints"].as_array().unwrap_or(&empty) {
                let current = e["current"].as_u64().unwrap_or(0) as usize;
                let eps: Vec<String> = e["endpoints"].as_array().unwrap_or(&empty).iter().enumerate().map(|(i, u)| if i == current { format!("[{}]", s(u)) } else { s(u) }).collect();
                out_line!(out, "target {} ({}): {}", s(&e["target"]), s(&e["kind"]), eps.join(" "));
            }
            for a in v["alarms"].as_array().unwrap_or(&empty) {
                out_line!(out, "ALARM: {}", s(a));
            }
        }
        "update" => out_line!(out, "update:    {}", update_line(v)),
        "preview" => {
            out_line!(out, "preview:   {} ({} bytes, {} ms old) of {}", s(&v["saved"]["path"]), s(&v["saved"]["bytes"]), s(&v["age_ms"]), s(&v["recording_id"]));
            match v["meter"].as_object() {
                Some(m) => out_line!(
                    out,
                    "audio:     peak {:.1} dBFS, rms {:.1} dBFS",
                    m.get("peak_db").and_then(Value::as_f64).unwrap_or(f64::NAN),
                    m.get("rms_db").and_then(Value::as_f64).unwrap_or(f64::NAN)
                ),
                None => out_line!(out, "audio:     no level yet (no mic, or signals.enabled = false)"),
            }
        }
        "provision" if v.get("up_to_date").is_some() => out_line!(out, "up to date: version {} is already applied; nothing changed", s(&v["up_to_date"])),
        "provision" => out_line!(out, "provisioned: version {} (previous {}); {}", s(&v["applied"]), s(&v["previous"]), s(&v["note"])),
        "segments" => {
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
            if !v["update"].is_null() && v.get("led").is_some() {
                out_line!(out, "update:    {}", update_line(&v["update"]));
            }
            if !v["provision"].is_null() && v.get("led").is_some() {
                out_line!(out, "bundle:    {}", bundle_line(&v["provision"]));
            }
            if v["provisioned"] == false {
                out_line!(out, "provision: none (no schedule.ics, schedule.ics_url or opencast.url): ad-hoc recordings only");
            }
            match (v["status_page"]["url"].as_str(), v["status_page"]["error"].as_str()) {
                (Some(url), _) => out_line!(out, "page:      {url} (loopback; docs/status-page.md)"),
                (None, Some(e)) => out_line!(out, "page:      none: {e}"),
                _ => {}
            }
        }
    }
    out
}

/// Bytes as MB with one decimal.
fn mb(v: &Value) -> String {
    format!("{:.1} MB", v.as_f64().unwrap_or(0.0) / 1e6)
}

/// One job of `lectern uploads`: id, state, a progress bar, bytes, rate and ETA, attempts,
/// target and endpoint, and the last error (docs/control-api.md has the JSON).
fn upload_line(j: &Value) -> String {
    let frac = j["fraction"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
    let filled = (frac * 20.0).round() as usize;
    let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled));
    let rate = match (j["rate_bps"].as_f64(), j["eta_s"].as_f64()) {
        (Some(r), Some(eta)) => format!(" {:.1} MB/s, ETA {}m{:02}s", r / 1e6, eta as u64 / 60, eta as u64 % 60),
        _ => String::new(),
    };
    let mut line = format!(
        "{:<28} {:<7} {bar} {:>3.0}% {}/{}{rate}  {} -> {}",
        s(&j["recording_id"]),
        s(&j["state"]),
        frac * 100.0,
        mb(&j["bytes_confirmed"]),
        mb(&j["bytes_total"]),
        s(&j["target"]),
        s(&j["endpoint"]),
    );
    if j["attempts"].as_i64().unwrap_or(0) > 0 {
        line.push_str(&format!("  attempts {}", s(&j["attempts"])));
    }
    if !j["next_try"].is_null() {
        line.push_str(&format!(", next try {}", s(&j["next_try"])));
    }
    if !j["last_error"].is_null() {
        line.push_str(&format!("\n    last error: {}", s(&j["last_error"])));
    }
    line
}

/// `status.update` (or the `update` reply) in one line: the bundle, where it is, and what it
/// waits for or why it failed (docs/control-api.md).
fn update_line(u: &Value) -> String {
    let mut line = format!("{} {}", s(&u["bundle"]), s(&u["state"]));
    if let Some(w) = u["waiting_for"].as_str() {
        line.push_str(&format!(" (waiting: {w})"));
    }
    if let Some(e) = u["error"].as_str() {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// One line for `status.provision` (docs/provisioning.md): the applied bundle version, a trial,
/// the last rejection and the zero-touch URL's last check.
fn bundle_line(p: &Value) -> String {
    let mut line = match p["version"].as_u64() {
        Some(v) => format!("version {v}"),
        None => "none applied".to_owned(),
    };
    if let Some(k) = p["applied_key_id"].as_str() {
        line.push_str(&format!(" (key {k}"));
        if let Some(at) = p["applied_at"].as_str() {
            line.push_str(&format!(", applied {at}"));
        }
        line.push(')');
    }
    if let Some(t) = p["trial"].as_object() {
        line.push_str(&format!(", on trial (start {})", t.get("starts").and_then(Value::as_u64).unwrap_or(0)));
    }
    if let Some(r) = p["last_rejection"]["message"].as_str() {
        line.push_str(&format!("; last rejected: {r}"));
    }
    if let Some(remote) = p["remote"].as_object() {
        let get = |k: &str| remote.get(k).and_then(Value::as_str);
        line.push_str(&format!("; zero-touch {}", get("url").filter(|u| !u.is_empty()).unwrap_or("off")));
        if let Some(r) = get("last_apply").or(get("last_result")) {
            line.push_str(&format!(": {r}"));
        }
    }
    line
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
    use super::{device_line, upload_line};

    #[test]
    fn upload_lines() {
        let j = json!({"recording_id": "20261203-100000-a", "state": "active", "fraction": 0.5, "bytes_confirmed": 900_000_000u64,
            "bytes_total": 1_800_000_000u64, "rate_bps": 2_500_000.0, "eta_s": 360.0, "attempts": 2, "next_try": null,
            "target": "opencast", "endpoint": "https://oc-b", "last_error": "POST https://oc-a/upload/job/7: timed out"});
        assert_eq!(
            upload_line(&j),
            "20261203-100000-a            active  [##########..........]  50% 900.0 MB/1800.0 MB 2.5 MB/s, ETA 6m00s  opencast -> https://oc-b  attempts 2\n    last error: POST https://oc-a/upload/job/7: timed out"
        );
        let parked = json!({"recording_id": "r", "state": "parked", "fraction": 0.0, "bytes_confirmed": 0, "bytes_total": 10, "rate_bps": null,
            "eta_s": null, "attempts": 0, "next_try": null, "target": "s3", "endpoint": null, "last_error": "HTTP 403"});
        assert!(upload_line(&parked).starts_with("r                            parked  [....................]   0% 0.0 MB/0.0 MB  s3 -> -"), "{}", upload_line(&parked));
    }
    use serde_json::json;

    #[test]
    fn bundle_lines() {
        let check = |p: serde_json::Value, want: &str| assert_eq!(super::bundle_line(&p), want);
        check(json!({"version": null, "trial": null, "last_rejection": null}), "none applied");
        check(
            json!({"version": 7, "applied_key_id": "fleet-2027", "applied_at": "2027-01-10T12:00:00Z", "trial": {"version": 7, "starts": 1},
                   "last_rejection": {"message": "bundle version 6 is not newer than the applied version 7"},
                   "remote": {"url": "https://files.example.edu/b/x.bundle", "last_result": "not modified", "last_apply": "up to date (version 7)"}}),
            "version 7 (key fleet-2027, applied 2027-01-10T12:00:00Z), on trial (start 1); last rejected: bundle version 6 is not newer than the applied version 7; zero-touch https://files.example.edu/b/x.bundle: up to date (version 7)",
        );
    }

    #[test]
    fn update_lines() {
        let check = |u: serde_json::Value, want: &str| assert_eq!(super::update_line(&u), want);
        check(json!({"bundle": "/data/b.raucb", "state": "deferred", "waiting_for": "recording lecture-1", "error": null}), "/data/b.raucb deferred (waiting: recording lecture-1)");
        check(json!({"bundle": "/data/b.raucb", "state": "installing", "waiting_for": null, "error": null}), "/data/b.raucb installing");
        check(json!({"bundle": "/data/b.raucb", "state": "failed", "waiting_for": null, "error": "Compatible mismatch"}), "/data/b.raucb failed: Compatible mismatch");
    }

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
