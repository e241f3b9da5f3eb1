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
            let logger = logger.with_syslog_identifier("lecternd".into());
            if log::set_boxed_logger(Box::new(Quiet { inner: logger, level })).is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
    if log::set_boxed_logger(Box::new(Quiet { inner: Stderr, level })).is_ok() {
        log::set_max_level(level);
    }
}

/// Libraries whose debug lines are per request or per TLS record (ureq logs six lines for every
/// HTTP call): at `debug` they would bury Lectern's own lines, so they speak below `info` only
/// when `LECTERN_LOG=trace`.
const CHATTY: [&str; 3] = ["ureq", "ureq_proto", "rustls"];

fn chatty(target: &str) -> bool {
    CHATTY.iter().any(|c| target == *c || target.strip_prefix(c).is_some_and(|rest| rest.starts_with("::")))
}

fn wanted(level: log::LevelFilter, record_level: log::Level, target: &str) -> bool {
    record_level <= level && (record_level <= log::Level::Info || level == log::LevelFilter::Trace || !chatty(target))
}

struct Quiet<L> {
    inner: L,
    level: log::LevelFilter,
}

impl<L: log::Log> log::Log for Quiet<L> {
    fn enabled(&self, m: &log::Metadata) -> bool {
        wanted(self.level, m.level(), m.target()) && self.inner.enabled(m)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let _ = writeln!(std::io::stderr().lock(), "{now} {:5} {}: {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, LevelFilter};

    #[test]
    fn http_library_debug_lines_need_trace_and_lecterns_own_do_not() {
        assert!(wanted(LevelFilter::Debug, Level::Debug, "lecternd"));
        assert!(wanted(LevelFilter::Debug, Level::Debug, "upload"));
        assert!(!wanted(LevelFilter::Debug, Level::Debug, "ureq::run"));
        assert!(!wanted(LevelFilter::Debug, Level::Debug, "ureq_proto::client"));
        assert!(!wanted(LevelFilter::Debug, Level::Debug, "ureq"));
        assert!(wanted(LevelFilter::Debug, Level::Warn, "ureq::run"), "a library's warnings always show");
        assert!(wanted(LevelFilter::Trace, Level::Debug, "ureq::run"));
        assert!(wanted(LevelFilter::Debug, Level::Debug, "ureqx"), "only the named crates");
        assert!(!wanted(LevelFilter::Info, Level::Debug, "lecternd"));
    }
}
