//! Service discovery, sans-IO: turning the answer of
//! `GET /services/available.json?serviceType=org.opencastproject.<type>` into endpoint URLs.
//!
//! Opencast serialises `services.service` as one object when there is one registration and as a
//! list when there are several, so both shapes are accepted. Only registrations that are
//! `online`, `active` and not in `maintenance` are used. A URL set in the config for a service
//! wins without asking the server (for setups whose registry advertises internal host names).

use serde::Deserialize;
use serde_json::Value;

use crate::error::{OpencastError, Result};

/// The three services a capture agent talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `org.opencastproject.capture.admin`: agent and recording states.
    CaptureAdmin,
    /// `org.opencastproject.scheduler`: the calendar.
    Scheduler,
    /// `org.opencastproject.ingest`: uploads.
    Ingest,
}

impl Service {
    /// All of them, in discovery order.
    pub const ALL: [Service; 3] = [Service::CaptureAdmin, Service::Scheduler, Service::Ingest];

    /// The `serviceType` query value.
    pub fn service_type(self) -> &'static str {
        match self {
            Service::CaptureAdmin => "org.opencastproject.capture.admin",
            Service::Scheduler => "org.opencastproject.scheduler",
            Service::Ingest => "org.opencastproject.ingest",
        }
    }
}

/// Where each service lives; built by discovery or from config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Base URL of capture-admin, e.g. `https://oc.example.edu/capture-admin`.
    pub capture_admin: String,
    /// Base URL of the scheduler.
    pub scheduler: String,
    /// Base URL of ingest.
    pub ingest: String,
}

impl Endpoints {
    /// The base URL of one service.
    pub fn get(&self, s: Service) -> &str {
        match s {
            Service::CaptureAdmin => &self.capture_admin,
            Service::Scheduler => &self.scheduler,
            Service::Ingest => &self.ingest,
        }
    }
}

#[derive(Deserialize)]
struct Registration {
    host: String,
    path: String,
    #[serde(default)]
    online: bool,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    maintenance: bool,
}

/// Parses a registry answer into the usable endpoint URLs (`host` + `path`, no trailing `/`), in
/// the order the server listed them. `url` names the request in errors. No usable registration
/// is an error, as is anything that is not the registry's JSON shape.
pub fn parse_available(url: &str, body: &[u8]) -> Result<Vec<String>> {
    let out = parse_available_or_none(url, body)?;
    if out.is_empty() {
        return Err(OpencastError::Discovery { url: url.to_owned(), detail: "no online, active service outside maintenance is registered".to_owned() });
    }
    Ok(out)
}

/// Like [`parse_available`], but a well-formed answer without a usable registration is an empty
/// list, not an error: for optional services (the chunked upload service), whose absence means
/// "use the fallback", while a garbled answer still means "ask again later".
pub fn parse_available_or_none(url: &str, body: &[u8]) -> Result<Vec<String>> {
    let err = |detail: String| OpencastError::Discovery { url: url.to_owned(), detail };
    let v: Value = serde_json::from_slice(body).map_err(|e| err(format!("not JSON: {e}")))?;
    let services = v
        .get("services")
        .ok_or_else(|| err("no \"services\" object in the answer".to_owned()))?;
    let list = match services.get("service") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        Some(other) => return Err(err(format!("\"services.service\" is neither an object nor a list: {other}"))),
    };
    let mut out = Vec::new();
    for item in list {
        let r: Registration =
            serde_json::from_value(item).map_err(|e| err(format!("a service registration is malformed: {e}")))?;
        if r.online && r.active && !r.maintenance {
            out.push(format!("{}{}", r.host.trim_end_matches('/'), r.path).trim_end_matches('/').to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expect: Result<&[&str], &str>) {
        let got = parse_available("http://oc/services/available.json", body.as_bytes());
        match (got, expect) {
            (Ok(urls), Ok(want)) => assert_eq!(urls, want, "{body}"),
            (Err(e), Err(want)) => {
                let e = e.to_string();
                assert!(e.contains(want) && e.contains("http://oc/services/available.json"), "{body}: {e}");
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    const ONE: &str = r#"{"services":{"service":{"type":"org.opencastproject.ingest","host":"https://oc.example.edu","path":"/ingest","active":true,"online":true,"maintenance":false}}}"#;

    #[test]
    fn registry_answers() {
        check(ONE, Ok(&["https://oc.example.edu/ingest"]));
        check(
            r#"{"services":{"service":[
                {"host":"http://a:8080","path":"/ingest","active":true,"online":true,"maintenance":false},
                {"host":"http://b:8080/","path":"/ingest","active":true,"online":false,"maintenance":false},
                {"host":"http://c:8080","path":"/ingest","active":false,"online":true,"maintenance":false},
                {"host":"http://d:8080","path":"/ingest","active":true,"online":true,"maintenance":true},
                {"host":"http://e:8080/","path":"/ingest/","active":true,"online":true}
            ]}}"#,
            Ok(&["http://a:8080/ingest", "http://e:8080/ingest"]),
        );
        check(r#"{"services":{"service":[]}}"#, Err("no online, active service"));
        check(r#"{"services":{}}"#, Err("no online, active service"));
        check(r#"{"services":""}"#, Err("no online, active service"));
        check(
            r#"{"services":{"service":{"host":"http://a","path":"/x","active":true,"online":false}}}"#,
            Err("no online, active service"),
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        check("<html>login</html>", Err("not JSON"));
        check("", Err("not JSON"));
        check(r#"{"service":[]}"#, Err("no \"services\" object"));
        check(r#"{"services":{"service":42}}"#, Err("neither an object nor a list"));
        check(r#"{"services":{"service":{"path":"/x","active":true,"online":true}}}"#, Err("malformed"));
        check(r#"{"services":{"service":[{"host":1,"path":"/x"}]}}"#, Err("malformed"));
    }
}
