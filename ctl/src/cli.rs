//! The clap tree. Its doc comments are the `--help` text users read: keep them true.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use procctl_proto::{Signal, Target, WaitFor};

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (protocol 3)");

/// Control procagent: list, start, stop, restart, signal and scale supervised processes.
///
/// TARGET is `all`, a process NAME (all its instances) or NAME:INDEX (one instance); the
/// commands that take targets take several (`procctl restart web worker:2`).
/// Exit status: 0 success, 1 refused or failed, 2 usage error, 3 agent unreachable.
#[derive(Debug, Parser)]
#[command(name = "procctl", version = VERSION)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Command,
}

// The options every command takes, before its name or after it. (Not a doc comment: clap
// would make it the about text of every command that flattens these.)
//
// Each subcommand has them as its own, not as clap's global arguments: clap copies a global
// argument into every subcommand at each parse (three options into twenty-odd subcommands,
// about a fifth of what procctl allocates for a `list`), where a subcommand's own arguments
// are built, with `defer`, only when it is the one used.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Options {
    /// The agent's socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Run the command on the agent of another machine, through ssh: ssh://[USER@]HOST[:PORT][/SOCKET] (repeat or separate with commas for several) [default: $PROCCTL_HOST]
    #[arg(long, value_name = "URL")]
    pub host: Vec<String>,
    /// Colour in tables and `top`: auto is on a terminal without NO_COLOR [default: auto]
    #[arg(long, value_name = "WHEN")]
    pub color: Option<ColorChoice>,
}

impl Options {
    /// These options, with `later`'s (given after the subcommand's name) taking precedence
    /// and its hosts added.
    pub fn then(mut self, later: &Options) -> Options {
        if later.socket.is_some() {
            self.socket.clone_from(&later.socket);
        }
        self.host.extend(later.host.iter().cloned());
        self.color = later.color.or(self.color);
        self
    }
}

