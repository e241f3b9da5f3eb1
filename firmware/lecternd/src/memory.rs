//! The daemon's process-wide memory settings, applied once by `main` before the daemon starts
//! any thread: no transparent huge pages, and a fixed malloc mmap threshold. Each was measured
//! on its own with the recording benchmark (docs/benchmarks.md, "Memory: where lecternd's PSS
//! goes"; docs/decisions.md D25).
//!
//! **No transparent huge pages (THP).** libx264 built for x86 Linux asks the kernel for huge
//! pages (`madvise(MADV_HUGEPAGE)`, x264's `HAVE_THP`) for every allocation of 1.75 MiB or more,
//! which at 720p are its frame planes. The kernel then backs each 2 MiB-aligned stretch of them
//! with a whole 2 MiB page at the first touch, so planes and spare frames that are used in part
//! cost their full size: 18 MiB of lecternd's memory were huge pages, and without them its PSS
//! was 7 MiB lower at the same CPU. `PR_SET_THP_DISABLE` makes the kernel ignore those requests
//! for this process (and the children it starts). On arm64 (the Raspberry Pi) x264 never asks,
//! so there this changes nothing; where a distribution runs THP in `always` mode it also keeps
//! GStreamer's frame buffers from being rounded up.
//!
//! **A fixed mmap threshold (glibc).** glibc serves blocks above `M_MMAP_THRESHOLD` (128 KiB at
//! start) with their own mapping, returned to the kernel when freed, but raises the threshold to
//! the size of every such block that is freed. After the first video frame (1.3 MiB at 720p) goes
//! back, frame-sized blocks come from the threads' malloc arenas instead, and what an arena once
//! held it mostly keeps: with the confidence preview open (a scaler and a JPEG encoder on their
//! own streaming thread) the arenas grew from 3 to 10 MiB. Fixed at [`MMAP_THRESHOLD`] they stay
//! at 3 MiB; with the preview closed nothing changed. A fixed value also fixes the trim threshold
//! (glibc stops adjusting both), which is fine at its 128 KiB default.
//!
//! Left at glibc's defaults, measured: `M_ARENA_MAX = 2` moved the streaming threads' arenas
//! (2.9 MiB) into one without saving any of it.

use std::io;

/// Blocks this large or larger get their own mapping: well below a video frame (1.3 MiB at 720p)
/// or an upload chunk (4 MiB), far above the buffers of the media path (the capture's 1.3 KB
/// chunks, the journal's 16 KiB write buffer), which stay in the arenas.
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Applies both settings; returns what could not be applied (each only costs memory, so the
/// caller logs it and goes on).
pub fn tune() -> Vec<String> {
    let mut failed = Vec::new();
    if let Err(e) = no_transparent_huge_pages() {
        failed.push(format!("transparent huge pages stay on ({e})"));
    }
    if !fixed_mmap_threshold() {
        failed.push(format!("malloc's mmap threshold stays dynamic (mallopt M_MMAP_THRESHOLD {MMAP_THRESHOLD} refused)"));
    }
    failed
}

/// Turns transparent huge pages off for this process. A kernel built without THP has nothing to
/// turn off and answers `EINVAL`.
fn no_transparent_huge_pages() -> io::Result<()> {
    let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE reads integer arguments only (prctl is variadic: they are passed
    // as unsigned long, and the kernel refuses the call unless the unused ones are 0).
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fixes glibc's mmap threshold; true when it took. Other C libraries have no such knob (musl's
/// malloc maps large blocks on its own terms), so there it is nothing to do.
fn fixed_mmap_threshold() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt takes two integers; called while the process has one thread.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_settings_take() {
        assert_eq!(super::tune(), Vec::<String>::new());
        let zero: libc::c_ulong = 0;
        // SAFETY: PR_GET_THP_DISABLE takes no pointers and returns the flag.
        let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, zero, zero, zero, zero) };
        assert_eq!(off, 1, "THP still allowed for this process");
    }
}
