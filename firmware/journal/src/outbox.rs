//! The outbox: a persistent, ordered queue of operations waiting for a server (Opencast agent and
//! recording states, ingests), kept in the journal database so nothing queued is lost to a crash,
//! a reboot or a power cut while the server is unreachable.
//!
//! The store is generic: an entry is a `kind`, an opaque `payload` (the caller's JSON) and two
//! optional rules. What the operations mean, how they are sent and when they are retried is the
//! `lectern-opencast` crate's business.
//!
//! # Rules
//!
//! - **Order**: entries are replayed oldest first ([`Outbox::peek`]); an entry leaves the queue
//!   only by [`Outbox::ack`] (it was delivered) or [`Outbox::park`] (the server refused it for
//!   good; it stays in the table for an operator, out of the way of the entries behind it).
//! - **Coalescing** (`coalesce = true`): a new entry replaces the *newest* entry in the queue when
//!   that one has the same kind and also coalesces. Only the tail is ever replaced, so the order
//!   relative to everything else is kept and no entry that something later depends on vanishes
//!   (agent states coalesce; recording states never do).
//! - **Exactly once** (`once_key`): at most one queued entry per key, and once an entry with a
//!   key is acked the key is remembered in `outbox_done`, so enqueueing it again is refused
//!   ([`Enqueued::AlreadyDone`]). The ack deletes the entry and records the key in one
//!   transaction, so a crash cannot leave it both queued and done.
//! - **Bounded**: at most `capacity` queued entries ([`Enqueued::Full`] beyond that) and the
//!   newest [`OUTBOX_DONE_KEEP`] done keys.
//!
//! # Schema (additive, created by [`SCHEMA`])
//!
//! - `outbox(id PK, kind, payload, coalesce 0/1, once_key UNIQUE NULL, enqueued_at_ms, attempts,
//!   last_error NULL, parked 0/1)`
//! - `outbox_done(once_key PK, done_at_ms)`
//!
//! Each [`Outbox`] has its own connection, so the thread that enqueues and the threads that
//! deliver each open one on the same database; open them after [`crate::Journal::open`] has
//! created the schema. Enqueue and ack take the write lock up front (`BEGIN IMMEDIATE`): a
//! deferred transaction that read first could not wait for another writer under WAL and would
//! fail with `SQLITE_BUSY` at once.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::db;
use crate::error::{DbContext, Result};

/// The outbox tables; run by the journal's migration on every open.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    coalesce       INTEGER NOT NULL CHECK (coalesce IN (0, 1)),
    once_key       TEXT UNIQUE,
    enqueued_at_ms INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    parked         INTEGER NOT NULL DEFAULT 0 CHECK (parked IN (0, 1))
);
CREATE TABLE IF NOT EXISTS outbox_done (
    once_key   TEXT PRIMARY KEY NOT NULL,
    done_at_ms INTEGER NOT NULL
);
";

/// How many done keys are remembered (pruned oldest first).
pub const OUTBOX_DONE_KEEP: i64 = 10_000;

/// Default bound on queued entries; see [`Outbox::with_capacity`].
pub const OUTBOX_CAPACITY: i64 = 10_000;

/// An entry to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// What the payload is, e.g. `"agent_state"`.
    pub kind: &'a str,
    /// The caller's serialised operation.
    pub payload: &'a str,
    /// May replace a queued tail entry of the same kind (see the module doc).
    pub coalesce: bool,
    /// Exactly-once key (see the module doc).
    pub once_key: Option<&'a str>,
}

/// What [`Outbox::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued as a new entry.
    Added(i64),
    /// Queued as a new entry that replaced the tail entry `replaced`.
    Coalesced { id: i64, replaced: i64 },
    /// An entry with the same once-key is already queued (its id).
    AlreadyQueued(i64),
    /// An entry with the same once-key was delivered before.
    AlreadyDone,
    /// The queue holds `capacity` entries; nothing was queued.
    Full { capacity: i64 },
}

