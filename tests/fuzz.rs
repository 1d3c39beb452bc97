//! A mutation fuzzer for the agent's socket, black-box: real request streams (a hello, then
//! the read-only requests procctl sends) are mutated with a seeded PRNG, filtered so that no
//! mutation can change anything (a flipped tag must not become `stop`, `scale`, `shutdown`...),
//! and sent to a live agent, each on a fresh connection.
//!
//! Each answer is checked against the protocol: every byte back is a `Response` frame, one
//! response per request and in order, a hello first, a `BadRequest` and a close for a bad
//! frame, no close the client gave no reason for, no hang past the requests' own timeouts.
//! After every batch the agent must still be alive, answer a fresh hello + list promptly,
//! list every instance with the pid and restart count it started with, and have no zombie
//! children.
//!
//! `PROCCTL_FUZZ_CASES` and `PROCCTL_FUZZ_SEED` (decimal or 0x-hex) override the count and
//! the seed; bench/README.md has the long run. The bytes of case N depend only on the seed
//! and N, so a failure names both and is replayed by running N + 1 cases with that seed.

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use procctl_proto::frame::{self, HEADER_LEN, MAX_FRAME};
use procctl_proto::{
    ErrorKind, InstanceId, InstanceInfo, PROTOCOL_VERSION, Request, Response, SendRequest, Signal, State, Target,
};

use crate::support::{Agent, alive, poll_until, sh, status_kib, zombies_of};

mod disturbing;

/// Cases of the bounded run in the suite, and its seed.
const CASES: u64 = 2000;
const SEED: u64 = 0x7072_6f63_6374_6c31;
/// Cases between two health checks.
const BATCH: u64 = 50;
/// How long a connection the client keeps open may stay quiet before the case stops waiting.
const PATIENCE: Duration = Duration::from_millis(60);
/// A case whose requests may take longer than this by their own timeouts is not waited for
/// beyond it (and its time-out is not a finding).
const CAP: Duration = Duration::from_secs(1);
/// What the agent gets on top of its requests' own timeouts before a missing close is a hang.
const SLACK: Duration = Duration::from_secs(5);
/// How long a health check's hello + list may take.
const HEALTH: Duration = Duration::from_secs(10);
/// The agent's chunk of queued messages (pipe.rs); only used to bound how long a send may wait.
const SEND_CHUNK: usize = 64 * 1024;

const SLEEPER: &str = "sleeper";
const ECHO: &str = "echo";

/// Two sleepers that never read their pipe, and a worker that answers every line on it.
fn config() -> String {
    format!(
        "[process.{SLEEPER}]\ncommand = [\"sleep\", \"100000\"]\ninstances = 2\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n\n\
         [process.{ECHO}]\ncommand = {}\nstart_secs = \"0s\"\nstop_timeout = \"5s\"\n",
        sh("while IFS= read -r m <&3; do printf 'got %s\\n' \"$m\" >&3; done")
    )
}

