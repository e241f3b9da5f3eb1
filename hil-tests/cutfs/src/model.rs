//! The sans-IO core of cutfs: two inode tables, *live* (what every reader sees now) and *durable*
//! (what would still be on the card after a power cut), and the rules that move state from the
//! first to the second.
//!
//! Rules (the strictest reading of POSIX that real filesystems are allowed to implement):
//!
//! - A file's content, size and attributes become durable only when that file is fsynced or
//!   fdatasynced ([`Model::fsync`]). Both calls are treated alike: the harness models the data
//!   rule, not the metadata subtleties of `fdatasync`.
//! - A directory's entries (create, mkdir, rename, unlink, rmdir, in either parent) become durable
//!   only when that directory is fsynced ([`Model::fsyncdir`]). An entry made durable before its
//!   file was ever fsynced points at an empty file of the same kind, as an inode whose metadata was
//!   journalled without its data would.
//! - A file fsynced but whose entry never became durable is unreachable after a cut: gone.
//! - [`Model::cut`] replaces the live table with the durable one and drops whatever the durable
//!   tree cannot reach.
//!
//! File content lives in 16 KiB copy-on-write blocks shared between the two tables, so an fsync
//! copies block pointers, not bytes, and memory is bounded by the data written plus the blocks
//! changed since their last fsync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, FileType};
use serde::Serialize;

/// The root directory's inode number (FUSE's fixed value).
pub const ROOT: u64 = 1;
const BLOCK: usize = 16 * 1024;

/// What an inode holds.
#[derive(Clone, Debug)]
enum Content {
    /// `blocks[i]` covers bytes `i * BLOCK ..`; `None` is a hole that reads as zeros.
    File { size: u64, blocks: Vec<Option<Arc<Vec<u8>>>> },
    Dir { entries: BTreeMap<OsString, u64> },
}

/// One inode: content plus the attributes `stat` reports.
#[derive(Clone, Debug)]
struct Node {
    content: Content,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Number of directory entries naming this inode in the table it lives in (2 for a directory,
    /// which is what `stat` conventionally reports without counting subdirectories).
    nlink: u32,
}

impl Node {
    fn kind(&self) -> FileType {
        match self.content {
            Content::File { .. } => FileType::RegularFile,
            Content::Dir { .. } => FileType::Directory,
        }
    }

    fn size(&self) -> u64 {
        match &self.content {
            Content::File { size, .. } => *size,
            Content::Dir { entries } => entries.len() as u64,
        }
    }

    /// The same inode with its content emptied: what a cut leaves of an inode whose directory entry
    /// was made durable but whose data never was.
    fn skeleton(&self) -> Node {
        let content = match self.content {
            Content::File { .. } => Content::File { size: 0, blocks: Vec::new() },
            Content::Dir { .. } => Content::Dir { entries: BTreeMap::new() },
        };
        Node { content, ..self.clone() }
    }
}

/// The attributes of one inode, as [`Model`] reports them to the FUSE layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileType,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// Counters since the filesystem was created, and what the last cut threw away.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub cuts: u64,
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub bytes_written: u64,
    /// Live inodes reachable before the last cut that the durable tree could not reach.
    pub last_cut_dropped_inodes: u64,
    /// Bytes of reachable files' content that the last cut rolled back (size differences plus
    /// whole files that were dropped).
    pub last_cut_dropped_bytes: u64,
}

/// Attribute changes a `setattr` may ask for (times are applied as "now": the model does not
/// promise exact timestamps, only the durability rules).
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub touch: bool,
}

/// The filesystem state: see the module doc for the rules.
#[derive(Debug)]
pub struct Model {
    live: HashMap<u64, Node>,
    durable: HashMap<u64, Node>,
    /// Open handles per live inode: an unlinked inode stays readable until its last close.
    open: HashMap<u64, u32>,
    next_ino: u64,
    stats: Stats,
}

type R<T> = Result<T, Errno>;

