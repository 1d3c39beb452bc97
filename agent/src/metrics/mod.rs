//! The metrics: what the supervisor's table holds at the moment of a scrape (`Snapshot`,
//! made by the supervisor like a `list`), the counters kept outside it (`Tally`: messages,
//! refused sends, `send --reply` round trips, clients), and their OpenMetrics text, encoded
//! by prometheus-client from a collector made for each scrape (no registry outlives it, so
//! the series of an instance that is gone are gone with it). `address` reads and binds the
//! `--metrics` address, `http` serves `GET /metrics` on it.

pub mod address;
pub mod http;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use procctl_proto::{Exit, InstanceId, State, WireError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeExemplarValue, EncodeGaugeValue, EncodeMetric, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use address::Address;

use crate::supervisor::Handle;

/// The buckets of `procctl_reply_duration_seconds`: from a reply that is an echo (0.1 ms)
/// to one that does real work (10 s, the default `send` timeout's order).
pub const REPLY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One instance as the table has it at the scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSample {
    pub id: InstanceId,
    pub state: State,
    pub restarts: u32,
    pub recycles: u64,
    /// When the current run started; `None` without a run.
    pub started_at: Option<SystemTime>,
    pub last_exit: Option<Exit>,
    /// CPU time of the current run's tree, in microseconds.
    pub cpu_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub health_failures: u64,
}

/// One process: the instance count it is to have, and the last autoscale decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    pub name: String,
    pub wanted: u32,
    pub autoscale_wanted: Option<u32>,
}

/// What the supervisor hands a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub instances: Vec<InstanceSample>,
    pub processes: Vec<ProcessSample>,
}

/// The counters kept outside the supervisor, shared by the handlers, the server and the
/// scrapes; they live as long as the agent.
#[derive(Debug)]
pub struct Tally {
    started: SystemTime,
    /// Control clients connected now; the server counts them.
    pub connections: Arc<AtomicUsize>,
    rejected: AtomicU64,
    replies: Histogram,
    /// Messages written to each instance's pipe, over all its runs.
    messages: Mutex<HashMap<InstanceId, u64>>,
    /// Scrapes take turns: one snapshot at a time is asked of the supervisor and rendered.
    turn: tokio::sync::Semaphore,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            started: SystemTime::now(),
            connections: Arc::default(),
            rejected: AtomicU64::new(0),
            replies: Histogram::new(REPLY_BUCKETS),
            messages: Mutex::default(),
            turn: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Tally {
    /// The metrics text of the table as it is now.
    pub async fn scrape(&self, sup: &Handle) -> Result<String, WireError> {
        let _turn = self.turn.acquire().await;
        let snapshot = sup.metrics().await?;
        Ok(self.render(snapshot))
    }

    /// `count` messages were written to `id`'s pipe.
    pub fn delivered(&self, id: &InstanceId, count: u64) {
        if count > 0 {
            *self.messages.lock().unwrap_or_else(|p| p.into_inner()).entry(id.clone()).or_default() += count;
        }
    }

    /// `count` messages of a send were refused (queue full, not running, no pipe).
    pub fn rejected(&self, count: u64) {
        self.rejected.fetch_add(count, Ordering::Relaxed);
    }

    /// A `send --reply` got its reply after `elapsed`.
    pub fn replied(&self, elapsed: Duration) {
        self.replies.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text of `snapshot` with these counters. The message counts of
    /// instances that are no longer in the table are dropped here.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let messages = {
            let mut counts = self.messages.lock().unwrap_or_else(|p| p.into_inner());
            let present: HashSet<&InstanceId> = snapshot.instances.iter().map(|sample| &sample.id).collect();
            counts.retain(|id, _| present.contains(id));
            snapshot.instances.iter().map(|sample| counts.get(&sample.id).copied().unwrap_or(0)).collect()
        };
        let scrape = Scrape {
            snapshot,
            messages,
            started: self.started,
            connections: self.connections.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            replies: self.replies.clone(),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// One scrape's collector: the snapshot and the counters as they were when it was taken.
#[derive(Debug)]
struct Scrape {
    snapshot: Snapshot,
    /// Messages delivered, per instance of the snapshot, in its order.
    messages: Vec<u64>,
    started: SystemTime,
    connections: usize,
    rejected: u64,
    replies: Histogram,
}

/// A family of `kind` with one series per labelled value that is there, each written by `write`.
fn family<V>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<&Unit>, MetricType),
    labels: &[[(&str, &str); 2]],
    values: &[Option<V>],
    write: impl Fn(&mut MetricEncoder<'_>, &V) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in labels.iter().zip(values) {
        if let Some(value) = value {
            write(&mut family.encode_family(labels)?, value)?;
        }
    }
    Ok(())
}

fn gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    labels: &[[(&str, &str); 2]],
    values: &[Option<V>],
) -> std::fmt::Result {
    family(encoder, (name, help, unit, MetricType::Gauge), labels, values, |metric, value| metric.encode_gauge(value))
}