#[test]
fn mutated_request_streams_never_break_the_agent() {
    let cases = env_u64("PROCCTL_FUZZ_CASES").unwrap_or(CASES);
    let seed = env_u64("PROCCTL_FUZZ_SEED").unwrap_or(SEED);
    let mut agent = Agent::start(&config());
    agent.wait_running(SLEEPER, 2);
    agent.wait_running(ECHO, 1);
    let initial = list_all(&agent.socket).unwrap_or_else(|e| panic!("the first list: {e}"));
    assert_eq!(initial.len(), 3, "{initial:?}");
    let known: HashMap<InstanceId, u32> =
        initial.iter().map(|row| (row.id.clone(), row.pid.expect("a running instance has a pid"))).collect();
    let known = Instances::Fixed(known);
    let agent_pid = agent.pid();
    let (rss_before, fds_before) = (status_kib(agent_pid, "VmRSS"), open_fds(agent_pid));

    let started = Instant::now();
    let mut stats = Stats::default();
    let mut batch: Vec<String> = vec![];
    for number in 0..cases {
        let case = Case::generate(seed, number);
        let steps = steps(&case.bytes);
        if let Some(verb) = steps.iter().find_map(|step| match step {
            Step::Request(request) if !harmless(request) => Some(request.verb()),
            _ => None,
        }) {
            *stats.dropped.entry(verb).or_default() += 1;
        } else {
            for step in &steps {
                *stats.steps.entry(step.kind()).or_default() += 1;
                if let Step::Request(request) = step {
                    if !case.originals.contains(&frame::encode(request).unwrap()[HEADER_LEN..].to_vec()) {
                        *stats.novel.entry(request.verb()).or_default() += 1;
                    }
                }
            }
            if plan(&steps, case.half_close).1 > CAP {
                stats.unwaited.push(number);
            }
            let begun = Instant::now();
            let outcome = run_case(&agent.socket, &case, &steps, &known);
            let took = begun.elapsed();
            stats.slowest = stats.slowest.max(took);
            match outcome {
                Ok(class) => {
                    *stats.classes.entry(class).or_default() += 1;
                    *stats.time.entry(class).or_default() += took;
                    batch.push(format!("  case {number} ({class}): {}", hex(&case.bytes, 48)));
                }
                Err(problem) => panic!("{}", failure(seed, &case, &steps, &problem, &agent)),
            }
            if !agent.is_running() {
                panic!("{}", failure(seed, &case, &steps, "the agent process exited during this case", &agent));
            }
        }
        if (number + 1) % BATCH == 0 || number + 1 == cases {
            let begun = Instant::now();
            if let Err(problem) = healthy(&mut agent, &initial) {
                panic!(
                    "fuzz health check failed after case {number}: {problem}\n\
                     seed {seed:#x}; replay with PROCCTL_FUZZ_SEED={seed:#x} PROCCTL_FUZZ_CASES={}\n\
                     the cases sent since the last check:\n{}\nagent log (tail):\n{}",
                    number + 1,
                    batch.join("\n"),
                    tail(&agent.log(), 40)
                );
            }
            stats.slowest_health = stats.slowest_health.max(begun.elapsed());
            batch.clear();
        }
    }
    // Connections stay open on the agent's side only while a request of theirs still runs:
    // at most one per case whose requests' timeouts outlast the waits of this test.
    let allowed = fds_before + stats.unwaited.len() + 4;
    poll_until(CAP + Duration::from_secs(4), Duration::from_millis(50), || open_fds(agent_pid) <= allowed);
    let (rss, fds) = (status_kib(agent_pid, "VmRSS"), open_fds(agent_pid));
    let sent: u64 = stats.classes.values().sum();
    let dropped: u64 = stats.dropped.values().sum();
    eprintln!(
        "fuzz: seed {seed:#x}, {cases} cases in {:.1?}: {sent} sent, {dropped} dropped by the safety filter {:?}\n\
         fuzz: outcomes {:?}, time spent in each {:.1?}\n\
         fuzz: frames as the agent reads them {:?}\n\
         fuzz: mutated requests that still decode (new to the agent) {:?}\n\
         fuzz: {} case(s) with requests whose own timeouts allow more than {CAP:?} (not waited for)\n\
         fuzz: slowest case {:.0?}, slowest health check {:.0?}; agent VmRSS {rss_before} -> {rss} KiB, open fds {fds_before} -> {fds}",
        started.elapsed(),
        stats.dropped,
        stats.classes,
        stats.time,
        stats.steps,
        stats.novel,
        stats.unwaited.len(),
        stats.slowest,
        stats.slowest_health,
    );
    if fds > fds_before + 4 {
        let shown: Vec<u64> = stats.unwaited.iter().copied().take(30).collect();
        eprintln!(
            "fuzz: note: the agent kept {} more fds than at the start, every client gone; the cases whose \
             requests may still wait (first 30): {shown:?}",
            fds - fds_before
        );
    }
    assert!(
        fds <= allowed,
        "the agent holds {fds} fds, {fds_before} at the start: more than its running requests explain"
    );
    assert!(rss < 64 * 1024, "the agent grew to {rss} KiB");
}

#[test]
fn the_safety_filter_catches_a_tag_mutated_into_a_command_that_changes_something() {
    let list = frame::encode(&Request::List { target: Target::All }).unwrap();
    // The body of `List { All }` is [1, 0]: variant 1 of Request, variant 0 of Target.
    assert_eq!(&list[HEADER_LEN..], [1, 0]);
    for (tag, verb) in [(3, "start"), (4, "stop"), (5, "restart"), (8, "shutdown"), (12, "reload")] {
        let mut bytes = frame::encode(&Request::Hello { version: PROTOCOL_VERSION }).unwrap();
        let mut mutated = list.clone();
        mutated[HEADER_LEN] = tag;
        if tag == 8 || tag == 12 {
            // Unit variants have no body after the tag: the length is rewritten to match.
            mutated.truncate(HEADER_LEN + 1);
            mutated[..HEADER_LEN].copy_from_slice(&1u32.to_be_bytes());
        }
        bytes.extend(mutated);
        let steps = steps(&bytes);
        assert!(matches!(&steps[1], Step::Request(r) if r.verb() == verb && !harmless(r)), "{steps:?}");
    }
}

#[test]
fn a_case_is_the_same_bytes_for_the_same_seed_and_number() {
    for number in [0, 1, 17, 999] {
        assert_eq!(Case::generate(SEED, number).bytes, Case::generate(SEED, number).bytes);
    }
    assert_ne!(Case::generate(SEED, 1).bytes, Case::generate(SEED, 2).bytes);
    assert_ne!(Case::generate(SEED, 1).bytes, Case::generate(SEED ^ 1, 1).bytes);
}

// ---- Generating cases ----------------------------------------------------------------------

/// A small xorshift64 generator; a case's generator is seeded from (seed, case number).
struct Rng(u64);

impl Rng {
    fn for_case(seed: u64, case: u64) -> Rng {
        // splitmix64 of the pair, so that neighbouring cases do not start alike.
        let mut z = seed ^ case.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// 0..n (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    /// lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A random byte, half the time one bincode (varint tags, 0, 0xff) or UTF-8 cares about.
    fn byte(&mut self) -> u8 {
        if self.percent(50) {
            self.pick(&[0x00, 0x01, 0x02, 0x7f, 0x80, 0xc0, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff])
        } else {
            self.next() as u8
        }
    }
}

fn target(rng: &mut Rng) -> Target {
    match rng.below(10) {
        0 | 1 => Target::All,
        2 => Target::Name(SLEEPER.into()),
        3 | 4 => Target::Name(ECHO.into()),
        5 => Target::Instance(InstanceId::new(SLEEPER, rng.below(2) as u32)),
        6 | 7 => Target::Instance(InstanceId::new(ECHO, 0)),
        8 => Target::Name("ghost".into()),
        _ => Target::Instance(InstanceId::new(SLEEPER, 7)),
    }
}

fn message(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => "ping".into(),
        1 => "hello world".into(),
        2 => String::new(),
        3 => "é-ü ✓".into(),
        _ => "x".repeat(rng.below(200)),
    }
}

