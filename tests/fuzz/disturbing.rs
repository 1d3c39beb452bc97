//! The fuzzer's other half: mutated request streams that change things (signals, stops,
//! starts, restarts, scales, sends, waits, reloads) against throwaway processes of its own,
//! one that ignores SIGTERM with its whole group, one that forks a child and answers its
//! pipe, one that exits at once. The corpus is what the real procctl sends: each of
//! `RECORDED` is run once against a recorder that answers the hello and refuses the rest.
//!
//! Cases run on `WORKERS` connections at once and are not waited for past `CAP` (the agent
//! goes on with an operation whose client left), so that operations overlap as they do
//! under load. Each answer is checked against the protocol as in the read-only half (the
//! instances themselves may change). After each batch: the agent is alive, `list` answers,
//! and within `SETTLE` the table and the processes agree: every listed pid is alive and every
//! live descendant of the agent is in the process group of a listed instance. No zombie
//! child stays, and the log has no panic.
//!
//! `PROCCTL_FUZZ_DISTURBING_CASES` and `PROCCTL_FUZZ_SEED` override the count and the
//! seed; the bytes of case N depend only on the seed, N and the recorded corpus, but which
//! cases overlap depends on timing, so a finding names its batch and is replayed by running
//! the same seed (bench/README.md has the long run).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use procctl_proto::{InstanceInfo, WireError};

use super::*;
use crate::support::{Agent, WAIT, alive, children_of, poll_until, stat};

/// Cases of the bounded run in the suite.
const CASES: u64 = 3000;
/// Connections at once.
const WORKERS: u64 = 4;
/// Cases between two checks of the invariants.
const BATCH: u64 = 200;
/// How long the table and the processes may take to agree after a batch.
const SETTLE: Duration = Duration::from_secs(15);
/// The largest scale count sent (a mutated count is dropped above it).
const MAX_SCALE: u32 = 64;
/// The longest wait or send timeout sent.
const MAX_TIMEOUT_MS: u64 = 2000;

/// Ignores SIGTERM, and so does every process of its group: a stop ends with SIGKILL.
pub const TERM: &str = "term";
/// Forks a sleeping child (left in its group when it dies) and answers each line on its pipe.
pub const FORK: &str = "fork";
/// Exits at once, so it cycles through backoff.
pub const QUICK: &str = "quick";

fn config() -> String {
    format!(
        "[process.{TERM}]\ncommand = {}\ninstances = 2\nstart_secs = \"0s\"\nstop_timeout = \"100ms\"\n\n\
         [process.{FORK}]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"200ms\"\n\n\
         [process.{QUICK}]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"100ms\"\n",
        sh("trap '' TERM; while :; do sleep 1; done"),
        sh("sleep 100000 & while IFS= read -r m <&3; do printf 'got %s\\n' \"$m\" >&3; done"),
        sh("exit 3"),
    )
}

/// The procctl invocations whose request streams make the corpus.
const RECORDED: &[&[&str]] = &[
    &["list"],
    &["list", TERM, "--json"],
    &["pid", "fork:0"],
    &["logs", QUICK, "-n", "5"],
    &["start", "all"],
    &["start", "term:1"],
    &["stop", TERM],
    &["stop", "fork:0"],
    &["stop", "all"],
    &["restart", TERM],
    &["restart", "fork:0"],
    &["restart", "all"],
    &["signal", TERM, "TERM"],
    &["signal", "fork:0", "KILL"],
    &["signal", "term:0", "KILL"],
    &["signal", QUICK, "HUP"],
    &["signal", "all", "STOP"],
    &["signal", "all", "CONT"],
    &["scale", TERM, "5"],
    &["scale", TERM, "0"],
    &["scale", TERM, "2"],
    &["scale", FORK, "3"],
    &["scale", QUICK, "2"],
    &["send", FORK, "hello"],
    &["send", "--reply", "--timeout", "500ms", "fork:0", "ping"],
    &["wait", TERM, "--for", "running", "--timeout", "1s"],
    &["wait", "fork:2", "--for", "gone", "--timeout", "1s"],
    &["reload"],
];

