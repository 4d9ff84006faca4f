//! What `kubectl` shows beyond the Pod label ([`crate::k8s::labeller`]): Events,
//! the correction of stale sibling labels, and a Lease mirror.
//!
//! Three helper tasks, each like the labeller: fed by the status board,
//! every API call bounded, failures logged and counted, never anything fed
//! back into the election.
//!
//! - **Events** (`events.k8s.io/v1`, `create` and `patch`): one per
//!   transition, on the replica's own Pod (`BecameLeader`,
//!   `LostLeadership`, `SteppedDown`, `Failover`, `Candidate`,
//!   `Reconnecting`, `Stopping`), and `StaleLabelCorrected` on a sibling
//!   the leader relabelled. Published through kube-runtime's [`Recorder`]:
//!   a reason that repeats on the same Pod within its window (6 minutes
//!   since the last one) does not create another object but patches the
//!   first one into an Event series (`series.count`, `lastObservedTime`;
//!   `kubectl get events` shows `x3 over 40s`), so a flapping replica does
//!   not flood the namespace. The series keeps the note of its first Event;
//!   the log has every transition.
//! - **Stale labels** (`list` on pods): a replica killed without a last
//!   patch keeps `election-state=leader`. While leading, the daemon lists
//!   the election's Pods labelled leader and decides by fencing token
//!   ([`claim_is_stale`]): each leadership's token is strictly higher than
//!   the one before (ZooKeeper orders them), and a leader's Pod carries its
//!   token (`election/fencing-token`), so a sibling whose token is lower
//!   than ours led before us and is stale. An equal or higher token is left
//!   alone (then we may be the stale one), and so is everything while our
//!   own token is unknown. Wall clocks decide only for a leader label
//!   without a token (its daemon died between the label and the token
//!   patch, or no daemon wrote it): `election/state-since` before the start
//!   of our leadership. The patch carries the resourceVersion read in the
//!   list (a precondition: 409 if the sibling relabelled itself meanwhile,
//!   and no unconditional retry follows), so a live sibling's fresh label is
//!   never overwritten. The label becomes `stale`. The same list shows
//!   whether our own Pod says `leader`: if not (something relabelled it),
//!   the labeller is asked to send our state again
//!   ([`crate::k8s::labeller::Resend`]).
//! - **Lease mirror** (`coordination.k8s.io/v1`): while leading, the daemon
//!   keeps a Lease whose `holderIdentity` is its Pod, `renewTime` renewed
//!   every [`LEASE_RENEW`]. A read-only mirror for tools: nothing in the
//!   election reads it. The chart creates the Lease (with its labels, so
//!   that `helm uninstall` removes it) and grants only `get`, `update` and
//!   `patch` on it: the daemon updates the spec of an existing Lease and
//!   keeps its metadata; it creates the Lease only when it is absent, and
//!   if that is refused (403) it says so once and only reads afterwards.
//! - **Events** can be switched off (`--pod-events false`) where the Role
//!   does not grant `create` and `patch` on `events.k8s.io` events.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as RuntimeEvent, EventType, Recorder, Reporter};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::KubeError;
use crate::board::Transition;
use crate::k8s::labeller::Resend;
use crate::k8s::{ANNOTATION_PREFIX, STATE_LABEL, bounded, client};
use crate::machine::Context;
use crate::names::StateName;

/// Value a stale sibling's `election-state` label is corrected to.
pub const STALE: &str = "stale";
/// How often the leader looks for stale siblings.
const STALE_PERIOD: Duration = Duration::from_secs(5);
/// Resends of our own label in a row (one per [`STALE_PERIOD`]) after
/// which the leader stops trying while its Pod stays unlisted.
const MAX_RESENDS: u32 = 3;
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
    /// The state entered by the last transition the Events task handled
    /// (None when Events are off).
    handled: Option<watch::Receiver<Option<StateName>>>,
}

impl Helpers {
    /// Starts the tasks the configuration asks for; `resend` asks the
    /// labeller to send our label again when the stale-label search does
    /// not find our own Pod labelled leader.
    pub fn spawn(ctx: &Context, pod: PodRef, resend: Resend) -> Helpers {
        let mut tasks = Vec::new();
        let mut handled = None;
        if ctx.cfg.pod_events {
            let (tx, rx) = watch::channel(None);
            tasks.push(tokio::spawn(events(ctx.clone(), pod.clone(), tx)));
            handled = Some(rx);
        }
        if let Some(selector) = ctx.cfg.pod_selector.clone() {
            tasks.push(tokio::spawn(stale(
                ctx.clone(),
                pod.clone(),
                selector,
                resend,
            )));
        }
        if let Some(lease) = ctx.cfg.lease_name.clone() {
            tasks.push(tokio::spawn(mirror(ctx.clone(), pod, lease)));
        }
        Helpers { tasks, handled }
    }

