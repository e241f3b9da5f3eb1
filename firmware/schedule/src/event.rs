//! Turns parsed VEVENTs into [`ScheduledEvent`]s: date-times (UTC, `TZID` local via `chrono-tz`,
//! floating), `DTEND`/`DURATION`, Opencast's base64 attachments, `STATUS:CANCELLED`, and
//! recurrence (`RRULE`, `RDATE`, `EXDATE`, `RECURRENCE-ID` overrides) expanded with the `rrule`
//! crate inside the horizon of [`ParseOptions`]. Every error names the line of the property (or of
//! the `BEGIN:VEVENT`) it is about.
//!
//! A problem of one event (a bad value, a missing `UID`/`DTSTART`/end, an end not after the
//! start, a bad `RRULE`, a duplicate `UID`) skips that event as a [`SkippedEvent`]; a problem of
//! the calendar as a whole (the recurrence step budget, too many events, two expanded events
//! with one uid) rejects it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use icalendar::parser::{Component, Property};

use crate::lines::{Doc, Node};
use crate::{props, ParseOptions, ScheduleError, ScheduledEvent, SkippedEvent};

const EPISODE_XML: &str = "episode.xml";
const SERIES_XML: &str = "series.xml";
const AGENT_PROPERTIES: &str = "org.opencastproject.capture.agent.properties";

/// One property with the line it came from and its parameters, keys in upper case.
struct Prop<'p> {
    line: usize,
    name: String,
    value: &'p str,
    params: Vec<(String, String)>,
}

impl<'p> Prop<'p> {
    fn new(line: usize, p: &'p Property<'p>) -> Prop<'p> {
        let params = p
            .params
            .iter()
            .map(|q| {
                let val = q.val.as_ref().map_or("", |v| v.as_str());
                (q.key.as_str().to_ascii_uppercase(), val.trim_matches('"').to_owned())
            })
            .collect();
        Prop { line, name: p.name.as_str().to_ascii_uppercase(), value: p.val.as_str(), params }
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn err(&self, message: impl Into<String>) -> ScheduleError {
        ScheduleError::at(self.line, message)
    }
}

/// A `DATE-TIME` in its zone (UTC for `…Z`), or an all-day `DATE`.
#[derive(Clone, Copy)]
enum When {
    At(DateTime<Tz>),
    Day,
}

/// Parses one date or date-time value of `p` (a property value may hold several, comma-separated).
fn when(p: &Prop, value: &str, opts: &ParseOptions) -> Result<When, ScheduleError> {
    let value = value.trim();
    let bad = |why: &str| p.err(format!("bad {} {value:?}: {why}", p.name));
    if p.param("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE")) || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit())) {
        NaiveDate::parse_from_str(value, "%Y%m%d").map_err(|e| bad(&e.to_string()))?;
        return Ok(When::Day);
    }
    let (naive, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(v) => (v, true),
        None => (value, false),
    };
    if naive.len() != 15 {
        return Err(bad("expected YYYYMMDDTHHMMSS, with Z for UTC"));
    }
    let naive = NaiveDateTime::parse_from_str(naive, "%Y%m%dT%H%M%S").map_err(|e| bad(&e.to_string()))?;
    let tz = match (utc, p.param("TZID")) {
        (true, _) => Tz::UTC,
        (false, Some(id)) => Tz::from_str(id.trim_start_matches('/'))
            .map_err(|_| p.err(format!("unknown time zone TZID={id:?} (IANA names like Europe/Berlin are supported)")))?,
        (false, None) => opts
            .floating_tz
            .ok_or_else(|| bad("a local time without TZID; add TZID=Area/City or use UTC (…Z)"))?,
    };
    // RFC 5545 3.3.5: a local time skipped by a DST change means the same wall time in the
    // offset before the gap, i.e. one gap later; a repeated one means its first occurrence.
    let at = tz
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(naive + Duration::hours(1))).earliest())
        .ok_or_else(|| bad("does not exist in that time zone"))?;
    Ok(When::At(at))
}