/// A `procctl send` batch: one message with `--reply` (mostly to the worker that answers),
/// else one to three; a short timeout either way.
fn send(rng: &mut Rng) -> SendRequest {
    let reply = rng.percent(40);
    let target = if reply && rng.percent(80) {
        if rng.percent(50) { Target::Name(ECHO.into()) } else { Target::Instance(InstanceId::new(ECHO, 0)) }
    } else {
        target(rng)
    };
    let count = if reply { 1 } else { rng.range(1, 3) };
    let messages = (0..count).map(|_| message(rng)).collect();
    SendRequest { target, messages, any: rng.percent(30), reply, timeout_ms: rng.range(10, 60) }
}

/// What procctl sends: a hello, one to four requests, and sometimes a stream to end with.
fn realistic_stream(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut requests = vec![Request::Hello { version: PROTOCOL_VERSION }];
    for _ in 0..rng.range(1, 4) {
        requests.push(match rng.below(6) {
            0 => Request::List { target: target(rng) },
            1 => Request::Pid { target: target(rng) },
            2 => Request::Logs { target: target(rng), lines: rng.pick(&[0, 1, 10, 100, 1000]), follow: false },
            _ => Request::Send(send(rng)),
        });
    }
    if rng.percent(30) {
        requests.push(if rng.percent(50) {
            Request::Events
        } else {
            Request::Logs { target: target(rng), lines: rng.pick(&[0, 10]), follow: true }
        });
    }
    requests.iter().map(|request| frame::encode(request).unwrap()[HEADER_LEN..].to_vec()).collect()
}

/// One mutated stream and how it came about.
struct Case {
    number: u64,
    /// The bodies of the unmutated streams, to tell a mutated request that still decodes.
    originals: Vec<Vec<u8>>,
    bytes: Vec<u8>,
    mutations: Vec<String>,
    /// Whether the client half-closes after writing (else it keeps the connection open).
    half_close: bool,
    /// Sizes of the first few writes, a millisecond apart (empty: one write), so that
    /// frames arrive split.
    pieces: Vec<usize>,
}

impl Case {
    fn generate(seed: u64, number: u64) -> Case {
        let mut rng = Rng::for_case(seed, number);
        let frames = realistic_stream(&mut rng);
        let donor = realistic_stream(&mut rng);
        let half_close = rng.percent(90);
        let originals = frames.iter().chain(&donor).cloned().collect();
        let (bytes, mutations) = mutate(&mut rng, frames, &donor);
        let mut pieces = vec![];
        if rng.percent(10) {
            let mut left = bytes.len();
            while left > 0 && pieces.len() < 40 {
                let piece = (rng.range(1, 7) as usize).min(left);
                pieces.push(piece);
                left -= piece;
            }
        }
        Case { number, originals, bytes, mutations, half_close, pieces }
    }
}

/// A target the config does not have, or spells oddly.
fn edge_target(rng: &mut Rng) -> Target {
    match rng.below(11) {
        0 => Target::Name(String::new()),
        1 => Target::Name("all".into()),
        2 => Target::Name(format!("{ECHO} ")),
        3 => Target::Name("ECHO".into()),
        4 => Target::Name("x".repeat(rng.pick(&[255, 4096, 100_000]))),
        5 => Target::Name("\0é\u{202e}".into()),
        6 => Target::Instance(InstanceId::new(ECHO, u32::MAX)),
        7 => Target::Instance(InstanceId::new(SLEEPER, 2)),
        8 => Target::Instance(InstanceId::new("", 0)),
        9 => Target::Instance(InstanceId::new("all", 0)),
        _ => Target::All,
    }
}

