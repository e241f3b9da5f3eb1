//! `lecternd`: the capture daemon. This file only parses arguments, validates the config and owns
//! the exit-code policy; `lecternd::run` does the work.
//!
//! Exit codes: 0 clean stop, 2 bad usage or invalid config (nothing under the media directory was
//! touched), 1 any other start-up failure. systemd's `RestartPreventExitStatus=2` keeps a bad
//! config from becoming a crash loop.

use std::path::PathBuf;
use std::process::ExitCode;

use lectern_config::{Config, DEFAULT_CONFIG};

const USAGE: &str = "usage: lecternd [--config FILE] [--check-config] [--print-default-config]";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut check_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => {
                    eprintln!("lecternd: --config needs a file\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--check-config" => check_only = true,
            "--print-default-config" => {
                print!("{DEFAULT_CONFIG}");
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("lecternd {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("lecternd: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let config = match config_path.as_deref().map(Config::load).unwrap_or_else(|| Ok(Config::defaults())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lecternd: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("lecternd: config {} is valid", config.source.as_ref().map_or("<embedded>".into(), |p| p.display().to_string()));
        return ExitCode::SUCCESS;
    }
    lecternd::logging::init();
    match lecternd::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: "lecternd", "cannot start: {e:#}");
            ExitCode::from(1)
        }
    }
}
