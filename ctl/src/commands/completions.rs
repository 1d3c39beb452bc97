//! `procctl completions SHELL`: the script is generated from the clap tree.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Status;
use crate::cli::Cli;
use crate::client::CtlError;

pub fn run(shell: Shell) -> Result<Status, CtlError> {
    clap_complete::generate(shell, &mut Cli::command(), "procctl", &mut std::io::stdout());
    Ok(Status::Success)
}
