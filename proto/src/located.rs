//! The one form of an error about a place in a file, `FILE:LINE: KEY: PROBLEM` (the line and
//! the key when known), which the agent's config errors and `procctl import` both print.

use std::fmt;
use std::path::Path;

/// Writes `path:line: key: problem`, leaving out the line or the key when there is none.
pub fn write(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    line: Option<usize>,
    key: Option<&str>,
    problem: &str,
) -> fmt::Result {
    write!(f, "{}", path.display())?;
    if let Some(line) = line {
        write!(f, ":{line}")?;
    }
    if let Some(key) = key {
        write!(f, ": {key}")?;
    }
    write!(f, ": {problem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shown<'a>(Option<usize>, Option<&'a str>);

    impl fmt::Display for Shown<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write(f, Path::new("/etc/app/procctl.toml"), self.0, self.1, "the problem")
        }
    }

    #[test]
    fn the_line_and_the_key_are_left_out_when_unknown() {
        let cases = [
            (Some(3), Some("process.a.instances"), "/etc/app/procctl.toml:3: process.a.instances: the problem"),
            (Some(3), None, "/etc/app/procctl.toml:3: the problem"),
            (None, Some("metrics"), "/etc/app/procctl.toml: metrics: the problem"),
            (None, None, "/etc/app/procctl.toml: the problem"),
        ];
        for (line, key, want) in cases {
            assert_eq!(Shown(line, key).to_string(), want);
        }
    }
}