    /// Waits (at most `bound`) for the Event of the move to Stopping to be
    /// posted or given up, then stops every task.
    pub async fn finish(self, bound: Duration) {
        if let Some(mut handled) = self.handled {
            let done = handled.wait_for(|s| *s == Some(StateName::Stopping));
            if tokio::time::timeout(bound, done).await.is_err() {
                debug!(bound = ?bound, "last Events not posted in time");
            }
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Reason and type of a transition's Event.
pub fn reason(t: &Transition) -> (&'static str, EventType) {
    use EventType::{Normal, Warning};
    use StateName::*;
    match (t.from, t.to) {
        (_, Leader) => ("BecameLeader", Normal),
        (Leader, Stopping) => ("SteppedDown", Normal),
        (Leader, _) => ("LostLeadership", Warning),
        (_, Failover) => ("Failover", Warning),
        (_, Attempter) => ("Candidate", Normal),
        (_, Init) => ("Reconnecting", Normal),
        (_, Stopping) => ("Stopping", Normal),
    }
}

/// The reference an Event names its Pod by (uid included: `kubectl
/// describe pod` matches Events by uid).
pub fn pod_reference(pod: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: pod.uid.clone(),
        ..Default::default()
    }
}

/// An Event for the recorder; the note is cut to the API's 1 kB.
pub fn event_for(reason: &str, kind: EventType, note: &str) -> RuntimeEvent {
    let mut note = note.to_owned();
    if note.len() > 1000 {
        let cut = (0..=1000)
            .rev()
            .find(|i| note.is_char_boundary(*i))
            .unwrap_or(0);
        note.truncate(cut);
    }
    RuntimeEvent {
        type_: kind,
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary: None,
    }
}

/// Publishes `ev` about `regarding`, reported by our Pod: a new Event
/// object (`create`), or the next count of the series of an identical
/// recent one (`patch`). The recorder is built on first use, like the
/// client.
async fn post(
    recorder: &mut Option<Recorder>,
    pod: &PodRef,
    regarding: &PodRef,
    ev: &RuntimeEvent,
) -> Result<(), KubeError> {
    if recorder.is_none() {
        let reporter = Reporter {
            controller: CONTROLLER.into(),
            instance: Some(pod.name.clone()),
        };
        *recorder = Some(Recorder::new(client().await?, reporter));
    }
    let recorder = recorder.as_ref().expect("set above");
    bounded("event", recorder.publish(ev, &pod_reference(regarding))).await
}

async fn events(ctx: Context, pod: PodRef, handled: watch::Sender<Option<StateName>>) {
    let mut rx = ctx.board.transitions();
    let mut recorder = None;
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
        let ev = event_for(reason, kind, &note);
        // Best effort, one attempt: a late Event tells a wrong story.
        match post(&mut recorder, &pod, &pod, &ev).await {
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

/// A sibling's leader claim, as its Pod's annotations carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// `election/fencing-token`: the token of its leadership, if set.
    pub token: Option<&'a str>,
    /// `election/state-since`: when it entered its state (RFC 3339).
    pub since: Option<&'a str>,
}

impl Claim<'_> {
    /// The claim's fencing token, when it parses as one.
    pub fn parsed_token(&self) -> Option<u64> {
        self.token.and_then(|t| t.trim().parse().ok())
    }
}

/// Our leadership, to compare a claim with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ours {
    /// Our fencing token, once Leader has claimed it.
    pub token: Option<u64>,
    /// When we entered Leader, unix milliseconds.
    pub since_ms: u64,
}

/// Whether a sibling's leader claim is stale.
///
/// By fencing token when the claim carries a parsable one: tokens grow
/// strictly from one leadership to the next (ZooKeeper orders them), so a
/// lower token than ours belongs to an earlier leadership. An equal or
/// higher one, or any token while ours is not known yet, is left alone: no
/// clock is involved. Only a claim without a parsable token falls back to
/// the wall clocks: it is stale if it started before our leadership (or
/// carries no parsable start at all: no daemon wrote it).
pub fn claim_is_stale(claim: Claim<'_>, ours: Ours) -> bool {
    if let Some(theirs) = claim.parsed_token() {
        return ours.token.is_some_and(|ours| theirs < ours);
    }
    let Some(since) = claim.since else {
        return true;
    };
    match time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339) {
        Ok(t) => (t.unix_timestamp_nanos() / 1_000_000) < i128::from(ours.since_ms),
        Err(_) => true,
    }
}

/// Waits until this replica leads and knows its fencing token; returns
/// false when the board is gone.
async fn until_leading_with_token(rx: &mut watch::Receiver<crate::board::Snapshot>) -> bool {
    rx.wait_for(|s| s.state == StateName::Leader && s.token.is_some())
        .await
        .is_ok()
}