/// A single `DATE-TIME` value in UTC (`LAST-MODIFIED`, `DTEND`, `RECURRENCE-ID`).
fn at(p: &Prop, opts: &ParseOptions) -> Result<Option<DateTime<Tz>>, ScheduleError> {
    match when(p, p.value, opts)? {
        When::At(t) => Ok(Some(t)),
        When::Day => Ok(None),
    }
}

/// Parses an RFC 5545 `DURATION` (`P1W`, `PT1H30M`, `P1DT2H`), positive only.
fn duration(value: &str) -> Option<Duration> {
    let rest = value.trim().strip_prefix('+').unwrap_or(value.trim()).strip_prefix('P')?;
    let (mut secs, mut digits, mut in_time, mut any) = (0i64, String::new(), false, false);
    for c in rest.chars() {
        let unit = match c {
            '0'..='9' => {
                digits.push(c);
                continue;
            }
            'T' if !in_time && digits.is_empty() => {
                in_time = true;
                continue;
            }
            'W' if !in_time => 604_800,
            'D' if !in_time => 86_400,
            'H' if in_time => 3_600,
            'M' if in_time => 60,
            'S' if in_time => 1,
            _ => return None,
        };
        let n: i64 = digits.parse().ok()?;
        secs = secs.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return None;
    }
    Duration::try_seconds(secs)
}

/// What one VEVENT said, before recurrence expansion.
struct Raw {
    begin: usize,
    uid: Option<String>,
    start: Option<(DateTime<Tz>, usize)>,
    end: Option<(DateTime<Tz>, usize)>,
    duration: Option<(Duration, usize)>,
    all_day: bool,
    cancelled: bool,
    recurrence_id: Option<DateTime<Utc>>,
    rrules: Vec<(String, usize)>,
    rdates: Vec<DateTime<Tz>>,
    exdates: Vec<DateTime<Tz>>,
    event: ScheduledEvent,
    /// The first problem with one of its properties: the event is skipped with it.
    error: Option<ScheduleError>,
}

/// Decodes one `ATTACH;ENCODING=BASE64` into the event.
fn attach(p: &Prop, ev: &mut ScheduledEvent) -> Result<(), ScheduleError> {
    if !p.param("ENCODING").is_some_and(|e| e.eq_ignore_ascii_case("BASE64")) {
        return Ok(());
    }
    let name = p.param("X-APPLE-FILENAME").unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(p.value.trim())
        .map_err(|e| p.err(format!("bad base64 in ATTACH {name:?}: {e}")))?;
    match name {
        EPISODE_XML => ev.episode_xml = Some(bytes),
        SERIES_XML => ev.series_xml = Some(bytes),
        AGENT_PROPERTIES => {
            let agent = props::parse(&String::from_utf8_lossy(&bytes));
            ev.workflow = agent.workflow;
            ev.workflow_config = agent.workflow_config;
            ev.device_names = agent.device_names;
        }
        _ => log::debug!(target: "schedule", "line {}: ignoring attachment {name:?}", p.line),
    }
    Ok(())
}

/// Reads one VEVENT's properties. A bad property does not stop the reading (the `UID` after it
/// still names the event in the error); the first problem is kept in [`Raw::error`].
fn read(node: &Node, comp: &Component, opts: &ParseOptions) -> Raw {
    let placeholder = DateTime::<Utc>::UNIX_EPOCH;
    let mut raw = Raw {
        begin: node.begin,
        uid: None,
        start: None,
        end: None,
        duration: None,
        all_day: false,
        cancelled: false,
        recurrence_id: None,
        rrules: Vec::new(),
        rdates: Vec::new(),
        exdates: Vec::new(),
        event: ScheduledEvent {
            uid: String::new(),
            start: placeholder,
            end: placeholder,
            title: String::new(),
            location: None,
            series: None,
            last_modified: None,
            workflow: None,
            workflow_config: BTreeMap::new(),
            device_names: Vec::new(),
            episode_xml: None,
            series_xml: None,
        },
        error: None,
    };
    // The structural pass and the parser saw the same lines, so properties pair up one to one;
    // should they ever not, errors fall back to the BEGIN:VEVENT line rather than a wrong one.
    let same_shape = node.props.len() == comp.properties.len();
    for (i, property) in comp.properties.iter().enumerate() {
        let line = if same_shape { node.props[i] } else { node.begin };
        let p = Prop::new(line, property);
        if let Err(e) = property_into(&p, &mut raw, opts) {
            raw.error.get_or_insert(e);
        }
    }
    raw
}