impl Cli {
    /// The options given before the subcommand's name and after it.
    pub fn options(&self) -> Options {
        self.options.clone().then(self.command.options())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// One row per instance: NAME, INSTANCE, PID, STATE, UPTIME, RESTARTS, LAST EXIT, CPU, MEM, and HEALTH and STATUS when an instance has them
    ///
    /// CPU is the percent of one CPU since the previous sample of that instance (the first:
    /// since its start; a `list` within a quarter second of a sample shows that sample again),
    /// MEM the resident memory of its whole tree. HEALTH is ok or failing for instances with
    /// a health check; STATUS the last STATUS= text an instance sent.
    List {
        /// What to list: `all`, a process NAME or NAME:INDEX, several may be given [default: all]
        #[arg(value_name = "TARGET")]
        targets: Vec<Target>,
        /// Print one JSON array with stable keys instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        options: Options,
    },
    /// Print the pids of running instances, one per line (exit 1 when none runs)
    Pid {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        #[command(flatten)]
        options: Options,
    },
    /// Start stopped, exited or fatal instances; returns when each is running
    Start {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        #[command(flatten)]
        options: Options,
    },
    /// Stop gracefully (stop_signal, stop_timeout, then SIGKILL); returns when they are gone
    Stop {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        #[command(flatten)]
        options: Options,
    },
    /// Warm restart, one instance at a time, each replacement running before the next; prints each old and new pid as it happens
    ///
    /// A replacement that does not come up halts the roll. Instances that were not running
    /// when asked (stopped, exited, fatal, or still trying) are started after the others have
    /// rolled; their failure halts nothing.
    Restart {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        #[command(flatten)]
        options: Options,
    },
    /// Send a signal (a name like HUP or a number) to each instance's process group
    Signal {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        #[arg(value_name = "SIGNAL")]
        signal: Signal,
        #[command(flatten)]
        options: Options,
    },
    /// Start or stop instances until COUNT exist; the count survives agent restarts
    Scale {
        /// The process NAME
        #[arg(value_parser = parse_name)]
        name: String,
        /// How many instances: a whole number, 0 or more (0 stops them all; pauses autoscaling of NAME), or `auto` (resumes it)
        #[arg(allow_negative_numbers = true, value_parser = crate::commands::scale::parse_count)]
        count: crate::commands::scale::ScaleTo,
        #[command(flatten)]
        options: Options,
    },
    /// Write a message (the words joined by spaces) to each target instance's pipe; `-` reads one message per line from stdin
    ///
    /// Without --reply, returns once every message is written to each instance's pipe. A full
    /// queue waits for room while the instance keeps reading; an instance that reads nothing
    /// for --timeout fails the send, which says how many of its messages were accepted.
    Send {
        /// Deliver each message to one running instance of NAME, round-robin
        #[arg(long)]
        any: bool,
        /// Wait for one reply line from each instance and print it (prefixed NAME:INDEX when several)
        #[arg(long)]
        reply: bool,
        /// How long an instance may read nothing (or, with --reply, take to answer)
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        /// `all`, a process NAME (all its instances) or NAME:INDEX; with --any, a NAME
        target: Target,
        /// The message, or `-` to read messages from stdin
        #[arg(required = true, value_name = "MSG", value_parser = parse_message)]
        message: Vec<String>,
        #[command(flatten)]
        options: Options,
    },
    /// Show the last lines of captured stdout and stderr, interleaved by time
    Logs {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        /// How many lines
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u32,
        /// Then keep printing new lines until interrupted
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        options: Options,
    },
    /// Stream lifecycle events until interrupted
    Events {
        /// One JSON object per line instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        options: Options,
    },
    /// Re-read the config: add, remove, restart changed (rolling), rescale; leave the rest alone
    ///
    /// Prints what changed. An invalid file is refused with its file and line, and nothing
    /// running changes. The agent does the same on SIGHUP.
    Reload {
        #[command(flatten)]
        options: Options,
    },
    /// Replace the running agent with a new binary in place, keeping every instance running
    ///
    /// Same agent pid; every instance keeps its pid, pipes, output capture and listening
    /// sockets. The new binary is asked first whether it can take over; if it cannot (or does
    /// not exist) nothing changes and this exits 1 saying why. Prints both versions once the
    /// new agent serves. The agent does the same on SIGUSR2.
    Upgrade {
        /// The new procagent [default: the path the agent was started from]
        #[arg(long, value_name = "PATH")]
        binary: Option<String>,
        #[command(flatten)]
        options: Options,
    },
    /// Wait until every instance of TARGET is in a state (or gone); exit 1 at the timeout, naming those that are not
    ///
    /// Waits on the agent's events, never by polling, and returns as soon as the last
    /// instance gets there.
    Wait {
        /// `all`, a process NAME (all its instances) or NAME:INDEX (one instance); several may be given
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<Target>,
        /// running (ready), stopped, exited, fatal, or gone (the instances no longer exist)
        #[arg(long = "for", value_name = "STATE", default_value = "running")]
        until: WaitFor,
        /// How long to wait
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        options: Options,
    },
    /// Print the metrics in the OpenMetrics text format, as `procagent --metrics` serves them
    ///
    /// Through the control socket, so no port has to open: for node_exporter's textfile
    /// collector (write to a temporary file, then rename it to NAME.prom) or a quick look.
    Metrics {
        #[command(flatten)]
        options: Options,
    },
    /// Stop every instance, then the agent exits
    Shutdown {
        #[command(flatten)]
        options: Options,
    },
    /// Print a procctl.toml for the programs of a supervisord config, a Procfile or a pm2 ecosystem.json
    ///
    /// Reads each FILE (supervisord's [include] files too) and prints on stdout a config that
    /// procagent loads as it is: `procctl import /etc/supervisor/supervisord.conf > procctl.toml`.
    /// Settings procctl has are carried over, with the other supervisor's defaults where they
    /// differ from procctl's; each one it cannot carry over becomes a comment naming it and why.
    /// Runs without the agent. A file it cannot read fails (exit 1) naming the file and line.
    Import {
        /// supervisord .conf or .ini, Procfile, or pm2 ecosystem .json
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// What every FILE is [default: told by its content]
        #[arg(long, value_name = "FORMAT")]
        from: Option<crate::import::Format>,
        #[command(flatten)]
        options: Options,
    },
    /// A full-screen live view: a row per instance, the selected one's log below; `?` lists the keys
    ///
    /// Keys: arrows or j/k select, r restart, s stop or start, + and - scale the selected
    /// process, / filter by name, l full-height logs, ? help, q or Ctrl-C quit. Exit 2 when
    /// stdout is not a terminal.
    Top {
        #[command(flatten)]
        options: Options,
    },
    /// Join stdin and stdout to the local agent's socket until either side closes
    ///
    /// What `--host ssh://` runs on the far side; exit 3 when the agent is unreachable.
    DialStdio {
        #[command(flatten)]
        options: Options,
    },
    /// Print a completion script for a shell
    Completions {
        shell: clap_complete::Shell,
        #[command(flatten)]
        options: Options,
    },
    /// Write the man pages (procctl.1 and one procctl-SUBCOMMAND.1 each) into DIR
    ///
    /// For packagers; the copies in man/ are kept up to date by a test.
    #[command(hide = true)]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        options: Options,
    },
}

