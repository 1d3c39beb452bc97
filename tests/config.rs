use crate::support::{Agent, WAIT, lines, sh};

/// Runs an agent on `toml`, which must refuse it; returns its stderr and the config path.
fn refused(toml: &str) -> (String, String) {
    let agent = Agent::new(toml);
    let out = crate::support::run(&mut agent.command(), None, WAIT);
    assert_eq!(out.code, Some(1), "a bad config must stop the agent: {out:?}");
    (out.stderr, agent.config.display().to_string())
}

#[test]
fn a_bad_config_stops_the_agent_before_anything_starts_naming_file_and_line() {
    let marker = std::env::temp_dir().join(format!("procctl-never-{}", std::process::id()));
    let toml = format!(
        "[process.good]\ncommand = {}\n\n[process.bad]\ncommand = [\"true\"]\nrestart = \"sometimes\"\n",
        sh(&format!("touch {}; exec sleep 100", marker.display()))
    );
    let agent = Agent::new(&toml);
    let out = crate::support::run(&mut agent.command(), None, WAIT);
    assert_eq!(out.code, Some(1), "a bad config must stop the agent: {out:?}");
    let config = agent.config.display().to_string();
    assert!(out.stderr.contains(&format!("{config}:6:")), "file and line: {}", out.stderr);
    assert!(out.stderr.contains("sometimes"), "the problem: {}", out.stderr);
    // The agent has exited, and it makes its state directory before it binds or spawns
    // anything: without one, it stopped at the config, and nothing of `good` can come later.
    assert!(!agent.state.exists(), "the agent went past its config: {}", agent.state.display());
    assert!(!marker.exists(), "nothing may start from a bad config");
}

#[test]
fn each_kind_of_mistake_is_named() {
    let cases = [
        ("[process.a]\ncommand = [\"x\"]\ntypo_key = 1\n", ":3:", "typo_key"),
        ("[process.\"no spaces\"]\ncommand = [\"x\"]\n", ":1:", "no spaces"),
        ("[process.all]\ncommand = [\"x\"]\n", ":1:", "reserved"),
        ("[process.a]\ncommand = [\"x\"]\nstop_timeout = \"later\"\n", ":3:", "later"),
        ("[process.a]\ncommand = [\"x\"\n", ":2:", ""),
        ("[process.a]\ninstances = 2\n", ":1:", "command"),
    ];
    for (toml, line, word) in cases {
        let (stderr, config) = refused(toml);
        assert!(stderr.contains(&format!("{config}{line}")), "{toml:?}: {stderr}");
        assert!(stderr.contains(word), "{toml:?}: {stderr}");
    }
}

#[test]
fn instances_get_the_procctl_variables_their_own_group_and_the_config_dir() {
    let mut agent = Agent::new("");
    let out = agent.path("env");
    agent.write_config(&format!(
        "[process.envy]\ncommand = {}\ninstances = 2\nstart_secs = \"0s\"\nenv = {{ EXTRA = \"x y\" }}\n",
        sh(&format!(
            "echo \"$PROCCTL_NAME $PROCCTL_INSTANCE $PROCCTL_SOCKET $PROCCTL_PIPE_FD $EXTRA $(pwd)\" > {}.$PROCCTL_INSTANCE; exec sleep 100000",
            out.display()
        ))
    ));
    agent.launch();
    let pids = agent.wait_running("envy", 2);
    let path = agent.path("env.1");
    crate::support::wait_until(WAIT, "instance 1 wrote its environment", || !lines(&path).is_empty());
    let words: Vec<String> = lines(&path)[0].split(' ').map(str::to_string).collect();
    let dir = agent.dir.path().canonicalize().unwrap();
    assert_eq!(words, ["envy", "1", &agent.socket.display().to_string(), "3", "x", "y", &dir.display().to_string()]);
    for pid in pids {
        assert_eq!(crate::support::stat(pid).unwrap().pgrp, pid, "each instance leads its own process group");
    }
}

#[test]
fn a_relative_cwd_and_a_plain_string_command_work() {
    let mut agent = Agent::new("");
    std::fs::create_dir(agent.path("sub")).unwrap();
    agent.write_config(
        "[process.w]\ncommand = \"pwd > where; exec sleep 100000\"\ncwd = \"sub\"\nstart_secs = \"0s\"\n",
    );
    agent.launch();
    agent.wait_running("w", 1);
    let file = agent.path("sub/where");
    crate::support::wait_until(WAIT, "the command ran in sub/", || !lines(&file).is_empty());
    assert!(lines(&file)[0].ends_with("/sub"));
}

#[test]
fn a_relative_program_path_is_taken_from_the_config_files_directory_not_from_cwd() {
    let mut agent = Agent::new("");
    std::fs::create_dir_all(agent.path("bin")).unwrap();
    std::fs::create_dir_all(agent.path("data")).unwrap();
    let script = agent.path("bin/where.sh");
    std::fs::write(&script, "#!/bin/sh\npwd > where\nexec sleep 100000\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    agent.write_config("[process.w]\ncommand = [\"./bin/where.sh\"]\ncwd = \"data\"\nstart_secs = \"0s\"\n");
    agent.launch();
    agent.wait_running("w", 1);
    let file = agent.path("data/where");
    crate::support::wait_until(WAIT, "the program ran in data/", || !lines(&file).is_empty());
    assert!(lines(&file)[0].ends_with("/data"), "{:?}", lines(&file));
}

#[test]
fn a_type_error_names_the_key_path_in_plain_words() {
    let (stderr, config) = refused("[process.worker]\ncommand = [\"x\"]\ninstances = \"two\"\n");
    let want = format!("{config}:3: process.worker.instances: expected a whole number, found the string \"two\"");
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!stderr.contains("u32"), "{stderr}");
}
