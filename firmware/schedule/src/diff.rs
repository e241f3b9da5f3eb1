//! The sans-IO schedule diff: what changed between the cached schedule and a newly fetched one,
//! keyed by uid. The journal applies these changes in one transaction; the daemon logs them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ScheduledEvent;

/// One difference between two schedules. An event whose times and title both changed yields a
/// `Moved` and a `Retitled`; `Updated` covers every other field (workflow, devices, location,
/// attachments, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A uid that was not scheduled before.
    Added { uid: String, start: DateTime<Utc>, end: DateTime<Utc> },
    /// Start or end changed.
    Moved { uid: String, old_start: DateTime<Utc>, old_end: DateTime<Utc>, start: DateTime<Utc>, end: DateTime<Utc> },
    /// The title changed.
    Retitled { uid: String, old: String, new: String },
    /// Something other than times and title changed.
    Updated { uid: String },
    /// A uid that is no longer scheduled.
    Cancelled { uid: String, start: DateTime<Utc>, end: DateTime<Utc> },
}

impl Change {
    /// The uid the change is about.
    pub fn uid(&self) -> &str {
        match self {
            Change::Added { uid, .. }
            | Change::Moved { uid, .. }
            | Change::Retitled { uid, .. }
            | Change::Updated { uid }
            | Change::Cancelled { uid, .. } => uid,
        }
    }
}

/// The changes that turn `old` into `new`, ordered by the start time they concern (the new one,
/// or the old one for a cancellation), then uid, then Added/Moved/Retitled/Updated/Cancelled.
/// Both inputs must have unique uids (as [`crate::parse`] guarantees).
pub fn diff(old: &[ScheduledEvent], new: &[ScheduledEvent]) -> Vec<Change> {
    let old: BTreeMap<&str, &ScheduledEvent> = old.iter().map(|e| (e.uid.as_str(), e)).collect();
    let new_by_uid: BTreeMap<&str, &ScheduledEvent> = new.iter().map(|e| (e.uid.as_str(), e)).collect();
    let mut out: Vec<(DateTime<Utc>, u8, Change)> = Vec::new();
    for (uid, n) in &new_by_uid {
        let uid = (*uid).to_owned();
        let Some(o) = old.get(n.uid.as_str()) else {
            out.push((n.start, 0, Change::Added { uid, start: n.start, end: n.end }));
            continue;
        };
        if (o.start, o.end) != (n.start, n.end) {
            out.push((n.start, 1, Change::Moved { uid: uid.clone(), old_start: o.start, old_end: o.end, start: n.start, end: n.end }));
        }
        if o.title != n.title {
            out.push((n.start, 2, Change::Retitled { uid: uid.clone(), old: o.title.clone(), new: n.title.clone() }));
        }
        let same_rest = ScheduledEvent { start: n.start, end: n.end, title: n.title.clone(), ..(*o).clone() } == **n;
        if !same_rest {
            out.push((n.start, 3, Change::Updated { uid }));
        }
    }
    for (uid, o) in &old {
        if !new_by_uid.contains_key(uid) {
            out.push((o.start, 4, Change::Cancelled { uid: (*uid).to_owned(), start: o.start, end: o.end }));
        }
    }
    out.sort_by(|a, b| (a.0, a.2.uid(), a.1).cmp(&(b.0, b.2.uid(), b.1)));
    out.into_iter().map(|(_, _, c)| c).collect()
}