/// Applies one property of a VEVENT to `raw`.
fn property_into(p: &Prop, raw: &mut Raw, opts: &ParseOptions) -> Result<(), ScheduleError> {
    let text = || p.value.to_owned();
    match p.name.as_str() {
        "UID" => raw.uid = Some(text()).filter(|u| !u.trim().is_empty()),
        "SUMMARY" => raw.event.title = text(),
        "LOCATION" => raw.event.location = Some(text()),
        "RELATED-TO" => raw.event.series = Some(text()),
        "STATUS" => raw.cancelled = p.value.trim().eq_ignore_ascii_case("CANCELLED"),
        "LAST-MODIFIED" => raw.event.last_modified = at(p, opts)?.map(|t| t.with_timezone(&Utc)),
        "DTSTART" => match when(p, p.value, opts)? {
            When::At(t) => raw.start = Some((t, p.line)),
            When::Day => raw.all_day = true,
        },
        "DTEND" => raw.end = at(p, opts)?.map(|t| (t, p.line)),
        "DURATION" => {
            let d = duration(p.value).ok_or_else(|| p.err(format!("bad DURATION {:?}: expected e.g. PT1H30M", p.value)))?;
            raw.duration = Some((d, p.line));
        }
        "RECURRENCE-ID" => raw.recurrence_id = at(p, opts)?.map(|t| t.with_timezone(&Utc)),
        "RRULE" => raw.rrules.push((text(), p.line)),
        "RDATE" | "EXDATE" => {
            if p.param("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("PERIOD")) {
                return Err(p.err(format!("{} periods are not supported", p.name)));
            }
            for v in p.value.split(',') {
                if let When::At(t) = when(p, v, opts)? {
                    if p.name == "RDATE" { &mut raw.rdates } else { &mut raw.exdates }.push(t);
                }
            }
        }
        "ATTACH" => attach(p, &mut raw.event)?,
        _ => {}
    }
    Ok(())
}

/// Checks a raw event's required fields and fills in uid, start and end; the error is the
/// event's first problem.
fn finish(raw: &mut Raw) -> Result<(), ScheduleError> {
    if let Some(e) = raw.error.take() {
        return Err(e);
    }
    let missing = |what: &str| ScheduleError::at(raw.begin, format!("VEVENT has no {what}"));
    let uid = raw.uid.clone().ok_or_else(|| missing("UID"))?;
    let (start, _) = raw.start.ok_or_else(|| missing("DTSTART"))?;
    let (end, end_line) = match (raw.end, raw.duration) {
        (Some((end, line)), _) => (end.with_timezone(&Utc), line),
        (None, Some((d, line))) => {
            let end = start.with_timezone(&Utc).checked_add_signed(d).ok_or_else(|| ScheduleError::at(line, "DURATION is out of range"))?;
            (end, line)
        }
        (None, None) => return Err(missing("DTEND or DURATION")),
    };
    let start_utc = start.with_timezone(&Utc);
    if end <= start_utc {
        return Err(ScheduleError::at(
            end_line,
            format!("event {uid} ends ({}) at or before its start ({})", end.to_rfc3339(), start_utc.to_rfc3339()),
        ));
    }
    raw.event.uid = uid;
    raw.event.start = start_utc;
    raw.event.end = end;
    Ok(())
}