#[test]
fn mutated_requests_that_change_things_never_break_the_agent_nor_leave_a_process_outside_its_table() {
    let cases = env_u64("PROCCTL_FUZZ_DISTURBING_CASES").unwrap_or(CASES);
    let seed = env_u64("PROCCTL_FUZZ_SEED").unwrap_or(SEED);
    let corpus = record(RECORDED);
    // Process groups, as an agent that is not root tracks them (and the same on any machine).
    let mut agent = Agent::new(&config());
    agent.launch_with(&["--no-cgroups"]);
    agent.wait_running(TERM, 2);
    agent.wait_running(FORK, 1);
    let instances = Instances::Moving(vec![TERM, FORK, QUICK]);

    let started = Instant::now();
    let stats = Mutex::new(Stats::default());
    let mut batch_start = 0;
    while batch_start < cases {
        let batch_end = (batch_start + BATCH).min(cases);
        let next = AtomicU64::new(batch_start);
        let finding: Mutex<Option<String>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..WORKERS {
                scope.spawn(|| {
                    loop {
                        let number = next.fetch_add(1, Ordering::Relaxed);
                        if number >= batch_end || finding.lock().unwrap().is_some() {
                            return;
                        }
                        let case = Case::from_corpus(seed, number, &corpus);
                        let steps = steps(&case.bytes);
                        if let Some(verb) = steps.iter().find_map(|step| match step {
                            Step::Request(request) if !allowed(request) => Some(request.verb()),
                            _ => None,
                        }) {
                            *stats.lock().unwrap().dropped.entry(verb).or_default() += 1;
                            continue;
                        }
                        let outcome = run_case(&agent.socket, &case, &steps, &instances);
                        let mut stats = stats.lock().unwrap();
                        for step in &steps {
                            *stats.steps.entry(step.kind()).or_default() += 1;
                        }
                        match outcome {
                            Ok(class) => *stats.classes.entry(class).or_default() += 1,
                            Err(problem) => {
                                let report = format!("case {number}: {problem}\n{}", describe(&case, &steps));
                                finding.lock().unwrap().get_or_insert(report);
                            }
                        }
                    }
                });
            }
        });
        let connections = stats.lock().unwrap().classes.values().sum::<u64>();
        let problem = finding.into_inner().unwrap().or_else(|| settled(&mut agent).err());
        if let Some(problem) = problem {
            panic!(
                "disturbing fuzz finding in cases {batch_start}..{batch_end} (seed {seed:#x}), after {connections} \
                 connections in {:.1?}: {problem}\nreplay with PROCCTL_FUZZ_SEED={seed:#x} \
                 PROCCTL_FUZZ_DISTURBING_CASES={batch_end}\nagent log (tail):\n{}",
                started.elapsed(),
                tail(&agent.log(), 40)
            );
        }
        batch_start = batch_end;
    }
    let stats = stats.into_inner().unwrap();
    let sent: u64 = stats.classes.values().sum();
    eprintln!(
        "fuzz (disturbing): seed {seed:#x}, {cases} cases in {:.1?}: {sent} sent, dropped by the filter {:?}\n\
         fuzz (disturbing): outcomes {:?}\nfuzz (disturbing): frames as the agent reads them {:?}",
        started.elapsed(),
        stats.dropped,
        stats.classes,
        stats.steps,
    );
    agent.ctl(&["scale", TERM, "0"]).ok();
    agent.shutdown();
}

/// What the filter lets through: everything but a shutdown, a scale above `MAX_SCALE` and
/// a timeout above `MAX_TIMEOUT_MS` (so a batch ends in seconds and spawns a bounded number).
fn allowed(request: &Request) -> bool {
    match request {
        Request::Shutdown => false,
        Request::Scale { count, .. } => *count <= MAX_SCALE,
        Request::Wait { timeout_ms, .. } => *timeout_ms <= MAX_TIMEOUT_MS,
        Request::Send(send) => send.timeout_ms <= MAX_TIMEOUT_MS && send_bound(send) <= CAP * 4,
        _ => true,
    }
}

impl Case {
    /// One to three recorded streams run together (a later one's hello kept or not), mutated.
    fn from_corpus(seed: u64, number: u64, corpus: &[Vec<Vec<u8>>]) -> Case {
        let mut rng = Rng::for_case(seed ^ 0xd157_0b1e, number);
        let mut frames: Vec<Vec<u8>> = vec![];
        for n in 0..rng.range(1, 3) {
            let stream = &corpus[rng.below(corpus.len())];
            let skip = usize::from(n > 0 && rng.percent(80));
            frames.extend(stream[skip..].iter().cloned());
        }
        let donor = corpus[rng.below(corpus.len())].clone();
        let half_close = rng.percent(90);
        let originals = frames.iter().chain(&donor).cloned().collect();
        let (bytes, mutations) = if rng.percent(15) {
            // Unmutated: the requests as procctl sends them, so that real operations overlap.
            (
                frames
                    .iter()
                    .flat_map(|body| (body.len() as u32).to_be_bytes().into_iter().chain(body.clone()))
                    .collect(),
                vec![],
            )
        } else {
            mutate(&mut rng, frames, &donor)
        };
        Case { number, originals, bytes, mutations, half_close, pieces: vec![] }
    }
}

fn describe(case: &Case, steps: &[Step]) -> String {
    format!(
        "  mutations: {:?}\n  bytes: {}\n  frames as the agent reads them: {}",
        case.mutations,
        hex(&case.bytes, 256),
        clip(format!("{steps:?}"), 2000)
    )
}

