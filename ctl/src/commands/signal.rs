//! `procctl signal TARGET SIGNAL`

use procctl_proto::{Request, Signal, Target};

use super::outcomes;
use crate::Status;
use crate::client::{Client, CtlError};

pub fn run(client: &mut Client, target: Target, signal: Signal) -> Result<Status, CtlError> {
    let request = Request::Signal { target: target.clone(), signal };
    outcomes(client, &request, "signal", &target)
}
