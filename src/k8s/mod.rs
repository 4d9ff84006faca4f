//! Kubernetes: the Pod labeller (the `election-state` label and status
//! annotations on our own Pod) and the operational helpers (Events,
//! stale-label correction, the Lease mirror).

pub mod labeller;
pub mod ops;
