//! The proxy against real servers on loopback (an echo server, a sink that counts what it got, a
//! tiny HTTP responder), with raw `TcpStream` clients: every fault, what the client sees, what
//! the server received, and the stats. The throughput measurement is `#[ignore]`d: run it with
//! `cargo test --release -p lectern-faultproxy --test proxy -- --ignored --nocapture`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern_faultproxy::{Clock, Close, Dir, DownMode, Plan, Proxy, What, DEFAULT_GARBAGE as GARBAGE, MIB};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Sends back everything, half-closes after end-of-file.
    Echo,
    /// Reads to end-of-file or error, then answers `got N\n`.
    Sink,
    /// Reads a request head, answers 200 `ok`, closes.
    Http,
}

/// How a server connection ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Eof,
    Reset,
    Error(String),
}

#[derive(Debug, Clone)]
struct Rec {
    /// Accept order.
    n: u64,
    received: u64,
    end: End,
    /// From the first byte to the last.
    span: Duration,
}

struct Server {
    addr: SocketAddr,
    recs: Arc<Mutex<Vec<Rec>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(mode: Mode) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let recs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (recs.clone(), stop.clone());
        std::thread::spawn(move || {
            for (n, c) in (0..).zip(l.incoming()) {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(c), r) = (c, r.clone()) else { continue };
                std::thread::spawn(move || serve(mode, n, c, &r));
            }
        });
        Server { addr, recs, stop }
    }

    /// The finished connections in accept order, once there are at least `n` of them.
    fn wait(&self, n: usize) -> Vec<Rec> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut v = self.recs.lock().unwrap().clone();
            if v.len() >= n || Instant::now() > deadline {
                v.sort_by_key(|r| r.n);
                assert!(v.len() >= n, "the server saw {} connections end, not {n}: {v:?}", v.len());
                return v;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mode: Mode, n: u64, mut c: TcpStream, recs: &Mutex<Vec<Rec>>) {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut received, mut first, mut last) = (0u64, None, Instant::now());
    let mut head = Vec::new();
    let end = loop {
        match c.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(k) => {
                received += k as u64;
                last = Instant::now();
                first.get_or_insert(last);
                match mode {
                    Mode::Echo => {
                        if c.write_all(&buf[..k]).is_err() {
                            break End::Error("echo write".into());
                        }
                    }
                    Mode::Sink => {}
                    Mode::Http => {
                        head.extend_from_slice(&buf[..k]);
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                            break End::Eof;
                        }
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
            Err(e) => break End::Error(e.to_string()),
        }
    };
    if mode == Mode::Sink && end == End::Eof {
        let _ = writeln!(c, "got {received}");
    }
    let _ = c.shutdown(Shutdown::Write);
    let span = first.map_or(Duration::ZERO, |f| last - f);
    recs.lock().unwrap().push(Rec { n, received, end, span });
}

/// Bytes that show a shifted or dropped piece.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ ((i >> 11) as u8) ^ salt).collect()
}

fn connect(p: &Proxy) -> TcpStream {
    let c = TcpStream::connect(p.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// Writes all of `data` from a thread (errors ignored: a cut is expected), then half-closes.
fn write_in_background(c: &TcpStream, data: Vec<u8>) -> std::thread::JoinHandle<std::io::Result<()>> {
    let mut w = c.try_clone().unwrap();
    std::thread::spawn(move || {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    })
}

/// Sends `data` on a new connection, half-closes and reads the reply to the end.
fn exchange(p: &Proxy, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(p.addr())?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(data)?;
    c.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    c.read_to_end(&mut reply)?;
    Ok(reply)
}

#[test]
fn large_transfers_pass_byte_exact_in_both_directions() {
    let server = Server::start(Mode::Echo);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1)).unwrap();
    let data = pattern(48 * MIB as usize, 7);
    let mut c = connect(&proxy);
    let writer = write_in_background(&c, data.clone());
    let mut back = Vec::with_capacity(data.len());
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap().unwrap();
    assert!(back == data, "the echo differs from what was sent ({} of {} bytes back)", back.len(), data.len());
    let recs = server.wait(1);
    assert_eq!((recs[0].received, &recs[0].end), (data.len() as u64, &End::Eof));
    let s = proxy.stats();
    let n = data.len() as u64;
    assert_eq!((s.up.read, s.up.forwarded, s.down.read, s.down.forwarded), (n, n, n, n));
    assert_eq!((s.connections, s.cuts, s.resets, s.stalls), (1, 0, 0, 0));
    assert!(s.events.is_empty(), "{:?}", s.events);
}

