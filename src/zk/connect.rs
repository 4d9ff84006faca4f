//! Connecting a session on a thread of its own, connecting it again
//! after the client gave up on it (resumption, rules in
//! [`super::session::Resumption`]), and closing it for real ([`settle`]).

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;
use zookeeper_client::{Client, SessionInfo, SessionState};

use super::error::ZkError;
use super::security::ZkSecurity;
use super::session;

/// How a session ended, as far as the server is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The server acknowledged our close: its nodes are gone.
    Acknowledged,
    /// The server said the session expired: its nodes are gone.
    Expired,
    /// No server said anything: the session, and its nodes, may still be
    /// alive there until the server expires it.
    Unknown,
}

impl Closed {
    /// Whether the session's nodes are known to be gone.
    pub fn is_settled(self) -> bool {
        self != Closed::Unknown
    }
}

/// What connecting needs, kept to connect the same session again.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Connect string.
    pub servers: String,
    /// Requested session timeout.
    pub session_timeout: Duration,
    /// Credentials and TLS.
    pub security: ZkSecurity,
}

impl Origin {
    /// Connects (a new session, or `session` again) on a session thread:
    /// one pass over the servers.
    pub(super) async fn connect(
        &self,
        session: Option<SessionInfo>,
    ) -> Result<(Client, SessionThread), ZkError> {
        // fail_eagerly: one pass over the servers, then an error, so that
        // our own backoff (not the client's tight loop) paces the retries.
        let connector = Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(session::connection_timeout(self.session_timeout))
            .with_fail_eagerly();
        let connector = match session {
            Some(info) => connector.with_session(info),
            None => connector,
        };
        // The TLS files are read off the runtime thread (a hung mount);
        // callers bound the whole connect more tightly.
        let connector = apply_off_thread(connector, &self.security, self.session_timeout).await?;
        SessionThread::connect(connector, &self.servers, self.security.tls.is_some())
            .await
            .map_err(|cause| ZkError::Connect {
                servers: self.servers.clone(),
                cause,
            })
    }
}

/// Connects `info` again and closes it for real, within `bound`: for a
/// session the client gave up on, which the server may still hold.
pub async fn settle(origin: &Origin, info: SessionInfo, bound: Duration) -> Closed {
    let id = info.id().0;
    let attempt = tokio::time::timeout(bound, origin.connect(Some(info))).await;
    match attempt {
        Ok(Ok((client, thread))) if client.session_id().0 == id => {
            let closed = close_client(client, thread, bound).await;
            info!(session_id = %format!("{:#x}", id as u64), ?closed, "reconnected a session the client had given up on, to close it");
            closed
        }
        // Another session: ours is unknown to the server.
        Ok(Ok(_)) => Closed::Expired,
        Ok(Err(e))
            if e.client_error()
                .is_some_and(|e| matches!(e, zookeeper_client::Error::SessionExpired)) =>
        {
            Closed::Expired
        }
        _ => Closed::Unknown,
    }
}

/// Drops `client` (which sends the close request) and waits, at most
/// `bound`, for the client to report it closed.
async fn close_client(client: Client, thread: SessionThread, bound: Duration) -> Closed {
    close_or_expired(client, thread, bound)
        .await
        .unwrap_or(Closed::Unknown)
}

/// Like [`close_client`]; `None` when the client reported the session
/// expired instead: on its own clock, or because the server answered a
/// reconnection so (the close landed and the connection broke before its
/// answer was read). Only the server's word can tell the two apart.
pub(super) async fn close_or_expired(
    client: Client,
    _thread: SessionThread,
    bound: Duration,
) -> Option<Closed> {
    let mut states = client.state_watcher();
    match client.state() {
        SessionState::Closed => return Some(Closed::Acknowledged),
        SessionState::Expired => return None,
        _ => {}
    }
    drop(client);
    let ended = tokio::time::timeout(bound, async {
        loop {
            match states.changed().await {
                SessionState::Closed => return Some(Closed::Acknowledged),
                SessionState::Expired => return None,
                SessionState::AuthFailed => return Some(Closed::Unknown),
                _ => {}
            }
        }
    });
    ended.await.unwrap_or(Some(Closed::Unknown))
}

/// How a resumption (see [`session::Resumption`]) ended.
pub(super) enum Resumed {
    Connected(Client, SessionThread),
    Expired,
    GaveUp(String),
}

/// A resumption running in the background: aborted when dropped.
pub(super) struct ResumeTask(pub(super) tokio::task::JoinHandle<Resumed>);

