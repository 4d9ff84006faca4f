//! The daemon labels its own Pod: against a fake API server that speaks
//! the Pod API and fails on purpose, with a real ZooKeeper and daemon
//! processes of the built binary.
//!
//! Only what a real API server cannot be made to do on demand lives here
//! (answer 500 or 409, hang, drop connections, be absent, and prove that
//! no request arrives). The labels on a real control plane (one leader,
//! the others attempter, annotations, `stopping` after a stop, the
//! ServiceAccount's RBAC, the admission policy, Events, the stale-label
//! correction and the Lease mirror) are checked by `scripts/e2e-k8s.sh`;
//! here only that those helpers never hold the election up when the API
//! server hangs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::group::{Group, TRANSITIONS};
use common::kube_api::{ApiMode, FakeApi};
use common::observe::{self, metrics};
use common::replica::Replica;
use common::zk::ZkCluster;
use common::{free_port, wait_until};
use rstest::rstest;

/// Namespace of the test Pods.
const NS: &str = "election-test";
/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(50);
/// Bound on anything that takes a ZooKeeper session or a takeover.
const ELECTION: Duration = Duration::from_secs(30);
/// Bound on a daemon exiting after SIGTERM.
const EXIT: Duration = Duration::from_secs(15);
/// The short bound a hanging API server may add to a stop: the daemon
/// waits at most 2 s for the `stopping` label and 1 s for its Events,
/// plus 4 s of slack for a loaded machine.
const HUNG_STOP: Duration = Duration::from_secs(7);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Makes the next replicas spawned by `g` label Pod `pod` through `api`,
/// and serve HTTP on `http`.
fn label_as(g: &mut Group, api: &FakeApi, pod: &str, http: SocketAddr) {
    g.extra = vec![
        "--pod-name".into(),
        pod.into(),
        "--pod-namespace".into(),
        NS.into(),
        "--http-addr".into(),
        http.to_string(),
    ];
    g.env = vec![(
        "KUBECONFIG".into(),
        api.kubeconfig(NS).display().to_string(),
    )];
}

/// The value of the unlabelled metric `name` on the replica's /metrics, if
/// it answers.
fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    metrics(http).map(|m| m.sum(name, &[]))
}

/// How many times the replica at `http` went to Failover (0 if its
/// listener does not answer: callers check it answered before).
fn failovers(http: SocketAddr) -> Option<f64> {
    metrics(http).map(|m| m.sum(TRANSITIONS, &[("to", "failover")]))
}

/// The labels of `pod` with a leading `init` dropped: whether the `init`
/// patch lands before the daemon moves on is a race the labeller is
/// allowed to lose (it sends the latest state only).
fn labels_after_init(api: &FakeApi, pod: &str) -> Vec<String> {
    let mut labels = api.labels_of(NS, pod);
    if labels.first().is_some_and(|l| l == "init") {
        labels.remove(0);
    }
    labels
}

fn wait_label(api: &FakeApi, pod: &str, label: &str, g: &Group) {
    let ok = wait_until(ELECTION, POLL, || {
        api.last_label(NS, pod).as_deref() == Some(label)
    });
    assert!(
        ok,
        "{pod} never labelled {label}: {:?}\n{}",
        api.labels_of(NS, pod),
        g.logs()
    );
}

/// Stops replica `i` with SIGTERM; it must exit 0. Returns how long that took.
fn stop(g: &mut Group, i: usize) -> Duration {
    let replica = g.replica(i);
    let asked = std::time::Instant::now();
    replica.signal(libc::SIGTERM);
    let status = replica
        .wait_exit(EXIT)
        .expect("the replica exits after SIGTERM");
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{}", g.logs());
    took
}

