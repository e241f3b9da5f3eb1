//! The capture-agent calendar as Opencast's scheduler serves it from
//! `GET /recordings/calendars?agentid=…&cutoff=…`: RFC 5545 with CRLF line ends, lines folded at
//! 75 octets, UTC times, one VEVENT per scheduled recording (UID = recording id, DTSTAMP,
//! DTSTART, DTEND, SUMMARY, UID, LAST-MODIFIED, LOCATION, RELATED-TO = series) and base64
//! `ATTACH`es named by `X-APPLE-FILENAME`: `episode.xml`, `series.xml` (when in a series) and
//! `org.opencastproject.capture.agent.properties` (workflow definition,
//! `org.opencastproject.workflow.config.*`, `capture.device.names`, `event.location`). The shape
//! follows `/work/shared/fixtures/calendars/*.ics`.
//!
//! Also the parsing of `--event` specs for the binary, and the ETag: a hash of the agent's
//! rendered calendar, so it changes exactly when what the agent would see changes (Opencast's
//! is the per-agent "last modified" hash, compared verbatim with `If-None-Match`).

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::Error;

/// One scheduled recording.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// The recording id (VEVENT UID, mediapackage id in Opencast).
    pub uid: String,
    /// The capture agent it is scheduled on; calendars are filtered by `agentid`.
    pub agent: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub title: String,
    /// Series id: adds RELATED-TO and a `series.xml` attachment.
    pub series: Option<String>,
    /// `org.opencastproject.workflow.definition`.
    pub workflow: String,
    /// Workflow configuration, keys *without* the `org.opencastproject.workflow.config.` prefix.
    pub config: Vec<(String, String)>,
    /// `capture.device.names` (comma-joined in the properties).
    pub device_names: Vec<String>,
    pub last_modified: DateTime<Utc>,
}

impl Event {
    /// An event with Opencast's usual defaults: workflow `schedule-and-upload`, devices
    /// `presenter,presentation`, last modified at `start`.
    pub fn new(uid: &str, agent: &str, start: DateTime<Utc>, end: DateTime<Utc>, title: &str) -> Event {
        Event {
            uid: uid.into(),
            agent: agent.into(),
            start,
            end,
            title: title.into(),
            series: None,
            workflow: "schedule-and-upload".into(),
            config: Vec::new(),
            device_names: vec!["presenter".into(), "presentation".into()],
            last_modified: start,
        }
    }

