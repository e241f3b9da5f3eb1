//! `cargo xtask bench-upload`: the upload benchmark of issue 9 (docs/benchmarks.md, "Uploads over
//! a flaky link (issue 9)"), with pyca 4.4 beside Lectern in the same run.
//!
//! # What runs
//!
//! Every upload of Lectern is one `upload-bench` process (`firmware/upload/src/bin/upload-bench.rs`):
//! the real runner, journal job store and target, configured by a lecternd config file that sets
//! only the server, the target and `upload.start_delay_max_s = 0`, so chunk size (4 MiB), S3 part
//! size (5 MiB), back-off and timeouts are the production defaults. Its peak resident memory
//! (`VmHWM`) is the upload room's memory. The servers are the release `opencast-double` (Basic
//! auth, as for pyca in `bench-kill`) and moto's S3 server (`lectern-moto`), each behind the
//! release `faultproxy`, which is the link: `--throttle-up RATE` and, for the flaky runs,
//! `--cut-every SIZE` (a FIN once SIZE bytes have gone up, counted across connections).
//!
//! Service discovery: the double advertises its own address in `/services/available.json`, and
//! both Lectern and pyca send the ingest, the chunks and the states to the addresses discovery
//! names. So each client's configured server URL is a *discovery front* (here, [`Front`]): it
//! forwards every bodiless request to the double and, in discovery answers, replaces the double's
//! address with the fault proxy's, as an Opencast registry behind a load balancer would. Every
//! request that carries media or changes state therefore crosses the proxy.
//!
//! # Legs
//!
//! 1. `opencast`, `s3`: a `--size` (1 GiB) file of random bytes (written once under OUT) uploaded
//!    on a clean link (throttle only) and on the flaky link (throttle + cuts). Each run has its
//!    own proxy, server and journal. Reported: outcome, seconds from enqueue to the `Done` event,
//!    cuts, bytes re-sent on the wire (what the proxy passed in the flaky run beyond the clean
//!    one) ÷ cuts, the runner's own count (`bytes_sent − bytes_total`, which includes bytes the
//!    client had handed to a socket that the cut discarded), goodput ÷ clean goodput, peak memory.
//! 2. `pyca`: pyca 4.4 ingests a file of the same size (its capture command hard-links the
//!    prepared file into place, `ln`, and sleeps to the end of its 10 s event) through the same
//!    proxy settings to the double;
//!    once on the flaky link and, as a control, once on the clean link. pyca is not changed. It
//!    is given until `--pyca-cap-s` (default 5 × Lectern's flaky Opencast time) but is stopped
//!    early 60 s after it reported `upload_error` with nothing more sent (pyca 4.4's ingest loop
//!    only picks recordings in state FINISHED_RECORDING, so a failed upload is never retried).
//! 3. `lecture`: the end of an N-minute lecture (`--minutes`, default 60) to the acknowledged
//!    ingest: the synthetic segments of `bench-stitch` (made by running it once into OUT/stitch
//!    if they are not there) stitched by the release stitcher (plus `sync` of the file), then
//!    uploaded to the double through the proxy with a throttle only (`--lecture-rate`, default
//!    the rate that makes the raw transfer 45 s). Reported: (stitch + upload) ÷ (size ÷ rate).
//!    The random start delay (`upload.start_delay_max_s`, default up to 300 s) is left out: it is
//!    deliberate spreading of a building's rooms, not overhead.
//!
//! Results: a markdown report on stdout and in OUT/report.md, every measured value in
//! OUT/results.json, logs of every process under OUT/runs/.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use lectern_faultproxy::cli::{duration, size};
use serde_json::{json, Value};

use crate::anchor::{self, DoubleEvent, OC_PASSWORD, OC_USER};
use crate::child::Managed;

const MIB: u64 = 1 << 20;
/// The S3 bucket of the benchmark.
const BUCKET: &str = "lectern-bench";
/// pyca's capture-agent name.
const PYCA_AGENT: &str = "bench-upload-pyca";
/// How long before its event pyca gets to start and fetch its calendar (as in `bench-kill`).
const PYCA_LEAD: Duration = Duration::from_secs(15);
/// After pyca reported `upload_error`, how long nothing more must reach the server before the
/// run ends early.
const PYCA_GRACE: Duration = Duration::from_secs(60);

/// The benchmark's legs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Leg {
    Opencast,
    S3,
    Pyca,
    Lecture,
}

impl Leg {
    const ALL: [Leg; 4] = [Leg::Opencast, Leg::S3, Leg::Pyca, Leg::Lecture];

    fn name(self) -> &'static str {
        match self {
            Leg::Opencast => "opencast",
            Leg::S3 => "s3",
            Leg::Pyca => "pyca",
            Leg::Lecture => "lecture",
        }
    }
}

