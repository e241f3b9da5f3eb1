//! The `.ics` timetable fetched over HTTP(S) (`[schedule] ics_url`, for campuses without
//! Opencast): one thread GETs it every `reload` with connect/read/overall timeouts and hands the
//! reply to the main loop, which lets only a complete, parsable calendar replace the slots (a
//! failed, non-200, truncated or unparsable reply keeps the schedule the box already has).

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

/// One fetch: the HTTP status and body, or why there was none.
pub type Fetched = Result<(u16, Vec<u8>), String>;

/// Largest timetable accepted; a bigger body is refused rather than buffered.
const MAX_BYTES: u64 = 16 << 20;

/// Starts the fetch thread; dropping the returned sender stops it at its next wake-up.
pub fn spawn(url: String, every: Duration, report: impl Fn(Fetched) + Send + 'static) -> std::io::Result<Sender<()>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .timeout_global(Some(Duration::from_secs(60)))
        .user_agent(concat!("lectern/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let (stop, stopped) = channel::<()>();
    std::thread::Builder::new().name("ics-fetch".into()).spawn(move || loop {
        let fetched = agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))
            .and_then(|mut r| {
                let status = r.status().as_u16();
                r.body_mut().with_config().limit(MAX_BYTES).read_to_vec().map(|b| (status, b)).map_err(|e| format!("GET {url}: reading the body: {e}"))
            });
        report(fetched);
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    })?;
    Ok(stop)
}
