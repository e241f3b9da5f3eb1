//! `lab`: the sim board's scenarios on a real board over SSH, with the rig's relay and GPIO
//! loopback driven from this machine (docs/hil.md). It only parses the command line, builds the
//! SSH transport and owns the exit code; the runner is `lectern_hil_tests::lab`.
//!
//! `lab --host pi@10.0.0.5 --relay usbrelay:HURTM_1 --button pinctrl:5 --powerfail pinctrl:6 all`

use std::process::ExitCode;

use lectern_hil_tests::lab::{parse_args, run_all, Ssh, USAGE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let inv = match parse_args(&args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("lab: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut ssh = match Ssh::new(&inv.host, inv.rig.clone(), &inv.board.lectern) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lab: {e}");
            return ExitCode::from(2);
        }
    };
    let reports = run_all(&mut ssh, &inv);
    for r in &reports {
        let outcome = r.result.as_ref().map_or_else(|e| format!("FAILED: {e}"), |()| "passed".into());
        println!("{:<10} {outcome}  [{}]", r.scenario.name(), r.dir.display());
    }
    if reports.iter().all(|r| r.result.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
