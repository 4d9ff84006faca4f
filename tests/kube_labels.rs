//! The daemon labels its own Pod: against a fake API server that speaks
//! the Pod API and fails on purpose, with a real ZooKeeper and daemon
//! processes of the built binary.
//!
//! Only what a real API server cannot be made to do on demand lives here
//! (answer 500, 403 or 409 to one call, hang, drop connections, and the
//! requests themselves: that one does not arrive, what a body carries);
//! each test says which it needs. The labels on a real control plane (one
//! leader, the others attempter, annotations, `stopping` after a stop, the
//! ServiceAccount's RBAC, the admission policy, Events, the stale-label
//! correction of a killed leader, the Lease mirror, and the labels and
//! Events while ZooKeeper is down) are checked by `scripts/e2e-k8s.sh`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::group::{Group, TRANSITIONS};
use common::kube_api::{ApiMode, FakeApi, lease_path, pod_path};
use common::observe::{self, metrics};
use common::zk::ZkCluster;
use common::{free_port, wait_until};
use rstest::rstest;
use serde_json::json;

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

/// Needs the fake: 500s, 409s, hangs and dropped connections on demand.
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

/// Needs the fake: an API server that answers 500 for a while.
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

/// Needs the fake: an API server that hangs.
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

/// Needs the fake: proof that no request arrives from r0.
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

/// Needs the fake: an API server that hangs.
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

/// The selector of the election's Pods in these tests.
const SELECTOR: &str = "app=election";

/// Makes `g`'s next replica election-0, with the stale-label search on
/// (and its Pod carrying the selector's label, as the chart's Pods do).
fn lead_as_election_0(g: &mut Group, api: &FakeApi) -> SocketAddr {
    let http = loopback();
    api.put_pod(NS, "election-0", json!({"labels": {"app": "election"}}));
    label_as(g, api, "election-0", http);
    g.extra
        .extend(["--pod-selector", SELECTOR].map(String::from));
    http
}

/// ZooKeeper, the fake API server holding `siblings` (pod, fencing
/// token, state-since) labelled leader by daemons that are gone, and a
/// Group whose next replica is election-0 with `flags` (see
/// [`lead_as_election_0`]); its HTTP address. [`lead`] starts it.
fn election_0_with(
    siblings: &[(&str, &str, &str)],
    flags: &[&str],
) -> (ZkCluster, FakeApi, Group, SocketAddr) {
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    for (pod, token, since) in siblings {
        stale_sibling(&api, pod, token, since);
    }
    let mut g = Group::new(&zk.connect_string());
    let http = lead_as_election_0(&mut g, &api);
    g.extra.extend(flags.iter().map(|f| f.to_string()));
    (zk, api, g, http)
}

/// Starts election-0 and waits until it leads.
fn lead(g: &mut Group) {
    g.spawn(1);
    assert_eq!(g.wait_leader(ELECTION), 0);
}

/// A sibling of a lower token than any leadership here, gone years ago.
const STALE: (&str, &str, &str) = ("election-1", "0", "2020-01-01T00:00:00Z");

/// Puts sibling `pod` in the fake, labelled leader by a daemon that is
/// gone: with fencing token `token` and `state-since` `since`.
fn stale_sibling(api: &FakeApi, pod: &str, token: &str, since: &str) {
    api.put_pod(
        NS,
        pod,
        json!({
            "labels": {"app": "election", "election-state": "leader"},
            "annotations": {"election/fencing-token": token, "election/state-since": since},
        }),
    );
}

/// The label selector lists (`GET .../pods?labelSelector=...`) so far.
fn lists(api: &FakeApi) -> usize {
    let path = format!("/api/v1/namespaces/{NS}/pods");
    api.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path && r.status == Some(200))
        .count()
}

/// Waits until the leader has listed the leader-labelled Pods `n` more times.
fn wait_lists(api: &FakeApi, n: usize, g: &Group) {
    let before = lists(api);
    // One list per 5 s while leading: n of them take 5n s, plus slack for
    // a loaded machine (a fixed 30 s was all of 6 lists' own time).
    let within = Duration::from_secs(5 * n as u64 + 15);
    let ok = wait_until(within, POLL, || lists(api) >= before + n);
    assert!(ok, "{} lists\n{}", lists(api), g.logs());
}

