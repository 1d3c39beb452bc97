//! The recipes in `contrib/`: the systemd unit passes `systemd-analyze verify` with the built
//! binaries, the Docker image runs procagent as its entrypoint on a config that works, and
//! the Kubernetes pod parses, and its config and probes work against a real agent. A check
//! whose tool is not installed fails naming it (.ci/run installs every one).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{Agent, WAIT, bin, run, wait_until};

/// Where the recipes expect the binaries, the socket and the config.
const INSTALLED_AGENT: &str = "/usr/local/bin/procagent";
const INSTALLED_CTL: &str = "/usr/local/bin/procctl";
const SOCKET: &str = "/run/procctl/agent.sock";
const CONFIG: &str = "/etc/procctl/procctl.toml";

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib").join(path)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// `systemd-analyze verify` on `unit` (written as procagent.service in a temp dir), with the
/// man pages of man/ where `man` finds them (the unit's Documentation= names them). Its
/// complaints about the unit, which it prints without failing for some (an unknown key, a bad
/// value), come back as errors.
fn verify(unit: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("procagent.service");
    fs::write(&path, unit).unwrap();
    let mut command = Command::new("systemd-analyze");
    command.arg("verify");
    if on_path("man") {
        let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
        for entry in fs::read_dir(&man).unwrap() {
            let page = entry.unwrap().path();
            let section = page.extension().unwrap().to_string_lossy().into_owned();
            let into = dir.path().join(format!("man/man{section}"));
            fs::create_dir_all(&into).unwrap();
            fs::copy(&page, into.join(page.file_name().unwrap())).unwrap();
        }
        command.env("MANPATH", dir.path().join("man"));
    } else {
        eprintln!("man is not installed: systemd-analyze verify runs with --man=no");
        command.arg("--man=no");
    }
    let out = run(command.arg(&path), None, WAIT);
    let complaints: Vec<&str> = out.stderr.lines().filter(|line| line.contains("procagent.service")).collect();
    if out.code != Some(0) || !complaints.is_empty() {
        return Err(format!("exit {:?}:\n{}", out.code, out.stderr));
    }
    Ok(())
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    assert!(
        on_path("systemd-analyze"),
        "systemd-analyze is not installed to verify contrib/systemd/procagent.service (.ci/run installs systemd)"
    );
    let unit = fs::read_to_string(contrib("systemd/procagent.service")).unwrap();
    for line in [
        "Type=notify",
        "Delegate=yes",
        "KillMode=mixed",
        "Restart=on-failure",
        "RuntimeDirectory=procctl",
        "StateDirectory=procctl",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has no `{line}`");
    }
    let exec = |key: &str| unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key}"));
    assert!(exec("ExecStart=").starts_with(&format!("{INSTALLED_AGENT} --config {CONFIG} --socket {SOCKET} ")));
    assert_eq!(exec("ExecReload="), format!("{INSTALLED_CTL} --socket {SOCKET} reload"));

    let local = unit
        .replace(INSTALLED_AGENT, &bin("procagent").display().to_string())
        .replace(INSTALLED_CTL, &bin("procctl").display().to_string());
    if let Err(problem) = verify(&local) {
        panic!("systemd-analyze verify refuses contrib/systemd/procagent.service: {problem}");
    }
    // And it would see a broken one.
    for (from, to) in [("Type=notify", "Type=notfy"), ("Delegate=yes", "Delgate=yes")] {
        assert!(verify(&local.replace(from, to)).is_err(), "systemd-analyze verify took `{to}`");
    }
    let missing =
        unit.replace(INSTALLED_CTL, "/nonexistent/procctl").replace(INSTALLED_AGENT, "/nonexistent/procagent");
    assert!(verify(&missing).is_err(), "systemd-analyze verify took a missing ExecStart program");
}

/// The instructions of the last stage of a Dockerfile, continuation lines joined.
fn last_stage(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<String> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    let last = instructions.iter().rposition(|line| line.starts_with("FROM ")).expect("a FROM");
    instructions[last..].to_vec()
}