    /// Parses the binary's `--event` spec: comma-separated `key=value` with keys `uid`, `agent`,
    /// `start` and `end` (Unix seconds, RFC 3339, or `+N` seconds from `now`), `title`,
    /// `series`, `workflow`, `devices` (`a+b`), and `config.KEY=VALUE` (repeatable).
    pub fn from_spec(spec: &str, now: DateTime<Utc>) -> Result<Event, Error> {
        let bad = |m: String| Error::BadEvent(format!("{spec:?}: {m}"));
        let time = |v: &str| -> Result<DateTime<Utc>, Error> {
            if let Some(rel) = v.strip_prefix('+') {
                let s: i64 = rel.parse().map_err(|_| bad(format!("bad relative time {v:?}")))?;
                return Ok(now + chrono::Duration::seconds(s));
            }
            if let Ok(s) = v.parse::<i64>() {
                return Utc.timestamp_opt(s, 0).single().ok_or_else(|| bad(format!("time {v:?} out of range")));
            }
            DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).map_err(|e| bad(format!("bad time {v:?}: {e}")))
        };
        let mut ev = Event::new("", "", now, now, "");
        let (mut start, mut end) = (None, None);
        for field in spec.split(',') {
            let (k, v) = field.split_once('=').ok_or_else(|| bad(format!("{field:?} is not key=value")))?;
            match k {
                "uid" => ev.uid = v.into(),
                "agent" => ev.agent = v.into(),
                "start" => start = Some(time(v)?),
                "end" => end = Some(time(v)?),
                "title" => ev.title = v.into(),
                "series" => ev.series = Some(v.into()),
                "workflow" => ev.workflow = v.into(),
                "devices" => ev.device_names = v.split('+').map(String::from).collect(),
                k if k.starts_with("config.") => ev.config.push((k["config.".len()..].into(), v.into())),
                k => return Err(bad(format!("unknown key {k:?}"))),
            }
        }
        let (Some(start), Some(end)) = (start, end) else { return Err(bad("start and end are required".into())) };
        if ev.uid.is_empty() || ev.agent.is_empty() {
            return Err(bad("uid and agent are required".into()));
        }
        if end <= start {
            return Err(bad("end must be after start".into()));
        }
        ev.start = start;
        ev.end = end;
        ev.last_modified = now;
        if ev.title.is_empty() {
            ev.title = ev.uid.clone();
        }
        Ok(ev)
    }

    /// The `episode.xml` Dublin Core catalog (namespace as in the fixtures' dublincore.xml).
    pub fn episode_xml(&self) -> String {
        let series = self.series.as_deref().map(|s| format!("\n  <dcterms:isPartOf>{}</dcterms:isPartOf>", xml_escape(s))).unwrap_or_default();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<dublincore xmlns=\"http://www.opencastproject.org/xsd/1.0/dublincore/\" xmlns:dcterms=\"http://purl.org/dc/terms/\" xmlns:oc=\"http://www.opencastproject.org/matterhorn/\">\n  <dcterms:identifier>{}</dcterms:identifier>\n  <dcterms:title>{}</dcterms:title>{series}\n  <dcterms:temporal xsi:type=\"dcterms:Period\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">start={}; end={}; scheme=W3C-DTF;</dcterms:temporal>\n  <dcterms:spatial>{}</dcterms:spatial>\n</dublincore>",
            xml_escape(&self.uid),
            xml_escape(&self.title),
            self.start.format("%Y-%m-%dT%H:%M:%SZ"),
            self.end.format("%Y-%m-%dT%H:%M:%SZ"),
            xml_escape(&self.agent),
        )
    }

    /// The `series.xml` catalog, if the event is in a series.
    pub fn series_xml(&self) -> Option<String> {
        self.series.as_deref().map(|s| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<dublincore xmlns=\"http://www.opencastproject.org/xsd/1.0/dublincore/\" xmlns:dcterms=\"http://purl.org/dc/terms/\" xmlns:oc=\"http://www.opencastproject.org/matterhorn/\">\n  <dcterms:identifier>{0}</dcterms:identifier>\n  <dcterms:title>Series {0}</dcterms:title>\n</dublincore>",
                xml_escape(s)
            )
        })
    }

    /// The `org.opencastproject.capture.agent.properties` attachment (Java properties text).
    pub fn agent_properties(&self) -> String {
        let mut p = format!("org.opencastproject.workflow.definition={}\n", self.workflow);
        for (k, v) in &self.config {
            p.push_str(&format!("org.opencastproject.workflow.config.{k}={v}\n"));
        }
        p.push_str(&format!("capture.device.names={}\nevent.location={}\n", self.device_names.join(","), self.agent));
        p
    }
}

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// RFC 5545 §3.3.11 TEXT escaping.
fn text_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(';', "\\;").replace(',', "\\,").replace('\n', "\\n")
}

