//! What the guest workload promised durable, and how the promise travels to the host.
//!
//! After each journal call that returns "committed", the workload prints one console line
//! `LECTERN-PROMISE <n> <json>` and sends the mark `p<n>` to the log-writes target. The host
//! reads the promises from the console log and finds the marks in the write log, so every crash
//! state knows exactly which promises precede it.

use serde::{Deserialize, Serialize};

/// Prefix of a promise line on the guest console.
pub const LINE_PREFIX: &str = "LECTERN-PROMISE ";
/// Prefix of the guest's final status line (`LECTERN-GUEST rc=<n>`).
pub const GUEST_PREFIX: &str = "LECTERN-GUEST ";
/// The recording the workload makes.
pub const RECORDING_ID: &str = "logwrites-1";

/// One promise of the journal to its caller. Every field is what the call returned or what
/// the workload fed in, never read back from the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Promise {
    /// `Journal::open` returned: the index exists.
    JournalOpen,
    /// `start_recording` returned: the recording row exists (new or resumed).
    RecordingStarted { id: String },
    /// `open_part` returned: the part row exists.
    PartOpened { id: String, part: u32 },
    /// `push_data` or `finish` returned this committed segment.
    SegmentCommitted { id: String, part: u32, seq: u32, bytes: u64, sha256: String },
    /// `sync_now` returned (the power-fail edge): the open segment's first `bytes` are durable,
    /// with this SHA-256, and recovery must keep them.
    SegmentSynced { id: String, seq: u32, bytes: u64, sha256: String },
    /// `PartWriter::finish` returned: the part's final state.
    PartEnded { id: String, part: u32, state: String },
    /// `finish_recording` returned: the recording's state.
    RecordingEnded { id: String, state: String },
    /// `request_stitch` returned true: the stitch row is pending.
    StitchRequested { id: String },
    /// `StitchJob::commit` returned: the stitched file is in place with these bytes.
    StitchDone { id: String, path: String, bytes: u64, sha256: String },
}

impl Promise {
    /// The console line for promise number `n`.
    pub fn line(&self, n: usize) -> String {
        format!("{LINE_PREFIX}{n} {}", serde_json::to_string(self).expect("a promise serialises"))
    }
}

/// The promises found on a console log, in order (a gap or duplicate number is an error: the
/// console lost a line, and the marks would point at the wrong promise).
pub fn parse_console(console: &str) -> anyhow::Result<Vec<Promise>> {
    let mut out = Vec::new();
    for line in console.lines() {
        let Some(start) = line.find(LINE_PREFIX) else { continue };
        let rest = &line[start + LINE_PREFIX.len()..];
        let (n, json) = rest.split_once(' ').ok_or_else(|| anyhow::anyhow!("promise line without a JSON body: {line:?}"))?;
        let n: usize = n.parse().map_err(|_| anyhow::anyhow!("promise line with a bad number: {line:?}"))?;
        anyhow::ensure!(n == out.len(), "promise {n} on the console where {} was expected: {line:?}", out.len());
        out.push(serde_json::from_str(json.trim()).map_err(|e| anyhow::anyhow!("promise {n}: {e}: {json:?}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_round_trip_with_kernel_noise() {
        let a = Promise::JournalOpen;
        let b = Promise::SegmentCommitted { id: "r".into(), part: 1, seq: 2, bytes: 3, sha256: "ab".into() };
        let console = format!("[    1.0] EXT4-fs mounted\n{}\r\nnoise\n{}\n", a.line(0), b.line(1));
        assert_eq!(parse_console(&console).unwrap(), vec![a, b]);
    }

    #[test]
    fn console_with_a_lost_line_is_refused() {
        let console = format!("{}\n{}\n", Promise::JournalOpen.line(0), Promise::JournalOpen.line(2));
        let err = parse_console(&console).unwrap_err().to_string();
        assert!(err.contains("promise 2"), "{err}");
    }
}
