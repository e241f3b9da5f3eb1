//! Reading what the benchmark measures out of `/proc`: proportional set size, CPU time and bytes
//! sent to the block layer, per process, and the process tree (to find pyca's children and the
//! ffmpeg it starts).
//!
//! Everything here is a plain read of one small file; a process that has gone away reads as
//! `None`, because the benchmark races processes that end on their own (ffmpeg at the end of the
//! scheduled event).

use std::collections::HashMap;
use std::process::Command;

/// Cumulative counters of one process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// `write_bytes` of /proc/PID/io: bytes this process caused to be sent to storage (page-cache
    /// dirtying on ext4 is charged to the writer when it writes, so this is what reaches the disk,
    /// headers, index and journal included, but not re-reads).
    pub write_bytes: u64,
}

/// Clock ticks per second for /proc/PID/stat times (`getconf CLK_TCK`; 100 on every Linux we run).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The fields of /proc/PID/stat after the `(comm)` field, which may itself contain spaces and
/// parentheses; index 0 is the state (field 3 in proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Parent pid (field 4 of /proc/PID/stat).
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// utime + stime (fields 14 and 15) and write_bytes.
pub fn counters(pid: u32) -> Option<Counters> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let write_bytes = field_kb_or_bytes(&io, "write_bytes:")?;
    Some(Counters {
        cpu_ticks: utime + stime,
        write_bytes,
    })
}

/// [`counters`] of a process minus those of its live threads named `thread` (e.g. lecternd's
/// `stitcher`, which remuxes a recording once it has stopped: its writes are the stitch, not the
/// recording). A thread's counters live in `/proc/PID/task/TID/{stat,io}`.
pub fn counters_excluding(pid: u32, thread: &str) -> Option<Counters> {
    let mut total = counters(pid)?;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != thread {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let io = std::fs::read_to_string(dir.join("io")).ok()?;
        total.cpu_ticks = total.cpu_ticks.saturating_sub(ticks);
        total.write_bytes = total.write_bytes.saturating_sub(field_kb_or_bytes(&io, "write_bytes:")?);
    }
    Some(total)
}

/// Busy ticks of the whole machine, all CPUs together (/proc/stat: everything but idle and
/// iowait), to tell how much else ran during a measurement.
pub fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    v.iter()
        .take(8)
        .sum::<u64>()
        .saturating_sub(v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0))
}

/// The pids of every process on the machine (the numeric entries of /proc).
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
}

/// CPU ticks (utime + stime) and command name of every process on the machine, by pid.
pub fn all_cpu_ticks() -> HashMap<u32, (String, u64)> {
    let mut all = HashMap::new();
    for pid in pids() {
        if let Some(c) = counters_cpu_only(pid) {
            all.insert(pid, (comm(pid), c));
        }
    }
    all
}

fn counters_cpu_only(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Proportional set size in KiB from /proc/PID/smaps_rollup: private pages in full plus each
/// shared page divided by the number of processes mapping it, so PSS of several processes adds up
/// to the memory they really cost together.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field_kb_or_bytes(&text, "Pss:")
}

/// PSS in KiB per mapping name from /proc/PID/smaps (anonymous mappings as "[anon]"), largest
/// first: where a process's memory goes (encoder buffers on the heap, or shared libraries).
pub fn pss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut sums: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        // A mapping header starts with an address range "start-end"; its 6th field is the name.
        if first.contains('-') && !first.ends_with(':') {
            current = words.nth(4).map_or_else(
                || "[anon]".to_owned(),
                |n| n.rsplit('/').next().unwrap_or(n).to_owned(),
            );
        } else if first == "Pss:" {
            *sums.entry(current.clone()).or_default() +=
                words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = sums.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// Anonymous memory backed by transparent huge pages, in KiB (`AnonHugePages:` of
/// /proc/PID/smaps_rollup): x86 builds of libx264 ask for them for their frame planes.
pub fn anon_huge_pages_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| field_kb_or_bytes(&t, "AnonHugePages:"))
        .unwrap_or(0)
}

/// glibc's malloc arenas other than the main one (`[heap]`) live in heaps of this size, aligned
/// to it: the used part read-write, the rest reserved without access (`HEAP_MAX_SIZE`, 64-bit).
const ARENA_HEAP: u64 = 64 << 20;

