//! supervisord's `%(name)s` expansions: Python's `%` formatting with a mapping, so
//! `%(process_num)02d` and `%%` read as supervisord reads them.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Number(i64),
}

/// The names a value may use; `ENV_*` come from the environment.
pub type Names = BTreeMap<String, Value>;

/// `text % names`, or why not.
pub fn expand(text: &str, names: &Names) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let Some(after) = rest.strip_prefix('(') else {
            return Err("a `%` that is not `%(NAME)s` (write a literal % as %%)".into());
        };
        let close = after.find(')').ok_or("a `%(` without its closing `)`")?;
        let name = &after[..close];
        rest = &after[close + 1..];
        let spec_len = rest
            .find(|c: char| !"#0- +.0123456789".contains(c))
            .ok_or(format!("`%({name})` without a conversion like s or d"))?;
        let (spec, tail) = rest.split_at(spec_len);
        let mut tail = tail.chars();
        let conversion = tail.next().expect("found above");
        rest = tail.as_str();
        let value = names.get(name).ok_or_else(|| unknown(name, names))?;
        out.push_str(&format(value, spec, conversion).map_err(|e| format!("`%({name}){spec}{conversion}`: {e}"))?);
    }
    out.push_str(rest);
    Ok(out)
}

fn unknown(name: &str, names: &Names) -> String {
    let known: Vec<&str> = names.keys().map(String::as_str).filter(|n| !n.starts_with("ENV_")).collect();
    format!(
        "`%({name})s` names nothing supervisord knows: the names are {} and ENV_* (the environment)",
        known.join(", ")
    )
}

/// One conversion: flags, width and precision as Python reads them.
fn format(value: &Value, spec: &str, conversion: char) -> Result<String, String> {
    let flags: String = spec.chars().take_while(|c| "#0- +".contains(*c)).collect();
    let sizes = &spec[flags.len()..];
    let (width, precision) = match sizes.split_once('.') {
        Some((w, p)) => (w, Some(p.parse::<usize>().unwrap_or(0))),
        None => (sizes, None),
    };
    if width.contains(['.', '#', '-', '+', ' ']) {
        return Err("a bad width".into());
    }
    let width: usize = if width.is_empty() { 0 } else { width.parse().map_err(|_| "a bad width")? };
    let left = flags.contains('-');
    let body = match (conversion, value) {
        ('s', Value::Text(t)) => precision.map_or(t.clone(), |p| t.chars().take(p).collect()),
        ('s', Value::Number(n)) => n.to_string(),
        ('r' | 'a', Value::Text(t)) => format!("'{t}'"),
        ('r' | 'a', Value::Number(n)) => n.to_string(),
        ('d' | 'i' | 'u' | 'x' | 'X' | 'o', Value::Number(n)) => {
            let digits = match conversion {
                'x' => format!("{:x}", n.unsigned_abs()),
                'X' => format!("{:X}", n.unsigned_abs()),
                'o' => format!("{:o}", n.unsigned_abs()),
                _ => n.unsigned_abs().to_string(),
            };
            let digits = match precision {
                Some(p) if digits.len() < p => format!("{}{digits}", "0".repeat(p - digits.len())),
                _ => digits,
            };
            let prefix = match conversion {
                'x' if flags.contains('#') => "0x",
                'X' if flags.contains('#') => "0X",
                'o' if flags.contains('#') => "0o",
                _ => "",
            };
            let sign = if *n < 0 {
                "-"
            } else if flags.contains('+') {
                "+"
            } else if flags.contains(' ') {
                " "
            } else {
                ""
            };
            let head = format!("{sign}{prefix}");
            if flags.contains('0') && !left && head.len() + digits.len() < width {
                return Ok(format!("{head}{}{digits}", "0".repeat(width - head.len() - digits.len())));
            }
            format!("{head}{digits}")
        }
        ('d' | 'i' | 'u' | 'x' | 'X' | 'o', Value::Text(t)) => {
            return Err(format!("a number is needed, and this is the text {t:?}"));
        }
        (other, _) => return Err(format!("the conversion `{other}` is not one supervisord values use")),
    };
    let pad = width.saturating_sub(body.chars().count());
    Ok(if left { format!("{body}{}", " ".repeat(pad)) } else { format!("{}{body}", " ".repeat(pad)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        [
            ("program_name", Value::Text("laravel-worker".into())),
            ("process_num", Value::Number(7)),
            ("here", Value::Text("/etc/supervisor".into())),
            ("ENV_HOME", Value::Text("/root".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn expands_as_python_percent_formatting_does() {
        let cases: &[(&str, &str)] = &[
            ("%(program_name)s_%(process_num)02d", "laravel-worker_07"),
            ("%(process_num)s", "7"),
            ("%(process_num)d", "7"),
            ("%(process_num)3d|", "  7|"),
            ("%(process_num)-3d|", "7  |"),
            ("%(process_num)03d", "007"),
            ("%(process_num)+d", "+7"),
            ("%(process_num).3d", "007"),
            ("%(process_num)#x %(process_num)o", "0x7 7"),
            ("%(program_name).7s", "laravel"),
            ("%(program_name)10.3s|", "       lar|"),
            ("%(here)s/conf.d", "/etc/supervisor/conf.d"),
            ("%(ENV_HOME)s/app", "/root/app"),
            ("100%% sure", "100% sure"),
            ("no names", "no names"),
            ("%(program_name)r", "'laravel-worker'"),
        ];
        for (text, want) in cases {
            assert_eq!(expand(text, &names()).as_deref(), Ok(*want), "{text}");
        }
    }

    #[test]
    fn refuses_what_supervisord_refuses() {
        let cases: &[(&str, &str)] = &[
            (
                "%(nope)s",
                "`%(nope)s` names nothing supervisord knows: the names are here, process_num, program_name and ENV_*",
            ),
            ("date +%s", "a `%` that is not `%(NAME)s`"),
            ("50%", "a `%` that is not"),
            ("%(program_name", "without its closing"),
            ("%(program_name)", "without a conversion"),
            ("%(program_name)d", "a number is needed"),
            ("%(process_num)f", "the conversion `f`"),
        ];
        for (text, want) in cases {
            let error = expand(text, &names()).expect_err(text);
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
