//! The daemon's HTTP endpoints (/healthz, /readyz, /status, /metrics) and
//! `election release`, over real sockets against real daemon processes
//! and a real ZooKeeper.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use common::group::Group;
use common::kube_api::{HttpAnswer, http_get};
use common::proxy::{FaultProxy, Mode};
use common::replica::Replica;
use common::zk::ZkCluster;
use common::{free_port, wait_until};
use serde_json::Value;

/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(50);
/// Bound on anything that takes a ZooKeeper session or a takeover.
const ELECTION: Duration = Duration::from_secs(30);
/// Bound on a daemon exiting after SIGTERM, or refusing its flags.
const EXIT: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Spawns the next replica of `g` with HTTP on `http` and the admin
/// listener on `admin`.
fn spawn_with_listeners(g: &mut Group, http: SocketAddr, admin: SocketAddr) {
    g.extra = vec![
        "--http-addr".into(),
        http.to_string(),
        "--admin-addr".into(),
        admin.to_string(),
    ];
    g.spawn(1);
}

fn get(http: SocketAddr, path: &str) -> HttpAnswer {
    http_get(http, path).unwrap_or_else(|| panic!("no answer on {http}{path}"))
}

/// `/status` as JSON, if the listener answers 200 with JSON.
fn status(http: SocketAddr) -> Option<Value> {
    let answer = http_get(http, "/status")?;
    (answer.status == 200)
        .then(|| serde_json::from_str(&answer.body).ok())
        .flatten()
}

fn wait_state(http: SocketAddr, state: &str, g: &Group) {
    let ok = wait_until(ELECTION, POLL, || {
        status(http).is_some_and(|s| s["state"] == state)
    });
    assert!(
        ok,
        "{http} never in {state}: {:?}\n{}",
        status(http),
        g.logs()
    );
}

/// A leader r0 and a waiting candidate r1, each with its own listeners:
/// `[r0 http, r0 admin, r1 http, r1 admin]`.
fn leader_and_candidate(zk: &ZkCluster) -> (Group, [SocketAddr; 4]) {
    let mut g = Group::new(&zk.connect_string());
    let (h0, a0) = (loopback(), loopback());
    spawn_with_listeners(&mut g, h0, a0);
    assert_eq!(g.wait_leader(ELECTION), 0);
    let (h1, a1) = (loopback(), loopback());
    spawn_with_listeners(&mut g, h1, a1);
    wait_state(h1, "attempter", &g);
    (g, [h0, a0, h1, a1])
}

#[test]
fn readiness_follows_the_zookeeper_session_and_a_candidate_is_ready_too() {
    // Given a replica whose ZooKeeper is down
    let mut zk = ZkCluster::standalone();
    zk.kill(0);
    let mut g = Group::new(&zk.connect_string());
    let (h0, a0) = (loopback(), loopback());
    spawn_with_listeners(&mut g, h0, a0);
    let listening = wait_until(ELECTION, POLL, || http_get(h0, "/healthz").is_some());
    assert!(listening, "{}", g.logs());
    // Then it is alive but not ready, stuck between Init and Failover
    assert_eq!(get(h0, "/healthz").status, 200);
    let readyz = get(h0, "/readyz");
    assert_eq!(readyz.status, 503, "{}", readyz.body);
    let s = status(h0).expect("/status answers");
    assert!(
        ["init", "failover"].contains(&s["state"].as_str().unwrap()),
        "{s}"
    );
    assert_eq!(s["ready"], false);
    assert!(s["leader"].is_null() && s["token"].is_null(), "{s}");

    // When ZooKeeper comes up
    zk.start(0);
    // Then it leads and is ready
    assert_eq!(g.wait_leader(ELECTION), 0);
    let ready = wait_until(ELECTION, POLL, || {
        http_get(h0, "/readyz").is_some_and(|a| a.status == 200)
    });
    assert!(ready, "{}", g.logs());

    // When a second replica joins
    let (h1, a1) = (loopback(), loopback());
    spawn_with_listeners(&mut g, h1, a1);
    wait_state(h1, "attempter", &g);
    // (Attempter is entered before its first look at the queue: wait until
    // that look told it who leads.)
    let seen = wait_until(ELECTION, POLL, || {
        status(h1).is_some_and(|s| s["leader"] == "r0")
    });
    assert!(seen, "r1 never saw r0 lead: {:?}\n{}", status(h1), g.logs());
    // Then the candidate is alive and ready too
    assert_eq!(get(h1, "/healthz").status, 200);
    assert_eq!(get(h1, "/readyz").status, 200);
    // And /status tells who is who, the leader with its fencing token
    let answer = get(h1, "/status");
    assert!(
        answer
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        answer.headers
    );
    let s1: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(s1["node_id"], "r1");
    assert_eq!(s1["state"], "attempter");
    assert_eq!(s1["leader"], "r0", "{s1}");
    assert!(s1["token"].is_null(), "{s1}");
    assert_eq!(s1["ready"], true);
    let s0 = status(h0).unwrap();
    assert_eq!(s0["node_id"], "r0");
    assert_eq!(s0["state"], "leader");
    assert_eq!(s0["leader"], "r0");
    assert_eq!(s0["ready"], true);
    let newest = g.newest_record().unwrap();
    assert_eq!(s0["token"].as_u64(), Some(newest.token), "{s0}");
    g.stop_all();
    g.assert_invariants();
}

