//! The daemon's HTTP endpoints (/healthz, /readyz, /status, /metrics) and
//! `election release`, over real sockets against real daemon processes
//! and a real ZooKeeper.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use common::group::Group;
use common::kube_api::{HttpAnswer, http_get};
use common::proxy::{FaultProxy, Mode};
use common::replica::Replica;
use common::zk::ZkCluster;
use common::{free_port, wait_until};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
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

/// A parsed `/metrics` answer.
type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// Reads `text` with a strict parser of the Prometheus text format 0.0.4
/// (a grammar: valid names, quoted and escaped label values, float values;
/// at most one HELP and TYPE per family, before its samples; the lines of a
/// family contiguous; no series repeated; one label set per family), plus
/// what the format leaves to conventions: every sample belongs to a family
/// announced by `# TYPE`, and counters end with `_total`.
fn parse_exposition(text: &str) -> Exposition {
    let exposition = parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    for (name, family) in &exposition.families {
        match family.family_type {
            PrometheusType::Unknown => panic!("{name} has no TYPE\n{text}"),
            PrometheusType::Counter => assert!(name.ends_with("_total"), "{name}\n{text}"),
            _ => {}
        }
    }
    exposition
}

/// The type of family `name`, if served.
fn family_type(m: &Exposition, name: &str) -> Option<PrometheusType> {
    m.families.get(name).map(|f| f.family_type.clone())
}

/// The label sets and values of the samples of family `name`.
fn samples(m: &Exposition, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let Some(family) = m.families.get(name) else {
        return Vec::new();
    };
    family
        .iter_samples()
        .map(|s| {
            let labels = s.get_labelset().expect("a parsed sample has label names");
            let labels = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let value = match &s.value {
                PrometheusValue::Counter(c) => c.value.as_f64(),
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                other => panic!("{name}: unexpected {other:?}"),
            };
            (labels, value)
        })
        .collect()
}

/// The one sample of family `name` with exactly `labels`.
fn sample(m: &Exposition, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(m, name)
        .into_iter()
        .find(|(l, _)| *l == want)
        .map(|(_, v)| v)
}

#[test]
fn metrics_are_valid_prometheus_text_with_every_required_family() {
    // Given a leader that has written a few files, and a candidate
    let zk = ZkCluster::standalone();
    let (mut g, [h0, _a0, h1, _a1]) = leader_and_candidate(&zk);
    // (A file is visible once renamed, and counted just after: the fourth
    // file on disk means the third write has been counted.)
    assert!(wait_until(ELECTION, POLL, || g.records().len() >= 4));

    // When the leader's /metrics is scraped
    let answer = get(h0, "/metrics");
    // Then it is Prometheus text that a strict reader accepts
    assert_eq!(answer.status, 200);
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let m = parse_exposition(&answer.body);
    // And every required family is there, with its type
    for (family, kind) in [
        ("election_build_info", PrometheusType::Gauge),
        ("election_state", PrometheusType::Gauge),
        ("election_is_leader", PrometheusType::Gauge),
        ("election_transitions_total", PrometheusType::Counter),
        (
            "election_leadership_acquisitions_total",
            PrometheusType::Counter,
        ),
        ("election_files_written_total", PrometheusType::Counter),
        ("election_write_errors_total", PrometheusType::Counter),
        ("election_writes_fenced_total", PrometheusType::Counter),
        ("election_prune_errors_total", PrometheusType::Counter),
        (
            "election_zk_connect_attempts_total",
            PrometheusType::Counter,
        ),
        ("election_zk_session_events_total", PrometheusType::Counter),
        ("election_seconds_since_last_write", PrometheusType::Gauge),
        ("election_kube_patches_total", PrometheusType::Counter),
        ("election_kube_patch_errors_total", PrometheusType::Counter),
        ("election_fencing_token", PrometheusType::Gauge),
    ] {
        assert_eq!(
            family_type(&m, family),
            Some(kind),
            "{family} in\n{}",
            answer.body
        );
    }
    // And the values say: leader, one leadership, files written, no errors
    let states = samples(&m, "election_state");
    assert_eq!(states.len(), 5, "{states:?}");
    for state in ["init", "attempter", "leader", "failover", "stopping"] {
        let expected = if state == "leader" { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&m, "election_state", &[("state", state)]),
            Some(expected),
            "{state}"
        );
    }
    let transition = |m: &Exposition, from, to| {
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
    let session_events = samples(&m, "election_zk_session_events_total");
    assert!(
        session_events
            .iter()
            .all(|(l, v)| l.contains_key("state") && *v >= 1.0),
        "{session_events:?}"
    );
    assert!(!session_events.is_empty());
    let since = sample(&m, "election_seconds_since_last_write", &[]).unwrap();
    assert!((0.0..60.0).contains(&since), "{since}");
    assert_eq!(sample(&m, "election_is_leader", &[]), Some(1.0));
    assert!(sample(&m, "election_fencing_token", &[]).is_some_and(|t| t > 0.0));
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(sample(&m, "election_build_info", &version), Some(1.0));

    // When the candidate's /metrics is scraped
    let body = get(h1, "/metrics").body;
    let m1 = parse_exposition(&body);
    // Then it has never written (NaN seconds since its last write) and
    // holds no fencing token
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
    assert_eq!(sample(&m1, "election_is_leader", &[]), Some(0.0));
    assert_eq!(sample(&m1, "election_fencing_token", &[]), Some(0.0));
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
