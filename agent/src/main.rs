//! procagent: starts the processes a config declares, N instances of each, keeps them
//! alive, and serves procctl on a Unix socket.
//!
//! `main` parses flags and maps the result of `run` to an exit code. `run` loads the
//! config, takes the state directory, binds the socket, stops an earlier agent's
//! leftovers (`reclaim`), then runs the tasks: the `supervisor` (sole owner of every
//! instance), the `reaper` (the only waitpid), the `server` (a task per connection,
//! requests routed by `handlers`), plus the `spawn` thread (the only fork) and the
//! `table` writer thread.

/// Writes one line to the agent's log (stderr), never blocking and never failing: see `log`.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}

mod audit;
mod cgroup;
mod config;
mod events;
mod fdpass;
mod group;
mod handlers;
mod instance;
mod listen;
mod listening;
mod log;
mod logs;
mod metrics;
mod notify;
mod pipe;
mod probe;
mod procfs;
mod reaper;
mod reclaim;
mod scratch;
mod server;
mod spawn;
mod suggest;
mod supervisor;
mod table;
mod trust;
mod upgrade;

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::supervisor::{AgentSignal, Event, Handle, Parts, RealKernel, Supervisor};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (protocol 3)");

/// How long the agent waits, once everything is stopped, for replies still being written.
const DRAIN_REPLIES: Duration = Duration::from_secs(2);

