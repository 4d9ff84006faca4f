//! The Lease mirror (`coordination.k8s.io/v1`): while leading, the daemon
//! keeps a Lease whose `holderIdentity` is its Pod, `renewTime` renewed
//! every [`LEASE_RENEW`]. A read-only mirror for tools: nothing in the
//! election reads it. The chart creates the Lease (with its labels, so
//! that `helm uninstall` removes it) and grants only `get`, `update` and
//! `patch` on it: the daemon updates the spec of an existing Lease and
//! keeps its metadata; it creates the Lease only when it is absent, and
//! if that is refused (403) it says so once and only reads afterwards.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, PostParams};
use serde_json::json;
use tracing::{debug, warn};

use super::{KubeError, PodRef, bounded, client, pause_while_leading, until_leading};
use crate::machine::Context;

/// How often the leader renews the Lease mirror.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// `leaseDurationSeconds` of the mirror: three missed renewals.
const LEASE_SECONDS: i32 = 15;

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

/// Keeps the Lease `name` held by our Pod while leading, until the published status
/// is gone.
pub(super) async fn mirror(ctx: Context, pod: PodRef, name: String) {
    let mut rx = ctx.published.subscribe();
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
                ctx.published.metrics.kube_lease_writes.inc();
                debug!(lease = %name, "lease mirror renewed");
            }
            Ok(Renewal::Absent) => {
                ctx.published.metrics.kube_lease_errors.inc();
                debug!(lease = %name, "lease mirror absent; not creating it again");
            }
            Err(e) if e.is_forbidden() && e.what() == CREATE_LEASE => {
                ctx.published.metrics.kube_lease_errors.inc();
                create_refused = true;
                warn!(lease = %name, error = %e,
                    "cannot create the lease mirror: RBAC grants no `create` on leases (the chart creates the Lease itself); \
                     it will be updated once it exists");
            }
            Err(e) => {
                ctx.published.metrics.kube_lease_errors.inc();
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
}
