//! The leader's lease: how long a confirmation from ZooKeeper lets it write.
//!
//! ZooKeeper expires a session no earlier than one session timeout after it
//! last heard from the client. A leader that sent a confirming request at
//! `t0` and got a good answer therefore still owns its node until at least
//! `t0 + session timeout`; it allows itself only half of that, which leaves
//! room for server ticks, fsync time and clock-rate differences. Time is
//! monotonic ([`tokio::time::Instant`]): wall-clock jumps do not move it, and a
//! process frozen by SIGSTOP finds its lease long gone when it wakes up.

use std::time::Duration;

use tokio::time::Instant;

/// A revocable, time-bounded permission to write.
#[derive(Debug, Clone)]
pub struct Lease {
    bound: Duration,
    valid_until: Option<Instant>,
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

    /// ZooKeeper confirmed ownership for a request sent at `sent_at`.
    pub fn confirm(&mut self, sent_at: Instant) {
        let until = sent_at + self.bound;
        // Never move the lease back, never extend from a stale confirmation.
        if self.valid_until.is_none_or(|v| until > v) {
            self.valid_until = Some(until);
        }
    }

    /// Leadership can no longer be assumed (disconnection, lost node).
    pub fn revoke(&mut self) {
        self.valid_until = None;
    }

    /// Whether writing is allowed now.
    pub fn is_valid(&self) -> bool {
        self.valid_until.is_some_and(|v| Instant::now() < v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_confirmation_is_valid_for_half_the_session_timeout() {
        let mut lease = Lease::new(Duration::from_secs(2));
        assert!(!lease.is_valid());
        lease.confirm(Instant::now());
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_counts_from_when_the_request_was_sent() {
        let mut lease = Lease::new(Duration::from_secs(2));
        let sent = Instant::now();
        // The answer took 900 ms to come back: only 100 ms are left.
        tokio::time::advance(Duration::from_millis(900)).await;
        lease.confirm(sent);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn revoking_ends_the_lease_at_once_and_late_answers_do_not_shorten_it() {
        let mut lease = Lease::new(Duration::from_secs(2));
        let early = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        lease.confirm(Instant::now());
        lease.confirm(early);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(
            lease.is_valid(),
            "a stale confirmation must not shorten the lease"
        );
        lease.revoke();
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_process_wakes_up_without_a_lease() {
        let mut lease = Lease::new(Duration::from_secs(6));
        lease.confirm(Instant::now());
        // SIGSTOP for 10 s: monotonic time keeps running.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!lease.is_valid());
    }
}
