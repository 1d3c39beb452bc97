//! Who an instance runs as and within what: `user`, `group`, `umask`, `limits`,
//! `memory_max`, `cpu_max`. Names are resolved at load, so an unknown user is a config
//! error, not a crash loop.

use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Value;

use super::value::describe;

/// A user to run as, resolved from the passwd and group databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's, as initgroups gives them.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// One setrlimit resource, soft = hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub resource: libc::__rlimit_resource_t,
    /// `libc::RLIM_INFINITY` for "unlimited".
    pub value: u64,
}

/// The resources `limits` takes, by the names setrlimit(2) gives them (RLIMIT_ dropped,
/// lower case).
pub const RESOURCES: [(&str, libc::__rlimit_resource_t); 16] = [
    ("as", libc::RLIMIT_AS),
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

pub fn limits<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Limit>, D::Error> {
    let table = match Value::deserialize(d)? {
        Value::Table(table) => table,
        other => {
            return Err(D::Error::custom(format!(
                "expected a table like {{ nofile = 65536 }}, found {}",
                describe(&other)
            )));
        }
    };
    let mut limits = vec![];
    for (key, value) in table {
        let Some(&(name, resource)) = RESOURCES.iter().find(|(name, _)| *name == key) else {
            let names: Vec<&str> = RESOURCES.iter().map(|(name, _)| *name).collect();
            return Err(D::Error::custom(format!("unknown limit `{key}` (one of {})", names.join(", "))));
        };
        let value = match value {
            Value::Integer(n) if n >= 0 => n as u64,
            Value::String(s) if s == "unlimited" => libc::RLIM_INFINITY,
            other => {
                return Err(D::Error::custom(format!(
                    "`{key}`: expected a whole number or \"unlimited\", found {}",
                    describe(&other)
                )));
            }
        };
        limits.push(Limit { name, resource, value });
    }
    Ok(limits)
}

/// An octal mode mask like "022" or "0027".
pub fn umask<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => u32::from_str_radix(&s, 8)
            .ok()
            .filter(|mask| *mask <= 0o777)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected an octal mask like \"022\", found the string {s:?}"))),
        other => Err(D::Error::custom(format!("expected an octal mask like \"022\", found {}", describe(&other)))),
    }
}

/// A share of one CPU, like "50%" (or "150%" for one and a half).
pub fn cpu_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let bad = |found: String| D::Error::custom(format!("expected a percentage of one CPU like \"50%\", found {found}"));
    match Value::deserialize(d)? {
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u32>().ok())
            .filter(|n| (1..=100_000).contains(n))
            .map(Some)
            .ok_or_else(|| bad(format!("the string {s:?}"))),
        other => Err(bad(describe(&other))),
    }
}

/// Resolves `user` (and `group`, else the user's primary group) at load.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Account, (&'static str, String)> {
    use nix::unistd::{Group, User};
    let entry = User::from_name(user)
        .map_err(|e| ("user", format!("cannot look up user `{user}`: {e}")))?
        .ok_or_else(|| ("user", format!("no user named `{user}` on this machine")))?;
    let gid = match group {
        None => entry.gid.as_raw(),
        Some(group) => Group::from_name(group)
            .map_err(|e| ("group", format!("cannot look up group `{group}`: {e}")))?
            .ok_or_else(|| ("group", format!("no group named `{group}` on this machine")))?
            .gid
            .as_raw(),
    };
    let name = std::ffi::CString::new(user).map_err(|_| ("user", "a user name cannot hold a NUL byte".to_string()))?;
    let groups = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .map_err(|e| ("user", format!("cannot list the groups of `{user}`: {e}")))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(Account { user: entry.name, uid: entry.uid.as_raw(), gid, groups, home: entry.dir, shell: entry.shell })
}

/// What the limits of an instance leave to check against the agent's own: a hard limit above
/// the agent's can only be set with CAP_SYS_RESOURCE, and nofile never above fs.nr_open.
/// `privileged` is whether the agent runs as root; root without CAP_SYS_RESOURCE (as in many
/// containers) cannot raise one either, so that is checked here rather than left to fail at
/// every spawn.
pub fn check_limits(limits: &[Limit], privileged: bool) -> Result<(), String> {
    let can_raise = privileged && can_raise_limits().unwrap_or(true);
    for limit in limits {
        // Above fs.nr_open, not even CAP_SYS_RESOURCE helps: said first.
        if limit.resource == libc::RLIMIT_NOFILE {
            let nr_open =
                std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(nr_open) = nr_open.filter(|max| limit.value > *max) {
                return Err(format!("`nofile` = {} is above the kernel's fs.nr_open ({nr_open})", shown(limit.value)));
            }
        }
        let mut own = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into a struct we own.
        if unsafe { libc::getrlimit(limit.resource, &mut own) } != 0 {
            continue;
        }
        if limit.value > own.rlim_max && !can_raise {
            let who = if privileged {
                "raising it needs CAP_SYS_RESOURCE, which this agent does not have"
            } else {
                "only root can raise it"
            };
            return Err(format!(
                "`{}` = {} is above this agent's own hard limit ({}); {who}",
                limit.name,
                shown(limit.value),
                shown(own.rlim_max)
            ));
        }
    }
    Ok(())
}

/// Whether CAP_SYS_RESOURCE is in this process's effective set, from /proc/self/status.
fn can_raise_limits() -> Option<bool> {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let effective = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    let caps = u64::from_str_radix(effective.trim(), 16).ok()?;
    Some(caps & (1 << CAP_SYS_RESOURCE) != 0)
}

fn shown(value: u64) -> String {
    if value == libc::RLIM_INFINITY { "unlimited".into() } else { value.to_string() }
}