/// Changes one field of a decoded request to an edge value; the name of what it did.
fn edge_field(rng: &mut Rng, request: &mut Request) -> Option<String> {
    let what = match request {
        Request::Hello { version } => {
            *version = rng.pick(&[0, PROTOCOL_VERSION + 1, u32::MAX]);
            format!("version {version}")
        }
        Request::List { target } | Request::Pid { target } => {
            *target = edge_target(rng);
            format!("target {target:?}")
        }
        Request::Logs { target, lines, follow } => match rng.below(3) {
            0 => {
                *target = edge_target(rng);
                format!("target {target:?}")
            }
            1 => {
                *lines = rng.pick(&[u32::MAX, u32::MAX / 2, 1 << 20, 0]);
                format!("lines {lines}")
            }
            _ => {
                *follow = !*follow;
                format!("follow {follow}")
            }
        },
        Request::Send(send) => match rng.below(6) {
            0 => {
                send.target = edge_target(rng);
                format!("target {:?}", send.target)
            }
            1 | 2 => {
                send.messages = match rng.below(8) {
                    0 => vec!["a\nb".into()],
                    1 => vec!["\r".into()],
                    2 => vec!["\0nul".into()],
                    3 => vec!["y".repeat(100_000)],
                    4 => vec![String::new(); 5000],
                    5 => vec!["é".repeat(30_000)],
                    6 => vec![],
                    _ => vec!["one".into(), "two".into()],
                };
                let sizes: Vec<usize> = send.messages.iter().take(3).map(String::len).collect();
                format!("{} message(s), sized {sizes:?}...", send.messages.len())
            }
            3 => {
                send.reply = !send.reply;
                format!("reply {}", send.reply)
            }
            4 => {
                send.any = !send.any;
                format!("any {}", send.any)
            }
            _ => {
                send.timeout_ms = rng.pick(&[0, 1, 5, 10_000, u64::MAX]);
                format!("timeout_ms {}", send.timeout_ms)
            }
        },
        Request::Start { target } | Request::Stop { target } | Request::Restart { target } => {
            *target = edge_target(rng);
            format!("target {target:?}")
        }
        Request::Signal { target, signal } => {
            if rng.percent(50) {
                *target = edge_target(rng);
                format!("target {target:?}")
            } else {
                *signal = Signal::from_raw(rng.pick(&[0, 1, 9, 15, 17, 18, 19, 20, 31, 32, 34, 64, 65, -1, i32::MAX]));
                format!("signal {signal}")
            }
        }
        Request::Scale { name, count } => {
            if rng.percent(50) {
                *name = rng.pick(&["", "all", "ghost", SLEEPER, ECHO, disturbing::TERM, disturbing::FORK]).to_string();
                format!("name {name:?}")
            } else {
                *count = rng.pick(&[0, 1, 2, 3, 7, 63, 10_001, u32::MAX]);
                format!("count {count}")
            }
        }
        Request::Wait { target, timeout_ms, .. } => {
            if rng.percent(50) {
                *target = edge_target(rng);
                format!("target {target:?}")
            } else {
                *timeout_ms = rng.pick(&[0, 1, 50, 10_000, u64::MAX]);
                format!("timeout_ms {timeout_ms}")
            }
        }
        Request::Autoscale { name } => {
            *name = rng.pick(&["", "all", "ghost", SLEEPER, ECHO, disturbing::TERM, disturbing::FORK]).to_string();
            format!("name {name:?}")
        }
        Request::Shutdown | Request::Events | Request::Reload | Request::Metrics | Request::Upgrade { .. } => {
            return None;
        }
    };
    Some(what)
}

/// Mutates the frames' bodies and order (each length prefix then rewritten to match, so the
/// body reaches the decoder), then sometimes the raw bytes (framing and all).
fn mutate(rng: &mut Rng, mut frames: Vec<Vec<u8>>, donor: &[Vec<u8>]) -> (Vec<u8>, Vec<String>) {
    let mut done = vec![];
    for _ in 0..rng.range(1, 3) {
        // Most body mutations spare the hello, so that more of them reach a handler.
        let i = match frames.len() {
            0 | 1 => 0,
            n if rng.percent(70) => 1 + rng.below(n - 1),
            n => rng.below(n),
        };
        let op = rng.below(14);
        if frames.is_empty() && op != 9 && op != 10 {
            continue;
        }
        if op >= 12 {
            if let Ok(mut request) = frame::decode_body::<Request>(&frames[i]) {
                if let Some(what) = edge_field(rng, &mut request) {
                    if let Ok(bytes) = frame::encode(&request) {
                        frames[i] = bytes[HEADER_LEN..].to_vec();
                        done.push(format!("frame {i} re-encoded with {what}"));
                    }
                }
            }
            continue;
        }
        let body = frames.get_mut(i);
        match (op, body) {
            (0 | 1, Some(body)) if !body.is_empty() => {
                for _ in 0..rng.range(1, 3) {
                    let at = rng.below(body.len());
                    body[at] ^= 1 << rng.below(8);
                }
                done.push(format!("flip bits in frame {i}"));
            }
            (2 | 3, Some(body)) if !body.is_empty() => {
                let at = rng.below(body.len());
                body[at] = rng.byte();
                done.push(format!("overwrite byte {at} of frame {i}"));
            }
            (4, Some(body)) => {
                let at = rng.below(body.len() + 1);
                let n = rng.range(1, 8) as usize;
                let inserted: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                body.splice(at..at, inserted);
                done.push(format!("insert {n} bytes at {at} of frame {i}"));
            }
            (5, Some(body)) if !body.is_empty() => {
                let at = rng.below(body.len());
                let end = (at + rng.range(1, 8) as usize).min(body.len());
                body.drain(at..end);
                done.push(format!("delete bytes {at}..{end} of frame {i}"));
            }
            (11, Some(body)) if !body.is_empty() => {
                // A byte replaced by a wide varint: a huge count, timeout, index, version or length.
                let at = rng.below(body.len());
                let wide: &[u8] = rng.pick(&[
                    &[0xfa][..],
                    &[0xfb, 0xff, 0xff],
                    &[0xfc, 0x80, 0x00, 0x00, 0x00],
                    &[0xfc, 0xff, 0xff, 0xff, 0xff],
                    &[0xfd, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                ]);
                body.splice(at..=at, wide.iter().copied());
                done.push(format!("widen byte {at} of frame {i} to {}", hex(wide, 9)));
            }
            (6, _) => {
                let at = rng.below(frames.len() + 1);
                frames.insert(at, frames[i].clone());
                done.push(format!("duplicate frame {i} at {at}"));
            }
            (7, _) => {
                frames.remove(i);
                done.push(format!("drop frame {i}"));
            }
            (8, _) => {
                let j = rng.below(frames.len());
                frames.swap(i, j);
                done.push(format!("swap frames {i} and {j}"));
            }
            (9, _) => {
                let keep = rng.below(frames.len() + 1);
                let from = rng.below(donor.len());
                frames.truncate(keep);
                frames.extend(donor[from..].iter().cloned());
                done.push(format!("splice: first {keep} frames, then another stream's from its frame {from}"));
            }
            _ => {
                let at = rng.below(frames.len() + 1);
                let from = rng.below(donor.len());
                frames.insert(at, donor[from].clone());
                done.push(format!("graft another stream's frame {from} at {at}"));
            }
        }
    }
    let mut bytes = vec![];
    let mut headers = vec![];
    for body in &frames {
        headers.push((bytes.len(), body.len()));
        bytes.extend((body.len() as u32).to_be_bytes());
        bytes.extend(body);
    }
    if rng.percent(30) {
        for _ in 0..rng.range(1, 2) {
            match rng.below(6) {
                0 if !bytes.is_empty() => {
                    for _ in 0..rng.range(1, 4) {
                        let at = rng.below(bytes.len());
                        bytes[at] ^= 1 << rng.below(8);
                    }
                    done.push("raw: flip bits".into());
                }
                1 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    bytes.truncate(at);
                    done.push(format!("raw: truncate at {at}"));
                }
                2 => {
                    let at = rng.below(bytes.len() + 1);
                    let n = rng.range(1, 16) as usize;
                    let inserted: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                    bytes.splice(at..at, inserted);
                    done.push(format!("raw: insert {n} bytes at {at}"));
                }
                3 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    let end = (at + rng.range(1, 16) as usize).min(bytes.len());
                    bytes.drain(at..end);
                    done.push(format!("raw: delete bytes {at}..{end}"));
                }
                _ if !headers.is_empty() => {
                    let (at, len) = headers[rng.below(headers.len())];
                    let len = len as u32;
                    let random = rng.next() as u32;
                    let new = rng.pick(&[
                        0,
                        1,
                        len.wrapping_sub(1),
                        len + 1,
                        len * 2,
                        0xffff,
                        MAX_FRAME as u32,
                        MAX_FRAME as u32 + 1,
                        u32::MAX,
                        random,
                    ]);
                    if let Some(header) = bytes.get_mut(at..at + HEADER_LEN) {
                        header.copy_from_slice(&new.to_be_bytes());
                        done.push(format!("raw: length at {at} set to {new}"));
                    }
                }
                _ => {}
            }
        }
    }
    (bytes, done)
}

