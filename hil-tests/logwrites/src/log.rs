//! Reads the log device that the kernel's `dm-log-writes` target fills, written from the format
//! the kernel documents (Documentation/admin-guide/device-mapper/log-writes.rst and the structs in
//! drivers/md/dm-log-writes.c), not from its code.
//!
//! Layout, all little-endian. Offsets are in bytes; `S` is the log's sector size, the data device's
//! logical block size, stored in the super block:
//!
//! - offset 0: the super block `{ magic: u64, version: u64, nr_entries: u64, sectorsize: u32 }`,
//!   rewritten after every FUA or MARK entry and when the target is removed, so `nr_entries` is
//!   final only after `dmsetup remove`.
//! - offset `S`: the entries, back to back. Each is one sector of metadata
//!   `{ sector: u64, nr_sectors: u64, flags: u64, data_len: u64 }` (a MARK's name follows these 32
//!   bytes in the same sector, `data_len` bytes long), then — unless it is a DISCARD — the
//!   `nr_sectors × S` bytes that were written. `sector` and `nr_sectors` count `S`-byte sectors of
//!   the data device.
//!
//! Order: the target logs a write only once a flush has covered it (a FLUSH entry comes after the
//! writes that completed before the flush was issued), a FUA write when it completes, and a MARK
//! when it is asked for. Replaying the entries in order up to any FLUSH, FUA or MARK therefore
//! yields a disk state that a power cut right after that point could have left.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

/// The super block's magic number.
pub const MAGIC: u64 = 0x006a_7366_7773_6872;
/// The only format version there is.
pub const VERSION: u64 = 1;
/// A flush (REQ_PREFLUSH): everything before it in the log was on stable storage.
pub const FLAG_FLUSH: u64 = 1 << 0;
/// A write with FUA: on stable storage when it completed.
pub const FLAG_FUA: u64 = 1 << 1;
/// A discard: no data follows.
pub const FLAG_DISCARD: u64 = 1 << 2;
/// A mark sent with `dmsetup message DEV 0 mark NAME`.
pub const FLAG_MARK: u64 = 1 << 3;
/// A metadata write (REQ_META); informational only.
pub const FLAG_METADATA: u64 = 1 << 4;

/// Size of one entry's metadata header.
const ENTRY_HEADER: usize = 32;

/// One logged entry. `data_offset` points into the log file (never read for a discard or mark).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    pub mark: Option<String>,
    pub data_offset: u64,
}

impl Entry {
    /// A point where a crash state is taken: a flush, a FUA write or a mark.
    pub fn is_crash_point(&self) -> bool {
        self.flags & (FLAG_FLUSH | FLAG_FUA | FLAG_MARK) != 0
    }

    /// Bytes of data this entry writes to the device (0 for marks, discards and empty flushes).
    pub fn data_len(&self, sectorsize: u64) -> u64 {
        if self.flags & FLAG_DISCARD != 0 {
            0
        } else {
            self.nr_sectors * sectorsize
        }
    }

    /// A short name of the entry's kind for reports.
    pub fn kind(&self) -> String {
        let mut parts = Vec::new();
        for (flag, name) in [(FLAG_FLUSH, "flush"), (FLAG_FUA, "fua"), (FLAG_DISCARD, "discard"), (FLAG_MARK, "mark")] {
            if self.flags & flag != 0 {
                parts.push(name);
            }
        }
        if parts.is_empty() {
            parts.push("write");
        }
        parts.join("+")
    }
}

/// A parsed log: its sector size and every entry in order.
#[derive(Debug)]
pub struct Log {
    pub sectorsize: u64,
    pub entries: Vec<Entry>,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Log {
    /// Parses the log device image at `path`.
    pub fn read(path: &Path) -> Result<Log> {
        let mut f = File::open(path).with_context(|| format!("open log device image {}", path.display()))?;
        let file_len = f.metadata()?.len();
        let mut sup = [0u8; 28];
        f.read_exact(&mut sup).with_context(|| format!("{}: too short for a log-writes super block", path.display()))?;
        let magic = le64(&sup, 0);
        ensure!(magic == MAGIC, "{}: magic {magic:#x} is not dm-log-writes' {MAGIC:#x} (was the target removed before power-off?)", path.display());
        let version = le64(&sup, 8);
        ensure!(version == VERSION, "{}: log-writes version {version}, expected {VERSION}", path.display());
        let nr_entries = le64(&sup, 16);
        let sectorsize = u64::from(u32::from_le_bytes(sup[24..28].try_into().expect("4 bytes")));
        ensure!(sectorsize >= 512 && sectorsize.is_power_of_two(), "{}: sector size {sectorsize} is not a power of two ≥ 512", path.display());
        let mut entries = Vec::with_capacity(nr_entries as usize);
        let mut pos = sectorsize;
        let mut header = vec![0u8; sectorsize as usize];
        for index in 0..nr_entries {
            ensure!(pos + sectorsize <= file_len, "{}: entry {index} of {nr_entries} starts at byte {pos}, past the end ({file_len})", path.display());
            f.seek(SeekFrom::Start(pos))?;
            f.read_exact(&mut header)?;
            let (sector, nr_sectors, flags, data_len) = (le64(&header, 0), le64(&header, 8), le64(&header, 16), le64(&header, 24));
            let mark = if flags & FLAG_MARK != 0 {
                let end = ENTRY_HEADER + data_len as usize;
                ensure!(end <= header.len(), "{}: entry {index}: mark of {data_len} bytes does not fit its sector", path.display());
                Some(String::from_utf8_lossy(&header[ENTRY_HEADER..end]).into_owned())
            } else {
                None
            };
            let entry = Entry { index, sector, nr_sectors, flags, mark, data_offset: pos + sectorsize };
            pos = entry.data_offset + entry.data_len(sectorsize);
            ensure!(pos <= file_len, "{}: entry {index}'s data runs past the end of the log", path.display());
            entries.push(entry);
        }
        Ok(Log { sectorsize, entries })
    }
}

/// Applies entries one by one to a copy of the base image: the replay's write side.
pub struct Replayer {
    log: File,
    image: File,
    sectorsize: u64,
    buf: Vec<u8>,
}

impl Replayer {
    /// `image` must already hold the data device's state before logging began.
    pub fn new(log_path: &Path, image_path: &Path, sectorsize: u64) -> Result<Replayer> {
        Ok(Replayer {
            log: File::open(log_path).with_context(|| format!("open {}", log_path.display()))?,
            image: std::fs::OpenOptions::new().write(true).open(image_path).with_context(|| format!("open {}", image_path.display()))?,
            sectorsize,
            buf: Vec::new(),
        })
    }

