//! `procctl events`: every lifecycle event from now on, until the client goes away.

use super::{Context, Reply};

pub fn run(context: &Context) -> Reply {
    Reply::Events(context.bus.subscribe())
}
