//! The man pages in `man/`. The generated ones must match what the binaries print from their
//! clap definitions (`procctl manpages DIR`, `procagent --manpage`); to regenerate them:
//! `PROCCTL_BLESS=1 cargo test -p procctl-tests --test blackbox manuals`. The hand-written
//! `procctl.toml.5` must document every key the agent accepts, and every page must render.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{WAIT, bin, run};

/// The pages the binaries must generate, at least: one per subcommand of procctl.
const GENERATED: [&str; 17] = [
    "procctl.1",
    "procctl-list.1",
    "procctl-pid.1",
    "procctl-start.1",
    "procctl-stop.1",
    "procctl-restart.1",
    "procctl-signal.1",
    "procctl-send.1",
    "procctl-scale.1",
    "procctl-logs.1",
    "procctl-events.1",
    "procctl-reload.1",
    "procctl-wait.1",
    "procctl-shutdown.1",
    "procctl-completions.1",
    "procctl-import.1",
    "procagent.8",
];

/// Written by hand: never generated, never blessed.
const HAND_WRITTEN: &str = "procctl.toml.5";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../man")
}

/// Every page the binaries generate now, by file name.
fn generate() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new(bin("procctl")).arg("manpages").arg(dir.path()), None, WAIT).ok();
    let mut pages: Vec<(String, String)> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), fs::read_to_string(&path).unwrap())
        })
        .collect();
    let agent = run(Command::new(bin("procagent")).arg("--manpage"), None, WAIT);
    assert_eq!(agent.code, Some(0), "procagent --manpage failed: {agent:?}");
    pages.push(("procagent.8".into(), agent.stdout));
    pages.sort();
    pages
}

/// The generated pages committed in man/: every .1 and .8 file.
fn committed() -> BTreeSet<String> {
    fs::read_dir(man_dir())
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".1") || name.ends_with(".8"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn committed_man_pages_match_the_cli() {
    let pages = generate();
    let names: BTreeSet<String> = pages.iter().map(|(name, _)| name.clone()).collect();
    for page in GENERATED {
        assert!(names.contains(page), "the binaries no longer generate {page}: {names:?}");
    }
    assert!(!names.contains("procctl-manpages.1"), "the hidden `manpages` subcommand got a page");
    assert!(!names.contains("procctl-help.1"), "clap's `help` subcommand got a page");

    let dir = man_dir();
    if std::env::var_os("PROCCTL_BLESS").is_some() {
        fs::create_dir_all(&dir).unwrap();
        for name in committed().difference(&names) {
            fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, text) in &pages {
            fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    let mut stale: Vec<String> = pages
        .iter()
        .filter(|(name, text)| fs::read_to_string(dir.join(name)).ok().as_ref() != Some(text))
        .map(|(name, _)| format!("man/{name}"))
        .collect();
    stale.extend(committed().difference(&names).map(|name| format!("man/{name} (no longer generated)")));
    assert!(
        stale.is_empty(),
        "{} out of date: run `PROCCTL_BLESS=1 cargo test -p procctl-tests --test blackbox manuals`",
        stale.join(", ")
    );
}

/// The keys of a `[process.NAME]` table, as the agent itself lists them when it refuses an
/// unknown one that is close to none: `... unknown key `bogus`; the keys are command, instances, ...`.
fn keys_the_agent_accepts() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("procctl.toml");
    fs::write(&config, "[process.x]\ncommand = [\"true\"]\nbogus = 1\n").unwrap();
    let out = run(
        Command::new(bin("procagent"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(dir.path().join("agent.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state")),
        None,
        WAIT,
    );
    assert_eq!(out.code, Some(1), "procagent should refuse the unknown key: {out:?}");
    let want = format!("{}:3: process.x.bogus: unknown key `bogus`; the keys are ", config.display());
    let (_, list) = out.stderr.split_once(&want).unwrap_or_else(|| panic!("no list of keys in: {}", out.stderr));
    let keys: Vec<String> =
        list.lines().next().unwrap().split(", ").map(|key| key.trim_matches('`').to_string()).collect();
    assert!(keys.len() > 20 && keys.iter().any(|k| k == "command"), "not a list of keys: {list}");
    keys
}

/// The keys procctl.toml.5 documents: the first word of each `.TP` tag that is set in bold
/// (`.BR command " = " ...`).
fn keys_documented(page: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = page.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .filter_map(|pair| {
            let mut words = pair[1].split_whitespace();
            matches!(words.next(), Some(".B" | ".BR")).then(|| words.next()).flatten()
        })
        .map(|key| key.trim_end_matches(',').to_string())
        .collect()
}

#[test]
fn procctl_toml_5_documents_every_key_the_agent_accepts() {
    let page = fs::read_to_string(man_dir().join(HAND_WRITTEN)).unwrap();
    let documented = keys_documented(&page);
    let missing: Vec<String> = keys_the_agent_accepts().into_iter().filter(|key| !documented.contains(key)).collect();
    assert!(missing.is_empty(), "man/{HAND_WRITTEN} does not document these keys: {}", missing.join(", "));
    for needed in ["{instance}", "{port}", "FILE", "LINE", "KEY", "problem"] {
        assert!(page.contains(needed), "man/{HAND_WRITTEN} does not mention {needed}");
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// What renders the pages, with every warning shown: man, else groff, else mandoc.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Renderer {
    /// man-db's `man -l`, the way a user reads a page from a file.
    Man,
    Groff,
    /// `mandoc -Tlint`: only messages, no page.
    Mandoc,
}

impl Renderer {
    fn find() -> Option<Renderer> {
        [("man", Renderer::Man), ("groff", Renderer::Groff), ("mandoc", Renderer::Mandoc)]
            .into_iter()
            .find_map(|(program, renderer)| on_path(program).then_some(renderer))
    }

    fn command(self, page: &Path) -> Command {
        let (program, args): (&str, &[&str]) = match self {
            Renderer::Man => ("man", &["--warnings=w", "-l"]),
            Renderer::Groff => ("groff", &["-man", "-Tutf8", "-ww", "-P-cbou"]),
            Renderer::Mandoc => ("mandoc", &["-Tlint", "-Wwarning"]),
        };
        let mut command = Command::new(program);
        command.args(args).arg(page).env("MANWIDTH", "80").env("MANPAGER", "cat").env("PAGER", "cat");
        command
    }
}

#[test]
fn every_man_page_renders_without_warnings() {
    let renderer =
        Renderer::find().expect("none of man, groff or mandoc is installed to render man/ (.ci/run installs man-db)");
    let mut pages: Vec<PathBuf> = fs::read_dir(man_dir()).unwrap().map(|entry| entry.unwrap().path()).collect();
    pages.sort();
    assert!(pages.len() > GENERATED.len(), "man/ is missing pages: {pages:?}");
    for page in pages {
        let out = run(&mut renderer.command(&page), None, WAIT);
        let shown = page.file_name().unwrap().to_string_lossy();
        assert_eq!(out.code, Some(0), "{renderer:?} failed on man/{shown}: {out:?}");
        assert!(out.stderr.trim().is_empty(), "{renderer:?} warns about man/{shown}:\n{}", out.stderr);
        if renderer == Renderer::Mandoc {
            assert!(out.stdout.trim().is_empty(), "mandoc warns about man/{shown}:\n{}", out.stdout);
        } else {
            assert!(out.stdout.contains("NAME"), "{renderer:?} rendered nothing for man/{shown}: {out:?}");
        }
    }
}
