//! Starts and stops the Kubernetes tasks besides the labeller
//! ([`crate::k8s::labeller`]): [`events`], [`stale_labels`] and
//! [`lease_mirror`]. Each is like the labeller: fed by the published
//! status, every API call bounded, failures logged and counted, never
//! anything fed back into the election.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

use super::labeller::Resend;
use super::{PodRef, events, lease_mirror, stale_labels};
use crate::machine::Context;
use crate::names::StateName;

/// The Kubernetes tasks besides the labeller that were started.
pub struct KubeTasks {
    tasks: Vec<JoinHandle<()>>,
    /// The state entered by the last transition the Events task handled
    /// (None when Events are off).
    handled: Option<watch::Receiver<Option<StateName>>>,
}

impl KubeTasks {
    /// Starts the tasks the configuration asks for; `resend` asks the
    /// labeller to send our label again when the stale-label search does
    /// not find our own Pod labelled leader.
    pub fn spawn(ctx: &Context, pod: PodRef, resend: Resend) -> KubeTasks {
        let mut tasks = Vec::new();
        let mut handled = None;
        if ctx.cfg.pod_events {
            let (tx, rx) = watch::channel(None);
            tasks.push(tokio::spawn(events::events(ctx.clone(), pod.clone(), tx)));
            handled = Some(rx);
        }
        if let Some(selector) = ctx.cfg.pod_selector.clone() {
            tasks.push(tokio::spawn(stale_labels::stale(
                ctx.clone(),
                pod.clone(),
                selector,
                resend,
            )));
        }
        if let Some(lease) = ctx.cfg.lease_name.clone() {
            tasks.push(tokio::spawn(lease_mirror::mirror(ctx.clone(), pod, lease)));
        }
        KubeTasks { tasks, handled }
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
