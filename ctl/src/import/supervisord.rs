//! supervisord's config: `[program:x]` sections (and those of the `[include]` files) as
//! procctl processes, read the way supervisord reads them: `%(name)s` expansions, `numprocs`,
//! `environment` quoting, its defaults where they differ from procctl's.

use std::path::Path;

use procctl_proto::Signal;

use super::expand::{self, Names};
use super::ini::{self, Entry, Ini, Section};
use super::{Context, ImportError, Imported, Program, Setting, Value, shell};

pub fn read(path: &Path, text: &str, context: &Context) -> Result<Imported, ImportError> {
    let mut ini = Ini::default();
    ini.read(path, text)?;
    let mut imported = Imported::default();
    let main_dir = ini::absolute(path).parent().map(Path::to_path_buf).unwrap_or_default();
    let mut names: Names = context.env.iter().map(|(k, v)| (format!("ENV_{k}"), text_value(v))).collect();
    names.insert("here".into(), text_value(&main_dir.display().to_string()));
    names.insert("host_node_name".into(), text_value(&context.host));

    if let Some(include) = ini.section("include").cloned() {
        let entry = include.get("files").ok_or_else(|| {
            ImportError::at(&include.at.file, include.at.line, None, "[include] has no `files` setting".into())
        })?;
        for pattern in expanded(entry, "[include]", &names)?.split_whitespace() {
            let found = ini::glob(&main_dir.join(pattern));
            if found.is_empty() {
                imported.notes.push(format!("[include] files: {pattern} matches no file"));
            }
            for file in found {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    ImportError::at(
                        &entry.at.file,
                        entry.at.line,
                        Some("[include] files".into()),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                ini.read(&file, &text)?;
                imported.included.push(file);
            }
        }
        if ini.section("include").and_then(|s| s.get("files")) != Some(entry) {
            imported
                .notes
                .push("[include] in an included file: not followed (supervisord follows only the main file's)".into());
        }
    }

    let mut global_env = vec![];
    if let Some(supervisord) = ini.section("supervisord") {
        for entry in &supervisord.entries {
            if entry.key == "environment" {
                let (pairs, skipped) = environment(entry, "[supervisord]", &names)?;
                if !skipped.is_empty() {
                    imported.notes.push(skipped_note(&skipped));
                }
                global_env = pairs;
            } else {
                imported.notes.push(format!(
                    "[supervisord] {}: not carried over: {}",
                    shown(entry),
                    daemon_reason(&entry.key)
                ));
            }
        }
        for (k, v) in &global_env {
            names.insert(format!("ENV_{k}"), text_value(v));
        }
    }

    let mut groups: Vec<(String, String)> = vec![];
    for section in ini.sections.iter().filter(|s| s.name.starts_with("group:")) {
        let group = &section.name["group:".len()..];
        let Some(programs) = ini.get(section, "programs") else {
            return Err(ImportError::at(
                &section.at.file,
                section.at.line,
                None,
                format!("[{}] has no `programs` setting", section.name),
            ));
        };
        let list = expanded(programs, &format!("[{}]", section.name), &names)?;
        let members: Vec<&str> = list.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        for member in &members {
            if ini.section(&format!("program:{member}")).is_none() {
                return Err(ImportError::at(
                    &programs.at.file,
                    programs.at.line,
                    Some(format!("[{}] programs", section.name)),
                    format!("names `{member}`, which has no [program:{member}] section"),
                ));
            }
            groups.push((member.to_string(), group.to_string()));
        }
        imported.notes.push(format!(
            "[{}] {}: not carried over: procctl has no groups; name the processes together, as in `procctl restart {}`",
            section.name,
            section.entries.iter().map(shown).collect::<Vec<_>>().join(", "),
            members.join(" ")
        ));
    }

    for section in &ini.sections {
        let name = section.name.as_str();
        if let Some(program) = name.strip_prefix("program:") {
            let group = groups.iter().find(|(p, _)| p == program.trim()).map(|(_, g)| g.as_str());
            imported.programs.extend(self::program(&ini, section, group, &global_env, &names)?);
            continue;
        }
        let (kind, _) = name.split_once(':').unwrap_or((name, ""));
        let reason = match kind {
            "supervisord" | "include" | "group" => continue,
            "eventlistener" => {
                "procctl has no event listener protocol; `procctl events --json` streams lifecycle events"
            }
            "fcgi-program" => "procctl opens no FastCGI socket for a program; run it with a socket of its own",
            "unix_http_server" | "inet_http_server" => {
                "procagent listens on a Unix socket of its own (procagent --socket), served to its user and root only"
            }
            "supervisorctl" => "procctl finds the agent's socket itself (--socket, $PROCCTL_SOCKET)",
            "rpcinterface" | "ctlplugin" => "a supervisord plugin, with no procctl counterpart",
            _ => "not a section supervisord reads",
        };
        let settings: Vec<String> = section.entries.iter().map(shown).collect();
        let settings = if settings.is_empty() { String::new() } else { format!(" {}", settings.join(", ")) };
        imported.notes.push(format!("[{name}]{settings}: not carried over: {reason}"));
    }
    Ok(imported)
}

/// What supervisord's own settings would need from procagent instead.
fn daemon_reason(key: &str) -> &'static str {
    match key {
        "logfile" | "logfile_maxbytes" | "logfile_backups" | "loglevel" | "silent" => "procagent logs to its stderr",
        "pidfile" | "nodaemon" | "identifier" => {
            "procagent runs in the foreground, under systemd or as a container's PID 1"
        }
        "minfds" => "give a process limits = { nofile = N }",
        "minprocs" => "give a process limits = { nproc = N }",
        "childlogdir" | "nocleanup" | "strip_ansi" => "procctl keeps instance logs in its state directory",
        "user" | "umask" | "directory" => {
            "procagent runs as, and where, it is started; give a process user, umask or cwd"
        }
        _ => "no procctl counterpart",
    }
}

