//! Reads the Java properties file Opencast attaches to each event
//! (`org.opencastproject.capture.agent.properties`): the workflow definition, its configuration
//! and the capture device names. Only the syntax Opencast writes and `java.util.Properties`
//! reads is handled: `#`/`!` comments, `=`, `:` or blank as separator, backslash line
//! continuations and escapes (`\t`, `\n`, `\uXXXX`, …).

use std::collections::BTreeMap;

/// What the agent needs from the properties attachment.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AgentProperties {
    pub workflow: Option<String>,
    pub workflow_config: BTreeMap<String, String>,
    pub device_names: Vec<String>,
}

const WORKFLOW: &str = "org.opencastproject.workflow.definition";
const CONFIG_PREFIX: &str = "org.opencastproject.workflow.config.";
const DEVICES: &str = "capture.device.names";

/// Undoes Java properties escapes.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Joins continuation lines: a line ending in an odd number of backslashes continues on the next
/// line, whose leading blanks are dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = match current.take() {
            Some(mut prev) => {
                prev.push_str(raw.trim_start());
                prev
            }
            None => raw.trim_start().to_owned(),
        };
        let trailing = line.bytes().rev().take_while(|&b| b == b'\\').count();
        if trailing % 2 == 1 {
            current = Some(line[..line.len() - 1].to_owned());
        } else {
            out.push(line);
        }
    }
    out.extend(current);
    out
}

/// Splits `key=value`, `key: value` or `key value` at the first unescaped separator.
fn split_pair(line: &str) -> (String, String) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' | ':' => return (unescape(&line[..i]), unescape(line[i + 1..].trim_start_matches([' ', '\t']))),
            ' ' | '\t' => {
                // Blanks may surround an `=` or `:`, or separate on their own.
                let rest = line[i..].trim_start_matches([' ', '\t']);
                let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
                return (unescape(&line[..i]), unescape(rest.trim_start_matches([' ', '\t'])));
            }
            _ => {}
        }
    }
    (unescape(line), String::new())
}

/// Parses the properties attachment. Unknown keys are ignored.
pub(crate) fn parse(text: &str) -> AgentProperties {
    let mut props = AgentProperties::default();
    for line in logical_lines(text) {
        if line.is_empty() || line.starts_with(['#', '!']) {
            continue;
        }
        let (key, value) = split_pair(&line);
        if key == WORKFLOW {
            props.workflow = Some(value);
        } else if key == DEVICES {
            props.device_names = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        } else if let Some(name) = key.strip_prefix(CONFIG_PREFIX) {
            props.workflow_config.insert(name.to_owned(), value);
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: (&str, &[(&str, &str)], &[&str])) {
        let p = parse(text);
        let config: Vec<(&str, &str)> = p.workflow_config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let devices: Vec<&str> = p.device_names.iter().map(String::as_str).collect();
        assert_eq!((p.workflow.as_deref().unwrap_or(""), config.as_slice(), devices.as_slice()), expect, "{text:?}");
    }

    #[test]
    fn agent_properties() {
        check(
            "org.opencastproject.workflow.definition=fast\norg.opencastproject.workflow.config.a=true\ncapture.device.names=presenter,presentation\n",
            ("fast", &[("a", "true")], &["presenter", "presentation"]),
        );
        check("# comment\n! comment\n\norg.opencastproject.workflow.definition : fast", ("fast", &[], &[]));
        check("org.opencastproject.workflow.definition fast", ("fast", &[], &[]));
        check("org.opencastproject.workflow.definition=a\\\n    b", ("ab", &[], &[]));
        check("org.opencastproject.workflow.config.title=x\\=y \\u00e4\\tz", ("", &[("title", "x=y ä\tz")], &[]));
        check("capture.device.names= a , ,b ", ("", &[], &["a", "b"]));
        check("org.opencastproject.workflow.definition", ("", &[], &[]));
        check("org.opencastproject.workflow.definition=x\\", ("x", &[], &[]));
        check("\\u12", ("", &[], &[]));
    }
}