/// Needs the fake: a sibling's annotations that no live daemon would
/// write (a token from the future, a clock years off), and proof that no
/// patch of it arrives.
#[test]
fn stale_labels_are_decided_by_fencing_token_whatever_the_clocks_say() {
    // Given two siblings labelled leader: election-1 with a token far above
    // any this ZooKeeper will hand out, but a start years ago (its clock
    // lags); election-2 with a lower token than ours, but a start in the
    // future (its clock runs ahead)
    let (_zk, api, mut g, _) = election_0_with(
        &[
            ("election-1", "999999999999", "2020-01-01T00:00:00Z"),
            ("election-2", "0", "2999-01-01T00:00:00Z"),
        ],
        &[],
    );
    // When election-0 leads and looks for stale labels twice
    lead(&mut g);
    wait_label(&api, "election-0", "leader", &g);
    let ok = wait_until(ELECTION, POLL, || {
        api.pod(NS, "election-2").unwrap()["metadata"]["labels"]["election-state"] == "stale"
    });
    assert!(ok, "{:?}\n{}", api.pod(NS, "election-2"), g.logs());
    wait_lists(&api, 2, &g);
    // Then the higher token is left alone: no patch of election-1 at all
    assert!(
        api.requests_for(NS, "election-1").is_empty(),
        "{:?}",
        api.requests_for(NS, "election-1")
    );
    assert_eq!(
        api.pod(NS, "election-1").unwrap()["metadata"]["labels"]["election-state"],
        "leader"
    );
    // And the lower one got the one patch the admission policy admits: the
    // label only, conditional on the resourceVersion the list showed
    let patches = api.requests_for(NS, "election-2");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0].body,
        json!({"metadata": {"resourceVersion": "2", "labels": {"election-state": "stale"}}})
    );
    g.stop_all();
    g.assert_invariants();
}

/// Needs the fake: a 409 on the one conditional patch, on demand.
#[test]
fn a_conflict_on_the_conditional_patch_overwrites_nothing() {
    // Given a sibling labelled leader with a lower token, whose patches the
    // API server refuses with 409 (as when the sibling relabelled itself
    // after the list)
    let (_zk, api, mut g, _) = election_0_with(&[STALE], &["--pod-uid", "uid-0"]);
    api.answer("PATCH", &pod_path(NS, "election-1"), 409);
    // When election-0 leads and looks for stale labels three times
    lead(&mut g);
    let ok = wait_until(ELECTION, POLL, || {
        !api.requests_for(NS, "election-1").is_empty()
    });
    assert!(ok, "{}", g.logs());
    wait_lists(&api, 2, &g);
    g.stop_all();
    // Then every patch of the sibling was the conditional one, answered
    // 409, one per list at most: no retry without the precondition
    let patches = api.requests_for(NS, "election-1");
    assert!(!patches.is_empty());
    for p in &patches {
        assert_eq!(p.method, "PATCH");
        assert_eq!(p.status, Some(409), "{p:?}");
        assert_eq!(
            p.body,
            json!({"metadata": {"resourceVersion": "2", "labels": {"election-state": "stale"}}})
        );
    }
    assert!(patches.len() <= lists(&api), "{patches:?}");
    // And nothing was overwritten, nothing counted, no Event claims it
    assert_eq!(
        api.pod(NS, "election-1").unwrap()["metadata"]["labels"]["election-state"],
        "leader"
    );
    let stale_events = api
        .requests()
        .into_iter()
        .filter(|r| r.body["reason"] == "StaleLabelCorrected")
        .count();
    assert_eq!(stale_events, 0);
    g.assert_invariants();
}

/// Needs the fake: the second PATCH of our own Pod is a request to inspect
/// (and the relabelling is done inside the fake, at a known moment).
#[test]
fn a_leader_whose_pod_was_relabelled_labels_it_leader_again() {
    // Given election-0 leading, its Pod labelled leader
    let (_zk, api, mut g, http) = election_0_with(&[], &[]);
    lead(&mut g);
    wait_label(&api, "election-0", "leader", &g);
    let leader_patches = || {
        api.requests_for(NS, "election-0")
            .iter()
            .filter(|r| r.status == Some(200) && r.state_label() == Some("leader"))
            .count()
    };
    let before = leader_patches();
    // When something else relabels its Pod `stale`
    api.put_pod(
        NS,
        "election-0",
        json!({"labels": {"election-state": "stale"}}),
    );
    // Then the next list of leader-labelled Pods misses it, and the leader
    // patches `leader` again, without any transition
    let ok = wait_until(ELECTION, POLL, || leader_patches() > before);
    assert!(ok, "{:?}\n{}", api.requests_for(NS, "election-0"), g.logs());
    assert_eq!(
        api.pod(NS, "election-0").unwrap()["metadata"]["labels"]["election-state"],
        "leader"
    );
    assert!(metric(http, "election_kube_label_resends_total").is_some_and(|n| n >= 1.0));
    assert_eq!(
        metric(http, "election_leadership_acquisitions_total"),
        Some(1.0)
    );
    g.stop_all();
    g.assert_invariants();
}