/// The anonymous mappings of `pid` (no name in /proc/PID/smaps) by what they most likely are,
/// with their PSS in KiB and how many there are, largest first:
///
/// * a malloc arena: read-write at a 64 MiB boundary, followed by its no-access remainder up to
///   the next boundary (glibc gives threads their own arenas, up to 8 per core);
/// * a thread stack: read-write directly above a small no-access guard (glibc's default guard
///   is one page);
/// * other: anything else read-write, mostly blocks above malloc's mmap threshold (video frames,
///   encoder buffers);
/// * reserved: mappings without access (arena remainders, guards), which cost nothing.
///
/// It is a heuristic from addresses and permissions, good enough to say where memory goes.
pub fn anon_by_kind(pid: u32) -> Vec<(&'static str, (u64, u32))> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_or_else(|_| Vec::new(), |t| anon_kinds(&t))
}

/// [`anon_by_kind`] of the text of a /proc/PID/smaps.
fn anon_kinds(text: &str) -> Vec<(&'static str, (u64, u32))> {
    // (start, end, perms, anonymous, pss KiB) of every mapping, in address order.
    let mut maps: Vec<(u64, u64, String, bool, u64)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                continue;
            };
            let perms = words.next().unwrap_or("").to_owned();
            let anonymous = words.nth(3).is_none();
            maps.push((start, end, perms, anonymous, 0));
        } else if first == "Pss:" {
            if let Some(m) = maps.last_mut() {
                m.4 += words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
    }
    let mut kinds: HashMap<&'static str, (u64, u32)> = HashMap::new();
    for (i, (start, end, perms, anonymous, pss)) in maps.iter().enumerate() {
        if !anonymous {
            continue;
        }
        let no_access = |j: usize| maps.get(j).filter(|m| m.3 && m.2.starts_with("---"));
        let kind = if perms.starts_with("---") {
            "reserved, no access"
        } else if start % ARENA_HEAP == 0
            && (end - start == ARENA_HEAP
                || no_access(i + 1).is_some_and(|m| m.0 == *end && m.1 == start + ARENA_HEAP))
        {
            "malloc arenas of threads"
        } else if i > 0 && no_access(i - 1).is_some_and(|m| m.1 == *start && m.1 - m.0 <= 64 << 10) {
            "thread stacks"
        } else {
            "other (large mmap'd blocks: video frames, encoder buffers)"
        };
        let e = kinds.entry(kind).or_default();
        e.0 += pss;
        e.1 += 1;
    }
    let mut v: Vec<_> = kinds.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1 .0));
    v
}

/// The number after `key` on the line that starts with it (the unit, if any, is ignored).
fn field_kb_or_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The short command name (/proc/PID/comm).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// All live descendants of `root` (children, grandchildren, ...), not `root` itself.
pub fn descendants(root: u32) -> Vec<u32> {
    // pid 0 is the kernel's: its "descendants" are every process on the machine.
    if root == 0 {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in pids() {
        if let Some(parent) = ppid(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if alive(c) {
                out.push(c);
            }
            todo.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(super::pss_kib(me).unwrap() > 0);
        assert!(super::counters(me).is_some());
        assert!(super::alive(me));
        assert_eq!(super::ppid(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn anonymous_memory_by_kind() {
        // A thread's arena (64 MiB aligned, with its remainder), a stack above its guard page,
        // a large block, a named library and the main heap (named: not anonymous).
        let smaps = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Pss:                2000 kB
7f0000200000-7f0004000000 ---p 00000000 00:00 0
Pss:                   0 kB
7f0010000000-7f0010001000 ---p 00000000 00:00 0
Pss:                   0 kB
7f0010001000-7f0010801000 rw-p 00000000 00:00 0
Pss:                  40 kB
7f0020000000-7f0020152000 rw-p 00000000 00:00 0
Pss:                1352 kB
7f0030000000-7f0030100000 r-xp 00000000 08:01 1234    /usr/lib/libx264.so.164
Pss:                1152 kB
55d000000000-55d000400000 rw-p 00000000 00:00 0       [heap]
Pss:                3640 kB
";
        let kinds = super::anon_kinds(smaps);
        let get = |k: &str| kinds.iter().find(|e| e.0.starts_with(k)).map(|e| e.1);
        assert_eq!(get("malloc arenas"), Some((2000, 1)));
        assert_eq!(get("thread stacks"), Some((40, 1)));
        assert_eq!(get("other"), Some((1352, 1)));
        assert_eq!(get("reserved"), Some((0, 2)));
        assert_eq!(kinds.len(), 4, "named mappings are not anonymous: {kinds:?}");
    }

    #[test]
    fn field_parsing() {
        assert_eq!(
            super::field_kb_or_bytes("Rss: 10 kB\nPss:  7 kB\n", "Pss:"),
            Some(7)
        );
        assert_eq!(
            super::field_kb_or_bytes("rchar: 1\nwrite_bytes: 4096\n", "write_bytes:"),
            Some(4096)
        );
        assert_eq!(super::field_kb_or_bytes("Rss: 10 kB\n", "Pss:"), None);
    }
}