// ---- What the agent will read, and what it may answer ---------------------------------------

/// A frame as the agent reads it: a header, then exactly the body it announces.
#[derive(Debug)]
enum Step {
    Request(Request),
    /// A whole body that is not a `Request`.
    Malformed,
    /// A header over `MAX_FRAME`: nothing after it is read.
    TooLarge,
    /// The bytes end inside a header or a body.
    Partial,
}

impl Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::Request(request) => request.verb(),
            Step::Malformed => "(malformed)",
            Step::TooLarge => "(too large)",
            Step::Partial => "(partial)",
        }
    }
}

/// Every frame of `bytes`, decoded with the protocol's own decoder. It goes past a malformed
/// frame (the agent stops there, but the safety filter looks at everything it can).
fn steps(bytes: &[u8]) -> Vec<Step> {
    let mut out = vec![];
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
            out.push(Step::Partial);
            break;
        };
        let Ok(len) = frame::body_len(*header) else {
            out.push(Step::TooLarge);
            break;
        };
        let Some(body) = rest[HEADER_LEN..].get(..len) else {
            out.push(Step::Partial);
            break;
        };
        out.push(match frame::decode_body::<Request>(body) {
            Ok(request) => Step::Request(request),
            Err(_) => Step::Malformed,
        });
        rest = &rest[HEADER_LEN + len..];
    }
    out
}

/// The requests that read state or talk to a pipe, and change nothing the checks look at.
fn harmless(request: &Request) -> bool {
    matches!(
        request,
        Request::Hello { .. }
            | Request::List { .. }
            | Request::Pid { .. }
            | Request::Logs { .. }
            | Request::Events
            | Request::Send(_)
    )
}

/// How long a send may take by its own timeout: a wait for room per chunk, one for the
/// flush, one for the reply.
fn send_bound(send: &SendRequest) -> Duration {
    let bytes: usize = send.messages.iter().map(|m| m.len() + 1).sum();
    let waits = (bytes / SEND_CHUNK + 1 + 2) as u32;
    Duration::from_millis(send.timeout_ms.max(1)).saturating_mul(waits)
}

/// Before sending: whether the agent must end the connection by itself (`None`: it depends
/// on an answer), and how long the requests it will run may take.
fn plan(steps: &[Step], half_close: bool) -> (Option<bool>, Duration) {
    let mut bound = Duration::ZERO;
    let mut depends = false;
    let mut closes = half_close;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Request(Request::Hello { version }) if n == 0 && *version == PROTOCOL_VERSION => {}
            _ if n == 0 => {
                closes = !matches!(step, Step::Partial) || half_close;
                break;
            }
            Step::Malformed | Step::TooLarge => {
                closes = true;
                break;
            }
            Step::Partial | Step::Request(Request::Events) => break,
            Step::Request(Request::Logs { follow: true, .. }) => depends = true,
            Step::Request(Request::Send(send)) => bound = bound.saturating_add(send_bound(send)),
            Step::Request(Request::Wait { timeout_ms, .. }) => {
                bound = bound.saturating_add(Duration::from_millis(*timeout_ms));
            }
            // Starts, stops, restarts, scales and reloads take as long as the processes do.
            Step::Request(request) if !harmless(request) => bound = Duration::MAX,
            Step::Request(_) => {}
        }
    }
    let closes = if closes && depends && !half_close { None } else { Some(closes) };
    (closes, bound)
}

