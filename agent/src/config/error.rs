//! `ConfigError` (file, line, key path, problem) and the lookups that find a problem's line.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; `None` when the problem is not on one line (the file cannot be read).
    pub line: Option<usize>,
    /// The key path the problem is about (`process.worker.instances`), when there is one.
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        procctl_proto::located::write(f, &self.path, self.line, self.key.as_deref(), &self.problem)
    }
}

impl ConfigError {
    pub(super) fn new(path: &Path, line: Option<usize>, key: Option<String>, problem: String) -> ConfigError {
        ConfigError { path: path.to_path_buf(), line, key, problem }
    }

    /// The text is not TOML.
    pub(super) fn syntax(path: &Path, text: &str, e: toml::de::Error) -> ConfigError {
        let line = e.span().map(|span| line_of(text, span.start));
        let mut problem = e.message().trim().to_string();
        // toml names no key in this one (and gives no error kind to tell it by).
        if let (true, Some(key)) = (problem == "duplicate key", e.span().and_then(|span| text.get(span))) {
            problem = format!("duplicate key `{}`", key.trim());
        }
        ConfigError::new(path, line, None, problem)
    }
}

/// The 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The parsed document, for the line of a key found wrong after reading (a name, a limit).
pub(super) struct Keys<'a> {
    pub text: &'a str,
    pub root: &'a DeTable<'a>,
}

impl Keys<'_> {
    /// The line of the last key of `path` (`["process", "web", "instances"]`).
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let (last, parents) = path.split_last()?;
        let mut table = self.root;
        for key in parents {
            table = table.get(*key)?.get_ref().as_table()?;
        }
        let (key, _) = table.get_key_value(*last)?;
        Some(line_of(self.text, key.span().start))
    }

    /// The line and key path of `key` in `[process.NAME]` (the table itself for ""), falling
    /// back to the table's line when the key is not written (a default found wrong).
    pub fn of_process(&self, name: &str, key: &str) -> (Option<usize>, String) {
        let line = self.line(&["process", name, key]).or_else(|| self.line(&["process", name]));
        let key = if key.is_empty() { format!("process.{name}") } else { format!("process.{name}.{key}") };
        (line, key)
    }
}
