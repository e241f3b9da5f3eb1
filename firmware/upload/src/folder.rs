//! The folder target: a local or mounted directory (a USB drive, an NFS/SMB share of the campus
//! NAS). Each recording becomes `<dir>/<recording id>/<recording id>.mp4` and
//! `<recording id>.manifest.json`.
//!
//! A file appears under its final name only whole and durable: it is written as
//! `.<name>.partial` in the recording's directory, a bounded piece per step, its SHA-256 is
//! checked against the stitch's, then it is fsynced, renamed, and the directory fsynced. The
//! manifest goes first and the MP4 last, so the MP4's presence under its final name means the
//! whole recording is there.
//!
//! Durable checkpoints are coarser than pieces: each piece's bytes are written out at once
//! (`sync_file_range`, data only: no journal commit, no cache flush), but the partial file is
//! fdatasynced — and its length reported as confirmed progress — only every `sync_every` bytes
//! (default 32 MiB) and at its end. A flush of the card is what a recording's own fsync waits
//! behind when both share it, so an upload at 1 MB/s flushes once in half a minute rather than
//! every second (docs/benchmarks.md, "Recording while uploading"); what that costs is that a cut
//! of the destination re-copies at most `sync_every` bytes. The progress the runner persists
//! never claims bytes that were not fsynced; between checkpoints the target remembers, in
//! memory only, how far it wrote.
//!
//! Resume asks the folder, never the progress alone: the partial file's length is read back and
//! the copy continues from `min(its length, bytes confirmed)` (bytes past the confirmed count
//! may be unsynced garbage after a cut of the destination). Exactly once: a final file that
//! already exists with the stitch's size and SHA-256 is taken as done (a cut between the rename
//! and the journal's commit), never copied again.
//!
//! Endpoints are directories, primary first; `health` checks that one exists and is a directory
//! (an unmounted share usually shows as a missing or empty mount point — configure a directory
//! *inside* the share, so that an unmounted share fails the check instead of filling the root
//! filesystem).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::target::{Class, FileRef, Step, StepIo, Target, UploadError, UploadSpec};

/// Bytes copied per step by default.
pub const DEFAULT_PIECE: u64 = 1 << 20;

/// Bytes between durable checkpoints by default: a cut of the destination re-copies at most
/// this much.
pub const DEFAULT_SYNC_EVERY: u64 = 32 << 20;

/// The folder target; see the module doc.
#[derive(Debug)]
pub struct FolderTarget {
    dirs: Vec<String>,
    piece: u64,
    sync_every: u64,
    /// Written past the last checkpoint by this process, not yet fsynced.
    unsynced: Option<Unsynced>,
}

/// Bytes of a partial file written since its last fdatasync (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unsynced {
    partial: PathBuf,
    /// The durable length they follow (the progress's `copied`).
    durable: u64,
    /// The length written.
    end: u64,
}

/// The target's progress: which file is being copied and how much of it is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// Files finished (renamed and the directory fsynced), in order: manifest, then media.
    #[serde(default)]
    done: Vec<String>,
    /// Durable bytes of the file being copied.
    #[serde(default)]
    copied: u64,
}

fn local(what: &str, path: &Path, e: io::Error) -> UploadError {
    // The destination is what failed (a share that went away, a full USB drive): transient,
    // unless the source is what is missing, which the caller classifies itself.
    UploadError::transient(format!("{what} {}: {e}", path.display()))
}

fn fsync_dir(dir: &Path) -> Result<(), UploadError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| local("fsync directory", dir, e))
}

/// Starts writing `len` bytes of `f` at `offset` to the device and waits for it, without a
/// cache flush or a metadata commit (`sync_file_range`). Only a hint: durability still comes
/// from the checkpoint's fdatasync, so an error here is ignored.
fn write_out(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on a file descriptor we own for the duration of the call.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), offset as libc::off64_t, len as libc::off64_t, flags) };
}