/// The checks of one answer: what the agent sent back, against the frames it was sent.
fn judge(
    steps: &[Step],
    half_close: bool,
    responses: &[Response],
    closed: bool,
    known: &Instances,
) -> Result<(), String> {
    // Over its connection limit the agent refuses before it reads a byte.
    if let (true, [Response::Error(error)]) = (closed, responses)
        && error.kind == ErrorKind::Refused
    {
        return Ok(());
    }
    let mut got = responses.iter();
    // Ok(None): the responses ran out on a connection still open (a prefix, cut by the wait).
    let mut want = |n: usize, what: &str, check: &dyn Fn(&Response) -> Result<(), String>| match got.next() {
        Some(response) => {
            check(response).map(|()| Some(response)).map_err(|e| format!("frame {n}: expected {what}: {e}"))
        }
        None if closed => Err(format!("the agent closed the connection before answering frame {n} ({what})")),
        None => Ok(None),
    };
    let error_of = |kind: ErrorKind| {
        move |response: &Response| match response {
            Response::Error(error) if error.kind == kind => Ok(()),
            other => Err(format!("got {}", clip(format!("{other:?}"), 300))),
        }
    };
    let mut ends = half_close;
    let mut stream: Option<&Request> = None;
    for (n, step) in steps.iter().enumerate() {
        let answer = match step {
            Step::Request(Request::Hello { version }) if n == 0 && *version == PROTOCOL_VERSION => {
                want(n, "the hello", &|response| match response {
                    Response::Hello { version, .. } if *version == PROTOCOL_VERSION => Ok(()),
                    other => Err(format!("got {other:?}")),
                })?
            }
            Step::Request(Request::Hello { .. }) if n == 0 => {
                ends = true;
                want(n, "a VersionMismatch error", &error_of(ErrorKind::VersionMismatch))?;
                break;
            }
            Step::Request(_) if n == 0 => {
                ends = true;
                want(n, "a BadRequest error (a request before the hello)", &error_of(ErrorKind::BadRequest))?;
                break;
            }
            Step::Malformed | Step::TooLarge => {
                ends = true;
                want(n, "a BadRequest error", &error_of(ErrorKind::BadRequest))?;
                break;
            }
            Step::Partial => break,
            Step::Request(request @ Request::Events) => {
                stream = Some(request);
                break;
            }
            Step::Request(request) => {
                let mut answer = want(n, &format!("the answer to {}", request.verb()), &|response| {
                    answers(request, response, known)
                })?;
                // A restart streams each step before its outcomes; metrics come in pieces.
                while let Some(Response::Step(_) | Response::Metrics { more: true, .. }) = answer {
                    answer = want(n, &format!("the answer to {}", request.verb()), &|response| {
                        answers(request, response, known)
                    })?;
                }
                // A followed log that found its target goes on as a stream; after an error,
                // the agent reads the next frame.
                if let (Request::Logs { follow: true, .. }, Some(Response::Logs { .. })) = (request, answer) {
                    stream = Some(request);
                    break;
                }
                answer
            }
        };
        if answer.is_none() {
            return Ok(());
        }
    }
    let rest: Vec<&Response> = got.collect();
    match stream {
        Some(request) => {
            for response in &rest {
                stream_item(request, response)?;
            }
            if closed && !half_close {
                return Err(format!("the agent ended the {} stream of a client still reading it", request.verb()));
            }
        }
        None => {
            if let Some(first) = rest.first() {
                return Err(format!(
                    "{} more response(s) than the frames asked for, the first: {}",
                    rest.len(),
                    clip(format!("{first:?}"), 300)
                ));
            }
            if closed && !ends {
                return Err("the agent closed a connection that was waiting for the client's next frame".into());
            }
        }
    }
    Ok(())
}

