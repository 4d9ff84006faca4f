//! Session health shared by Attempter and Leader, and the daemon's
//! policy for a session the client gave up on.
//!
//! The client reports `Disconnected` when its server goes quiet, then keeps
//! reconnecting with the same session for `7/5` of the session timeout
//! (upstream's rule), then reports `Expired` on its own clock. Whether the
//! session is still alive is the server's call: a server that restarted
//! with its data restores its sessions with a fresh timeout. So a session
//! the client reported `Expired` is *resumed*: the daemon connects again
//! with the same session ([`crate::zk::ZkSession`], upstream's
//! `Connector::with_session`) and lets the server decide, under the rules
//! of [`Resumption`]. A session given up without the server's word may be
//! alive there: it is never taken for closed.
//!
//! A reconnect that the server answers with another session id than ours
//! (ClickHouse Keeper does so for a session it dropped, where ZooKeeper
//! answers id 0) goes unreported by the client, and `Client::session_id()`
//! still shows the old id: the Attempter's create sees the new owner and
//! ends the session ([`crate::zk::ZkError::SessionReplaced`]); a resumption
//! with a new client compares its id.
//!
//! The daemon still keeps its own clock, as a safety net against a client
//! that never reports anything: after [`GIVE_UP_FACTOR`] session timeouts
//! of disconnection the session is treated as lost and rebuilt.

use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client::SessionState;

use crate::names::{Cause, Reason};

/// How long, in session timeouts since the disconnection, a session is
/// kept while no server answers: the client reports `Expired` on its own
/// after `7/5` of the session timeout, and the daemon then resumes it
/// ([`Resumption`]) up to this bound. The server decides whether a
/// session expired: one that restarts with its data restores its sessions
/// with a fresh timeout. See `docs/design.md`.
pub const CLIENT_EXPIRY_FACTOR: u32 = 6;

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

/// The client's connection timeout for a session of `session_timeout`
/// (upstream's `Connector::with_connection_timeout`): an idle connection
/// pings after `3/8` of it and counts as lost after all of it without a
/// byte from the server. Upstream honours it only up to `3/5` of the
/// negotiated session timeout (above, it falls back to its default,
/// `2/5`): so `3/5`, a ping every `9/40` of the session timeout (450 ms
/// for 2 s) and a connection lost after `3/5`. The one place the ping
/// cadence is chosen.
pub fn connection_timeout(session_timeout: Duration) -> Duration {
    session_timeout * 3 / 5
}

/// The longest the client leaves its connection silent: it pings on its
/// tick (`1/8` of the connection timeout) once `3/8` of it has passed since
/// it last sent anything, so `1/2` of the connection timeout, `3/10` of the
/// session timeout. When the server negotiates a shorter session than we
/// asked for, upstream falls back to a tick of `1/20` of it and a silence
/// of `1/5`; a longer one keeps ours: `3/10` of the negotiated timeout
/// bounds all three. The lease is sized from this (see
/// [`crate::lease::earliest_expiry`]): change both together.
pub fn longest_silence(session_timeout: Duration) -> Duration {
    connection_timeout(session_timeout) / 2
}

/// How long, in session timeouts since the disconnection, the daemon
/// keeps resuming a session while no server can be reached at all.
pub const RESUME_FACTOR: u32 = CLIENT_EXPIRY_FACTOR;

/// How one attempt to resume a session (connect with its id and
/// password, one pass over the servers) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A server answered `Expired` (or handed out another session): the
    /// session is over, its nodes are gone.
    Expired,
    /// Every server failed at connect (down, refused port): nobody holds a
    /// connection that could keep the session alive.
    Down,
    /// A server took the connection and closed it unanswered at once: not
    /// serving yet (no quorum, still loading).
    Refused,
    /// A server took the connection and did not answer in time: the link
    /// may be half-open, and then our attempts keep the session alive.
    Unanswered,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after a pause.
    Retry,
    /// The server said the session is over.
    Expired,
    /// Stop trying: the session may still be alive on the server.
    GiveUp(String),
}

/// The daemon's rules for resuming a session the client gave up on:
///
/// 1. a server answers `Expired`: over;
/// 2. no server reachable at all: retry until [`RESUME_FACTOR`] session
///    timeouts since the disconnection (a server restarting with its data
///    restores the session);
/// 3. servers refuse (close the connect request unanswered): retry for half
///    a session timeout from the first refusal, then give up;
/// 4. a server takes the connection and answers nothing: give up at once
///    (the client already waited `7/5` of the session timeout, and on a
///    half-open link every attempt keeps the session alive on the server),
///    unless this resumption saw the servers down or refusing before: then
///    it is a server starting (its port open before it can answer, as a
///    JVM on a loaded machine), retried within the budget of rule 2.
#[derive(Debug, Clone)]
pub struct Resumption {
    disconnected_at: Instant,
    refused_since: Option<Instant>,
    /// Whether an attempt found the servers down or refusing.
    seen_not_serving: bool,
    timeout: Duration,
}

impl Resumption {
    /// For a session of `timeout` disconnected since `disconnected_at`.
    pub fn new(disconnected_at: Instant, timeout: Duration) -> Resumption {
        Resumption {
            disconnected_at,
            refused_since: None,
            seen_not_serving: false,
            timeout,
        }
    }