#[test]
fn the_docker_image_runs_procagent_as_pid_1_on_a_config_that_works() {
    let dockerfile = fs::read_to_string(contrib("docker/Dockerfile")).unwrap();
    assert!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count() >= 2, "not a multi-stage build");
    assert!(dockerfile.contains("RUN cargo build --release --locked"), "the builder does not build the release");
    let stage = last_stage(&dockerfile);
    let entrypoint = stage.iter().find_map(|l| l.strip_prefix("ENTRYPOINT ")).expect("an ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec form (JSON)");
    assert_eq!(argv[0], INSTALLED_AGENT, "the ENTRYPOINT is not procagent");
    assert!(argv.windows(2).any(|w| w == ["--config", CONFIG]), "the ENTRYPOINT does not read {CONFIG}");
    assert!(stage.iter().any(|l| l == "STOPSIGNAL SIGTERM"), "no STOPSIGNAL SIGTERM");
    assert!(stage.iter().any(|l| l == &format!("ENV PROCCTL_SOCKET={SOCKET}")), "procctl would not find the socket");
    assert!(stage.iter().any(|l| l == &format!("COPY contrib/docker/procctl.toml {CONFIG}")), "no default config");

    // The default config runs, with nothing but sh.
    let mut agent = Agent::start(&fs::read_to_string(contrib("docker/procctl.toml")).unwrap());
    agent.ctl(&["wait", "all", "--timeout", "10s"]).ok();
    let reply = agent.ctl(&["send", "--reply", "echo", "hello"]);
    reply.ok();
    assert_eq!(reply.stdout, "echo:0 got hello\necho:1 got hello\n");
    agent.shutdown();
}

/// The documents of a YAML file as JSON, read by python3's yaml module; None when there is
/// no python3 with yaml.
fn yaml_documents(path: &Path) -> Option<Vec<Value>> {
    let probe = run(Command::new("python3").args(["-c", "import yaml"]), None, WAIT);
    if probe.code != Some(0) {
        return None;
    }
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = run(Command::new("python3").args(["-c", script]).arg(path), None, WAIT);
    assert_eq!(out.code, Some(0), "{} is not valid YAML: {}", path.display(), out.stderr);
    Some(serde_json::from_str(&out.stdout).unwrap())
}

/// An exec probe of the pod, run here: procctl from the build, on the test agent's socket.
fn probe(agent: &Agent, command: &Value) -> std::process::Output {
    let argv: Vec<String> = command.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(argv[0], "procctl", "a probe that is not procctl: {argv:?}");
    let args = argv[1..].iter().map(|a| if a == SOCKET { agent.socket.display().to_string() } else { a.clone() });
    Command::new(bin("procctl")).args(args).output().unwrap()
}

#[test]
fn the_kubernetes_pod_parses_and_its_config_and_probes_work() {
    let documents = yaml_documents(&contrib("kubernetes/pod.yaml")).expect(
        "python3 with the yaml module is not installed to parse contrib/kubernetes/pod.yaml (.ci/run installs it)",
    );
    let kind = |kind: &str| documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    let (config_map, pod) = (kind("ConfigMap"), kind("Pod"));
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    let grace = spec["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    let config = config_map["data"]["procctl.toml"].as_str().expect("procctl.toml in the ConfigMap");
    let volume =
        spec["volumes"].as_array().unwrap().iter().find(|v| v["configMap"]["name"] == config_map["metadata"]["name"]);
    let volume = volume.expect("a volume of the ConfigMap");
    let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == volume["name"]);
    assert_eq!(
        mount.expect("the ConfigMap mounted")["mountPath"],
        Path::new(CONFIG).parent().unwrap().to_str().unwrap()
    );
    assert!(container["resources"]["limits"].is_object(), "no resource limits");

    // The ConfigMap's config runs, its stop_timeout fits in the grace period, and the probes
    // pass on a live agent.
    let mut agent = Agent::start(config);
    for line in config.lines().filter_map(|l| l.strip_prefix("stop_timeout = ")) {
        let timeout = procctl_proto::duration::parse(line.trim_matches('"')).unwrap();
        assert!(timeout.as_secs() * 2 <= grace, "terminationGracePeriodSeconds {grace} leaves no margin over {line}");
    }
    let liveness = &container["livenessProbe"]["exec"]["command"];
    let readiness = &container["readinessProbe"]["exec"]["command"];
    wait_until(WAIT, "the readiness probe passes", || probe(&agent, readiness).status.success());
    let alive = probe(&agent, liveness);
    assert!(alive.status.success(), "the liveness probe fails: {alive:?}");
    agent.shutdown();
    let dead = probe(&agent, liveness);
    assert_eq!(dead.status.code(), Some(3), "the liveness probe passes without an agent: {dead:?}");
}
