//! The acceptance test of the double: pyca 4.4, an independent real Opencast capture agent from
//! PyPI, runs one full cycle against it — service discovery, registration, calendar fetch with a
//! cutoff, a capture with pyca's own ffmpeg command (lavfi test sources, 160x120, ~5 s), and the
//! ingest (episode and series catalogs, the track, the workflow) — all with Digest auth behind
//! `X-Requested-Auth: Digest`. If pyca cannot complete, the double is wrong.
//!
//! pyca is installed into a virtualenv under the target directory (`target/tmp/pyca-venv`, reused
//! across runs). Without python3-venv the test skips LOUDLY; CI installs it
//! (`scripts/install-deps.sh`), so nothing skips there. pyca runs in its own process group, which
//! is killed at the end whatever happens: pyca 4.4 leaves its ffmpeg running on SIGTERM.
//!
//! pyca 4.4 never posts `/capture-admin/agents/{name}/configuration`; that endpoint is covered by
//! `tests/endpoints.rs` with curl.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{TimeZone, Utc};
use lectern_opencast_double::{Config, Double, Event};
use sha2::{Digest, Sha256};

const PYCA_VERSION: &str = "4.4";
const USER: &str = "opencast_system_account";
const PASSWORD: &str = "pyca-cross-check";
const AGENT: &str = "lectern-pyca-check";

