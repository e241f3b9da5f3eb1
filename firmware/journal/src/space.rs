//! The storage-full guard: how much space is free under the media directory, and the reserve
//! the journal keeps there. Free space is `statvfs(2)`'s `f_bavail × f_frsize` (what an
//! unprivileged writer may still use), read through [`FreeSpace`], a plain function pointer so
//! tests can hand in a simulated card without touching a real filesystem. The journal reads it
//! once when a part opens and once per segment cut, never per write, so the guard costs one
//! syscall every ~2 s of media.

use std::io;
use std::path::Path;

use crate::error::{JournalError, Result};

/// Reads the bytes free for writing on the filesystem holding a path, or `None` when the
/// filesystem does not report its size (zero total blocks, as some FUSE servers and pseudo
/// filesystems answer): a volume that states no size cannot be judged full.
#[derive(Clone, Copy)]
pub struct FreeSpace(pub fn(&Path) -> io::Result<Option<u64>>);

impl FreeSpace {
    /// The real reading: `statvfs(2)`.
    pub const STATVFS: FreeSpace = FreeSpace(statvfs_free);
}

impl std::fmt::Debug for FreeSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if std::ptr::fn_addr_eq(self.0, FreeSpace::STATVFS.0) {
            f.write_str("FreeSpace(statvfs)")
        } else {
            f.write_str("FreeSpace(simulated)")
        }
    }
}

impl PartialEq for FreeSpace {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for FreeSpace {}

/// `statvfs(2)` of `path`: `f_bavail × f_frsize`, or `None` when `f_blocks` is zero.
pub fn statvfs_free(path: &Path) -> io::Result<Option<u64>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a properly sized, writable
    // `statvfs` that the call fills; nothing is retained after it returns.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.f_blocks == 0 {
        return Ok(None);
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64)))
}

/// Refuses with [`JournalError::StorageFull`] when less than `reserve` bytes are free under
/// `media_dir`. A zero reserve is the guard switched off and reads nothing. A failed reading is
/// an I/O error naming the media directory: the journal does not write blind.
pub(crate) fn check_reserve(free_space: FreeSpace, reserve: u64, media_dir: &Path) -> Result<()> {
    if reserve == 0 {
        return Ok(());
    }
    let free = (free_space.0)(media_dir).map_err(|source| JournalError::Io {
        action: "read free space (statvfs) of",
        path: media_dir.to_path_buf(),
        source,
    })?;
    match free {
        Some(free) if free < reserve => Err(JournalError::StorageFull {
            path: media_dir.to_path_buf(),
            free_bytes: free,
            reserve_bytes: reserve,
        }),
        _ => Ok(()),
    }
}