impl Model {
    /// An empty filesystem whose root directory (owned by `uid`/`gid`) is already durable.
    pub fn new(uid: u32, gid: u32) -> Model {
        let now = SystemTime::now();
        let root = Node {
            content: Content::Dir { entries: BTreeMap::new() },
            perm: 0o755,
            uid,
            gid,
            mtime: now,
            ctime: now,
            nlink: 2,
        };
        Model {
            live: HashMap::from([(ROOT, root.clone())]),
            durable: HashMap::from([(ROOT, root)]),
            open: HashMap::new(),
            next_ino: ROOT + 1,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    fn node(&self, ino: u64) -> R<&Node> {
        self.live.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> R<&mut Node> {
        self.live.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> R<&BTreeMap<OsString, u64>> {
        match &self.node(dir)?.content {
            Content::Dir { entries } => Ok(entries),
            Content::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> R<&mut BTreeMap<OsString, u64>> {
        let node = self.node_mut(dir)?;
        node.mtime = SystemTime::now();
        node.ctime = node.mtime;
        match &mut node.content {
            Content::Dir { entries } => Ok(entries),
            Content::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    pub fn getattr(&self, ino: u64) -> R<Attr> {
        let n = self.node(ino)?;
        Ok(Attr {
            ino,
            kind: n.kind(),
            size: n.size(),
            perm: n.perm,
            uid: n.uid,
            gid: n.gid,
            nlink: n.nlink,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> R<Attr> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        self.getattr(ino)
    }

    /// Creates a regular file (`dir == false`) or a directory named `name` in `parent`.
    pub fn create(&mut self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32, dir: bool) -> R<Attr> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let now = SystemTime::now();
        let content = if dir {
            Content::Dir { entries: BTreeMap::new() }
        } else {
            Content::File { size: 0, blocks: Vec::new() }
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if dir { 2 } else { 1 };
        self.live.insert(ino, Node { content, perm: (mode & 0o7777) as u16, uid, gid, mtime: now, ctime: now, nlink });
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.getattr(ino)
    }

    /// Removes the entry `name` from `parent`; `dir` says whether this is `rmdir` or `unlink`.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> R<()> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match (&self.node(ino)?.content, dir) {
            (Content::Dir { entries }, true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Content::Dir { .. }, false) => return Err(Errno::EISDIR),
            (Content::File { .. }, true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.unref(ino);
        Ok(())
    }

    /// Drops one entry's reference to `ino`; the inode leaves the live table once nothing names it
    /// and nothing has it open.
    fn unref(&mut self, ino: u64) {
        if let Some(n) = self.live.get_mut(&ino) {
            n.nlink = match n.content {
                Content::Dir { .. } => 0,
                Content::File { .. } => n.nlink.saturating_sub(1),
            };
            if n.nlink == 0 && !self.open.contains_key(&ino) {
                self.live.remove(&ino);
            }
        }
    }

    pub fn rename(&mut self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, noreplace: bool) -> R<()> {
        let ino = *self.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
        let moving_dir = self.node(ino)?.kind() == FileType::Directory;
        if moving_dir && (ino == newparent || self.is_ancestor(ino, newparent)) {
            return Err(Errno::EINVAL);
        }
        if let Some(&old) = self.entries(newparent)?.get(newname) {
            if old == ino {
                return Ok(());
            }
            if noreplace {
                return Err(Errno::EEXIST);
            }
            match (&self.node(old)?.content, moving_dir) {
                (Content::Dir { entries }, true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                (Content::Dir { .. }, false) => return Err(Errno::EISDIR),
                (Content::File { .. }, true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
            self.unref(old);
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(newparent)?.insert(newname.to_owned(), ino);
        Ok(())
    }

    /// Whether directory `dir` contains `ino` anywhere below it (live tree).
    fn is_ancestor(&self, dir: u64, ino: u64) -> bool {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = self.entries(d) {
                for &child in entries.values() {
                    if child == ino {
                        return true;
                    }
                    stack.push(child);
                }
            }
        }
        false
    }

    pub fn readdir(&self, dir: u64) -> R<Vec<(u64, FileType, OsString)>> {
        self.entries(dir)?
            .iter()
            .map(|(name, &ino)| Ok((ino, self.node(ino)?.kind(), name.clone())))
            .collect()
    }

    pub fn open(&mut self, ino: u64) -> R<()> {
        self.node(ino)?;
        *self.open.entry(ino).or_default() += 1;
        Ok(())
    }

    pub fn release(&mut self, ino: u64) {
        if let Some(count) = self.open.get_mut(&ino) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&ino);
                if self.live.get(&ino).is_some_and(|n| n.nlink == 0) {
                    self.live.remove(&ino);
                }
            }
        }
    }

    pub fn read(&self, ino: u64, offset: u64, len: u32) -> R<Vec<u8>> {
        let Content::File { size, blocks } = &self.node(ino)?.content else { return Err(Errno::EISDIR) };
        let end = (offset + u64::from(len)).min(*size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (b, within) = ((pos / BLOCK as u64) as usize, (pos % BLOCK as u64) as usize);
            let take = (BLOCK - within).min((end - pos) as usize);
            match blocks.get(b).and_then(Option::as_ref) {
                Some(block) => out.extend_from_slice(&block[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            pos += take as u64;
        }
        Ok(out)
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> R<u32> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        let Content::File { size, blocks } = &mut node.content else { return Err(Errno::EISDIR) };
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        let nblocks = end.div_ceil(BLOCK as u64) as usize;
        if blocks.len() < nblocks {
            blocks.resize(nblocks, None);
        }
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (b, within) = ((pos / BLOCK as u64) as usize, (pos % BLOCK as u64) as usize);
            let take = (BLOCK - within).min(rest.len());
            // Arc::make_mut copies a block only if the durable table still shares it.
            let block = Arc::make_mut(blocks[b].get_or_insert_with(|| Arc::new(vec![0; BLOCK])));
            block[within..within + take].copy_from_slice(&rest[..take]);
            pos += take as u64;
            rest = &rest[take..];
        }
        *size = (*size).max(end);
        self.stats.bytes_written += data.len() as u64;
        Ok(data.len() as u32)
    }

    pub fn setattr(&mut self, ino: u64, set: SetAttr) -> R<Attr> {
        let node = self.node_mut(ino)?;
        let now = SystemTime::now();
        if let Some(mode) = set.mode {
            node.perm = (mode & 0o7777) as u16;
        }
        node.uid = set.uid.unwrap_or(node.uid);
        node.gid = set.gid.unwrap_or(node.gid);
        if let Some(new) = set.size {
            let Content::File { size, blocks } = &mut node.content else { return Err(Errno::EISDIR) };
            truncate(size, blocks, new);
            node.mtime = now;
        }
        if set.touch {
            node.mtime = now;
        }
        node.ctime = now;
        self.getattr(ino)
    }

    /// `fsync`/`fdatasync` of a file: its content and attributes become durable, its name does not.
    pub fn fsync(&mut self, ino: u64) -> R<()> {
        let node = self.node(ino)?.clone();
        self.stats.fsyncs += 1;
        match (self.durable.get_mut(&ino), &node.content) {
            // A directory fsynced through FUSE_FSYNC (not FSYNCDIR) still only persists its own
            // attributes; its entries follow the directory rule.
            (Some(d), Content::Dir { .. }) => {
                d.perm = node.perm;
                d.mtime = node.mtime;
            }
            (None, Content::Dir { .. }) => {
                self.durable.insert(ino, node.skeleton());
            }
            (_, Content::File { .. }) => {
                let nlink = self.durable.get(&ino).map_or(0, |d| d.nlink);
                self.durable.insert(ino, Node { nlink, ..node });
            }
        }
        Ok(())
    }

    /// `fsync` of a directory: its current entries become durable. Inodes that become reachable this
    /// way without ever having been fsynced are durable as empty skeletons.
    pub fn fsyncdir(&mut self, dir: u64) -> R<()> {
        let entries = self.entries(dir)?.clone();
        self.stats.fsyncdirs += 1;
        for &child in entries.values() {
            if !self.durable.contains_key(&child) {
                let skeleton = self.node(child)?.skeleton();
                self.durable.insert(child, skeleton);
            }
        }
        let live = self.node(dir)?.clone();
        match self.durable.get_mut(&dir) {
            Some(Node { content: Content::Dir { entries: d }, .. }) => *d = entries,
            _ => {
                self.durable.insert(dir, live);
            }
        }
        // Durable inodes that neither the durable tree nor the live table can reach again are dead.
        let reachable = reachable(&self.durable);
        self.durable.retain(|ino, _| reachable.contains(ino) || self.live.contains_key(ino));
        Ok(())
    }

    /// Power cut: everything not durable is gone, and with it every open handle.
    pub fn cut(&mut self) -> Stats {
        let before = reachable(&self.live);
        let mut live = self.durable.clone();
        let after = reachable(&live);
        live.retain(|ino, _| after.contains(ino));
        let mut dropped_bytes = 0;
        for ino in &before {
            let old = self.live[ino].size();
            let new = live.get(ino).map_or(0, Node::size);
            if self.live[ino].kind() == FileType::RegularFile {
                dropped_bytes += old.saturating_sub(new);
            }
        }
        recount_links(&mut live);
        self.stats.cuts += 1;
        self.stats.last_cut_dropped_inodes = before.iter().filter(|ino| !after.contains(ino)).count() as u64;
        self.stats.last_cut_dropped_bytes = dropped_bytes;
        self.durable.retain(|ino, _| after.contains(ino));
        self.live = live;
        self.open.clear();
        self.stats.clone()
    }
}

fn truncate(size: &mut u64, blocks: &mut Vec<Option<Arc<Vec<u8>>>>, new: u64) {
    if new < *size {
        blocks.truncate(new.div_ceil(BLOCK as u64) as usize);
        let within = (new % BLOCK as u64) as usize;
        // Zero the tail of the last kept block so a later extension reads zeros, not old bytes.
        if within != 0 {
            if let Some(Some(last)) = blocks.last_mut() {
                Arc::make_mut(last)[within..].fill(0);
            }
        }
    }
    *size = new;
}

/// Inodes reachable from the root in `table`.
fn reachable(table: &HashMap<u64, Node>) -> HashSet<u64> {
    let mut seen = HashSet::from([ROOT]);
    let mut stack = vec![ROOT];
    while let Some(ino) = stack.pop() {
        if let Some(Node { content: Content::Dir { entries }, .. }) = table.get(&ino) {
            for &child in entries.values() {
                if table.contains_key(&child) && seen.insert(child) {
                    stack.push(child);
                }
            }
        }
    }
    seen
}

/// Recomputes link counts after a cut (a durable tree may name a file twice, for example after a
/// cross-directory rename of which only the target directory was fsynced, and then it is a hard link).
fn recount_links(table: &mut HashMap<u64, Node>) {
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for node in table.values() {
        if let Content::Dir { entries } = &node.content {
            for &child in entries.values() {
                *counts.entry(child).or_default() += 1;
            }
        }
    }
    for (ino, node) in table.iter_mut() {
        node.nlink = match node.content {
            Content::Dir { .. } => 2,
            Content::File { .. } => counts.get(ino).copied().unwrap_or(0),
        };
    }
    // Entries whose target did not survive would dangle: drop them.
    let present: HashSet<u64> = table.keys().copied().collect();
    for node in table.values_mut() {
        if let Content::Dir { entries } = &mut node.content {
            entries.retain(|_, ino| present.contains(ino));
        }
    }
}

#[cfg(test)]
mod tests;
