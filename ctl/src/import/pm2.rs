//! A pm2 ecosystem file in JSON: each of `apps` as a process, run as pm2 runs it (the
//! interpreter it would pick, the script from `cwd`), with pm2's defaults where they differ
//! from procctl's (SIGINT, 1600 ms to stop, 16 unstable restarts).

use std::path::{Path, PathBuf};

use procctl_proto::Signal;

use super::json::{self, Json, Node};
use super::{Context, ImportError, Imported, Program, Setting, Value, ini, shell, supervisord};

pub fn read(path: &Path, text: &str, context: &Context) -> Result<Imported, ImportError> {
    let root = json::parse(text).map_err(|(line, problem)| ImportError::at(path, line, None, problem))?;
    let mut imported = Imported::default();
    let apps: Vec<&Node> = match &root.json {
        Json::Array(items) => items.iter().collect(),
        Json::Object(members) if root.get("apps").is_some() => {
            for (key, _) in members.iter().filter(|(k, _)| k != "apps") {
                imported
                    .notes
                    .push(format!("\"{key}\": not carried over: pm2's own ({key} has no procctl counterpart)"));
            }
            match &root.get("apps").expect("checked").json {
                Json::Array(items) => items.iter().collect(),
                _ => vec![root.get("apps").expect("checked")],
            }
        }
        Json::Object(_) if root.get("script").is_some() => vec![&root],
        _ => {
            return Err(ImportError::at(
                path,
                root.line,
                None,
                "expected an object with `apps`, or an array of apps".into(),
            ));
        }
    };
    let dir = ini::absolute(path).parent().map(Path::to_path_buf).unwrap_or_default();
    for (index, app) in apps.into_iter().enumerate() {
        imported.programs.push(self::app(path, &dir, index, app, context)?);
    }
    Ok(imported)
}