#[test]
fn a_cut_closes_at_exactly_n_bytes_and_counts_across_connections() {
    let server = Server::start(Mode::Sink);
    let n = 1_000_003;
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).cut_after(Dir::Up, n)).unwrap();
    // The client sends more than N and sees the connection end without a reply.
    let mut c = connect(&proxy);
    let writer = write_in_background(&c, pattern(4 * MIB as usize, 1));
    let mut reply = Vec::new();
    let read = c.read_to_end(&mut reply);
    assert!(read.is_err() || reply.is_empty(), "no reply after a cut: {read:?} {reply:?}");
    // The writes may all have fitted into socket buffers before the cut: only the read is sure.
    let _ = writer.join().unwrap();
    let recs = server.wait(1);
    assert_eq!((recs[0].received, &recs[0].end), (n, &End::Eof), "the server saw exactly N, then end-of-file");
    // Once only: the next connection passes.
    assert_eq!(exchange(&proxy, &pattern(2 * MIB as usize, 2)).unwrap(), format!("got {}\n", 2 * MIB).as_bytes());
    let s = proxy.stats();
    assert_eq!((s.cuts, s.resets, s.connections), (1, 0, 2));
    assert_eq!(s.cut_points(Dir::Up), [n]);
    assert_eq!(s.up.forwarded, n + 2 * MIB);
    assert!(s.up.read > n, "the proxy read past the cut and dropped it");

    // "Every 1000 bytes" counts across connections: 600-byte requests are cut every other time.
    let server = Server::start(Mode::Sink);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).cut_every(Dir::Up, 1000)).unwrap();
    let replies: Vec<bool> = (0..4).map(|_| exchange(&proxy, &[b'x'; 600]).is_ok_and(|r| r == b"got 600\n")).collect();
    assert_eq!(replies, [true, false, true, false]);
    let got: Vec<u64> = server.wait(4).iter().map(|r| r.received).collect();
    assert_eq!(got, [600, 400, 600, 400]);
    assert_eq!(proxy.stats().cut_points(Dir::Up), [1000, 2000]);
}

#[test]
fn a_cut_by_reset_resets_both_peers_after_delivering_n_bytes() {
    let server = Server::start(Mode::Sink);
    let n = 300_000;
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).cut_after(Dir::Up, n).resets()).unwrap();
    let mut c = connect(&proxy);
    let writer = write_in_background(&c, pattern(4 * MIB as usize, 3));
    // The kernel reports the reset once, to whichever call comes first: the reader or the writer.
    let read = c.read_to_end(&mut Vec::new());
    let wrote = writer.join().unwrap();
    assert!(is_reset(&read) || is_reset(&wrote), "the client sees a reset: read {read:?}, write {wrote:?}");
    let recs = server.wait(1);
    assert_eq!((recs[0].received, &recs[0].end), (n, &End::Reset));
    let s = proxy.stats();
    assert_eq!((s.cuts, s.resets), (1, 1));
    assert!(matches!(s.events[0].what, What::Cut(Close::Rst)));
}

