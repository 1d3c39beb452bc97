//! `procctl scale NAME COUNT|auto`

use std::io::{Write, stderr, stdout};

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;

/// A count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTo {
    Count(u32),
    Auto,
}

pub fn parse_count(text: &str) -> Result<ScaleTo, String> {
    match text {
        "auto" => Ok(ScaleTo::Auto),
        _ => text.parse().map(ScaleTo::Count).map_err(|_| format!("expected a count or `auto`, found `{text}`")),
    }
}

pub fn run(client: &mut Client, name: String, count: ScaleTo) -> Result<Status, CtlError> {
    let request = match count {
        ScaleTo::Count(count) => Request::Scale { name, count },
        ScaleTo::Auto => Request::Autoscale { name },
    };
    match client.call(&request)? {
        Response::Scaled { name, to, .. } if count == ScaleTo::Auto => {
            printed(writeln!(stdout().lock(), "autoscaling of {name} is on ({to} instance(s) now)"))?;
            Ok(Status::Success)
        }
        Response::Scaled { name, from, to } => printed(output::scaled(&name, from, to, &mut stdout().lock())),
        Response::Outcomes(failures) => {
            printed(output::outcomes(&failures, &mut stdout().lock(), &mut stderr().lock()))
        }
        other => Err(unexpected(&other)),
    }
}
