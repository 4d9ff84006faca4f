//! The leader's lease: how long a confirmation from ZooKeeper lets it write.
//!
//! ZooKeeper expires a session no earlier than one session timeout after it
//! last heard from the client. A leader that sent a confirming request at
//! `t0` and got a good answer therefore still owns its node until at least
//! `t0 + session timeout`; it allows itself only half of that, which leaves
//! room for server ticks, fsync time and clock-rate differences.
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

/// A point in time on both of the lease's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    mono: Instant,
    boot: Duration,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            boot: boottime(),
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

/// A revocable, time-bounded permission to write.
#[derive(Debug, Clone)]
pub struct Lease {
    bound: Duration,
    valid_until: Option<Stamp>,
}

impl Lease {
    /// A lease for a session with this negotiated timeout; initially not held.
    pub fn new(session_timeout: Duration) -> Lease {
        Lease {
            bound: session_timeout / 2,
            valid_until: None,
        }
    }

    /// How long one confirmation lasts.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// The longest round trip after which a confirmation still counts.
    pub fn max_round_trip(&self) -> Duration {
        self.bound / 2
    }

    /// ZooKeeper confirmed ownership for a request sent at `sent`.
    pub fn confirm(&mut self, sent: Stamp) {
        let until = Stamp {
            mono: sent.mono + self.bound,
            boot: sent.boot + self.bound,
        };
        // Never move the lease back, never extend from a stale confirmation.
        if self.valid_until.is_none_or(|v| until.mono > v.mono) {
            self.valid_until = Some(until);
        }
    }

    /// Leadership can no longer be assumed (disconnection, lost node).
    pub fn revoke(&mut self) {
        self.valid_until = None;
    }

    /// Whether writing is allowed now.
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// How much of the lease is left (zero when not held), the smaller of
    /// what the two clocks say.
    pub fn remaining(&self) -> Duration {
        let Some(v) = self.valid_until else {
            return Duration::ZERO;
        };
        let mono = v.mono.saturating_duration_since(Instant::now());
        let boot = v.boot.saturating_sub(boottime());
        mono.min(boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_confirmation_is_valid_for_half_the_session_timeout() {
        let mut lease = Lease::new(Duration::from_secs(2));
        assert!(!lease.is_valid());
        lease.confirm(Stamp::now());
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_counts_from_when_the_request_was_sent() {
        let mut lease = Lease::new(Duration::from_secs(2));
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
        let mut lease = Lease::new(Duration::from_secs(2));
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
        let mut lease = Lease::new(Duration::from_secs(6));
        lease.confirm(Stamp::now());
        // SIGSTOP for 10 s: monotonic time keeps running.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!lease.is_valid());
    }

    #[test]
    fn the_boot_clock_alone_can_end_a_lease() {
        // A suspend stops the monotonic clock but not CLOCK_BOOTTIME: model
        // it with a stamp whose boot time lies a whole lease in the past.
        let mut lease = Lease::new(Duration::from_secs(2));
        let now = Stamp::now();
        let suspended = Stamp {
            mono: now.mono,
            boot: now.boot.saturating_sub(Duration::from_secs(5)),
        };
        lease.confirm(suspended);
        assert!(!lease.is_valid());
    }

    #[test]
    fn round_trips_longer_than_a_quarter_session_are_not_trusted() {
        let lease = Lease::new(Duration::from_secs(2));
        assert_eq!(lease.max_round_trip(), Duration::from_millis(500));
    }
}
