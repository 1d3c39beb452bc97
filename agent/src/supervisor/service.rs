//! The agent as a service of its own: `READY=1` to its service manager's `$NOTIFY_SOCKET`
//! once every autostart instance has had its first start, `STOPPING=1` at shutdown, and
//! `critical` instances, whose end shuts everything down.

use std::collections::BTreeSet;

use procctl_proto::{InstanceId, State};

use super::Supervisor;
use crate::config::Restart;

/// The agent's own service manager, when it has one (`Type=notify` under systemd).
pub struct Service {
    /// Where to send: a path, or `@name` for an abstract socket.
    notify: Option<String>,
    /// Autostart instances that have not had their first start yet.
    pending: BTreeSet<InstanceId>,
    ready_sent: bool,
    /// The critical instance whose end shut the agent down.
    pub critical: Option<InstanceId>,
}

impl Service {
    /// Takes `$NOTIFY_SOCKET` out of the agent's environment, so no child inherits it.
    pub fn from_env() -> Service {
        let notify = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty());
        // SAFETY: called before any thread is started.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        Service { notify, pending: BTreeSet::new(), ready_sent: false, critical: None }
    }

    /// The service manager's socket, for an upgrade to hand over.
    pub fn manager(&self) -> Option<String> {
        self.notify.clone()
    }

    /// The service of an image an upgrade started: the manager's socket handed over (the
    /// environment no longer has it), READY=1 said already by the image before.
    pub fn handed(notify: Option<String>) -> Service {
        Service { notify, pending: BTreeSet::new(), ready_sent: true, critical: None }
    }

    /// Nothing to tell the manager as a first start: the image before did.
    pub fn handed_over(&mut self) {
        self.ready_sent = true;
        self.pending.clear();
    }

    fn tell(&self, text: &str) {
        let Some(address) = &self.notify else {
            return;
        };
        if let Err(e) = crate::notify::send(address, text) {
            log!("cannot tell the service manager ({address}): {e}");
        }
    }
}

impl Supervisor {
    pub(super) fn expect_first_start(&mut self, id: &InstanceId) {
        self.service.pending.insert(id.clone());
    }

    /// After each state change: the first start of autostart instances, and critical ends.
    pub(super) fn service_on_state(&mut self, id: &InstanceId, state: State) {
        if !matches!(state, State::Starting | State::Waiting) && self.service.pending.remove(id) {
            self.service_ready_if_due();
        }
        let Some(spec) = self.config.processes.get(&id.name) else {
            return;
        };
        let ended = state == State::Fatal || (state == State::Exited && spec.restart == Restart::Never);
        if spec.critical && ended && !self.shutting_down {
            log!("{id} is critical and {state}: shutting everything down");
            self.service.critical = Some(id.clone());
            self.begin_shutdown();
        }
    }

    pub(super) fn service_ready_if_due(&mut self) {
        if self.service.ready_sent || !self.service.pending.is_empty() {
            return;
        }
        self.service.ready_sent = true;
        let running = self.slots.values().filter(|slot| slot.inst.is_up()).count();
        self.service.tell(&format!("READY=1\nSTATUS={running} of {} instance(s) running", self.slots.len()));
    }

    pub(super) fn service_stopping(&mut self) {
        self.service.tell("STOPPING=1\nSTATUS=stopping every instance");
    }
}
