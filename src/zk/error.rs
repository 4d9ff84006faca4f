//! Errors of ZooKeeper operations.

use std::time::Duration;

use super::security;

/// Errors of ZooKeeper operations, one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// No session could be established. (`cause`, not `source`: the
    /// message already holds it, and `{:#}` would print it twice.)
    #[error("cannot connect to ZooKeeper {servers}: {cause}")]
    Connect {
        servers: String,
        cause: zookeeper_client::Error,
    },
    /// The TLS files could not be read or parsed.
    #[error("ZooKeeper TLS settings: {0}")]
    Tls(#[from] security::AccessError),
    /// The TLS files could not be read in time.
    #[error("ZooKeeper TLS files: {0}")]
    TlsRead(String),
    /// Establishing a session took longer than allowed.
    #[error("no ZooKeeper session with {servers} within {timeout:?}")]
    ConnectTimeout { servers: String, timeout: Duration },
    /// ZooKeeper refused a request: the node's ACL does not grant our
    /// identity (no credentials, or other ones than the ACL names).
    #[error(
        "ZooKeeper {op} {path}: not authorized (the ACL does not grant our identity: \
         check --zk-auth-file / ELECTION_ZK_AUTH against the ACL of the election path)"
    )]
    NotAuthorized { op: &'static str, path: String },
    /// A node our session created is owned by another session: the
    /// client reconnected and the server handed out a new session id
    /// (ClickHouse Keeper does so for a session it dropped, where
    /// ZooKeeper answers `Expired`). Our session is over there, its nodes
    /// are gone, and the client still reports the old id.
    #[error(
        "ZooKeeper handed out another session on reconnection: {path} is owned by {owner:#x}, \
         not by our session {ours:#x}"
    )]
    SessionReplaced { path: String, owner: i64, ours: i64 },
    /// A request failed.
    #[error("ZooKeeper {op} {path} failed: {source}")]
    Request {
        op: &'static str,
        path: String,
        source: zookeeper_client::Error,
    },
}

impl ZkError {
    /// A failed request; `NoAuth` becomes [`ZkError::NotAuthorized`].
    pub fn request(op: &'static str, path: &str, source: zookeeper_client::Error) -> ZkError {
        match source {
            zookeeper_client::Error::NoAuth => ZkError::NotAuthorized {
                op,
                path: path.into(),
            },
            source => ZkError::Request {
                op,
                path: path.into(),
                source,
            },
        }
    }

    /// The client's error behind a failed request (`NoAuth` for
    /// [`ZkError::NotAuthorized`]), if there is one.
    pub fn client_error(&self) -> Option<&zookeeper_client::Error> {
        match self {
            ZkError::Request { source, .. } => Some(source),
            ZkError::Connect { cause, .. } => Some(cause),
            ZkError::NotAuthorized { .. } => Some(&zookeeper_client::Error::NoAuth),
            ZkError::Tls(_)
            | ZkError::TlsRead(_)
            | ZkError::ConnectTimeout { .. }
            | ZkError::SessionReplaced { .. } => None,
        }
    }
}
