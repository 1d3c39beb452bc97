//! `procctl shutdown`: stop every instance; the agent exits once this reply is sent.

use procctl_proto::{Response, WireError};

use crate::supervisor::Handle;

pub async fn run(sup: &Handle) -> Result<Response, WireError> {
    sup.shutdown().await.map(|()| Response::ShutDown)
}
