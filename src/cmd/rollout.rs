//! `election rollout`: brings every Pod of an `OnDelete` election
//! StatefulSet to its update revision with one leader change: the
//! followers first, one at a time, each replacement waited for until it is
//! Ready and back in the election, the leader last.
//!
//! The chart runs it as a post-upgrade and post-rollback hook; an operator
//! can run it from a workstation (kubeconfig). It only decides from what
//! the API server shows ([`crate::k8s::rollout::next`]), so it can be run
//! again at any point: a second run finishes what the first left. Needs
//! `get` on the StatefulSet, `list` on pods and `delete` on its Pods.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use tracing::{debug, info, warn};

use crate::flags::{LogFormat, parse_duration, parse_positive_duration};
use crate::k8s::rollout::{Next, PodView, SetView, Wait, next};
use crate::k8s::{KubeError, bounded, client};

/// Pause between two looks at the StatefulSet and its Pods.
const POLL: Duration = Duration::from_secs(1);

/// Flags of `election rollout`.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    /// Name of the election StatefulSet (its `updateStrategy` must be
    /// `OnDelete`: the chart's `rollout.strategy: leaderLast`).
    #[arg(long, env = "ELECTION_ROLLOUT_STATEFULSET", value_parser = parse_object_name)]
    pub statefulset: String,

    /// Namespace of the StatefulSet [default: the kubeconfig's namespace,
    /// or the Pod's own in a cluster].
    #[arg(long, env = "ELECTION_ROLLOUT_NAMESPACE", value_parser = parse_object_name)]
    pub namespace: Option<String>,

    /// Longest wait for one step: a restarted replica to be Ready and back
    /// in the election (labelled `attempter` or `leader`), a Pod to go, the
    /// controller to see the new template. Past it the rollout stops with
    /// exit 1 and touches nothing more (the leader keeps leading).
    #[arg(long, env = "ELECTION_ROLLOUT_STEP_TIMEOUT", default_value = "5m", value_parser = parse_positive_duration)]
    pub step_timeout: Duration,

    /// How long to wait for exactly one Pod labelled `election-state=leader`
    /// before rolling without that order (an election with no leader, e.g.
    /// every replica unable to reach ZooKeeper, has no leadership to keep).
    #[arg(long, env = "ELECTION_ROLLOUT_LEADER_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub leader_wait: Duration,

    /// Log format (the filter comes from RUST_LOG, default `info`).
    #[arg(long, env = "ELECTION_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A DNS-1123 label or subdomain, as Kubernetes names objects.
fn parse_object_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a Kubernetes object name (lower-case letters, digits, `-`, `.`)"
        ))
    }
}

/// What one look at the API server found.
struct Observed {
    set: SetView,
    pods: Vec<PodView>,
}

/// Runs `election rollout`.
pub async fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let client = client().await?;
    let namespace =
        (args.namespace.clone()).unwrap_or_else(|| client.default_namespace().to_owned());
    let name = args.statefulset.as_str();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let sts = bounded("get statefulset", sets.get(name))
        .await
        .map_err(|e| explain(e, &namespace, name))?;
    let view = SetView::from_statefulset(&sts);
    if view.strategy != "OnDelete" {
        bail!(
            "statefulset {namespace}/{name} has updateStrategy {}: its controller restarts the pods itself, \
             in its own order; election rollout orders them only with OnDelete (chart: rollout.strategy=leaderLast)",
            view.strategy
        );
    }
    let selector = selector(&sts)?;
    info!(statefulset = name, namespace = %namespace, replicas = view.replicas,
        update_revision = view.update_revision.as_deref().unwrap_or(""), selector = %selector, "rollout started");

    let mut step_since = Instant::now();
    let mut leaderless_since: Option<Instant> = None;
    let mut leaderless_ok = false;
    let mut last_wait: Option<Wait> = None;
    let mut restarted: Vec<String> = Vec::new();
    let mut handed_over_by: Option<String> = None;
    loop {
        let decision = match observe(&sets, &pods, name, &selector).await {
            Ok(seen) => {
                let decision = next(&seen.set, &seen.pods, leaderless_ok, &restarted);
                (decision, Some(seen))
            }
            // The API server may be restarting: retried until the step's bound.
            Err(e) if !e.is_forbidden() && !is_not_found(&e) => {
                warn!(error = %e, "cannot read the statefulset or its pods; retrying");
                (Next::Wait(Wait::NotObserved), None)
            }
            Err(e) => return Err(explain(e, &namespace, name)),
        };
        match decision {
            (Next::Done, Some(seen)) => {
                let leader = seen
                    .pods
                    .iter()
                    .find(|p| p.is_leader())
                    .map(|p| p.name.as_str());
                info!(
                    restarted = restarted.len(),
                    leader = leader.unwrap_or(""),
                    update_revision = seen.set.update_revision.as_deref().unwrap_or(""),
                    "rollout done"
                );
                println!(
                    "statefulset {namespace}/{name}: every pod on revision {}, leader {}; restarted: {}; {}",
                    seen.set.update_revision.as_deref().unwrap_or("?"),
                    leader.unwrap_or("none"),
                    if restarted.is_empty() {
                        "none".to_owned()
                    } else {
                        restarted.join(", ")
                    },
                    match &handed_over_by {
                        Some(p) => format!("the leader's pod last ({p})"),
                        None => "no pod labelled leader was restarted".to_owned(),
                    },
                );
                return Ok(ExitCode::SUCCESS);
            }
            (
                Next::Delete {
                    pod,
                    leader,
                    remaining,
                },
                _,
            ) => {
                leaderless_since = None;
                match delete(&pods, &pod).await {
                    Ok(true) => {
                        info!(pod = %pod.name, leader, remaining,
                            revision = pod.revision.as_deref().unwrap_or(""), "pod deleted: its replacement comes at the update revision");
                        restarted.push(pod.name.clone());
                        if leader {
                            handed_over_by = Some(pod.name.clone());
                        }
                        step_since = Instant::now();
                        last_wait = None;
                    }
                    Ok(false) => {
                        debug!(pod = %pod.name, "pod changed since it was read; deciding again")
                    }
                    Err(e) if e.is_forbidden() => return Err(explain(e, &namespace, name)),
                    Err(e) => warn!(pod = %pod.name, error = %e, "cannot delete the pod; retrying"),
                }
            }
            (Next::Wait(wait), _) => {
                if last_wait.as_ref() != Some(&wait) {
                    info!(waiting_for = %wait, "waiting");
                    last_wait = Some(wait.clone());
                }
                if matches!(wait, Wait::NoSingleLeader(_)) {
                    let since = *leaderless_since.get_or_insert_with(Instant::now);
                    if !leaderless_ok && since.elapsed() >= args.leader_wait {
                        warn!(waited = ?args.leader_wait, "not exactly one pod labelled leader: rolling without the leader-last order");
                        leaderless_ok = true;
                        continue;
                    }
                } else {
                    leaderless_since = None;
                }
                if step_since.elapsed() >= args.step_timeout {
                    bail!(
                        "rollout of statefulset {namespace}/{name} stopped: {wait} after {}; restarted so far: {}. \
                         Nothing else was deleted; run `election rollout` (or the helm upgrade) again once it is fixed",
                        humantime::format_duration(args.step_timeout),
                        if restarted.is_empty() {
                            "none".to_owned()
                        } else {
                            restarted.join(", ")
                        },
                    );
                }
            }
            (Next::Done, None) => unreachable!("a decision without an observation is a wait"),
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = terminated() => bail!("stopped by a signal; restarted so far: {}; run it again to finish", restarted.join(", ")),
        }
    }
}

