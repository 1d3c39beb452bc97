//! `procctl start TARGET`: returns when each instance runs or has failed

use procctl_proto::{Request, Target};

use super::outcomes;
use crate::Status;
use crate::client::{Client, CtlError};

pub fn run(client: &mut Client, target: Target) -> Result<Status, CtlError> {
    let request = Request::Start { target: target.clone() };
    outcomes(client, &request, "start", &target)
}
