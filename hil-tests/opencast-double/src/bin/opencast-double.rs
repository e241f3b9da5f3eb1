//! `opencast-double`: the Opencast test double as a process, for clients that are not Rust tests
//! (a capture agent under manual test, a shell script, the demo).
//!
//! ```text
//! opencast-double [--port N] [--user U] [--password P] [--digest|--basic]
//!                 [--calendar FILE.ics | --event SPEC ...] [--state-out FILE.json]
//!                 [--services-as-list] [--fold-inside-chars] [--no-fileupload]
//! ```
//! `--event` takes `uid=ID,agent=NAME,start=T,end=T[,title=…][,series=…][,workflow=…]
//! [,devices=a+b][,config.KEY=VALUE…]` with T as Unix seconds, RFC 3339 or `+N` seconds from now.
//! It prints `listening on http://127.0.0.1:PORT` once ready, serves what it received as JSON at
//! `GET /__double/state`, and on SIGTERM/SIGINT writes that JSON to `--state-out` and exits 0.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lectern_opencast_double::{AuthMode, Config, Double, Event};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config = Config::digest("opencast_system_account", "CHANGE_ME");
    let (mut user, mut password) = ("opencast_system_account".to_string(), "CHANGE_ME".to_string());
    let (mut calendar, mut events, mut state_out): (Option<PathBuf>, Vec<Event>, Option<PathBuf>) = (None, Vec::new(), None);
    let now = chrono::Utc::now();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--port" => config.port = value("--port")?.parse().context("--port must be a number")?,
            "--user" => user = value("--user")?,
            "--password" => password = value("--password")?,
            "--digest" => config.auth = AuthMode::Digest,
            "--basic" => config.auth = AuthMode::Basic,
            "--calendar" => calendar = Some(value("--calendar")?.into()),
            "--event" => events.push(Event::from_spec(&value("--event")?, now)?),
            "--state-out" => state_out = Some(value("--state-out")?.into()),
            "--services-as-list" => config.services_as_list = true,
            "--fold-inside-chars" => config.fold_inside_chars = true,
            "--no-fileupload" => config.fileupload = false,
            "--help" | "-h" => {
                println!("{}", include_str!("opencast-double.rs").lines().take_while(|l| l.starts_with("//!")).map(|l| l.trim_start_matches("//!").trim_start_matches(' ')).collect::<Vec<_>>().join("\n"));
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if calendar.is_some() && !events.is_empty() {
        bail!("--calendar and --event are exclusive");
    }
    config.users = [(user, password)].into();
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT]).context("installing signal handlers")?;
    let double = Double::start(config)?;
    match calendar {
        Some(path) => double.set_raw_calendar(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?),
        None => double.set_events(events),
    }
    println!("listening on {}", double.url());
    let mut signals = signals;
    let sig = signals.forever().next();
    eprintln!("opencast-double: signal {sig:?}, stopping");
    if let Some(out) = state_out {
        let json = serde_json::to_vec_pretty(&double.snapshot())?;
        std::fs::write(&out, json).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