/// Reads the StatefulSet and its Pods.
async fn observe(
    sets: &Api<StatefulSet>,
    pods: &Api<Pod>,
    name: &str,
    selector: &str,
) -> Result<Observed, KubeError> {
    let sts = bounded("get statefulset", sets.get(name)).await?;
    let list = bounded(
        "list pods",
        pods.list(&ListParams::default().labels(selector)),
    )
    .await?;
    Ok(Observed {
        set: SetView::from_statefulset(&sts),
        pods: list
            .items
            .iter()
            .filter_map(|p| PodView::from_pod(name, p))
            .collect(),
    })
}

/// Deletes a Pod if it is still the object that was read (same uid and
/// resourceVersion: a label its daemon changed since then is a new
/// decision). `Ok(false)`: it changed or is gone.
async fn delete(pods: &Api<Pod>, pod: &PodView) -> Result<bool, KubeError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: pod.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match bounded("delete pod", pods.delete(&pod.name, &params)).await {
        Ok(_) => Ok(true),
        Err(KubeError::Api {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 409 || status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The StatefulSet's selector as a label selector string.
fn selector(sts: &StatefulSet) -> anyhow::Result<String> {
    let selector = &sts.spec.selector;
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        bail!(
            "statefulset selector uses matchExpressions; election rollout reads matchLabels only"
        );
    }
    let labels = selector.match_labels.clone().unwrap_or_default();
    if labels.is_empty() {
        bail!("statefulset selector has no matchLabels");
    }
    Ok(labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(","))
}

fn is_not_found(e: &KubeError) -> bool {
    matches!(e, KubeError::Api { source: kube::Error::Api(s), .. } if s.code == 404)
}

/// An error the rollout cannot wait out, in words that say what to do.
fn explain(e: KubeError, namespace: &str, name: &str) -> anyhow::Error {
    if e.is_forbidden() {
        anyhow::anyhow!(
            "{e}: the account needs get on statefulset {namespace}/{name}, list on pods and delete on its pods \
             (the chart's rollout hook has exactly these)"
        )
    } else if is_not_found(&e) {
        anyhow::anyhow!("{e}: no statefulset {namespace}/{name}")
    } else {
        anyhow::Error::new(e)
    }
}

/// SIGTERM or SIGINT (the hook Pod is PID 1: without a handler SIGTERM is ignored).
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_checked() {
        assert!(parse_object_name("election").is_ok());
        assert!(parse_object_name("my-release.election").is_ok());
        for bad in ["", "Election", "-a", "a-", "a/b", "a b"] {
            assert!(parse_object_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_selector_comes_from_match_labels() {
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "election"},
            "spec": {"serviceName": "x", "template": {},
                "selector": {"matchLabels": {"app.kubernetes.io/instance": "e", "app.kubernetes.io/component": "election"}}}
        }))
        .unwrap();
        assert_eq!(
            selector(&sts).unwrap(),
            "app.kubernetes.io/component=election,app.kubernetes.io/instance=e"
        );
    }
}