#[test]
fn a_lost_reply_is_a_cut_of_the_reply_at_byte_zero() {
    let server = Server::start(Mode::Http);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).cut_after(Dir::Down, 0)).unwrap();
    let req = b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(exchange(&proxy, req).unwrap(), b"", "the reply never arrives");
    assert_eq!(server.wait(1)[0].received, req.len() as u64, "but the server got the request");
    assert!(exchange(&proxy, req).unwrap().starts_with(b"HTTP/1.1 200 OK"));
}

fn is_reset<T>(r: &std::io::Result<T>) -> bool {
    r.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset)
}

/// Uploads through the proxy in a loop, reconnecting after every cut, until `cuts` cuts; returns
/// the cut points and what the server received on each cut connection.
fn upload_until_cuts(plan: Plan, cuts: usize) -> (Vec<u64>, Vec<u64>) {
    let server = Server::start(Mode::Sink);
    let proxy = Proxy::start(server.addr, plan).unwrap();
    let chunk = pattern(64 * 1024, 9);
    while proxy.stats().cuts < cuts as u64 {
        let mut c = connect(&proxy);
        while c.write_all(&chunk).is_ok() && proxy.stats().cuts < cuts as u64 {}
    }
    let points = proxy.stats().cut_points(Dir::Up);
    let got = server.wait(cuts).iter().take(cuts).map(|r| r.received).collect();
    (points[..cuts].to_vec(), got)
}

#[test]
fn a_seed_replays_the_same_cut_points_and_other_seeds_differ() {
    let plan = |seed| Plan::exact_seed(seed).cut_random(Dir::Up, 64 * 1024, 512 * 1024);
    let (a, got_a) = upload_until_cuts(plan(7), 8);
    let (b, got_b) = upload_until_cuts(plan(7), 8);
    let (c, _) = upload_until_cuts(plan(8), 8);
    assert_eq!(a, b, "seed 7 twice");
    assert_eq!(got_a, got_b, "the server saw the same failure sequence");
    assert_ne!(a, c, "seed 7 and seed 8");
    let gaps: Vec<u64> = std::iter::once(a[0]).chain(a.windows(2).map(|w| w[1] - w[0])).collect();
    assert_eq!(got_a, gaps, "each connection carried exactly one gap");
    assert!(gaps.iter().all(|g| (64 * 1024..=512 * 1024).contains(g)), "{gaps:?}");
}

#[test]
fn a_stall_makes_a_client_with_a_read_timeout_time_out() {
    let server = Server::start(Mode::Echo);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).stall(Dir::Down, Duration::from_millis(700))).unwrap();
    let mut c = connect(&proxy);
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    c.write_all(b"hello").unwrap();
    let t = Instant::now();
    let err = c.read(&mut [0; 16]).expect_err("the reply is held");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err:?}");
    assert!(t.elapsed() >= Duration::from_millis(190));
    // After the stall the held reply arrives.
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0; 5];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let s = proxy.stats();
    assert_eq!(s.stalls, 1);
    assert_eq!(s.events[0].what, What::Stall(Duration::from_millis(700)));
}

#[test]
fn a_stall_after_n_bytes_holds_the_upload_at_n_and_the_reply_times_out() {
    let server = Server::start(Mode::Sink);
    let n = 200_000;
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).stall_after(Dir::Up, n, Duration::from_millis(600))).unwrap();
    // A 1 MiB request fits in the socket buffers, so the client's writes finish; then it waits
    // for the reply, as an uploader does after a chunk.
    let mut c = connect(&proxy);
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    c.write_all(&pattern(MIB as usize, 4)).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let err = c.read(&mut [0; 64]).expect_err("no reply during the stall");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err:?}");
    assert_eq!(proxy.stats().up.forwarded, n, "held at N");
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("got {}\n", MIB), "the rest went on after the stall");
    let e = &proxy.stats().events;
    assert_eq!((e[0].what.clone(), e[0].byte), (What::Stall(Duration::from_millis(600)), n));
}

