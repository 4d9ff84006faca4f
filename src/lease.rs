//! The leader's lease: how long a confirmation from ZooKeeper lets it write.
//!
//! ZooKeeper expires a session no earlier than one session timeout after it
//! last heard from the client, but "heard" means the ZooKeeper leader: a
//! follower passes a session's activity on only every `tickTime / 2`. A
//! leader that sent a confirming request at `t0` and got a good answer
//! therefore still owns its node until at least [`earliest_expiry`] after
//! `t0`; its lease ([`lease_bound`]) ends a twentieth of the session
//! timeout before that, and never later than half the session timeout.
//! The arithmetic is in `docs/design.md` (the margin of the lease).
//!
//! Time is kept on two clocks, and the lease holds only while both agree:
//! the monotonic clock ([`tokio::time::Instant`], which tests can pause) and
//! `CLOCK_BOOTTIME`, which also counts time the machine spent suspended
//! (a host suspend or a VM whose guest is told about the pause stops the
//! monotonic clock, not this one). Wall-clock jumps move neither, and a
//! process frozen by SIGSTOP finds its lease long gone when it wakes up.
//!
//! A confirmation whose answer took longer than [`Lease::max_round_trip`]
//! (a quarter of the session timeout) is not trusted at all: a server cut
//! off from the ZooKeeper leader keeps answering for a while, and a late
//! answer may vouch for a session the ensemble has already expired.

use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client::NegotiatedTimeout;

/// A point in time on both of the lease's clocks (and on the wall clock,
/// only to report it).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    mono: Instant,
    boot: Duration,
    wall: std::time::SystemTime,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            boot: boottime(),
            wall: std::time::SystemTime::now(),
        }
    }

    /// Time since this stamp, as the monotonic clock tells it.
    pub fn elapsed(&self) -> Duration {
        self.mono.elapsed()
    }
}

/// `CLOCK_BOOTTIME`: monotonic, and counting time spent in suspend.
fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on
    // every Linux since 2.6.39. On failure `ts` stays zero, which only
    // makes the lease look older (fail safe would need a fallback: the
    // monotonic check still applies).
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Where the lease reads the session timeout from.
#[derive(Debug, Clone)]
enum Timeout {
    /// A fixed value (tests, bounds).
    Fixed(Duration),
    /// As the server negotiated it at the session's latest (re)connection:
    /// a server clamps it to its own `minSessionTimeout` and
    /// `maxSessionTimeout`, so it changes when the client moves to another
    /// server. The client updates it before it reports the session
    /// connected again (vendored patch 0004).
    Negotiated(NegotiatedTimeout),
    /// Changed by hand (unit tests of a renegotiation).
    #[cfg(test)]
    Shared(std::sync::Arc<std::sync::Mutex<Duration>>),
}

/// A revocable, time-bounded permission to write.
///
/// Its bound follows the session timeout as negotiated now, and never
/// exceeds what it was when [`Lease::pin`] recorded it for successors (the
/// writer node), nor what it was when a confirmation was granted.
#[derive(Debug, Clone)]
pub struct Lease {
    timeout: Timeout,
    /// The configured tickTime (`--zk-tick-time`), if any.
    tick_time: Option<Duration>,
    /// The longest bound ever allowed (what successors were told).
    cap: Duration,
    /// The latest confirmation: when its request was sent, and the bound
    /// at that moment.
    confirmed: Option<(Stamp, Duration)>,
}

impl Lease {
    /// A lease for a session with this negotiated timeout on servers whose
    /// tickTime is at most `tick_time` ([`assumed_tick_time`]); initially
    /// not held. Its bound is zero (it never lets anyone write) when the
    /// session is too short for that tickTime ([`lease_bound`]).
    pub fn new(session_timeout: Duration, tick_time: Duration) -> Lease {
        Lease::with(Timeout::Fixed(session_timeout), Some(tick_time))
    }

    /// A lease that follows the session timeout negotiated at each
    /// (re)connection (`timeout`, from the client), on servers with the
    /// configured tickTime (`--zk-tick-time`, else [`assumed_tick_time`]).
    pub fn negotiated(timeout: NegotiatedTimeout, tick_time: Option<Duration>) -> Lease {
        Lease::with(Timeout::Negotiated(timeout), tick_time)
    }