/// Why expansion failed: one event's own fault (it is skipped) or the calendar's (it is rejected).
enum Fault {
    Event(ScheduleError),
    Calendar(ScheduleError),
}

/// The uid of one occurrence of a recurring event.
fn occurrence_uid(uid: &str, original_start: DateTime<Utc>) -> String {
    format!("{uid}-{}", original_start.format("%Y%m%dT%H%M%SZ"))
}

/// Expands a recurring master into its occurrences inside the horizon.
/// `steps` is what is left of the calendar's [`ParseOptions::max_steps`].
fn expand(
    raw: &Raw,
    opts: &ParseOptions,
    overridden: &HashMap<(String, DateTime<Utc>), usize>,
    steps: &mut usize,
) -> Result<Vec<ScheduledEvent>, Fault> {
    let (start, _) = raw.start.expect("finish() checked DTSTART");
    let length = raw.event.end - raw.event.start;
    let rtz = rrule::Tz::from(start.timezone());
    let dt_start = start.with_timezone(&rtz);
    let mut set = rrule::RRuleSet::new(dt_start);
    for (text, line) in &raw.rrules {
        let rule = text
            .parse::<rrule::RRule<rrule::Unvalidated>>()
            .and_then(|r| r.validate(dt_start))
            .map_err(|e| Fault::Event(ScheduleError::at(*line, format!("bad RRULE {text:?}: {e}"))))?;
        set = set.rrule(rule);
    }
    if raw.rrules.is_empty() {
        // With RDATE alone, DTSTART is still the first instance (RFC 5545 3.8.5.2).
        set = set.rdate(dt_start);
    }
    for d in &raw.rdates {
        set = set.rdate(d.with_timezone(&rtz));
    }
    for d in &raw.exdates {
        set = set.exdate(d.with_timezone(&rtz));
    }
    // `RRuleSet::all` walks from DTSTART whatever its `after` bound, so an old DTSTART with a
    // fine-grained rule would cost unbounded CPU: walk the iterator ourselves and count steps.
    let line = raw.rrules.first().map_or(raw.begin, |(_, line)| *line);
    let mut out = Vec::new();
    for occurrence in &set.limit() {
        *steps = steps.checked_sub(1).ok_or_else(|| {
            Fault::Calendar(ScheduleError::at(
                line,
                format!("recurrences need more than {} steps from their DTSTART to reach the horizon; move DTSTART closer", opts.max_steps),
            ))
        })?;
        let original = occurrence.with_timezone(&Utc);
        if original >= opts.until {
            break;
        }
        let Some(end) = original.checked_add_signed(length) else { break };
        if end <= opts.from || overridden.contains_key(&(raw.event.uid.clone(), original)) {
            continue;
        }
        if out.len() >= usize::from(opts.max_occurrences) {
            log::warn!(target: "schedule", "line {}: event {} has more than {} occurrences in the horizon; the rest are dropped", raw.begin, raw.event.uid, opts.max_occurrences);
            break;
        }
        out.push(ScheduledEvent { uid: occurrence_uid(&raw.event.uid, original), start: original, end, ..raw.event.clone() });
    }
    Ok(out)
}

