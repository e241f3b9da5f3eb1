//! The guest side of `crash-states`: runs the journal workload (`lectern_logwrites::workload`)
//! on a media directory and, with a log-writes device name, marks every promise in its log.
//!
//! Usage: `logwrites-workload MEDIA_DIR [LOG_WRITES_DEVICE]`. Exit 0 after the whole sequence;
//! any error is printed and exits 1 (the guest's init reports it as `LECTERN-GUEST rc=1`).

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(media) = args.next().map(PathBuf::from) else {
        eprintln!("usage: logwrites-workload MEDIA_DIR [LOG_WRITES_DEVICE]");
        std::process::exit(2);
    };
    let dev = args.next().map(|d| d.to_string_lossy().into_owned());
    match lectern_logwrites::workload::run(&media, dev.as_deref()) {
        Ok(n) => eprintln!("logwrites-workload: {n} promises on {}", media.display()),
        Err(e) => {
            eprintln!("logwrites-workload: {e:#}");
            std::process::exit(1);
        }
    }
}