/// The samples of one metric family.
type Family = Vec<(BTreeMap<String, String>, f64)>;

/// A strict reader of the Prometheus text exposition format 0.0.4: every
/// sample belongs to a family announced by `# TYPE` before it, the lines
/// of a family are contiguous, names and label names are valid, label
/// values are quoted strings with `\\`, `\"`, `\n` escapes, no series
/// repeats, counters end with `_total`, values are floats (`NaN`, `+Inf`,
/// `-Inf` included). Returns the samples by family.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn valid_label(n: &str) -> bool {
        valid_name(n) && !n.contains(':') && !n.starts_with("__")
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut series_seen: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let err = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words[..] {
                ["TYPE", name, kind] => {
                    if !valid_name(name) {
                        return Err(err("bad family name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err("unknown type"));
                    }
                    if families.contains_key(name) {
                        return Err(err("TYPE after samples of its family"));
                    }
                    if types.insert(name.into(), kind.into()).is_some() {
                        return Err(err("second TYPE for a family"));
                    }
                    current = Some(name.into());
                }
                ["HELP", name, _] | ["HELP", name]
                    if !valid_name(name) || !helps.insert(name.into()) =>
                {
                    return Err(err("bad or repeated HELP"));
                }
                ["HELP", _, _] | ["HELP", _] => {}
                ["TYPE", ..] | ["HELP", ..] => return Err(err("malformed TYPE/HELP")),
                _ => {} // a plain comment
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(err("sample without a value")),
        };
        if !valid_name(name) {
            return Err(err("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                inner = inner.trim_start_matches([' ', ',']);
                if let Some(after) = inner.strip_prefix('}') {
                    break after;
                }
                let (key, after) = inner
                    .split_once('=')
                    .ok_or_else(|| err("label without ="))?;
                let key = key.trim();
                if !valid_label(key) {
                    return Err(err("bad label name"));
                }
                let after = after
                    .strip_prefix('"')
                    .ok_or_else(|| err("unquoted label value"))?;
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            _ => return Err(err("bad escape in a label value")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(err("unterminated label value")),
                    }
                };
                if labels.insert(key.to_owned(), value).is_some() {
                    return Err(err("repeated label"));
                }
                inner = &after[end + 1..];
                if !(inner.starts_with(',') || inner.starts_with('}')) {
                    return Err(err("junk after a label value"));
                }
            }
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| err("no value"))?;
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().map_err(|_| err("bad timestamp"))?;
        }
        if fields.next().is_some() || !rest.starts_with(' ') {
            return Err(err("junk around the value"));
        }
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("value is not a float"))?,
        };
        let kind = types
            .get(name)
            .ok_or_else(|| err("sample before its TYPE"))?;
        if current.as_deref() != Some(name) {
            return Err(err("family lines not contiguous"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            return Err(err("counter name without _total"));
        }
        if !series_seen.insert(format!("{name}{labels:?}")) {
            return Err(err("series repeated"));
        }
        families
            .entry(name.into())
            .or_default()
            .push((labels, value));
    }
    Ok(families)
}

/// The one sample of family `name` with exactly `labels`.
fn sample(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    families
        .get(name)?
        .iter()
        .find(|(l, _)| *l == want)
        .map(|(_, v)| *v)
}

