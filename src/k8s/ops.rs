//! What `kubectl` shows beyond the Pod label ([`crate::kube`]): Events,
//! the correction of stale sibling labels, and a Lease mirror.
//!
//! Three helper tasks, each like the labeller: fed by the status board,
//! every API call bounded, failures logged and counted, never anything fed
//! back into the election.
//!
//! - **Events** (`events.k8s.io/v1`, `create`): one per transition, on the
//!   replica's own Pod (`BecameLeader`, `LostLeadership`, `SteppedDown`,
//!   `Failover`, `Candidate`, `Reconnecting`, `Stopping`), and
//!   `StaleLabelCorrected` on a sibling the leader relabelled. Posted with a
//!   plain `Api<Event>`: kube-runtime's recorder would add a dependency tree
//!   for what is one `create` call.
//! - **Stale labels** (`list` on pods): a replica killed without a last
//!   patch keeps `election-state=leader`. While leading, the daemon lists
//!   the election's Pods labelled leader; a sibling whose claim
//!   (`election/state-since`) predates the start of its own leadership is
//!   stale, because ZooKeeper has one leader at a time and ours came later.
//!   A claim newer than ours is left alone (then we may be the stale one).
//!   The patch carries the resourceVersion read in the list (a precondition:
//!   409 if the sibling relabelled itself meanwhile), so a live sibling's
//!   fresh label is never overwritten. The label becomes `stale`.
//! - **Lease mirror** (`coordination.k8s.io/v1`): while leading, the daemon
//!   keeps a Lease whose `holderIdentity` is its Pod, `renewTime` renewed
//!   every [`LEASE_RENEW`]. A read-only mirror for tools: nothing in the
//!   election reads it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::KubeError;
use crate::board::{StateName, Transition};
use crate::k8s::labeller::{ANNOTATION_PREFIX, STATE_LABEL, bounded, client};
use crate::machine::Context;

/// Value a stale sibling's `election-state` label is corrected to.
pub const STALE: &str = "stale";
/// How often the leader looks for stale siblings.
const STALE_PERIOD: Duration = Duration::from_secs(5);
/// How often the leader renews the Lease mirror.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// `leaseDurationSeconds` of the mirror: three missed renewals.
const LEASE_SECONDS: i32 = 15;
/// Reporting controller of the Events.
const CONTROLLER: &str = "election.zookeeper/daemon";

/// Which Pod this replica is, as the helper tasks need it.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod uid (Events name their object by uid too).
    pub uid: Option<String>,
}

/// The helper tasks that were started.
pub struct Helpers {
    tasks: Vec<JoinHandle<()>>,
    /// The state entered by the last transition the Events task handled.
    handled: watch::Receiver<Option<StateName>>,
}

impl Helpers {
    /// Starts the tasks the configuration asks for.
    pub fn spawn(ctx: &Context, pod: PodRef) -> Helpers {
        let (tx, handled) = watch::channel(None);
        let mut tasks = vec![tokio::spawn(events(ctx.clone(), pod.clone(), tx))];
        if let Some(selector) = ctx.cfg.pod_selector.clone() {
            tasks.push(tokio::spawn(stale(ctx.clone(), pod.clone(), selector)));
        }
        if let Some(lease) = ctx.cfg.lease_name.clone() {
            tasks.push(tokio::spawn(mirror(ctx.clone(), pod, lease)));
        }
        Helpers { tasks, handled }
    }

