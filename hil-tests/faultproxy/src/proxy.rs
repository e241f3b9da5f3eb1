//! The I/O shell around the [`Engine`]: a listener on loopback, an accept thread that also keeps
//! the outage schedule, and per connection one thread per direction ("pumps") that read a piece,
//! ask the engine what may pass, and write it on.
//!
//! Threads: `faultproxy-accept` (polls the listener and the schedule every [`TICK`]); for each
//! connection `faultproxy-conn-N`, which pumps client → server and runs the server → client pump
//! as a scoped thread beside it. Every socket has [`POLL`] read and write timeouts, so a pump
//! notices within that time that its connection was torn down or the proxy is stopping, even
//! while blocked on a peer that neither reads nor writes.
//!
//! Locks: `core` (the engine, the clock and the stats) and `conns` (the open connections) are
//! never held together, and no lock is held across socket I/O or a sleep.
//!
//! Ending a connection ([`teardown`]) happens once, by whoever gets there first: a pump (a cut, a
//! garbage reply, a peer's reset), the accept thread (an outage) or `Drop`. A FIN is a
//! `shutdown(Both)` of both sockets. A reset sets SO_LINGER 0 on both and `shutdown(Read)` to wake
//! the pumps without sending a FIN; the RST goes out when the last handle to the socket closes,
//! once both pumps have returned. Before a cut's reset the proxy waits (briefly) for the bytes
//! already written to leave its send queue, so "cut after N" delivers N bytes either way.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::{Engine, Step};
use crate::plan::{Clock, Close, Dir, DownMode, Plan, SEED_ENV};
use crate::stats::{FaultEvent, Flow, Stats, What};

/// How often the accept thread looks at the listener and the schedule.
const TICK: Duration = Duration::from_millis(2);
/// Read and write timeouts on every socket: the latency of noticing a teardown.
const POLL: Duration = Duration::from_millis(50);
/// How often a stalled pump asks again.
const STALL_TICK: Duration = Duration::from_millis(2);
/// Connecting to the real server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a cut by reset waits for its last bytes to leave the send queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest piece a pump reads at once.
const BUF: usize = 128 * 1024;

/// The plan in force, its clock and the record of what was done.
struct Core {
    engine: Engine,
    clock: Clock,
    origin: Duration,
    plans: u32,
    stats: Stats,
}

impl Core {
    fn now(&self) -> Duration {
        self.clock.now().saturating_sub(self.origin)
    }

    fn record(&mut self, events: Vec<FaultEvent>) {
        for e in events {
            self.stats.record(e);
        }
    }

    fn apply(&mut self, plan: &Plan) {
        let mut ev = Vec::new();
        self.clock = plan.clock.clone();
        self.origin = self.clock.now();
        self.engine = Engine::new(plan, self.plans, &mut ev);
        self.stats.seed = plan.seed;
        self.record(ev);
        announce(plan, self.plans);
        self.plans += 1;
    }

    fn event(&mut self, conn: Option<u64>, what: What) {
        let e = self.engine.event(self.now(), conn, None, what);
        self.stats.record(e);
    }
}

/// Says which seed runs, where a failing test's output will show it.
fn announce(plan: &Plan, no: u32) {
    let seed = plan.seed;
    log::info!(target: "faultproxy", "plan {no}: seed {seed} ({SEED_ENV}={seed} replays it)");
    if plan.is_random() {
        eprintln!("faultproxy: plan {no} is random with seed {seed}; replay with {SEED_ENV}={seed}");
    }
}

/// One connection through the proxy.
struct Conn {
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
    dead: AtomicBool,
}

struct Shared {
    core: Mutex<Core>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// `[dir][0]` bytes read, `[dir][1]` bytes forwarded.
    flow: [[AtomicU64; 2]; 2],
    next_conn: AtomicU64,
    /// Rounds of the accept loop done, so that a plan change can wait for it to take effect.
    rounds: AtomicU64,
    stop: AtomicBool,
    /// Real time, for pacing.
    epoch: Instant,
    addr: SocketAddr,
    upstream: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running proxy. Dropping it stops it: every connection is closed and every thread joined.
pub struct Proxy {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of `upstream`, applying `plan`.
    pub fn start(upstream: SocketAddr, plan: Plan) -> io::Result<Proxy> {
        Proxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, plan)
    }

