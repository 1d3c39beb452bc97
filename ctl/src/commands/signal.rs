//! `procctl signal TARGET... SIGNAL`

use procctl_proto::{Request, Signal, Target};

use super::outcomes;
use crate::Status;
use crate::client::{Client, CtlError};
use crate::streams::Io;

pub fn run(client: &mut Client, targets: &[Target], signal: Signal, io: &mut Io) -> Result<Status, CtlError> {
    outcomes(client, targets, |target| Request::Signal { target, signal }, "signal", io)
}
