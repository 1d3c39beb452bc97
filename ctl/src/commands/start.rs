//! `procctl start TARGET...`: returns when each instance runs or has failed

use procctl_proto::{Request, Target};

use super::outcomes;
use crate::Status;
use crate::client::{Client, CtlError};
use crate::streams::Io;

pub fn run(client: &mut Client, targets: &[Target], io: &mut Io) -> Result<Status, CtlError> {
    outcomes(client, targets, |target| Request::Start { target }, "start", io)
}
