//! What a running replica publishes about itself over HTTP: `/status` as a
//! typed [`Status`], `/metrics` as [`Metrics`] samples. Tests assert on
//! these rather than on log lines, so that rewording a log message breaks
//! no test; a log line is asserted only where the line itself is the
//! contract (a warning an operator must see, a secret that must not
//! appear).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::kube_api::http_get;

/// The `/status` document of a replica. Unknown fields are ignored and
/// fields added later default, so the harness reads any recent daemon.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub node_id: String,
    /// `init`, `attempter`, `leader`, `failover` or `stopping`.
    pub state: String,
    /// When the current state was entered, unix milliseconds.
    pub since_ms: u64,
    pub leader: Option<String>,
    pub token: Option<u64>,
    pub session_id: Option<String>,
    pub znode: Option<String>,
    /// Why the last transition happened: one of a fixed set of codes
    /// (`leadership-lost`, `write-failures`, ...; the README lists them).
    pub cause: String,
    /// The same in words: for people, never matched by tests.
    pub cause_detail: String,
    pub last_write_ms: Option<u64>,
    #[serde(default)]
    pub released: bool,
    #[serde(default)]
    pub release_done: bool,
    #[serde(default)]
    pub ready: bool,
    /// Files named like leader files whose token the leader refused to
    /// trust (the first few).
    #[serde(default)]
    pub refused_files: Vec<RefusedFile>,
    /// The session timeout as negotiated (while leading: at the latest
    /// reconnection), milliseconds.
    #[serde(default)]
    pub session_timeout_ms: Option<u64>,
    /// While leading: how long a confirmation lets the leader write.
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// While leading: when the latest good confirmation was sent (Unix ms).
    #[serde(default)]
    pub confirmed_ms: Option<u64>,
    /// The leader's command (`election run -- CMD`), if it runs one.
    #[serde(default)]
    pub child: Option<ChildStatus>,
}

/// The leader's command as `/status` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChildStatus {
    pub pid: Option<u32>,
    pub starts: u64,
    pub last_exit: Option<String>,
    pub last_ended_by: Option<String>,
    pub last_stop_ms: Option<u64>,
}

/// A file named like a leader file that is not a valid leader record.
#[derive(Debug, Clone, Deserialize)]
pub struct RefusedFile {
    pub file: String,
    pub reason: String,
}

/// `/status` of the listener at `http`, if it answers 200 with a status.
pub fn status(http: SocketAddr) -> Option<Status> {
    let answer = http_get(http, "/status")?;
    (answer.status == 200)
        .then(|| serde_json::from_str(&answer.body).ok())
        .flatten()
}

/// One sample of the exposition: family or series name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of one `/metrics` answer.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Reads the text exposition (Prometheus 0.0.4 or OpenMetrics): comment
    /// lines are skipped, label order does not matter. Lines it cannot
    /// read are skipped too: the strict format check lives in
    /// `tests/http_endpoints.rs`.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// The sum of the series of `name` whose labels include `labels`
    /// (all of them when `labels` is empty); 0 when there is none (a
    /// counter with labels shows no series before its first increment).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// `/metrics` of the listener at `http`, if it answers 200.
pub fn metrics(http: SocketAddr) -> Option<Metrics> {
    let answer = http_get(http, "/metrics")?;
    (answer.status == 200).then(|| Metrics::parse(&answer.body))
}

/// `name{a="x",b="y"} 1.5` (an OpenMetrics timestamp or exemplar after the
/// value is ignored).
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].rfind('}')?;
            (&line[..=close], &line[close + 1..])
        }
        None => line.split_once(' ')?,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` (escapes `\\`, `\"`, `\n`).
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if text.is_empty() {
            return Some(labels);
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &rest[end + 1..];
    }
}
