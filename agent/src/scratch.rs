//! One read buffer per thread. Output and reply readers wait for readiness without a buffer
//! and read into this one, so a thousand idle instances hold no buffers of their own.

use std::cell::RefCell;

/// The most one read takes.
pub const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// What a non-blocking read into the scratch buffer found.
pub enum Read {
    /// The bytes were handed to the callback.
    Data,
    /// Nothing yet: wait for readiness again.
    WouldBlock,
    /// End of stream, or an error that ends it.
    End,
}

/// Runs one non-blocking `read` into the scratch buffer and hands what came to `take`.
pub fn read(read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>, take: impl FnOnce(&[u8])) -> Read {
    SCRATCH.with_borrow_mut(|buf| match read(buf) {
        Ok(0) => Read::End,
        Ok(n) => {
            take(&buf[..n]);
            Read::Data
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Read::WouldBlock,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Read::WouldBlock,
        Err(_) => Read::End,
    })
}
