//! `procctl import FILE...`: print a procctl.toml for other supervisors' files. Runs here,
//! without the agent.

use std::io::Write;
use std::path::PathBuf;

use crate::Status;
use crate::client::CtlError;
use crate::import::{self, Context, Format};

pub fn run(files: &[PathBuf], from: Option<Format>) -> Result<Status, CtlError> {
    let toml = import::import(files, from, &Context::of_this_process()).map_err(|e| CtlError::Failed(e.to_string()))?;
    super::printed(std::io::stdout().lock().write_all(toml.as_bytes()))?;
    Ok(Status::Success)
}
