//! supervisord's INI files as Python's RawConfigParser reads them for supervisord: `;` and `#`
//! comments (inline ones after whitespace), `=` or `:`, indented continuation lines, keys in
//! lower case, a section seen again gaining keys, `[DEFAULT]`; and `%(here)s` as each file's
//! own directory. Every value remembers its file and line.

use std::path::{Path, PathBuf};

use super::ImportError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub at: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub at: Origin,
    pub entries: Vec<Entry>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

#[derive(Debug, Default)]
pub struct Ini {
    pub sections: Vec<Section>,
    /// `[DEFAULT]`: every section's fallback.
    pub defaults: Vec<Entry>,
}

impl Ini {
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A key of `section`, else of `[DEFAULT]`.
    pub fn get<'a>(&'a self, section: &'a Section, key: &str) -> Option<&'a Entry> {
        section.get(key).or_else(|| self.defaults.iter().find(|e| e.key == key))
    }

    /// Adds one file's sections and keys.
    pub fn read(&mut self, path: &Path, text: &str) -> Result<(), ImportError> {
        let here = absolute(path).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let here = here.display().to_string();
        // Where keys go: None before the first header, Some(None) for [DEFAULT].
        let mut current: Option<Option<usize>> = None;
        // The key being read, its lines, and the indent of its first line.
        let mut open: Option<(Entry, Vec<String>)> = None;
        let mut indent_level = 0;
        let mut finished: Vec<(Option<usize>, Entry, Vec<String>)> = vec![];
        let mut close = |open: &mut Option<(Entry, Vec<String>)>, current: Option<Option<usize>>| {
            if let (Some((entry, lines)), Some(section)) = (open.take(), current) {
                finished.push((section, entry, lines));
            }
        };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let comment = comment_start(raw);
            let value = raw[..comment.unwrap_or(raw.len())].trim();
            if value.is_empty() {
                // A blank line inside a value is kept (and trailing ones dropped at the end).
                if comment.is_none() {
                    if let Some((_, lines)) = &mut open {
                        lines.push(String::new());
                    }
                }
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            if let Some((_, lines)) = open.as_mut().filter(|_| indent > indent_level) {
                lines.push(value.to_string());
                continue;
            }
            close(&mut open, current);
            indent_level = indent;
            if let Some(header) = header(value) {
                let at = Origin { file: path.to_path_buf(), line };
                current = Some(if header == "DEFAULT" {
                    None
                } else if let Some(i) = self.sections.iter().position(|s| s.name == header) {
                    Some(i)
                } else {
                    self.sections.push(Section { name: header.to_string(), at, entries: vec![] });
                    Some(self.sections.len() - 1)
                });
                continue;
            }
            let error = |problem: String| ImportError::at(path, line, None, problem);
            if current.is_none() {
                return Err(error(format!("`{value}` comes before any [section] header")));
            }
            let Some(split) = value.find(['=', ':']) else {
                return Err(error(format!("expected KEY=VALUE or a [section] header, found `{value}`")));
            };
            let key = value[..split].trim_end().to_lowercase();
            if key.is_empty() {
                return Err(error(format!("a value without a key: `{value}`")));
            }
            let first = value[split + 1..].trim().to_string();
            let entry = Entry { key, value: String::new(), at: Origin { file: path.to_path_buf(), line } };
            open = Some((entry, vec![first]));
        }
        close(&mut open, current);
        for (section, mut entry, lines) in finished {
            entry.value = lines.join("\n").trim_end().replace("%(here)s", &here);
            let entries = match section {
                Some(i) => &mut self.sections[i].entries,
                None => &mut self.defaults,
            };
            match entries.iter_mut().find(|e| e.key == entry.key) {
                Some(old) => *old = entry,
                None => entries.push(entry),
            }
        }
        Ok(())
    }
}

/// Where a comment begins: a line whose first non-blank is `;` or `#`, or either after whitespace.
fn comment_start(line: &str) -> Option<usize> {
    let trimmed = line.trim_start();
    if trimmed.starts_with([';', '#']) {
        return Some(0);
    }
    let mut previous_blank = true;
    for (i, c) in line.char_indices() {
        if (c == ';' || c == '#') && previous_blank {
            return Some(i);
        }
        previous_blank = c.is_whitespace();
    }
    None
}