/// What the instances may be while cases run.
enum Instances {
    /// Nothing a case sends changes them: each has the pid it started with.
    Fixed(HashMap<InstanceId, u32>),
    /// Cases start, stop, scale and signal them: only their process names are known.
    Moving(Vec<&'static str>),
}

impl Instances {
    fn contains(&self, id: &InstanceId) -> bool {
        match self {
            Instances::Fixed(known) => known.contains_key(id),
            Instances::Moving(names) => names.contains(&id.name.as_str()),
        }
    }
}

/// Whether `response` is a possible answer to `request`, and consistent with the instances.
fn answers(request: &Request, response: &Response, instances: &Instances) -> Result<(), String> {
    let target_of = |target: &Target, id: &InstanceId| {
        if target.matches(id) && instances.contains(id) {
            Ok(())
        } else {
            Err(format!("{id} is not an instance of the target {target}"))
        }
    };
    let fixed = match instances {
        Instances::Fixed(known) => Some(known),
        Instances::Moving(_) => None,
    };
    match (request, response) {
        (Request::Hello { .. }, Response::Error(error)) if error.kind == ErrorKind::BadRequest => Ok(()),
        (Request::Hello { .. }, other) => Err(format!("a second hello got {other:?}")),
        (_, Response::Error(_)) => Ok(()),
        (Request::List { target }, Response::List(rows)) => rows.iter().try_for_each(|row| {
            target_of(target, &row.id)?;
            match fixed {
                Some(known) if row.pid != known.get(&row.id).copied() => {
                    Err(format!("{} has pid {:?}, it started with {:?}", row.id, row.pid, known.get(&row.id)))
                }
                _ => Ok(()),
            }
        }),
        (Request::Pid { .. }, Response::Pids(pids)) => match fixed {
            Some(known) => {
                let stranger = pids.iter().find(|&&pid| !known.values().any(|&k| k == pid));
                stranger.map_or(Ok(()), |pid| Err(format!("pid {pid} is none of the instances' {known:?}")))
            }
            None => Ok(()),
        },
        (
            Request::Start { target }
            | Request::Stop { target }
            | Request::Restart { target }
            | Request::Signal { target, .. },
            Response::Outcomes(outcomes),
        ) => outcomes.iter().try_for_each(|outcome| target_of(target, &outcome.id)),
        (Request::Restart { target }, Response::Step(outcome)) => target_of(target, &outcome.id),
        (Request::Scale { name, .. } | Request::Autoscale { name }, Response::Scaled { name: scaled, .. })
            if scaled == name =>
        {
            Ok(())
        }
        // The instances a scale added that did not come up.
        (Request::Scale { name, .. }, Response::Outcomes(failures)) => {
            failures.iter().try_for_each(|failure| target_of(&Target::Name(name.clone()), &failure.id))
        }
        (Request::Reload, Response::Reloaded(_)) | (Request::Wait { .. }, Response::Waited) => Ok(()),
        (Request::Metrics, Response::Metrics { .. }) => Ok(()),
        (Request::Logs { target, .. }, Response::Logs { lines, .. }) => {
            lines.iter().try_for_each(|line| target_of(target, &line.id))
        }
        (Request::Send(send), Response::Sent(deliveries)) => deliveries.iter().try_for_each(|delivery| {
            target_of(&send.target, &delivery.id)?;
            if delivery.accepted as usize > send.messages.len() {
                return Err(format!(
                    "{} accepted {} of {} messages",
                    delivery.id,
                    delivery.accepted,
                    send.messages.len()
                ));
            }
            match &delivery.reply {
                Some(reply) if !send.reply => Err(format!("a reply ({reply:?}) that was not asked for")),
                Some(reply)
                    if ![ECHO, disturbing::FORK].contains(&delivery.id.name.as_str()) || !reply.starts_with("got ") =>
                {
                    Err(format!(
                        "{} replied {:?}, which the workers never write",
                        delivery.id,
                        clip(reply.clone(), 100)
                    ))
                }
                _ => Ok(()),
            }
        }),
        (request, other) => Err(format!("{} got {}", request.verb(), clip(format!("{other:?}"), 300))),
    }
}

fn stream_item(request: &Request, response: &Response) -> Result<(), String> {
    match (request, response) {
        (_, Response::Missed(_)) | (Request::Events, Response::Event(_)) => Ok(()),
        (Request::Logs { target, .. }, Response::LogLine(line)) if target.matches(&line.id) => Ok(()),
        (request, other) => Err(format!("the {} stream carried {}", request.verb(), clip(format!("{other:?}"), 300))),
    }
}

// ---- Talking to the agent -------------------------------------------------------------------

/// What became of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    ErrorThenClosed,
    ClosedSilently,
    Answered,
    TimedOut,
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Sends one case and checks what comes back. `Err` is a finding.
fn run_case(socket: &Path, case: &Case, steps: &[Step], known: &Instances) -> Result<Class, String> {
    let (closes, bound) = plan(steps, case.half_close);
    // (how long in all, how long quiet, whether not closing in time is a hang)
    let (overall, quiet, hang) = match closes {
        Some(true) if bound <= CAP => (bound + SLACK, bound + SLACK, true),
        Some(true) => (CAP, PATIENCE, false),
        _ => (bound.min(CAP) + PATIENCE, PATIENCE, false),
    };
    let begun = Instant::now();
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("cannot connect to the agent: {e}"))?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // The agent may close before it has read everything (after an error): not a finding.
    let mut rest = &case.bytes[..];
    for &piece in &case.pieces {
        if stream.write_all(&rest[..piece]).is_err() {
            break;
        }
        rest = &rest[piece..];
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = stream.write_all(rest);
    if case.half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut received = vec![];
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        let left = (begun + overall).saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left.min(quiet).max(Duration::from_millis(1)))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => break false,
            // A reset: the agent closed with bytes of ours unread.
            Err(_) => break true,
        }
    };
    let elapsed = begun.elapsed();
    drop(stream);
    let responses = parse_responses(&received, closed)?;
    let seen = || {
        format!(
            "{} after {elapsed:.0?}; {} response(s): {}",
            if closed { "closed by the agent" } else { "still open when the client stopped waiting" },
            responses.len(),
            clip(format!("{responses:?}"), 1500)
        )
    };
    if hang && !closed {
        return Err(format!(
            "the agent neither finished nor closed within {overall:.0?} (its requests' timeouts allow {bound:.0?}); {}",
            seen()
        ));
    }
    judge(steps, case.half_close, &responses, closed, known)
        .map_err(|e| format!("{e}\n  what came back: {}", seen()))?;
    Ok(match (closed, responses.last()) {
        (false, _) => Class::TimedOut,
        (true, None) => Class::ClosedSilently,
        (true, Some(Response::Error(_))) => Class::ErrorThenClosed,
        (true, Some(_)) => Class::Answered,
    })
}