#[test]
fn the_exposition_checker_rejects_malformed_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n# TYPE b gauge\nb NaN\n";
    let parsed = parse_exposition(good).unwrap();
    assert_eq!(
        sample(&parsed, "a_total", &[("x", "1"), ("y", "q\"")]),
        Some(3.0)
    );
    assert!(sample(&parsed, "b", &[]).unwrap().is_nan());
    for bad in [
        "a 1\n",                                        // no TYPE
        "# TYPE a counter\na 1\n",                      // counter without _total
        "# TYPE a gauge\na one\n",                      // not a float
        "# TYPE a gauge\na{x=1} 1\n",                   // unquoted label value
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n", // repeated series
        "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n",   // not contiguous
        "# TYPE 1a gauge\n1a 1\n",                      // bad name
        "# TYPE a gauge\na{x=\"1\"}1\n",                // no space before the value
        "# TYPE a wrong\na 1\n",                        // unknown type
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn metrics_are_valid_prometheus_text_with_every_required_family() {
    // Given a leader that has written a few files, and a candidate
    let zk = ZkCluster::standalone();
    let (mut g, [h0, _a0, h1, _a1]) = leader_and_candidate(&zk);
    assert!(wait_until(ELECTION, POLL, || g.records().len() >= 3));

    // When the leader's /metrics is scraped
    let answer = get(h0, "/metrics");
    // Then it is Prometheus text that a strict reader accepts
    assert_eq!(answer.status, 200);
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let m = parse_exposition(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
    // And every required family is there
    for family in [
        "election_state",
        "election_transitions_total",
        "election_leadership_acquisitions_total",
        "election_files_written_total",
        "election_write_errors_total",
        "election_prune_errors_total",
        "election_zk_session_events_total",
        "election_seconds_since_last_write",
        "election_kube_patch_errors_total",
    ] {
        assert!(
            m.contains_key(family),
            "{family} missing in\n{}",
            answer.body
        );
    }
    // And the values say: leader, one leadership, files written, no errors
    let states = &m["election_state"];
    assert_eq!(states.len(), 5, "{states:?}");
    for state in ["init", "attempter", "leader", "failover", "stopping"] {
        let expected = if state == "leader" { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&m, "election_state", &[("state", state)]),
            Some(expected),
            "{state}"
        );
    }
    let transition = |m: &BTreeMap<String, Family>, from, to| {
        sample(
            m,
            "election_transitions_total",
            &[("from", from), ("to", to)],
        )
    };
    // (A ZooKeeper hiccup on a loaded machine may repeat a transition:
    // count at least one, and the same leaderships both ways.)
    assert!(transition(&m, "init", "attempter").is_some_and(|n| n >= 1.0));
    let acquired = transition(&m, "attempter", "leader").unwrap_or(0.0);
    assert!(acquired >= 1.0, "{}", answer.body);
    assert_eq!(
        sample(&m, "election_leadership_acquisitions_total", &[]),
        Some(acquired)
    );
    let written = sample(&m, "election_files_written_total", &[]).unwrap();
    assert!(written >= 3.0, "{written}");
    assert_eq!(sample(&m, "election_write_errors_total", &[]), Some(0.0));
    assert_eq!(sample(&m, "election_prune_errors_total", &[]), Some(0.0));
    assert_eq!(
        sample(&m, "election_kube_patch_errors_total", &[]),
        Some(0.0)
    );
    assert!(
        m["election_zk_session_events_total"]
            .iter()
            .all(|(l, v)| l.contains_key("state") && *v >= 1.0),
        "{:?}",
        m["election_zk_session_events_total"]
    );
    assert!(!m["election_zk_session_events_total"].is_empty());
    let since = sample(&m, "election_seconds_since_last_write", &[]).unwrap();
    assert!((0.0..60.0).contains(&since), "{since}");

    // When the candidate's /metrics is scraped
    let body = get(h1, "/metrics").body;
    let m1 = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    // Then it has never written: NaN seconds since its last write
    assert_eq!(
        sample(&m1, "election_state", &[("state", "attempter")]),
        Some(1.0)
    );
    assert!(
        sample(&m1, "election_seconds_since_last_write", &[])
            .unwrap()
            .is_nan()
    );
    assert_eq!(
        sample(&m1, "election_leadership_acquisitions_total", &[]),
        Some(0.0)
    );
    g.stop_all();
    g.assert_invariants();
}

/// Runs `election release` against `admin`, bounded by the client's own
/// `--timeout`.
fn release(admin: SocketAddr) -> Output {
    Command::new(env!("CARGO_BIN_EXE_election"))
        .args([
            "release",
            "--admin-addr",
            &admin.to_string(),
            "--timeout",
            "20s",
        ])
        .output()
        .expect("run `election release`")
}

#[test]
fn release_hands_leadership_over_and_the_released_daemon_waits_for_sigterm() {
    // Given a leader r0 and a ready candidate r1, each with an admin listener
    let zk = ZkCluster::standalone();
    let (mut g, [h0, a0, h1, _a1]) = leader_and_candidate(&zk);

    // When the preStop hook runs `election release` against the leader
    let out = release(a0);
    // Then it exits 0 once the leader has left the election
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        g.logs()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("released"));
    let s0 = status(h0).expect("the released daemon still serves /status");
    assert_eq!(s0["state"], "stopping", "{s0}");
    assert_eq!(s0["released"], true, "{s0}");
    assert_eq!(get(h0, "/readyz").status, 503);
    // And the candidate takes over
    assert_eq!(g.wait_leader_other_than(0, ELECTION), 1);
    wait_state(h1, "leader", &g);
    // And the released daemon stays up, idle, while r1 writes files
    let r0 = g.replica(0);
    assert!(
        r0.wait_for_line("released; waiting for SIGTERM", ELECTION)
            .is_some(),
        "{}",
        g.logs()
    );
    let by_r1 = |g: &Group| g.records().iter().filter(|r| r.node_id == "r1").count();
    assert!(
        wait_until(ELECTION, POLL, || by_r1(&g) >= 5),
        "{}",
        g.logs()
    );
    assert!(r0.is_running(), "{}", g.logs());
    assert_eq!(status(h0).unwrap()["state"], "stopping");

    // When the SIGTERM that follows the hook arrives
    r0.signal(libc::SIGTERM);
    // Then it exits 0
    let exit = r0
        .wait_exit(EXIT)
        .expect("the released daemon exits on SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", g.logs());
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn release_without_a_daemon_fails_with_a_clear_error() {
    // Given nothing listening on an admin address
    let admin = loopback();
    // When `election release` runs against it
    let out = release(admin);
    // Then it fails and says what it could not reach
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the daemon's admin listener at {admin}"
        )),
        "{stderr}"
    );
}