/// `[name]`: the text up to the last `]`, as RawConfigParser's greedy pattern takes it.
fn header(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Python's `glob.glob` for `[include] files`: `*`, `?` and `[...]` within one path
/// component, names that begin with a dot only for a pattern that does; sorted.
pub fn glob(pattern: &Path) -> Vec<PathBuf> {
    use std::path::Component;
    let mut paths = vec![PathBuf::new()];
    for component in pattern.components() {
        match component {
            Component::Normal(part) if part.to_str().is_some_and(|p| p.contains(['*', '?', '['])) => {
                let part = part.to_str().expect("checked");
                let mut next = vec![];
                for dir in &paths {
                    let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
                    let Ok(entries) = std::fs::read_dir(listing) else { continue };
                    for entry in entries.flatten() {
                        let name = entry.file_name();
                        let Some(name) = name.to_str() else { continue };
                        if name.starts_with('.') && !part.starts_with('.') {
                            continue;
                        }
                        if fnmatch(part, name) {
                            next.push(dir.join(name));
                        }
                    }
                }
                paths = next;
            }
            other => paths.iter_mut().for_each(|p| p.push(other.as_os_str())),
        }
    }
    paths.retain(|p| std::fs::symlink_metadata(p).is_ok());
    paths.sort();
    paths
}

/// Shell-style matching of one name: `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    fn at(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|skip| at(&p[1..], &n[skip..])),
            Some('?') => !n.is_empty() && at(&p[1..], &n[1..]),
            Some('[') => {
                let Some(close) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                    return n.first() == Some(&'[') && at(&p[1..], &n[1..]);
                };
                let Some(c) = n.first() else { return false };
                let (negated, set) = match p[1] {
                    '!' => (true, &p[2..close]),
                    _ => (false, &p[1..close]),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= (set[i]..=set[i + 2]).contains(c);
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != negated && at(&p[close + 1..], &n[1..])
            }
            Some(c) => n.first() == Some(c) && at(&p[1..], &n[1..]),
        }
    }
    at(&pattern, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Ini, ImportError> {
        let mut ini = Ini::default();
        ini.read(Path::new("/etc/supervisor/supervisord.conf"), text)?;
        Ok(ini)
    }

    fn value(ini: &Ini, section: &str, key: &str) -> Option<(String, usize)> {
        let section = ini.section(section)?;
        ini.get(section, key).map(|e| (e.value.clone(), e.at.line))
    }

    #[test]
    fn reads_values_as_supervisord_does() {
        let ini = read(
            "; a comment\n\
             [program:a]\n\
             command = php worker.php ; inline comment\n\
             Environment=A=\"x;y\",B=2   # another\n\
             url=http://example.com/#frag\n\
             \x20   # an indented comment\n\
             directory : %(here)s/app\n\
             multi=first\n\
             \x20 second\n\
             \n\
             \x20 third\n\
             \n\
             empty=\n\
             [DEFAULT]\n\
             startsecs=5\n",
        )
        .unwrap();
        let cases: &[(&str, Option<(&str, usize)>)] = &[
            ("command", Some(("php worker.php", 3))),
            ("environment", Some(("A=\"x;y\",B=2", 4))),
            ("url", Some(("http://example.com/#frag", 5))),
            ("directory", Some(("/etc/supervisor/app", 7))),
            ("multi", Some(("first\nsecond\n\nthird", 8))),
            ("empty", Some(("", 13))),
            ("startsecs", Some(("5", 15))),
            ("nothing", None),
        ];
        for (key, want) in cases {
            let got = value(&ini, "program:a", key);
            assert_eq!(got.as_ref().map(|(v, l)| (v.as_str(), *l)), *want, "{key}");
        }
    }

    #[test]
    fn a_section_seen_again_gains_and_replaces_keys() {
        let ini =
            read("[program:a]\ncommand=one\nnumprocs=2\n[program:b]\ncommand=b\n[program:a]\ncommand=two\n").unwrap();
        assert_eq!(ini.sections.len(), 2);
        assert_eq!(value(&ini, "program:a", "command"), Some(("two".into(), 7)));
        assert_eq!(value(&ini, "program:a", "numprocs"), Some(("2".into(), 3)));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("command=x\n", "supervisord.conf:1: `command=x` comes before any [section] header"),
            (
                "[program:a]\n\njust words\n",
                "supervisord.conf:3: expected KEY=VALUE or a [section] header, found `just words`",
            ),
            ("[program:a]\n= value\n", "supervisord.conf:2: a value without a key"),
        ];
        for (text, want) in cases {
            let error = read(text).expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn fnmatch_matches_like_the_shell() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.conf", "worker.conf", true),
            ("*.conf", "worker.ini", false),
            ("w?rker.conf", "worker.conf", true),
            ("[a-c]*.conf", "b.conf", true),
            ("[!a-c]*.conf", "b.conf", false),
            ("[!a-c]*.conf", "d.conf", true),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(fnmatch(pattern, name), *want, "{pattern} {name}");
        }
    }

    #[test]
    fn glob_finds_sorted_files_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.conf", "a.conf", ".hidden.conf", "c.ini"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/d.conf"), "").unwrap();
        let names = |pattern: &str| -> Vec<String> {
            glob(&dir.path().join(pattern))
                .iter()
                .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("*.conf"), ["a.conf", "b.conf"]);
        assert_eq!(names(".*.conf"), [".hidden.conf"]);
        assert_eq!(names("*/*.conf"), ["sub/d.conf"]);
        assert_eq!(names("c.ini"), ["c.ini"]);
        assert!(names("missing.ini").is_empty());
    }
}
