//! The `lectern` command line, declared with clap's derive API: every command, flag and help text
//! in one place, from which `--help` (per subcommand), `--version`, spelling suggestions for a
//! mistyped command or flag, shell completions (`lectern completions SHELL`) and the man page
//! (`lectern man`) are all generated. `main.rs` only dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The operator CLI of a Lectern lecture-capture box: talks to `lecternd` over its control
/// socket.
#[derive(Debug, Parser)]
#[command(name = "lectern", version, about, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success; 1 the daemon refused or could not be reached, or the \
checked file has problems; 2 bad usage. The config defaults to $LECTERN_CONFIG, else the embedded defaults.")]
pub struct Cli {
    /// The daemon's config file (for its control socket and the sim board's socket).
    #[arg(short, long, global = true, env = "LECTERN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The control socket, instead of the one the config names.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's reply as JSON, unchanged (docs/control-api.md).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What the box is doing.
    Status,
    /// Start or stop an ad-hoc recording.
    #[command(subcommand)]
    Record(Record),
    /// Recordings with durations, parts, segments, bytes.
    Recordings {
        /// Only the newest N (by start), oldest of them first.
        #[arg(long, value_name = "N")]
        newest: Option<u32>,
    },
    /// The segments of one recording.
    Segments {
        /// The recording's id.
        id: String,
    },
    /// Upload jobs: progress, rate, ETA, attempts, endpoint, last error.
    Uploads {
        #[command(subcommand)]
        action: Option<Uploads>,
    },
    /// Install a RAUC bundle and reboot into it, each step deferred while recording or
    /// stitching, or while a lecture starts within 15 min.
    Update {
        /// The bundle; a relative path is made absolute (the daemon must be able to read it).
        bundle: PathBuf,
    },
    /// Apply a signed provisioning bundle (docs/provisioning.md), e.g. from a USB stick;
    /// refused while recording or stitching, or while a lecture starts within 15 min.
    Provision {
        /// The bundle; a relative path is made absolute (the daemon must be able to read it).
        bundle: PathBuf,
    },
    /// Save the running recording's newest preview picture (a JPEG, about one a second while
    /// asked for) and print the audio meter: is the camera pointed right, is the mic live?
    Preview {
        /// Where to write the JPEG.
        #[arg(short, long, default_value = "preview.jpg")]
        out: PathBuf,
    },
    /// Calendar files.
    #[command(subcommand)]
    Schedule(Schedule),
    /// Config files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The simulated board.
    #[command(subcommand)]
    Sim(Sim),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `lectern man > lectern.1`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum Record {
    /// Start an ad-hoc recording.
    Start {
        /// Its title.
        #[arg(long, value_name = "T")]
        title: Option<String>,
    },
    /// Stop the current recording.
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum Uploads {
    /// Queue a parked or waiting upload again, now.
    Retry {
        /// The recording's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Schedule {
    /// The events the agent would store from an .ics file, as JSON (uid, start/end RFC 3339 UTC,
    /// title, workflow, device names...; recurrences 14 days ahead). Each event it would skip,
    /// or a file it would refuse, is printed as FILE:LINE: why on stderr, and the exit is 1.
    Parse(FileArg),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config exactly as lecternd would; print each problem with file, key and
    /// expectation (exit 1), or that it is valid.
    Check(FileArg),
}

#[derive(Debug, Args)]
pub struct FileArg {
    /// The file.
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Sim {
    /// Press the simulated board's button.
    Button {
        /// How.
        #[arg(value_enum, default_value_t = Press::Short)]
        how: Press,
    },
    /// Assert or clear the simulated power-fail line.
    Powerfail {
        #[arg(value_enum)]
        how: OnOff,
    },
    /// The simulated LED.
    Led,
    /// The simulated board's LED and inputs, as one JSON line.
    State,
}

/// How the simulated button is pressed: a short press, a long press, or one edge.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Press {
    /// `press` on the command line and the sim socket's protocol.
    #[value(name = "press")]
    Short,
    Long,
    Down,
    Up,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl Press {
    pub fn word(self) -> &'static str {
        match self {
            Press::Short => "press",
            Press::Long => "long",
            Press::Down => "down",
            Press::Up => "up",
        }
    }
}

impl OnOff {
    pub fn word(self) -> &'static str {
        match self {
            OnOff::On => "on",
            OnOff::Off => "off",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every documented form (docs/control-api.md, the old hand-written usage) still parses, with
    /// the global flags before or after the command.
    #[test]
    fn documented_commands_parse() {
        for line in [
            "lectern status",
            "lectern --json status",
            "lectern status --json",
            "lectern --config /etc/lectern/lectern.toml --json recordings",
            "lectern --socket /run/x.sock record start --title T",
            "lectern record stop",
            "lectern segments ID",
            "lectern uploads",
            "lectern uploads retry ID",
            "lectern update b.raucb",
            "lectern provision hall-a.bundle",
            "lectern schedule parse x.ics",
            "lectern config check x.toml",
            "lectern sim button",
            "lectern sim button long",
            "lectern sim button press",
            "lectern sim powerfail on",
            "lectern sim led",
            "lectern sim state",
            "lectern -c x.toml sim state",
        ] {
            if let Err(e) = Cli::try_parse_from(line.split(' ')) {
                panic!("{line}: {e}");
            }
        }
    }

    #[test]
    fn a_misspelt_command_gets_a_suggestion() {
        let e = Cli::try_parse_from(["lectern", "staus"]).unwrap_err().to_string();
        assert!(e.contains("similar") && e.contains("status"), "{e}");
        let e = Cli::try_parse_from(["lectern", "record", "start", "--titel", "x"]).unwrap_err().to_string();
        assert!(e.contains("--title"), "{e}");
    }
}