/// Every frame the agent sent, which must each be a `Response`.
fn parse_responses(mut bytes: &[u8], closed: bool) -> Result<Vec<Response>, String> {
    let mut out = vec![];
    loop {
        match frame::decode::<Response>(bytes) {
            Ok(Some((response, used))) => {
                out.push(response);
                bytes = &bytes[used..];
            }
            Ok(None) if bytes.is_empty() || !closed => return Ok(out),
            Ok(None) => {
                return Err(format!("the agent closed in the middle of a frame: {} left over", hex(bytes, 64)));
            }
            Err(e) => {
                return Err(format!(
                    "the agent sent bytes that are not a Response frame ({e}) after {} good one(s): {}",
                    out.len(),
                    hex(bytes, 64)
                ));
            }
        }
    }
}

/// Hello + `List { All }` on a fresh connection, within `HEALTH`.
fn list_all(socket: &Path) -> Result<Vec<InstanceInfo>, String> {
    let end = Instant::now() + HEALTH;
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_write_timeout(Some(HEALTH)).unwrap();
    let mut bytes = frame::encode(&Request::Hello { version: PROTOCOL_VERSION }).unwrap();
    bytes.extend(frame::encode(&Request::List { target: Target::All }).unwrap());
    stream.write_all(&bytes).map_err(|e| format!("cannot write hello + list: {e}"))?;
    let mut next = || {
        let left = end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        crate::support::read_response(&mut stream)
    };
    match next() {
        Some(Response::Hello { .. }) => {}
        other => return Err(format!("hello got {other:?} (None: closed or no answer within {HEALTH:?})")),
    }
    match next() {
        Some(Response::List(rows)) => Ok(rows),
        other => Err(format!("list got {other:?} (None: closed or no answer within {HEALTH:?})")),
    }
}

/// The checks between batches.
fn healthy(agent: &mut Agent, initial: &[InstanceInfo]) -> Result<(), String> {
    if !agent.is_running() {
        return Err("the agent process exited".into());
    }
    let rows = list_all(&agent.socket)?;
    let brief = |rows: &[InstanceInfo]| -> Vec<(String, Option<u32>, State, u32)> {
        rows.iter().map(|r| (r.id.to_string(), r.pid, r.state, r.restarts)).collect()
    };
    let before = brief(initial);
    let now = brief(&rows);
    if now != before {
        return Err(format!("the instances changed: (id, pid, state, restarts) were {before:?}, are {now:?}"));
    }
    if let Some(gone) = initial.iter().filter_map(|r| r.pid).find(|&pid| !alive(pid as i32)) {
        return Err(format!("instance pid {gone} is listed but not alive"));
    }
    let mut zombies = vec![];
    if !poll_until(Duration::from_secs(2), Duration::from_millis(20), || {
        zombies = zombies_of(agent.pid());
        zombies.is_empty()
    }) {
        return Err(format!("zombie children of the agent for 2 s: {zombies:?}"));
    }
    let log = agent.log();
    if let Some(line) = log.lines().find(|line| line.contains("panicked")) {
        return Err(format!("the agent's log has a panic: {line}"));
    }
    Ok(())
}

// ---- Reporting -------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    dropped: BTreeMap<&'static str, u64>,
    classes: BTreeMap<Class, u64>,
    time: BTreeMap<Class, Duration>,
    steps: BTreeMap<&'static str, u64>,
    novel: BTreeMap<&'static str, u64>,
    /// Cases whose requests' own timeouts allow more than `CAP`, so may still run at the end.
    unwaited: Vec<u64>,
    slowest: Duration,
    slowest_health: Duration,
}

fn failure(seed: u64, case: &Case, steps: &[Step], problem: &str, agent: &Agent) -> String {
    let saved = std::env::temp_dir().join(format!("procctl-fuzz-{seed:x}-{}.bin", case.number));
    let saved = match std::fs::write(&saved, &case.bytes) {
        Ok(()) => format!("all {} bytes saved in {}", case.bytes.len(), saved.display()),
        Err(e) => format!("could not save the bytes: {e}"),
    };
    format!(
        "fuzz finding: {problem}\n\
         seed {seed:#x}, case {number}; replay with PROCCTL_FUZZ_SEED={seed:#x} PROCCTL_FUZZ_CASES={next}\n\
         client {how}; written {pieces}; mutations: {mutations:?}\n\
         bytes sent: {hex}\n  ({saved})\n\
         frames as the agent reads them: {steps}\n\
         agent log (tail):\n{log}",
        number = case.number,
        next = case.number + 1,
        how = if case.half_close { "half-closed after writing" } else { "kept the connection open" },
        mutations = case.mutations,
        pieces = if case.pieces.is_empty() {
            "at once".to_string()
        } else {
            format!("in pieces of {:?} bytes 1 ms apart, then the rest", case.pieces)
        },
        hex = hex(&case.bytes, 256),
        steps = clip(format!("{steps:?}"), 2000),
        log = tail(&agent.log(), 40),
    )
}

fn hex(bytes: &[u8], max: usize) -> String {
    let mut out: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        out.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    if out.is_empty() { "(none)".into() } else { out }
}

fn clip(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max).collect();
    out.push_str("...");
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number (decimal or 0x-hex)")))
}