#[test]
fn throttling_holds_the_rate_within_15_percent() {
    let rate = 2_000_000;
    let server = Server::start(Mode::Sink);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).throttle(Dir::Up, rate)).unwrap();
    let sent = exchange(&proxy, &pattern(rate as usize, 5)).unwrap();
    assert_eq!(sent, format!("got {rate}\n").as_bytes());
    let span = server.wait(1)[0].span.as_secs_f64();
    assert!((0.85..=1.15).contains(&span), "2 MB at 2 MB/s took {span:.3} s");

    // The other direction, shorter: 1 MB down at 2 MB/s.
    let server = Server::start(Mode::Echo);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).throttle(Dir::Down, rate)).unwrap();
    let mut c = connect(&proxy);
    let writer = write_in_background(&c, pattern(1_000_000, 6));
    let t = Instant::now();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    let span = t.elapsed().as_secs_f64();
    writer.join().unwrap().unwrap();
    assert_eq!(back.len(), 1_000_000);
    assert!((0.425..=0.575).contains(&span), "1 MB at 2 MB/s took {span:.3} s");
}

#[test]
fn a_garbage_reply_replaces_the_next_reply_once() {
    let server = Server::start(Mode::Http);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).garbage_reply()).unwrap();
    let req = b"GET /info/me.json HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(exchange(&proxy, req).unwrap(), GARBAGE);
    assert!(exchange(&proxy, req).unwrap().starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(server.wait(2).iter().map(|r| r.received).collect::<Vec<_>>(), [req.len() as u64; 2]);
    assert_eq!(proxy.stats().garbage, 1);
}

#[test]
fn down_refuses_resets_or_closes_and_ends_open_connections() {
    let server = Server::start(Mode::Echo);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1)).unwrap();
    let mut open = connect(&proxy);
    open.write_all(b"x").unwrap();
    open.read_exact(&mut [0]).unwrap();

    proxy.set_plan(Plan::exact_seed(1).down());
    let err = open.read(&mut [0]).expect_err("the open connection is reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert_eq!(TcpStream::connect(proxy.addr()).expect_err("refused").kind(), ErrorKind::ConnectionRefused);

    proxy.set_plan(Plan::exact_seed(1).down().down_mode(DownMode::Reset));
    let mut c = connect(&proxy);
    assert_eq!(c.read(&mut [0]).expect_err("reset").kind(), ErrorKind::ConnectionReset);

    proxy.set_plan(Plan::exact_seed(1).down().down_mode(DownMode::Close));
    let mut c = connect(&proxy);
    assert_eq!(c.read(&mut [0]).unwrap(), 0, "end-of-file");

    proxy.set_plan(Plan::exact_seed(1));
    assert_eq!(exchange(&proxy, b"back").unwrap(), b"back");
    let s = proxy.stats();
    assert_eq!((s.killed, s.refused, s.outages, s.connections), (1, 2, 1, 2));
    let whats: Vec<What> = s.events.iter().map(|e| e.what.clone()).collect();
    assert_eq!(whats, [What::Down, What::Killed(Close::Rst), What::Refused(DownMode::Reset), What::Refused(DownMode::Close), What::Up]);
}