/// A queued entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub once_key: Option<String>,
    pub enqueued_at_ms: i64,
    /// Failed delivery attempts so far.
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// The persistent queue; see the module doc.
pub struct Outbox {
    conn: Connection,
    db_path: PathBuf,
    capacity: i64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("db_path", &self.db_path).field("capacity", &self.capacity).finish()
    }
}

const ENTRY_COLUMNS: &str = "id, kind, payload, once_key, enqueued_at_ms, attempts, last_error";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.get(0)?,
        kind: r.get(1)?,
        payload: r.get(2)?,
        once_key: r.get(3)?,
        enqueued_at_ms: r.get(4)?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
    })
}

impl Outbox {
    /// Opens the outbox in the journal database at `db_path` (`MEDIA/lectern.db`) with the
    /// default capacity.
    pub fn open(db_path: &Path) -> Result<Outbox> {
        Self::with_capacity(db_path, OUTBOX_CAPACITY)
    }

    /// Opens the outbox with a bound on queued entries.
    pub fn with_capacity(db_path: &Path, capacity: i64) -> Result<Outbox> {
        let mut conn = db::connect(db_path)?;
        db::migrate(&mut conn, db_path)?;
        Ok(Outbox { conn, db_path: db_path.to_path_buf(), capacity: capacity.max(1) })
    }

