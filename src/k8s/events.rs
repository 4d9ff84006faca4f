//! Events (`events.k8s.io/v1`, `create` and `patch`): one per transition,
//! on the replica's own Pod (`BecameLeader`, `LostLeadership`,
//! `SteppedDown`, `Failover`, `Candidate`, `Reconnecting`, `Stopping`),
//! and `StaleLabelCorrected` on a sibling the leader relabelled
//! ([`crate::k8s::stale_labels`]).
//!
//! Published through kube-runtime's [`Recorder`]: a reason that repeats on
//! the same Pod within its window (6 minutes since the last one) does not
//! create another object but patches the first one into an Event series
//! (`series.count`, `lastObservedTime`; `kubectl get events` shows `x3 over
//! 40s`), so a flapping replica does not flood the namespace. The series
//! keeps the note of its first Event; the log has every transition. Events
//! can be switched off (`--pod-events false`) where the Role does not grant
//! `create` and `patch` on `events.k8s.io` events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as RuntimeEvent, EventType, Recorder, Reporter};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{KubeError, PodRef, bounded, client};
use crate::machine::Context;
use crate::names::StateName;
use crate::published::Transition;

/// Reporting controller of the Events.
const CONTROLLER: &str = "election.zookeeper/daemon";

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
pub(super) async fn post(
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

/// Posts one Event per transition until the published status is gone;
/// `handled` says the state entered by the last transition handled.
pub(super) async fn events(ctx: Context, pod: PodRef, handled: watch::Sender<Option<StateName>>) {
    let mut rx = ctx.published.transitions();
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
                ctx.published.metrics.kube_events.inc();
                debug!(reason, "event posted");
            }
            Err(e) => {
                ctx.published.metrics.kube_event_errors.inc();
                warn!(reason, error = %e, "cannot post event");
            }
        }
        handled.send_replace(Some(t.to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Cause;

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
