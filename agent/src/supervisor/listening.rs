//! The supervisor's side of `listen`: the bound sockets (`listen::Listening`) shared with the
//! spawner, and a reload's new set made the open one.

use super::Supervisor;

impl Supervisor {
    /// Hands the listening socket under `key` to the spawner; a failure is logged, and the
    /// instances that need it then fail to start, saying so.
    pub(super) fn share_listener(&mut self, key: u64) {
        if let Some(fd) = self.listening.by_key(key)
            && let Err(e) = self.kernel.share_listener(key, fd)
        {
            log!("cannot hand a listening socket to the spawner: {e}");
        }
    }

    /// Makes the sockets of a reload the open ones: new ones shared, dropped ones forgotten.
    pub(super) fn commit_listening(&mut self, rebind: crate::listen::Rebind) {
        let (shared, forgotten) = self.listening.commit(rebind);
        for key in shared {
            self.share_listener(key);
        }
        for key in forgotten {
            self.kernel.forget_listener(key);
        }
    }

    /// Closes the sockets no process of the config listens on any more (a removed process's,
    /// once its last instance is gone).
    pub(super) fn release_listening(&mut self) {
        match self.listening.rebind(self.config.processes.values()) {
            Ok(rebind) => self.commit_listening(rebind),
            Err(e) => log!("internal error: {e}"),
        }
    }
}
