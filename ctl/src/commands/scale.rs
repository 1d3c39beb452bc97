//! `procctl scale NAME COUNT|auto`

use std::io::Write;

use procctl_proto::{Request, Response};

use super::printed;
use crate::Status;
use crate::client::{Client, CtlError, unexpected};
use crate::output;
use crate::streams::Io;

/// A count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTo {
    Count(u32),
    Auto,
}

pub fn parse_count(text: &str) -> Result<ScaleTo, String> {
    match text {
        "auto" => Ok(ScaleTo::Auto),
        _ => text.parse().map(ScaleTo::Count).map_err(|_| {
            format!("a count is a whole number, 0 or more (0 stops every instance), or `auto`, not `{text}`")
        }),
    }
}

pub fn run(client: &mut Client, name: String, count: ScaleTo, io: &mut Io) -> Result<Status, CtlError> {
    let request = match count {
        ScaleTo::Count(count) => Request::Scale { name, count },
        ScaleTo::Auto => Request::Autoscale { name },
    };
    match client.call(&request)? {
        Response::Scaled { name, to, .. } if count == ScaleTo::Auto => {
            printed(writeln!(io.out, "autoscaling of {name} is on ({to} instance(s) now)"))?;
            Ok(Status::Success)
        }
        Response::Scaled { name, from, to } => printed(output::scaled(&name, from, to, &mut io.out)),
        Response::Outcomes(failures) => printed(output::outcomes(&failures, &mut io.out, &mut io.err)),
        other => Err(unexpected(&other)),
    }
}