/// Needs the fake: proof that no Event request arrives.
#[test]
fn with_pod_events_off_no_event_is_posted() {
    // Given election-0 with Events off, and a stale sibling it will relabel
    let (_zk, api, mut g, _) =
        election_0_with(&[STALE], &["--pod-uid", "uid-0", "--pod-events", "false"]);
    // When it leads, corrects the sibling, and stops
    lead(&mut g);
    let ok = wait_until(ELECTION, POLL, || {
        api.pod(NS, "election-1").unwrap()["metadata"]["labels"]["election-state"] == "stale"
    });
    assert!(ok, "{}", g.logs());
    let took = stop(&mut g, 0);
    // Then its transitions and the correction went to the Pods only: no
    // Event was posted, none failed, and the stop waited for none
    let events: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("events"))
        .map(|r| r.path)
        .collect();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        api.last_label(NS, "election-0").as_deref(),
        Some("stopping")
    );
    assert!(took < HUNG_STOP, "{took:?}");
    g.assert_invariants();
}

/// The requests about Events with reason `reason`, as (method, status).
fn event_requests(api: &FakeApi, reason: &str) -> Vec<(String, Option<u16>)> {
    api.requests()
        .into_iter()
        .filter(|r| r.path.contains("/events") && r.body["reason"] == reason)
        .map(|r| (r.method, r.status))
        .collect()
}

/// Needs the fake: the requests themselves (a POST, then a PATCH, not a
/// second POST); the e2e shows the series of repeated Failover Events on a
/// real API server.
#[test]
fn a_repeated_event_becomes_one_event_with_a_series_count() {
    // Given election-0 leading, and a stale sibling it relabels, which
    // posts StaleLabelCorrected on the sibling
    let (_zk, api, mut g, _) = election_0_with(&[STALE], &["--pod-uid", "uid-0"]);
    lead(&mut g);
    let ok = wait_until(ELECTION, POLL, || {
        event_requests(&api, "StaleLabelCorrected") == [("POST".into(), Some(201))]
    });
    assert!(
        ok,
        "{:?}\n{}",
        event_requests(&api, "StaleLabelCorrected"),
        g.logs()
    );
    let first = api.events(NS);
    // When the sibling claims to lead again with the same stale token, and
    // is relabelled again: the same reason and note on the same Pod
    stale_sibling(&api, STALE.0, STALE.1, STALE.2);
    let ok = wait_until(ELECTION, POLL, || {
        event_requests(&api, "StaleLabelCorrected").len() == 2
    });
    assert!(ok, "{}", g.logs());
    g.stop_all();
    // Then the repeat was a PATCH of the first Event, not a second object
    assert_eq!(
        event_requests(&api, "StaleLabelCorrected"),
        [("POST".into(), Some(201)), ("PATCH".into(), Some(200))]
    );
    let stale: Vec<_> = api
        .events(NS)
        .into_iter()
        .filter(|e| e["reason"] == "StaleLabelCorrected")
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    let ev = &stale[0];
    let was = first
        .iter()
        .find(|e| e["reason"] == "StaleLabelCorrected")
        .unwrap();
    // And that Event counts two in its series, keeps its name and note,
    // and names the sibling, reported by election-0
    assert_eq!(ev["series"]["count"], 2, "{ev}");
    assert!(ev["series"]["lastObservedTime"].is_string(), "{ev}");
    assert_eq!(ev["metadata"]["name"], was["metadata"]["name"]);
    assert_eq!(ev["note"], was["note"]);
    assert!(
        ev["note"].as_str().unwrap().contains("fencing token 0 <"),
        "{ev}"
    );
    assert_eq!(ev["regarding"]["name"], "election-1");
    assert_eq!(ev["reportingController"], "election.zookeeper/daemon");
    assert_eq!(ev["reportingInstance"], "election-0");
    // And the Events of its own transitions are one object per reason
    let own: Vec<_> = api
        .events(NS)
        .into_iter()
        .filter(|e| e["regarding"]["name"] == "election-0")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(own.contains(&"BecameLeader".to_owned()), "{own:?}");
    let mut unique = own.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), own.len(), "{own:?}");
    g.assert_invariants();
}

