//! The child's environment: the agent's own, the spec's `env` over it, and the variables
//! SPEC.md promises on top.

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
pub fn base_env() -> Vec<(String, String)> {
    const MANAGER: [&str; 6] =
        ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];
    std::env::vars().filter(|(k, _)| !k.starts_with("PROCCTL_") && !MANAGER.contains(&k.as_str())).collect()
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
        let base = vec![("HOME".to_string(), "/root".to_string()), ("PATH".to_string(), "/bin".to_string())];
        let context = Context { base: &base, socket: Path::new("/run/a.sock"), notify: Some("@n") };
        let request = SpawnRequest::new(7, &InstanceId::new("w", 2), &config.processes["w"], &context, None);
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
    }
}
