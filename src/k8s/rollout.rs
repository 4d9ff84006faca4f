//! The decision of `election rollout` ([`crate::cmd::rollout`]): given the
//! StatefulSet and its Pods as the API server shows them, which Pod to
//! delete next, or what to wait for.
//!
//! A rolling update by the StatefulSet controller restarts Pods from the
//! highest ordinal, whoever leads; each restarted replica joins the back of
//! the election queue, so leadership moves up to N times, often to a Pod
//! that is about to restart. With `updateStrategy: OnDelete` the rollout
//! decides the order instead: every outdated follower first, one at a time,
//! each replacement waited for until it is Ready and back in the election
//! (labelled `attempter` or `leader` by its own daemon), and the leader
//! last, so its preStop hands over once, to an updated replica. Pure
//! functions only; the API calls live in the command. The Pod labels are
//! only used to order restarts: a wrong label costs a handover, never
//! safety (the election never reads Kubernetes).

use std::cmp::Reverse;
use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

use crate::k8s::STATE_LABEL;

/// Label the StatefulSet controller puts on each Pod: the name of the
/// ControllerRevision the Pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the rollout needs to know about the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetView {
    /// `spec.replicas`: Pods `<name>-0..replicas-1` belong to the rollout.
    pub replicas: u32,
    /// `status.updateRevision`: the revision every Pod must reach.
    pub update_revision: Option<String>,
    /// The controller has seen the latest spec (`status.observedGeneration`
    /// is at least `metadata.generation`): only then is `update_revision`
    /// the one of the current template.
    pub observed: bool,
    /// `spec.updateStrategy.type` (`RollingUpdate` when unset).
    pub strategy: String,
}

impl SetView {
    /// Reads a StatefulSet.
    pub fn from_statefulset(sts: &StatefulSet) -> SetView {
        let spec = &sts.spec;
        let status = sts.status.as_ref();
        let generation = sts.metadata.generation.unwrap_or(0);
        SetView {
            replicas: spec
                .replicas
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(1),
            update_revision: status.and_then(|s| s.update_revision.clone()),
            observed: status
                .and_then(|s| s.observed_generation)
                .is_some_and(|g| g >= generation),
            strategy: (spec.update_strategy.as_ref())
                .and_then(|u| u.type_.clone())
                .unwrap_or_else(|| "RollingUpdate".to_owned()),
        }
    }
}

/// What the rollout needs to know about one Pod of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name, `<statefulset>-<ordinal>`.
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// `metadata.uid`: a replacement has another one.
    pub uid: String,
    /// `metadata.resourceVersion`: the delete is conditional on it, so a
    /// Pod whose label changed since it was read is not deleted.
    pub resource_version: Option<String>,
    /// Its `controller-revision-hash` label.
    pub revision: Option<String>,
    /// Its `election-state` label (set by its own daemon).
    pub state: Option<String>,
    /// Condition `Ready` is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

impl PodView {
    /// Reads a Pod of StatefulSet `set`; `None` for a Pod whose name is not
    /// `<set>-<ordinal>` (not one of its Pods).
    pub fn from_pod(set: &str, pod: &Pod) -> Option<PodView> {
        let meta = &pod.metadata;
        let name = meta.name.clone()?;
        let ordinal = name
            .strip_prefix(set)
            .and_then(|rest| rest.strip_prefix('-'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())?;
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Some(PodView {
            ordinal,
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            revision: label(REVISION_LABEL),
            state: label(STATE_LABEL),
            ready,
            terminating: meta.deletion_timestamp.is_some(),
            name,
        })
    }

    /// Labelled leader by its daemon.
    pub fn is_leader(&self) -> bool {
        self.state.as_deref() == Some("leader")
    }

    /// Ready and back in the election: its daemon says it is a candidate or
    /// the leader (readiness alone is the kubelet's view of `/readyz`).
    pub fn joined(&self) -> bool {
        self.ready && matches!(self.state.as_deref(), Some("attempter" | "leader"))
    }
}

/// Why the rollout waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The controller has not yet seen the latest spec.
    NotObserved,
    /// A Pod of the set does not exist (being recreated).
    Missing(String),
    /// A Pod is being deleted.
    Terminating(String),
    /// A Pod of the update revision is not Ready and back in the election yet.
    NotJoined(String),
    /// Not exactly one Pod is labelled leader (a handover or a stale label
    /// in progress): deleting now could hit the next leader.
    NoSingleLeader(usize),
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::NotObserved => write!(
                f,
                "the StatefulSet controller has not observed the latest spec"
            ),
            Wait::Missing(p) => write!(f, "pod {p} does not exist (being recreated)"),
            Wait::Terminating(p) => write!(f, "pod {p} is terminating"),
            Wait::NotJoined(p) => write!(
                f,
                "pod {p} (update revision) is not Ready and labelled election-state=attempter|leader"
            ),
            Wait::NoSingleLeader(n) => {
                write!(
                    f,
                    "{n} pods are labelled election-state=leader, not exactly one"
                )
            }
        }
    }
}