    fn with(timeout: Timeout, tick_time: Option<Duration>) -> Lease {
        let mut lease = Lease {
            timeout,
            tick_time,
            cap: Duration::MAX,
            confirmed: None,
        };
        lease.cap = lease.bound();
        lease
    }

    /// Follows the timeout of another client of the same session (after
    /// the session was resumed with a new client).
    pub fn follow(&mut self, timeout: NegotiatedTimeout) {
        self.timeout = Timeout::Negotiated(timeout);
    }

    /// The session timeout the lease is sized for now.
    pub fn session_timeout(&self) -> Duration {
        match &self.timeout {
            Timeout::Fixed(t) => *t,
            Timeout::Negotiated(t) => t.get(),
            #[cfg(test)]
            Timeout::Shared(t) => *t.lock().unwrap(),
        }
    }

    /// How long one confirmation lasts, for the session timeout as
    /// negotiated now.
    pub fn bound(&self) -> Duration {
        let t = self.session_timeout();
        lease_bound(t, assumed_tick_time(t, self.tick_time))
            .unwrap_or_default()
            .min(self.cap)
    }

    /// The bound to record for successors (the writer node): from now on
    /// the lease never grows past it, whatever a later server negotiates.
    pub fn pin(&mut self) -> Duration {
        self.cap = self.bound();
        self.cap
    }

    /// The longest round trip after which a confirmation still counts.
    pub fn max_round_trip(&self) -> Duration {
        self.bound() / 2
    }

    /// ZooKeeper confirmed ownership for a request sent at `sent`.
    pub fn confirm(&mut self, sent: Stamp) {
        // Never move the lease back, never extend from a stale confirmation.
        if self.confirmed.is_none_or(|(last, _)| sent.mono > last.mono) {
            self.confirmed = Some((sent, self.bound()));
        }
    }

    /// When the request of the latest confirmation was sent, on the wall
    /// clock (for `/status`; the lease itself never reads the wall clock).
    pub fn confirmed_at(&self) -> Option<std::time::SystemTime> {
        self.confirmed.map(|(sent, _)| sent.wall)
    }

    /// Whether the lease has at least half of its bound left: a tick that
    /// finds so writes on it without asking ZooKeeper again, so the leader
    /// confirms about every half lease rather than at every write, and
    /// each write still starts with at least half a lease to finish in.
    pub fn is_fresh(&self) -> bool {
        let bound = self.bound();
        !bound.is_zero() && self.remaining() >= bound / 2
    }

    /// Leadership can no longer be assumed (disconnection, lost node).
    pub fn revoke(&mut self) {
        self.confirmed = None;
    }

    /// Whether writing is allowed now.
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// How much of the lease is left (zero when not held), the smaller of
    /// what the two clocks say, with the smaller of the bounds at the
    /// confirmation and now: a reconnection that negotiated a shorter
    /// session shortens a lease already granted.
    pub fn remaining(&self) -> Duration {
        let Some((sent, then)) = self.confirmed else {
            return Duration::ZERO;
        };
        let bound = then.min(self.bound());
        let mono = (sent.mono + bound).saturating_duration_since(Instant::now());
        let boot = (sent.boot + bound).saturating_sub(boottime());
        mono.min(boot)
    }
}

/// Part of the session timeout kept between the end of the lease and the
/// earliest expiry (clock rates, a late timer; 300 ms for 6 s).
const MARGIN_DIVISOR: u32 = 20;

/// The tickTime the lease is sized for: the configured one
/// (`--zk-tick-time`), or else half the negotiated session timeout, the
/// largest tickTime of a server that granted it with the default
/// `minSessionTimeout` of two ticks.
pub fn assumed_tick_time(session_timeout: Duration, configured: Option<Duration>) -> Duration {
    configured.unwrap_or(session_timeout / 2)
}

/// How long a confirmation lets the leader write: the earliest expiry less
/// a margin of a twentieth of the session timeout, and at most half the
/// session timeout. `None` when nothing is left (a session timeout too
/// short for the servers' tickTime).
pub fn lease_bound(session_timeout: Duration, tick_time: Duration) -> Option<Duration> {
    earliest_expiry(session_timeout, tick_time)?
        .checked_sub(session_timeout / MARGIN_DIVISOR)
        .map(|b| b.min(session_timeout / 2))
        .filter(|b| !b.is_zero())
}

