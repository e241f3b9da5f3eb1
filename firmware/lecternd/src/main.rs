//! `lecternd`: the capture daemon. This file only parses arguments, validates the config and owns
//! the exit-code policy; `lecternd::run` does the work.
//!
//! Exit codes: 0 clean stop, 2 bad usage or invalid config (nothing under the media directory was
//! touched), 1 any other start-up failure. systemd's `RestartPreventExitStatus=2` keeps a bad
//! config from becoming a crash loop.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lectern_config::{Config, DEFAULT_CONFIG};
use lectern_provision::store::{Start, Store, TRIAL_STARTS};

mod memory;

/// Lecture-capture daemon: camera and mic to a crash-safe journal, schedule, uploads.
#[derive(Debug, Parser)]
#[command(name = "lecternd", version, about)]
#[command(after_help = "Exit codes: 0 clean stop; 1 start-up failure; 2 bad usage or invalid config (nothing under the media directory was touched). `lectern config check FILE` lists every problem of a config.")]
struct Args {
    /// The config file; without it, the embedded defaults (the simulated board).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the config and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the embedded default config (every key, its default and meaning) and exit.
    #[arg(long)]
    print_default_config: bool,
    /// The provisioning store (docs/provisioning.md). Once a bundle has been applied there, its
    /// `current/lectern.toml` is run instead of `--config`, and an apply restarts the daemon.
    #[arg(long, value_name = "DIR")]
    provision_store: Option<PathBuf>,
    /// Zero-touch enrolment file (url, token, ca_file, check_interval_s): fetch this box's
    /// signed bundle from it and apply it when idle (docs/provisioning.md).
    #[arg(long, value_name = "FILE")]
    enrol: Option<PathBuf>,
    /// The trusted fleet public keys (`*.pub`) bundles are checked against.
    #[arg(long, value_name = "DIR", default_value = "/etc/lectern/fleet-keys")]
    fleet_keys: PathBuf,
}

fn main() -> ExitCode {
    // Before any thread exists (lectern_capture::set_process_env says why).
    lectern_capture::set_process_env();
    // clap prints help and version (exit 0) and usage errors with suggestions (exit 2) itself.
    let args = Args::parse();
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let check_only = args.check_config;
    let config_path = match args.provision_store.as_deref().map(Store::config_path_of) {
        // A provisioned box runs the store's version; before the first bundle, `--config`.
        Some(provisioned) if provisioned.exists() => {
            eprintln!("lecternd: running the provisioned config {}", provisioned.display());
            Some(provisioned)
        }
        _ => args.config,
    };
    // A provisioned config (docs/provisioning.md) may be a version on trial: this start counts,
    // and one too many rolls back to the previous version before it is loaded.
    let store = config_path.as_deref().and_then(Store::of_config).filter(|_| !check_only);
    if let Some(store) = &store {
        match store.start(TRIAL_STARTS) {
            Ok(Start::Normal) => {}
            Ok(Start::Trial { version, start }) => eprintln!("lecternd: provisioned version {version} on trial: start {start} of {TRIAL_STARTS}"),
            Ok(Start::RolledBack { from, to }) => eprintln!("lecternd: provisioned version {from} never stayed up; rolled back to version {to}"),
            Err(e) => eprintln!("lecternd: {e}"),
        }
    }
    let config = match config_path.as_deref().map(Config::load).unwrap_or_else(|| Ok(Config::defaults())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lecternd: {e}");
            // A provisioned version whose config no longer loads goes back to the previous one,
            // and exit 1 (not 2) lets systemd start the daemon again with it.
            if let Some(Ok(Some(to))) = store.as_ref().map(Store::fail_trial) {
                eprintln!("lecternd: rolled back to provisioned version {to}");
                return ExitCode::from(1);
            }
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("lecternd: config {} is valid", config.source.as_ref().map_or("<embedded>".into(), |p| p.display().to_string()));
        return ExitCode::SUCCESS;
    }
    lecternd::logging::init();
    for failed in memory::tune() {
        log::warn!(target: "lecternd", "{failed}: the daemon may hold more memory (memory.rs)");
    }
    let provisioning = lecternd::Provisioning { store: args.provision_store, enrol: args.enrol, fleet_keys: args.fleet_keys };
    match lecternd::run(config, provisioning) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: "lecternd", "cannot start: {e:#}");
            // A version on trial that cannot even start (its media directory, socket or board
            // does not exist on this box) goes back at once: counting its starts would take
            // three more, and with the starts before them systemd's start limit (5 in 60 s)
            // could leave the unit failed instead of rolled back.
            if let Some(Ok(Some(to))) = store.as_ref().map(Store::fail_trial) {
                log::error!(target: "lecternd", "rolled back to provisioned version {to}");
            }
            ExitCode::from(1)
        }
    }
}
