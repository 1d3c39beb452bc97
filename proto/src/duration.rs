//! Durations as people write them: `"10s"`, `"500ms"`, `"1.5s"`, `"2m"`, `"1h"`.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{text}`: use a number with ms, s, m or h, like \"10s\"");
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| bad())
}

/// A duration as messages write it, and `parse` reads it back: whole seconds as `10s`,
/// anything else in milliseconds (`1500ms`).
pub fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_refuses_the_rest() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["10", "-1s", "s", "1d", "", "1..5s"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn human_writes_what_parse_reads() {
        for (duration, text) in [(Duration::from_secs(10), "10s"), (Duration::from_millis(1500), "1500ms")] {
            assert_eq!(human(duration), text);
            assert_eq!(parse(text), Ok(duration));
        }
    }
}