    /// Waits (at most `bound`) for the Event of the move to Stopping to be
    /// posted or given up, then stops every task.
    pub async fn finish(mut self, bound: Duration) {
        let done = self.handled.wait_for(|s| *s == Some(StateName::Stopping));
        if tokio::time::timeout(bound, done).await.is_err() {
            debug!(bound = ?bound, "last Events not posted in time");
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Reason, type and whether a transition is worth an Event.
pub fn reason(t: &Transition) -> (&'static str, &'static str) {
    use StateName::*;
    match (t.from, t.to) {
        (_, Leader) => ("BecameLeader", "Normal"),
        (Leader, Stopping) => ("SteppedDown", "Normal"),
        (Leader, _) => ("LostLeadership", "Warning"),
        (_, Failover) => ("Failover", "Warning"),
        (_, Attempter) => ("Candidate", "Normal"),
        (_, Init) => ("Reconnecting", "Normal"),
        (_, Stopping) => ("Stopping", "Normal"),
    }
}

/// An `events.k8s.io/v1` Event about a Pod.
pub fn event_for(pod: &PodRef, regarding: &PodRef, reason: &str, kind: &str, note: &str) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    let suffix = format!("{:x}", now.as_nanosecond());
    let mut note = note.to_owned();
    if note.len() > 1000 {
        let cut = (0..=1000)
            .rev()
            .find(|i| note.is_char_boundary(*i))
            .unwrap_or(0);
        note.truncate(cut);
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("{}.{suffix}", regarding.name), "namespace": regarding.namespace},
        "eventTime": now.to_string(),
        "reportingController": CONTROLLER,
        "reportingInstance": pod.name,
        "action": reason,
        "reason": reason,
        "type": kind,
        "note": note,
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": regarding.name,
            "namespace": regarding.namespace,
            "uid": regarding.uid,
        },
    }))
    .expect("a well-formed Event")
}

async fn post(api: &mut Option<Api<Event>>, ns: &str, ev: &Event) -> Result<(), KubeError> {
    if api.is_none() {
        *api = Some(Api::namespaced(client().await?, ns));
    }
    let api = api.as_ref().expect("set above");
    bounded("event", api.create(&PostParams::default(), ev))
        .await
        .map(|_| ())
}

async fn events(ctx: Context, pod: PodRef, handled: watch::Sender<Option<StateName>>) {
    let mut rx = ctx.board.transitions();
    let mut api = None;
    loop {
        let t = match rx.recv().await {
            Ok(t) => t,
            Err(RecvError::Lagged(n)) => {
                warn!(
                    skipped = n,
                    "transitions came faster than Events could be posted"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let (reason, kind) = reason(&t);
        let note = format!("{} -> {}: {}", t.from, t.to, t.why);
        let ev = event_for(&pod, &pod, reason, kind, &note);
        // Best effort, one attempt: a late Event tells a wrong story.
        match post(&mut api, &pod.namespace, &ev).await {
            Ok(()) => {
                ctx.board.metrics.kube_events.inc();
                debug!(reason, "event posted");
            }
            Err(e) => {
                ctx.board.metrics.kube_event_errors.inc();
                warn!(reason, error = %e, "cannot post event");
            }
        }
        handled.send_replace(Some(t.to));
    }
}

/// Waits until this replica leads; returns false when the board is gone.
async fn until_leading(rx: &mut watch::Receiver<crate::board::Snapshot>) -> bool {
    rx.wait_for(|s| s.state == StateName::Leader).await.is_ok()
}

/// Sleeps `period` unless the state changes first; false once the board is gone.
async fn pause_while_leading(
    rx: &mut watch::Receiver<crate::board::Snapshot>,
    period: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            r = rx.changed() => {
                if r.is_err() {
                    return false;
                }
                if rx.borrow_and_update().state != StateName::Leader {
                    return true;
                }
            }
        }
    }
}

/// Whether a sibling's leader claim is stale: it started before ours (or
/// carries no parsable start at all: no daemon wrote it).
pub fn claim_is_stale(sibling_since: Option<&str>, our_since_ms: u64) -> bool {
    let Some(since) = sibling_since else {
        return true;
    };
    match time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339) {
        Ok(t) => (t.unix_timestamp_nanos() / 1_000_000) < i128::from(our_since_ms),
        Err(_) => true,
    }
}

