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

/// `SIGRTMIN` and `SIGRTMAX` as glibc and `kill -l` name them (the kernel's 32 and 33 are
/// taken by the C library's threads).
pub const RTMIN: i32 = 34;
pub const RTMAX: i32 = 64;

impl Signal {
    pub const HUP: Signal = Signal(1);
    pub const INT: Signal = Signal(2);
    pub const KILL: Signal = Signal(9);
    pub const CONT: Signal = Signal(18);
    pub const TERM: Signal = Signal(15);

    /// A signal from its number: 1 to `RTMAX`, real-time ones included.
    pub fn from_number(n: i32) -> Option<Signal> {
        (1..=RTMAX).contains(&n).then_some(Signal(n))
    }

    /// The signal a wait status names, whatever its number: an exit is never dropped for a
    /// signal without a name.
    pub fn from_raw(n: i32) -> Signal {
        Signal(n)
    }

    pub fn number(self) -> i32 {
        self.0
    }

    /// The name without the `SIG` prefix, as `kill -l` prints it: `TERM`, `RTMIN+6`,
    /// `RTMAX-2`; a number that has none (32, 33) is shown as the number.
    pub fn name(self) -> String {
        if let Some(&(name, _)) = NAMES.iter().find(|&&(_, v)| v == self.0) {
            return name.to_string();
        }
        match self.0 {
            RTMIN => "RTMIN".into(),
            RTMAX => "RTMAX".into(),
            n if (RTMIN..=RTMIN + 15).contains(&n) => format!("RTMIN+{}", n - RTMIN),
            n if (RTMIN + 16..RTMAX).contains(&n) => format!("RTMAX-{}", RTMAX - n),
            n => n.to_string(),
        }
    }
}

impl FromStr for Signal {
    type Err = String;

    /// Accepts `HUP`, `SIGHUP`, `hup`, `1`, and `RTMIN`, `RTMIN+N`, `RTMAX-N` (`SIG` optional).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown =
            || format!("unknown signal `{s}` (use a name like TERM, HUP or RTMIN+2, or a number from 1 to {RTMAX})");
        if let Ok(n) = s.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(unknown);
        }
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        let offset = |rest: &str| -> Option<i32> {
            if rest.is_empty() {
                return Some(0);
            }
            let digits = rest.get(1..)?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
            digits.parse().ok()
        };
        let realtime = if let Some(rest) = bare.strip_prefix("RTMIN") {
            (rest.is_empty() || rest.starts_with('+')).then(|| offset(rest).map(|k| RTMIN + k)).flatten()
        } else if let Some(rest) = bare.strip_prefix("RTMAX") {
            (rest.is_empty() || rest.starts_with('-')).then(|| offset(rest).map(|k| RTMAX - k)).flatten()
        } else {
            None
        };
        if let Some(n) = realtime {
            return (RTMIN..=RTMAX).contains(&n).then_some(Signal(n)).ok_or_else(unknown);
        }
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
    }

    #[test]
    fn real_time_signals_are_named_as_kill_l_names_them() {
        // (text accepted, number, name shown)
        let cases = [
            ("RTMIN", 34, "RTMIN"),
            ("SIGRTMIN", 34, "RTMIN"),
            ("rtmin+1", 35, "RTMIN+1"),
            ("RTMIN+6", 40, "RTMIN+6"),
            ("40", 40, "RTMIN+6"),
            ("RTMIN+15", 49, "RTMIN+15"),
            ("RTMAX-14", 50, "RTMAX-14"),
            ("RTMIN+16", 50, "RTMAX-14"),
            ("RTMAX-1", 63, "RTMAX-1"),
            ("SIGRTMAX", 64, "RTMAX"),
            ("64", 64, "RTMAX"),
            ("32", 32, "32"),
        ];
        for (text, number, name) in cases {
            let signal: Signal = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((signal.number(), signal.name().as_str()), (number, name), "{text}");
            assert_eq!(signal.name().parse::<Signal>().ok(), Some(signal), "{name} reads back");
        }
    }

    #[test]
    fn refuses_unknown_signals() {
        for s in
            ["", "0", "65", "-1", "SIGFOO", "TERMX", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMAX+1", "RTMIN+", "RTMIN2"]
        {
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
