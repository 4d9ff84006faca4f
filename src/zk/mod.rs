//! ZooKeeper plumbing: sessions, their threads, and requests any part of
//! the daemon makes (the election path, stats, child paths).
//!
//! Each client lives on its own thread (see [`SessionThread`]): nothing the
//! client does, even a reconnect loop that never yields, can stall the
//! state machine, the HTTP listeners or signal handling on the daemon's
//! current-thread runtime, and a client we drop cannot outlive its session.
//! Connecting, resuming and settling a session are in [`connect`].
//! The election recipe built on it lives in [`crate::recipe`].

mod connect;
mod error;
pub mod security;
pub mod session;

pub use connect::{Closed, Origin, settle};
pub use error::ZkError;
pub use session::CLIENT_EXPIRY_FACTOR;

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, SessionInfo, SessionState, Stat, StateWatcher,
};

use crate::zk::security::{ZkSecurity, is_open_to_world};
use connect::{ResumeTask, Resumed, SessionThread, close_or_expired, resume};

/// Longest wait for a close acknowledgement while disconnected.
const DISCONNECTED_CLOSE_BOUND: Duration = Duration::from_millis(500);

/// A ZooKeeper client with its session state.
pub struct ZkSession {
    client: Client,
    states: StateWatcher,
    thread: SessionThread,
    /// How to connect this session again.
    origin: Origin,
    /// Since when the session is disconnected, as its states said.
    disconnected_at: Option<Instant>,
    /// A resumption in flight (the client reported `Expired`).
    resuming: Option<ResumeTask>,
    /// Whether the server said the session expired (set by a resumption).
    server_expired: bool,
    /// ACL of every node of the election (see [`crate::zk::security`]).
    acl: Vec<Acl>,
    /// ACL of a missing parent above the election path, shared with others.
    parent_acl: Vec<Acl>,
    /// Whether the session authenticated (then open nodes get restricted).
    authenticated: bool,
}

impl std::fmt::Debug for ZkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkSession")
            .field("id", &self.id_hex())
            .finish()
    }
}

impl ZkSession {
    /// Establishes a new session, bounded by `connect_timeout`, with the
    /// credentials and TLS settings of `security`.
    pub async fn connect(
        servers: &str,
        session_timeout: Duration,
        connect_timeout: Duration,
        security: &ZkSecurity,
    ) -> Result<ZkSession, ZkError> {
        // `connect_timeout` bounds establishing a session only. The ping
        // cadence and the connection timeout come from
        // `session::connection_timeout`; the leader's safety never depends
        // on noticing a disconnection early (its lease does not).
        let origin = Origin {
            servers: servers.into(),
            session_timeout,
            security: security.clone(),
        };
        let (client, thread) = tokio::time::timeout(connect_timeout, origin.connect(None))
            .await
            .map_err(|_| ZkError::ConnectTimeout {
                servers: servers.into(),
                timeout: connect_timeout,
            })??;
        let states = client.state_watcher();
        Ok(ZkSession {
            client,
            states,
            thread,
            origin,
            disconnected_at: None,
            resuming: None,
            server_expired: false,
            acl: security.acl(),
            parent_acl: security.parent_acl(),
            authenticated: security.credentials.is_some(),
        })
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Session id.
    pub fn id(&self) -> i64 {
        self.client.session_id().0
    }

    /// Session id in hex, as ZooKeeper's own tools print it.
    pub fn id_hex(&self) -> String {
        format!("{:#x}", self.id() as u64)
    }

    /// Session timeout negotiated with the server at the latest
    /// (re)connection (a server clamps it to its own bounds).
    pub fn timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    /// [`ZkSession::timeout`] as a value that follows reconnections of
    /// this client (not a resumption, which brings a new client).
    pub fn negotiated_timeout(&self) -> zookeeper_client::NegotiatedTimeout {
        self.client.negotiated_timeout()
    }

    /// Latest session state.
    pub fn state(&self) -> SessionState {
        self.states.peek_state()
    }

    /// A watcher of this session's state, for code that must check it elsewhere.
    pub fn watcher(&self) -> StateWatcher {
        self.client.state_watcher()
    }

    /// The session's id and password, to connect it again.
    pub fn info(&self) -> SessionInfo {
        self.client.session().clone()
    }

    /// How this session was connected.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Waits for the next session state change. When the client reports
    /// `Expired`, which it also does on its own clock, the session is
    /// resumed in the background (see [`session::Resumption`]) and this
    /// reports what the server decided: `SyncConnected` when the session
    /// came back (with a new client: watches set before are gone), or
    /// `Expired`. Cancel safe.
    pub async fn state_changed(&mut self) -> SessionState {
        loop {
            if let Some(task) = self.resuming.as_mut() {
                let outcome = (&mut task.0)
                    .await
                    .unwrap_or_else(|e| Resumed::GaveUp(format!("resumption failed: {e}")));
                self.resuming = None;
                let sid = self.id_hex();
                return match outcome {
                    Resumed::Connected(client, thread) => {
                        info!(session_id = %sid, "the server still held the session the client had given up on; resumed");
                        self.states = client.state_watcher();
                        self.client = client;
                        self.thread = thread;
                        self.disconnected_at = None;
                        SessionState::SyncConnected
                    }
                    Resumed::Expired => {
                        info!(session_id = %sid, "the server confirmed that the session expired");
                        self.server_expired = true;
                        SessionState::Expired
                    }
                    Resumed::GaveUp(why) => {
                        warn!(session_id = %sid, why, "gave the session up without the server's word: it may still be alive there");
                        SessionState::Expired
                    }
                };
            }
            let state = self.states.changed().await;
            match state {
                SessionState::Disconnected => {
                    self.disconnected_at.get_or_insert_with(Instant::now);
                }
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    self.disconnected_at = None;
                }
                SessionState::Expired if !self.server_expired => {
                    info!(session_id = %self.id_hex(), "the client reported the session expired; asking the server");
                    let since = *self.disconnected_at.get_or_insert_with(Instant::now);
                    let task = resume(self.origin.clone(), self.info(), since);
                    self.resuming = Some(ResumeTask(tokio::spawn(task)));
                    continue;
                }
                _ => {}
            }
            return state;
        }
    }

