//! The socket: a safe bind (`bind`: a trusted 0700 directory, 0600 socket, stale file
//! replaced, live agent refused), the accept loop (here), and a task per connection
//! (`connection`: peer check, hello, then request after request, with the framing beside it).
//! interprocess is the local-socket layer: its listener accepts, its peer credentials decide
//! who is served.

mod bind;
mod connection;

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::os::unix::uds_local_socket as uds;
use tokio::sync::mpsc;

use crate::handlers::Context;

pub use bind::bind;
use connection::{connection, exiting};

/// Connections served at once unless `--max-connections` says otherwise; past it a client
/// is told so and closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the rest of a frame may take once its header has come.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may leave a reply unread before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until dropped. Each connection task holds a clone of `alive`, so
/// the caller can wait for in-flight replies before exiting. Once the supervisor is gone
/// (the agent is exiting), `alive` is let go, followers are ended, and whoever still
/// connects is told the agent is shutting down.
pub async fn serve(listener: OwnedFd, context: Context, alive: mpsc::Sender<()>, max_connections: usize) {
    let listener = match uds::tokio::Listener::try_from(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log!("cannot serve the socket: {e}");
            return;
        }
    };
    let own_uid = nix::unistd::geteuid().as_raw();
    let open = context.tally.connections.clone();
    let mut alive = Some(alive);
    let mut changes = context.changes.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = exiting(&mut changes), if alive.is_some() => {
                alive = None;
                continue;
            }
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                log!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = context.clone();
        let alive = alive.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let count = open.fetch_add(1, Ordering::Relaxed) + 1;
            connection(stream, context, own_uid, count, max_connections).await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop(alive);
        });
    }
}
