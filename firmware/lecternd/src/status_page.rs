//! Wiring of the local status page (`lectern-statuspage`, `[status_page] listen`): it asks the
//! main loop the same read-only requests as the control socket. A page that cannot listen (the
//! port is taken) is logged and shown in `status.status_page`; the box records without it.

use std::net::SocketAddr;

use lectern_statuspage::StatusPage;
use serde_json::{json, Value};

/// Starts the page when configured; returns it and what `status.status_page` shows.
pub(crate) fn spawn(listen: Option<SocketAddr>, source: Box<lectern_control::Handler>) -> (Option<StatusPage>, Value) {
    let Some(listen) = listen else { return (None, Value::Null) };
    match StatusPage::spawn(listen, source) {
        Ok(page) => {
            let url = format!("http://{}/", page.addr());
            (Some(page), json!({ "url": url, "error": null }))
        }
        Err(e) => {
            log::error!("{e}; the box records without its status page");
            (None, json!({ "url": null, "error": e.to_string() }))
        }
    }
}