/// The next step of the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Every Pod runs the update revision and is back in the election.
    Done,
    /// Nothing to delete until this changes.
    Wait(Wait),
    /// Delete this Pod (the controller recreates it at the update revision).
    Delete {
        /// The Pod, as read (uid and resourceVersion are the delete's preconditions).
        pod: PodView,
        /// It is labelled leader: its deletion hands leadership over.
        leader: bool,
        /// Outdated Pods left after this one.
        remaining: usize,
    },
}

/// Decides the next step. `leaderless_ok`: roll even when not exactly one
/// Pod is labelled leader (the command sets it after waiting a while: an
/// election without a leader, for instance every replica unable to reach
/// ZooKeeper until the new revision fixes it, has no leadership to keep).
/// `deleted`: the Pods this run deleted; it is done only once they are back
/// in the election.
///
/// Order: outdated Pods that are not back in the election, then the other
/// outdated followers, then the leader; highest ordinal first among equals.
/// One Pod at a time: nothing is deleted while a Pod of the set is missing,
/// terminating, or of the update revision and not back in the election.
/// With nothing outdated, a Pod this run did not delete is not waited for
/// (a replica added by a scale-up is `helm --wait`'s business).
pub fn next(set: &SetView, pods: &[PodView], leaderless_ok: bool, deleted: &[String]) -> Next {
    let Some(update) = set.update_revision.as_deref().filter(|_| set.observed) else {
        return Next::Wait(Wait::NotObserved);
    };
    let mut members: Vec<&PodView> = Vec::new();
    for ordinal in 0..set.replicas {
        let Some(pod) = pods.iter().find(|p| p.ordinal == ordinal) else {
            return Next::Wait(Wait::Missing(ordinal_name(pods, ordinal)));
        };
        if pod.terminating {
            return Next::Wait(Wait::Terminating(pod.name.clone()));
        }
        members.push(pod);
    }
    // A Pod being removed by a scale-down is not ours to wait for, but it
    // must be gone before anything else stops.
    if let Some(p) = pods
        .iter()
        .find(|p| p.ordinal >= set.replicas && p.terminating)
    {
        return Next::Wait(Wait::Terminating(p.name.clone()));
    }
    let (updated, mut outdated): (Vec<&PodView>, Vec<&PodView>) = members
        .into_iter()
        .partition(|p| p.revision.as_deref() == Some(update));
    let awaited = |p: &&&PodView| !outdated.is_empty() || deleted.contains(&p.name);
    if let Some(p) = updated.iter().filter(awaited).find(|p| !p.joined()) {
        return Next::Wait(Wait::NotJoined(p.name.clone()));
    }
    if outdated.is_empty() {
        return Next::Done;
    }
    let leaders = pods
        .iter()
        .filter(|p| p.ordinal < set.replicas && p.is_leader())
        .count();
    if leaders != 1 && !leaderless_ok {
        return Next::Wait(Wait::NoSingleLeader(leaders));
    }
    outdated.sort_by_key(|p| (p.is_leader(), p.joined(), Reverse(p.ordinal)));
    let pod = outdated[0];
    Next::Delete {
        leader: pod.is_leader(),
        remaining: outdated.len() - 1,
        pod: pod.clone(),
    }
}

