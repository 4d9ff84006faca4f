//! Kubernetes: the Pod labeller (the `election-state` label and status
//! annotations on our own Pod) and the operational helpers (Events,
//! stale-label correction, the Lease mirror), and the decision of
//! `election rollout`.

pub mod labeller;
pub mod ops;
pub mod rollout;

use std::time::Duration;

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
