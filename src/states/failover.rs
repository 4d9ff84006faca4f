//! Failover: something broke; stop, clean up and try again.
//!
//! The old session is closed (an expired session never comes back, and a
//! live one must not keep a stale candidate in the queue). Then the daemon
//! waits with exponential backoff and jitter (between half and all of a cap
//! doubling up to failover-max-backoff), and goes back to Init, which builds
//! a fresh client.
//! With a non-zero failover-give-up it stops with exit 1 once it has been
//! failing that long, so an orchestrator restarts it; by default it never
//! gives up, since a restart cannot fix an unreachable ZooKeeper.

use std::time::Duration;

use rand::Rng;
use tracing::{info, warn};

use crate::machine::{Cause, Context, Outcome, Recovery, State, Step, sleep_or_cancel};
use crate::zk::ZkSession;

/// First backoff step.
const BASE: Duration = Duration::from_millis(100);

/// Runs Failover.
pub async fn run(ctx: &Context, session: Option<ZkSession>, recovery: Recovery) -> Step {
    ctx.published.beat();
    if let Some(session) = session {
        let info = session.info();
        let origin = session.origin().clone();
        let closed = session.close(Duration::from_millis(500)).await;
        info!(?closed, "old ZooKeeper session dropped");
        if !closed.is_settled() {
            // Its nodes may linger until the server expires it: the next
            // Attempter deletes them rather than queue behind them, and
            // Stopping tries to close it for real.
            ctx.abandoned(info, origin);
        }
    }
    let give_up = ctx.cfg.failover_give_up;
    if let Some(since) = recovery.since
        && !give_up.is_zero()
        && since.elapsed() >= give_up
    {
        warn!(failing_for = ?since.elapsed(), "giving up: failover-give-up reached");
        return Step::Next(
            State::Stopping {
                session: None,
                outcome: Outcome::GaveUp,
            },
            Cause::GaveUp.because(format!("failing for {:?}", since.elapsed())),
        );
    }
    let cap = backoff_cap(recovery.attempt, ctx.cfg.failover_max_backoff);
    let pause = rand::rng().random_range(cap / 2..=cap);
    info!(attempt = recovery.attempt, pause = ?pause, "retrying after backoff");
    if !sleep_or_cancel(ctx, pause).await {
        return Step::stop(ctx, None);
    }
    Step::Next(
        State::Init { recovery },
        Cause::BackoffDone.because(format!("retry {} after backoff", recovery.attempt)),
    )
}

/// Upper bound of the pause before retry number `attempt` (1-based):
/// 100 ms, 200 ms, 400 ms ... up to `max`.
pub fn backoff_cap(attempt: u32, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    BASE.saturating_mul(1 << exp)
        .min(max)
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(5);
        let caps: Vec<u128> = (1..=8).map(|a| backoff_cap(a, max).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff_cap(u32::MAX, max), max);
        assert_eq!(backoff_cap(0, max).as_millis(), 100);
    }
}