    /// What to do after `attempt` failed at `now`.
    pub fn after(&mut self, attempt: Attempt, now: Instant) -> Verdict {
        let disconnected = now.saturating_duration_since(self.disconnected_at);
        let within_budget = disconnected < self.timeout * RESUME_FACTOR;
        match attempt {
            Attempt::Expired => Verdict::Expired,
            Attempt::Unanswered if self.seen_not_serving && within_budget => Verdict::Retry,
            Attempt::Unanswered if self.seen_not_serving => Verdict::GiveUp(format!(
                "servers down or not answering for {RESUME_FACTOR} session timeouts"
            )),
            Attempt::Unanswered => {
                Verdict::GiveUp("a server took the connection but did not answer".into())
            }
            Attempt::Refused => {
                self.seen_not_serving = true;
                let since = *self.refused_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.timeout / 2 {
                    Verdict::GiveUp("servers refused the session for half a session timeout".into())
                } else {
                    Verdict::Retry
                }
            }
            Attempt::Down => {
                self.seen_not_serving = true;
                if within_budget {
                    Verdict::Retry
                } else {
                    Verdict::GiveUp(format!(
                        "no server reachable for {RESUME_FACTOR} session timeouts"
                    ))
                }
            }
        }
    }

    /// The pause before the next attempt: between half and all of a tenth
    /// of the session timeout (jittered, so replicas do not come back in
    /// step).
    pub fn pause(&self) -> Duration {
        let cap = self.timeout / 10;
        cap / 2 + cap.mul_f64(rand::random::<f64>() / 2.0)
    }
}

/// Classifies a failed resume attempt from the client's error and how
/// long the attempt took (`conn_timeout`: the client's connection timeout).
pub fn classify(e: &zookeeper_client::Error, took: Duration, conn_timeout: Duration) -> Attempt {
    use zookeeper_client::Error;
    match e {
        Error::SessionExpired | Error::SessionMoved => Attempt::Expired,
        // The fork's change 3: every server failed at connect.
        e if e.to_string().contains("last connection error") => Attempt::Down,
        Error::NoHosts | Error::ConnectionLoss if took < conn_timeout => Attempt::Refused,
        _ => Attempt::Unanswered,
    }
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
    fn resuming_waits_for_servers_that_are_down_but_not_for_silent_ones() {
        let t = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut r = Resumption::new(t0, t);
        assert_eq!(r.after(Attempt::Down, t0 + t * 2), Verdict::Retry);
        assert!(matches!(
            r.after(Attempt::Down, t0 + t * RESUME_FACTOR),
            Verdict::GiveUp(_)
        ));
        assert_eq!(r.after(Attempt::Expired, t0 + t), Verdict::Expired);
        // A server that takes the connection and stays silent, never seen
        // down (a half-open link): given up at once.
        let mut r = Resumption::new(t0, t);
        assert!(matches!(
            r.after(Attempt::Unanswered, t0 + t),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn a_server_that_was_down_and_now_does_not_answer_is_starting_and_waited_for() {
        // A server that was down, then takes connections it cannot answer
        // in time yet (a JVM starting on a loaded machine): retried within
        // the budget of a server that is down.
        let t = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut r = Resumption::new(t0, t);
        assert_eq!(r.after(Attempt::Down, t0 + t * 2), Verdict::Retry);
        assert_eq!(r.after(Attempt::Unanswered, t0 + t * 3), Verdict::Retry);
        assert_eq!(r.after(Attempt::Unanswered, t0 + t * 4), Verdict::Retry);
        assert!(matches!(
            r.after(Attempt::Unanswered, t0 + t * RESUME_FACTOR),
            Verdict::GiveUp(_)
        ));
        // and so is one that refused first (not serving yet)
        let mut r = Resumption::new(t0, t);
        assert_eq!(r.after(Attempt::Refused, t0 + t * 2), Verdict::Retry);
        assert_eq!(r.after(Attempt::Unanswered, t0 + t * 3), Verdict::Retry);
    }

    #[test]
    fn refusals_are_tolerated_for_half_a_session_timeout() {
        let t = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut r = Resumption::new(t0, t);
        assert_eq!(r.after(Attempt::Refused, t0 + t * 2), Verdict::Retry);
        assert_eq!(
            r.after(Attempt::Refused, t0 + t * 2 + t / 4),
            Verdict::Retry
        );
        assert!(matches!(
            r.after(Attempt::Refused, t0 + t * 2 + t / 2),
            Verdict::GiveUp(_)
        ));
        let p = r.pause();
        assert!(p >= t / 20 && p <= t / 10, "{p:?}");
    }

    #[test]
    fn resume_errors_are_classified() {
        use zookeeper_client::Error;
        let ct = Duration::from_millis(1200);
        let quick = Duration::from_millis(5);
        assert_eq!(
            classify(&Error::SessionExpired, quick, ct),
            Attempt::Expired
        );
        let down =
            Error::UnexpectedError("no available hosts; last connection error: x: refused".into());
        assert_eq!(classify(&down, quick, ct), Attempt::Down);
        assert_eq!(classify(&Error::NoHosts, quick, ct), Attempt::Refused);
        assert_eq!(classify(&Error::NoHosts, ct, ct), Attempt::Unanswered);
        assert_eq!(classify(&Error::Timeout, quick, ct), Attempt::Unanswered);
    }

    #[test]
    fn the_connection_timeout_stays_where_upstream_honours_it() {
        let t = Duration::from_secs(2);
        assert!(connection_timeout(t) <= t * 3 / 5);
    }

    #[test]
    fn expiry_is_lost() {
        let mut l = Liveness::new(Duration::from_secs(2), SessionState::SyncConnected);
        assert!(matches!(l.observe(SessionState::Expired), Health::Lost(_)));
        assert!(matches!(l.observe(SessionState::Closed), Health::Lost(_)));
    }
}
