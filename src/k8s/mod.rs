//! Kubernetes: the Pod labeller (the `election-state` label and status
//! annotations on our own Pod), the other tasks that show the election in
//! the API (Events, stale-label correction, the Lease mirror, started by
//! [`tasks`]), and the decision of `election rollout`.

pub mod events;
pub mod labeller;
pub mod lease_mirror;
pub mod rollout;
pub mod stale_labels;
pub mod tasks;

use std::time::Duration;

use tokio::sync::watch;

use crate::names::StateName;
use crate::published::Snapshot;

/// Why a call to the Kubernetes API failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No client could be built from the environment.
    #[error("no Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server refused or failed the call.
    #[error("{what}: {source}")]
    Api {
        /// The call.
        what: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The call did not finish within its bound.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The call.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
    /// An object could not be built from its JSON.
    #[error("{what}: {source}")]
    Encode {
        /// The object.
        what: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

impl KubeError {
    /// The call that failed.
    pub fn what(&self) -> &'static str {
        match self {
            KubeError::Client(_) => "building the Kubernetes client",
            KubeError::Api { what, .. }
            | KubeError::Timeout { what, .. }
            | KubeError::Encode { what, .. } => what,
        }
    }

    /// Whether the API server refused the call (403: RBAC or admission).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, KubeError::Api { source: kube::Error::Api(status), .. } if status.is_forbidden())
    }
}

/// Label key carrying the state.
pub const STATE_LABEL: &str = "election-state";
/// Prefix of the annotations.
pub const ANNOTATION_PREFIX: &str = "election/";
/// Bound on one API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The Kubernetes client from the environment (in-cluster or KUBECONFIG),
/// built once, lazily, by whichever task needs it first, and bounded like
/// every call (a failure is retried by the next caller). The labeller,
/// the tasks of [`tasks`] and `election rollout` share it: one
/// connection pool, one TLS configuration per process.
pub async fn client() -> Result<::kube::Client, KubeError> {
    static CLIENT: tokio::sync::OnceCell<::kube::Client> = tokio::sync::OnceCell::const_new();
    CLIENT
        .get_or_try_init(|| async {
            tokio::time::timeout(CALL_TIMEOUT, ::kube::Client::try_default())
                .await
                .map_err(|_| KubeError::Timeout {
                    what: "building the Kubernetes client",
                    after: CALL_TIMEOUT,
                })?
                .map_err(KubeError::Client)
        })
        .await
        .cloned()
}

/// Runs one API call within [`CALL_TIMEOUT`].
pub async fn bounded<T>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, ::kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(KubeError::Api { what, source }),
        Err(_) => Err(KubeError::Timeout {
            what,
            after: CALL_TIMEOUT,
        }),
    }
}

/// Which Pod this replica is, as the Kubernetes tasks need it.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod uid (Events name their object by uid too).
    pub uid: Option<String>,
}

/// Waits until this replica leads; returns false when the published
/// status is gone.
pub(crate) async fn until_leading(rx: &mut watch::Receiver<Snapshot>) -> bool {
    rx.wait_for(|s| s.state == StateName::Leader).await.is_ok()
}

/// Sleeps `period` unless the state changes first; false once the
/// published status is gone.
pub(crate) async fn pause_while_leading(
    rx: &mut watch::Receiver<Snapshot>,
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