fn app(path: &Path, dir: &Path, index: usize, app: &Node, context: &Context) -> Result<Program, ImportError> {
    let key_of = |key: &str| format!("apps[{index}].{key}");
    let fail = |node: &Node, key: &str, problem: String| ImportError::at(path, node.line, Some(key_of(key)), problem);
    let Json::Object(members) = &app.json else {
        return Err(ImportError::at(
            path,
            app.line,
            Some(format!("apps[{index}]")),
            format!("expected an object, found {}", app.kind()),
        ));
    };
    let text = |key: &str| -> Result<Option<(String, &Node)>, ImportError> {
        match app.get(key) {
            None => Ok(None),
            Some(node) => match &node.json {
                Json::Text(t) => Ok(Some((t.clone(), node))),
                _ => Err(fail(node, key, format!("expected a string, found {}", node.kind()))),
            },
        }
    };
    let number = |key: &str| -> Result<Option<(f64, &Node)>, ImportError> {
        match app.get(key) {
            None => Ok(None),
            Some(node) => match &node.json {
                Json::Number(_, n) => Ok(Some((*n, node))),
                Json::Text(t) if t.trim().parse::<f64>().is_ok() => {
                    Ok(Some((t.trim().parse().expect("checked"), node)))
                }
                _ => Err(fail(node, key, format!("expected a number, found {}", node.kind()))),
            },
        }
    };
    let words = |key: &str| -> Result<Vec<String>, ImportError> {
        match app.get(key) {
            None => Ok(vec![]),
            Some(node) => match &node.json {
                Json::Text(t) => shell::split(t).map_err(|e| fail(node, key, e)),
                Json::Array(items) => items
                    .iter()
                    .map(|item| match &item.json {
                        Json::Text(t) => Ok(t.clone()),
                        Json::Number(raw, _) => Ok(raw.clone()),
                        _ => Err(fail(item, key, format!("expected strings, found {}", item.kind()))),
                    })
                    .collect(),
                _ => Err(fail(node, key, format!("expected a string or an array of strings, found {}", node.kind()))),
            },
        }
    };

    let Some((script, _)) = text("script")? else {
        return Err(ImportError::at(path, app.line, Some(format!("apps[{index}]")), "has no `script`".into()));
    };
    if script.trim().is_empty() {
        return Err(fail(app.get("script").expect("present"), "script", "the script is empty".into()));
    }
    let name = match text("name")? {
        Some((name, _)) => name,
        None => Path::new(&script).file_stem().map_or("app".into(), |s| s.to_string_lossy().into_owned()),
    };
    let cwd = match text("cwd")? {
        Some((cwd, _)) => dir.join(cwd),
        None => dir.to_path_buf(),
    };
    let mut settings = vec![];
    let mut notes = vec![];

    let interpreter = match text("interpreter")? {
        Some(found) => Some(found),
        None => text("exec_interpreter")?,
    };
    let mut interpreter_args = words("interpreter_args")?;
    interpreter_args.extend(words("node_args")?);
    let script_path = locate(&cwd, &script);
    let (program, note) = match interpreter.as_ref().map(|(i, _)| i.as_str()) {
        Some("none") => (None, None),
        Some(interpreter) => (Some(interpreter.to_string()), None),
        None => match Path::new(&script).extension().and_then(|e| e.to_str()) {
            Some("js" | "cjs" | "mjs") => (Some("node".into()), None),
            Some("py") => (Some("python3".into()), Some("pm2 runs a .py script with python; here python3")),
            Some("php") => (Some("php".into()), None),
            Some("sh") => (Some("bash".into()), None),
            Some("rb") => (Some("ruby".into()), None),
            Some("pl") => (Some("perl".into()), None),
            Some("coffee") => (Some("coffee".into()), None),
            Some("ts") => {
                (Some("ts-node".into()), Some("pm2 runs a .ts script with its TypeScript runner; here ts-node"))
            }
            _ => match script_path.as_deref().map(binary) {
                Some(true) => (None, None),
                Some(false) => (Some("node".into()), Some("pm2 runs a script without a known extension with node")),
                None => (None, Some("the script was not found when imported; pm2 would run a text file with node")),
            },
        },
    };
    // An interpreter is given the script's path, from `cwd`; a program alone may be a name in PATH.
    let shown_script = match (script_path, &program) {
        (Some(found), _) => found.display().to_string(),
        (None, Some(_)) => cwd.join(&script).display().to_string(),
        (None, None) => script.clone(),
    };
    let mut argv = vec![];
    if let Some(program) = program {
        argv.push(program);
        argv.extend(interpreter_args);
    } else if !interpreter_args.is_empty() {
        notes.push("interpreter_args: without an interpreter they have nowhere to go".into());
    }
    let argv_is_node = argv.first().is_some_and(|p| p == "node");
    argv.push(shown_script);
    argv.extend(words("args")?);
    settings.push(match note {
        Some(note) => Setting::noted("command", Value::Words(argv), note),
        None => Setting::new("command", Value::Words(argv)),
    });

    if let Some(node) = app.get("instances") {
        let (count, note) = match &node.json {
            Json::Text(t) if t == "max" => {
                (context.cpus, Some(format!("instances: \"max\": this machine's {} CPUs", context.cpus)))
            }
            _ => {
                let (n, _) = number("instances")?.expect("present");
                if n.fract() != 0.0 {
                    return Err(fail(
                        node,
                        "instances",
                        format!("expected a whole number or \"max\", found {}", node.kind()),
                    ));
                }
                match n as i64 {
                    0 => (context.cpus, Some(format!("instances: 0: this machine's {} CPUs", context.cpus))),
                    n if n < 0 => {
                        let count = (i64::from(context.cpus) + n).max(1) as u32;
                        (count, Some(format!("instances: {n}: this machine's {} CPUs less {}", context.cpus, -n)))
                    }
                    n => (u32::try_from(n).unwrap_or(u32::MAX), None),
                }
            }
        };
        settings.push(Setting { key: "instances", value: Value::Number(count.into()), note });
        let node_script = argv_is_node && app.get("exec_mode").is_none();
        if node_script && count > 1 {
            notes.push(
                "instances of a node script: pm2 runs them in cluster mode, sharing one port; here each is a process \
                 of its own (give each its own PORT with `port`)"
                    .into(),
            );
        }
    }
    let restart = match app.get("autorestart") {
        None => None,
        Some(Node { json: Json::Bool(b), .. }) => Some(*b),
        Some(node) => return Err(fail(node, "autorestart", format!("expected true or false, found {}", node.kind()))),
    };
    if let Some(restart) = restart {
        settings.push(Setting::new("restart", Value::Text(if restart { "always" } else { "never" }.into())));
    }
    match number("min_uptime")? {
        Some((ms, _)) if ms >= 0.0 => settings.push(Setting::new("start_secs", millis(ms))),
        Some((_, node)) => return Err(fail(node, "min_uptime", "expected milliseconds from 0 up".into())),
        None => {}
    }
    match number("max_restarts")? {
        Some((n, _)) if n >= 0.0 && n.fract() == 0.0 => {
            settings.push(Setting::new("start_retries", Value::Number(n as u64)))
        }
        Some((_, node)) => return Err(fail(node, "max_restarts", "expected a whole number from 0 up".into())),
        None => settings.push(Setting::noted("start_retries", Value::Number(16), "pm2's default max_restarts: 16")),
    }
    match text("kill_signal")? {
        Some((signal, node)) => {
            let signal: Signal = signal.parse().map_err(|e| fail(node, "kill_signal", e))?;
            settings.push(Setting::new("stop_signal", Value::Text(signal.name())));
        }
        None => settings.push(Setting::noted("stop_signal", Value::Text("INT".into()), "pm2 stops with SIGINT")),
    }
    match number("kill_timeout")? {
        Some((ms, _)) if ms >= 0.0 => settings.push(Setting::new("stop_timeout", millis(ms))),
        Some((_, node)) => return Err(fail(node, "kill_timeout", "expected milliseconds from 0 up".into())),
        None => settings.push(Setting::noted("stop_timeout", millis(1600.0), "pm2's default kill_timeout: 1600")),
    }
    settings.push(Setting::new("cwd", Value::Text(cwd.display().to_string())));
    if let Some(node) = app.get("env") {
        let Json::Object(vars) = &node.json else {
            return Err(fail(node, "env", format!("expected an object of strings, found {}", node.kind())));
        };
        let mut env = vec![];
        for (key, value) in vars {
            match &value.json {
                Json::Text(t) => env.push((key.clone(), t.clone())),
                Json::Number(raw, _) => env.push((key.clone(), raw.clone())),
                Json::Bool(b) => env.push((key.clone(), b.to_string())),
                _ => notes.push(format!("env.{key}: {} left out: an environment variable is a string", value.kind())),
            }
        }
        settings.push(Setting::new("env", Value::Table(env)));
    }
    for key in ["user", "uid"] {
        if let Some((user, _)) = text(key)? {
            settings.push(Setting::new("user", Value::Text(user)));
            break;
        }
    }
    if let Some((group, _)) = text("gid")? {
        settings.push(Setting::new("group", Value::Text(group)));
    }
    if let Some(node) = app.get("max_memory_restart") {
        let bytes = match &node.json {
            Json::Number(_, n) if *n >= 1.0 => Some(*n as u64),
            Json::Text(t) => memory(t),
            _ => None,
        };
        let bytes = bytes.ok_or_else(|| {
            fail(node, "max_memory_restart", format!("expected a size like \"300M\", found {}", node.kind()))
        })?;
        settings.push(Setting::noted(
            "max_memory",
            supervisord::size(bytes),
            "max_memory_restart: a warm restart once MEM stays above it for two checks (every recycle_check, 10s)",
        ));
    }

    for (key, value) in members {
        let reason = match key.as_str() {
            "name" | "script" | "args" | "interpreter" | "exec_interpreter" | "interpreter_args" | "node_args"
            | "instances" | "autorestart" | "min_uptime" | "max_restarts" | "kill_signal" | "kill_timeout" | "cwd"
            | "env" | "user" | "uid" | "gid" | "max_memory_restart" => continue,
            "exec_mode" if matches!(&value.json, Json::Text(t) if t.starts_with("fork")) => continue,
            "exec_mode" => {
                "each instance is a process of its own; node's cluster module does not share a port between them"
            }
            "watch" | "ignore_watch" | "watch_options" | "watch_delay" => {
                "procctl does not watch files: run `procctl restart NAME` after a deploy"
            }
            "out_file" | "error_file" | "log_file" | "output" | "error" | "log" | "merge_logs" | "combine_logs"
            | "log_date_format" | "log_type" | "time" | "disable_logs" | "pid_file" => {
                "procctl keeps each instance's output in its state directory (`procctl logs NAME`)"
            }
            "cron_restart" => "run `procctl restart NAME` from cron or a systemd timer",
            "restart_delay" | "exp_backoff_restart_delay" => {
                "procctl restarts at once, then backs off while failures keep coming"
            }
            "wait_ready" | "listen_timeout" => {
                "pm2's process.send('ready'); procctl has ready = \"notify\" (READY=1) and ready_timeout"
            }
            "shutdown_with_message" => "procctl stops with stop_signal; a message on the pipe is `procctl send`",
            "instance_var" | "increment_var" => "procctl gives each instance PROCCTL_INSTANCE (0, 1, …)",
            "stop_exit_codes" => "procctl's restart = \"on-failure\" leaves only code 0 alone",
            k if k.starts_with("env_") => "another environment, for `pm2 start --env`; procctl has one env",
            _ => "pm2's own, with no procctl counterpart",
        };
        let shown = match &value.json {
            Json::Text(t) => format!("{t:?}"),
            Json::Number(raw, _) => raw.clone(),
            Json::Bool(b) => b.to_string(),
            other => Node { json: other.clone(), line: 0 }.kind(),
        };
        notes.push(format!("\"{key}\": {shown}: {reason}"));
    }
    Ok(Program { name, origin: format!("apps[{index}], {}:{}", path.display(), app.line), settings, notes })
}

