//! `procctl completions SHELL`: the script is generated from the clap tree.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Status;
use crate::cli::Cli;
use crate::client::CtlError;

pub fn run(shell: Shell) -> Result<Status, CtlError> {
    clap_complete::generate(shell, &mut visible(Cli::command()), "procctl", &mut std::io::stdout());
    Ok(Status::Success)
}

/// The tree without its hidden subcommands (clap_complete would offer them): the same
/// arguments and visible subcommands under a new root, since clap cannot remove one.
fn visible(cli: clap::Command) -> clap::Command {
    let subcommands: Vec<clap::Command> = cli.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned().collect();
    clap::Command::new("procctl")
        .version(crate::cli::VERSION)
        .about(cli.get_about().cloned().unwrap_or_default())
        .long_about(cli.get_long_about().cloned().unwrap_or_default())
        .args(cli.get_arguments().cloned())
        .subcommands(subcommands)
}
