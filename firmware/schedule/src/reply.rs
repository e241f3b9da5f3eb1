//! The sans-IO decision on one calendar fetch: which replies may change the cached schedule.
//! Only a 2xx reply whose body parses as a complete calendar does (a valid *empty* calendar
//! included: everything was cancelled; its bad events skipped, see [`crate::Calendar::skipped`]);
//! a 304 means "unchanged"; any other status, a non-calendar body, a truncated one or a parse
//! error leaves the cache as it is.

use crate::{parse, Calendar, ParseOptions, ScheduleError};

/// A calendar reply the cache may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 304 Not Modified: the cached schedule is current.
    NotModified,
    /// A complete calendar (possibly empty) that replaces the cached one, except for the cached
    /// events its skipped ones cover.
    Calendar(Calendar),
}

/// Classifies and parses a reply with HTTP `status` and `body`. The error says what was wrong;
/// on error the caller must keep its cached schedule.
pub fn parse_reply(status: u16, body: &[u8], opts: &ParseOptions) -> Result<Reply, ScheduleError> {
    match status {
        304 => Ok(Reply::NotModified),
        200..=299 => parse(body, opts).map(Reply::Calendar),
        _ => Err(ScheduleError::Status { status }),
    }
}