/// One replica labelling Pod election-0 through an API server that fails
/// in `mode`: the election goes on, the failures are counted, and the
/// current state is patched once the API server answers again.
#[rstest]
#[case::answering_500(ApiMode::Fail500)]
#[case::answering_409(ApiMode::Conflict409)]
#[case::hanging(ApiMode::Hang)]
#[case::dropping_connections(ApiMode::CloseConnection)]
fn the_election_goes_on_while_the_api_server_fails(#[case] mode: ApiMode) {
    // Given an API server failing in `mode`
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    api.set_mode(mode);
    // When a replica that labels its Pod runs
    let mut g = Group::new(&zk.connect_string());
    let http = loopback();
    label_as(&mut g, &api, "election-0", http);
    g.spawn(1);
    // Then it leads and writes files, while its patches fail and are counted
    assert_eq!(g.wait_leader(ELECTION), 0);
    let ok = wait_until(ELECTION, POLL, || {
        g.records().len() >= 5
            && metric(http, "election_kube_patch_errors_total").is_some_and(|v| v > 0.0)
    });
    assert!(
        ok,
        "{mode:?}: files {}, patch errors {:?}\n{}",
        g.records().len(),
        metric(http, "election_kube_patch_errors_total"),
        g.logs()
    );
    assert!(
        !api.requests_for(NS, "election-0").is_empty(),
        "the errors come from the API server"
    );

    // When the API server answers again
    api.set_mode(ApiMode::Ok);
    // Then the current state, `leader`, is patched (within the longest
    // backoff, 30 s, plus one bounded call)
    let ok = wait_until(Duration::from_secs(60), POLL, || {
        api.last_label(NS, "election-0").as_deref() == Some("leader")
    });
    assert!(
        ok,
        "{mode:?}: {:?}\n{}",
        api.labels_of(NS, "election-0"),
        g.logs()
    );
    assert_eq!(
        api.pod(NS, "election-0").unwrap()["metadata"]["labels"]["election-state"],
        "leader"
    );
    // And the outage changed nothing in the election: one leadership, no
    // Failover, files all along
    assert_eq!(
        metric(http, "election_leadership_acquisitions_total"),
        Some(1.0),
        "{}",
        g.logs()
    );
    assert_eq!(failovers(http), Some(0.0), "{}", g.logs());
    assert!(metric(http, "election_kube_patches_total").is_some_and(|v| v >= 1.0));
    stop(&mut g, 0);
    g.assert_invariants();
}

#[test]
fn a_candidate_is_labelled_once_the_api_server_recovers() {
    // Given a leader r0 that labels nothing, and an API server answering 500
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    let mut g = Group::new(&zk.connect_string());
    g.spawn(1);
    assert_eq!(g.wait_leader(ELECTION), 0);
    api.set_mode(ApiMode::Fail500);
    // And r1, labelling election-1, settled as a candidate (a state in
    // which nothing else changes) after some failed patches
    let http = loopback();
    label_as(&mut g, &api, "election-1", http);
    g.spawn(1);
    let ok = wait_until(ELECTION, POLL, || {
        observe::status(http).is_some_and(|s| s.state == "attempter")
            && metric(http, "election_kube_patch_errors_total").is_some_and(|v| v > 0.0)
    });
    assert!(ok, "{}", g.logs());
    // When the API server answers again
    api.set_mode(ApiMode::Ok);
    // Then the failed patch is retried: election-1 says `attempter`
    wait_label(&api, "election-1", "attempter", &g);
    assert_eq!(labels_after_init(&api, "election-1"), ["attempter"]);
    g.stop_all();
    g.assert_invariants();
}

#[test]
fn a_hanging_api_server_delays_a_stop_by_a_short_bound_only() {
    // Given a labelled leader whose API server starts hanging
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    let mut g = Group::new(&zk.connect_string());
    label_as(&mut g, &api, "election-0", loopback());
    g.spawn(1);
    g.wait_leader(ELECTION);
    wait_label(&api, "election-0", "leader", &g);
    api.set_mode(ApiMode::Hang);
    // When it gets SIGTERM
    let took = stop(&mut g, 0);
    // Then it tried to say `stopping`, gave up after its bound, and exited 0
    assert!(took < HUNG_STOP, "stopped in {took:?}\n{}", g.logs());
    let replica = g.replica(0);
    let stopping_tried = api
        .requests_for(NS, "election-0")
        .iter()
        .any(|r| r.mode == ApiMode::Hang && r.state_label() == Some("stopping"));
    assert!(stopping_tried, "{:?}", api.requests());
    assert!(
        replica
            .output()
            .contains("could not label the Pod `stopping` in time"),
        "{}",
        g.logs()
    );
    g.assert_invariants();
}