/// One `[program:x]`: a process with `numprocs` instances, or one process per instance when
/// what procctl runs differs between them (a `%(process_num)s` in the command).
fn program(
    ini: &Ini,
    section: &Section,
    group: Option<&str>,
    global_env: &[(String, String)],
    base: &Names,
) -> Result<Vec<Program>, ImportError> {
    let program_name = section.name["program:".len()..].trim().to_string();
    let title = format!("[{}]", section.name);
    let error = |entry: &Entry, problem: String| {
        ImportError::at(&entry.at.file, entry.at.line, Some(format!("{title} {}", entry.key)), problem)
    };
    if program_name.is_empty() || program_name.contains([' ', ':', '/']) {
        return Err(ImportError::at(
            &section.at.file,
            section.at.line,
            None,
            format!("{title}: a program name cannot contain a space, : or /"),
        ));
    }
    let mut names = base.clone();
    names.insert("program_name".into(), text_value(&program_name));
    names.insert("group_name".into(), text_value(group.unwrap_or(&program_name)));
    let get = |key: &str| ini.get(section, key);
    let whole = |key: &str, default: i64| -> Result<i64, ImportError> {
        match get(key) {
            None => Ok(default),
            Some(entry) => {
                let text = expanded(entry, &title, &names)?;
                text.trim().parse::<i64>().map_err(|_| error(entry, format!("expected a whole number, found `{text}`")))
            }
        }
    };
    let numprocs = whole("numprocs", 1)?;
    let start = whole("numprocs_start", 0)?;
    if numprocs < 0 || numprocs > i64::from(u32::MAX) {
        return Err(error(
            get("numprocs").expect("not the default"),
            format!("{numprocs} is not a count of processes"),
        ));
    }
    let mut runs = vec![];
    for process_num in start..start + numprocs.max(1) {
        let mut names = names.clone();
        names.insert("process_num".into(), expand::Value::Number(process_num));
        names.insert("numprocs".into(), expand::Value::Number(numprocs));
        let process_name = match get("process_name") {
            Some(entry) => expanded(entry, &title, &names)?,
            None => program_name.clone(),
        };
        let (settings, notes) = settings(ini, section, global_env, names)?;
        runs.push((process_name, settings, notes));
    }
    let origin = match group {
        Some(group) => format!("{title} in [group:{group}], {}:{}", section.at.file.display(), section.at.line),
        None => format!("{title}, {}:{}", section.at.file.display(), section.at.line),
    };
    let split = runs.windows(2).any(|pair| pair[0].1 != pair[1].1);
    if split {
        return Ok(runs
            .into_iter()
            .map(|(process_name, mut settings, mut notes)| {
                settings.insert(1, Setting::new("instances", Value::Number(1)));
                notes.insert(0, format!("one of the numprocs={numprocs} processes of {title}: their command or settings differ by process_num"));
                Program { name: process_name, origin: origin.clone(), settings, notes }
            })
            .collect());
    }
    let (_, mut settings, mut notes) = runs.swap_remove(0);
    if numprocs != 1 || get("numprocs").is_some() {
        settings.insert(1, Setting::noted("instances", Value::Number(numprocs as u64), format!("numprocs={numprocs}")));
    }
    let instances = match numprocs {
        0 => "no instances".to_string(),
        1 => format!("its instance {program_name}:0"),
        n => format!("its instances {program_name}:0 … {program_name}:{}", n - 1),
    };
    for entry in &section.entries {
        match entry.key.as_str() {
            "process_name" => notes.insert(0, format!("{}: procctl names {instances}", shown(entry))),
            "numprocs_start" => {
                notes.push(format!("{}: procctl numbers instances from 0 ($PROCCTL_INSTANCE)", shown(entry)))
            }
            _ => {}
        }
    }
    Ok(vec![Program { name: program_name, origin, settings, notes }])
}