impl Drop for ResumeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects `info` again until a server decides, or [`session::Resumption`]
/// gives up.
pub(super) async fn resume(origin: Origin, info: SessionInfo, disconnected_at: Instant) -> Resumed {
    let mut rules = session::Resumption::new(disconnected_at, origin.session_timeout);
    let conn_timeout = session::connection_timeout(origin.session_timeout);
    let id = info.id().0;
    loop {
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            origin.session_timeout * 2,
            origin.connect(Some(info.clone())),
        )
        .await;
        let failed = match attempt {
            Ok(Ok((client, thread))) if client.session_id().0 == id => {
                return Resumed::Connected(client, thread);
            }
            // The server handed out another session (ZooKeeper never
            // does; some compatible servers do): ours is over there.
            Ok(Ok(_)) => session::Attempt::Expired,
            Ok(Err(e)) => match e.client_error() {
                Some(c) => session::classify(c, started.elapsed(), conn_timeout),
                None => session::Attempt::Unanswered,
            },
            Err(_) => session::Attempt::Unanswered,
        };
        match rules.after(failed, Instant::now()) {
            session::Verdict::Retry => tokio::time::sleep(rules.pause()).await,
            session::Verdict::Expired => return Resumed::Expired,
            session::Verdict::GiveUp(why) => return Resumed::GaveUp(why),
        }
    }
}

/// The dedicated thread and runtime that run one client's session task.
///
/// zookeeper-client spawns its session task on the runtime that connects;
/// here that is a current-thread runtime on a thread of its own, so the
/// task can never take the daemon's runtime away from the state machine,
/// the listeners and the signal handler. The client's requests and state
/// changes travel over channels, so they are awaited from the daemon's
/// runtime as before. Dropping this ends the thread and drops its runtime,
/// which cancels the session task: an abandoned client stops reconnecting.
pub(super) struct SessionThread {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SessionThread {
    /// Connects with `connector` on a new session thread.
    async fn connect(
        connector: zookeeper_client::Connector,
        servers: &str,
        tls: bool,
    ) -> Result<(Client, SessionThread), zookeeper_client::Error> {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (done, connected) = tokio::sync::oneshot::channel();
        let servers = servers.to_owned();
        let body = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = done.send(Err(zookeeper_client::Error::UnexpectedError(format!(
                        "cannot build the session runtime: {e}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                // With TLS every server is reached over TLS (the plain
                // port is never tried).
                let connecting = async {
                    if tls {
                        connector.secure_connect(&servers).await
                    } else {
                        connector.connect(&servers).await
                    }
                };
                tokio::select! {
                    r = connecting => {
                        let _ = done.send(r);
                    }
                    _ = &mut stopped => return,
                }
                // Serve the session task until the owner goes away.
                let _ = stopped.await;
            });
        };
        std::thread::Builder::new()
            .name("zk-session".into())
            .spawn(body)
            .map_err(|e| {
                zookeeper_client::Error::UnexpectedError(format!(
                    "cannot start a session thread: {e}"
                ))
            })?;
        let client = connected.await.unwrap_or_else(|_| {
            Err(zookeeper_client::Error::UnexpectedError(
                "the session thread ended".into(),
            ))
        })?;
        Ok((client, SessionThread { _stop: stop }))
    }
}

/// Adds credentials and TLS to `connector`. The PEM files are read at
/// every connect (a rotated certificate is picked up), on a thread of
/// their own and for at most `bound`: a read that hangs (a hung mount)
/// must not stall the runtime, which also serves SIGTERM and the probes.
/// Such a thread stays blocked until its read returns.
async fn apply_off_thread(
    connector: zookeeper_client::Connector,
    security: &ZkSecurity,
    bound: Duration,
) -> Result<zookeeper_client::Connector, ZkError> {
    if security.tls.is_none() {
        return Ok(security.apply(connector)?);
    }
    let (done, read) = tokio::sync::oneshot::channel();
    let security = security.clone();
    std::thread::Builder::new()
        .name("zk-tls-read".into())
        .spawn(move || {
            let _ = done.send(security.apply(connector));
        })
        .map_err(|e| ZkError::TlsRead(format!("cannot start a thread: {e}")))?;
    match tokio::time::timeout(bound, read).await {
        Ok(Ok(applied)) => Ok(applied?),
        Ok(Err(_)) => Err(ZkError::TlsRead("the reading thread ended".into())),
        Err(_) => Err(ZkError::TlsRead(format!(
            "reading the TLS files took longer than {bound:?} (a hung file system?)"
        ))),
    }
}
