//! Signals by name or number, and how a process ended: `Code(n)` or `Signal(sig)`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Linux signal number that has a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signal(i32);

const NAMES: [(&str, i32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl Signal {
    pub const HUP: Signal = Signal(1);
    pub const INT: Signal = Signal(2);
    pub const KILL: Signal = Signal(9);
    pub const CONT: Signal = Signal(18);
    pub const TERM: Signal = Signal(15);

    /// A signal from its number; realtime signals (34..=64) have no name but are valid.
    pub fn from_number(n: i32) -> Option<Signal> {
        let named = NAMES.iter().any(|&(_, v)| v == n);
        (named || (34..=64).contains(&n)).then_some(Signal(n))
    }

    pub fn number(self) -> i32 {
        self.0
    }

    /// The name without the `SIG` prefix (`TERM`), or the number for realtime signals.
    pub fn name(self) -> String {
        NAMES
            .iter()
            .find(|&&(_, v)| v == self.0)
            .map(|&(name, _)| name.to_string())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl FromStr for Signal {
    type Err = String;

    /// Accepts `HUP`, `SIGHUP`, `hup` or `1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || format!("unknown signal `{s}` (use a name like TERM or HUP, or a number)");
        if let Ok(n) = s.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(unknown);
        }
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES.iter().find(|&&(name, _)| name == bare).map(|&(_, n)| Signal(n)).ok_or_else(unknown)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

impl Exit {
    pub fn is_success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "code {code}"),
            Exit::Signal(sig) => write!(f, "signal {sig}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_prefixes_and_numbers() {
        for s in ["HUP", "SIGHUP", "hup", "sigHup", "1"] {
            assert_eq!(s.parse::<Signal>().unwrap(), Signal::HUP, "{s}");
        }
        assert_eq!("9".parse::<Signal>().unwrap().name(), "KILL");
        assert_eq!("40".parse::<Signal>().unwrap().name(), "40");
    }

    #[test]
    fn refuses_unknown_signals() {
        for s in ["", "0", "32", "65", "-1", "SIGFOO", "TERMX"] {
            assert!(s.parse::<Signal>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn exit_displays_code_or_signal() {
        assert_eq!(Exit::Code(3).to_string(), "code 3");
        assert_eq!(Exit::Signal(Signal::KILL).to_string(), "signal KILL");
        assert!(Exit::Code(0).is_success());
        assert!(!Exit::Signal(Signal::TERM).is_success());
    }
}
