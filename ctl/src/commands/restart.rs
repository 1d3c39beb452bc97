//! `procctl restart TARGET`: rolling; prints old and new pids

use procctl_proto::{Request, Target};

use super::outcomes;
use crate::Status;
use crate::client::{Client, CtlError};

pub fn run(client: &mut Client, target: Target) -> Result<Status, CtlError> {
    let request = Request::Restart { target: target.clone() };
    outcomes(client, &request, "restart", &target)
}
