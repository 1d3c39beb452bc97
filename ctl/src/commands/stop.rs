//! `procctl stop TARGET`: returns when the processes are gone

use procctl_proto::{Request, Target};

use super::outcomes;
use crate::Status;
use crate::client::{Client, CtlError};

pub fn run(client: &mut Client, target: Target) -> Result<Status, CtlError> {
    let request = Request::Stop { target: target.clone() };
    outcomes(client, &request, "stop", &target)
}
