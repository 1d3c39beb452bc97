//! One `[process.NAME]` as read into a `ProcessSpec`: the checks across its keys, paths taken
//! from the config's directory, the account looked up; then the checks across processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use procctl_proto::target::check_name;

use super::error::Keys;
use super::raw::RawProcess;
use super::{Account, ConfigError, MAX_INSTANCES, ProcessSpec, Ready, account, fleet, probe};

/// What every process of one file is resolved against.
pub(super) struct Context<'a> {
    pub path: &'a Path,
    /// The config's directory: relative paths start there.
    pub dir: PathBuf,
    /// The agent's effective uid: only root may set `user`.
    pub euid: u32,
    pub keys: Keys<'a>,
}

/// Errors about one process name its keys.
struct At<'a> {
    name: &'a str,
    context: &'a Context<'a>,
}

impl At<'_> {
    fn fail(&self, key: &str, problem: String) -> ConfigError {
        let (line, key) = self.context.keys.of_process(self.name, key);
        ConfigError::new(self.context.path, line, Some(key), problem)
    }
}

/// `raw` as the process `name`; `earlier` are the processes resolved before it (a listening
/// address is held by one process only).
pub(super) fn resolve_process(
    name: &str,
    raw: RawProcess,
    context: &Context,
    earlier: &BTreeMap<String, ProcessSpec>,
) -> Result<ProcessSpec, ConfigError> {
    let at = At { name, context };
    check_name(name).map_err(|problem| at.fail("", problem))?;
    let (instances, autoscale) = scale(&at, raw.instances, raw.autoscale)?;
    let Some(command) = raw.command else {
        return Err(at.fail("", "missing key `command` (the program to run)".into()));
    };
    let command = program_from(&context.dir, command);
    let cwd = match raw.cwd.map(PathBuf::from) {
        Some(cwd) if cwd.is_absolute() => cwd,
        Some(cwd) => context.dir.join(cwd),
        None => context.dir.clone(),
    };
    check_probes(&at, &raw.ready, raw.health.as_ref(), raw.watchdog.is_some(), raw.port, instances)?;
    let account = account_of(&at, raw.user.as_deref(), raw.group.as_deref())?;
    account::check_limits(&raw.limits, context.euid == 0).map_err(|problem| at.fail("limits", problem))?;
    let listen = listen(&at, &raw.listen, earlier)?;
    Ok(ProcessSpec {
        name: name.to_string(),
        command,
        instances,
        restart: raw.restart,
        stop_signal: raw.stop_signal,
        stop_timeout: raw.stop_timeout,
        start_secs: raw.start_secs,
        start_retries: raw.start_retries,
        env: raw.env,
        cwd,
        pipe: raw.pipe,
        autostart: raw.autostart,
        log_max_size: raw.log_max_size,
        log_files: raw.log_files,
        ready: raw.ready,
        ready_timeout: raw.ready_timeout,
        port: raw.port,
        health: raw.health,
        watchdog: raw.watchdog,
        depends_on: raw.depends_on,
        account,
        umask: raw.umask,
        limits: raw.limits,
        memory_max: raw.memory_max,
        cpu_max: raw.cpu_max,
        critical: raw.critical,
        arg: raw.arg,
        listen,
        recycle: fleet::Recycle {
            max_memory: raw.max_memory,
            max_age: raw.max_age,
            max_messages: raw.max_messages,
            check: raw.recycle_check,
        },
        max_starting: raw.max_starting,
        autoscale,
        hooks: fleet::Hooks {
            pre_start: raw.pre_start,
            post_stop: raw.post_stop,
            on_fatal: raw.on_fatal,
            timeout: raw.hook_timeout,
        },
    })
}

/// The starting count: `instances` (1 when left out), or the autoscale policy's `min`.
fn scale(
    at: &At,
    instances: Option<u32>,
    autoscale: Option<fleet::RawAutoscale>,
) -> Result<(u32, Option<fleet::Autoscale>), ConfigError> {
    let autoscale = match autoscale {
        Some(_) if instances.is_some() => {
            return Err(
                at.fail("autoscale", "a process with `autoscale` leaves `instances` out (it starts with min)".into())
            );
        }
        Some(policy) => Some(policy.check().map_err(|(key, problem)| at.fail(key, problem))?),
        None => None,
    };
    let instances = autoscale.as_ref().map_or(instances.unwrap_or(1), |policy| policy.min);
    if instances > MAX_INSTANCES {
        return Err(at.fail("instances", format!("{instances} is over the limit of {MAX_INSTANCES}")));
    }
    Ok((instances, autoscale))
}