/// How long a new leader waits for a writer node held by another live
/// session (Chubby's lock-delay): until any lease its holder can have has
/// run out. Its holder recorded its lease bound in the node (`holder`); a
/// node that does not say (an older version) counts as the lease of the
/// longest session a server grants by default, 20 ticks of `tick_time`.
/// Our own bound counts too, and half as much again for the round trip
/// that confirmed the holder's last lease.
pub fn lock_delay(own: Duration, holder: Option<Duration>, tick_time: Duration) -> Duration {
    let holder = holder.unwrap_or_else(|| {
        let longest = tick_time * 20;
        lease_bound(longest, tick_time).unwrap_or(longest / 2)
    });
    let lease = own.max(holder);
    lease + lease / 2
}

/// The earliest moment, after a confirmation sent at `t0`, at which
/// ZooKeeper may expire the session, as an offset from `t0`: a follower
/// reports a session's activity to the ZooKeeper leader only in its ping
/// replies (every `tick_time / 2`), so if it dies right after answering,
/// the leader last heard of the session from the client's packet before,
/// up to [`crate::zk::session::longest_silence`] earlier, and we count one report
/// period more. `None` when that is not after `t0` at all.
pub fn earliest_expiry(session_timeout: Duration, tick_time: Duration) -> Option<Duration> {
    session_timeout
        .checked_sub(crate::zk::session::longest_silence(session_timeout))?
        .checked_sub(tick_time / 2)
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness's tickTime: leases of half the session timeout.
    const TICK: Duration = Duration::from_millis(200);

    #[test]
    fn the_chart_default_and_a_stock_server_get_the_documented_leases() {
        // docs/design.md, "The margin of the lease".
        let ms = Duration::from_millis;
        let s6 = Duration::from_secs(6);
        assert_eq!(lease_bound(s6, ms(1000)), Some(ms(3000)));
        assert_eq!(lease_bound(s6, ms(2000)), Some(ms(2900)));
        assert_eq!(lease_bound(s6, assumed_tick_time(s6, None)), Some(ms(2400)));
        assert_eq!(
            lease_bound(Duration::from_secs(4), ms(2000)),
            Some(ms(1600))
        );
        assert_eq!(lease_bound(Duration::from_secs(2), TICK), Some(ms(1000)));
    }

    #[test]
    fn the_lock_delay_waits_for_the_longer_of_both_leases() {
        let s = Duration::from_secs;
        // A 4 s successor (lease 2 s) behind a 20 s holder (lease 10 s).
        assert_eq!(lock_delay(s(2), Some(s(10)), TICK), s(15));
        assert_eq!(lock_delay(s(10), Some(s(2)), TICK), s(15));
        // A holder that did not say: the longest default session, 20 ticks.
        let unknown = lock_delay(s(2), None, s(1));
        assert_eq!(unknown, s(15), "20 s session: lease 10 s");
    }

    #[test]
    fn a_session_too_short_for_the_tick_time_gets_no_lease() {
        let lease = Lease::new(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(lease.bound(), Duration::ZERO);
        let mut lease = lease;
        lease.confirm(Stamp::now());
        assert!(!lease.is_valid());
    }

    /// Session timeouts a server with this tickTime grants by default
    /// (`[2, 20] x tickTime`), in 100 ms steps.
    fn granted(tick: Duration) -> impl Iterator<Item = Duration> {
        let (lo, hi) = (tick.as_millis() as u64 * 2, tick.as_millis() as u64 * 20);
        (lo..=hi).step_by(100).map(Duration::from_millis)
    }

    #[test]
    fn the_lease_ends_before_the_server_can_expire_the_session_for_every_granted_timeout() {
        // The chart's ZooKeeper (1 s), a stock server (2 s), the tests' (200 ms), a slow one.
        for tick in [200, 1000, 2000, 3000].map(Duration::from_millis) {
            for t in granted(tick) {
                let expiry = earliest_expiry(t, tick);
                // Told the tickTime, and left to assume it (half the session).
                for assumed in [tick, assumed_tick_time(t, None)] {
                    let lease = Lease::new(t, assumed);
                    assert!(
                        expiry.is_some_and(|e| e > lease.bound() && !lease.bound().is_zero()),
                        "session {t:?}, tickTime {tick:?} (assumed {assumed:?}): lease {:?}, earliest expiry {expiry:?}",
                        lease.bound()
                    );
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmation_is_valid_for_half_the_session_timeout() {
        let mut lease = Lease::new(Duration::from_secs(2), TICK);
        assert!(!lease.is_valid());
        lease.confirm(Stamp::now());
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_fresh_for_the_first_half_of_its_bound_only() {
        let mut lease = Lease::new(Duration::from_secs(2), TICK);
        assert!(!lease.is_fresh(), "no lease, nothing to write on");
        lease.confirm(Stamp::now());
        assert!(lease.is_fresh());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(lease.is_fresh());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lease.is_fresh(), "less than half left: confirm first");
        assert!(lease.is_valid());
        lease.confirm(Stamp::now());
        assert!(lease.is_fresh());
        lease.revoke();
        assert!(!lease.is_fresh());
        // A session too short for the servers' tickTime: never fresh.
        let mut none = Lease::new(Duration::from_millis(400), Duration::from_secs(1));
        none.confirm(Stamp::now());
        assert!(!none.is_fresh());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_counts_from_when_the_request_was_sent() {
        let mut lease = Lease::new(Duration::from_secs(2), TICK);
        let sent = Stamp::now();
        // The answer took 900 ms to come back: only 100 ms are left.
        tokio::time::advance(Duration::from_millis(900)).await;
        lease.confirm(sent);
        assert!(lease.remaining() <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn revoking_ends_the_lease_at_once_and_late_answers_do_not_shorten_it() {
        let mut lease = Lease::new(Duration::from_secs(2), TICK);
        let early = Stamp::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        lease.confirm(Stamp::now());
        lease.confirm(early);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(
            lease.is_valid(),
            "a stale confirmation must not shorten the lease"
        );
        lease.revoke();
        assert!(!lease.is_valid());
        assert_eq!(lease.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_process_wakes_up_without_a_lease() {
        let mut lease = Lease::new(Duration::from_secs(6), TICK);
        lease.confirm(Stamp::now());
        // SIGSTOP for 10 s: monotonic time keeps running.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!lease.is_valid());
    }

    #[test]
    fn the_boot_clock_alone_can_end_a_lease() {
        // A suspend stops the monotonic clock but not CLOCK_BOOTTIME: model
        // it with a stamp whose boot time lies a whole lease in the past.
        let mut lease = Lease::new(Duration::from_secs(2), TICK);
        let now = Stamp::now();
        let suspended = Stamp {
            mono: now.mono,
            boot: now.boot.saturating_sub(Duration::from_secs(5)),
            wall: now.wall,
        };
        lease.confirm(suspended);
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renegotiated_session_timeout_shortens_the_lease_and_never_lengthens_it() {
        let ms = Duration::from_millis;
        let timeout = std::sync::Arc::new(std::sync::Mutex::new(Duration::from_secs(4)));
        let mut lease = Lease::with(Timeout::Shared(timeout.clone()), Some(TICK));
        assert_eq!(lease.pin(), ms(2000), "recorded for successors");
        lease.confirm(Stamp::now());
        // The client moved to a server with maxSessionTimeout=2000.
        *timeout.lock().unwrap() = Duration::from_secs(2);
        assert_eq!(lease.bound(), ms(1000));
        assert!(
            lease.remaining() <= ms(1000),
            "the granted lease shrinks too"
        );
        tokio::time::advance(ms(1000)).await;
        assert!(!lease.is_valid());
        // Then to one with minSessionTimeout=20000: no longer than recorded.
        *timeout.lock().unwrap() = Duration::from_secs(20);
        assert_eq!(lease.bound(), ms(2000));
        lease.confirm(Stamp::now());
        assert!(lease.remaining() <= ms(2000));
    }

    #[test]
    fn round_trips_longer_than_a_quarter_session_are_not_trusted() {
        let lease = Lease::new(Duration::from_secs(2), TICK);
        assert_eq!(lease.max_round_trip(), Duration::from_millis(500));
    }
}
