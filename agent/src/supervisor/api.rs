//! What handlers ask the supervisor (`Command`, sent through `Handle`) and what they get
//! back: the instances a request touched and how to learn how each one ends up.

use procctl_proto::{
    ErrorKind, Exit, InstanceId, InstanceInfo, Outcome, ReloadReport, Signal, State, Target, WireError,
};
use tokio::sync::{mpsc, oneshot};

use super::Event;
use crate::logs::SharedSink;
use crate::pipe::PipeRef;

pub type Reply<T> = oneshot::Sender<Result<T, WireError>>;

/// Where each message of a send goes: an instance and its pipe, or why it has none.
pub type Routes = Vec<(InstanceId, Result<PipeRef, WireError>)>;

pub enum Command {
    /// The rows of the target, for handlers that look at them (no CPU or memory); `keep`
    /// them as the snapshot when they are `pid`'s answer.
    List {
        target: Target,
        keep: bool,
        reply: Reply<Vec<InstanceInfo>>,
    },
    /// `list`'s answer: the rows of the target with CPU and memory sampled, encoded as a
    /// whole `Response::List` frame.
    ListFrame {
        target: Target,
        reply: Reply<Vec<u8>>,
    },
    Start {
        target: Target,
        reply: Reply<Vec<Pending>>,
    },
    Stop {
        target: Target,
        reply: Reply<Vec<Pending>>,
    },
    /// Stop `id` and start it again, as one decision: nothing can come between the two.
    /// The pending answer comes when the new run is up (or has failed to come up).
    Restart {
        id: InstanceId,
        reply: Reply<Pending>,
    },
    Signal {
        target: Target,
        signal: Signal,
        reply: Reply<Vec<Outcome>>,
    },
    Scale {
        name: String,
        count: u32,
        reply: Reply<ScalePlan>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// The pipes to send to: every target instance, or with `any`, the running instances of
    /// the process starting at the next in turn (message i goes to entry i mod len), the turn
    /// moving on by `count` messages.
    Pipes {
        target: Target,
        any: bool,
        count: usize,
        reply: Reply<Routes>,
    },
    /// The output sinks of the target instances, for `logs`.
    Sinks {
        target: Target,
        reply: Reply<Vec<SharedSink>>,
    },
    /// Re-read the config and apply all but the rolling restarts, which the handler does.
    Reload {
        reply: Reply<ReloadPlan>,
    },
    /// The table as a scrape shows it, CPU and memory sampled.
    Metrics {
        reply: Reply<crate::metrics::Snapshot>,
    },
    /// `scale NAME auto`: resume autoscaling; the current count.
    Autoscale {
        name: String,
        reply: Reply<u32>,
    },
    /// A rolling restart (or a reload's) of these processes begins (`on`) or is over: no
    /// instance of them is recycled meanwhile.
    Rolling {
        names: Vec<String>,
        on: bool,
    },
    /// Ask `binary` whether it takes this agent's handover; its version if it does.
    UpgradeCheck {
        binary: std::path::PathBuf,
        reply: Reply<String>,
    },
    /// Hand everything over to `binary` and exec it: answered only when that cannot be done
    /// (`Refused` while something is half done: try again shortly).
    Upgrade {
        binary: std::path::PathBuf,
        reply: Reply<()>,
    },
}

/// An instance a start or stop touched, and how to learn the result.
pub struct Pending {
    pub id: InstanceId,
    pub pid_before: Option<u32>,
    pub settle: Settle,
}

pub enum Settle {
    /// Nothing to do: already in the state asked for.
    Already,
    Wait(oneshot::Receiver<Settled>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Up {
        pid: u32,
    },
    Down,
    /// A start that ended at rest instead of running.
    NotUp {
        state: State,
        last_exit: Option<Exit>,
        /// Why the last start failed, when the program never ran.
        error: Option<String>,
    },
}

#[derive(Default)]
pub struct ReloadPlan {
    pub report: ReloadReport,
    pub starting: Vec<Pending>,
    pub stopping: Vec<Pending>,
    /// Instances of changed processes, to restart one at a time.
    pub restart: Vec<InstanceId>,
}

pub struct ScalePlan {
    pub from: u32,
    pub to: u32,
    pub starting: Vec<Pending>,
    pub stopping: Vec<Pending>,
}

/// What handlers hold to talk to the supervisor.
#[derive(Clone)]
pub struct Handle {
    events: mpsc::UnboundedSender<Event>,
}

pub fn gone() -> WireError {
    WireError::new(ErrorKind::ShuttingDown, "the agent is shutting down")
}

impl Handle {
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Handle { events }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, WireError> {
        let (reply, answer) = oneshot::channel();
        self.events.send(Event::Command(make(reply))).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// What `procctl list` shows, CPU and memory sampled, as the frame that answers it.
    pub async fn list(&self, target: Target) -> Result<Vec<u8>, WireError> {
        self.call(|reply| Command::ListFrame { target, reply }).await
    }

    /// The states of the target's instances, for handlers that only look at them.
    pub async fn states(&self, target: Target) -> Result<Vec<InstanceInfo>, WireError> {
        self.call(|reply| Command::List { target, keep: false, reply }).await
    }

    /// `states`, for `pid`: the answer is kept as the snapshot.
    pub async fn pids(&self, target: Target) -> Result<Vec<InstanceInfo>, WireError> {
        self.call(|reply| Command::List { target, keep: true, reply }).await
    }

    pub async fn start(&self, target: Target) -> Result<Vec<Pending>, WireError> {
        self.call(|reply| Command::Start { target, reply }).await
    }

    pub async fn stop(&self, target: Target) -> Result<Vec<Pending>, WireError> {
        self.call(|reply| Command::Stop { target, reply }).await
    }

    pub async fn restart(&self, id: InstanceId) -> Result<Pending, WireError> {
        self.call(|reply| Command::Restart { id, reply }).await
    }

    pub async fn signal(&self, target: Target, signal: Signal) -> Result<Vec<Outcome>, WireError> {
        self.call(|reply| Command::Signal { target, signal, reply }).await
    }

    pub async fn scale(&self, name: String, count: u32) -> Result<ScalePlan, WireError> {
        self.call(|reply| Command::Scale { name, count, reply }).await
    }

    pub async fn pipes(&self, target: Target, any: bool, count: usize) -> Result<Routes, WireError> {
        self.call(|reply| Command::Pipes { target, any, count, reply }).await
    }

    pub async fn sinks(&self, target: Target) -> Result<Vec<SharedSink>, WireError> {
        self.call(|reply| Command::Sinks { target, reply }).await
    }

    pub async fn reload(&self) -> Result<ReloadPlan, WireError> {
        self.call(|reply| Command::Reload { reply }).await
    }

    pub async fn metrics(&self) -> Result<crate::metrics::Snapshot, WireError> {
        self.call(|reply| Command::Metrics { reply }).await
    }

    pub async fn autoscale(&self, name: String) -> Result<u32, WireError> {
        self.call(|reply| Command::Autoscale { name, reply }).await
    }

    /// The version of `binary` when it takes this agent's handover.
    pub async fn upgrade_check(&self, binary: std::path::PathBuf) -> Result<String, WireError> {
        self.call(|reply| Command::UpgradeCheck { binary, reply }).await
    }

    /// Execs `binary` with the handover; returns only when that could not be done.
    pub async fn upgrade(&self, binary: std::path::PathBuf) -> Result<(), WireError> {
        self.call(|reply| Command::Upgrade { binary, reply }).await
    }

    /// Marks a rolling restart of `names` until the guard is dropped (also when the request
    /// that rolls is cancelled).
    pub fn rolling(&self, mut names: Vec<String>) -> Rolling {
        names.sort();
        names.dedup();
        let _ = self.events.send(Event::Command(Command::Rolling { names: names.clone(), on: true }));
        Rolling { events: self.events.clone(), names }
    }

    pub async fn shutdown(&self) -> Result<(), WireError> {
        let (reply, done) = oneshot::channel();
        self.events.send(Event::Command(Command::Shutdown { reply })).map_err(|_| gone())?;
        done.await.map_err(|_| gone())
    }
}

/// A rolling restart going on; over when dropped.
pub struct Rolling {
    events: mpsc::UnboundedSender<Event>,
    names: Vec<String>,
}

impl Drop for Rolling {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        let _ = self.events.send(Event::Command(Command::Rolling { names, on: false }));
    }
}
