//! Session health shared by Attempter and Leader.
//!
//! The client reports `Disconnected` when its server goes quiet, then keeps
//! reconnecting with the same session. Whether the session is still alive
//! is the server's call: it answers `Expired` when it dropped the session,
//! and a server that restarted with its data restores its sessions with a
//! fresh timeout. So a disconnected session is kept (suspended: a leader
//! does not write until it confirms its node again) until the server says
//! `Expired`, or the client gives up by itself after
//! [`CLIENT_EXPIRY_FACTOR`] session timeouts.
//!
//! A reconnect that the server answers with another session id than ours
//! (ClickHouse Keeper does so for a session it dropped, where ZooKeeper
//! answers id 0) is reported by the client as `Expired` too (vendored
//! patch 0007): our ephemeral nodes went with the old session, and
//! `Client::session_id()` would still show the old id.
//!
//! The daemon still keeps its own clock, as a safety net against a client
//! that never reports anything: after [`GIVE_UP_FACTOR`] session timeouts
//! of disconnection the session is treated as lost and rebuilt.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use zookeeper_client::SessionState;

use crate::machine::{Cause, Context, Reason};
use crate::zk::CLIENT_EXPIRY_FACTOR;

/// How long, in session timeouts, a session may stay disconnected before
/// the daemon gives it up on its own clock. Longer than the client's own
/// bound ([`CLIENT_EXPIRY_FACTOR`], counted from the last reply, which is
/// earlier than the disconnection), so the client normally reports first.
pub const GIVE_UP_FACTOR: u32 = CLIENT_EXPIRY_FACTOR + 2;

/// The cause logged when the safety net gives a session up.
pub const GIVE_UP_CAUSE: &str = "disconnected for 8 session timeouts (safety net)";

/// Why a state leaves when the safety net gives its session up.
pub fn gave_up() -> Reason {
    Cause::SessionLost.because(GIVE_UP_CAUSE)
}

/// What a session state change means for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Connected (again).
    Connected,
    /// Disconnected: stop acting, wait for reconnection or the deadline.
    Suspended,
    /// The session is gone for good (always [`Cause::SessionLost`]).
    Lost(Reason),
}

/// Tracks since when the session is disconnected.
#[derive(Debug, Clone)]
pub struct Liveness {
    lost_since: Option<Instant>,
    timeout: Duration,
}

impl Liveness {
    /// For a session with this timeout, currently in `state`.
    pub fn new(timeout: Duration, state: SessionState) -> Liveness {
        let mut l = Liveness {
            lost_since: None,
            timeout,
        };
        l.observe(state);
        l
    }

    /// Folds in a new state and says what it means.
    pub fn observe(&mut self, state: SessionState) -> Health {
        match state {
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                self.lost_since = None;
                Health::Connected
            }
            SessionState::Disconnected => {
                self.lost_since.get_or_insert_with(Instant::now);
                Health::Suspended
            }
            SessionState::AuthFailed => Health::Lost(
                Cause::SessionLost
                    .because("session AuthFailed: ZooKeeper rejected the session's credentials"),
            ),
            s => Health::Lost(Cause::SessionLost.because(format!("session {s:?}"))),
        }
    }

    /// When the daemon gives the session up, if it is disconnected.
    pub fn deadline(&self) -> Option<Instant> {
        self.lost_since.map(|t| t + self.give_up_after())
    }

    /// How long a disconnection may last before the daemon gives up.
    pub fn give_up_after(&self) -> Duration {
        self.timeout * GIVE_UP_FACTOR
    }

    /// Whether it is connected now.
    pub fn is_connected(&self) -> bool {
        self.lost_since.is_none()
    }
}

/// Sleeps until the disconnection deadline; never returns while connected.
pub async fn until_deadline(l: &Liveness) {
    match l.deadline() {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Logs and counts a state change, and folds it into `l`.
pub fn on_state(ctx: &Context, l: &mut Liveness, state: SessionState) -> Health {
    ctx.board.zk_event(&format!("{state:?}"));
    let health = l.observe(state);
    match &health {
        Health::Connected => info!(?state, "ZooKeeper session connected"),
        Health::Suspended => {
            warn!(?state, give_up_in = ?l.give_up_after(), "ZooKeeper session disconnected; suspended until it reconnects or the server expires it")
        }
        Health::Lost(why) => warn!(?state, why = %why.detail, "ZooKeeper session lost"),
    }
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_disconnection_gets_a_deadline_of_several_session_timeouts() {
        let mut l = Liveness::new(Duration::from_secs(2), SessionState::SyncConnected);
        assert_eq!(l.deadline(), None);
        let t0 = Instant::now();
        assert_eq!(l.observe(SessionState::Disconnected), Health::Suspended);
        tokio::time::advance(Duration::from_millis(500)).await;
        // A second Disconnected does not push the deadline back.
        l.observe(SessionState::Disconnected);
        assert_eq!(
            l.deadline(),
            Some(t0 + Duration::from_secs(2) * GIVE_UP_FACTOR)
        );
        assert_eq!(l.observe(SessionState::SyncConnected), Health::Connected);
        assert_eq!(l.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn until_deadline_fires_after_the_give_up_time() {
        let mut l = Liveness::new(Duration::from_secs(2), SessionState::SyncConnected);
        l.observe(SessionState::Disconnected);
        let t0 = Instant::now();
        until_deadline(&l).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(2) * GIVE_UP_FACTOR);
    }

    #[test]
    fn the_give_up_cause_names_the_factor() {
        assert!(GIVE_UP_CAUSE.contains(&format!("{GIVE_UP_FACTOR} session timeouts")));
    }

    #[test]
    fn expiry_is_lost() {
        let mut l = Liveness::new(Duration::from_secs(2), SessionState::SyncConnected);
        assert!(matches!(l.observe(SessionState::Expired), Health::Lost(_)));
        assert!(matches!(l.observe(SessionState::Closed), Health::Lost(_)));
    }
}
