//! `procctl import`: the programs of a supervisord config, a Procfile or a pm2 ecosystem
//! file as a procctl.toml. Each reader (`supervisord`, `procfile`, `pm2`) turns a file into
//! `Program`s: the settings procctl has, and a note for each one it cannot carry over;
//! `write` makes the names valid and unique and prints the TOML.

mod expand;
mod ini;
mod json;
mod pm2;
mod procfile;
mod shell;
mod supervisord;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What a FILE is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// supervisord's INI (`[program:x]`, `[include]` followed)
    Supervisord,
    /// `name: command` lines
    Procfile,
    /// pm2's ecosystem file in JSON (`apps`)
    Pm2,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Supervisord => "supervisord",
            Format::Procfile => "Procfile",
            Format::Pm2 => "pm2",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub struct ImportError {
    pub path: PathBuf,
    /// 1-based; `None` when the problem is the whole file.
    pub line: Option<usize>,
    /// The setting the problem is about (`[program:x] numprocs`, `apps[0].instances`).
    pub key: Option<String>,
    pub problem: String,
}

impl ImportError {
    pub fn at(path: &Path, line: usize, key: Option<String>, problem: String) -> ImportError {
        ImportError { path: path.to_path_buf(), line: Some(line), key, problem }
    }

    fn file(path: &Path, problem: String) -> ImportError {
        ImportError { path: path.to_path_buf(), line: None, key: None, problem }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        procctl_proto::located::write(f, &self.path, self.line, self.key.as_deref(), &self.problem)
    }
}

/// A value of a procctl.toml key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Number(u64),
    Flag(bool),
    Words(Vec<String>),
    Table(Vec<(String, String)>),
}

/// One key of a `[process.NAME]` table, with a note on how it was carried over when that is
/// worth saying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub value: Value,
    pub note: Option<String>,
}

impl Setting {
    pub fn new(key: &'static str, value: Value) -> Setting {
        Setting { key, value, note: None }
    }

    pub fn noted(key: &'static str, value: Value, note: impl Into<String>) -> Setting {
        Setting { key, value, note: Some(note.into()) }
    }
}

/// One `[process.NAME]` to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The name it had; `write` makes it a valid and unique procctl name.
    pub name: String,
    /// Where it came from, for the comment above it.
    pub origin: String,
    pub settings: Vec<Setting>,
    /// Comment lines: each setting that was not carried over, and why.
    pub notes: Vec<String>,
}

/// What one FILE gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Files read besides the one named (supervisord's `[include]`).
    pub included: Vec<PathBuf>,
    /// Comment lines about the file as a whole (sections that are not programs).
    pub notes: Vec<String>,
    pub programs: Vec<Program>,
}

/// What readers may look at besides the file: the environment (supervisord's `%(ENV_X)s`),
/// the host name (`%(host_node_name)s`) and the CPU count (pm2's `instances: "max"`).
#[derive(Debug, Clone)]
pub struct Context {
    pub env: BTreeMap<String, String>,
    pub host: String,
    pub cpus: u32,
}

impl Context {
    pub fn of_this_process() -> Context {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Context { env: std::env::vars().collect(), host, cpus }
    }
}

/// The procctl.toml for `files`, each read as `from` or as its content says.
pub fn import(files: &[PathBuf], from: Option<Format>, context: &Context) -> Result<String, ImportError> {
    let mut sources = vec![];
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| ImportError::file(path, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
            ImportError::at(path, line, None, "not UTF-8 text".into())
        })?;
        let format = match from {
            Some(format) => format,
            None => detect(path, &text)?,
        };
        let imported = match format {
            Format::Supervisord => supervisord::read(path, &text, context)?,
            Format::Procfile => procfile::read(path, &text)?,
            Format::Pm2 => pm2::read(path, &text, context)?,
        };
        sources.push((path.clone(), format, imported));
    }
    Ok(write::document(&sources))
}

/// The format a file's content shows: JSON is pm2's, a `[section]` header supervisord's,
/// `name: command` a Procfile.
fn detect(path: &Path, text: &str) -> Result<Format, ImportError> {
    let first = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .find(|(_, line)| !line.is_empty() && !line.starts_with(['#', ';']));
    let javascript = path.extension().is_some_and(|e| e == "js" || e == "cjs" || e == "mjs");
    if javascript || text.contains("module.exports") {
        return Err(ImportError::file(
            path,
            "a JavaScript ecosystem file cannot be read without running it: write it out as JSON with \
             `node -e 'console.log(JSON.stringify(require(\"./ecosystem.config.js\"), null, 2))' > ecosystem.json` \
             and import that"
                .into(),
        ));
    }
    match first {
        None => Err(ImportError::file(path, "nothing to import: the file has no programs".into())),
        Some((_, line)) if line.starts_with(['{', '[']) && !is_section(line) => Ok(Format::Pm2),
        Some(_) if text.lines().any(|line| is_section(line.trim())) => Ok(Format::Supervisord),
        Some((_, line)) if procfile::entry(line).is_some() => Ok(Format::Procfile),
        Some((line, _)) => Err(ImportError::at(
            path,
            line,
            None,
            "cannot tell the format: not a supervisord config, a Procfile or a pm2 ecosystem file \
             (say which with --from supervisord|procfile|pm2)"
                .into(),
        )),
    }
}

fn is_section(line: &str) -> bool {
    line.starts_with('[')
        && line.len() > 2
        && line[1..].contains(']')
        && !line.starts_with("[{")
        && !line.starts_with("[\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_told_by_the_content() {
        let cases: &[(&str, &str, Result<Format, &str>)] = &[
            ("supervisord.conf", "; comment\n[supervisord]\n[program:a]\ncommand=x\n", Ok(Format::Supervisord)),
            ("worker.conf", "[program:a]\ncommand=x\n", Ok(Format::Supervisord)),
            (
                "Procfile",
                "# web server\nweb: php -S 0.0.0.0:$PORT\nworker: php artisan queue:work\n",
                Ok(Format::Procfile),
            ),
            ("ecosystem.json", "{\n  \"apps\": []\n}\n", Ok(Format::Pm2)),
            ("apps.json", "[{\"script\": \"app.js\"}]", Ok(Format::Pm2)),
            ("ecosystem.config.js", "module.exports = { apps: [] }", Err("JavaScript ecosystem file")),
            ("notes.txt", "hello there\n", Err("notes.txt:1: cannot tell the format")),
            ("empty", "\n# nothing\n", Err("empty: nothing to import")),
        ];
        for (name, text, want) in cases {
            let got = detect(Path::new(name), text);
            match want {
                Ok(format) => assert_eq!(got.as_ref().ok(), Some(format), "{name}: {got:?}"),
                Err(message) => {
                    let error = got.expect_err(name).to_string();
                    assert!(error.contains(message), "{name}: {error}");
                }
            }
        }
    }
}
