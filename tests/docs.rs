//! docs/guarantees.md names the tests that keep each promise of the README: every one it
//! names must exist, so the evidence cannot rot when a test is renamed or removed.

use std::fs;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `module::test` names in backquotes (`module::*` names a whole file).
fn named_tests(text: &str) -> Vec<(String, String)> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| {
            let (module, test) = quoted.split_once("::")?;
            let word =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            (word(module) && (test == "*" || word(test))).then(|| (module.to_string(), test.to_string()))
        })
        .collect()
}

/// Unit-test tables named by their function alone, in the crate file the sentence names.
const UNIT_TABLES: [(&str, &str); 7] = [
    ("agent/src/instance.rs", "a_stop_whose_exit_is_never_reported_still_settles"),
    ("agent/src/instance.rs", "a_spawn_the_spawner_never_answers_is_given_up"),
    ("agent/src/instance.rs", "a_stale_deadline_never_hits_the_next_run"),
    ("agent/src/instance.rs", "transition_matrix"),
    ("agent/src/instance.rs", "an_end_within_start_secs_is_quick_whether_or_not_the_run_became_ready"),
    ("agent/src/supervisor/model.rs", "any_sequence_of_requests_exits_and_timers_keeps_the_table_true"),
    (
        "agent/src/supervisor/model.rs",
        "a_recheck_that_ends_an_instance_being_removed_does_not_pull_it_from_under_itself",
    ),
];

#[test]
fn every_test_named_in_docs_guarantees_exists() {
    let text = fs::read_to_string(root().join("docs/guarantees.md")).unwrap();
    let named = named_tests(&text);
    assert!(named.len() > 50, "too few tests found in docs/guarantees.md: {named:?}");
    let mut missing = vec![];
    for (module, test) in named {
        let file = root().join(format!("tests/{module}.rs"));
        let source = fs::read_to_string(&file).unwrap_or_default();
        let found = if test == "*" { !source.is_empty() } else { source.contains(&format!("fn {test}(")) };
        if !found {
            missing.push(format!("{module}::{test}"));
        }
    }
    for (file, test) in UNIT_TABLES {
        assert!(text.contains(test), "docs/guarantees.md no longer names {test}: drop it from UNIT_TABLES");
        let source = fs::read_to_string(root().join(file)).unwrap();
        if !source.contains(&format!("fn {test}(")) {
            missing.push(format!("{file}: {test}"));
        }
    }
    assert!(missing.is_empty(), "docs/guarantees.md names tests that do not exist: {missing:?}");
}

#[test]
fn the_readme_links_the_guarantees() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("(docs/guarantees.md)"), "README.md must link docs/guarantees.md");
}

/// The first fenced block of `lang` after the README's "Writing a worker" heading.
fn worker_example(lang: &str) -> String {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let section = &readme[readme.find("## Writing a worker").expect("a Writing a worker section")..];
    let start = section.find(&format!("```{lang}\n")).unwrap_or_else(|| panic!("no {lang} example")) + lang.len() + 4;
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

#[test]
fn the_readmes_python_and_php_workers_reply_log_and_stop_at_once_on_sigterm() {
    let mut agent = crate::support::Agent::new("");
    fs::write(agent.path("worker.py"), worker_example("python")).unwrap();
    fs::write(agent.path("worker.php"), worker_example("php")).unwrap();
    agent.write_config(
        "[process.py]\ncommand = [\"python3\", \"-u\", \"worker.py\"]\nstart_secs = \"0s\"\nstop_timeout = \"60s\"\n\
         [process.php]\ncommand = [\"php\", \"worker.php\"]\nstart_secs = \"0s\"\nstop_timeout = \"60s\"\n",
    );
    agent.launch();
    for name in ["py", "php"] {
        agent.wait_running(name, 1);
        let out = agent.ctl(&["send", "--reply", &format!("{name}:0"), "resize"]);
        assert_eq!(out.ok().stdout, "done resize\n", "{name}");
        crate::support::wait_until(crate::support::WAIT, &format!("{name} logs its work"), || {
            agent.ctl(&["logs", name]).stdout.contains("working on resize")
        });
        agent.ctl(&["stop", name]).ok();
        // Code 0: its handler ended it; a worker still blocked would have met SIGKILL.
        assert_eq!(agent.row(name, 0)["last_exit"], serde_json::json!({"code": 0}), "{name}");
    }
}