/// Needs the fake: the body of the PUT (what a real server stores is
/// checked by the e2e; that the labels came from the daemon's own body is
/// not visible there).
#[test]
fn the_lease_mirror_updates_the_charts_lease_and_keeps_its_labels() {
    // Given the Lease the chart renders: its release labels, no holder
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    let labels =
        json!({"app.kubernetes.io/instance": "rel", "app.kubernetes.io/managed-by": "Helm"});
    api.put_lease(
        NS,
        "election",
        json!({"metadata": {"labels": labels}, "spec": {}}),
    );
    // When election-0 leads with the mirror on
    let mut g = Group::new(&zk.connect_string());
    label_as(&mut g, &api, "election-0", loopback());
    g.extra
        .extend(["--lease-name", "election"].map(String::from));
    g.spawn(1);
    assert_eq!(g.wait_leader(ELECTION), 0);
    let path = lease_path(NS, "election");
    let put = || {
        api.requests()
            .into_iter()
            .find(|r| r.method == "PUT" && r.path == path && r.status == Some(200))
    };
    let ok = wait_until(ELECTION, POLL, || put().is_some());
    assert!(ok, "{:?}\n{}", api.requests(), g.logs());
    // Then it updated the Lease it found, labels kept, holder set; it
    // created none
    let body = put().unwrap().body;
    assert_eq!(body["metadata"]["labels"], labels, "{body}");
    assert_eq!(body["metadata"]["resourceVersion"], "1", "{body}");
    assert_eq!(body["spec"]["holderIdentity"], "election-0", "{body}");
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.contains("leases"))
    );
    assert_eq!(
        api.lease(NS, "election").unwrap()["metadata"]["labels"],
        labels
    );
    g.stop_all();
    g.assert_invariants();
}

/// Needs the fake: a Lease that is absent while its creation is refused
/// (the chart always renders the Lease, so the e2e never sees this).
#[test]
fn a_refused_lease_creation_is_reported_once_and_the_lease_read_until_it_exists() {
    // Given no Lease, and an API server that refuses to create one (403)
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    let create = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
    api.answer("POST", &create, 403);
    // When election-0 leads with the mirror on for three renewals
    let mut g = Group::new(&zk.connect_string());
    let http = loopback();
    label_as(&mut g, &api, "election-0", http);
    g.extra
        .extend(["--lease-name", "election"].map(String::from));
    g.spawn(1);
    assert_eq!(g.wait_leader(ELECTION), 0);
    let path = lease_path(NS, "election");
    let gets = || {
        api.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .count()
    };
    let ok = wait_until(ELECTION, POLL, || gets() >= 3);
    assert!(ok, "{:?}\n{}", api.requests(), g.logs());
    // Then it tried to create it once, said so once, counted it, and only
    // read the Lease afterwards; the election went on
    let posts = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == create)
        .count();
    assert_eq!(posts, 1);
    let out = g.replica(0).output();
    assert_eq!(
        out.matches("cannot create the lease mirror").count(),
        1,
        "{out}"
    );
    assert!(!out.contains("cannot write the lease mirror"), "{out}");
    assert!(metric(http, "election_kube_lease_errors_total").is_some_and(|n| n >= 1.0));
    assert_eq!(failovers(http), Some(0.0));
    // And once the Lease exists (the chart applied late), it is updated
    api.put_lease(NS, "election", json!({"spec": {}}));
    let ok = wait_until(ELECTION, POLL, || {
        api.lease(NS, "election").unwrap()["spec"]["holderIdentity"] == "election-0"
    });
    assert!(ok, "{:?}\n{}", api.lease(NS, "election"), g.logs());
    g.stop_all();
    g.assert_invariants();
}

/// Needs the fake: counting the requests that do not come.
#[test]
fn a_selector_that_misses_our_own_pod_costs_a_few_resends_only() {
    // Given election-0 whose own Pod lacks the selector's label (a
    // misconfigured --pod-selector: the leader never sees itself listed)
    let zk = ZkCluster::standalone();
    let api = FakeApi::start();
    let mut g = Group::new(&zk.connect_string());
    let http = loopback();
    label_as(&mut g, &api, "election-0", http);
    g.extra
        .extend(["--pod-selector", SELECTOR].map(String::from));
    g.spawn(1);
    assert_eq!(g.wait_leader(ELECTION), 0);
    wait_label(&api, "election-0", "leader", &g);
    // When it leads for six rounds of the stale-label search
    wait_lists(&api, 6, &g);
    // Then it resent its label three times, said why once, and stopped
    assert_eq!(
        metric(http, "election_kube_label_resends_total"),
        Some(3.0),
        "{}",
        g.logs()
    );
    let out = g.replica(0).output();
    assert_eq!(
        out.matches("does --pod-selector match it").count(),
        1,
        "{out}"
    );
    g.stop_all();
    g.assert_invariants();
}
