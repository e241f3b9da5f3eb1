//! The `faultproxy` binary's flags: parsed and checked here, once, into [`Options`] (a listen
//! address, a resolved upstream and a [`Plan`]), so the binary only starts the proxy and waits.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::plan::{Clock, Close, Dir, DownMode, Gap, Plan, Span};

pub const USAGE: &str = "\
usage: faultproxy --upstream HOST:PORT [options]
Prints the address it listens on as the first line of stdout, then forwards until killed.
  --listen ADDR           where to listen (default 127.0.0.1:0)
  --seed N                seed of the random faults (LECTERN_FAULTPROXY_SEED overrides it)
  --cut-dir up|down       direction of the cuts below (default up: the upload)
  --cut-after SIZE        cut once, after SIZE bytes
  --cut-every SIZE        cut every SIZE bytes, counted across connections
  --cut-random MIN-MAX    cut after a random MIN..MAX bytes, again and again
  --reset                 cut with a reset (RST) rather than a FIN
  --stall-dir up|down     direction of the stalls below (default up)
  --stall DUR             stall at once for DUR
  --stall-after SIZE      stall once after SIZE bytes, for --stall-for
  --stall-random MIN-MAX  stall after every random MIN..MAX bytes, for --stall-for
  --stall-for DUR[-DUR]   how long (a range is drawn from the seed)
  --throttle-up RATE      bytes a second client -> server (e.g. 10MiB)
  --throttle-down RATE    bytes a second server -> client
  --garbage               replace the next reply with garbage, once
  --down                  the server is down (until restarted)
  --down-for DUR          down from the start for DUR, then up
  --flap DOWN,UP          down for DOWN, up for UP, repeating
  --down-mode refuse|reset|close   what down looks like (default refuse)
  --speedup F             the plan's clock runs F times faster than real time
  --stats-every DUR       print a stats line to stderr this often
  --stdin                 exit, printing the stats, when stdin reaches end-of-file
SIZE: 1234, 64KiB, 16MiB, 1GiB, 10MB (decimal) ...   DUR: 500ms, 5s, 5m, 1h (bare: seconds)";

/// Everything the binary needs, checked.
#[derive(Debug)]
pub struct Options {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub plan: Plan,
    pub stats_every: Option<Duration>,
    pub exit_on_stdin_eof: bool,
}

/// Parses the arguments after the program name; the error says which flag and why.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut args = args.into_iter();
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut upstream = None;
    let mut seed = None;
    let (mut cut_dir, mut stall_dir) = (Dir::Up, Dir::Up);
    let mut cuts: Vec<(Gap, Option<u64>)> = Vec::new();
    let mut reset = false;
    let mut stall_now = None;
    let mut stalls: Vec<(Gap, Option<u64>)> = Vec::new();
    let mut stall_for = None;
    let mut extra: Vec<Box<dyn FnOnce(Plan) -> Plan>> = Vec::new();
    let mut speedup = None;
    let mut stats_every = None;
    let mut exit_on_stdin_eof = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--upstream" => {
                let v = value()?;
                let addr = v.to_socket_addrs().map_err(|e| format!("--upstream {v}: {e}"))?.next();
                upstream = Some(addr.ok_or_else(|| format!("--upstream {v}: no address"))?);
            }
            "--seed" => seed = Some(value()?.parse::<u64>().map_err(|e| format!("--seed: {e}"))?),
            "--cut-dir" => cut_dir = dir(&value()?)?,
            "--cut-after" => cuts.push((Gap::Fixed(size(&value()?)?), Some(1))),
            "--cut-every" => cuts.push((Gap::Fixed(nonzero(size(&value()?)?, "--cut-every")?), None)),
            "--cut-random" => {
                let (lo, hi) = range(&value()?, size)?;
                cuts.push((Gap::Random(nonzero(lo, "--cut-random")?, hi), None));
            }
            "--reset" => reset = true,
            "--stall-dir" => stall_dir = dir(&value()?)?,
            "--stall" => stall_now = Some(duration(&value()?)?),
            "--stall-after" => stalls.push((Gap::Fixed(size(&value()?)?), Some(1))),
            "--stall-random" => {
                let (lo, hi) = range(&value()?, size)?;
                stalls.push((Gap::Random(nonzero(lo, "--stall-random")?, hi), None));
            }
            "--stall-for" => {
                let (lo, hi) = range(&value()?, duration)?;
                stall_for = Some(if lo == hi { Span::Fixed(lo) } else { Span::Random(lo, hi) });
            }
            "--throttle-up" | "--throttle-down" => {
                let d = if flag == "--throttle-up" { Dir::Up } else { Dir::Down };
                let rate = size(&value()?)?;
                extra.push(Box::new(move |p: Plan| p.throttle(d, rate)));
            }
            "--garbage" => extra.push(Box::new(Plan::garbage_reply)),
            "--down" => extra.push(Box::new(Plan::down)),
            "--down-for" => {
                let d = duration(&value()?)?;
                extra.push(Box::new(move |p: Plan| p.down_for(d)));
            }
            "--flap" => {
                let v = value()?;
                let (down, up) = v.split_once(',').ok_or_else(|| format!("--flap {v}: expected DOWN,UP"))?;
                let (down, up) = (duration(down)?, duration(up)?);
                extra.push(Box::new(move |p: Plan| p.flap(down, up)));
            }
            "--down-mode" => {
                let mode = match value()?.as_str() {
                    "refuse" => DownMode::Refuse,
                    "reset" => DownMode::Reset,
                    "close" => DownMode::Close,
                    other => return Err(format!("--down-mode {other}: expected refuse, reset or close")),
                };
                extra.push(Box::new(move |p: Plan| p.down_mode(mode)));
            }
            "--speedup" => {
                let f: f64 = value()?.parse().map_err(|e| format!("--speedup: {e}"))?;
                if !(f.is_finite() && f > 0.0) {
                    return Err("--speedup must be a positive number".into());
                }
                speedup = Some(f);
            }
            "--stats-every" => stats_every = Some(duration(&value()?)?),
            "--stdin" => exit_on_stdin_eof = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let upstream = upstream.ok_or_else(|| format!("--upstream is required\n{USAGE}"))?;
    if !stalls.is_empty() && stall_for.is_none() {
        return Err("--stall-after and --stall-random need --stall-for".into());
    }
    let mut plan = match seed {
        Some(s) => Plan::seeded(s),
        None => Plan::new(),
    };
    let close = if reset { Close::Rst } else { Close::Fin };
    for (gap, times) in cuts {
        plan = plan.cut(cut_dir, gap, times, close);
    }
    if let Some(d) = stall_now {
        plan = plan.stall(stall_dir, d);
    }
    for (gap, times) in stalls {
        plan = plan.stall_at(stall_dir, gap, times, stall_for.unwrap_or(Span::Fixed(Duration::ZERO)));
    }
    for f in extra {
        plan = f(plan);
    }
    if let Some(f) = speedup {
        plan = plan.clock(Clock::accelerated(f));
    }
    Ok(Options { listen, upstream, plan, stats_every, exit_on_stdin_eof })
}