impl Command {
    /// The options given after this subcommand's name.
    pub fn options(&self) -> &Options {
        match self {
            Command::List { options, .. }
            | Command::Pid { options, .. }
            | Command::Start { options, .. }
            | Command::Stop { options, .. }
            | Command::Restart { options, .. }
            | Command::Signal { options, .. }
            | Command::Scale { options, .. }
            | Command::Send { options, .. }
            | Command::Logs { options, .. }
            | Command::Events { options, .. }
            | Command::Reload { options, .. }
            | Command::Upgrade { options, .. }
            | Command::Wait { options, .. }
            | Command::Metrics { options, .. }
            | Command::Shutdown { options, .. }
            | Command::Import { options, .. }
            | Command::Top { options, .. }
            | Command::DialStdio { options, .. }
            | Command::Completions { options, .. }
            | Command::Manpages { options, .. } => options,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    procctl_proto::duration::parse(text)
}

fn parse_message(text: &str) -> Result<String, String> {
    if text.contains(['\n', '\r']) {
        return Err("a message is one line: it cannot contain a newline".into());
    }
    Ok(text.to_string())
}

fn parse_name(text: &str) -> Result<String, String> {
    procctl_proto::target::check_name(text).map(|()| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_take_several_targets_and_signal_takes_its_signal_last() {
        let cli = Cli::try_parse_from(["procctl", "signal", "web", "worker:2", "HUP"]).unwrap();
        let Command::Signal { targets, signal, .. } = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!(targets, ["web".parse().unwrap(), "worker:2".parse().unwrap()]);
        assert_eq!(signal, Signal::HUP);
        let cli = Cli::try_parse_from(["procctl", "--host", "ssh://a,ssh://b", "restart", "web", "db"]).unwrap();
        assert_eq!(cli.options().host, ["ssh://a,ssh://b"]);
        assert!(Cli::try_parse_from(["procctl", "restart"]).is_err());
        let cli = Cli::try_parse_from(["procctl", "list"]).unwrap();
        assert!(matches!(cli.command, Command::List { targets, .. } if targets.is_empty()));
    }

    #[test]
    fn the_common_options_go_before_the_command_or_after_it_and_the_later_ones_count() {
        let options = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().options();
        // (argv, socket, hosts, colour)
        type Case = (&'static [&'static str], Option<&'static str>, &'static [&'static str], Option<ColorChoice>);
        let cases: [Case; 6] = [
            (&["procctl", "list"], None, &[], None),
            (&["procctl", "--socket", "/a", "list"], Some("/a"), &[], None),
            (&["procctl", "list", "--socket", "/b", "--json"], Some("/b"), &[], None),
            (&["procctl", "--socket", "/a", "list", "--socket", "/b"], Some("/b"), &[], None),
            (&["procctl", "--host", "ssh://a", "pid", "w", "--host", "ssh://b"], None, &["ssh://a", "ssh://b"], None),
            (&["procctl", "--color", "never", "list", "--color", "always"], None, &[], Some(ColorChoice::Always)),
        ];
        for (argv, socket, hosts, color) in cases {
            let got = options(argv);
            assert_eq!(got.socket.as_deref(), socket.map(std::path::Path::new), "{argv:?}");
            assert_eq!(got.host, hosts, "{argv:?}");
            assert_eq!(got.color, color, "{argv:?}");
        }
        assert!(Cli::try_parse_from(["procctl", "dial-stdio", "--socket", "/s"]).is_ok());
        assert!(Cli::try_parse_from(["procctl", "--color", "sometimes", "list"]).is_err());
    }

    #[test]
    fn the_version_names_the_protocol() {
        assert!(VERSION.ends_with(&format!("(protocol {})", procctl_proto::PROTOCOL_VERSION)));
    }
}
