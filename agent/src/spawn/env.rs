//! The child's environment: the agent's own, the spec's `env` over it, and the variables
//! SPEC.md promises on top.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use procctl_proto::InstanceId;

use super::{Context, PIPE_FD};
use crate::config::{Pipe, ProcessSpec};

/// The agent's environment with the spec's `env` over it and, on top, the variables of
/// SPEC.md: PROCCTL_*, PORT with `port`, NOTIFY_SOCKET with `ready = "notify"`,
/// WATCHDOG_USEC with `watchdog`, and HOME, USER, LOGNAME, SHELL with `user`.
pub(super) fn child_env(id: &InstanceId, spec: &ProcessSpec, context: &Context) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        context.base.iter().filter(|(k, _)| !spec.env.contains_key(k)).cloned().collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (key, value) in on_top(id, spec, context) {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    env
}

/// The variables of SPEC.md that go over the agent's environment and the spec's `env`, in
/// the order they are set (a later one of the same name replaces an earlier one).
pub(super) fn on_top(id: &InstanceId, spec: &ProcessSpec, context: &Context) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(8);
    let mut set = |key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    set("PROCCTL_NAME", id.name.clone());
    set("PROCCTL_INSTANCE", id.index.to_string());
    set("PROCCTL_SOCKET", context.socket.display().to_string());
    set(crate::reclaim::TOKEN_VAR, crate::reclaim::token().to_owned());
    if spec.pipe == Pipe::Fd {
        set("PROCCTL_PIPE_FD", PIPE_FD.to_string());
    }
    if let Some(arg) = &spec.arg {
        set("PROCCTL_ARG", arg.clone());
    }
    if let Some(port) = spec.port_of(id.index) {
        set("PORT", port.to_string());
    }
    if let (crate::config::Ready::Notify, Some(notify)) = (&spec.ready, context.notify) {
        set("NOTIFY_SOCKET", notify.to_string());
        if let Some(watchdog) = spec.watchdog {
            set("WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
    }
    if let Some(account) = &spec.account {
        set("HOME", account.home.display().to_string());
        set("USER", account.user.clone());
        set("LOGNAME", account.user.clone());
        set("SHELL", account.shell.display().to_string());
    }
    env
}

/// The agent's own environment, as children inherit it: without the PROCCTL_* variables an
/// agent that is itself an instance of another agent would pass on, nor what its own
/// service manager gave it (notify socket, watchdog, listening sockets).
pub fn base_env() -> BaseEnv {
    const MANAGER: [&str; 6] =
        ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];
    BaseEnv::new(
        std::env::vars().filter(|(k, _)| !k.starts_with("PROCCTL_") && !MANAGER.contains(&k.as_str())).collect(),
    )
}

/// The agent's environment as children inherit it, and for each process that environment
/// with the spec's `env` over it as `KEY=VALUE` C strings, made once and shared by all its
/// starts: a start then carries only the few variables of its own (`on_top`), not a copy
/// of the whole environment (a thousand starts queued at once held megabytes).
pub struct BaseEnv {
    vars: Vec<(String, String)>,
    /// By process name: the spec's `env` it was made with, and the strings.
    layered: Mutex<HashMap<String, Layered>>,
}

/// A spec's `env`, and the strings made with it.
type Layered = (BTreeMap<String, String>, Arc<[CString]>);

impl BaseEnv {
    pub fn new(vars: Vec<(String, String)>) -> BaseEnv {
        BaseEnv { vars, layered: Mutex::default() }
    }

    /// This environment with `spec.env` over it, as C strings; made again when the spec's
    /// `env` changed (a reload). None when a value holds a NUL byte: the start is then
    /// refused as one with a whole environment of its own is.
    pub(super) fn layered(&self, spec: &ProcessSpec) -> Option<Arc<[CString]>> {
        let mut layered = self.layered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((env, strings)) = layered.get(&spec.name)
            && *env == spec.env
        {
            return Some(strings.clone());
        }
        let strings: Arc<[CString]> = self
            .vars
            .iter()
            .filter(|(k, _)| !spec.env.contains_key(k))
            .map(|(k, v)| (k, v))
            .chain(&spec.env)
            .map(|(k, v)| CString::new(format!("{k}={v}")).ok())
            .collect::<Option<_>>()?;
        layered.insert(spec.name.clone(), (spec.env.clone(), strings.clone()));
        Some(strings)
    }
}