/// Supervises the processes of a procctl.toml and serves procctl on a Unix socket.
#[derive(Parser)]
#[command(name = "procagent", version = VERSION)]
struct Args {
    /// The config file [default: ./procctl.toml]
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The socket [default: $PROCCTL_SOCKET, $XDG_RUNTIME_DIR/procctl/agent.sock, /tmp/procctl-UID/agent.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Where the pid table and the logs live [default: $XDG_STATE_HOME/procctl, ~/.local/state/procctl]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Clients served at once; past it a client is refused with a message
    #[arg(long, value_name = "N", default_value_t = server::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Serve GET /metrics (OpenMetrics) on ADDRESS: 127.0.0.1:9101, [::1]:9101 or
    /// unix:///path [default: `metrics` of the config; none]
    #[arg(long, value_name = "ADDRESS")]
    metrics: Option<metrics::Address>,
    /// Track instances with process groups even where cgroups could be used (when something
    /// else owns this cgroup)
    #[arg(long)]
    no_cgroups: bool,
    /// Print the procagent(8) man page, generated from these flags, and exit (for packagers)
    #[arg(long, hide = true)]
    manpage: bool,
    /// Print the version and the handover format this binary takes, and exit (`procctl
    /// upgrade` asks it of a new binary before it runs it)
    #[arg(long, hide = true)]
    handover_check: bool,
    /// Take over from the agent image before this one, whose state descriptor FD holds
    /// (given by `procctl upgrade`, never by hand)
    #[arg(long, hide = true, value_name = "FD")]
    handover: Option<i32>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    if args.manpage {
        return manpage();
    }
    if args.handover_check {
        println!("{}", upgrade::check_line(VERSION));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::last(format_args!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints procagent(8), generated from `Args`; man/procagent.8 is this page, and
/// tests/manuals.rs keeps it up to date.
fn manpage() -> ExitCode {
    use clap_mangen::roff::{Roff, roman};
    let man = clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
        .section("8")
        .manual("procctl manual")
        .source(format!("procctl {}", env!("CARGO_PKG_VERSION")));
    let mut page = vec![];
    man.render(&mut page).expect("writing to a Vec cannot fail");
    let mut extra = Roff::new();
    extra.control("SH", ["SEE ALSO"]).text([roman("procctl(1), procctl.toml(5), systemd.service(5)")]);
    page.extend_from_slice(extra.to_roff().as_bytes());
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &page) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    upgrade::record_start();
    // The image before left the handed-over descriptors open (and no other): take them
    // before anything is opened, and block no signal (the spawner thread that exec'd this
    // image blocks every one).
    let mut handed = match args.handover {
        Some(fd) => {
            let _ = nix::sys::signal::SigSet::all().thread_unblock();
            let received = upgrade::Received::read(fd)?;
            reclaim::keep_token(received.handed.token.clone());
            Some(received)
        }
        None => None,
    };
    ensure_standard_fds();
    let child_fd_limit = raise_fd_limit();
    let config_path = match args.config {
        Some(path) => path,
        None if Path::new("procctl.toml").exists() => PathBuf::from("procctl.toml"),
        None => bail!("no config: pass --config FILE or create ./procctl.toml"),
    };
    let config_path = std::path::absolute(&config_path).context("cannot resolve the config path")?;
    // After an upgrade, the config in effect before it: edits to the file since then wait
    // for a reload, and one that no longer parses cannot stop the handover half-way.
    let config = match &handed {
        Some(received) => Config::parse(&config_path, &received.handed.config)?,
        None => Config::load(&config_path)?,
    };

    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    let state_dir = std::path::absolute(&state_dir).context("cannot resolve the state directory")?;
    // Private: the table and the logs hold whatever the instances print.
    trust::private_dir(&state_dir).context("the state directory")?;
    trust::private_dir(&state_dir.join("logs")).context("the log directory")?;
    // After an upgrade the lock is the handed-over descriptor: a POSIX record lock belongs
    // to the process and lasts while a descriptor of the file stays open, which it did.
    let lock = match handed.as_mut().and_then(|h| {
        let index = h.handed.lock;
        h.take(index)
    }) {
        Some(fd) => File::from(fd),
        None => table::lock(&state_dir)?,
    };

    let socket = std::path::absolute(procctl_proto::socket::socket_path(args.socket))
        .context("cannot resolve the socket path")?;
    // Before the control socket, so a taken port leaves nothing behind.
    let handed_metrics = handed.as_mut().and_then(|h| {
        let index = h.handed.metrics;
        h.take(index)
    });
    let metrics = match (args.metrics.as_ref().or(config.metrics.as_ref()), handed_metrics) {
        (Some(address), Some(fd)) => Some((metrics::address::Bound::from_handed(address, fd)?, address.clone())),
        (Some(address), None) => Some(metrics::address::bind(address).map(|bound| (bound, address.clone()))?),
        (None, _) => None,
    };
    let handed_control = handed.as_mut().and_then(|h| {
        let index = h.handed.control;
        h.take(index)
    });
    let listener = match handed_control {
        Some(fd) => fd,
        None => server::bind(&socket)?,
    };

    // Orphaned descendants of our instances are re-parented to us instead of init, so the
    // reaper sees them and nothing of ours becomes a zombie elsewhere.
    nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;

    let previous = table::load(&state_dir).unwrap_or_else(|problem| {
        log!("{problem}");
        None
    });
    // The instances of the image before are ours still: nothing to reclaim.
    if let (Some(previous), None) = (&previous, &handed) {
        reclaim::reclaim(previous, &config);
    }
    let (listening, tracking, service) = match handed.as_mut() {
        Some(received) => {
            let listening = std::mem::take(&mut received.handed.listening);
            let next = received.handed.listening_next;
            let listening = listen::Listening::from_handed(listening, next, received);
            // A reload that changes `listen` is what binds new addresses; the rest stay.
            let tracking = cgroup::Tracking::from_handed(received.handed.tree.clone());
            (listening, tracking, supervisor::Service::handed(received.handed.service_notify.clone()))
        }
        None => {
            // After the leftovers of a dead agent are stopped: they may still hold the addresses.
            let listening = listen::Listening::bind_all(config.processes.values()).map_err(|e| anyhow::anyhow!(e))?;
            // Before any thread: the agent may move itself into a leaf of its own cgroup, and
            // its service manager's variables leave its environment.
            let tracking = if args.no_cgroups {
                cgroup::Tracking::Groups("turned off with --no-cgroups".into())
            } else {
                cgroup::Tracking::detect(reclaim::token())
            };
            (listening, tracking, supervisor::Service::from_env())
        }
    };

    let limits = Limits { max_connections: args.max_connections, child_fd_limit };
    let metrics_socket = match &metrics {
        Some((metrics::address::Bound::Unix(_, path), _)) => Some(path.clone()),
        _ => None,
    };
    let setup = Setup {
        listener,
        metrics,
        config,
        socket: socket.clone(),
        state_dir,
        previous,
        limits,
        tracking,
        service,
        listening,
        handed,
        lock,
    };
    // The runtime runs on a thread of its own; this (main) thread becomes the spawner, the
    // parent thread of every child, which an upgrade's execve keeps (see `spawn::start`).
    let (launch, launched) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let agent = std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The runtime's blocking threads (not this one) leave the agent's signals to
                // this thread, which handles them, as the table writer and the spawner do.
                .on_thread_start(|| {
                    let _ = nix::sys::signal::SigSet::all().thread_block();
                })
                .build()
                .context("cannot start the runtime")?;
            runtime.block_on(serve(setup, launch))
        })
        .context("cannot start the agent's thread")?;
    if let Ok(spawner) = launched.recv() {
        spawner();
    }
    let result = agent.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the agent's thread panicked")));
    let _ = fs::remove_file(&socket);
    if let Some(path) = metrics_socket {
        let _ = fs::remove_file(path);
    }
    result
}

/// What `run` hands the runtime.
struct Setup {
    listener: OwnedFd,
    metrics: Option<(metrics::address::Bound, metrics::Address)>,
    config: Config,
    socket: PathBuf,
    state_dir: PathBuf,
    previous: Option<table::TableFile>,
    limits: Limits,
    tracking: cgroup::Tracking,
    service: supervisor::Service,
    listening: listen::Listening,
    /// What the image before handed over, after an upgrade.
    handed: Option<upgrade::Received>,
    /// The state directory's lock, held by the agent's thread until it ends (the main
    /// thread's table, the spawner's, keeps no copy).
    lock: File,
}

async fn serve(setup: Setup, launch: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>) -> anyhow::Result<()> {
    let Setup {
        listener,
        metrics,
        config,
        socket,
        state_dir,
        previous,
        limits,
        tracking,
        service,
        listening,
        mut handed,
        lock,
    } = setup;
    use std::os::fd::AsRawFd;
    let lock_fd = lock.as_raw_fd();
    // Handlers first: no signal may take the default action once children exist.
    let sigchld = signal(SignalKind::child()).context("cannot watch SIGCHLD")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?;

    let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let fork_lock = Arc::new(Mutex::new(()));
    let spawner = {
        let events = events.clone();
        // The spawner's table keeps no copy of the lock (no child may ever hold it), of the
        // sockets the agent serves, nor of what an upgrade handed over (the instances'
        // pipes among them: a copy would keep them open).
        let handed_fds = handed.as_ref().map(upgrade::Received::untaken).unwrap_or_default();
        let served = [Some(listener.as_raw_fd()), metrics.as_ref().map(|(bound, _)| bound.as_raw_fd())];
        let copies = [listening.raw_fds(), vec![lock_fd], served.into_iter().flatten().collect(), handed_fds].concat();
        let report = move |report| {
            let _ = events.send(Event::Spawn(report));
        };
        let on_main = move |run| launch.send(run).map_err(|_| std::io::Error::other("the main thread is gone"));
        spawn::start(fork_lock.clone(), limits.child_fd_limit, copies, report, on_main)
            .context("cannot start the spawner thread")?
    };
    // The loops that feed the supervisor; they end with it, and are joined before the agent exits.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let events = events.clone();
        reaper::run(sigchld, fork_lock, move |pid, exit| {
            let _ = events.send(Event::Reaped { pid, exit });
        })
    });
    let handed_notify = handed.as_mut().and_then(|h| {
        let index = h.handed.notify;
        h.take(index).map(|fd| (fd, h.handed.notify_name.clone()))
    });
    let (notify_fd, notify_name) = match handed_notify {
        Some(notify) => notify,
        None => notify::bind(reclaim::token()).context("cannot bind the notify socket")?,
    };
    let own = upgrade::Own {
        control: Some(listener.as_raw_fd()),
        lock: Some(lock_fd),
        notify: Some(notify_fd.as_raw_fd()),
        metrics: metrics.as_ref().map(|(bound, _)| bound.as_raw_fd()),
    };
    tasks.spawn({
        let events = events.clone();
        notify::run(notify_fd, move |message| {
            let _ = events.send(Event::Notify(message));
        })
    });
    let inotify = inotify::Inotify::init().context("cannot start inotify")?;
    let watches = inotify.watches();
    tasks.spawn({
        let events = events.clone();
        let stream = inotify.into_event_stream([0u8; 4096]).context("cannot watch inotify")?;
        async move {
            use futures_util::StreamExt;
            let mut stream = stream;
            while let Some(Ok(event)) = stream.next().await {
                let _ = events.send(Event::CgroupChanged(event.wd));
            }
        }
    });
    let handle = Handle::new(events.clone());
    let bus = crate::events::Bus::new();
    let follow = logs::Follow::new();
    let (changes, changed) = tokio::sync::watch::channel(0);
    let tally = Arc::new(metrics::Tally::default());
    if let Some((bound, address)) = metrics {
        log!("metrics at {address}");
        tasks.spawn(metrics::http::serve(bound, handle.clone(), tally.clone()));
    }
    let context = handlers::Context {
        sup: handle,
        bus: bus.clone(),
        follow: follow.clone(),
        changes: changed,
        tally,
        upgrade: handlers::UpgradeNotice::default(),
    };
    tasks.spawn({
        let events = events.clone();
        let context = context.clone();
        async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                    _ = hup.recv() => {
                        // The same path as `procctl reload`, with the outcome in the log.
                        tokio::spawn(reload_on_hangup(context.clone()));
                        continue;
                    }
                    _ = usr2.recv() => {
                        // The same path as `procctl upgrade`, with the outcome in the log.
                        tokio::spawn(handlers::upgrade_on_signal(context.clone()));
                        continue;
                    }
                };
                if events.send(Event::Signal(AgentSignal::Terminate)).is_err() {
                    return;
                }
            }
        }
    });

    let writer = table::Writer::start(state_dir.clone()).context("cannot start the table writer")?;
    match &handed {
        Some(received) => log!(
            "version {VERSION}: took over from version {} ({} instance(s)), {} process(es) from {}, serving on {}",
            received.handed.from,
            received.handed.supervisor.instances.len(),
            config.processes.len(),
            config.path.display(),
            socket.display(),
        ),
        None => log!(
            "version {VERSION}: {} process(es) from {}, serving on {}; {}",
            config.processes.len(),
            config.path.display(),
            socket.display(),
            tracking.describe()
        ),
    }
    let parts = Parts {
        config,
        socket,
        state_dir,
        previous,
        kernel: Box::new(RealKernel::new(spawner)),
        writer,
        events,
        bus,
        follow,
        notify_name,
        changes,
        tracking,
        inotify: watches,
        service,
        listening,
        own,
    };
    let sup = match handed {
        Some(mut received) => {
            let state = std::mem::replace(&mut received.handed.supervisor, supervisor::HandedState::empty());
            Supervisor::resume(parts, state, &mut |index| received.take(index))
        }
        None => Supervisor::new(parts),
    };

    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    // The supervisor and the server are tasks, not parts of the future the runtime blocks
    // on: a wake of that future goes through the driver's eventfd (a write, and one more
    // epoll_wait), a task's wake is a push onto the run queue. Every request wakes both.
    let mut server = tokio::spawn(server::serve(listener, context, alive, limits.max_connections));
    let mut supervising = tokio::spawn(sup.run(events_rx));
    let mut serving = true;
    let critical = tokio::select! {
        critical = &mut supervising => match critical {
            Ok(critical) => critical,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => None,
        },
        _ = &mut server => {
            serving = false;
            supervising.abort();
            None
        }
    };
    // Let the connections that asked for the shutdown get their answer; followers are ended
    // and newcomers told the agent is shutting down meanwhile.
    tokio::select! {
        _ = tokio::time::timeout(DRAIN_REPLIES, all_closed.recv()) => {}
        _ = &mut server, if serving => {}
    }
    server.abort();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if let Some(id) = critical {
        bail!("every instance stopped after the critical instance {id} ended");
    }
    log!("every instance stopped; exiting");
    Ok(())
}

