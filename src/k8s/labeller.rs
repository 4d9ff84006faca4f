//! Mirrors the daemon's state on its own Pod, so that
//! `kubectl get pods -L election-state` shows who leads.
//!
//! Runs as its own task, fed by the status channel: it always patches the
//! latest state (intermediate ones are skipped when the API server is slow),
//! retries with backoff, bounds every call, and never feeds anything back
//! into the election: an API outage is logged and counted, nothing more.
//! It sends a patch only when it differs from the last one that succeeded;
//! a [`Resend`] request (the leader's list of leader-labelled Pods lacks
//! our own, so something relabelled it) makes it send the current one again.
//! Needs `patch` on its own Pod only. Events, the stale-label correction
//! and the Lease mirror are started by [`crate::k8s::tasks`].
//!
//! Label `election-state`: init | attempter | leader | failover | stopping.
//! Annotations (prefix `election/`): `state-since` (RFC 3339), `node-id`,
//! `leader` (node id of the leader as last seen), `fencing-token` (while
//! leading), `cause` (reason of the last transition).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{ANNOTATION_PREFIX, KubeError, STATE_LABEL, bounded, client};
use crate::machine::Context;
use crate::names::StateName;
use crate::published::Snapshot;

/// Backoff between failed patches: first and longest pause.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// The labelling task.
pub struct Labeller {
    task: JoinHandle<()>,
    patched: watch::Receiver<Option<StateName>>,
    resend: Arc<Notify>,
}

/// Asks the labeller to send the current state again, even though it
/// already sent it (see [`Resend::leader_label_missing`]).
#[derive(Debug, Clone)]
pub struct Resend {
    notify: Arc<Notify>,
    patched: watch::Receiver<Option<StateName>>,
}

impl Resend {
    /// Our Pod is missing from a list of the Pods labelled `leader` while
    /// we lead: if the labeller already published `leader` (so it will not
    /// send it again by itself), it resends the current state. Returns
    /// whether a resend was requested. (One that is still on its way will
    /// send the state anyway.)
    pub fn leader_label_missing(&self) -> bool {
        if *self.patched.borrow() != Some(StateName::Leader) {
            return false;
        }
        self.notify.notify_one();
        true
    }
}

impl Labeller {
    /// Starts labelling Pod `name` in `namespace`.
    pub fn spawn(ctx: &Context, name: String, namespace: String) -> Labeller {
        let (tx, patched) = watch::channel(None);
        let resend = Arc::new(Notify::new());
        let task = tokio::spawn(run(ctx.clone(), name, namespace, tx, resend.clone()));
        Labeller {
            task,
            patched,
            resend,
        }
    }

    /// A handle to ask for a resend of the current state.
    pub fn resend(&self) -> Resend {
        Resend {
            notify: self.resend.clone(),
            patched: self.patched.clone(),
        }
    }

    /// Waits (at most `bound`) for the `stopping` label to be published, then stops.
    pub async fn finish(mut self, bound: Duration) {
        let done = self.patched.wait_for(|s| *s == Some(StateName::Stopping));
        if tokio::time::timeout(bound, done).await.is_err() {
            warn!(bound = ?bound, "could not label the Pod `stopping` in time");
        }
        self.task.abort();
    }
}

/// The merge patch that mirrors `status`.
pub fn patch_for(status: &Snapshot) -> Value {
    let since =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(status.since_ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
    let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
    json!({
        "metadata": {
            "labels": { STATE_LABEL: status.state.as_str() },
            "annotations": {
                a("state-since"): since,
                a("node-id"): status.node_id,
                a("leader"): status.leader,
                a("fencing-token"): status.token.map(|t| t.to_string()),
                a("cause"): status.cause.as_str(),
                a("cause-detail"): truncate(&status.cause_detail, 256),
            }
        }
    })
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

async fn run(
    ctx: Context,
    name: String,
    namespace: String,
    patched: watch::Sender<Option<StateName>>,
    resend: Arc<Notify>,
) {
    let mut rx = ctx.published.subscribe();
    let mut api: Option<Api<Pod>> = None;
    let mut last_sent: Option<Value> = None;
    'latest: loop {
        let status = rx.borrow_and_update().clone();
        let patch = patch_for(&status);
        if last_sent.as_ref() != Some(&patch) {
            let mut pause = BACKOFF.0;
            loop {
                match apply(&mut api, &namespace, &name, &patch).await {
                    Ok(()) => {
                        ctx.published.metrics.kube_patches.inc();
                        debug!(pod = %name, state = %status.state, "pod labelled");
                        last_sent = Some(patch);
                        patched.send_replace(Some(status.state));
                        break;
                    }
                    Err(e) => {
                        ctx.published.metrics.kube_patch_errors.inc();
                        warn!(pod = %name, error = %e, retry_in = ?pause, "cannot label pod");
                        // Wait out the pause, unless a different patch is
                        // due first: the latest state replaces the one we
                        // failed to send. (Status updates that leave the
                        // patch as it is, such as each file write, neither
                        // cut the pause short nor restart it.)
                        let retry_at = tokio::time::Instant::now() + pause;
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep_until(retry_at) => break,
                                r = rx.changed() => {
                                    if r.is_err() {
                                        return;
                                    }
                                    if patch_for(&rx.borrow_and_update()) != patch {
                                        continue 'latest;
                                    }
                                }
                            }
                        }
                        pause = (pause * 2).min(BACKOFF.1);
                    }
                }
            }
            if rx.has_changed().unwrap_or(false) {
                continue;
            }
        }
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
            }
            () = resend.notified() => {
                // What we sent is no longer on the Pod: send it again.
                last_sent = None;
            }
        }
    }
}

async fn apply(
    api: &mut Option<Api<Pod>>,
    namespace: &str,
    name: &str,
    patch: &Value,
) -> Result<(), KubeError> {
    if api.is_none() {
        *api = Some(Api::namespaced(client().await?, namespace));
    }
    let params = PatchParams::default();
    let patch = Patch::Merge(patch);
    let call = api
        .as_ref()
        .expect("set above")
        .patch(name, &params, &patch);
    bounded("patch", call).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Cause;

    #[test]
    fn the_patch_carries_the_state_label_and_annotations() {
        let status = Snapshot {
            state: StateName::Leader,
            since_ms: 1_767_225_600_000,
            leader: Some("election-1".into()),
            token: Some(42),
            cause: Cause::FirstInQueue,
            last_write_ms: Some(1),
            ..Snapshot::new("election-1")
        };
        let p = patch_for(&status);
        assert_eq!(p["metadata"]["labels"]["election-state"], "leader");
        let ann = &p["metadata"]["annotations"];
        assert_eq!(ann["election/fencing-token"], "42");
        assert_eq!(ann["election/state-since"], "2026-01-01T00:00:00Z");
        assert_eq!(ann["election/node-id"], "election-1");
    }

    #[test]
    fn writes_do_not_change_the_patch() {
        let mut status = Snapshot {
            state: StateName::Attempter,
            since_ms: 0,
            ..Snapshot::new("n")
        };
        let before = patch_for(&status);
        status.last_write_ms = Some(5);
        assert_eq!(before, patch_for(&status));
        assert!(before["metadata"]["annotations"]["election/fencing-token"].is_null());
    }
}