/// The virtualenv with pyca 4.4, or `None` (after a loud message) if python3-venv is missing.
fn pyca_venv() -> Result<Option<PathBuf>> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyca-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let probe = Command::new("python3").args(["-c", "import venv, ensurepip"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("\n{0}\nSKIPPED: the pyca cross-check needs python3 with venv and ensurepip\n(apt-get install python3-venv, or run scripts/install-deps.sh)\n{0}\n", "!".repeat(72));
            return Ok(None);
        }
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("python3 -m venv")?;
        if !st.success() {
            bail!("python3 -m venv {} failed ({st})", venv.display());
        }
    }
    let version = || {
        Command::new(&python)
            .args(["-c", "import importlib.metadata as m; print(m.version('pyca'))"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if version().as_deref() != Some(PYCA_VERSION) {
        eprintln!("pyca check: pip install pyca=={PYCA_VERSION} into {}", venv.display());
        let st = Command::new(venv.join("bin/pip")).args(["install", "--quiet", &format!("pyca=={PYCA_VERSION}")]).status().context("pip install")?;
        if !st.success() {
            bail!("pip install pyca=={PYCA_VERSION} failed ({st})");
        }
    }
    assert_eq!(version().as_deref(), Some(PYCA_VERSION));
    Ok(Some(venv))
}

/// pyca's process group: SIGTERM, then SIGKILL to every member, on drop.
struct Group {
    pgid: u32,
    child: std::process::Child,
}

impl Group {
    fn alive(&self) -> bool {
        Command::new("kill").args(["-0", "--", &format!("-{}", self.pgid)]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    fn stop(&mut self) {
        let pgid = self.pgid;
        let signal = |sig: &str| {
            let _ = Command::new("kill").args([sig, "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
        };
        let wait_gone = |me: &mut Self, secs: u64| {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while me.alive() && Instant::now() < deadline {
                // Reap pyca itself; its children are reaped by init once it is gone.
                let _ = me.child.try_wait();
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        signal("-TERM");
        wait_gone(self, 5);
        signal("-KILL");
        let _ = self.child.wait();
        wait_gone(self, 2);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[test]
fn pyca_completes_a_full_cycle_against_the_double() -> Result<()> {
    let Some(venv) = pyca_venv()? else { return Ok(()) };
    Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).status().context("ffmpeg is not installed (apt-get install ffmpeg)")?;
    let work = tempfile::Builder::new().prefix("pyca-check-").tempdir()?;
    let double = Double::start(Config::digest(USER, PASSWORD))?;

    let dir = work.path();
    let conf = dir.join("pyca.conf");
    std::fs::write(
        &conf,
        format!(
            "[agent]\nname = {AGENT}\nupdate_frequency = 5\ndatabase = sqlite:///{db}\n\n\
             [capture]\ndirectory = {rec}\npreview_dir = {rec}\n\
             command = 'ffmpeg -nostats -loglevel error -re -f lavfi -i testsrc=size=160x120:rate=10 -f lavfi -i sine=frequency=440:sample_rate=8000 -t {{{{time}}}} -c:v libx264 -preset ultrafast -c:a aac -b:a 32k {{{{dir}}}}/{{{{name}}}}.mp4'\n\
             flavors = presenter/source\nfiles = {{{{dir}}}}/{{{{name}}}}.mp4\n\n\
             [ingest]\nupload_catalogs = true\n\n\
             [server]\nurl = {url}\nauth_method = digest\nusername = {USER}\npassword = {PASSWORD}\n\n\
             [logging]\nstderr = true\nlevel = info\n",
            db = dir.join("pyca.db").display(),
            rec = dir.join("recordings").display(),
            url = double.url(),
        ),
    )?;
    let log = dir.join("pyca.log");
    let began = Instant::now();
    let log_file = std::fs::File::create(&log)?;
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(venv.join("bin/pyca"))
            .arg("-c")
            .arg(&conf)
            .arg("run")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .context("starting pyca")?
    };
    let mut pyca = Group { pgid: child.id(), child };

    // The event is scheduled only once pyca has fetched its (empty) calendar, so that a slow
    // start-up cannot make it miss the event: pyca fetches again every 5 s (update_frequency),
    // and the event starts 7 s from now, on a whole second as in an iCalendar.
    if double.wait_for(Duration::from_secs(30), |s| s.calendar_fetches.iter().any(|f| f.agent.as_deref() == Some(AGENT))).is_none() {
        panic!("pyca did not fetch a calendar within 30 s\npyca log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    let start = Utc.timestamp_opt(Utc::now().timestamp() + 7, 0).unwrap();
    let uid = format!("pyca-cycle-{}", std::process::id());
    let mut ev = Event::new(&uid, AGENT, start, start + chrono::Duration::seconds(5), "Cross-check, Ünïcode");
    ev.series = Some("series-pyca".into());
    ev.workflow = "fast".into();
    ev.config = vec![("straightToPublishing".into(), "true".into())];
    double.set_events(vec![ev]);

    let done = double.wait_for(Duration::from_secs(40), |s| s.recording_states_of(&uid).contains(&"upload_finished") || s.recording_states_of(&uid).iter().any(|st| st.ends_with("error")));
    let elapsed = began.elapsed();
    pyca.stop();
    assert!(!pyca.alive(), "pyca's process group survived the kill");
    let pyca_log = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(snap) = done else {
        panic!("pyca did not finish a cycle within 40 s of the event being scheduled; the double saw {:#?}\npyca log:\n{pyca_log}", double.snapshot().requests.iter().map(|r| format!("{} {} -> {} {:?}", r.method, r.target, r.status, r.error)).collect::<Vec<_>>());
    };
    eprintln!("pyca cycle took {:.1} s from its start (event scheduled after its first fetch, +7 s, 5 s long)", elapsed.as_secs_f64());
    let ctx = || format!("pyca log:\n{pyca_log}");

    // Registration and agent states: idle first, capturing while recording, idle again at the end.
    let states = snap.agent_states_of(AGENT);
    assert!(states.contains(&"idle") && states.contains(&"capturing"), "agent states {states:?}\n{}", ctx());
    assert!(snap.agent_states.iter().all(|a| a.address.as_deref() == Some("http://localhost:5000")), "pyca posts its UI address");

    // The calendar was fetched for this agent with pyca's 14-day cutoff, and refetched.
    let fetches: Vec<_> = snap.calendar_fetches.iter().filter(|f| f.agent.as_deref() == Some(AGENT)).collect();
    assert!(fetches.len() >= 2, "pyca fetches the calendar every 5 s: {fetches:#?}");
    let fetch = fetches[0];
    let cutoff = fetch.cutoff_ms.expect("pyca sends a cutoff");
    assert!(cutoff > start.timestamp_millis() + 13 * 86_400_000, "cutoff {cutoff} is not ~14 days ahead");

    // Recording states, in order.
    assert_eq!(snap.recording_states_of(&uid), ["capturing", "capture_finished", "uploading", "upload_finished"], "{}", ctx());

    // The ingest: catalogs, the track (bytes identical to pyca's recording file), the workflow.
    let mps: Vec<_> = snap.ingested().collect();
    assert_eq!(mps.len(), 1, "one mediapackage ingested: {mps:#?}");
    let mp = mps[0];
    let catalogs: Vec<_> = mp.ingested_catalogs().collect();
    let episode = catalogs.iter().find(|c| c.flavor == "dublincore/episode").expect("episode catalog ingested");
    assert!(episode.content.contains(&format!("<dcterms:identifier>{uid}</dcterms:identifier>")) && episode.content.contains("Cross-check, Ünïcode"));
    assert!(catalogs.iter().any(|c| c.flavor == "dublincore/series" && c.content.contains("series-pyca")), "series catalog ingested");
    let tracks: Vec<_> = mp.ingested_tracks().collect();
    assert_eq!(tracks.len(), 1, "{tracks:#?}");
    let track = tracks[0];
    assert_eq!(track.flavor, "presenter/source");
    let recording = dir.join("recordings").join(format!("recording-{}-{uid}", start.timestamp())).join(format!("recording-{}-{uid}.mp4", start.timestamp()));
    let size = std::fs::metadata(&recording).with_context(|| format!("pyca's recording {}", recording.display()))?.len();
    assert!(size > 10_000, "a 5 s recording of {size} bytes is too small");
    assert_eq!((track.bytes, track.sha256.clone()), (size, sha256_file(&recording)?), "the uploaded track differs from pyca's file");
    assert_eq!(std::fs::metadata(&track.path)?.len(), size, "the double keeps the track on disk");
    let ingested = mp.ingested.as_ref().unwrap();
    assert_eq!(ingested.workflow_definition_id.as_deref(), Some("fast"));
    assert_eq!(ingested.workflow_instance_id.as_deref(), Some(uid.as_str()));
    assert_eq!(ingested.params, vec![("straightToPublishing".to_string(), "true".to_string())], "workflow config with its prefix stripped");

    // Every request went through Digest: each was challenged once, none was sent to the login page.
    let statuses: Vec<u16> = snap.requests.iter().map(|r| r.status).collect();
    assert!(!statuses.contains(&302), "a request without X-Requested-Auth: Digest");
    assert!(statuses.contains(&401), "Digest challenges expected");
    assert!(snap.requests.iter().filter(|r| r.status == 200).all(|r| r.user.as_deref() == Some(USER)));
    assert!(elapsed < Duration::from_secs(45), "the cycle took {elapsed:?}");
    Ok(())
}