    /// Runs `request`, giving up after one session timeout with
    /// `ConnectionLoss`: requests wait in the client's queue while it is
    /// disconnected, and the daemon keeps its own clock.
    pub async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, zookeeper_client::Error>>,
    ) -> Result<T, zookeeper_client::Error> {
        tokio::time::timeout(self.timeout(), request)
            .await
            .unwrap_or(Err(zookeeper_client::Error::ConnectionLoss))
    }

    /// The ACL of every node this session creates.
    pub fn acls(&self) -> Acls<'_> {
        Acls::new(&self.acl)
    }

    /// Makes sure the persistent election path exists: created with our
    /// ACL, and each missing parent above it with the shared parent ACL
    /// ([`ZkSecurity::parent_acl`]), so that other elections (other
    /// credentials, or none) can still create their paths next to ours.
    /// With credentials, the path and its `children` (those that exist), if
    /// an older version (or anyone) created them open to the world, are
    /// restricted to our ACL; parents above the path are never touched.
    pub async fn ensure_path(&self, path: &str, children: &[&str]) -> Result<(), ZkError> {
        // Look first: creating a node that exists needs CREATE on its
        // parent, which a protected parent may not grant us.
        let exists = stat(&self.client, path).await?;
        if exists.is_none() {
            self.create_with_parents(path).await?;
        }
        if self.authenticated {
            self.restrict_if_open(path).await?;
            for child in children {
                self.restrict_if_open(&child_path(path, child)).await?;
            }
        }
        Ok(())
    }

    /// Creates `path` with our ACL and, bottom-up, each missing ancestor
    /// with the parent ACL (the client's `mkdir` would give every parent
    /// the leaf's ACL). A node is created only after a create of its child
    /// found it missing (`NoNode`), so an existing ancestor is never
    /// created again: that would need CREATE on its own parent, which may
    /// not grant it. `NodeExists` (another replica was quicker) is success.
    async fn create_with_parents(&self, path: &str) -> Result<(), ZkError> {
        let mut missing = vec![path];
        while let Some(&node) = missing.last() {
            let acl = if node == path {
                &self.acl
            } else {
                &self.parent_acl
            };
            let options = CreateMode::Persistent.with_acls(Acls::new(acl));
            match self.client.create(node, b"", &options).await {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {
                    missing.pop();
                }
                Err(zookeeper_client::Error::NoNode) => match parent_path(node) {
                    Some(parent) => missing.push(parent),
                    None => {
                        return Err(ZkError::request(
                            "create",
                            node,
                            zookeeper_client::Error::NoNode,
                        ));
                    }
                },
                Err(source) => return Err(ZkError::request("create", node, source)),
            }
        }
        Ok(())
    }

    /// Replaces the ACL of `path` by ours when it lets the world do more
    /// than read. Only open nodes are touched: an ACL an operator chose
    /// (another identity, no world access) is left as it is.
    async fn restrict_if_open(&self, path: &str) -> Result<(), ZkError> {
        let failed = |op, source| ZkError::request(op, path, source);
        let (acl, stat) = match self.client.get_acl(path).await {
            Ok(found) => found,
            Err(zookeeper_client::Error::NoNode) => return Ok(()),
            Err(e) => return Err(failed("getAcl", e)),
        };
        if !is_open_to_world(&acl) {
            return Ok(());
        }
        match self
            .client
            .set_acl(path, &self.acl, Some(stat.aversion))
            .await
        {
            Ok(_) => {
                info!(path, "node was open to everyone; restricted it to our ACL");
                Ok(())
            }
            // Someone else changed it meanwhile: leave their choice.
            Err(zookeeper_client::Error::BadVersion) => Ok(()),
            Err(e) => {
                warn!(path, error = %e, "cannot restrict the ACL of an open node");
                Err(failed("setAcl", e))
            }
        }
    }

    /// Stops the client without closing the session: its ephemeral nodes
    /// stay until the server expires the session, one session timeout
    /// after it last heard from us, as after a crash. For a leader that
    /// cannot tell whether a commit of its leadership may still land (see
    /// `states::leader`): a successor must not start sooner than that.
    pub fn abandon(self) {
        let ZkSession { client, thread, .. } = self;
        // Dropping the last handle of a client sends the close request;
        // this one is never dropped (a few hundred bytes, once per
        // abandoned session). Ending the session thread drops its runtime
        // and with it the session task and its connection.
        std::mem::forget(client);
        drop(thread);
    }

    /// Closes the session (its ephemeral nodes vanish at once on the server)
    /// and waits, at most `bound`, until the client reports it closed.
    /// Dropping a client and exiting at once would lose the close request.
    /// A session the client reported `Expired` without the server's word
    /// is connected again to be closed for real ([`settle`]). The session
    /// thread ends when this returns, whatever the client did.
    pub async fn close(self, bound: Duration) -> Closed {
        let ZkSession {
            client,
            thread,
            origin,
            resuming,
            server_expired,
            ..
        } = self;
        drop(resuming);
        if server_expired {
            return Closed::Expired;
        }
        match client.state() {
            SessionState::Closed | SessionState::AuthFailed => Closed::Acknowledged,
            SessionState::Expired => {
                let info = client.session().clone();
                drop((client, thread));
                settle(&origin, info, bound).await
            }
            state => {
                // A disconnected client delivers the close only if it
                // reconnects soon; do not hold a stopping daemon for long
                // on that chance.
                let bound = match state {
                    SessionState::Disconnected => bound.min(DISCONNECTED_CLOSE_BOUND),
                    _ => bound,
                };
                let info = client.session().clone();
                match close_or_expired(client, thread, bound).await {
                    Some(closed) => closed,
                    // Reported expired while closing: ask the server.
                    None => settle(&origin, info, bound).await,
                }
            }
        }
    }
}

