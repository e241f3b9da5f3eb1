//! `faultproxy`: the fault proxy as a process, for manual runs and benches. It parses the flags
//! (`lectern_faultproxy::cli`), starts the proxy, prints the address it listens on as the first
//! line of stdout, and forwards until killed (or, with `--stdin`, until stdin closes, printing
//! the final stats). Exit code 2 is a bad command line, 1 a proxy that could not start.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lectern_faultproxy::{cli, Proxy};

fn main() {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            std::process::exit(2);
        }
    };
    let seed = opts.plan.seed();
    let proxy = match Proxy::start_on(opts.listen, opts.upstream, opts.plan) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultproxy: cannot listen on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    println!("{}", proxy.addr());
    let _ = std::io::stdout().flush();
    eprintln!("faultproxy: {} -> {} (seed {seed})", proxy.addr(), proxy.upstream());
    run(&proxy, opts.stats_every, opts.exit_on_stdin_eof);
}

/// Prints stats every `every` until stdin closes (with `--stdin`) or for ever.
fn run(proxy: &Proxy, every: Option<Duration>, exit_on_eof: bool) {
    let eof = Arc::new(AtomicBool::new(false));
    if exit_on_eof {
        let eof = eof.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            eof.store(true, Ordering::SeqCst);
        });
    }
    let tick = Duration::from_millis(100);
    let mut since = Duration::ZERO;
    while !eof.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        since += tick;
        if every.is_some_and(|e| since >= e) {
            eprintln!("faultproxy: stats {}", proxy.stats().summary());
            since = Duration::ZERO;
        }
    }
    println!("stats {}", proxy.stats().summary());
}