async fn stale(ctx: Context, pod: PodRef, selector: String, resend: Resend) {
    let mut rx = ctx.board.subscribe();
    let mut api: Option<Api<Pod>> = None;
    let mut recorder = None;
    let selector = format!("{selector},{STATE_LABEL}=leader");
    // Resends in a row without seeing our Pod listed, in this leadership.
    let mut resent = (0, 0u32);
    loop {
        if !until_leading_with_token(&mut rx).await {
            return;
        }
        let ours = {
            let s = rx.borrow();
            Ours {
                token: s.token,
                since_ms: s.since_ms,
            }
        };
        if resent.0 != ours.since_ms {
            resent = (ours.since_ms, 0);
        }
        match correct(&ctx, &pod, &selector, ours, &mut api, &mut recorder).await {
            Ok(true) => resent.1 = 0,
            // Our own Pod does not say leader: something relabelled it,
            // and the labeller would not notice before our next transition.
            Ok(false) if resent.1 < MAX_RESENDS => {
                if resend.leader_label_missing() {
                    resent.1 += 1;
                    ctx.board.metrics.kube_label_resends.inc();
                    warn!(pod = %pod.name, "our pod is not labelled leader while we lead; labelling it again");
                }
            }
            // Resending did not help: the selector does not match our own
            // Pod, most likely. Say so once, and stop patching for nothing.
            Ok(false) => {
                if resent.1 == MAX_RESENDS {
                    resent.1 += 1;
                    warn!(pod = %pod.name, selector = %selector,
                        "our pod is still not listed as leader after labelling it again: does --pod-selector match it? not resending any more in this leadership");
                }
            }
            Err(e) => warn!(error = %e, "cannot look for stale leader labels"),
        }
        if !pause_while_leading(&mut rx, STALE_PERIOD).await {
            return;
        }
    }
}