/// The name of a missing ordinal, from the name of any Pod of the set.
fn ordinal_name(pods: &[PodView], ordinal: u32) -> String {
    pods.first()
        .and_then(|p| p.name.rsplit_once('-'))
        .map(|(set, _)| format!("{set}-{ordinal}"))
        .unwrap_or_else(|| format!("ordinal {ordinal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "election-old";
    const NEW: &str = "election-new";

    fn set(replicas: u32) -> SetView {
        SetView {
            replicas,
            update_revision: Some(NEW.to_owned()),
            observed: true,
            strategy: "OnDelete".to_owned(),
        }
    }

    fn pod(ordinal: u32, revision: &str, state: &str) -> PodView {
        PodView {
            name: format!("election-{ordinal}"),
            ordinal,
            uid: format!("uid-{ordinal}-{revision}"),
            resource_version: Some("1".to_owned()),
            revision: Some(revision.to_owned()),
            state: Some(state.to_owned()),
            ready: true,
            terminating: false,
        }
    }

    fn deleted(next: Next) -> (String, bool) {
        match next {
            Next::Delete { pod, leader, .. } => (pod.name, leader),
            other => panic!("expected a deletion, got {other:?}"),
        }
    }

    /// Plays a whole rollout: each deleted Pod comes back at the update
    /// revision as an attempter (the back of the queue). Returns the
    /// deletions in order.
    fn play(mut pods: Vec<PodView>, replicas: u32) -> Vec<(String, bool)> {
        let mut order = Vec::new();
        for _ in 0..=replicas {
            match next(&set(replicas), &pods, false, &[]) {
                Next::Done => return order,
                Next::Delete { pod, leader, .. } => {
                    let was_leader = pods[pod.ordinal as usize].is_leader();
                    pods[pod.ordinal as usize] = self::pod(pod.ordinal, NEW, "attempter");
                    if was_leader {
                        // The first in the queue takes over: an updated Pod.
                        let heir = pods.iter_mut().find(|p| p.ordinal != pod.ordinal).unwrap();
                        heir.state = Some("leader".to_owned());
                    }
                    order.push((pod.name, leader));
                }
                Next::Wait(w) => panic!("unexpected wait: {w}"),
            }
        }
        panic!("the rollout did not end: {order:?}")
    }

    #[test]
    fn followers_go_first_highest_ordinal_first_and_the_leader_last() {
        let pods = vec![
            pod(0, OLD, "attempter"),
            pod(1, OLD, "leader"),
            pod(2, OLD, "attempter"),
        ];
        let order = play(pods, 3);
        assert_eq!(
            order,
            [
                ("election-2".to_owned(), false),
                ("election-0".to_owned(), false),
                ("election-1".to_owned(), true)
            ]
        );
    }

    #[test]
    fn five_replicas_hand_leadership_over_exactly_once() {
        for leader in 0..5 {
            let pods = (0..5)
                .map(|i| pod(i, OLD, if i == leader { "leader" } else { "attempter" }))
                .collect();
            let order = play(pods, 5);
            assert_eq!(order.len(), 5);
            let handovers: Vec<_> = order.iter().filter(|(_, l)| *l).collect();
            assert_eq!(handovers.len(), 1, "leader {leader}: {order:?}");
            assert_eq!(order.last().unwrap().0, format!("election-{leader}"));
        }
    }

    #[test]
    fn a_second_rollout_still_deletes_the_leader_last() {
        // After a first rollout the leader is some restarted Pod, here the
        // highest ordinal: the one a RollingUpdate would restart first.
        let pods = vec![
            pod(0, OLD, "attempter"),
            pod(1, OLD, "attempter"),
            pod(2, OLD, "leader"),
        ];
        let order = play(pods, 3);
        assert_eq!(order.last().unwrap(), &("election-2".to_owned(), true));
        assert_eq!(order.iter().filter(|(_, l)| *l).count(), 1);
    }

    #[test]
    fn the_last_deleted_pod_is_waited_for_but_not_a_new_replica_of_a_scale_up() {
        let mut back = pod(1, NEW, "attempter");
        back.ready = false;
        let pods = vec![pod(0, NEW, "leader"), back, pod(2, NEW, "init")];
        assert_eq!(
            next(&set(3), &pods, false, &["election-1".to_owned()]),
            Next::Wait(Wait::NotJoined("election-1".into()))
        );
        // Nothing outdated, and election-2 (just added) was not deleted by this run.
        assert_eq!(next(&set(3), &pods, false, &[]), Next::Done);
    }

    #[test]
    fn all_pods_on_the_update_revision_and_joined_is_done() {
        let pods = vec![pod(0, NEW, "leader"), pod(1, NEW, "attempter")];
        assert_eq!(next(&set(2), &pods, false, &[]), Next::Done);
    }

    #[test]
    fn a_replacement_is_waited_for_until_it_is_ready_and_in_the_election() {
        let mut fresh = pod(2, NEW, "init");
        let pods = |p: &PodView| vec![pod(0, OLD, "leader"), pod(1, OLD, "attempter"), p.clone()];
        assert_eq!(
            next(&set(3), &pods(&fresh), false, &[]),
            Next::Wait(Wait::NotJoined("election-2".into()))
        );
        fresh.state = None; // a new Pod object carries no label yet
        assert!(matches!(
            next(&set(3), &pods(&fresh), false, &[]),
            Next::Wait(Wait::NotJoined(_))
        ));
        fresh.state = Some("attempter".into());
        fresh.ready = false; // its daemon joined, the readiness probe has not said so yet
        assert!(matches!(
            next(&set(3), &pods(&fresh), false, &[]),
            Next::Wait(Wait::NotJoined(_))
        ));
        fresh.ready = true;
        assert_eq!(
            deleted(next(&set(3), &pods(&fresh), false, &[])),
            ("election-1".into(), false)
        );
    }

    #[test]
    fn a_missing_or_terminating_pod_stops_every_deletion() {
        let mut pods = vec![pod(0, OLD, "leader"), pod(2, OLD, "attempter")];
        assert_eq!(
            next(&set(3), &pods, false, &[]),
            Next::Wait(Wait::Missing("election-1".into()))
        );
        let mut going = pod(1, OLD, "stopping");
        going.terminating = true;
        pods.push(going);
        assert_eq!(
            next(&set(3), &pods, false, &[]),
            Next::Wait(Wait::Terminating("election-1".into()))
        );
        pods[2] = pod(1, NEW, "attempter");
        assert_eq!(
            deleted(next(&set(3), &pods, false, &[])),
            ("election-2".into(), false)
        );
    }

    #[test]
    fn a_pod_being_scaled_away_is_waited_for() {
        let mut extra = pod(3, OLD, "attempter");
        extra.terminating = true;
        let pods = vec![
            pod(0, OLD, "leader"),
            pod(1, OLD, "attempter"),
            pod(2, OLD, "attempter"),
            extra,
        ];
        assert_eq!(
            next(&set(3), &pods, false, &[]),
            Next::Wait(Wait::Terminating("election-3".into()))
        );
    }

    #[test]
    fn an_outdated_pod_out_of_the_election_goes_before_a_healthy_follower() {
        let mut stuck = pod(0, OLD, "failover");
        stuck.ready = false;
        let pods = vec![stuck, pod(1, OLD, "leader"), pod(2, OLD, "attempter")];
        assert_eq!(
            deleted(next(&set(3), &pods, false, &[])),
            ("election-0".into(), false)
        );
    }

    #[test]
    fn no_single_leader_waits_unless_leaderless_rolling_is_allowed() {
        let pods = vec![pod(0, OLD, "failover"), pod(1, OLD, "failover")];
        assert_eq!(
            next(&set(2), &pods, false, &[]),
            Next::Wait(Wait::NoSingleLeader(0))
        );
        assert_eq!(
            deleted(next(&set(2), &pods, true, &[])),
            ("election-1".into(), false)
        );
        let two = vec![
            pod(0, OLD, "leader"),
            pod(1, OLD, "leader"),
            pod(2, OLD, "attempter"),
        ];
        assert_eq!(
            next(&set(3), &two, false, &[]),
            Next::Wait(Wait::NoSingleLeader(2))
        );
        // Allowed to roll anyway, the leader labels still go last.
        assert_eq!(
            deleted(next(&set(3), &two, true, &[])),
            ("election-2".into(), false)
        );
    }

    #[test]
    fn nothing_happens_before_the_controller_observed_the_new_template() {
        let mut s = set(1);
        s.observed = false;
        assert_eq!(
            next(&s, &[pod(0, OLD, "leader")], false, &[]),
            Next::Wait(Wait::NotObserved)
        );
        s.observed = true;
        s.update_revision = None;
        assert_eq!(
            next(&s, &[pod(0, OLD, "leader")], false, &[]),
            Next::Wait(Wait::NotObserved)
        );
    }

    #[test]
    fn a_single_replica_is_restarted_even_though_it_leads() {
        let (name, leader) = deleted(next(&set(1), &[pod(0, OLD, "leader")], false, &[]));
        assert_eq!((name.as_str(), leader), ("election-0", true));
    }

    #[test]
    fn pods_are_read_from_the_api_objects() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "election-12", "uid": "u", "resourceVersion": "7",
                "labels": {"controller-revision-hash": NEW, "election-state": "attempter"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let view = PodView::from_pod("election", &pod).unwrap();
        assert_eq!(
            (view.ordinal, view.joined(), view.terminating),
            (12, true, false)
        );
        assert_eq!(view.revision.as_deref(), Some(NEW));
        for other in [
            "election-zookeeper-0",
            "election-",
            "election-1a",
            "other-1",
        ] {
            let mut p = pod.clone();
            p.metadata.name = Some(other.to_owned());
            assert_eq!(PodView::from_pod("election", &p), None, "{other}");
        }
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "election", "generation": 3},
            "spec": {"replicas": 5, "selector": {}, "serviceName": "x", "template": {},
                "updateStrategy": {"type": "OnDelete"}},
            "status": {"replicas": 5, "observedGeneration": 2, "updateRevision": NEW}
        }))
        .unwrap();
        let view = SetView::from_statefulset(&sts);
        assert_eq!(
            (view.replicas, view.observed, view.strategy.as_str()),
            (5, false, "OnDelete")
        );
    }
}
