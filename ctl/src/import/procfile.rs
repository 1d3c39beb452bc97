//! A Procfile: `name: command` lines, each a process of one instance. A command that needs
//! no shell becomes argv; one with shell syntax runs through `/bin/sh -c`, as foreman runs
//! it. A command that uses `$PORT` gets the port foreman would give it.

use std::path::Path;

use super::{ImportError, Imported, Program, Setting, Value};

/// foreman's first port, and the step between process types.
const BASE_PORT: u64 = 5000;
const PORT_STEP: u64 = 100;

/// `name: command`, as foreman reads a line.
pub fn entry(line: &str) -> Option<(&str, &str)> {
    let (name, command) = line.split_once(':')?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (valid && !command.trim().is_empty()).then(|| (name, command.trim()))
}

pub fn read(path: &Path, text: &str) -> Result<Imported, ImportError> {
    let mut imported = Imported::default();
    let mut kinds = 0;
    let dir = super::ini::absolute(path).parent().map(Path::to_path_buf).unwrap_or_default();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, command)) = entry(trimmed) else {
            return Err(ImportError::at(path, index + 1, None, format!("expected `name: command`, found `{trimmed}`")));
        };
        let mut settings = vec![Setting::new("command", command_value(command, &dir))];
        if command.contains("$PORT") || command.contains("${PORT}") {
            let port = BASE_PORT + PORT_STEP * kinds;
            settings.push(Setting::noted(
                "port",
                Value::Number(port),
                "PORT as foreman gives it: 5000, then 100 more for each process type above",
            ));
        }
        settings.push(Setting::noted(
            "cwd",
            Value::Text(dir.display().to_string()),
            "foreman runs each line in the Procfile's directory",
        ));
        if name == "release" {
            settings.push(Setting::noted(
                "restart",
                Value::Text("never".into()),
                "Heroku runs `release` once at each deploy, not as a process that stays up",
            ));
        }
        kinds += 1;
        imported.programs.push(Program {
            name: name.to_string(),
            origin: format!("{name}, {}:{}", path.display(), index + 1),
            settings,
            notes: vec![],
        });
    }
    if imported.programs.is_empty() {
        return Err(ImportError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            problem: "no `name: command` line".into(),
        });
    }
    if path.parent().unwrap_or(Path::new(".")).join(".env").exists() {
        imported
            .notes
            .push(".env beside the Procfile: not read; put its variables in each process's env = { ... }".into());
    }
    Ok(imported)
}

/// argv when the words mean the same without a shell (a relative program found from `dir`,
/// where foreman runs it), else the line for `/bin/sh -c`.
fn command_value(command: &str, dir: &Path) -> Value {
    let plain = |c: char| c.is_ascii_alphanumeric() || " \t_-./:,+@%=^".contains(c);
    let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    if command.chars().all(plain) && !words[0].contains('=') {
        if words[0].contains('/') && Path::new(&words[0]).is_relative() {
            words[0] = dir.join(&words[0]).display().to_string();
        }
        Value::Words(words)
    } else {
        Value::Text(command.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Value {
        Value::Words(list.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn lines_become_processes() {
        let text = "# Laravel\nweb: php -S 0.0.0.0:$PORT -t public\nworker: php artisan queue:work --tries=3\n\n\
                    clock: php artisan schedule:work\nlogs: tail -f storage/logs/*.log | grep ERROR\napi: exec node ${PORT}\n";
        let imported = read(Path::new("/srv/app/Procfile"), text).unwrap();
        let got: Vec<(&str, &Value, Option<u64>)> = imported
            .programs
            .iter()
            .map(|p| {
                let port = p.settings.iter().find(|s| s.key == "port").map(|s| match s.value {
                    Value::Number(n) => n,
                    _ => panic!("port is a number"),
                });
                (p.name.as_str(), &p.settings[0].value, port)
            })
            .collect();
        let want: Vec<(&str, Value, Option<u64>)> = vec![
            ("web", Value::Text("php -S 0.0.0.0:$PORT -t public".into()), Some(5000)),
            ("worker", words(&["php", "artisan", "queue:work", "--tries=3"]), None),
            ("clock", words(&["php", "artisan", "schedule:work"]), None),
            ("logs", Value::Text("tail -f storage/logs/*.log | grep ERROR".into()), None),
            ("api", Value::Text("exec node ${PORT}".into()), Some(5400)),
        ];
        let want: Vec<(&str, &Value, Option<u64>)> = want.iter().map(|(n, v, p)| (*n, v, *p)).collect();
        assert_eq!(got, want);
        assert_eq!(imported.programs[1].origin, "worker, /srv/app/Procfile:3");
        let cwd = imported.programs[1].settings.iter().find(|s| s.key == "cwd").map(|s| &s.value);
        assert_eq!(cwd, Some(&Value::Text("/srv/app".into())));
    }

    #[test]
    fn herokus_release_line_runs_once() {
        let imported = read(
            Path::new("/srv/app/Procfile"),
            "release: php artisan migrate --force
",
        )
        .unwrap();
        let restart = imported.programs[0].settings.iter().find(|s| s.key == "restart").map(|s| &s.value);
        assert_eq!(restart, Some(&Value::Text("never".into())));
    }

    #[test]
    fn shell_syntax_keeps_the_shell_and_a_relative_program_is_found_from_the_procfile() {
        let dir = Path::new("/srv/app");
        let cases: &[(&str, Value)] = &[
            ("QUEUE=high php artisan queue:work", Value::Text("QUEUE=high php artisan queue:work".into())),
            ("bin/worker 'a b'", Value::Text("bin/worker 'a b'".into())),
            ("bin/worker --fast", words(&["/srv/app/bin/worker", "--fast"])),
            ("/usr/bin/env php w.php", words(&["/usr/bin/env", "php", "w.php"])),
        ];
        for (command, want) in cases {
            assert_eq!(command_value(command, dir), *want, "{command}");
        }
    }

    #[test]
    fn a_line_that_is_not_name_command_is_refused_with_its_number() {
        let cases: &[(&str, &str)] = &[
            ("web: x\nnot a line\n", "Procfile:2: expected `name: command`, found `not a line`"),
            ("web: x\nbad name: y\n", "Procfile:2: expected `name: command`"),
            ("web:\n", "Procfile:1: expected `name: command`"),
            ("# only comments\n", "Procfile: no `name: command` line"),
        ];
        for (text, want) in cases {
            let error = read(Path::new("/nonexistent/Procfile"), text).expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