    /// Writes one entry's effect into the image: its data, or zeros for a discard (what a device
    /// that returns zeros after a discard shows; ext4 here is mounted without `discard`, so the
    /// workload's log has none).
    pub fn apply(&mut self, e: &Entry) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let len = (e.nr_sectors * self.sectorsize) as usize;
        if len == 0 {
            return Ok(());
        }
        self.buf.resize(len, 0);
        if e.flags & FLAG_DISCARD != 0 {
            self.buf.fill(0);
        } else {
            self.log.read_exact_at(&mut self.buf, e.data_offset).with_context(|| format!("read entry {}'s data", e.index))?;
        }
        self.image
            .write_all_at(&self.buf, e.sector * self.sectorsize)
            .with_context(|| format!("write entry {} to sector {}", e.index, e.sector))?;
        Ok(())
    }
}

/// Checks a mark name against the workload's scheme (`p<N>` for promise N).
pub fn promise_index(mark: &str) -> Option<usize> {
    mark.strip_prefix('p')?.parse().ok()
}

/// Fails unless the log was closed cleanly (its last entry is the target's own end mark).
pub fn check_closed(log: &Log) -> Result<()> {
    match log.entries.last().and_then(|e| e.mark.as_deref()) {
        Some("dm-log-writes-end") => Ok(()),
        other => bail!("the log does not end with the target's `dm-log-writes-end` mark (last mark {other:?}): the guest did not remove the target before power-off"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a log image by hand from the documented layout and reads it back.
    #[test]
    fn parses_hand_built_log() {
        let s = 512usize;
        let mut img = vec![0u8; s];
        img[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        img[8..16].copy_from_slice(&VERSION.to_le_bytes());
        img[16..24].copy_from_slice(&3u64.to_le_bytes());
        img[24..28].copy_from_slice(&(s as u32).to_le_bytes());
        let entry = |sector: u64, n: u64, flags: u64, data: &[u8]| {
            let mut h = vec![0u8; s];
            h[0..8].copy_from_slice(&sector.to_le_bytes());
            h[8..16].copy_from_slice(&n.to_le_bytes());
            h[16..24].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
            if flags & FLAG_MARK != 0 {
                h[32..32 + data.len()].copy_from_slice(data);
            }
            h
        };
        img.extend(entry(2, 1, 0, &[]));
        img.extend(vec![0xAB; s]);
        img.extend(entry(0, 0, FLAG_FLUSH, &[]));
        img.extend(entry(0, 0, FLAG_MARK, b"p7"));
        let dir = tempfile::tempdir().unwrap();
        let (log_path, image_path) = (dir.path().join("log"), dir.path().join("img"));
        std::fs::File::create(&log_path).unwrap().write_all(&img).unwrap();
        std::fs::write(&image_path, vec![0u8; 4 * s]).unwrap();
        let log = Log::read(&log_path).unwrap();
        assert_eq!(log.entries.len(), 3);
        assert_eq!((log.entries[0].sector, log.entries[0].kind().as_str()), (2, "write"));
        assert!(!log.entries[0].is_crash_point() && log.entries[1].is_crash_point());
        assert_eq!(log.entries[2].mark.as_deref(), Some("p7"));
        assert_eq!(promise_index("p7"), Some(7));
        let mut r = Replayer::new(&log_path, &image_path, 512).unwrap();
        for e in &log.entries {
            r.apply(e).unwrap();
        }
        let out = std::fs::read(&image_path).unwrap();
        assert!(out[2 * s..3 * s].iter().all(|&b| b == 0xAB) && out[..2 * s].iter().all(|&b| b == 0));
        assert!(check_closed(&log).is_err(), "a log without the end mark must be refused");
    }

    #[test]
    fn refuses_wrong_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, vec![0u8; 1024]).unwrap();
        let err = Log::read(&p).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
    }
}