/// The file a script names, from `cwd` or else PATH.
fn locate(cwd: &Path, script: &str) -> Option<PathBuf> {
    let here = cwd.join(script);
    if here.is_file() || script.contains('/') {
        return Some(here);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(script)).find(|p| p.is_file())
}

/// A compiled program rather than a script (pm2's isBinary: a NUL in its first bytes).
fn binary(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    head[..n].contains(&0)
}

fn millis(ms: f64) -> Value {
    Value::Text(procctl_proto::duration::human(std::time::Duration::from_millis(ms as u64)))
}

/// pm2's sizes: bytes, or a number with K, M or G (powers of 1024).
fn memory(text: &str) -> Option<u64> {
    let upper = text.trim().to_uppercase();
    let upper = upper.strip_suffix('B').unwrap_or(&upper);
    let (number, shift) = match upper.chars().last()? {
        'K' => (&upper[..upper.len() - 1], 10),
        'M' => (&upper[..upper.len() - 1], 20),
        'G' => (&upper[..upper.len() - 1], 30),
        _ => (upper, 0),
    };
    number.trim().parse::<u64>().ok().filter(|n| *n > 0)?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::super::{Format, write};
    use super::*;

    fn import(text: &str) -> Result<String, String> {
        let path = PathBuf::from("/srv/app/ecosystem.json");
        let context = Context { env: Default::default(), host: "web1".into(), cpus: 8 };
        let imported = read(&path, text, &context).map_err(|e| e.to_string())?;
        Ok(write::document(&[(path, Format::Pm2, imported)]))
    }

    #[test]
    fn apps_map_to_processes() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"{"apps": [{"name": "api", "script": "server.js", "args": "--port 3000"}]}"#,
                &[
                    "[process.api]",
                    "command = [\"node\", \"/srv/app/server.js\", \"--port\", \"3000\"]",
                    "start_retries = 16  # pm2's default max_restarts: 16",
                    "stop_signal = \"INT\"  # pm2 stops with SIGINT",
                    "stop_timeout = \"1600ms\"  # pm2's default kill_timeout: 1600",
                    "cwd = \"/srv/app\"",
                ],
            ),
            (
                r#"[{"script": "worker.php", "cwd": "api"}]"#,
                &["[process.worker]", "command = [\"php\", \"/srv/app/api/worker.php\"]", "cwd = \"/srv/app/api\""],
            ),
            (
                r#"{"script": "jobs.py", "interpreter_args": "-u"}"#,
                &[
                    "command = [\"python3\", \"-u\", \"/srv/app/jobs.py\"]  # pm2 runs a .py script with python; here python3",
                ],
            ),
            (
                r#"[{"script": "./bin/www", "interpreter": "none", "args": ["a b", 1]}]"#,
                &["command = [\"/srv/app/./bin/www\", \"a b\", \"1\"]"],
            ),
            (
                r#"[{"script": "app.js", "interpreter": "/usr/bin/node18", "node_args": ["--max-old-space-size=512"]}]"#,
                &["command = [\"/usr/bin/node18\", \"--max-old-space-size=512\", \"/srv/app/app.js\"]"],
            ),
            (
                r#"[{"script": "a.js", "instances": 4}]"#,
                &["instances = 4\n", "# instances of a node script: pm2 runs them in cluster mode"],
            ),
            (
                r#"[{"script": "a.js", "instances": "max"}]"#,
                &["instances = 8  # instances: \"max\": this machine's 8 CPUs"],
            ),
            (
                r#"[{"script": "a.js", "instances": -1}]"#,
                &["instances = 7  # instances: -1: this machine's 8 CPUs less 1"],
            ),
            (
                r#"[{"script": "a.js", "autorestart": false, "max_restarts": 3, "min_uptime": 5000}]"#,
                &["restart = \"never\"", "start_secs = \"5s\"", "start_retries = 3\n"],
            ),
            (
                r#"[{"script": "a.js", "kill_signal": "SIGTERM", "kill_timeout": 3000}]"#,
                &["stop_signal = \"TERM\"\n", "stop_timeout = \"3s\"\n"],
            ),
            (
                r#"[{"script": "a.js", "env": {"NODE_ENV": "production", "PORT": 3000, "DEBUG": false}}]"#,
                &["env = { NODE_ENV = \"production\", PORT = \"3000\", DEBUG = \"false\" }"],
            ),
            (r#"[{"script": "a.js", "max_memory_restart": "1G"}]"#, &["max_memory = \"1GiB\"  # max_memory_restart"]),
            (
                r#"[{"script": "a.js", "max_memory_restart": "300M", "user": "node"}]"#,
                &["max_memory = \"300MiB\"", "user = \"node\""],
            ),
            (
                r#"[{"script": "a.js", "watch": true, "exec_mode": "cluster", "cron_restart": "0 * * * *", "env_production": {}}]"#,
                &[
                    "# \"watch\": true: procctl does not watch files",
                    "# \"exec_mode\": \"cluster\": each instance is a process of its own",
                    "# \"cron_restart\": \"0 * * * *\": run `procctl restart NAME` from cron",
                    "# \"env_production\": an object: another environment",
                ],
            ),
            (r#"{"apps": [], "deploy": {"production": {}}}"#, &["# \"deploy\": not carried over"]),
        ];
        for (text, lines) in cases {
            let toml = import(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            toml.parse::<toml::Table>().unwrap_or_else(|e| panic!("{text}: not TOML: {e}\n{toml}"));
            for line in *lines {
                assert!(toml.contains(&format!("\n{line}")), "{text}: no line `{line}` in\n{toml}");
            }
        }
    }

    #[test]
    fn max_memory_restart_is_max_memory_in_each_of_pm2s_size_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("\"200M\"", Some("max_memory = \"200MiB\"")),
            ("\"1G\"", Some("max_memory = \"1GiB\"")),
            ("\"512K\"", Some("max_memory = \"512KiB\"")),
            ("\"300MB\"", Some("max_memory = \"300MiB\"")),
            ("\"100m\"", Some("max_memory = \"100MiB\"")),
            ("104857600", Some("max_memory = \"100MiB\"")),
            ("\"104857600\"", Some("max_memory = \"100MiB\"")),
            ("1000", Some("max_memory = 1000")),
            ("\"0\"", None),
            ("0", None),
            ("\"1.5G\"", None),
            ("\"-1M\"", None),
            ("\"M\"", None),
            ("true", None),
        ];
        for (value, want) in cases {
            let text = format!(r#"[{{"script": "a.js", "max_memory_restart": {value}}}]"#);
            match (import(&text), want) {
                (Ok(out), Some(want)) => {
                    assert!(out.contains(&format!("{want}  # max_memory_restart")), "{value}: {out}");
                    assert!(!out.contains("memory_max"), "{value}: {out}");
                }
                (Err(error), None) => assert!(error.contains("apps[0].max_memory_restart: expected a size"), "{error}"),
                (got, want) => panic!("{value}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            ("{\"apps\": [\n  {\"name\": \"a\"}\n]}", "ecosystem.json:2: apps[0]: has no `script`"),
            (
                "{\"apps\": [\n  {\"script\": \"a.js\",\n   \"instances\": \"lots\"}]}",
                "ecosystem.json:3: apps[0].instances: expected a number, found the string \"lots\"",
            ),
            (
                "[{\"script\": \"a.js\", \"instances\": 1.5}]",
                "ecosystem.json:1: apps[0].instances: expected a whole number",
            ),
            (
                "[{\"script\": \"a.js\",\n\"autorestart\": \"yes\"}]",
                "ecosystem.json:2: apps[0].autorestart: expected true or false",
            ),
            (
                "[{\"script\": \"a.js\", \"kill_signal\": \"NOPE\"}]",
                "ecosystem.json:1: apps[0].kill_signal: unknown signal",
            ),
            (
                "[{\"script\": \"a.js\", \"max_memory_restart\": \"lots\"}]",
                "ecosystem.json:1: apps[0].max_memory_restart: expected a size",
            ),
            ("[{\"script\": \"a.js\", \"env\": [1]}]", "ecosystem.json:1: apps[0].env: expected an object"),
            ("[{\"script\": 5}]", "ecosystem.json:1: apps[0].script: expected a string"),
            ("[\"a.js\"]", "ecosystem.json:1: apps[0]: expected an object"),
            ("{\"apps\": [\n{\"script\": \"a.js\",}]}", "ecosystem.json:2: invalid JSON: expected a key"),
            ("{\"name\": \"x\"}", "ecosystem.json:1: expected an object with `apps`"),
        ];
        for (text, want) in cases {
            let error = import(text).expect_err(text);
            assert!(error.starts_with(&format!("/srv/app/{want}")), "{text}: {error}");
        }
    }
}