fn dir(v: &str) -> Result<Dir, String> {
    match v {
        "up" => Ok(Dir::Up),
        "down" => Ok(Dir::Down),
        _ => Err(format!("{v}: expected up or down")),
    }
}

fn nonzero(n: u64, flag: &str) -> Result<u64, String> {
    if n == 0 {
        Err(format!("{flag}: a repeating fault needs a gap above 0 bytes"))
    } else {
        Ok(n)
    }
}

/// `A-B` (or a single value, meaning `A-A`), each parsed by `one`; A ≤ B.
fn range<T: PartialOrd + Copy>(v: &str, one: fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    let (lo, hi) = match v.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(v)?, one(v)?),
    };
    if lo > hi {
        return Err(format!("{v}: the range runs backwards"));
    }
    Ok((lo, hi))
}

/// Splits `16MiB` into `(16.0, "mib")`.
fn number_and_unit(v: &str) -> Result<(f64, String), String> {
    let v = v.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let n: f64 = v[..split].parse().map_err(|_| format!("{v}: expected a number with a unit"))?;
    Ok((n, v[split..].trim().to_ascii_lowercase()))
}

/// Bytes: a count with an optional decimal (kB, MB, GB) or binary (KiB, MiB, GiB) unit.
pub fn size(v: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(v)?;
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000 * 1000,
        "g" | "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("{v}: unknown size unit (B, kB, MB, GB, KiB, MiB, GiB)")),
    };
    Ok((n * mult as f64).round() as u64)
}

/// A duration: ms, s, m or h (a bare number is seconds).
pub fn duration(v: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(v)?;
    let secs = match unit.as_str() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{v}: unknown time unit (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        let s = |v: &str, n: u64| assert_eq!(size(v), Ok(n), "{v}");
        s("1234", 1234);
        s("16MiB", 16 << 20);
        s("16mib", 16 << 20);
        s("1.5KiB", 1536);
        s("10MB", 10_000_000);
        s("1GiB", 1 << 30);
        assert!(size("16 furlongs").is_err());
        assert!(size("MiB").is_err());
        let d = |v: &str, ms: u64| assert_eq!(duration(v), Ok(Duration::from_millis(ms)), "{v}");
        d("500ms", 500);
        d("5s", 5000);
        d("5", 5000);
        d("5m", 300_000);
        d("1h", 3_600_000);
        assert!(duration("5 fortnights").is_err());
    }

    fn args(v: &str) -> Result<Options, String> {
        parse(v.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_build_the_plan() {
        let o = args("--upstream 127.0.0.1:9 --seed 7 --cut-every 16MiB --reset --throttle-up 1MiB --flap 1h,2h --speedup 3600").unwrap();
        assert_eq!(o.upstream, "127.0.0.1:9".parse().unwrap());
        assert_eq!(o.listen.port(), 0);
        assert_eq!(o.plan.cuts.len(), 1);
        assert_eq!(o.plan.cuts[0].gap, Gap::Fixed(16 << 20));
        assert_eq!(o.plan.cuts[0].close, Close::Rst);
        assert_eq!(o.plan.throttle, [Some(1 << 20), None]);
        assert!(!o.plan.availability.is_up(Duration::from_secs(1800)));
        let o = args("--upstream 127.0.0.1:9 --cut-dir down --cut-random 8MiB-24MiB --stall-random 1MiB-2MiB --stall-for 1s-5s").unwrap();
        assert_eq!(o.plan.cuts[0].dir, Dir::Down);
        assert_eq!(o.plan.cuts[0].gap, Gap::Random(8 << 20, 24 << 20));
        assert_eq!(o.plan.stalls[0].span, Span::Random(Duration::from_secs(1), Duration::from_secs(5)));
        assert!(o.plan.is_random());
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let err = |v: &str, want: &str| {
            let e = args(v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        };
        err("--cut-every 1MiB", "--upstream is required");
        err("--upstream 127.0.0.1:9 --cut-every 0", "above 0 bytes");
        err("--upstream 127.0.0.1:9 --cut-random 24MiB-8MiB", "backwards");
        err("--upstream 127.0.0.1:9 --stall-after 1MiB", "need --stall-for");
        err("--upstream 127.0.0.1:9 --down-mode sideways", "refuse, reset or close");
        err("--upstream 127.0.0.1:9 --bogus", "unknown flag --bogus");
        err("--upstream", "--upstream needs a value");
    }
}