fn sha256_of(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

impl FolderTarget {
    /// `dirs`: destination directories, primary first (must not be empty).
    pub fn new(dirs: Vec<String>) -> FolderTarget {
        FolderTarget::with_pieces(dirs, DEFAULT_PIECE, DEFAULT_SYNC_EVERY)
    }

    /// `piece` bytes per step, every one of them fsynced (tests of resumption).
    pub fn with_piece(dirs: Vec<String>, piece: u64) -> FolderTarget {
        FolderTarget::with_pieces(dirs, piece, piece)
    }

    /// `piece` bytes per step, fsynced every `sync_every` bytes (at least every piece).
    pub fn with_pieces(dirs: Vec<String>, piece: u64, sync_every: u64) -> FolderTarget {
        assert!(!dirs.is_empty(), "a folder target needs a directory");
        let piece = piece.max(1);
        FolderTarget { dirs, piece, sync_every: sync_every.max(piece), unsynced: None }
    }

    /// The files of a recording, in copy order, with their final names.
    fn files(spec: &UploadSpec) -> Vec<(&FileRef, String)> {
        let mut v = Vec::with_capacity(2);
        if let Some(m) = &spec.manifest {
            v.push((m, format!("{}.manifest.json", spec.recording_id)));
        }
        v.push((&spec.media, format!("{}.mp4", spec.recording_id)));
        v
    }

    /// Copies the next piece of `src` into its partial file. Returns the durable length (the
    /// new checkpoint, or `copied` between checkpoints) and the bytes written.
    fn copy_piece(&mut self, dir: &Path, src: &FileRef, name: &str, copied: u64, io: &StepIo) -> Result<(u64, u64), UploadError> {
        let partial = dir.join(format!(".{name}.partial"));
        let mut out = OpenOptions::new().create(true).write(true).truncate(false).open(&partial).map_err(|e| local("open", &partial, e))?;
        let on_disk = out.metadata().map_err(|e| local("stat", &partial, e))?.len();
        // Ask the folder: never continue past what it holds, nor past what was made durable —
        // unless this process wrote it since that checkpoint and the folder still holds it.
        let from = match self.unsynced.take() {
            Some(u) if u.partial == partial && u.durable == copied && on_disk >= u.end => u.end,
            _ => on_disk.min(copied),
        };
        if on_disk != from {
            out.set_len(from).map_err(|e| local("truncate", &partial, e))?;
        }
        let len = self.piece.min(src.bytes.saturating_sub(from));
        let mut reader = io.read_range(&src.path, from, len)?;
        out.seek(SeekFrom::Start(from)).map_err(|e| local("seek", &partial, e))?;
        let n = io::copy(&mut reader, &mut out).map_err(|e| local("write", &partial, e).with_sent(reader.bytes_read()))?;
        let (durable, end) = (copied.min(from), from + n);
        if end < src.bytes && end - durable < self.sync_every {
            // Hand the piece to the destination now, so the checkpoint's fdatasync has little
            // left to write; no flush, no journal commit (the module doc says why).
            write_out(&out, from, n);
            self.unsynced = Some(Unsynced { partial, durable, end });
            return Ok((durable, n));
        }
        out.sync_data().map_err(|e| local("fsync", &partial, e).with_sent(n))?;
        Ok((end, n))
    }

    /// Checks the partial file against the stitch's checksum, makes it durable under its final
    /// name.
    fn finish_file(&self, dir: &Path, src: &FileRef, name: &str) -> Result<(), UploadError> {
        let partial = dir.join(format!(".{name}.partial"));
        let (n, sha) = sha256_of(&partial).map_err(|e| local("read back", &partial, e))?;
        if n != src.bytes || sha != src.sha256 {
            // A destination that corrupted what it acknowledged: start this file again.
            let _ = fs::remove_file(&partial);
            return Err(UploadError::new(
                Class::Restart,
                format!("{} read back as {n} bytes sha256 {sha}, expected {} bytes {}", partial.display(), src.bytes, src.sha256),
            ));
        }
        File::open(&partial).and_then(|f| f.sync_all()).map_err(|e| local("fsync", &partial, e))?;
        let dest = dir.join(name);
        fs::rename(&partial, &dest).map_err(|e| local("rename", &dest, e))?;
        fsync_dir(dir)
    }

    /// Whether `dir/name` already holds `src` whole.
    fn already_there(dir: &Path, src: &FileRef, name: &str) -> bool {
        let dest = dir.join(name);
        fs::metadata(&dest).is_ok_and(|m| m.len() == src.bytes) && sha256_of(&dest).is_ok_and(|(_, sha)| sha == src.sha256)
    }
}

impl Target for FolderTarget {
    fn kind(&self) -> &'static str {
        "folder"
    }

    fn endpoints(&self) -> &[String] {
        &self.dirs
    }

    fn health(&mut self, i: usize) -> Result<(), UploadError> {
        let dir = Path::new(&self.dirs[i]);
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(UploadError::transient(format!("{} is not a directory", dir.display()))),
            Err(e) => Err(local("stat", dir, e)),
        }
    }

    fn step(&mut self, i: usize, spec: &UploadSpec, progress: &Value, io: &StepIo) -> Result<Step, UploadError> {
        self.health(i)?;
        let mut p: Progress = if progress.is_null() { Progress::default() } else { serde_json::from_value(progress.clone()).unwrap_or_default() };
        let dir = PathBuf::from(&self.dirs[i]).join(&spec.recording_id);
        if !dir.is_dir() {
            fs::create_dir(&dir).map_err(|e| local("create", &dir, e))?;
            fsync_dir(Path::new(&self.dirs[i]))?;
        }
        let files = FolderTarget::files(spec);
        let confirmed = |p: &Progress| -> u64 {
            files.iter().filter(|(_, n)| p.done.contains(n)).map(|(f, _)| f.bytes).sum::<u64>() + p.copied
        };
        let Some((src, name)) = files.iter().find(|(_, n)| !p.done.contains(n)) else {
            let media = dir.join(format!("{}.mp4", spec.recording_id));
            return Ok(Step::Done { progress: serde_json::to_value(&p).expect("progress serialises"), remote_ref: media.display().to_string(), sent: 0 });
        };
        if !src.path.exists() {
            return Err(UploadError::new(Class::Local, format!("{} is gone", src.path.display())));
        }
        let mut sent = 0;
        if FolderTarget::already_there(&dir, src, name) {
            // Finished before a cut took the journal's record of it.
            log::info!(target: "upload", "recording {}: {} already in {}", spec.recording_id, name, dir.display());
        } else {
            if p.copied < src.bytes || src.bytes == 0 {
                let (copied, n) = self.copy_piece(&dir, src, name, p.copied, io)?;
                p.copied = copied;
                sent = n;
                if copied < src.bytes {
                    let bytes_confirmed = confirmed(&p);
                    return Ok(Step::Progress { progress: serde_json::to_value(&p).expect("progress serialises"), bytes_confirmed, sent });
                }
            }
            self.finish_file(&dir, src, name).map_err(|e| e.with_sent(sent))?;
        }
        p.done.push(name.clone());
        p.copied = 0;
        let bytes_confirmed = confirmed(&p);
        Ok(Step::Progress { progress: serde_json::to_value(&p).expect("progress serialises"), bytes_confirmed, sent })
    }
}