async fn stale(ctx: Context, pod: PodRef, selector: String) {
    let mut rx = ctx.board.subscribe();
    let mut api: Option<Api<Pod>> = None;
    let mut events_api = None;
    let selector = format!("{selector},{STATE_LABEL}=leader");
    loop {
        if !until_leading(&mut rx).await {
            return;
        }
        let since = rx.borrow().since_ms;
        if let Err(e) = correct(&ctx, &pod, &selector, since, &mut api, &mut events_api).await {
            warn!(error = %e, "cannot look for stale leader labels");
        }
        if !pause_while_leading(&mut rx, STALE_PERIOD).await {
            return;
        }
    }
}

async fn correct(
    ctx: &Context,
    pod: &PodRef,
    selector: &str,
    our_since_ms: u64,
    api: &mut Option<Api<Pod>>,
    events_api: &mut Option<Api<Event>>,
) -> Result<(), KubeError> {
    if api.is_none() {
        *api = Some(Api::namespaced(client().await?, &pod.namespace));
    }
    let pods = api.as_ref().expect("set above");
    let list = bounded("list", pods.list(&ListParams::default().labels(selector))).await?;
    for sibling in list.items {
        let meta = &sibling.metadata;
        let Some(name) = meta.name.clone() else {
            continue;
        };
        if name == pod.name {
            continue;
        }
        let ann = meta.annotations.clone().unwrap_or_default();
        let claim = ann.get(&format!("{ANNOTATION_PREFIX}state-since"));
        if !claim_is_stale(claim.map(String::as_str), our_since_ms) {
            info!(sibling = %name, since = ?claim, "sibling's leader label is newer than our leadership; left alone");
            continue;
        }
        // The resourceVersion makes the patch conditional: if the sibling
        // relabelled itself since the list, the server answers 409.
        let patch = json!({"metadata": {
            "resourceVersion": meta.resource_version,
            "labels": {STATE_LABEL: STALE},
        }});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        match bounded("patch", pods.patch(&name, &params, &patch)).await {
            Ok(_) => {
                ctx.board.metrics.kube_stale_corrected.inc();
                info!(sibling = %name, since = ?claim, "relabelled a stale leader label");
                let regarding = PodRef {
                    name: name.clone(),
                    namespace: pod.namespace.clone(),
                    uid: meta.uid.clone(),
                };
                let ours = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(our_since_ms) * 1_000_000,
                )
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
                let note = format!(
                    "{} leads since {ours}; {name} was still labelled leader (since {}): relabelled {STALE}",
                    pod.name,
                    claim.map(String::as_str).unwrap_or("?")
                );
                let ev = event_for(pod, &regarding, "StaleLabelCorrected", "Normal", &note);
                if let Err(e) = post(events_api, &pod.namespace, &ev).await {
                    warn!(error = %e, "cannot post event");
                }
            }
            Err(e) => {
                warn!(sibling = %name, error = %e, "stale label not corrected (changed meanwhile?)")
            }
        }
    }
    Ok(())
}

/// The Lease mirror's next spec, given the current one (None: absent).
pub fn next_lease(current: Option<&Lease>, holder: &str, now: &str) -> serde_json::Value {
    let spec = current.and_then(|l| l.spec.as_ref());
    let same = spec.and_then(|s| s.holder_identity.as_deref()) == Some(holder);
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let acquire = spec
        .and_then(|s| s.acquire_time.as_ref())
        .map(|t| t.0.to_string());
    json!({
        "holderIdentity": holder,
        "leaseDurationSeconds": LEASE_SECONDS,
        "acquireTime": if same { acquire.unwrap_or_else(|| now.to_owned()) } else { now.to_owned() },
        "renewTime": now,
        "leaseTransitions": if same || current.is_none() { transitions } else { transitions + 1 },
    })
}