/// The request got no answer: the connection broke under it (the client
/// reports `ConnectionLoss`, or the socket's own error as `Custom`), or
/// it outlived its bound. It may or may not have landed, and the session
/// itself may be fine: the caller waits for the session's verdict.
pub fn is_unanswered(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error;
    matches!(e, Error::ConnectionLoss | Error::Timeout | Error::Custom(_))
}

/// A request error for logs and causes; `NoAuth` says what to check.
pub fn describe(e: &zookeeper_client::Error) -> String {
    match e {
        zookeeper_client::Error::NoAuth => "not authorized: the ACL does not grant our ZooKeeper \
             identity (check --zk-auth-file / ELECTION_ZK_AUTH against the ACL of the election path)"
            .into(),
        e => e.to_string(),
    }
}

/// Whether a session state means the session is gone for good.
pub fn is_terminal(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::Expired | SessionState::Closed | SessionState::AuthFailed
    )
}

/// The `Stat` of `path`, or `None` when it does not exist; an error names
/// the request ("exists") and the path.
pub async fn stat(client: &Client, path: &str) -> Result<Option<Stat>, ZkError> {
    client
        .check_stat(path)
        .await
        .map_err(|source| ZkError::request("exists", path, source))
}

/// Full path of a child.
pub fn child_path(root: &str, name: &str) -> String {
    format!("{root}/{name}")
}

/// The parent of an absolute path, `None` for `/` and its children (the
/// root always exists).
fn parent_path(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_stop_below_the_root() {
        assert_eq!(parent_path("/election/a/b"), Some("/election/a"));
        assert_eq!(parent_path("/election/a"), Some("/election"));
        assert_eq!(parent_path("/election"), None);
        assert_eq!(parent_path("/"), None);
    }
}
