//! Deliberately broken commit orders, for testing the power-cut harness itself (issue 4: "a
//! deliberately broken commit order must make the harness fail"). Read once from the environment
//! variable `LECTERN_JOURNAL_FAULT`; unset (always, in production) means the real protocol.
//!
//! - `skip-dir-fsync`: directories are never fsynced, so a new segment file's (or part
//!   directory's) entry may not survive a cut although its row says committed.
//! - `row-before-data-fsync`: a segment's row is committed before its data is fsynced, and that
//!   fsync is then left to the kernel. Only reordering would leave a window of a few milliseconds
//!   per segment that a 20-cut run would rarely hit; dropping the fsync makes every committed
//!   segment's unsynced tail (up to one `fsync_interval`) vulnerable, which is the bug class.
//!
//! Any other value is refused loudly at first use so a typo cannot silently test nothing.

use std::sync::OnceLock;

/// The environment variable naming the fault.
pub const FAULT_ENV: &str = "LECTERN_JOURNAL_FAULT";

/// A deliberately broken step of the commit protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SkipDirFsync,
    RowBeforeDataFsync,
}

/// The fault configured for this process, if any.
pub(crate) fn active() -> Option<Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    *FAULT.get_or_init(|| {
        let value = std::env::var(FAULT_ENV).ok()?;
        let fault = match value.as_str() {
            "" => return None,
            "skip-dir-fsync" => Fault::SkipDirFsync,
            "row-before-data-fsync" => Fault::RowBeforeDataFsync,
            other => panic!("{FAULT_ENV}={other:?}: expected skip-dir-fsync or row-before-data-fsync"),
        };
        log::error!(target: "journal", "{FAULT_ENV}={value}: the commit protocol is deliberately BROKEN (harness self-test only)");
        Some(fault)
    })
}