fn counters<V: EncodeCounterValue + EncodeExemplarValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    labels: &[[(&str, &str); 2]],
    values: &[Option<V>],
) -> std::fmt::Result {
    family(encoder, (name, help, unit, MetricType::Counter), labels, values, |metric, value| {
        metric.encode_counter::<NoLabelSet, _, V>(value, None)
    })
}

fn each<V>(instances: &[InstanceSample], value: impl Fn(&InstanceSample) -> Option<V>) -> Vec<Option<V>> {
    instances.iter().map(value).collect()
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instances = &self.snapshot.instances;
        let indexes: Vec<String> = instances.iter().map(|sample| sample.id.index.to_string()).collect();
        let labels: Vec<[(&str, &str); 2]> = instances
            .iter()
            .zip(&indexes)
            .map(|(sample, index)| [("name", sample.id.name.as_str()), ("index", index.as_str())])
            .collect();

        let up = |s: &InstanceSample| Some(i64::from(s.state == State::Running));
        let help = "1 while the instance is running (ready), else 0.";
        gauges(&mut encoder, "procctl_instance_up", help, None, &labels, &each(instances, up))?;
        {
            let help = "1 for the state the instance is in, 0 for the others.";
            let mut family = encoder.encode_descriptor("procctl_instance_state", help, None, MetricType::Gauge)?;
            for (sample, [name, index]) in instances.iter().zip(&labels) {
                for state in State::ALL {
                    let labels = [*name, *index, ("state", state.as_str())];
                    family.encode_family(&labels)?.encode_gauge(&i64::from(sample.state == state))?;
                }
            }
        }
        let restarts = |s: &InstanceSample| Some(u64::from(s.restarts));
        let help = "Restarts after an exit or a failed health check (RESTARTS of list), since the agent started.";
        counters(&mut encoder, "procctl_instance_restarts", help, None, &labels, &each(instances, restarts))?;
        let recycles = |s: &InstanceSample| Some(s.recycles);
        let help = "Restarts by a recycle policy, since the agent started.";
        counters(&mut encoder, "procctl_instance_recycles", help, None, &labels, &each(instances, recycles))?;
        let started = |s: &InstanceSample| s.started_at.map(unix_seconds);
        let help = "When the current run started, in seconds since the Unix epoch.";
        gauges(
            &mut encoder,
            "procctl_instance_start_time",
            help,
            Some(&Unit::Seconds),
            &labels,
            &each(instances, started),
        )?;
        let code = |s: &InstanceSample| match s.last_exit {
            Some(Exit::Code(code)) => Some(i64::from(code)),
            _ => None,
        };
        let help = "The exit code of the last run (absent when none ended or a signal ended it).";
        gauges(&mut encoder, "procctl_instance_last_exit_code", help, None, &labels, &each(instances, code))?;
        let cpu = |s: &InstanceSample| s.cpu_usec.map(|usec| usec as f64 / 1e6);
        let help = "CPU time of the instance's process tree in its current run.";
        counters(&mut encoder, "procctl_instance_cpu", help, Some(&Unit::Seconds), &labels, &each(instances, cpu))?;
        let memory = |s: &InstanceSample| s.memory_bytes;
        let help = "Resident memory of the instance's process tree (MEM of list).";
        gauges(&mut encoder, "procctl_instance_memory", help, Some(&Unit::Bytes), &labels, &each(instances, memory))?;
        let messages: Vec<Option<u64>> = self.messages.iter().map(|&count| Some(count)).collect();
        let help = "Messages written to the instance's pipe, over all its runs, since the agent started.";
        counters(&mut encoder, "procctl_instance_messages", help, None, &labels, &messages)?;
        let failures = |s: &InstanceSample| Some(s.health_failures);
        let help = "Failed health checks, over all runs, since the agent started.";
        counters(&mut encoder, "procctl_instance_health_failures", help, None, &labels, &each(instances, failures))?;

        let processes = &self.snapshot.processes;
        let mut family = encoder.encode_descriptor(
            "procctl_process_instances",
            "The number of instances the process is to have.",
            None,
            MetricType::Gauge,
        )?;
        for process in processes {
            family.encode_family(&[("name", process.name.as_str())])?.encode_gauge(&process.wanted)?;
        }
        let mut family = encoder.encode_descriptor(
            "procctl_process_autoscale_wanted",
            "The instance count the last autoscale decision asked for (processes with a policy).",
            None,
            MetricType::Gauge,
        )?;
        for process in processes {
            if let Some(wanted) = process.autoscale_wanted {
                family.encode_family(&[("name", process.name.as_str())])?.encode_gauge(&wanted)?;
            }
        }

        // A gauge of 1 rather than OpenMetrics' info type, which the older text format (that
        // node_exporter's textfile collector reads) does not know.
        let help = "The agent's version, in its label; always 1.";
        encoder
            .encode_descriptor("procctl_agent_info", help, None, MetricType::Gauge)?
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1)?;
        encoder
            .encode_descriptor(
                "procctl_agent_start_time",
                "When the agent started, in seconds since the Unix epoch.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?
            .encode_gauge(&unix_seconds(self.started))?;
        encoder
            .encode_descriptor("procctl_agent_connections", "Control clients connected now.", None, MetricType::Gauge)?
            .encode_gauge(&self.connections)?;
        encoder
            .encode_descriptor(
                "procctl_send_rejected",
                "Messages a send could not hand over: queue full, not running, no pipe.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.rejected, None)?;
        let replies = encoder.encode_descriptor(
            "procctl_reply_duration",
            "Round trips of send --reply: from the send to the reply line.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        self.replies.encode(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, index: u32, state: State) -> InstanceSample {
        InstanceSample {
            id: InstanceId::new(name.to_string(), index),
            state,
            restarts: 0,
            recycles: 0,
            started_at: None,
            last_exit: None,
            cpu_usec: None,
            memory_bytes: None,
            health_failures: 0,
        }
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines().filter(|line| line.starts_with(prefix)).map(str::to_string).collect()
    }

    #[test]
    fn every_metric_of_the_spec_is_written_with_name_and_index() {
        let tally = Tally::default();
        let mut web = sample("web", 1, State::Running);
        web.restarts = 3;
        web.started_at = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500));
        web.last_exit = Some(Exit::Code(2));
        web.cpu_usec = Some(1_500_000);
        web.memory_bytes = Some(4096);
        web.health_failures = 2;
        tally.delivered(&web.id, 5);
        tally.rejected(7);
        tally.replied(Duration::from_micros(300));
        let snapshot = Snapshot {
            instances: vec![web],
            processes: vec![ProcessSample { name: "web".into(), wanted: 2, autoscale_wanted: None }],
        };
        let text = tally.render(snapshot);
        let want = [
            r#"procctl_instance_up{name="web",index="1"} 1"#,
            r#"procctl_instance_state{name="web",index="1",state="running"} 1"#,
            r#"procctl_instance_state{name="web",index="1",state="fatal"} 0"#,
            r#"procctl_instance_restarts_total{name="web",index="1"} 3"#,
            r#"procctl_instance_recycles_total{name="web",index="1"} 0"#,
            r#"procctl_instance_start_time_seconds{name="web",index="1"} 1700000000.5"#,
            r#"procctl_instance_last_exit_code{name="web",index="1"} 2"#,
            r#"procctl_instance_cpu_seconds_total{name="web",index="1"} 1.5"#,
            r#"procctl_instance_memory_bytes{name="web",index="1"} 4096"#,
            r#"procctl_instance_messages_total{name="web",index="1"} 5"#,
            r#"procctl_instance_health_failures_total{name="web",index="1"} 2"#,
            r#"procctl_process_instances{name="web"} 2"#,
            r#"procctl_agent_connections 0"#,
            r#"procctl_send_rejected_total 7"#,
            r#"procctl_reply_duration_seconds_count 1"#,
            r#"procctl_reply_duration_seconds_bucket{le="0.0005"} 1"#,
            r#"procctl_reply_duration_seconds_bucket{le="0.00025"} 0"#,
            "# TYPE procctl_process_autoscale_wanted gauge",
            "# TYPE procctl_agent_info gauge",
            "# UNIT procctl_instance_memory_bytes bytes",
        ];
        for line in want {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert_eq!(lines(&text, "procctl_instance_state{").len(), State::ALL.len());
        assert_eq!(lines(&text, "procctl_agent_info{").len(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn absent_values_leave_their_series_out() {
        let tally = Tally::default();
        let mut killed = sample("w", 0, State::Backoff);
        killed.last_exit = Some(Exit::Signal(procctl_proto::Signal::KILL));
        let text = tally.render(Snapshot { instances: vec![killed], processes: vec![] });
        for family in [
            "procctl_instance_last_exit_code{",
            "procctl_instance_start_time_seconds{",
            "procctl_instance_cpu_seconds_total{",
            "procctl_instance_memory_bytes{",
        ] {
            assert!(lines(&text, family).is_empty(), "{family} in:\n{text}");
        }
        assert_eq!(lines(&text, "procctl_instance_up{"), [r#"procctl_instance_up{name="w",index="0"} 0"#]);
    }

    #[test]
    fn message_counts_outlive_runs_and_go_with_their_instance() {
        let tally = Tally::default();
        let id = InstanceId::new("w".to_string(), 0);
        tally.delivered(&id, 2);
        tally.delivered(&id, 3);
        let snapshot = Snapshot { instances: vec![sample("w", 0, State::Running)], processes: vec![] };
        let text = tally.render(snapshot);
        assert_eq!(
            lines(&text, "procctl_instance_messages_total{"),
            [r#"procctl_instance_messages_total{name="w",index="0"} 5"#]
        );
        tally.render(Snapshot::default());
        let text = tally.render(Snapshot { instances: vec![sample("w", 0, State::Running)], processes: vec![] });
        assert_eq!(
            lines(&text, "procctl_instance_messages_total{"),
            [r#"procctl_instance_messages_total{name="w",index="0"} 0"#]
        );
    }
}
