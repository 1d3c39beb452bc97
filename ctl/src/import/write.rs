//! The procctl.toml text: a header naming the sources, the notes about each file, then one
//! `[process.NAME]` table per program, each name valid (`[A-Za-z0-9_-]+`, not `all`) and
//! unique.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::{Format, Imported, Program, Value};

pub fn document(sources: &[(PathBuf, Format, Imported)]) -> String {
    let mut out = String::from("# procctl.toml written by `procctl import` from:\n");
    for (path, format, imported) in sources {
        let _ = writeln!(out, "#   {format}: {}", path.display());
        for file in &imported.included {
            let _ = writeln!(out, "#     with {} ([include])", file.display());
        }
    }
    out.push_str("# A comment names each setting that is not carried over, and why.\n");
    let mut taken = BTreeSet::new();
    for (path, _, imported) in sources {
        if !imported.notes.is_empty() {
            let _ = writeln!(out, "\n# {}:", path.display());
            for note in &imported.notes {
                let _ = writeln!(out, "# {}", one_line(note));
            }
        }
        for program in &imported.programs {
            out.push('\n');
            table(&mut out, program, &mut taken);
        }
    }
    out
}

fn table(out: &mut String, program: &Program, taken: &mut BTreeSet<String>) {
    let name = unique(&valid_name(&program.name), taken);
    let _ = writeln!(out, "# {}", one_line(&program.origin));
    if name != program.name {
        let _ = writeln!(
            out,
            "# named {name}: a procctl name is letters, digits, _ and - (not `all`), and unique in the file"
        );
    }
    let _ = writeln!(out, "[process.{name}]");
    for setting in &program.settings {
        let _ = write!(out, "{} = {}", setting.key, value(&setting.value));
        match &setting.note {
            Some(note) => {
                let _ = writeln!(out, "  # {}", one_line(note));
            }
            None => out.push('\n'),
        }
    }
    for note in &program.notes {
        let _ = writeln!(out, "# {}", one_line(note));
    }
}

/// `name` with each character procctl does not allow made `-`.
fn valid_name(name: &str) -> String {
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
    match name.as_str() {
        "" => "process".into(),
        "all" => "all-process".into(),
        _ => name,
    }
}

fn unique(name: &str, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// A note on one comment line.
fn one_line(note: &str) -> String {
    note.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn value(value: &Value) -> String {
    match value {
        Value::Text(text) => string(text),
        Value::Number(n) => n.to_string(),
        Value::Flag(b) => b.to_string(),
        Value::Words(words) => format!("[{}]", words.iter().map(|w| string(w)).collect::<Vec<_>>().join(", ")),
        Value::Table(pairs) => {
            let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{} = {}", key(k), string(v))).collect();
            if inner.is_empty() { "{}".into() } else { format!("{{ {} }}", inner.join(", ")) }
        }
    }
}

fn key(key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { key.to_string() } else { string(key) }
}

/// A TOML basic string.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::Setting;
    use super::*;

    #[test]
    fn names_become_valid_and_unique() {
        let mut taken = BTreeSet::new();
        let cases: &[(&str, &str)] = &[
            ("web", "web"),
            ("web", "web-2"),
            ("my.app@host", "my-app-host"),
            ("all", "all-process"),
            ("", "process"),
            ("web", "web-3"),
        ];
        for (name, want) in cases {
            assert_eq!(unique(&valid_name(name), &mut taken), *want, "{name}");
        }
    }

    #[test]
    fn values_are_toml_that_reads_back() {
        let program = Program {
            name: "a.b".into(),
            origin: "[program:a.b], x.conf:1".into(),
            settings: vec![
                Setting::new(
                    "command",
                    Value::Words(vec!["sh".into(), "-c".into(), "echo \"$A\" \\ \u{7}\ttab".into()]),
                ),
                Setting::noted("instances", Value::Number(8), "numprocs=8"),
                Setting::new("autostart", Value::Flag(false)),
                Setting::new("env", Value::Table(vec![("A".into(), "x\ny".into()), ("with space".into(), "1".into())])),
                Setting::new("cwd", Value::Text("/srv/app".into())),
            ],
            notes: vec!["stdout_logfile=/var/log/a.log: two\nlines".into()],
        };
        let imported = Imported { programs: vec![program], ..Imported::default() };
        let text = document(&[(PathBuf::from("x.conf"), Format::Supervisord, imported)]);
        let parsed: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        let process = &parsed["process"]["a-b"];
        assert_eq!(process["command"][2].as_str(), Some("echo \"$A\" \\ \u{7}\ttab"));
        assert_eq!(process["instances"].as_integer(), Some(8));
        assert_eq!(process["autostart"].as_bool(), Some(false));
        assert_eq!(process["env"]["A"].as_str(), Some("x\ny"));
        assert_eq!(process["env"]["with space"].as_str(), Some("1"));
        assert!(text.contains("instances = 8  # numprocs=8\n"), "{text}");
        assert!(text.contains("# stdout_logfile=/var/log/a.log: two lines\n"), "{text}");
        assert!(text.contains("# named a-b: "), "{text}");
    }
}
