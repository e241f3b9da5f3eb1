//! The clap command line of the built `lectern` binary: help per subcommand, `--version`,
//! suggestions and exit codes (0 success, 1 a problem in what was checked, 2 bad usage),
//! completions and the man page, and `lectern config check` on files in a temp directory.

use std::process::{Command, Output};

fn lectern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lectern")).args(args).env_remove("LECTERN_CONFIG").output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// (args, exit code, text expected in stdout+stderr)
#[test]
fn help_version_suggestions_and_exit_codes() {
    let version = format!("lectern {}", env!("CARGO_PKG_VERSION"));
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--version"], 0, &version),
        (&["--help"], 0, "Exit codes: 0 success"),
        (&["record", "start", "--help"], 0, "--title <T>"),
        (&["config", "check", "--help"], 0, "exactly as lecternd would"),
        (&["staus"], 2, "tip: a similar subcommand exists: 'status'"),
        (&["record", "start", "--titel", "x"], 2, "--title"),
        (&["sim", "powerfail", "maybe"], 2, "[possible values: on, off]"),
        (&[], 2, "Usage: lectern"),
        (&["completions", "bash"], 0, "_lectern()"),
        (&["man"], 0, ".TH lectern"),
        // Nothing listens on this socket: the daemon cannot be reached, exit 1 naming it.
        (&["--socket", "/nonexistent/lectern.sock", "status"], 1, "/nonexistent/lectern.sock"),
    ];
    for (args, code, expect) in cases {
        let out = lectern(args);
        let got = text(&out);
        assert_eq!(out.status.code(), Some(*code), "lectern {args:?}: {got}");
        assert!(got.contains(expect), "lectern {args:?}: expected {expect:?} in:\n{got}");
    }
}

#[test]
fn config_check_lists_every_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let good = write("good.toml", "[capture]\nframerate = 25\n");
    let out = lectern(&["config", "check", &good]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{good}: valid\n"));

    let bad = write("bad.toml", "[capture]\nframerate = 0\nwidth = 20\n");
    let out = lectern(&["config", "check", &bad]);
    let got = text(&out);
    assert_eq!(out.status.code(), Some(1), "{got}");
    for want in [
        format!("config {bad}: key `capture.width`: expected a number from 160 to 3840, found 20"),
        format!("config {bad}: key `capture.framerate`: expected a number from 1 to 120, found 0"),
        format!("{bad}: 2 problem(s)"),
    ] {
        assert!(got.contains(&want), "expected {want:?} in:\n{got}");
    }

    let missing = dir.path().join("missing.toml").display().to_string();
    let out = lectern(&["config", "check", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains(&format!("config {missing}: cannot read")), "{}", text(&out));
}