#[test]
fn the_admin_listener_refuses_a_non_loopback_address() {
    for address in ["0.0.0.0:8081", "[::]:8081", "192.0.2.1:8081"] {
        // Given a non-loopback --admin-addr
        let dir = tempfile::tempdir().unwrap();
        let zk = loopback().to_string();
        // When the daemon starts
        let replica = Replica::spawn(
            &[
                "run",
                "--zk-servers",
                &zk,
                "--file-dir",
                dir.path().to_str().unwrap(),
                "--http-addr",
                "off",
                "--admin-addr",
                address,
            ],
            &[],
        );
        // Then it refuses to run: exit code 2 and a message naming the flag
        let exit = replica.wait_exit(EXIT).expect("exits at once");
        let output = replica.output();
        assert_eq!(exit.code(), Some(2), "{address}: {output}");
        assert!(
            output.contains("--admin-addr") && output.contains("not a loopback address"),
            "{address}: {output}"
        );
        assert!(!output.contains("starting"), "{address}: {output}");
    }
}

#[test]
fn release_says_so_when_zookeeper_did_not_acknowledge_the_close() {
    // Given a leader whose only link to ZooKeeper goes through a proxy
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let mut g = Group::new(&proxy.addr().to_string());
    let (h0, a0) = (loopback(), loopback());
    spawn_with_listeners(&mut g, h0, a0);
    g.wait_leader(ELECTION);
    // When the link goes silent and the preStop hook runs `election release`
    proxy.set_mode(Mode::Blackhole);
    let out = release(a0);
    // Then the hook fails and says why, instead of claiming a release that
    // did not happen (the node stays until the session expires)
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}\n{}", g.logs());
    assert!(
        stderr.contains("did not acknowledge the session close"),
        "{stderr}"
    );
    let s0 = status(h0).expect("the daemon still serves /status");
    assert_eq!(s0["released"], false, "{s0}");
    g.stop_all();
}