/// Command-line options.
pub struct Options {
    pub out: PathBuf,
    /// Size of the leg-1 recording.
    pub size: u64,
    pub cut_every: u64,
    /// The link's rate in legs 1 and 2 (bytes/s, proxy `--throttle-up`); 0 = none.
    pub rate: u64,
    pub seed: u64,
    pub minutes: u32,
    /// The link's rate in leg 3; None: the stitched file's size ÷ 45 s.
    pub lecture_rate: Option<u64>,
    pub legs: Vec<Leg>,
    pub pyca_cap: Option<Duration>,
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Options> {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000_007;
        let mut o = Options {
            out: crate::target_dir(root).join("bench-upload"),
            size: 1 << 30,
            cut_every: 16 * MIB,
            rate: 12_500_000,
            seed,
            minutes: 60,
            lecture_rate: None,
            legs: Leg::ALL.to_vec(),
            pyca_cap: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--out" => o.out = PathBuf::from(value()?),
                "--size" => o.size = size(value()?).map_err(anyhow::Error::msg)?,
                "--cut-every" => o.cut_every = size(value()?).map_err(anyhow::Error::msg)?,
                "--rate" => o.rate = size(value()?).map_err(anyhow::Error::msg)?,
                "--seed" => o.seed = value()?.parse().context("--seed N")?,
                "--minutes" => o.minutes = value()?.parse().context("--minutes N")?,
                "--lecture-rate" => {
                    o.lecture_rate = Some(size(value()?).map_err(anyhow::Error::msg)?)
                }
                "--pyca-cap" => o.pyca_cap = Some(duration(value()?).map_err(anyhow::Error::msg)?),
                "--legs" => {
                    o.legs = value()?
                        .split(',')
                        .map(|l| {
                            Leg::ALL
                                .into_iter()
                                .find(|k| k.name() == l.trim())
                                .with_context(|| format!("--legs: unknown leg {l:?}"))
                        })
                        .collect::<Result<_>>()?
                }
                _ => bail!("unknown option {a}\n{}", crate::USAGE),
            }
        }
        ensure!(
            o.size >= 2 * o.cut_every && o.cut_every >= MIB,
            "--size must be at least two cuts, --cut-every at least 1 MiB"
        );
        ensure!(
            o.minutes >= 3,
            "--minutes must be at least 3 (bench-stitch makes 3 parts of 60 s clips)"
        );
        if o.out.is_relative() {
            o.out = std::env::current_dir()?.join(&o.out);
        }
        Ok(o)
    }
}

/// What the whole run shares.
struct Ctx {
    out: PathBuf,
    bin: PathBuf,
    root: PathBuf,
    seed: u64,
    cut_every: u64,
    rate: u64,
    media: Media,
    manifest: PathBuf,
}

/// A file to upload with its SHA-256.
#[derive(Clone)]
struct Media {
    path: PathBuf,
    bytes: u64,
    sha256: String,
}