impl Deref for BaseEnv {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.vars
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::SpawnRequest;
    use super::*;

    #[test]
    fn the_child_environment_layers_base_spec_and_procctl_variables() {
        let config = crate::config::Config::parse(
            Path::new("/etc/app/procctl.toml"),
            "[process.w]\ncommand = [\"x\"]\nenv = { HOME = \"/srv\", EXTRA = \"1\" }\narg = { queue = \"jobs\" }\n",
        )
        .unwrap();
        let base =
            BaseEnv::new(vec![("HOME".to_string(), "/root".to_string()), ("PATH".to_string(), "/bin".to_string())]);
        let context = Context { base: &base, socket: Path::new("/run/a.sock"), notify: Some("@n") };
        let request = SpawnRequest::probe(7, &InstanceId::new("w", 2), &config.processes["w"], vec![], &context);
        let env: std::collections::BTreeMap<_, _> = request.env.iter().cloned().collect();
        assert_eq!(env["HOME"], "/srv", "the spec wins over the agent's own");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["EXTRA"], "1");
        assert_eq!((env["PROCCTL_NAME"].as_str(), env["PROCCTL_INSTANCE"].as_str()), ("w", "2"));
        assert_eq!(env["PROCCTL_SOCKET"], "/run/a.sock");
        assert_eq!(env["PROCCTL_PIPE_FD"], "3");
        assert_eq!(env["PROCCTL_ARG"], r#"{"queue":"jobs"}"#);
        assert!(env.contains_key(crate::reclaim::TOKEN_VAR));
        assert_eq!(request.env.iter().filter(|(k, _)| k == "HOME").count(), 1, "no variable twice");
        assert_eq!(request.cwd, Path::new("/etc/app"));

        // A run's start carries the same environment as the shared strings and its own.
        let run = SpawnRequest::new(8, &InstanceId::new("w", 2), &config.processes["w"], &context, None);
        let shared = run.shared_env.as_deref().expect("shared strings");
        let mut whole: Vec<(String, String)> = shared
            .iter()
            .map(|c| c.to_str().unwrap().split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
            .filter(|(k, _)| !run.env.iter().any(|(own, _)| own == k))
            .collect();
        whole.extend(run.env.iter().cloned());
        assert_eq!(whole, request.env);
        let again = SpawnRequest::new(9, &InstanceId::new("w", 3), &config.processes["w"], &context, None);
        assert!(Arc::ptr_eq(run.shared_env.as_ref().unwrap(), again.shared_env.as_ref().unwrap()), "made once");
    }

    #[test]
    fn the_shared_strings_follow_a_changed_env_and_are_none_with_a_nul() {
        let parse = |env: &str| {
            let text = format!("[process.w]\ncommand = [\"x\"]\nenv = {{ {env} }}\n");
            crate::config::Config::parse(Path::new("/etc/app/procctl.toml"), &text).unwrap().processes["w"].clone()
        };
        let base = BaseEnv::new(vec![("A".to_string(), "1".to_string())]);
        let strings = |spec: &ProcessSpec| -> Option<Vec<String>> {
            Some(base.layered(spec)?.iter().map(|c| c.to_str().unwrap().to_string()).collect())
        };
        assert_eq!(strings(&parse("B = \"2\"")), Some(vec!["A=1".to_string(), "B=2".to_string()]));
        assert_eq!(strings(&parse("A = \"3\"")), Some(vec!["A=3".to_string()]), "a reload's env is seen");
        let mut nul = parse("B = \"2\"");
        nul.env.insert("B".into(), "x\0y".into()); // the config refuses it; a start would too
        assert_eq!(strings(&nul), None);
    }
}