fn ical_time(t: &DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Folds one content line at 75 octets (RFC 5545 §3.1), appending it with CRLF to `out`. With
/// `split_chars`, a fold may fall inside a multi-byte UTF-8 character as some servers do (which
/// makes every piece but the joined whole invalid UTF-8).
pub fn fold_line(out: &mut Vec<u8>, line: &str, split_chars: bool) {
    let b = line.as_bytes();
    let mut start = 0;
    let mut limit = 75;
    while b.len() - start > limit {
        let mut end = start + limit;
        if !split_chars {
            while !line.is_char_boundary(end) {
                end -= 1;
            }
        }
        out.extend_from_slice(&b[start..end]);
        out.extend_from_slice(b"\r\n ");
        start = end;
        // A continuation line's leading space counts towards its 75 octets.
        limit = 74;
    }
    out.extend_from_slice(&b[start..]);
    out.extend_from_slice(b"\r\n");
}

fn attach(fmttype: &str, filename: &str, data: &str) -> String {
    format!(
        "ATTACH;FMTTYPE={fmttype};VALUE=BINARY;ENCODING=BASE64;X-APPLE-FILENAME={filename}:{}",
        base64::engine::general_purpose::STANDARD.encode(data.as_bytes())
    )
}

/// Renders the calendar of `agent`: its events that start before `cutoff` (all if `None`), in
/// start order, as Opencast's scheduler would.
pub fn render(events: &[Event], agent: &str, cutoff: Option<DateTime<Utc>>, split_chars: bool) -> Vec<u8> {
    let mut mine: Vec<&Event> = events.iter().filter(|e| e.agent == agent && cutoff.is_none_or(|c| e.start <= c)).collect();
    mine.sort_by_key(|e| e.start);
    let mut out = Vec::new();
    for l in ["BEGIN:VCALENDAR", "PRODID:Opencast Calendar File 0.5", "VERSION:2.0", "CALSCALE:GREGORIAN"] {
        fold_line(&mut out, l, split_chars);
    }
    for e in mine {
        let mut lines = vec![
            "BEGIN:VEVENT".to_string(),
            format!("DTSTAMP:{}", ical_time(&e.last_modified)),
            format!("DTSTART:{}", ical_time(&e.start)),
            format!("DTEND:{}", ical_time(&e.end)),
            format!("SUMMARY:{}", text_escape(&e.title)),
            format!("UID:{}", e.uid),
            format!("LAST-MODIFIED:{}", ical_time(&e.last_modified)),
            format!("LOCATION:{}", text_escape(&e.agent)),
        ];
        if let Some(s) = &e.series {
            lines.push(format!("RELATED-TO:{s}"));
        }
        lines.push(attach("application/xml", "episode.xml", &e.episode_xml()));
        if let Some(s) = e.series_xml() {
            lines.push(attach("application/xml", "series.xml", &s));
        }
        lines.push(attach("application/text", "org.opencastproject.capture.agent.properties", &e.agent_properties()));
        lines.push("END:VEVENT".into());
        for l in &lines {
            fold_line(&mut out, l, split_chars);
        }
    }
    fold_line(&mut out, "END:VCALENDAR", split_chars);
    out
}

/// The ETag of a rendered calendar.
pub fn etag(calendar: &[u8]) -> String {
    let h = Sha256::digest(calendar);
    format!("mod{}", h[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The UIDs in a raw calendar (after unfolding), so that recording states for them are accepted.
pub fn uids(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw).replace("\r\n ", "").replace("\r\n\t", "");
    text.split("\r\n").filter_map(|l| l.strip_prefix("UID:")).map(|s| s.trim().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    #[test]
    fn folds_at_75_octets_and_at_char_boundaries() {
        let line = format!("SUMMARY:{}", "ü".repeat(60));
        let mut out = Vec::new();
        fold_line(&mut out, &line, false);
        let text = String::from_utf8(out.clone()).expect("char-boundary folding keeps UTF-8 valid");
        for l in text.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{} octets: {l:?}", l.len());
        }
        assert_eq!(text.replace("\r\n ", ""), format!("{line}\r\n"));
        // Folding inside characters: each piece is 75 octets exactly, the joined bytes are the line.
        let mut split = Vec::new();
        fold_line(&mut split, &line, true);
        assert!(String::from_utf8(split.clone()).is_err(), "a fold through a 2-byte char must break UTF-8");
        let first = split.split(|&b| b == b'\n').next().unwrap();
        assert_eq!(first.len(), 76, "75 octets and the CR");
        let mut joined = Vec::new();
        let mut i = 0;
        while i < split.len() {
            if split[i..].starts_with(b"\r\n ") {
                i += 3;
            } else {
                joined.push(split[i]);
                i += 1;
            }
        }
        assert_eq!(joined, format!("{line}\r\n").into_bytes());
    }

    #[test]
    fn calendar_has_opencast_shape() {
        let mut e = Event::new("ev-1", "room-1", t(1_900_000_000), t(1_900_000_005), "Física, 1; intro");
        e.series = Some("series-9".into());
        e.config = vec![("straightToPublishing".into(), "true".into())];
        let other = Event::new("ev-2", "room-2", t(1_900_000_000), t(1_900_000_005), "Elsewhere");
        let late = Event::new("ev-3", "room-1", t(1_900_100_000), t(1_900_100_005), "Late");
        let cal = render(&[e.clone(), other, late], "room-1", Some(t(1_900_050_000)), false);
        let text = String::from_utf8(cal.clone()).unwrap();
        assert!(text.starts_with("BEGIN:VCALENDAR\r\nPRODID:Opencast Calendar File 0.5\r\n"));
        assert!(text.ends_with("END:VCALENDAR\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF line ends");
        let unfolded = text.replace("\r\n ", "");
        assert_eq!(uids(&cal), vec!["ev-1"], "other agents' and post-cutoff events are left out");
        for needle in ["DTSTART:20300317T174640Z", "DTEND:20300317T174645Z", "SUMMARY:Física\\, 1\\; intro", "RELATED-TO:series-9", "X-APPLE-FILENAME=episode.xml:", "X-APPLE-FILENAME=series.xml:", "X-APPLE-FILENAME=org.opencastproject.capture.agent.properties:"] {
            assert!(unfolded.contains(needle), "missing {needle:?} in\n{unfolded}");
        }
        let props_b64 = unfolded.split("agent.properties:").nth(1).unwrap().split("\r\n").next().unwrap();
        let props = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(props_b64).unwrap()).unwrap();
        assert_eq!(props, "org.opencastproject.workflow.definition=schedule-and-upload\norg.opencastproject.workflow.config.straightToPublishing=true\ncapture.device.names=presenter,presentation\nevent.location=room-1\n");
        // The ETag is stable for the same schedule and changes with any edit the agent can see.
        let late = Event::new("ev-3", "room-1", t(1_900_100_000), t(1_900_100_005), "Late");
        assert_eq!(etag(&cal), etag(&render(&[e.clone(), late], "room-1", Some(t(1_900_050_000)), false)));
        let moved = Event { end: t(1_900_000_010), ..e };
        assert_ne!(etag(&cal), etag(&render(&[moved], "room-1", None, false)));
    }

    #[test]
    fn event_specs() {
        let now = t(1_000);
        let e = Event::from_spec("uid=a,agent=box,start=+10,end=+15,title=T,workflow=fast,devices=cam+mic,config.flag=1", now).unwrap();
        assert_eq!((e.start, e.end, e.workflow.as_str()), (t(1_010), t(1_015), "fast"));
        assert_eq!(e.device_names, vec!["cam", "mic"]);
        assert_eq!(e.config, vec![("flag".to_string(), "1".to_string())]);
        let e = Event::from_spec("uid=b,agent=box,start=2030-01-01T00:00:00Z,end=1893456060", now).unwrap();
        assert_eq!(e.end - e.start, chrono::Duration::seconds(60));
        for (bad, why) in [("uid=a,agent=b,start=+5", "start and end"), ("uid=a,agent=b,start=+5,end=+1", "after start"), ("uid=a,agent=b,start=x,end=+1", "bad time"), ("uid=a,color=red", "unknown key"), ("nokv", "key=value")] {
            let err = Event::from_spec(bad, now).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