struct Limits {
    max_connections: usize,
    child_fd_limit: libc::rlimit,
}

async fn reload_on_hangup(context: handlers::Context) {
    match handlers::handle(procctl_proto::Request::Reload, context).await {
        handlers::Reply::One(procctl_proto::Response::Reloaded(report)) => {
            log!(
                "SIGHUP: reloaded (added {:?}, removed {:?}, restarted {:?}, rescaled {:?}, {} failure(s))",
                report.added,
                report.removed,
                report.changed,
                report.rescaled,
                report.failures.len()
            );
        }
        handlers::Reply::One(procctl_proto::Response::Error(error)) => log!("SIGHUP: {error}"),
        _ => log!("SIGHUP: unexpected reload answer"),
    }
}

/// A child must never get one of the agent's sockets as its stdin, stdout or stderr, nor
/// a descriptor the agent inherited from whoever started it (they stay the agent's).
fn ensure_standard_fds() {
    for fd in 0..3 {
        // Raw: a descriptor that may not exist cannot be borrowed. SAFETY: F_GETFD only
        // inspects the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // open returns the lowest free number, which is this one.
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                std::mem::forget(null);
            }
        }
    }
    // nix has no close_range. SAFETY: marks descriptors 3 and up close-on-exec; nothing is
    // opened yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
}

/// Each instance holds descriptors in the agent (its message pipe and output pipe, and with
/// cgroups a `cgroup.events` watch while it drains and the files its usage is sampled from)
/// and each client one or two: take the hard limit, not the usual soft 1024. Returns the
/// limit the agent was given, which children get back (programs built on select() need it).
fn raise_fd_limit() -> libc::rlimit {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    libc::rlimit { rlim_cur: soft, rlim_max: hard }
}

fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("procctl"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/procctl")),
        None => bail!("no state directory: pass --state-dir DIR or set XDG_STATE_HOME or HOME"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_protocol() {
        assert!(VERSION.ends_with(&format!("(protocol {})", procctl_proto::PROTOCOL_VERSION)));
    }
}