/// A program named by a relative path (`./bin/app`) is found from the config's directory,
/// like `cwd`; a bare name is looked up in PATH.
fn program_from(dir: &Path, mut command: Vec<String>) -> Vec<String> {
    if command[0].contains('/') && Path::new(&command[0]).is_relative() {
        command[0] = dir.join(&command[0]).display().to_string();
    }
    command
}

/// The watchdog needs notify, and `{port}` in a probe needs `port`, with room for every instance.
fn check_probes(
    at: &At,
    ready: &Ready,
    health: Option<&probe::Health>,
    watchdog: bool,
    port: Option<u16>,
    instances: u32,
) -> Result<(), ConfigError> {
    if watchdog && *ready != Ready::Notify {
        return Err(at.fail("watchdog", "a watchdog needs ready = \"notify\" (the program sends WATCHDOG=1)".into()));
    }
    match port {
        None => {
            let uses = [
                ("ready", matches!(ready, Ready::Probe { probe, .. } if probe.uses_port())),
                ("health", health.is_some_and(|h| h.probe.uses_port())),
            ];
            if let Some((key, _)) = uses.into_iter().find(|(_, uses)| *uses) {
                return Err(at.fail(key, "`{port}` needs a `port` key for this process".into()));
            }
        }
        Some(port) if u32::from(port) + instances.max(1) - 1 > 65535 => {
            return Err(at.fail("port", format!("{port} + {instances} instances goes past port 65535")));
        }
        Some(_) => {}
    }
    Ok(())
}

/// The account of `user` (and `group`), for an agent running as root only.
fn account_of(at: &At, user: Option<&str>, group: Option<&str>) -> Result<Option<Account>, ConfigError> {
    match user {
        None if group.is_some() => Err(at.fail("group", "`group` needs `user`".into())),
        None => Ok(None),
        Some(_) if at.context.euid != 0 => {
            Err(at.fail("user", "only an agent running as root can start processes as another user".into()))
        }
        Some(user) => account::resolve(user, group).map(Some).map_err(|(key, problem)| at.fail(key, problem)),
    }
}

/// The listening addresses, each held by one process of the file once.
fn listen(
    at: &At,
    texts: &[String],
    earlier: &BTreeMap<String, ProcessSpec>,
) -> Result<Vec<crate::listen::Address>, ConfigError> {
    let mut listen = vec![];
    for text in texts {
        let address =
            crate::listen::Address::parse(text, &at.context.dir).map_err(|problem| at.fail("listen", problem))?;
        let other = earlier.values().find(|other| other.listen.contains(&address));
        if listen.contains(&address) || other.is_some() {
            let whose = other.map_or("this process".to_string(), |o| format!("process {}", o.name));
            return Err(at.fail("listen", format!("{address} is listened on already by {whose}")));
        }
        listen.push(address);
    }
    Ok(listen)
}

/// Every dependency names a process, and none leads back to where it started.
pub(super) fn check_dependencies(
    processes: &BTreeMap<String, ProcessSpec>,
    context: &Context,
) -> Result<(), ConfigError> {
    let keys = &context.keys;
    let error = |line, key, problem| ConfigError::new(context.path, line, Some(key), problem);
    for (name, spec) in processes {
        for dep in spec.depends_on.keys() {
            if !processes.contains_key(dep) {
                let line = keys.line(&["process", name, "depends_on", dep]).or_else(|| keys.line(&["process", name]));
                return Err(error(
                    line,
                    format!("process.{name}.depends_on.{dep}"),
                    format!("no process named `{dep}`"),
                ));
            }
        }
    }
    let graph = processes
        .iter()
        .map(|(name, spec)| (name.as_str(), spec.depends_on.keys().map(String::as_str).collect()))
        .collect();
    if let Some(cycle) = probe::cycle(&graph) {
        let first = &cycle[0];
        let line = keys.line(&["process", first, "depends_on"]).or_else(|| keys.line(&["process", first]));
        return Err(error(
            line,
            format!("process.{first}.depends_on"),
            format!("a dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}