    /// Starts a proxy listening on `listen`.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr, plan: Plan) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut stats = Stats::default();
        let mut ev = Vec::new();
        let engine = Engine::new(&plan, 0, &mut ev);
        ev.into_iter().for_each(|e| stats.record(e));
        stats.seed = plan.seed;
        announce(&plan, 0);
        let clock = plan.clock.clone();
        let core = Core { engine, origin: clock.now(), clock, plans: 1, stats };
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            conns: Mutex::new(HashMap::new()),
            flow: Default::default(),
            next_conn: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            addr,
            upstream,
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new().name("faultproxy-accept".into()).spawn(move || accept_loop(&s, listener))?;
        log::info!(target: "faultproxy", "listening on {addr}, forwarding to {upstream}");
        let proxy = Proxy { shared, accept: Some(accept) };
        proxy.settle();
        Ok(proxy)
    }

    /// Waits until the accept thread has seen the plan in force: an outage has closed the
    /// listener and ended the open connections.
    fn settle(&self) {
        let start = self.shared.rounds.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.rounds.load(Ordering::SeqCst) < start + 2 && Instant::now() < deadline {
            std::thread::sleep(TICK / 2);
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: what a client is pointed at.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Replaces the plan at once: its byte counts and its clock start from zero now. Open
    /// connections stay open (a stall in progress ends unless the new plan stalls too). Returns
    /// once an outage the new plan starts with is in force.
    pub fn set_plan(&self, plan: Plan) {
        lock(&self.shared.core).apply(&plan);
        self.settle();
    }

    /// A copy of the counters and the event log so far.
    pub fn stats(&self) -> Stats {
        let mut s = lock(&self.shared.core).stats.clone();
        let flow = |d: Dir| {
            let f = &self.shared.flow[d.index()];
            Flow { read: f[0].load(Ordering::SeqCst), forwarded: f[1].load(Ordering::SeqCst) }
        };
        s.up = flow(Dir::Up);
        s.down = flow(Dir::Down);
        s
    }

    /// Waits until `pred` holds for the stats or `timeout` passes; returns the last stats seen
    /// and whether `pred` held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> (Stats, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) {
                return (s, true);
            }
            if Instant::now() >= deadline {
                return (s, false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The accept thread: keeps the listener open or closed as the schedule says, ends open
/// connections when an outage starts, hands new connections to their threads. On stop it closes
/// every connection and joins their threads.
fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut was_up = true;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut bind_failed = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let (up, mode) = {
            let mut core = lock(&shared.core);
            let now = core.now();
            let (up, mode) = (core.engine.is_up(now), core.engine.down_mode());
            if up != was_up {
                core.event(None, if up { What::Up } else { What::Down });
            }
            (up, mode)
        };
        if was_up && !up {
            let close = if mode == DownMode::Close { Close::Fin } else { Close::Rst };
            let open: Vec<Arc<Conn>> = lock(&shared.conns).values().cloned().collect();
            for c in open {
                lock(&shared.core).event(Some(c.id), What::Killed(close));
                teardown(shared, &c, close, false);
            }
        }
        was_up = up;
        if up || mode != DownMode::Refuse {
            if listener.is_none() {
                match TcpListener::bind(shared.addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                    Ok(l) => {
                        listener = Some(l);
                        bind_failed = false;
                    }
                    Err(e) if !bind_failed => {
                        log::warn!(target: "faultproxy", "cannot listen on {} again: {e}; retrying", shared.addr);
                        bind_failed = true;
                    }
                    Err(_) => {}
                }
            }
        } else {
            listener = None;
        }
        if let Some(l) = &listener {
            loop {
                match l.accept() {
                    Ok((client, _)) => {
                        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                        if up {
                            spawn_conn(shared, id, client, &mut workers);
                        } else {
                            refuse(shared, id, client, mode);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!(target: "faultproxy", "accept: {e}");
                        break;
                    }
                }
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = workers.into_iter().partition(|h| h.is_finished());
        done.into_iter().for_each(|h| drop(h.join()));
        workers = running;
        shared.rounds.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(TICK);
    }
    drop(listener);
    let open: Vec<Arc<Conn>> = lock(&shared.conns).values().cloned().collect();
    for c in open {
        teardown(shared, &c, Close::Fin, false);
    }
    for h in workers {
        let _ = h.join();
    }
}

fn refuse(shared: &Shared, id: u64, client: TcpStream, mode: DownMode) {
    lock(&shared.core).event(Some(id), What::Refused(mode));
    if mode == DownMode::Close {
        let _ = client.shutdown(Shutdown::Both);
    } else if let Err(e) = set_linger_zero(&client) {
        log::warn!(target: "faultproxy", "conn {id}: cannot set SO_LINGER: {e}");
    }
}

fn spawn_conn(shared: &Arc<Shared>, id: u64, client: TcpStream, workers: &mut Vec<JoinHandle<()>>) {
    let s = shared.clone();
    match std::thread::Builder::new().name(format!("faultproxy-conn-{id}")).spawn(move || serve(&s, id, client)) {
        Ok(h) => workers.push(h),
        Err(e) => log::error!(target: "faultproxy", "conn {id}: cannot start its thread: {e}"),
    }
}

fn serve(shared: &Shared, id: u64, client: TcpStream) {
    let upstream = match TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) {
        Ok(u) => u,
        Err(e) => {
            log::warn!(target: "faultproxy", "conn {id}: server {} unreachable: {e}", shared.upstream);
            lock(&shared.core).event(Some(id), What::UpstreamFailed);
            let _ = set_linger_zero(&client);
            return;
        }
    };
    for s in [&client, &upstream] {
        let set = s.set_nonblocking(false).and(s.set_nodelay(true)).and(s.set_read_timeout(Some(POLL))).and(s.set_write_timeout(Some(POLL)));
        if let Err(e) = set {
            log::warn!(target: "faultproxy", "conn {id}: socket options: {e}");
        }
    }
    lock(&shared.core).stats.connections += 1;
    let conn = Arc::new(Conn { id, client, upstream, dead: AtomicBool::new(false) });
    lock(&shared.conns).insert(id, conn.clone());
    std::thread::scope(|scope| {
        let down = std::thread::Builder::new().name(format!("faultproxy-conn-{id}-down")).spawn_scoped(scope, || pump(shared, &conn, Dir::Down));
        if let Err(e) = down {
            log::error!(target: "faultproxy", "conn {id}: cannot start its reply pump: {e}");
            teardown(shared, &conn, Close::Rst, false);
            return;
        }
        pump(shared, &conn, Dir::Up);
    });
    lock(&shared.conns).remove(&id);
}

/// Moves bytes in one direction of one connection until end-of-file, an error or a fault.
fn pump(shared: &Shared, conn: &Conn, dir: Dir) {
    let (src, dst) = match dir {
        Dir::Up => (&conn.client, &conn.upstream),
        Dir::Down => (&conn.upstream, &conn.client),
    };
    let flow = &shared.flow[dir.index()];
    let over = || conn.dead.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst);
    let mut buf = vec![0u8; BUF];
    loop {
        if over() {
            return;
        }
        let piece = lock(&shared.core).engine.piece(dir, BUF);
        let n = match (&*src).read(&mut buf[..piece]) {
            Ok(0) => {
                // A half-close passes through: the request is complete, the reply may follow.
                if !over() {
                    let _ = dst.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                if !over() {
                    log::debug!(target: "faultproxy", "conn {}: {dir:?} read: {e}; passing the reset on", conn.id);
                    teardown(shared, conn, Close::Rst, false);
                }
                return;
            }
        };
        flow[0].fetch_add(n as u64, Ordering::SeqCst);
        let mut off = 0;
        while off < n {
            if over() {
                return;
            }
            let (step, wait) = {
                let mut core = lock(&shared.core);
                let now = core.now();
                let mut ev = Vec::new();
                let step = core.engine.admit(dir, n - off, now, conn.id, &mut ev);
                core.record(ev);
                let wait = match step {
                    Step::Forward { n, .. } => core.engine.pace(dir, n, shared.epoch.elapsed().as_nanos() as u64),
                    _ => Duration::ZERO,
                };
                (step, wait)
            };
            match step {
                Step::Wait => std::thread::sleep(STALL_TICK),
                Step::Cut(close) => {
                    teardown(shared, conn, close, true);
                    return;
                }
                Step::Garbage(bytes) => {
                    let _ = write_all(conn, shared, dst, &bytes);
                    teardown(shared, conn, Close::Fin, true);
                    return;
                }
                Step::Forward { n: k, cut } => {
                    std::thread::sleep(wait);
                    if let Err(e) = write_all(conn, shared, dst, &buf[off..off + k]) {
                        if !over() {
                            log::debug!(target: "faultproxy", "conn {}: {dir:?} write: {e}; passing the reset on", conn.id);
                            teardown(shared, conn, Close::Rst, false);
                        }
                        return;
                    }
                    flow[1].fetch_add(k as u64, Ordering::SeqCst);
                    off += k;
                    if let Some(close) = cut {
                        teardown(shared, conn, close, true);
                        return;
                    }
                }
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// `write_all` that gives up once the connection is torn down or the proxy stops.
fn write_all(conn: &Conn, shared: &Shared, mut dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match dst.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_timeout(&e) => {
                if conn.dead.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
                    return Err(io::Error::other("connection torn down"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends a connection, once; see the module doc. `drain`: let written bytes leave first.
fn teardown(shared: &Shared, conn: &Conn, close: Close, drain: bool) {
    if conn.dead.swap(true, Ordering::SeqCst) {
        return;
    }
    let both = [&conn.client, &conn.upstream];
    match close {
        Close::Fin => both.iter().for_each(|s| drop(s.shutdown(Shutdown::Both))),
        Close::Rst => {
            for s in both {
                if drain {
                    wait_sent(s, DRAIN_TIMEOUT);
                }
                if let Err(e) = set_linger_zero(s) {
                    log::warn!(target: "faultproxy", "conn {}: cannot set SO_LINGER, closing with FIN: {e}", conn.id);
                }
                let _ = s.shutdown(Shutdown::Read);
            }
        }
    }
    // The registry's handle must go too, or the sockets stay open until the pumps are joined.
    lock(&shared.conns).remove(&conn.id);
}

/// SO_LINGER {on, 0}: the close that follows sends RST and discards unsent data.
fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor, and a pointer to a `linger` of the size passed.
    let r = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&raw const l).cast(), std::mem::size_of::<libc::linger>() as libc::socklen_t)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until the socket's send queue is empty (TIOCOUTQ: bytes not yet acknowledged), or
/// `timeout` passes: a peer that stopped reading must not hold a cut up for ever.
fn wait_sent(s: &TcpStream, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: a valid socket descriptor and a pointer to an int, as TIOCOUTQ expects.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if r != 0 || queued == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
