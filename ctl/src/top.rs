//! `procctl top`: the full-screen live view.

use crate::Status;
use crate::client::CtlError;
use crate::host::Endpoint;

pub fn run(_endpoint: &Endpoint, _colour: bool) -> Result<Status, CtlError> {
    Err(CtlError::Usage("top: not yet".into()))
}
