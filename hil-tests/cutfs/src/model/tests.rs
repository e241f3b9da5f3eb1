//! The durability rules on the bare model, without FUSE: each case builds a small tree, syncs some
//! of it, cuts, and states what must remain.

use std::ffi::OsStr;

use super::*;

fn fs() -> Model {
    Model::new(0, 0)
}

fn file(m: &mut Model, parent: u64, name: &str, data: &[u8]) -> u64 {
    let ino = m.create(parent, OsStr::new(name), 0o644, 0, 0, false).unwrap().ino;
    m.write(ino, 0, data).unwrap();
    ino
}

fn content(m: &Model, parent: u64, name: &str) -> Option<Vec<u8>> {
    let attr = m.lookup(parent, OsStr::new(name)).ok()?;
    Some(m.read(attr.ino, 0, attr.size as u32).unwrap())
}

#[test]
fn unsynced_data_vanishes_and_synced_data_survives() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a", b"first");
    m.fsyncdir(ROOT).unwrap();
    m.fsync(a).unwrap();
    m.write(a, 5, b" second").unwrap();
    assert_eq!(content(&m, ROOT, "a").unwrap(), b"first second");
    let stats = m.cut();
    assert_eq!(content(&m, ROOT, "a").unwrap(), b"first");
    assert_eq!(stats.last_cut_dropped_bytes, 7);
}

#[test]
fn entry_durable_without_data_is_an_empty_file() {
    let mut m = fs();
    file(&mut m, ROOT, "a", b"data");
    m.fsyncdir(ROOT).unwrap();
    m.cut();
    assert_eq!(content(&m, ROOT, "a").unwrap(), b"");
}

#[test]
fn file_fsynced_without_dir_fsync_vanishes() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a", b"data");
    m.fsync(a).unwrap();
    let stats = m.cut();
    assert_eq!(content(&m, ROOT, "a"), None);
    assert_eq!(stats.last_cut_dropped_inodes, 1);
    // Fsyncing the directory later (before a cut) is enough, whatever the order.
    let b = file(&mut m, ROOT, "b", b"data");
    m.fsync(b).unwrap();
    m.fsyncdir(ROOT).unwrap();
    m.cut();
    assert_eq!(content(&m, ROOT, "b").unwrap(), b"data");
}

#[test]
fn rename_is_durable_only_after_dir_fsync() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "tmp", b"v1");
    m.fsync(a).unwrap();
    m.fsyncdir(ROOT).unwrap();
    m.rename(ROOT, OsStr::new("tmp"), ROOT, OsStr::new("final"), false).unwrap();
    m.cut();
    assert_eq!(content(&m, ROOT, "final"), None);
    assert_eq!(content(&m, ROOT, "tmp").unwrap(), b"v1");
    m.rename(ROOT, OsStr::new("tmp"), ROOT, OsStr::new("final"), false).unwrap();
    m.fsyncdir(ROOT).unwrap();
    m.cut();
    assert_eq!(content(&m, ROOT, "final").unwrap(), b"v1");
    assert_eq!(content(&m, ROOT, "tmp"), None);
}

#[test]
fn subdirectory_needs_its_parent_fsynced_too() {
    let mut m = fs();
    let d = m.create(ROOT, OsStr::new("d"), 0o755, 0, 0, true).unwrap().ino;
    let f = file(&mut m, d, "seg", b"x");
    m.fsync(f).unwrap();
    m.fsyncdir(d).unwrap();
    m.cut();
    assert!(m.lookup(ROOT, OsStr::new("d")).is_err());
    let d = m.create(ROOT, OsStr::new("d"), 0o755, 0, 0, true).unwrap().ino;
    let f = file(&mut m, d, "seg", b"x");
    m.fsync(f).unwrap();
    m.fsyncdir(d).unwrap();
    m.fsyncdir(ROOT).unwrap();
    m.cut();
    let d = m.lookup(ROOT, OsStr::new("d")).unwrap().ino;
    assert_eq!(content(&m, d, "seg").unwrap(), b"x");
}

#[test]
fn unlink_is_undone_by_a_cut_without_dir_fsync() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a", b"keep");
    m.fsync(a).unwrap();
    m.fsyncdir(ROOT).unwrap();
    m.remove(ROOT, OsStr::new("a"), false).unwrap();
    assert!(m.lookup(ROOT, OsStr::new("a")).is_err());
    m.cut();
    assert_eq!(content(&m, ROOT, "a").unwrap(), b"keep");
}

#[test]
fn truncate_follows_the_data_rule_and_zeroes_the_tail() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a", &[7; 40_000]);
    m.fsync(a).unwrap();
    m.fsyncdir(ROOT).unwrap();
    m.setattr(a, SetAttr { size: Some(10), ..SetAttr::default() }).unwrap();
    m.setattr(a, SetAttr { size: Some(20), ..SetAttr::default() }).unwrap();
    let mut expect = vec![7; 10];
    expect.resize(20, 0);
    assert_eq!(content(&m, ROOT, "a").unwrap(), expect);
    m.cut();
    assert_eq!(content(&m, ROOT, "a").unwrap(), vec![7; 40_000]);
}

#[test]
fn sparse_writes_read_back_with_zeros() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a", b"");
    m.write(a, 50_000, b"end").unwrap();
    let data = content(&m, ROOT, "a").unwrap();
    assert_eq!(data.len(), 50_003);
    assert!(data[..50_000].iter().all(|&b| b == 0));
    assert_eq!(&data[50_000..], b"end");
}

#[test]
fn namespace_errors() {
    let mut m = fs();
    let d = m.create(ROOT, OsStr::new("d"), 0o755, 0, 0, true).unwrap().ino;
    file(&mut m, d, "f", b"");
    let check = |r: R<()>, e: Errno| assert_eq!(r.unwrap_err(), e);
    check(m.create(ROOT, OsStr::new("d"), 0o644, 0, 0, false).map(drop), Errno::EEXIST);
    check(m.remove(ROOT, OsStr::new("d"), true), Errno::ENOTEMPTY);
    check(m.remove(ROOT, OsStr::new("d"), false), Errno::EISDIR);
    check(m.remove(d, OsStr::new("f"), true), Errno::ENOTDIR);
    check(m.remove(ROOT, OsStr::new("nope"), false), Errno::ENOENT);
    check(m.rename(ROOT, OsStr::new("d"), d, OsStr::new("loop"), false), Errno::EINVAL);
    file(&mut m, ROOT, "g", b"");
    check(m.rename(ROOT, OsStr::new("g"), d, OsStr::new("f"), true), Errno::EEXIST);
}

#[test]
fn an_unlinked_open_file_stays_readable_until_closed() {
    let mut m = fs();
    let a = file(&mut m, ROOT, "a", b"still here");
    m.open(a).unwrap();
    m.remove(ROOT, OsStr::new("a"), false).unwrap();
    assert_eq!(m.read(a, 0, 100).unwrap(), b"still here");
    m.release(a);
    assert_eq!(m.read(a, 0, 100).unwrap_err(), Errno::ENOENT);
}
