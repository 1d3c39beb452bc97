//! The target of a command: `all`, a process `NAME`, or one instance `NAME:INDEX`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    All,
    Name(String),
    Instance(InstanceId),
}

/// One instance: a process name and its 0-based index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub name: String,
    pub index: u32,
}

impl InstanceId {
    pub fn new(name: impl Into<String>, index: u32) -> Self {
        Self { name: name.into(), index }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.index)
    }
}

impl Target {
    /// The process name this target is limited to, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::All => None,
            Target::Name(name) => Some(name),
            Target::Instance(id) => Some(&id.name),
        }
    }

    pub fn matches(&self, id: &InstanceId) -> bool {
        match self {
            Target::All => true,
            Target::Name(name) => *name == id.name,
            Target::Instance(want) => want == id,
        }
    }

    /// True when the target may stand for more than one instance.
    pub fn is_group(&self) -> bool {
        !matches!(self, Target::Instance(_))
    }
}

/// The name rule: `[A-Za-z0-9_-]+`, and not the reserved `all`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name == "all" {
        return Err("the name `all` is reserved: it targets every process".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("invalid name `{name}`: `{c}` is not allowed (use letters, digits, _ and -)"));
    }
    Ok(())
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            return Ok(Target::All);
        }
        match s.split_once(':') {
            None => check_name(s).map(|()| Target::Name(s.to_string())),
            Some((name, index)) => {
                check_name(name)?;
                let index = index
                    .parse::<u32>()
                    .map_err(|_| format!("invalid instance `{s}`: expected NAME:INDEX with a number"))?;
                Ok(Target::Instance(InstanceId::new(name, index)))
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Name(name) => f.write_str(name),
            Target::Instance(id) => id.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert_eq!("all".parse::<Target>().unwrap(), Target::All);
        assert_eq!("web".parse::<Target>().unwrap(), Target::Name("web".into()));
        assert_eq!("web-2_x:7".parse::<Target>().unwrap(), Target::Instance(InstanceId::new("web-2_x", 7)));
    }

    #[test]
    fn refuses_bad_names_and_indexes() {
        for bad in ["", "a b", "web:", "web:x", "web:-1", ":1", "all:0", "wé", "a.b"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["all", "web", "web:3"] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn matches_by_form() {
        let id = InstanceId::new("web", 1);
        assert!(Target::All.matches(&id));
        assert!(Target::Name("web".into()).matches(&id));
        assert!(!Target::Name("db".into()).matches(&id));
        assert!(Target::Instance(id.clone()).matches(&id));
        assert!(!Target::Instance(InstanceId::new("web", 0)).matches(&id));
    }
}
