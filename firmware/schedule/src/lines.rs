//! Byte-level unfolding and the structural check of a calendar: which lines exist, where each
//! component begins and ends, and which original line every property came from. Everything
//! later that reports an error asks this module for the line number.

use crate::ScheduleError;

/// Deeper nesting than this is rejected before the recursive `icalendar` parser sees it (a
/// VCALENDAR holds VEVENTs that hold VALARMs; nothing real goes deeper), so hostile input cannot
/// overflow the stack.
const MAX_DEPTH: usize = 8;

/// One logical (unfolded) content line.
pub(crate) struct Line {
    /// 1-based physical line where it starts.
    pub no: usize,
    pub text: String,
}

/// A component as seen by the structural pass, in input order; it mirrors the tree the
/// `icalendar` parser builds, so the two can be walked side by side.
#[derive(Debug)]
pub(crate) struct Node {
    /// Upper-case component name (`VEVENT`).
    pub name: String,
    /// Line of its `BEGIN:`.
    pub begin: usize,
    /// Line of each direct property, in order.
    pub props: Vec<usize>,
    pub children: Vec<Node>,
}

/// A structurally sound calendar: its logical lines and its component tree.
pub(crate) struct Doc {
    pub lines: Vec<Line>,
    pub root: Node,
}

/// Unfolds `bytes` into logical lines, each decoded as UTF-8 only after unfolding.
fn unfold(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match (raw.first(), out.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1.extend_from_slice(&raw[1..]),
            (None, _) => {}
            _ => out.push((i + 1, raw.to_vec())),
        }
    }
    out
}

/// A short, printable excerpt of a line for error messages.
fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Splits `NAME;PARAMS:VALUE` at the end of the name.
fn name_end(text: &str) -> Option<usize> {
    text.find([';', ':'])
}

/// Unfolds, decodes and checks the structure of a calendar.
pub(crate) fn scan(bytes: &[u8]) -> Result<Doc, ScheduleError> {
    let result = scan_lines(bytes);
    // A reply cut off mid-line fails on its last, partial line with whatever that fragment looks
    // like ("expected NAME:VALUE, found \"ATTA\""); say what actually happened instead.
    let last_no = last_line(bytes);
    let tail = bytes.rsplit(|&b| b == b'\n').next().unwrap_or_default();
    let tail = tail.strip_suffix(b"\r").unwrap_or(tail);
    let is_calendar = unfold(bytes).first().is_some_and(|(_, first)| first.eq_ignore_ascii_case(b"BEGIN:VCALENDAR"));
    match result {
        Err(e) if is_calendar && e.line() == Some(last_no) && !tail.is_empty() && !tail.eq_ignore_ascii_case(b"END:VCALENDAR") => {
            Err(ScheduleError::at(last_no, "calendar is truncated: the input stops in the middle of a line, without END:VCALENDAR"))
        }
        other => other,
    }
}

/// The number of the input's last physical line (a final newline ends it, starting no new one).
fn last_line(bytes: &[u8]) -> usize {
    let pieces = bytes.split(|&b| b == b'\n').count();
    if bytes.ends_with(b"\n") { pieces - 1 } else { pieces }.max(1)
}

fn scan_lines(bytes: &[u8]) -> Result<Doc, ScheduleError> {
    let raw = unfold(bytes);
    let Some((first_no, first)) = raw.first() else {
        return Err(ScheduleError::at(1, "empty input: not a calendar (no BEGIN:VCALENDAR)"));
    };
    if !first.eq_ignore_ascii_case(b"BEGIN:VCALENDAR") {
        let found = String::from_utf8_lossy(first);
        return Err(ScheduleError::at(*first_no, format!("not a calendar: expected BEGIN:VCALENDAR, found {}", snippet(&found))));
    }
    let mut lines = Vec::with_capacity(raw.len());
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    for (no, bytes) in raw {
        let text = String::from_utf8(bytes).map_err(|e| ScheduleError::at(no, format!("not valid UTF-8 (byte {} of the unfolded line)", e.utf8_error().valid_up_to() + 1)))?;
        if root.is_some() {
            return Err(ScheduleError::at(no, format!("content after END:VCALENDAR: {}", snippet(&text))));
        }
        let Some(end) = name_end(&text).filter(|_| text.contains(':')) else {
            return Err(ScheduleError::at(no, format!("expected NAME:VALUE, found {}", snippet(&text))));
        };
        let name = text[..end].to_ascii_uppercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ScheduleError::at(no, format!("bad property name {}", snippet(&text[..end]))));
        }
        let value = &text[end + 1..];
        match name.as_str() {
            "BEGIN" | "END" if text.as_bytes()[end] == b';' => {
                return Err(ScheduleError::at(no, format!("{name} takes no parameters")));
            }
            "BEGIN" => {
                let component = value.to_ascii_uppercase();
                if component.is_empty() || !component.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(ScheduleError::at(no, format!("bad component name {}", snippet(value))));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ScheduleError::at(no, format!("components nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Node { name: component, begin: no, props: Vec::new(), children: Vec::new() });
            }
            "END" => {
                let closing = value.to_ascii_uppercase();
                let node = stack.pop().ok_or_else(|| ScheduleError::at(no, "END without BEGIN"))?;
                if node.name != closing {
                    return Err(ScheduleError::at(no, format!("END:{closing} does not close BEGIN:{} on line {}", node.name, node.begin)));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            _ => stack.last_mut().expect("the first line opened VCALENDAR").props.push(no),
        }
        lines.push(Line { no, text: format!("{name}{}", &text[end..]) });
    }
    match root {
        Some(root) => Ok(Doc { lines, root }),
        None => {
            let last = last_line(bytes);
            let inner = stack.last().expect("an unclosed calendar leaves its components open");
            Err(ScheduleError::at(
                last,
                format!("calendar is truncated: no END:VCALENDAR (the input ends inside {} begun on line {})", inner.name, inner.begin),
            ))
        }
    }
}

impl Doc {
    /// The unfolded calendar, one logical line per CRLF-terminated line, property names in
    /// upper case (they are case-insensitive, and `icalendar` only unescapes upper-case TEXT
    /// properties). CRLF, not LF: the crate looks for `\r\n` first when it reads a value, and
    /// on LF-only text that search runs to the end of the input for every line (a 2.6 MB
    /// calendar took 22 s instead of 0.1 s).
    pub(crate) fn unfolded_text(&self) -> String {
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for l in &self.lines {
            out.push_str(&l.text);
            out.push_str("\r\n");
        }
        out
    }

    /// Maps an `icalendar` parse error (whose line numbers count unfolded lines) back to the
    /// original input.
    pub(crate) fn parser_error(&self, message: &str) -> ScheduleError {
        let logical = message
            .split("at line ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<usize>().ok());
        match logical.and_then(|n| self.lines.get(n.saturating_sub(1))).or(self.lines.last()) {
            Some(l) => ScheduleError::at(l.no, format!("cannot read this content line (bad parameters?): {}", snippet(&l.text))),
            None => ScheduleError::at(1, "cannot read the calendar"),
        }
    }
}