/// The procctl settings of one process_num, and the notes on what is not carried over.
fn settings(
    ini: &Ini,
    section: &Section,
    global_env: &[(String, String)],
    mut names: Names,
) -> Result<(Vec<Setting>, Vec<String>), ImportError> {
    let title = format!("[{}]", section.name);
    let error = |entry: &Entry, problem: String| {
        ImportError::at(&entry.at.file, entry.at.line, Some(format!("{title} {}", entry.key)), problem)
    };
    let get = |key: &str| ini.get(section, key);
    let mut settings = vec![];
    let mut notes = vec![];

    let mut env: Vec<(String, String)> = global_env.to_vec();
    if let Some(entry) = get("environment") {
        let (pairs, skipped) = environment(entry, &title, &names)?;
        if !skipped.is_empty() {
            notes.push(skipped_note(&skipped));
        }
        for (key, value) in pairs {
            names.insert(format!("ENV_{key}"), text_value(&value));
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
    }
    let value = |entry: &Entry| expanded(entry, &title, &names);
    let flag = |entry: &Entry| -> Result<bool, ImportError> {
        let text = value(entry)?;
        match text.to_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(true),
            "no" | "false" | "off" | "0" => Ok(false),
            _ => Err(error(entry, format!("expected true or false (yes/no, on/off, 1/0), found `{text}`"))),
        }
    };
    let seconds = |entry: &Entry| -> Result<u64, ImportError> {
        let text = value(entry)?;
        text.trim()
            .parse::<u64>()
            .map_err(|_| error(entry, format!("expected a whole number of seconds, found `{text}`")))
    };

    let Some(command) = get("command") else {
        return Err(ImportError::at(
            &section.at.file,
            section.at.line,
            None,
            format!("{title} has no `command` setting"),
        ));
    };
    let argv = shell::split(&value(command)?).map_err(|e| error(command, e))?;
    if argv.is_empty() {
        return Err(error(command, "the command is empty".into()));
    }
    if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
        notes.push(format!(
            "command: {} is a relative path: procctl finds it from this file's directory, supervisord from the one it was started in",
            argv[0]
        ));
    }
    settings.push(Setting::new("command", Value::Words(argv)));

    let autorestart = match get("autorestart") {
        None => "unexpected".to_string(),
        Some(entry) => match value(entry)?.to_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => "true".into(),
            "no" | "false" | "off" | "0" => "false".into(),
            "unexpected" => "unexpected".into(),
            other => return Err(error(entry, format!("expected true, false or unexpected, found `{other}`"))),
        },
    };
    let exitcodes = match get("exitcodes") {
        None => vec![0],
        Some(entry) => {
            let text = value(entry)?;
            text.split(',').map(|code| code.trim().parse::<u8>()).collect::<Result<Vec<u8>, _>>().map_err(|_| {
                error(entry, format!("expected exit codes from 0 to 255 separated by commas, found `{text}`"))
            })?
        }
    };
    let said = |key: &str, default: &str| get(key).map_or(format!("supervisord's default {key}={default}"), shown);
    let codes = exitcodes.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
    let restart = match autorestart.as_str() {
        "true" => Setting::noted("restart", text("always"), said("autorestart", "")),
        "false" => Setting::noted("restart", text("never"), said("autorestart", "")),
        _ if exitcodes == [0] => Setting::noted("restart", text("on-failure"), said("autorestart", "unexpected")),
        _ if exitcodes.contains(&0) => Setting::noted(
            "restart",
            text("on-failure"),
            format!("autorestart=unexpected, exitcodes={codes}: procctl restarts after any code but 0"),
        ),
        _ => Setting::noted(
            "restart",
            text("always"),
            format!("autorestart=unexpected, exitcodes={codes}: procctl restarts after these codes too"),
        ),
    };
    settings.push(restart);
    if autorestart != "unexpected" && get("exitcodes").is_some() {
        notes.push(format!("exitcodes={codes}: with autorestart={autorestart} it decides nothing"));
    }
    if let Some(entry) = get("autostart") {
        settings.push(Setting::new("autostart", Value::Flag(flag(entry)?)));
    }
    if let Some(entry) = get("startsecs") {
        settings.push(Setting::new("start_secs", text(&format!("{}s", seconds(entry)?))));
    }
    let retries = match get("startretries") {
        Some(entry) => {
            seconds(entry).map_err(|_| error(entry, format!("expected a whole number, found `{}`", entry.value)))?
        }
        None => 3,
    };
    let retries = u32::try_from(retries + 1).unwrap_or(u32::MAX);
    settings.push(Setting::noted(
        "start_retries",
        Value::Number(retries.into()),
        format!("{}: 1 + {} tries", said("startretries", "3"), retries - 1),
    ));
    if let Some(entry) = get("stopsignal") {
        let signal: Signal = value(entry)?.trim().parse().map_err(|e| error(entry, e))?;
        settings.push(Setting::new("stop_signal", text(&signal.name())));
    }
    if let Some(entry) = get("stopwaitsecs") {
        settings.push(Setting::new("stop_timeout", text(&format!("{}s", seconds(entry)?))));
    }
    if let Some(entry) = get("directory") {
        settings.push(Setting::new("cwd", text(&value(entry)?)));
    }
    if !env.is_empty() {
        settings.push(Setting::new("env", Value::Table(env)));
    }
    if let Some(entry) = get("user") {
        settings.push(Setting::new("user", text(value(entry)?.trim())));
    }
    if let Some(entry) = get("umask") {
        let text_ = value(entry)?;
        let mask = u32::from_str_radix(text_.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| error(entry, format!("expected an octal mask like 022, found `{text_}`")))?;
        settings.push(Setting::new("umask", text(&format!("{mask:03o}"))));
    }
    settings.push(Setting::noted(
        "pipe",
        text("stdin"),
        "stdin is a pipe from the agent, as under supervisord (`procctl send` writes to it)",
    ));
    if let Some(entry) = get("stdout_logfile_maxbytes") {
        match byte_size(&value(entry)?) {
            Some(0) => notes.push(format!("{}: procctl always rotates, at log_max_size (default 10MiB)", shown(entry))),
            Some(bytes) => settings.push(Setting::noted("log_max_size", size(bytes), shown(entry))),
            None => return Err(error(entry, format!("expected a size like 50MB, found `{}`", entry.value))),
        }
    }
    if let Some(entry) = get("stdout_logfile_backups") {
        let n =
            seconds(entry).map_err(|_| error(entry, format!("expected a whole number, found `{}`", entry.value)))?;
        settings.push(Setting::noted("log_files", Value::Number(n), shown(entry)));
    }

    for entry in &section.entries {
        let reason = match entry.key.as_str() {
            "command"
            | "numprocs"
            | "autorestart"
            | "autostart"
            | "startsecs"
            | "startretries"
            | "stopsignal"
            | "stopwaitsecs"
            | "directory"
            | "environment"
            | "user"
            | "umask"
            | "stdout_logfile_maxbytes"
            | "stdout_logfile_backups"
            | "exitcodes"
            | "process_name"
            | "numprocs_start" => continue,
            "priority" => "procctl starts processes in no set order; depends_on makes one wait for another",
            "stopasgroup" | "killasgroup" if flag(entry)? => {
                "procctl always signals the whole process group (or cgroup)"
            }
            "stopasgroup" | "killasgroup" => {
                "procctl signals the whole process group (or cgroup), not the main process alone"
            }
            "redirect_stderr" if flag(entry)? => "procctl always captures stdout and stderr together, in one log",
            "redirect_stderr" => "procctl captures stderr with stdout, in one log",
            "stdout_logfile" | "stderr_logfile" => {
                "procctl keeps each instance's output in its state directory, logs/NAME.INDEX.log (`procctl logs NAME`)"
            }
            "stderr_logfile_maxbytes" | "stderr_logfile_backups" => {
                "procctl keeps one log per instance, rotated by the stdout_logfile_* settings"
            }
            "stdout_capture_maxbytes"
            | "stderr_capture_maxbytes"
            | "stdout_events_enabled"
            | "stderr_events_enabled" => {
                "supervisord's event protocol has no procctl counterpart (`procctl events` streams lifecycle events)"
            }
            "stdout_syslog" | "stderr_syslog" => "procctl does not write to syslog (`procctl logs -f NAME`)",
            "serverurl" => "for supervisor's childutils: a program reaches procagent through $PROCCTL_SOCKET",
            _ => "not a supervisord setting",
        };
        notes.push(format!("{}: {reason}", shown(entry)));
    }
    Ok((settings, notes))
}