pub fn run(opts: Options, root: &Path) -> Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    crate::cargo_build_release(
        root,
        &[
            "-p",
            "lectern-upload",
            "--bin",
            "upload-bench",
            "-p",
            "lectern-opencast-double",
            "-p",
            "lectern-faultproxy",
        ],
    )?;
    if opts.legs.contains(&Leg::Lecture) {
        crate::cargo_build_release(root, &["-p", "lectern-stitch", "--example", "stitch"])?;
    }
    let bin = crate::target_dir(root).join("release");
    let needs_media = opts.legs.iter().any(|l| *l != Leg::Lecture);
    let media = if needs_media {
        random_media(&out, opts.size)?
    } else {
        Media {
            path: PathBuf::new(),
            bytes: opts.size,
            sha256: String::new(),
        }
    };
    let manifest = out.join("bench.manifest.json");
    std::fs::write(&manifest, br#"{"recording":"bench-upload","gaps":[]}"#)?;
    let ctx = Ctx {
        out: out.clone(),
        bin,
        root: root.to_owned(),
        seed: opts.seed,
        cut_every: opts.cut_every,
        rate: opts.rate,
        media,
        manifest,
    };
    std::fs::create_dir_all(out.join("runs"))?;
    eprintln!(
        "xtask: bench-upload, seed {} (replay with --seed {0}), link {} B/s, cut every {} B",
        opts.seed, opts.rate, opts.cut_every
    );

    // Legs not run this time keep their results from an earlier run into the same OUT; each leg
    // records its own command and machine note.
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut results: Value = std::fs::read(out.join("results.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    if opts
        .legs
        .iter()
        .any(|l| matches!(l, Leg::Opencast | Leg::S3))
        || results["size"].is_null()
    {
        results["size"] = json!(ctx.media.bytes);
        results["cut_every"] = json!(ctx.cut_every);
        results["rate"] = json!(ctx.rate);
        results["seed"] = json!(ctx.seed);
    }
    let mut failed = None;
    let mut lectern_flaky_opencast_s = None;
    for &leg in &opts.legs {
        eprintln!("xtask: leg {}", leg.name());
        let r = match leg {
            Leg::Opencast | Leg::S3 => lectern_leg(&ctx, leg),
            Leg::Pyca => {
                let cap = opts
                    .pyca_cap
                    .or(lectern_flaky_opencast_s.map(|s: f64| Duration::from_secs_f64(s * 5.0)))
                    .unwrap_or(Duration::from_secs(1800));
                pyca_leg(&ctx, cap)
            }
            Leg::Lecture => lecture_leg(&ctx, opts.minutes, opts.lecture_rate),
        };
        match r {
            Ok(v) => {
                if leg == Leg::Opencast {
                    lectern_flaky_opencast_s = v["flaky"]["seconds"].as_f64();
                }
                let mut v = v;
                v["command"] = json!(command);
                v["machine"] = json!(machine_note());
                results[leg.name()] = v;
            }
            Err(e) => {
                eprintln!("xtask: leg {} failed: {e:#}", leg.name());
                results[leg.name()] = json!({ "error": format!("{e:#}"), "command": command, "machine": machine_note() });
                failed.get_or_insert(e.context(format!("leg {}", leg.name())));
            }
        }
        std::fs::write(
            out.join("results.json"),
            serde_json::to_vec_pretty(&results)?,
        )?;
    }
    let report = report(&results);
    print!("{report}");
    std::fs::write(out.join("report.md"), &report)?;
    eprintln!(
        "xtask: report in {}, every number in {}",
        out.join("report.md").display(),
        out.join("results.json").display()
    );
    failed.map_or(Ok(()), Err)
}

/// `size` bytes from /dev/urandom (incompressible), written once as OUT/media-SIZE.bin and reused
/// with its SHA-256 (from `sha256sum`, cached beside it).
fn random_media(out: &Path, bytes: u64) -> Result<Media> {
    let path = out.join(format!("media-{bytes}.bin"));
    let sha_path = out.join(format!("media-{bytes}.sha256"));
    if path.metadata().map(|m| m.len()).ok() != Some(bytes) || !sha_path.exists() {
        eprintln!(
            "xtask: writing {bytes} random bytes to {} (once)",
            path.display()
        );
        let tmp = path.with_extension("partial");
        let mut f = std::fs::File::create(&tmp)?;
        std::io::copy(
            &mut std::fs::File::open("/dev/urandom")?.take(bytes),
            &mut f,
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::write(&sha_path, sha256sum(&path)?)?;
    }
    Ok(Media {
        path,
        bytes,
        sha256: std::fs::read_to_string(&sha_path)?.trim().to_owned(),
    })
}

fn sha256sum(path: &Path) -> Result<String> {
    let line = anchor::first_line(Command::new("sha256sum").arg(path))?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Load, CPU count and memory, for the report's machine note.
fn machine_note() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    format!(
        "{cpus} CPUs, load average {}, {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    )
}

// ---------------------------------------------------------------------------------------------
// The link: the release faultproxy.

/// The proxy's plan for one run.
#[derive(Clone, Copy)]
struct Link {
    rate: u64,
    cut_every: Option<u64>,
    seed: u64,
}

impl Link {
    fn args(&self, upstream: SocketAddr) -> Vec<String> {
        let mut a = vec![
            "--upstream".into(),
            upstream.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--stdin".into(),
        ];
        if self.rate > 0 {
            a.extend(["--throttle-up".into(), self.rate.to_string()]);
        }
        if let Some(n) = self.cut_every {
            a.extend(["--cut-every".into(), n.to_string()]);
        }
        a
    }
}

/// A running `faultproxy`; [`FaultProxy::finish`] stops it and returns its stats.
struct FaultProxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    command: String,
}

impl FaultProxy {
    fn start(bin: &Path, link: Link, upstream: SocketAddr, log: &Path) -> Result<FaultProxy> {
        let args = link.args(upstream);
        let command = format!("faultproxy {}", args.join(" "));
        let mut child = Command::new(bin.join("faultproxy"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting faultproxy")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("faultproxy printed {line:?}; see {}", log.display()))?;
        Ok(FaultProxy {
            child,
            stdin,
            stdout,
            addr,
            command,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes its stdin (it prints its stats and exits) and parses the `stats k=v ...` line.
    fn finish(mut self) -> Result<BTreeMap<String, u64>> {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest)?;
        let _ = self.child.wait();
        let line = rest
            .lines()
            .find_map(|l| l.strip_prefix("stats "))
            .context("faultproxy printed no stats")?;
        Ok(line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The discovery front (see the module doc).

/// Forwards bodiless requests to the double, rewriting the address discovery advertises.
struct Front {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Front {
    fn start(upstream: SocketAddr, advertised: String) -> Result<Front> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let from = format!("http://{upstream}");
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let (from, to) = (from.clone(), advertised.clone());
                if let Ok(c) = conn {
                    std::thread::spawn(move || {
                        if let Err(e) = front_exchange(c, upstream, &from, &to) {
                            eprintln!("xtask: discovery front: {e:#}");
                        }
                    });
                }
            }
        });
        Ok(Front { addr, stop })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads up to the end of an HTTP head (`\r\n\r\n`); returns the head and any bytes after it.
fn read_head(r: &mut impl Read) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        ensure!(buf.len() < 64 * 1024, "head longer than 64 KiB");
        let n = r.read(&mut piece)?;
        ensure!(n > 0, "connection closed inside the head");
        buf.extend_from_slice(&piece[..n]);
    }
}

/// A whole reply split into its head (with the blank line) and its body.
fn split_reply(reply: &[u8]) -> Result<(String, &[u8])> {
    let i = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("a reply without a complete head")?;
    Ok((
        String::from_utf8_lossy(&reply[..i + 4]).into_owned(),
        &reply[i + 4..],
    ))
}

/// The head's lines without `Connection` and `Content-Length`, with `Connection: close` (and the
/// given length) instead: one exchange per connection.
fn reframe(head: &str, length: Option<usize>) -> String {
    let mut out: String = head
        .trim_end()
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("connection:") && !l.starts_with("content-length:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n");
    if let Some(n) = length {
        out.push_str(&format!("Content-Length: {n}\r\n"));
    }
    out.push_str("\r\n");
    out
}

fn front_exchange(mut c: TcpStream, upstream: SocketAddr, from: &str, to: &str) -> Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, _) = read_head(&mut c)?;
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let lower = head.to_ascii_lowercase();
    if !(request_line.starts_with("GET ") || request_line.starts_with("HEAD "))
        || lower.contains("content-length: ") && !lower.contains("content-length: 0")
    {
        c.write_all(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
        bail!("a request with a body reached the discovery front (it should go through the proxy): {request_line}");
    }
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    up.write_all(reframe(&head, None).as_bytes())?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply)?;
    let (rhead, body) = split_reply(&reply)?;
    let mut body = body.to_vec();
    if request_line.contains("/services/available.json")
        && !rhead.to_ascii_lowercase().contains("transfer-encoding")
    {
        body = String::from_utf8_lossy(&body)
            .replace(from, to)
            .into_bytes();
    }
    c.write_all(reframe(&rhead, Some(body.len())).as_bytes())?;
    c.write_all(&body)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Servers.

/// The release `opencast-double` (Basic auth) with `events`, logging into `dir`.
fn double(ctx: &Ctx, dir: &Path, events: &[DoubleEvent]) -> Result<(Managed, SocketAddr)> {
    let (d, url) = anchor::start_double(&ctx.bin, dir, events)?;
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("double URL {url}"))?;
    Ok((d, addr))
}

/// `OUT/runs/NAME`, emptied: one run's logs, journal and pyca home (a run of another leg keeps
/// its own).
fn run_dir(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    let dir = ctx.out.join("runs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `GET /__double/state` of a double: everything it received, as JSON.
fn double_state(addr: SocketAddr) -> Result<Value> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"GET /__double/state HTTP/1.1\r\nHost: double\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let (head, body) = split_reply(&reply)?;
    ensure!(head.starts_with("HTTP/1.1 200"), "double state: {head}");
    Ok(serde_json::from_slice(body)?)
}

// ---------------------------------------------------------------------------------------------
// Lectern's uploads.

/// The lecternd config of one upload-bench run: the target only, no start delay; everything else
/// (chunk size, back-off, caps, timeouts) is the embedded default.
fn lectern_config(target: &str) -> String {
    format!("[agent]\nname = \"bench-upload\"\n\n[upload]\nstart_delay_max_s = 0\n\n{target}")
}

fn opencast_target(front: &str) -> String {
    format!(
        "[[upload.target]]\nkind = \"opencast\"\n\n[opencast]\nurl = \"{front}\"\nusername = \"{OC_USER}\"\npassword = \"{OC_PASSWORD}\"\nauth = \"basic\"\nworkflow = \"fast\"\n"
    )
}

fn s3_target(endpoint: &str) -> String {
    format!(
        "[[upload.target]]\nkind = \"s3\"\nendpoints = [\"{endpoint}\"]\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\naccess_key = \"bench\"\nsecret_key = \"bench-secret\"\npath_style = true\n"
    )
}

/// Runs `upload-bench` once in `dir`; its JSON, plus the wall time seen from here.
fn upload_bench(
    ctx: &Ctx,
    dir: &Path,
    config: &str,
    media: &Media,
    id: &str,
    timeout: Duration,
) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("lectern.toml");
    std::fs::write(&conf, config)?;
    let db = dir.join("journal");
    let _ = std::fs::remove_dir_all(&db);
    let t0 = Instant::now();
    let out = Command::new(ctx.bin.join("upload-bench"))
        .arg("--config")
        .arg(&conf)
        .arg("--db-dir")
        .arg(&db)
        .arg("--media")
        .arg(&media.path)
        .args([
            "--sha256",
            &media.sha256,
            "--id",
            id,
            "--timeout-s",
            &timeout.as_secs().to_string(),
        ])
        .arg("--manifest")
        .arg(&ctx.manifest)
        .stderr(std::fs::File::create(dir.join("upload-bench.log"))?)
        .output()
        .context("running upload-bench")?;
    let wall = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Value = serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "upload-bench printed {text:?} ({}); see {}",
            out.status,
            dir.display()
        )
    })?;
    v["wall_s"] = json!(wall);
    eprintln!(
        "xtask:   {} -> {} in {:.1} s, {} failures",
        dir.display(),
        v["outcome"],
        v["seconds"].as_f64().unwrap_or(0.0),
        v["failures"]
    );
    Ok(v)
}

/// Leg 1 for one target: the same file on a clean and on a flaky link.
fn lectern_leg(ctx: &Ctx, leg: Leg) -> Result<Value> {
    let mut out = json!({});
    let moto = match leg {
        Leg::S3 => {
            let mut m = lectern_moto::MotoServer::start()?;
            m.create_bucket(BUCKET)?;
            Some(m)
        }
        _ => None,
    };
    let mut moto = moto;
    let raw_s = if ctx.rate > 0 {
        ctx.media.bytes as f64 / ctx.rate as f64
    } else {
        60.0
    };
    for (run, cut) in [("clean", None), ("flaky", Some(ctx.cut_every))] {
        let dir = run_dir(ctx, &format!("{}-{run}", leg.name()))?;
        let link = Link {
            rate: ctx.rate,
            cut_every: cut,
            seed: ctx.seed,
        };
        let timeout = Duration::from_secs_f64(raw_s * 20.0 + 1200.0);
        let id = format!("bench-{}-{run}", leg.name());
        let mut v = match leg {
            Leg::Opencast => {
                let (mut d, daddr) = double(ctx, &dir, &[])?;
                let proxy = FaultProxy::start(&ctx.bin, link, daddr, &dir.join("faultproxy.log"))?;
                let front = Front::start(daddr, proxy.url())?;
                let command = proxy.command.clone();
                let mut v = upload_bench(
                    ctx,
                    &dir,
                    &lectern_config(&opencast_target(&front.url())),
                    &ctx.media,
                    &id,
                    timeout,
                )?;
                let state = double_state(daddr)?;
                v["proxy"] = json!(proxy.finish()?);
                v["proxy_command"] = json!(command);
                v["server"] = opencast_server_side(&state, ctx.media.bytes);
                d.terminate(Duration::from_secs(10));
                v
            }
            Leg::S3 => {
                let m = moto.as_mut().expect("started above");
                if run == "flaky" {
                    // moto keeps objects in memory: start the flaky run on an empty server.
                    m.restart()?;
                }
                let upstream: SocketAddr = m
                    .endpoint()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse()
                    .context("moto endpoint")?;
                let proxy =
                    FaultProxy::start(&ctx.bin, link, upstream, &dir.join("faultproxy.log"))?;
                let command = proxy.command.clone();
                let mut v = upload_bench(
                    ctx,
                    &dir,
                    &lectern_config(&s3_target(&proxy.url())),
                    &ctx.media,
                    &id,
                    timeout,
                )?;
                v["proxy"] = json!(proxy.finish()?);
                v["proxy_command"] = json!(command);
                v
            }
            _ => unreachable!("leg 1 is opencast or s3"),
        };
        let resent = v["bytes_sent"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(v["bytes_total"].as_u64().unwrap_or(0));
        v["resent"] = json!(resent);
        out[run] = v;
    }
    let wire = |r: &str| out[r]["proxy"]["up_forwarded"].as_u64().unwrap_or(0);
    // Everything the flaky run put on the wire beyond the clean run: re-sent bytes plus the extra
    // requests (asking the server where the upload stands), as the proxy counted them.
    out["extra_wire"] = json!(wire("flaky").saturating_sub(wire("clean")));
    let secs = |r: &str| out[r]["seconds"].as_f64().unwrap_or(f64::NAN);
    out["goodput_ratio"] = json!(secs("clean") / secs("flaky"));
    let cuts = out["flaky"]["proxy"]["cuts"].as_u64().unwrap_or(0);
    let per_cut = |n: u64| {
        if cuts > 0 {
            n as f64 / cuts as f64
        } else {
            0.0
        }
    };
    // On the wire (the proxy): what the metric means. The runner's own count is what the HTTP
    // client took from the file, including bytes still in socket buffers when the cut came.
    out["resent_per_cut"] = json!(per_cut(out["extra_wire"].as_u64().unwrap_or(0)));
    out["runner_resent_per_cut"] = json!(per_cut(out["flaky"]["resent"].as_u64().unwrap_or(0)));
    out["chunk_bytes"] = json!(match leg {
        Leg::S3 => out["flaky"]["chunk_bytes"]
            .as_u64()
            .unwrap_or(0)
            .max(5 * MIB),
        _ => out["flaky"]["chunk_bytes"].as_u64().unwrap_or(0),
    });
    Ok(out)
}

/// What the double says about the upload: the upload job's bytes received and accepted, ingests,
/// media packages.
fn opencast_server_side(state: &Value, size: u64) -> Value {
    let jobs = state["upload_jobs"].as_array().cloned().unwrap_or_default();
    let received: u64 = jobs
        .iter()
        .map(|j| j["bytes_received"].as_u64().unwrap_or(0))
        .sum();
    let accepted: u64 = jobs
        .iter()
        .map(|j| j["current_size"].as_u64().unwrap_or(0))
        .sum();
    let mps = state["mediapackages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ingests = mps.iter().filter(|m| !m["ingested"].is_null()).count();
    let complete_tracks = mps
        .iter()
        .flat_map(|m| m["tracks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["bytes"].as_u64() == Some(size))
        .count();
    json!({
        "upload_jobs": jobs.len(),
        "chunk_attempts": jobs.iter().map(|j| j["chunk_attempts"].as_u64().unwrap_or(0)).sum::<u64>(),
        "bytes_received": received,
        "bytes_accepted": accepted,
        "resent": received.saturating_sub(accepted),
        "mediapackages": mps.len(),
        "creations": mps.iter().map(|m| m["creations"].as_u64().unwrap_or(0)).sum::<u64>(),
        "ingests": ingests,
        "complete_tracks": complete_tracks,
    })
}

// ---------------------------------------------------------------------------------------------
// pyca.

/// Leg 2: pyca 4.4 with a file of the same size, on the flaky link and then on the clean one.
fn pyca_leg(ctx: &Ctx, cap: Duration) -> Result<Value> {
    let setup = anchor::prepare(&ctx.out)?;
    let mut out = json!({ "pyca_version": setup.pyca_version, "cap_s": cap.as_secs_f64() });
    std::fs::write(ctx.out.join("pip-freeze.txt"), &setup.freeze)?;
    for (run, cut) in [("flaky", Some(ctx.cut_every)), ("clean", None)] {
        let dir = run_dir(ctx, &format!("pyca-{run}"))?;
        out[run] = pyca_run(
            ctx,
            &setup,
            &dir,
            Link {
                rate: ctx.rate,
                cut_every: cut,
                seed: ctx.seed,
            },
            cap,
        )?;
    }
    Ok(out)
}

/// A pyca config: the capture command hard-links the prepared file into the recording
/// directory and waits for the end of the event (a capture that ends early is started again by
/// pyca while its event runs); everything else is pyca's default.
fn pyca_config(dir: &Path, media: &Path, url: &str) -> String {
    format!(
        "[agent]\nname = {PYCA_AGENT}\nupdate_frequency = 5\ndatabase = sqlite:///{db}\n\n\
         [capture]\ndirectory = {rec}\npreview_dir = {rec}\n\
         command = 'sh -c \"ln -f {media} {{{{dir}}}}/{{{{name}}}}.mp4 && sleep {{{{time}}}}\"'\n\
         flavors = presenter/source\nfiles = {{{{dir}}}}/{{{{name}}}}.mp4\n\n\
         [server]\nurl = {url}\nauth_method = basic\nusername = {OC_USER}\npassword = {OC_PASSWORD}\n\n\
         [logging]\nstderr = true\nlevel = info\n",
        db = dir.join("pyca.db").display(),
        rec = dir.join("recordings").display(),
        media = media.display(),
    )
}

/// `pyca run` in its own process group, stopped (TERM, then KILL) with the group.
struct PycaGroup {
    child: Child,
}

impl PycaGroup {
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let kill = |sig: &str| {
            Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status()
        };
        let _ = kill("-TERM");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = kill("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for PycaGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pyca_run(
    ctx: &Ctx,
    setup: &anchor::Setup,
    dir: &Path,
    link: Link,
    cap: Duration,
) -> Result<Value> {
    std::fs::create_dir_all(dir.join("recordings"))?;
    let uid = format!(
        "bench-upload-pyca-{}",
        if link.cut_every.is_some() {
            "flaky"
        } else {
            "clean"
        }
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let start = (now + PYCA_LEAD).as_secs() + 1;
    let event = DoubleEvent {
        uid: uid.clone(),
        agent: PYCA_AGENT.into(),
        start,
        end: start + 10,
        title: uid.clone(),
    };
    let (mut d, daddr) = double(ctx, dir, &[event])?;
    let proxy = FaultProxy::start(&ctx.bin, link, daddr, &dir.join("faultproxy.log"))?;
    let command = proxy.command.clone();
    let front = Front::start(daddr, proxy.url())?;
    let conf = dir.join("pyca.conf");
    std::fs::write(&conf, pyca_config(dir, &ctx.media.path, &front.url()))?;
    let log = std::fs::File::create(dir.join("pyca.log"))?;
    let mut pyca = PycaGroup {
        child: Command::new(setup.pyca_bin())
            .arg("-c")
            .arg(&conf)
            .arg("run")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting pyca")?,
    };
    // From the end of the recording (pyca posts capture_finished) until upload_finished, the cap,
    // or PYCA_GRACE after upload_error with nothing more sent.
    let t0 = Instant::now();
    let mut finished_capture: Option<Instant> = None;
    let mut error_at: Option<(Instant, u64)> = None;
    let (mut state, ended) = loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(st) = pyca.child.try_wait()? {
            bail!("pyca exited ({st}); see {}", dir.join("pyca.log").display());
        }
        let state = double_state(daddr)?;
        let states = recording_states(&state, &uid);
        if finished_capture.is_none() && states.iter().any(|s| s == "capture_finished") {
            finished_capture = Some(Instant::now());
        }
        if states.iter().any(|s| s == "upload_finished") {
            break (state, "upload_finished");
        }
        let received = received_bytes(&state);
        if states.iter().any(|s| s == "upload_error") {
            let (since, seen) = *error_at.get_or_insert((Instant::now(), received));
            if received != seen {
                error_at = Some((Instant::now(), received));
            } else if since.elapsed() > PYCA_GRACE {
                break (state, "upload_error, nothing more sent for 60 s");
            }
        }
        match finished_capture {
            Some(f) if f.elapsed() > cap => break (state, "cap reached"),
            None if t0.elapsed() > PYCA_LEAD + Duration::from_secs(60) => bail!(
                "pyca did not finish its capture; see {}",
                dir.join("pyca.log").display()
            ),
            _ => {}
        }
    };
    let upload_s = finished_capture.map(|f| f.elapsed().as_secs_f64());
    pyca.stop();
    state = double_state(daddr).unwrap_or(state);
    let stats = proxy.finish()?;
    d.terminate(Duration::from_secs(10));
    let requests = state["requests"].as_array().cloned().unwrap_or_default();
    let add_tracks: Vec<Value> = requests
        .iter()
        .filter(|r| {
            r["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("/ingest/addTrack"))
        })
        .map(|r| json!({ "status": r["status"], "fault": r["fault"], "error": r["error"] }))
        .collect();
    let server = opencast_server_side(&state, ctx.media.bytes);
    let forwarded = stats.get("up_forwarded").copied().unwrap_or(0);
    let v = json!({
        "ended": ended,
        "completed": server["complete_tracks"].as_u64().unwrap_or(0) > 0 && server["ingests"].as_u64().unwrap_or(0) > 0,
        "seconds_after_capture": upload_s,
        "recording_states": recording_states(&state, &uid),
        "add_track_requests": add_tracks,
        "server": server,
        "proxy": stats,
        "proxy_command": command,
        "bytes_to_server_per_file": forwarded as f64 / ctx.media.bytes as f64,
    });
    eprintln!("xtask:   {} -> {ended}", dir.display());
    Ok(v)
}

fn recording_states(state: &Value, uid: &str) -> Vec<String> {
    state["recording_states"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["id"] == uid)
        .filter_map(|r| r["state"].as_str().map(String::from))
        .collect()
}

/// A progress measure of the ingest: ingest requests seen plus bytes of all stored tracks (the
/// calendar and state requests pyca keeps sending do not count).
fn received_bytes(state: &Value) -> u64 {
    let requests = state["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("/ingest/"))
        })
        .count() as u64;
    let tracks: u64 = state["mediapackages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["tracks"].as_array().cloned().unwrap_or_default())
        .map(|t| t["bytes"].as_u64().unwrap_or(0))
        .sum();
    requests + tracks
}

// ---------------------------------------------------------------------------------------------
// The end of a lecture to the acknowledged ingest.

fn lecture_leg(ctx: &Ctx, minutes: u32, rate: Option<u64>) -> Result<Value> {
    let stitch_out = ctx.out.join("stitch");
    let stamp = stitch_out.join(format!("recording/done-{minutes}min-60s"));
    if !stamp.exists() {
        eprintln!("xtask: making the synthetic {minutes}-minute recording with bench-stitch (once; cached in {})", stitch_out.display());
        let log = std::fs::File::create(ctx.out.join("runs/bench-stitch.log"))?;
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "xtask",
                "bench-stitch",
                "--minutes",
                &minutes.to_string(),
                "--out",
            ])
            .arg(&stitch_out)
            .current_dir(&ctx.root)
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()?;
        // Only its inputs are used: a failure in its own timing part (after the segments and
        // part lists exist) does not matter here.
        ensure!(
            stamp.exists() && stitch_out.join("part-3.list").exists(),
            "bench-stitch did not make the recording ({st}); see {}",
            ctx.out.join("runs/bench-stitch.log").display()
        );
        if !st.success() {
            eprintln!("xtask: bench-stitch failed after making the recording ({st}); its segments are used");
        }
    }
    let dir = run_dir(ctx, "lecture")?;
    let mp4 = dir.join("lecture.mp4");
    let _ = std::fs::remove_file(&mp4);
    Command::new("sync").status()?;
    let lists: Vec<PathBuf> = (1..=3)
        .map(|i| stitch_out.join(format!("part-{i}.list")))
        .collect();
    let t0 = Instant::now();
    let st = Command::new(ctx.bin.join("examples/stitch"))
        .arg(&mp4)
        .args(&lists)
        .stdout(Stdio::null())
        .status()?;
    ensure!(st.success(), "the stitcher failed");
    let st = Command::new("sync").arg(&mp4).status()?;
    ensure!(st.success(), "sync {} failed", mp4.display());
    let stitch_s = t0.elapsed().as_secs_f64();
    let bytes = mp4.metadata()?.len();
    let media = Media {
        path: mp4.clone(),
        bytes,
        sha256: sha256sum(&mp4)?,
    };
    let rate = rate.unwrap_or(bytes / 45).max(1);
    let raw_s = bytes as f64 / rate as f64;
    let (mut d, daddr) = double(ctx, &dir, &[])?;
    let proxy = FaultProxy::start(
        &ctx.bin,
        Link {
            rate,
            cut_every: None,
            seed: ctx.seed,
        },
        daddr,
        &dir.join("faultproxy.log"),
    )?;
    let command = proxy.command.clone();
    let front = Front::start(daddr, proxy.url())?;
    let v = upload_bench(
        ctx,
        &dir,
        &lectern_config(&opencast_target(&front.url())),
        &media,
        "bench-lecture",
        Duration::from_secs_f64(raw_s * 10.0 + 600.0),
    )?;
    let state = double_state(daddr)?;
    let stats = proxy.finish()?;
    d.terminate(Duration::from_secs(10));
    let upload_s = v["seconds"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "minutes": minutes,
        "bytes": bytes,
        "rate": rate,
        "raw_s": raw_s,
        "stitch_s": stitch_s,
        "upload_s": upload_s,
        "ratio": (stitch_s + upload_s) / raw_s,
        "upload_ratio": upload_s / raw_s,
        "upload": v,
        "server": opencast_server_side(&state, bytes),
        "proxy": stats,
        "proxy_command": command,
    }))
}

// ---------------------------------------------------------------------------------------------
// The report.

fn mib(n: f64) -> String {
    format!("{:.1} MiB", n / MIB as f64)
}

fn report(r: &Value) -> String {
    let mut s = String::new();
    let size = r["size"].as_u64().unwrap_or(0) as f64;
    for leg in ["opencast", "s3", "pyca", "lecture"] {
        if let Some(c) = r[leg]["command"].as_str() {
            let _ = writeln!(
                s,
                "{leg}: `{c}`; {}  ",
                r[leg]["machine"].as_str().unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        s,
        "Link: faultproxy `--throttle-up {}` (`0`: none), flaky runs add `--cut-every {}` (FIN); seed {} (`--seed {2}` replays; `LECTERN_FAULTPROXY_SEED` overrides it in the proxy). File {} of random bytes.\n",
        r["rate"], r["cut_every"], r["seed"], mib(size)
    );
    let _ = writeln!(s, "| Lectern | link | outcome | s to done | goodput MB/s | cuts | extra wire bytes vs clean (proxy) | re-sent ÷ cuts, wire (goal ≤ chunk) | re-sent ÷ cuts, runner's count | goodput ÷ clean (goal ≥ 0.85) | peak memory VmHWM |");
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for leg in ["opencast", "s3"] {
        let l = &r[leg];
        if l.is_null() {
            continue;
        }
        if let Some(e) = l["error"].as_str() {
            let _ = writeln!(s, "| {leg} | | failed: {e} | | | | | | | | |");
            continue;
        }
        for run in ["clean", "flaky"] {
            let v = &l[run];
            let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
            let server = if run == "flaky" {
                mib(l["extra_wire"].as_f64().unwrap_or(0.0))
            } else {
                String::new()
            };
            let (per_cut, runner, ratio) = if run == "flaky" {
                (
                    format!(
                        "{} (chunk {})",
                        mib(l["resent_per_cut"].as_f64().unwrap_or(0.0)),
                        mib(l["chunk_bytes"].as_f64().unwrap_or(0.0))
                    ),
                    mib(l["runner_resent_per_cut"].as_f64().unwrap_or(0.0)),
                    format!("{:.2}", l["goodput_ratio"].as_f64().unwrap_or(f64::NAN)),
                )
            } else {
                (String::new(), String::new(), String::new())
            };
            let _ = writeln!(
                s,
                "| {leg} | {run} | {} | {secs:.1} | {:.1} | {} | {server} | {per_cut} | {runner} | {ratio} | {} |",
                v["outcome"].as_str().unwrap_or("?"),
                size / secs / 1e6,
                v["proxy"]["cuts"],
                mib(v["vm_hwm_kib"].as_f64().unwrap_or(0.0) * 1024.0),
            );
        }
    }
    let p = &r["pyca"];
    if !p.is_null() {
        let _ = writeln!(s, "\n| pyca {} | link | completed | how it ended | s after capture | bytes to server ÷ file | addTrack requests | media packages | ingests | recording states |", p["pyca_version"].as_str().unwrap_or("4.4"));
        let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|---|");
        if let Some(e) = p["error"].as_str() {
            let _ = writeln!(s, "| pyca | | failed: {e} | | | | | | | |");
        }
        for run in ["flaky", "clean"] {
            let v = &p[run];
            if v.is_null() {
                continue;
            }
            let _ = writeln!(
                s,
                "| pyca | {run} | {} | {} | {:.1} | {:.3} | {} | {} | {} | {} |",
                if v["completed"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                v["ended"].as_str().unwrap_or("?"),
                v["seconds_after_capture"].as_f64().unwrap_or(f64::NAN),
                v["bytes_to_server_per_file"].as_f64().unwrap_or(f64::NAN),
                v["add_track_requests"].as_array().map_or(0, Vec::len),
                v["server"]["mediapackages"],
                v["server"]["ingests"],
                v["recording_states"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" → "))
                    .unwrap_or_default(),
            );
        }
        let _ = writeln!(
            s,
            "\npyca's cap: {:.0} s after its capture ended.",
            p["cap_s"].as_f64().unwrap_or(0.0)
        );
    }
    let l = &r["lecture"];
    if !l.is_null() {
        if let Some(e) = l["error"].as_str() {
            let _ = writeln!(s, "\nLecture leg failed: {e}");
        } else {
            let _ = writeln!(s, "\n| end of lecture → acknowledged ingest | stitched bytes | link B/s | raw transfer s | stitch s | upload s (to ingest ack) | (stitch + upload) ÷ raw (goal ≤ 1.2) | upload ÷ raw | peak memory VmHWM |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                s,
                "| {} min lecture | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {} |",
                l["minutes"],
                l["bytes"],
                l["rate"],
                l["raw_s"].as_f64().unwrap_or(f64::NAN),
                l["stitch_s"].as_f64().unwrap_or(f64::NAN),
                l["upload_s"].as_f64().unwrap_or(f64::NAN),
                l["ratio"].as_f64().unwrap_or(f64::NAN),
                l["upload_ratio"].as_f64().unwrap_or(f64::NAN),
                mib(l["upload"]["vm_hwm_kib"].as_f64().unwrap_or(0.0) * 1024.0),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reframe_closes_and_sets_the_length() {
        let h = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(reframe(h, Some(12)), "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 12\r\n\r\n");
    }

    #[test]
    fn heads_and_bodies_are_split() {
        let (h, rest) = read_head(&mut &b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"[..]).unwrap();
        assert_eq!(
            (h.as_str(), rest.as_slice()),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &b"body"[..])
        );
        let long = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 10_000]].concat();
        assert_eq!(
            split_reply(&long).unwrap().1.len(),
            10_000,
            "the whole body, not one read's worth"
        );
    }

    #[test]
    fn link_flags() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let l = Link {
            rate: 1000,
            cut_every: Some(16 * MIB),
            seed: 7,
        };
        assert_eq!(
            l.args(a).join(" "),
            "--upstream 127.0.0.1:9 --seed 7 --stdin --throttle-up 1000 --cut-every 16777216"
        );
        assert_eq!(
            Link {
                rate: 0,
                cut_every: None,
                seed: 7
            }
            .args(a)
            .join(" "),
            "--upstream 127.0.0.1:9 --seed 7 --stdin"
        );
    }

    #[test]
    fn options() {
        let root = Path::new("/r");
        let o = Options::parse(
            &[
                "--size".into(),
                "64MiB".into(),
                "--legs".into(),
                "opencast,pyca".into(),
                "--seed".into(),
                "5".into(),
            ],
            root,
        )
        .unwrap();
        assert_eq!(
            (o.size, o.seed, o.legs),
            (64 * MIB, 5, vec![Leg::Opencast, Leg::Pyca])
        );
        assert!(Options::parse(&["--legs".into(), "ftp".into()], root).is_err());
        assert!(Options::parse(&["--size".into(), "20MiB".into()], root).is_err());
    }
}
