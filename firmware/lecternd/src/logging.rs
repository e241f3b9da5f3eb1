//! Logging: journald when the daemon runs under systemd, stderr otherwise.
//!
//! Every crate logs through the `log` facade under its own target, so `RUST_LOG`-style filtering
//! is by crate. Under journald the log is rotated and bounded by journald itself; on stderr it is
//! the caller's (systemd's or the test's) to bound.

use std::io::Write;

/// Installs the logger once. `LECTERN_LOG` sets the level (`error`…`trace`, default `info`).
pub fn init() {
    let level = std::env::var("LECTERN_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(log::LevelFilter::Info);
    // JOURNAL_STREAM is set by systemd when stderr is connected to the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            if logger.with_syslog_identifier("lecternd".into()).install().is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
    if log::set_boxed_logger(Box::new(Stderr)).is_ok() {
        log::set_max_level(level);
    }
}

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let _ = writeln!(std::io::stderr().lock(), "{now} {:5} {}: {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}