fn environment(entry: &Entry, title: &str, names: &Names) -> Result<(shell::Pairs, Vec<String>), ImportError> {
    let text = expanded(entry, title, names)?;
    shell::pairs(&text)
        .map_err(|e| ImportError::at(&entry.at.file, entry.at.line, Some(format!("{title} environment")), e))
}

fn skipped_note(skipped: &[String]) -> String {
    format!(
        "environment: {} left out, as supervisord leaves it out (quote a value with spaces or other characters)",
        skipped.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
    )
}

fn expanded(entry: &Entry, title: &str, names: &Names) -> Result<String, ImportError> {
    expand::expand(&entry.value, names)
        .map_err(|e| ImportError::at(&entry.at.file, entry.at.line, Some(format!("{title} {}", entry.key)), e))
}

/// A setting as the file wrote it, for a note.
fn shown(entry: &Entry) -> String {
    format!("{}={}", entry.key, entry.value)
}

fn text(text: &str) -> Value {
    Value::Text(text.to_string())
}

fn text_value(text: &str) -> expand::Value {
    expand::Value::Text(text.to_string())
}

/// supervisord's `byte_size`: a number with KB, MB or GB (powers of 1024), any case.
fn byte_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_lowercase();
    let (number, scale) = [("kb", 1u64 << 10), ("mb", 1 << 20), ("gb", 1 << 30)]
        .iter()
        .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.trim().to_string(), *scale)))
        .unwrap_or((lower.clone(), 1));
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// Bytes in the largest unit that divides them.
pub fn size(bytes: u64) -> Value {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes.is_multiple_of(1 << shift) {
            return Value::Text(format!("{}{unit}", bytes >> shift));
        }
    }
    Value::Number(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::write;
    use super::*;
    use std::path::PathBuf;

    fn context() -> Context {
        Context {
            env: [("HOME".to_string(), "/home/forge".to_string())].into_iter().collect(),
            host: "web1".into(),
            cpus: 4,
        }
    }

    /// The procctl.toml for a config written at /etc/supervisor/x.conf.
    fn import(text: &str) -> Result<String, String> {
        let path = PathBuf::from("/etc/supervisor/x.conf");
        let imported = read(&path, text, &context()).map_err(|e| e.to_string())?;
        Ok(write::document(&[(path, super::super::Format::Supervisord, imported)]))
    }

    #[test]
    fn settings_map_to_procctl_keys() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[program:w]\ncommand=php artisan queue:work --queue=\"high,low\"\n",
                &[
                    "[process.w]",
                    "command = [\"php\", \"artisan\", \"queue:work\", \"--queue=high,low\"]",
                    "restart = \"on-failure\"  # supervisord's default autorestart=unexpected",
                    "start_retries = 4  # supervisord's default startretries=3: 1 + 3 tries",
                    "pipe = \"stdin\"",
                ],
            ),
            ("[program:w]\ncommand=x\nautorestart=false\n", &["restart = \"never\"  # autorestart=false"]),
            (
                "[program:w]\ncommand=x\nautorestart=unexpected\nexitcodes=0,2\n",
                &[
                    "restart = \"on-failure\"  # autorestart=unexpected, exitcodes=0,2: procctl restarts after any code but 0",
                ],
            ),
            (
                "[program:w]\ncommand=x\nexitcodes=3\n",
                &[
                    "restart = \"always\"  # autorestart=unexpected, exitcodes=3: procctl restarts after these codes too",
                ],
            ),
            (
                "[program:w]\ncommand=x\nautorestart=true\nexitcodes=3\n",
                &["# exitcodes=3: with autorestart=true it decides nothing"],
            ),
            (
                "[program:w]\ncommand=x\nstartsecs=0\nstartretries=0\n",
                &["start_secs = \"0s\"", "start_retries = 1  # startretries=0: 1 + 0 tries"],
            ),
            (
                "[program:w]\ncommand=x\nstopsignal=SIGQUIT\nstopwaitsecs=60\n",
                &["stop_signal = \"QUIT\"", "stop_timeout = \"60s\""],
            ),
            ("[program:w]\ncommand=x\nstopsignal=1\n", &["stop_signal = \"HUP\""]),
            (
                "[program:w]\ncommand=x\nautostart=no\nuser=www-data\numask=2\n",
                &["autostart = false", "user = \"www-data\"", "umask = \"002\""],
            ),
            ("[program:w]\ncommand=x\ndirectory=%(here)s/../app\n", &["cwd = \"/etc/supervisor/../app\""]),
            ("[program:w]\ncommand=x\ndirectory=%(ENV_HOME)s/app\n", &["cwd = \"/home/forge/app\""]),
            (
                "[program:w]\ncommand=x\nenvironment=A=\"x, y\",B='2',PATH=\"/usr/bin:%(ENV_HOME)s/bin\"\n",
                &["env = { A = \"x, y\", B = \"2\", PATH = \"/usr/bin:/home/forge/bin\" }"],
            ),
            (
                "[supervisord]\nenvironment=A=\"global\",C=3\n[program:w]\ncommand=x\nenvironment=A=\"mine\"\n",
                &["env = { C = \"3\", A = \"mine\" }"],
            ),
            (
                "[program:w]\ncommand=x\nstdout_logfile_maxbytes=50MB\nstdout_logfile_backups=0\n",
                &["log_max_size = \"50MiB\"", "log_files = 0"],
            ),
            (
                "[program:w]\ncommand=x\nstdout_logfile_maxbytes=0\n",
                &["# stdout_logfile_maxbytes=0: procctl always rotates"],
            ),
            (
                "[program:w]\ncommand=echo %(program_name)s on %(host_node_name)s\n",
                &["command = [\"echo\", \"w\", \"on\", \"web1\"]"],
            ),
            (
                "[program:w]\ncommand=x\npriority=5\nbogus=1\n",
                &["# priority=5: procctl starts", "# bogus=1: not a supervisord setting"],
            ),
            ("[program:w]\ncommand=x\nnumprocs=0\n", &["instances = 0  # numprocs=0"]),
            ("[program:my.app]\ncommand=x\n", &["# named my-app: ", "[process.my-app]"]),
            (
                "[program:a]\ncommand=x\n[group:g]\nprograms=a\n",
                &[
                    "# [group:g] programs=a: not carried over: procctl has no groups; name the processes together, as in `procctl restart a`",
                    "# [program:a] in [group:g], /etc/supervisor/x.conf:1",
                ],
            ),
            (
                "[eventlistener:mem]\ncommand=memmon\nevents=TICK_60\n",
                &[
                    "# [eventlistener:mem] command=memmon, events=TICK_60: not carried over: procctl has no event listener protocol",
                ],
            ),
            (
                "[inet_http_server]\nport=127.0.0.1:9001\n",
                &["# [inet_http_server] port=127.0.0.1:9001: not carried over"],
            ),
        ];
        for (text, lines) in cases {
            let toml = import(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            toml.parse::<toml::Table>().unwrap_or_else(|e| panic!("{text}: not TOML: {e}\n{toml}"));
            for line in *lines {
                assert!(toml.lines().any(|l| l.starts_with(line)), "{text}: no line `{line}` in\n{toml}");
            }
        }
    }

    #[test]
    fn numprocs_is_instances_unless_the_command_differs_by_process_num() {
        let same = import(
            "[program:w]\nprocess_name=%(program_name)s_%(process_num)02d\ncommand=php worker.php\nnumprocs=3\n",
        )
        .unwrap();
        assert_eq!(same.matches("[process.").count(), 1, "{same}");
        assert!(same.contains("instances = 3  # numprocs=3\n"), "{same}");
        assert!(same.contains("procctl names its instances w:0 … w:2"), "{same}");

        let split = import(
            "[program:w]\nprocess_name=%(program_name)s_%(process_num)02d\ncommand=php worker.php --slot=%(process_num)d\n\
             numprocs=2\nnumprocs_start=1\n",
        )
        .unwrap();
        let tables: Vec<&str> = split.lines().filter(|l| l.starts_with("[process.")).collect();
        assert_eq!(tables, ["[process.w_01]", "[process.w_02]"], "{split}");
        assert!(split.contains("command = [\"php\", \"worker.php\", \"--slot=2\"]\ninstances = 1\n"), "{split}");
    }

    #[test]
    fn include_files_are_found_from_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/b.conf"), "[program:b]\ncommand=%(here)s/b\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf"), "[program:a]\ncommand=a\n").unwrap();
        std::fs::write(dir.path().join("conf.d/skip.ini"), "[program:c]\ncommand=c\n").unwrap();
        let main = dir.path().join("supervisord.conf");
        let text = "[supervisord]\n[include]\nfiles = conf.d/*.conf missing/*.conf\n";
        let imported = read(&main, text, &context()).unwrap();
        let names: Vec<&str> = imported.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(imported.included, [dir.path().join("conf.d/a.conf"), dir.path().join("conf.d/b.conf")]);
        let b = &imported.programs[1].settings[0].value;
        assert_eq!(*b, Value::Words(vec![dir.path().join("conf.d").join("b").display().to_string()]));
        assert!(
            imported.notes.iter().any(|n| n == "[include] files: missing/*.conf matches no file"),
            "{:?}",
            imported.notes
        );
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            ("[program:w]\nnumprocs=2\n", "x.conf:1: [program:w] has no `command` setting"),
            (
                "[program:w]\ncommand=x\nnumprocs=many\n",
                "x.conf:3: [program:w] numprocs: expected a whole number, found `many`",
            ),
            ("[program:w]\ncommand=x\nautostart=maybe\n", "x.conf:3: [program:w] autostart: expected true or false"),
            (
                "[program:w]\ncommand=x\nautorestart=sometimes\n",
                "x.conf:3: [program:w] autorestart: expected true, false or unexpected",
            ),
            ("[program:w]\ncommand=x\nstopsignal=NOPE\n", "x.conf:3: [program:w] stopsignal: unknown signal `NOPE`"),
            ("[program:w]\ncommand=x\nexitcodes=0,300\n", "x.conf:3: [program:w] exitcodes: expected exit codes"),
            ("[program:w]\ncommand=x\numask=999\n", "x.conf:3: [program:w] umask: expected an octal mask"),
            ("[program:w]\ncommand=php 'open\n", "x.conf:2: [program:w] command: a ' quote is not closed"),
            ("[program:w]\ncommand=date +%s\n", "x.conf:2: [program:w] command: a `%` that is not `%(NAME)s`"),
            (
                "[program:w]\ncommand=%(nope)s\n",
                "x.conf:2: [program:w] command: `%(nope)s` names nothing supervisord knows",
            ),
            ("[program:w]\ncommand=x\nenvironment=A\n", "x.conf:3: [program:w] environment: expected KEY=VALUE pairs"),
            (
                "[program:w]\ncommand=x\nstartsecs=-1\n",
                "x.conf:3: [program:w] startsecs: expected a whole number of seconds",
            ),
            ("[program:a b]\ncommand=x\n", "x.conf:1: [program:a b]: a program name cannot contain"),
            (
                "[group:g]\nprograms=a,b\n[program:a]\ncommand=x\n",
                "x.conf:2: [group:g] programs: names `b`, which has no [program:b] section",
            ),
            ("[include]\n", "x.conf:1: [include] has no `files` setting"),
        ];
        for (text, want) in cases {
            let error = import(text).expect_err(text);
            assert!(error.starts_with(&format!("/etc/supervisor/{want}")), "{text}: {error}");
        }
    }
}