    /// Queues an entry under the rules in the module doc, in one transaction.
    pub fn enqueue(&mut self, e: &NewEntry<'_>, now_ms: i64) -> Result<Enqueued> {
        let p = &self.db_path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).db("begin outbox enqueue", p)?;
        if let Some(key) = e.once_key {
            let done: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM outbox_done WHERE once_key = ?1)", [key], |r| r.get(0))
                .db("look up outbox done key", p)?;
            if done {
                return Ok(Enqueued::AlreadyDone);
            }
            let queued: Option<i64> = tx
                .query_row("SELECT id FROM outbox WHERE once_key = ?1", [key], |r| r.get(0))
                .optional()
                .db("look up outbox key", p)?;
            if let Some(id) = queued {
                return Ok(Enqueued::AlreadyQueued(id));
            }
        }
        let mut replaced = None;
        if e.coalesce {
            let tail: Option<(i64, String, bool, bool)> = tx
                .query_row("SELECT id, kind, coalesce, parked FROM outbox ORDER BY id DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .db("read outbox tail", p)?;
            if let Some((id, kind, true, false)) = tail {
                if kind == e.kind {
                    tx.execute("DELETE FROM outbox WHERE id = ?1", [id]).db("coalesce outbox tail", p)?;
                    replaced = Some(id);
                }
            }
        }
        let queued: i64 = tx
            .query_row("SELECT COUNT(*) FROM outbox WHERE parked = 0", [], |r| r.get(0))
            .db("count outbox", p)?;
        if queued >= self.capacity {
            // Dropping the transaction rolls back a coalescing delete too.
            return Ok(Enqueued::Full { capacity: self.capacity });
        }
        tx.execute(
            "INSERT INTO outbox (kind, payload, coalesce, once_key, enqueued_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.kind, e.payload, e.coalesce, e.once_key, now_ms],
        )
        .db("insert outbox entry", p)?;
        let id = tx.last_insert_rowid();
        tx.commit().db("commit outbox enqueue", p)?;
        Ok(match replaced {
            Some(replaced) => Enqueued::Coalesced { id, replaced },
            None => Enqueued::Added(id),
        })
    }

    /// The oldest queued (not parked) entry.
    pub fn peek(&self) -> Result<Option<OutboxEntry>> {
        self.peek_where("1", "")
    }

    /// The oldest queued entry of this kind. Lets a consumer serve one kind on its own (long
    /// uploads on their own thread) without reordering anything within that kind.
    pub fn peek_kind(&self, kind: &str) -> Result<Option<OutboxEntry>> {
        self.peek_where("kind = ?1", kind)
    }

    /// The oldest queued entry of any other kind.
    pub fn peek_other_than(&self, kind: &str) -> Result<Option<OutboxEntry>> {
        self.peek_where("kind <> ?1", kind)
    }

    fn peek_where(&self, filter: &str, kind: &str) -> Result<Option<OutboxEntry>> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM outbox WHERE parked = 0 AND {filter} ORDER BY id LIMIT 1");
        let mut stmt = self.conn.prepare_cached(&sql).db("prepare outbox peek", &self.db_path)?;
        let r = if filter == "1" { stmt.query_row([], entry) } else { stmt.query_row([kind], entry) };
        r.optional().db("peek outbox", &self.db_path)
    }

    /// All queued (not parked) entries, oldest first, at most `limit`.
    pub fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.select("WHERE parked = 0", limit)
    }

    /// Parked entries, oldest first, at most `limit`.
    pub fn parked(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.select("WHERE parked = 1", limit)
    }

    fn select(&self, filter: &str, limit: usize) -> Result<Vec<OutboxEntry>> {
        let p = &self.db_path;
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ENTRY_COLUMNS} FROM outbox {filter} ORDER BY id LIMIT ?1"))
            .db("prepare outbox query", p)?;
        let rows = stmt.query_map([limit as i64], entry).db("query outbox", p)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db("read outbox", p)
    }

    /// Number of queued (not parked) entries.
    pub fn len(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM outbox WHERE parked = 0", [], |r| r.get(0))
            .db("count outbox", &self.db_path)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Marks an entry delivered: deletes it and, if it has a once-key, remembers the key, in one
    /// transaction. Acking an id that is gone (coalesced away meanwhile) does nothing.
    pub fn ack(&mut self, id: i64, now_ms: i64) -> Result<()> {
        self.ack_then(id, now_ms, None)
    }

    /// [`Outbox::ack`], and in the same transaction queues `follow_up` at the tail (no
    /// coalescing, no once-key, no capacity check: it replaces the entry it follows). An ingest
    /// acked with its `upload_finished` state this way can never be replayed after the server
    /// was told it finished, nor can that state be lost after the ack.
    pub fn ack_then(&mut self, id: i64, now_ms: i64, follow_up: Option<&NewEntry<'_>>) -> Result<()> {
        let p = &self.db_path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).db("begin outbox ack", p)?;
        let key: Option<Option<String>> = tx
            .query_row("SELECT once_key FROM outbox WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .db("read outbox entry", p)?;
        if let Some(Some(key)) = &key {
            tx.execute("INSERT OR IGNORE INTO outbox_done (once_key, done_at_ms) VALUES (?1, ?2)", params![key, now_ms])
                .db("record outbox done key", p)?;
            // Keys are remembered in insertion order; the oldest beyond the bound are forgotten.
            tx.execute(
                "DELETE FROM outbox_done WHERE rowid <= (SELECT MAX(rowid) FROM outbox_done) - ?1",
                [OUTBOX_DONE_KEEP],
            )
            .db("prune outbox done keys", p)?;
        }
        tx.execute("DELETE FROM outbox WHERE id = ?1", [id]).db("delete outbox entry", p)?;
        if let Some(e) = follow_up {
            tx.execute(
                "INSERT INTO outbox (kind, payload, coalesce, once_key, enqueued_at_ms) VALUES (?1, ?2, 0, NULL, ?3)",
                params![e.kind, e.payload, now_ms],
            )
            .db("insert outbox follow-up", p)?;
        }
        tx.commit().db("commit outbox ack", p)
    }

    /// Counts a failed attempt and remembers why.
    pub fn record_failure(&mut self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1", params![id, error])
            .db("record outbox failure", &self.db_path)
            .map(drop)
    }

    /// Takes an entry the server refused for good out of the queue, keeping it (and why) for an
    /// operator.
    pub fn park(&mut self, id: i64, reason: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE outbox SET parked = 1, attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .db("park outbox entry", &self.db_path)
            .map(drop)
    }

    /// Whether an entry with this once-key was delivered.
    pub fn is_done(&self, once_key: &str) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM outbox_done WHERE once_key = ?1)", [once_key], |r| r.get(0))
            .db("look up outbox done key", &self.db_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir, capacity: i64) -> Outbox {
        Outbox::with_capacity(&dir.path().join("lectern.db"), capacity).unwrap()
    }

    fn add(o: &mut Outbox, kind: &str, payload: &str, coalesce: bool, key: Option<&str>) -> Enqueued {
        o.enqueue(&NewEntry { kind, payload, coalesce, once_key: key }, 1).unwrap()
    }

    fn payloads(o: &Outbox) -> Vec<String> {
        o.pending(100).unwrap().into_iter().map(|e| e.payload).collect()
    }

    #[test]
    fn replays_in_order_and_coalesces_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&dir, 100);
        add(&mut o, "agent", "idle", true, None);
        assert!(matches!(add(&mut o, "agent", "capturing", true, None), Enqueued::Coalesced { .. }));
        add(&mut o, "rec", "r1 capturing", false, None);
        add(&mut o, "rec", "r1 capture_finished", false, None);
        add(&mut o, "agent", "idle", true, None);
        add(&mut o, "agent", "error", true, None);
        assert_eq!(payloads(&o), ["capturing", "r1 capturing", "r1 capture_finished", "error"]);
        let head = o.peek().unwrap().unwrap();
        o.ack(head.id, 2).unwrap();
        assert_eq!(o.peek().unwrap().unwrap().payload, "r1 capturing");
        assert_eq!(o.len().unwrap(), 3);
    }

    #[test]
    fn once_keys_are_delivered_once_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&dir, 100);
        let Enqueued::Added(id) = add(&mut o, "ingest", "r1", false, Some("ingest:r1")) else { panic!() };
        assert_eq!(add(&mut o, "ingest", "r1 again", false, Some("ingest:r1")), Enqueued::AlreadyQueued(id));
        drop(o);
        let mut o = open(&dir, 100);
        assert_eq!(o.peek().unwrap().unwrap().id, id, "survives a reopen");
        o.ack(id, 5).unwrap();
        o.ack(id, 6).unwrap();
        assert!(o.is_done("ingest:r1").unwrap());
        assert_eq!(add(&mut o, "ingest", "r1", false, Some("ingest:r1")), Enqueued::AlreadyDone);
        assert!(o.is_empty().unwrap());
    }

    #[test]
    fn kinds_can_be_served_apart_and_handles_share_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut producer = open(&dir, 100);
        let consumer = open(&dir, 100);
        add(&mut producer, "rec", "a", false, None);
        add(&mut producer, "ingest", "i1", false, Some("ingest:1"));
        add(&mut producer, "rec", "b", false, None);
        add(&mut producer, "ingest", "i2", false, Some("ingest:2"));
        assert_eq!(consumer.peek_kind("ingest").unwrap().unwrap().payload, "i1");
        assert_eq!(consumer.peek_other_than("ingest").unwrap().unwrap().payload, "a");
        assert_eq!(consumer.peek().unwrap().unwrap().payload, "a");
        assert!(consumer.peek_kind("none").unwrap().is_none());
    }

    #[test]
    fn bounded_parked_entries_step_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(&dir, 2);
        add(&mut o, "rec", "a", false, None);
        add(&mut o, "rec", "b", false, None);
        assert_eq!(add(&mut o, "rec", "c", false, None), Enqueued::Full { capacity: 2 });
        // A coalescing enqueue into a full queue is refused whole; the tail stays.
        add(&mut o, "agent", "x", true, None);
        assert_eq!(payloads(&o), ["a", "b"]);
        let a = o.peek().unwrap().unwrap();
        o.record_failure(a.id, "HTTP 503").unwrap();
        o.park(a.id, "HTTP 404").unwrap();
        assert_eq!(o.peek().unwrap().unwrap().payload, "b");
        let parked = o.parked(10).unwrap();
        assert_eq!((parked[0].attempts, parked[0].last_error.as_deref()), (2, Some("HTTP 404")));
        assert!(matches!(add(&mut o, "rec", "c", false, None), Enqueued::Added(_)));
        // A parked tail is never coalesced into.
        o.park(o.pending(10).unwrap()[1].id, "x").unwrap();
        assert!(matches!(add(&mut o, "rec", "d", true, None), Enqueued::Added(_)));
    }
}
