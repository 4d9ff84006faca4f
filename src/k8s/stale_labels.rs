//! Stale-label correction (`list` on pods): a replica killed without a
//! last patch keeps `election-state=leader`. While leading, the daemon
//! lists the election's Pods labelled leader and decides by fencing token
//! ([`claim_is_stale`]): each leadership's token is strictly higher than
//! the one before (ZooKeeper orders them), and a leader's Pod carries its
//! token (`election/fencing-token`), so a sibling whose token is lower
//! than ours led before us and is stale. An equal or higher token is left
//! alone (then we may be the stale one), and so is everything while our
//! own token is unknown. Wall clocks decide only for a leader label
//! without a token (its daemon died between the label and the token
//! patch, or no daemon wrote it): `election/state-since` before the start
//! of our leadership. The patch carries the resourceVersion read in the
//! list (a precondition: 409 if the sibling relabelled itself meanwhile,
//! and no unconditional retry follows), so a live sibling's fresh label is
//! never overwritten. The label becomes `stale`. The same list shows
//! whether our own Pod says `leader`: if not (something relabelled it),
//! the labeller is asked to send our state again
//! ([`crate::k8s::labeller::Resend`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::events::{event_for, post};
use super::{
    ANNOTATION_PREFIX, KubeError, PodRef, STATE_LABEL, bounded, client, pause_while_leading,
};
use crate::k8s::labeller::Resend;
use crate::machine::Context;
use crate::names::StateName;

/// Value a stale sibling's `election-state` label is corrected to.
pub const STALE: &str = "stale";
/// How often the leader looks for stale siblings.
const STALE_PERIOD: Duration = Duration::from_secs(5);
/// Resends of our own label in a row (one per [`STALE_PERIOD`]) after
/// which the leader stops trying while its Pod stays unlisted.
const MAX_RESENDS: u32 = 3;

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
/// false when the published status is gone.
async fn until_leading_with_token(rx: &mut watch::Receiver<crate::published::Snapshot>) -> bool {
    rx.wait_for(|s| s.state == StateName::Leader && s.token.is_some())
        .await
        .is_ok()
}

/// Corrects stale leader labels every [`STALE_PERIOD`] while leading,
/// until the published status is gone.
pub(super) async fn stale(ctx: Context, pod: PodRef, selector: String, resend: Resend) {
    let mut rx = ctx.published.subscribe();
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
                    ctx.published.metrics.kube_label_resends.inc();
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
                ctx.published.metrics.kube_stale_corrected.inc();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
