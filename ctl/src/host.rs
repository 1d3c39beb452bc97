//! Where a command goes: the local agent's socket, or the agent of another machine reached
//! through `ssh://[USER@]HOST[:PORT][/SOCKET]` (`--host`, `PROCCTL_HOST`).

use std::path::PathBuf;

/// The environment variable naming the hosts when `--host` is not given.
pub const HOST_ENV: &str = "PROCCTL_HOST";

/// The environment variable naming the ssh command and its options.
pub const SSH_ENV: &str = "PROCCTL_SSH";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Local(PathBuf),
    Ssh(SshHost),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// What the user wrote after `ssh://`: the label of this host's lines.
    pub label: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The agent's socket on the far side; its own rules find it when absent.
    pub socket: Option<String>,
}

impl Endpoint {
    /// The label of this endpoint's lines and rows when there are several.
    pub fn label(&self) -> &str {
        match self {
            Endpoint::Local(_) => "local",
            Endpoint::Ssh(ssh) => &ssh.label,
        }
    }
}

/// Every `--host` value (each may be a comma-separated list), else `PROCCTL_HOST`; none
/// means the local agent at `socket`.
pub fn endpoints(hosts: &[String], env: Option<String>, socket: PathBuf) -> Result<Vec<Endpoint>, String> {
    let env = env.filter(|value| !value.is_empty());
    let given: Vec<&str> = if hosts.is_empty() {
        env.as_deref().into_iter().collect()
    } else {
        hosts.iter().map(String::as_str).collect()
    };
    let mut endpoints = vec![];
    for text in given.iter().flat_map(|list| list.split(',')).map(str::trim).filter(|text| !text.is_empty()) {
        let endpoint = Endpoint::Ssh(parse(text)?);
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    if endpoints.is_empty() {
        endpoints.push(Endpoint::Local(socket));
    }
    Ok(endpoints)
}

/// `ssh://[USER@]HOST[:PORT][/SOCKET]`; HOST may be an IPv6 address in brackets.
pub fn parse(text: &str) -> Result<SshHost, String> {
    let bad = |why: &str| format!("bad host `{text}`: {why} (expected ssh://[USER@]HOST[:PORT][/SOCKET])");
    let rest = text.strip_prefix("ssh://").ok_or_else(|| bad("it does not start with ssh://"))?;
    let (authority, socket) = match rest.find('/') {
        Some(slash) => (&rest[..slash], Some(rest[slash..].to_string())),
        None => (rest, None),
    };
    let (user, address) = match authority.rsplit_once('@') {
        Some((user, address)) if !user.is_empty() => (Some(user.to_string()), address),
        Some(_) => return Err(bad("the user is empty")),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("a `[` without its `]`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if host.starts_with('-') {
        return Err(bad("a host cannot start with `-`"));
    }
    let port = port
        .map(|port| {
            port.parse::<u16>().ok().filter(|&port| port > 0).ok_or_else(|| bad(&format!("`{port}` is not a port")))
        })
        .transpose()?;
    Ok(SshHost { label: rest.to_string(), user, host: host.to_string(), port, socket })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_urls_parse_into_their_parts() {
        type Case<'a> = (&'a str, Option<&'a str>, &'a str, Option<u16>, Option<&'a str>);
        let cases: [Case; 6] = [
            ("ssh://box", None, "box", None, None),
            ("ssh://ops@box", Some("ops"), "box", None, None),
            ("ssh://ops@box:2222", Some("ops"), "box", Some(2222), None),
            ("ssh://box/run/procctl/agent.sock", None, "box", None, Some("/run/procctl/agent.sock")),
            ("ssh://ops@10.0.0.7:22/tmp/a.sock", Some("ops"), "10.0.0.7", Some(22), Some("/tmp/a.sock")),
            ("ssh://[::1]:2200", None, "::1", Some(2200), None),
        ];
        for (text, user, host, port, socket) in cases {
            let parsed = parse(text).unwrap();
            assert_eq!(
                (parsed.user.as_deref(), parsed.host.as_str(), parsed.port, parsed.socket.as_deref()),
                (user, host, port, socket),
                "{text}"
            );
            assert_eq!(parsed.label, text.trim_start_matches("ssh://"));
        }
    }

    #[test]
    fn bad_host_urls_say_what_is_wrong() {
        for (text, why) in [
            ("box", "does not start with ssh://"),
            ("ssh://", "the host is empty"),
            ("ssh://@box", "the user is empty"),
            ("ssh://box:http", "`http` is not a port"),
            ("ssh://box:0", "`0` is not a port"),
            ("ssh://[::1", "without its `]`"),
            ("ssh://-oProxyCommand=x", "cannot start with `-`"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(why) && error.contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn hosts_come_from_the_option_or_else_the_environment() {
        let local = PathBuf::from("/s");
        let labels = |endpoints: Vec<Endpoint>| endpoints.iter().map(|e| e.label().to_string()).collect::<Vec<_>>();
        assert_eq!(endpoints(&[], None, local.clone()).unwrap(), [Endpoint::Local(local.clone())]);
        assert_eq!(endpoints(&[], Some(String::new()), local.clone()).unwrap(), [Endpoint::Local(local.clone())]);
        assert_eq!(labels(endpoints(&[], Some("ssh://a,ssh://b".into()), local.clone()).unwrap()), ["a", "b"]);
        let given = ["ssh://a,ssh://b".to_string(), "ssh://c".into(), "ssh://a".into()];
        assert_eq!(labels(endpoints(&given, Some("ssh://env".into()), local.clone()).unwrap()), ["a", "b", "c"]);
        assert!(endpoints(&["a".into()], None, local).is_err());
    }
}