/// Builds the events of a calendar from its parsed VEVENTs: the good ones, and the bad ones
/// skipped (by input line). The error is for a calendar that cannot be used at all.
pub(crate) fn collect(
    doc: &Doc,
    cal: &icalendar::parser::Calendar,
    opts: &ParseOptions,
) -> Result<(Vec<ScheduledEvent>, Vec<SkippedEvent>), ScheduleError> {
    let mut masters = Vec::new();
    let mut overrides = Vec::new();
    let mut skipped = Vec::new();
    let nodes = &doc.root.children;
    // Both trees come from the same lines; if they ever disagree, refuse rather than risk pairing
    // an event with another event's line numbers or silently dropping one.
    if nodes.len() != cal.components.len() {
        return Err(ScheduleError::at(doc.root.begin, format!("the iCalendar parser found {} components, the line scan {}", cal.components.len(), nodes.len())));
    }
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut overridden: HashMap<(String, DateTime<Utc>), usize> = HashMap::new();
    let mut position = 0;
    let skip = |raw: &Raw, position: usize, e: ScheduleError| {
        let (line, message) = match e {
            ScheduleError::Parse { line, message } => (line, message),
            other => (raw.begin, other.to_string()),
        };
        SkippedEvent { line, begin: raw.begin, position, uid: raw.uid.clone(), message }
    };
    for (i, comp) in cal.components.iter().enumerate() {
        let Some(node) = nodes.get(i) else { break };
        if node.name != "VEVENT" || !comp.name.as_str().eq_ignore_ascii_case("VEVENT") {
            continue;
        }
        position += 1;
        let mut raw = read(node, comp, opts);
        if raw.all_day && raw.error.is_none() {
            log::warn!(target: "schedule", "line {}: skipping all-day event {:?}: only timed events can be recorded", raw.begin, raw.uid.as_deref().unwrap_or("?"));
            continue;
        }
        if let Err(e) = finish(&mut raw) {
            skipped.push(skip(&raw, position, e));
            continue;
        }
        match raw.recurrence_id {
            Some(rid) => {
                if let Some(prev) = overridden.get(&(raw.event.uid.clone(), rid)) {
                    let e = ScheduleError::at(raw.begin, format!("duplicate RECURRENCE-ID for UID {} (also on line {prev})", raw.event.uid));
                    skipped.push(skip(&raw, position, e));
                    continue;
                }
                overridden.insert((raw.event.uid.clone(), rid), raw.begin);
                overrides.push(raw);
            }
            None => {
                if let Some(prev) = first_line.get(&raw.event.uid) {
                    let e = ScheduleError::at(raw.begin, format!("duplicate UID {} (also on line {prev})", raw.event.uid));
                    skipped.push(skip(&raw, position, e));
                    continue;
                }
                first_line.insert(raw.event.uid.clone(), raw.begin);
                masters.push((raw, position));
            }
        }
    }
    let cancelled: Vec<&str> = masters.iter().filter(|(m, _)| m.cancelled).map(|(m, _)| m.event.uid.as_str()).collect();
    let mut events = Vec::new();
    let mut steps = opts.max_steps;
    let mut push = |new: Vec<ScheduledEvent>, line: usize| {
        events.extend(new);
        if events.len() > opts.max_events {
            return Err(ScheduleError::at(line, format!("more than {} events after expanding recurrences", opts.max_events)));
        }
        Ok(())
    };
    for (raw, position) in masters.iter().filter(|(m, _)| !m.cancelled) {
        if raw.rrules.is_empty() && raw.rdates.is_empty() {
            push(vec![raw.event.clone()], raw.begin)?;
            continue;
        }
        match expand(raw, opts, &overridden, &mut steps) {
            Ok(occurrences) => push(occurrences, raw.begin)?,
            Err(Fault::Event(e)) => skipped.push(skip(raw, *position, e)),
            Err(Fault::Calendar(e)) => return Err(e),
        }
    }
    // An override replaces its occurrence wherever it moved it, under the occurrence's uid.
    for raw in overrides.into_iter().filter(|o| !o.cancelled && !cancelled.contains(&o.event.uid.as_str())) {
        let rid = raw.recurrence_id.expect("only overrides are here");
        if raw.event.end <= opts.from || raw.event.start >= opts.until {
            continue;
        }
        let event = ScheduledEvent { uid: occurrence_uid(&raw.event.uid, rid), ..raw.event };
        push(vec![event], raw.begin)?;
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for e in &events {
        if !seen.insert(e.uid.as_str()) {
            let line = first_line.get(&e.uid).copied().unwrap_or(1);
            return Err(ScheduleError::at(line, format!("two events share the uid {}", e.uid)));
        }
    }
    skipped.sort_by_key(|s| (s.line, s.position));
    Ok((events, skipped))
}