/// The request streams procctl sends for each of `invocations`, as frame bodies: each is run
/// against a recorder that answers its hello and refuses what follows (so procctl ends).
fn record(invocations: &[&[&str]]) -> Vec<Vec<Vec<u8>>> {
    let dir = tempfile::Builder::new().prefix("procctl-record").tempdir().unwrap();
    let socket = dir.path().join("recorder.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut corpus = vec![];
    for args in invocations {
        let mut ctl = std::process::Command::new(crate::support::bin("procctl"));
        ctl.args(*args).env("PROCCTL_SOCKET", &socket).env("NO_COLOR", "1");
        let child = ctl.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        let mut child = child.stderr(std::process::Stdio::null()).spawn().unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut bodies = vec![];
        while let Some(body) = read_body(&mut stream) {
            let request: Request = frame::decode_body(&body).expect("procctl sends requests");
            let answer = match request {
                Request::Hello { .. } => {
                    Response::Hello { version: PROTOCOL_VERSION, agent_version: "recorder".into() }
                }
                _ => Response::Error(WireError::new(ErrorKind::Refused, "recorded")),
            };
            bodies.push(body);
            if stream.write_all(&frame::encode(&answer).unwrap()).is_err() {
                break;
            }
        }
        let status = child.wait().unwrap();
        assert!(bodies.len() >= 2, "procctl {args:?} sent {} frame(s) ({status})", bodies.len());
        corpus.push(bodies);
    }
    corpus
}

/// One frame's body, or none at the end of the stream.
fn read_body(stream: &mut UnixStream) -> Option<Vec<u8>> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; frame::body_len(header).ok()?];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// The invariants after a batch: the agent alive and answering, and within `SETTLE` a moment
/// where every listed pid is alive and every live descendant of the agent belongs to the
/// process group of a listed instance; no zombie child for 2 s; no panic in the log.
fn settled(agent: &mut Agent) -> Result<(), String> {
    if !agent.is_running() {
        return Err("the agent process exited".into());
    }
    list_all(&agent.socket)?;
    let mut last = String::new();
    let agreed = poll_until(SETTLE, Duration::from_millis(50), || match table_and_processes(agent) {
        Ok(()) => true,
        Err(problem) => {
            last = problem;
            false
        }
    });
    if !agreed {
        return Err(format!("the table and the processes did not agree within {SETTLE:?}: {last}"));
    }
    let mut zombies = vec![];
    if !poll_until(Duration::from_secs(2), Duration::from_millis(20), || {
        zombies = zombies_of(agent.pid());
        zombies.is_empty()
    }) {
        return Err(format!("zombie children of the agent for 2 s: {zombies:?}"));
    }
    if let Some(line) = agent.log().lines().find(|line| line.contains("panicked")) {
        return Err(format!("the agent's log has a panic: {line}"));
    }
    Ok(())
}

/// One look: the processes first, then the table, so that a process started in between is
/// listed already (its spawn report reaches the agent before the list request does).
fn table_and_processes(agent: &mut Agent) -> Result<(), String> {
    if !agent.is_running() {
        return Err("the agent process exited".into());
    }
    let descendants = descendants(agent.pid());
    let rows = list_all(&agent.socket)?;
    for row in &rows {
        if let Some(pid) = row.pid {
            agent.remember(pid as i32);
        }
    }
    let listed = |rows: &[InstanceInfo]| -> BTreeMap<i32, String> {
        rows.iter().filter_map(|row| Some((row.pid? as i32, row.id.to_string()))).collect()
    };
    let listed = listed(&rows);
    if let Some((pid, id)) = listed.iter().find(|(pid, _)| !alive(**pid)) {
        return Err(format!("{id} is listed with pid {pid}, which is not alive"));
    }
    let outside: Vec<String> = descendants
        .iter()
        .filter(|&&pid| alive(pid) && stat(pid).is_some_and(|s| !listed.contains_key(&s.pgrp)))
        .map(|&pid| format!("{pid} (group {:?}: {:?})", stat(pid).map(|s| s.pgrp), crate::support::argv(pid)))
        .collect();
    if !outside.is_empty() {
        return Err(format!("processes outside the table: {outside:?}; listed {listed:?}"));
    }
    Ok(())
}

/// Every live descendant of `pid`: its children, theirs, and so on.
fn descendants(pid: i32) -> Vec<i32> {
    let mut found = vec![];
    let mut next = children_of(pid);
    while let Some(child) = next.pop() {
        if alive(child) {
            found.push(child);
        }
        next.extend(children_of(child));
    }
    found
}

#[derive(Default)]
struct Stats {
    dropped: BTreeMap<&'static str, u64>,
    classes: BTreeMap<Class, u64>,
    steps: BTreeMap<&'static str, u64>,
}

#[test]
fn the_recorded_corpus_is_what_procctl_sends() {
    let corpus = record(&[&["scale", TERM, "5"], &["signal", "fork:0", "KILL"]]);
    let decode = |body: &Vec<u8>| frame::decode_body::<Request>(body).unwrap();
    assert_eq!(decode(&corpus[0][0]), Request::Hello { version: PROTOCOL_VERSION });
    assert_eq!(decode(&corpus[0][1]), Request::Scale { name: TERM.into(), count: 5 });
    assert_eq!(
        decode(&corpus[1][1]),
        Request::Signal { target: Target::Instance(InstanceId::new(FORK, 0)), signal: Signal::KILL }
    );
}