#[test]
fn without_a_pod_name_nothing_reaches_the_api_server() {
    // Given a kubeconfig for the fake API server in the environment of r0,
    // which has no --pod-name
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(NS);
    let mut g = Group::new(&zk.connect_string());
    g.env = vec![("KUBECONFIG".into(), kubeconfig.display().to_string())];
    g.spawn(1);
    assert_eq!(g.wait_leader(ELECTION), 0);
    // And, to show the API server is reachable with that kubeconfig, r1
    // with a --pod-name, which patches its Pod
    label_as(&mut g, &api, "election-1", loopback());
    g.spawn(1);
    wait_label(&api, "election-1", "attempter", &g);
    // When r0 keeps leading for several files, then stops
    let written = g.records().len();
    let ok = wait_until(ELECTION, POLL, || g.records().len() >= written + 5);
    assert!(ok, "{}", g.logs());
    stop(&mut g, 0);
    wait_label(&api, "election-1", "leader", &g);
    g.stop_all();
    // Then every request came from r1, about its own Pod (its patches, and
    // the Events it posts about it)
    let requests = api.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        if r.path.starts_with("/apis/events.k8s.io/") {
            assert_eq!(r.body["reportingInstance"], "election-1", "{}", r.body);
            assert_eq!(r.body["regarding"]["name"], "election-1", "{}", r.body);
            continue;
        }
        assert!(r.is_for(NS, "election-1"), "{} {}", r.method, r.path);
        assert_eq!(r.annotation("node-id"), Some("r1"), "{}", r.body);
    }
    g.assert_invariants();
}

#[test]
fn the_pod_is_labelled_while_zookeeper_is_unreachable() {
    // Given a fake API server and no ZooKeeper (nothing listens there)
    let api = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let zk = loopback();
    let file_dir = dir.path().join("files");
    let kubeconfig = api.kubeconfig(NS);
    // When a replica with a pod identity starts
    let replica = Replica::spawn(
        &[
            "run",
            "--zk-servers",
            &zk.to_string(),
            "--file-dir",
            file_dir.to_str().unwrap(),
            "--http-addr",
            "off",
            "--admin-addr",
            "off",
            "--pod-name",
            "election-0",
            "--pod-namespace",
            NS,
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    // Then its Pod is labelled even though it never gets a session: with
    // `init` or `failover`, never a ready state
    let ok = wait_until(ELECTION, POLL, || {
        api.last_label(NS, "election-0").is_some()
    });
    assert!(ok, "{}", replica.output());
    for label in api.labels_of(NS, "election-0") {
        assert!(["init", "failover"].contains(&label.as_str()), "{label}");
    }
    replica.signal(libc::SIGTERM);
    let status = replica.wait_exit(EXIT).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", replica.output());
    assert_eq!(
        api.last_label(NS, "election-0").as_deref(),
        Some("stopping")
    );
}

#[test]
fn events_the_lease_mirror_and_the_stale_label_search_never_hold_up_the_election() {
    // Given an API server that hangs on every call, and a replica with every
    // Kubernetes helper on (Events, stale-label search, Lease mirror)
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    api.set_mode(ApiMode::Hang);
    let mut g = Group::new(&zk.connect_string());
    let http = loopback();
    label_as(&mut g, &api, "election-0", http);
    g.extra.extend(
        [
            "--pod-uid",
            "uid-0",
            "--pod-selector",
            "app=election",
            "--lease-name",
            "election",
        ]
        .map(String::from),
    );
    g.spawn(1);
    // When it leads for a while
    assert_eq!(g.wait_leader(ELECTION), 0);
    let ok = wait_until(ELECTION, POLL, || g.records().len() >= 10);
    assert!(ok, "{}", g.logs());
    // Then the helpers did try (their calls hang), and the election went on
    // without a Failover
    let ok = wait_until(ELECTION, POLL, || {
        let paths: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
        paths.iter().any(|p| p.contains("/leases/"))
            && paths.iter().any(|p| p.ends_with("/pods"))
            && paths.iter().any(|p| p.contains("events.k8s.io"))
    });
    assert!(
        ok,
        "{:?}",
        api.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(failovers(http), Some(0.0), "{}", g.logs());
    // And a stop is held up by the short label bound only
    let took = stop(&mut g, 0);
    assert!(took < HUNG_STOP, "stopped in {took:?}\n{}", g.logs());
    g.assert_invariants();
}
