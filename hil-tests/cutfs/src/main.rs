//! `cutfs MOUNTPOINT [--control SOCKET]`: mounts cutfs and serves a control socket (one command per
//! line, one JSON line back): `cut` drops everything not durable and remounts, `stats` reports the
//! counters. SIGINT/SIGTERM unmount and exit. Tests in Rust use the library handle instead.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use lectern_cutfs::CutFs;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let mut mountpoint = None;
    let mut control = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--control") => control = Some(PathBuf::from(args.next().context("--control needs a socket path")?)),
            Some("-h" | "--help") => {
                println!("usage: cutfs MOUNTPOINT [--control SOCKET]   (socket default: MOUNTPOINT.ctl)");
                return Ok(());
            }
            _ if mountpoint.is_none() => mountpoint = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg:?} (usage: cutfs MOUNTPOINT [--control SOCKET])"),
        }
    }
    let mountpoint = mountpoint.context("usage: cutfs MOUNTPOINT [--control SOCKET]")?;
    let control = control.unwrap_or_else(|| mountpoint.with_extension("ctl"));
    let _ = std::fs::remove_file(&control);
    let listener = UnixListener::bind(&control).with_context(|| format!("bind control socket {}", control.display()))?;
    let fs = Arc::new(Mutex::new(Some(CutFs::mount(&mountpoint)?)));
    eprintln!("cutfs: mounted at {}, control socket {}", mountpoint.display(), control.display());

    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let on_signal = fs.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            if let Some(fs) = on_signal.lock().unwrap_or_else(|e| e.into_inner()).take() {
                if let Err(e) = fs.unmount() {
                    eprintln!("cutfs: {e}");
                    std::process::exit(1);
                }
            }
            std::process::exit(0);
        }
    });

    for stream in listener.incoming() {
        let stream = stream.context("accept on the control socket")?;
        if let Err(e) = serve(&fs, stream) {
            eprintln!("cutfs: control connection: {e:#}");
        }
    }
    Ok(())
}

fn serve(fs: &Mutex<Option<CutFs>>, stream: UnixStream) -> Result<()> {
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let mut guard = fs.lock().unwrap_or_else(|e| e.into_inner());
        let fs = guard.as_mut().context("cutfs is shutting down")?;
        let reply = match line.trim() {
            "cut" => fs.cut().map(|s| serde_json::json!({ "ok": true, "stats": s })),
            "stats" => Ok(serde_json::json!({ "ok": true, "stats": fs.stats() })),
            other => Ok(serde_json::json!({ "ok": false, "error": format!("unknown command {other:?}: expected cut or stats") })),
        }
        .unwrap_or_else(|e| serde_json::json!({ "ok": false, "error": e.to_string() }));
        writeln!(out, "{reply}")?;
    }
    Ok(())
}