#[test]
fn a_flap_schedule_follows_a_manual_clock() {
    let server = Server::start(Mode::Echo);
    let ms = Arc::new(AtomicU64::new(0));
    let m = ms.clone();
    let clock = Clock::from_fn(move || Duration::from_millis(m.load(Ordering::SeqCst)));
    let hour = Duration::from_secs(3600);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).clock(clock).flap(hour, 2 * hour)).unwrap();
    let up = |p: &Proxy| exchange(p, b"ping").is_ok_and(|r| r == b"ping");
    let set = |h: f64, expect_up: bool| {
        ms.store((h * 3_600_000.0) as u64, Ordering::SeqCst);
        // The accept thread looks every few milliseconds.
        let deadline = Instant::now() + Duration::from_secs(2);
        while up(&proxy) != expect_up {
            assert!(Instant::now() < deadline, "at {h} h the server should be {}", if expect_up { "up" } else { "down" });
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    set(0.0, false);
    set(0.99, false);
    set(1.0, true);
    set(2.9, true);
    set(3.0, false);
    set(4.5, true);
    let s = proxy.stats();
    let log: Vec<(What, u64)> = s.events.iter().map(|e| (e.what.clone(), e.at.as_secs() / 60)).collect();
    assert_eq!(log, [(What::Down, 0), (What::Up, 60), (What::Down, 180), (What::Up, 270)]);
    assert_eq!(s.outages, 2);
}

#[test]
fn an_hour_long_outage_passes_in_half_a_second_on_an_accelerated_clock() {
    let server = Server::start(Mode::Echo);
    let t = Instant::now();
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1).clock(Clock::accelerated(7200.0)).down_for(Duration::from_secs(3600))).unwrap();
    assert_eq!(TcpStream::connect(proxy.addr()).expect_err("down").kind(), ErrorKind::ConnectionRefused);
    while exchange(&proxy, b"x").is_err() {
        assert!(t.elapsed() < Duration::from_secs(3), "still down after {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(t.elapsed() >= Duration::from_millis(450), "up after {:?}", t.elapsed());
}

#[test]
fn an_unreachable_server_resets_the_client_and_dropping_the_proxy_closes_everything() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = Proxy::start(dead, Plan::exact_seed(1)).unwrap();
    let mut c = connect(&proxy);
    assert_eq!(c.read(&mut [0]).expect_err("reset").kind(), ErrorKind::ConnectionReset);
    assert_eq!(proxy.stats().upstream_failures, 1);

    let server = Server::start(Mode::Echo);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1)).unwrap();
    let addr = proxy.addr();
    let mut c = connect(&proxy);
    c.write_all(b"x").unwrap();
    c.read_exact(&mut [0]).unwrap();
    let t = Instant::now();
    drop(proxy);
    assert!(t.elapsed() < Duration::from_secs(1), "threads joined promptly");
    assert_eq!(c.read(&mut [0]).unwrap(), 0, "the open connection is closed");
    assert_eq!(TcpStream::connect(addr).expect_err("nothing listens").kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn the_binary_prints_its_address_and_its_stats() {
    let server = Server::start(Mode::Sink);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_faultproxy"))
        .args(["--upstream", &server.addr.to_string(), "--cut-after", "1KiB", "--seed", "7", "--stdin"])
        .env_remove(lectern_faultproxy::SEED_ENV)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    let _ = c.write_all(&[0; 4096]);
    let _ = c.shutdown(Shutdown::Write);
    let _ = c.read_to_end(&mut Vec::new());
    assert_eq!(server.wait(1)[0].received, 1024);
    drop(child.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(rest.starts_with("stats up_read="), "{rest}");
    assert!(rest.contains(" up_forwarded=1024 ") && rest.contains(" cuts=1 ") && rest.contains(" seed=7"), "{rest}");
}

/// A measurement, not a test: loopback throughput with no fault set.
#[test]
#[ignore]
fn throughput_256_mib_clean() {
    let server = Server::start(Mode::Sink);
    let proxy = Proxy::start(server.addr, Plan::exact_seed(1)).unwrap();
    let chunk = vec![0x5a; MIB as usize];
    for (name, addr) in [("direct", server.addr), ("through the proxy", proxy.addr())] {
        let mut c = TcpStream::connect(addr).unwrap();
        let t = Instant::now();
        for _ in 0..256 {
            c.write_all(&chunk).unwrap();
        }
        c.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        let s = t.elapsed().as_secs_f64();
        assert_eq!(reply, format!("got {}\n", 256 * MIB));
        println!("256 MiB {name}: {s:.3} s, {:.0} MB/s", 256.0 * MIB as f64 / s / 1e6);
    }
}