async fn mirror(ctx: Context, pod: PodRef, name: String) {
    let mut rx = ctx.board.subscribe();
    let mut api: Option<Api<Lease>> = None;
    loop {
        if !until_leading(&mut rx).await {
            return;
        }
        match renew(&mut api, &pod, &name).await {
            Ok(()) => {
                ctx.board.metrics.kube_lease_writes.inc();
                debug!(lease = %name, "lease mirror renewed");
            }
            Err(e) => {
                ctx.board.metrics.kube_lease_errors.inc();
                warn!(lease = %name, error = %e, "cannot write the lease mirror");
            }
        }
        if !pause_while_leading(&mut rx, LEASE_RENEW).await {
            return;
        }
    }
}

async fn renew(api: &mut Option<Api<Lease>>, pod: &PodRef, name: &str) -> Result<(), KubeError> {
    if api.is_none() {
        *api = Some(Api::namespaced(client().await?, &pod.namespace));
    }
    let api = api.as_ref().expect("set above");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let current = bounded("get lease", api.get_opt(name)).await?;
    let spec = next_lease(current.as_ref(), &pod.name, &now);
    let mut lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": pod.namespace},
        "spec": spec,
    }))
    .map_err(|source| KubeError::Encode {
        what: "lease",
        source,
    })?;
    match current {
        None => bounded("create lease", api.create(&PostParams::default(), &lease)).await?,
        Some(cur) => {
            // Replace with the resourceVersion read: a concurrent writer gets 409.
            lease.metadata = cur.metadata;
            bounded(
                "update lease",
                api.replace(name, &PostParams::default(), &lease),
            )
            .await?
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Cause;

    #[test]
    fn a_claim_older_than_our_leadership_is_stale_and_a_newer_one_is_not() {
        // 2026-01-01T00:00:00Z = 1_767_225_600_000 ms.
        let ours = 1_767_225_600_000;
        assert!(claim_is_stale(Some("2025-12-31T23:59:59Z"), ours));
        assert!(!claim_is_stale(Some("2026-01-01T00:00:01Z"), ours));
        assert!(
            claim_is_stale(None, ours),
            "a leader label without a claim time"
        );
        assert!(claim_is_stale(Some("yesterday"), ours));
    }

    #[test]
    fn the_lease_counts_a_transition_only_when_the_holder_changes() {
        let now = "2026-01-01T00:00:05Z";
        let first = next_lease(None, "election-0", now);
        assert_eq!(first["holderIdentity"], "election-0");
        assert_eq!(first["leaseTransitions"], 0);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": "election-0", "leaseTransitions": 3,
                     "acquireTime": "2026-01-01T00:00:00Z"},
        }))
        .unwrap();
        let renewed = next_lease(Some(&lease), "election-0", now);
        assert_eq!(renewed["leaseTransitions"], 3);
        assert_eq!(renewed["acquireTime"], "2026-01-01T00:00:00Z");
        assert_eq!(renewed["renewTime"], now);
        let taken = next_lease(Some(&lease), "election-1", now);
        assert_eq!(taken["leaseTransitions"], 4);
        assert_eq!(taken["acquireTime"], now);
    }

    #[test]
    fn transitions_map_to_event_reasons() {
        let t = |from, to| Transition {
            from,
            to,
            why: Cause::Start.because(""),
        };
        use StateName::*;
        assert_eq!(reason(&t(Attempter, Leader)).0, "BecameLeader");
        assert_eq!(reason(&t(Leader, Failover)), ("LostLeadership", "Warning"));
        assert_eq!(reason(&t(Leader, Stopping)).0, "SteppedDown");
        assert_eq!(reason(&t(Init, Failover)).0, "Failover");
        assert_eq!(reason(&t(Init, Attempter)).0, "Candidate");
    }

    #[test]
    fn an_event_names_its_pod_by_uid() {
        let pod = PodRef {
            name: "election-0".into(),
            namespace: "ns".into(),
            uid: Some("u-1".into()),
        };
        let ev = event_for(&pod, &pod, "BecameLeader", "Normal", &"x".repeat(2000));
        let r = ev.regarding.unwrap();
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert!(ev.note.unwrap().len() <= 1000);
        assert!(ev.metadata.name.unwrap().starts_with("election-0."));
    }
}