/// Relabels the stale leader claims among the Pods `selector` lists;
/// returns whether our own Pod was among them.
async fn correct(
    ctx: &Context,
    pod: &PodRef,
    selector: &str,
    ours: Ours,
    api: &mut Option<Api<Pod>>,
    recorder: &mut Option<Recorder>,
) -> Result<bool, KubeError> {
    if api.is_none() {
        *api = Some(Api::namespaced(client().await?, &pod.namespace));
    }
    let pods = api.as_ref().expect("set above");
    let list = bounded("list", pods.list(&ListParams::default().labels(selector))).await?;
    let mut listed_ourselves = false;
    for sibling in list.items {
        let meta = &sibling.metadata;
        let Some(name) = meta.name.clone() else {
            continue;
        };
        if name == pod.name {
            listed_ourselves = true;
            continue;
        }
        let ann = meta.annotations.clone().unwrap_or_default();
        let token = ann.get(&format!("{ANNOTATION_PREFIX}fencing-token"));
        let since = ann.get(&format!("{ANNOTATION_PREFIX}state-since"));
        let claim = Claim {
            token: token.map(String::as_str),
            since: since.map(String::as_str),
        };
        if !claim_is_stale(claim, ours) {
            info!(sibling = %name, token = ?claim.token, since = ?claim.since, our_token = ?ours.token,
                "sibling's leader label is not older than our leadership; left alone");
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
                info!(sibling = %name, token = ?claim.token, since = ?claim.since, "relabelled a stale leader label");
                let regarding = PodRef {
                    name: name.clone(),
                    namespace: pod.namespace.clone(),
                    uid: meta.uid.clone(),
                };
                let why = match claim.parsed_token() {
                    Some(t) => format!("fencing token {t} < ours {}", ours.token.unwrap_or(0)),
                    None => format!(
                        "no fencing token; labelled since {}, before our leadership",
                        claim.since.unwrap_or("?")
                    ),
                };
                let note = format!(
                    "{} leads; {name} was still labelled leader ({why}): relabelled {STALE}",
                    pod.name
                );
                let ev = event_for("StaleLabelCorrected", EventType::Normal, &note);
                if ctx.cfg.pod_events
                    && let Err(e) = post(recorder, pod, &regarding, &ev).await
                {
                    warn!(error = %e, "cannot post event");
                }
            }
            Err(e) => {
                // No retry without the precondition: the next round lists
                // again and decides on what the Pod says then.
                warn!(sibling = %name, error = %e, "stale label not corrected (changed meanwhile?)")
            }
        }
    }
    Ok(listed_ourselves)
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
    // Set once the API server refused to create the Lease: from then on
    // the mirror only reads it (the chart creates it and grants no
    // `create`), and says nothing more until it exists.
    let mut create_refused = false;
    loop {
        if !until_leading(&mut rx).await {
            return;
        }
        match renew(&mut api, &pod, &name, !create_refused).await {
            Ok(Renewal::Written) => {
                ctx.board.metrics.kube_lease_writes.inc();
                debug!(lease = %name, "lease mirror renewed");
            }
            Ok(Renewal::Absent) => {
                ctx.board.metrics.kube_lease_errors.inc();
                debug!(lease = %name, "lease mirror absent; not creating it again");
            }
            Err(e) if e.is_forbidden() && e.what() == CREATE_LEASE => {
                ctx.board.metrics.kube_lease_errors.inc();
                create_refused = true;
                warn!(lease = %name, error = %e,
                    "cannot create the lease mirror: RBAC grants no `create` on leases (the chart creates the Lease itself); \
                     it will be updated once it exists");
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

/// What a renewal of the Lease mirror did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// The Lease says we hold it.
    Written,
    /// The Lease does not exist, and we were not to create it.
    Absent,
}

/// The `what` of a refused creation.
const CREATE_LEASE: &str = "create lease";

/// Reads the Lease; updates its spec if it exists (its metadata, the
/// chart's labels among them, stays as read, and the resourceVersion read
/// makes a concurrent writer's update fail with 409), creates it if it is
/// absent and `may_create`.
async fn renew(
    api: &mut Option<Api<Lease>>,
    pod: &PodRef,
    name: &str,
    may_create: bool,
) -> Result<Renewal, KubeError> {
    if api.is_none() {
        *api = Some(Api::namespaced(client().await?, &pod.namespace));
    }
    let api = api.as_ref().expect("set above");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let current = bounded("get lease", api.get_opt(name)).await?;
    let spec = next_lease(current.as_ref(), &pod.name, &now);
    let params = PostParams::default();
    let spec: LeaseSpec = serde_json::from_value(spec).map_err(|source| KubeError::Encode {
        what: "lease",
        source,
    })?;
    match current {
        Some(mut lease) => {
            lease.spec = Some(spec);
            let call = api.replace(name, &params, &lease);
            bounded("update lease", call).await?;
        }
        None if !may_create => return Ok(Renewal::Absent),
        None => {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(pod.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            let call = api.create(&params, &lease);
            bounded(CREATE_LEASE, call).await?;
        }
    }
    Ok(Renewal::Written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Cause;

    /// 2026-01-01T00:00:00Z, unix milliseconds.
    const JAN_1: u64 = 1_767_225_600_000;

    fn claim<'a>(token: Option<&'a str>, since: Option<&'a str>) -> Claim<'a> {
        Claim { token, since }
    }

    #[test]
    fn a_lower_fencing_token_is_stale_whatever_the_clocks_say() {
        let ours = Ours {
            token: Some(42),
            since_ms: JAN_1,
        };
        // Its clock ran ahead: a start after ours does not save it.
        assert!(claim_is_stale(
            claim(Some("41"), Some("2026-01-01T00:05:00Z")),
            ours
        ));
        assert!(claim_is_stale(claim(Some("7"), None), ours));
    }

    #[test]
    fn an_equal_or_higher_token_is_left_alone_whatever_the_clocks_say() {
        let ours = Ours {
            token: Some(42),
            since_ms: JAN_1,
        };
        // Our clock ran ahead: a start before ours does not make it stale.
        let old = Some("2025-12-31T23:00:00Z");
        assert!(!claim_is_stale(claim(Some("42"), old), ours));
        assert!(!claim_is_stale(claim(Some("43"), old), ours));
        assert!(!claim_is_stale(claim(Some(" 43 "), old), ours));
    }

    #[test]
    fn no_token_of_ours_leaves_every_token_alone() {
        let ours = Ours {
            token: None,
            since_ms: JAN_1,
        };
        assert!(!claim_is_stale(
            claim(Some("1"), Some("2025-12-31T23:00:00Z")),
            ours
        ));
    }

    #[test]
    fn a_claim_without_a_parsable_token_falls_back_to_its_start_time() {
        let ours = Ours {
            token: Some(42),
            since_ms: JAN_1,
        };
        for token in [None, Some(""), Some("x"), Some("-1")] {
            assert!(claim_is_stale(
                claim(token, Some("2025-12-31T23:59:59Z")),
                ours
            ));
            assert!(!claim_is_stale(
                claim(token, Some("2026-01-01T00:00:01Z")),
                ours
            ));
            assert!(
                claim_is_stale(claim(token, None), ours),
                "a leader label without a claim time"
            );
            assert!(claim_is_stale(claim(token, Some("yesterday")), ours));
        }
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
        assert_eq!(
            reason(&t(Leader, Failover)),
            ("LostLeadership", EventType::Warning)
        );
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
        let r = pod_reference(&pod);
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        let ev = event_for("BecameLeader", EventType::Normal, &"é".repeat(1000));
        let note = ev.note.unwrap();
        assert!(note.len() <= 1000 && note.ends_with('é'));
        assert_eq!(ev.action, "BecameLeader");
    }
}
