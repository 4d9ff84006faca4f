use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{Fuse, FusedFuture, FutureExt};

pub struct Deadline {
    timer: Fuse<Timer>,
    deadline: Option<Instant>,
}

impl Deadline {
    pub fn never() -> Self {
        Self { timer: Timer::never().fuse(), deadline: None }
    }

    pub fn until(deadline: Instant) -> Self {
        Self { timer: Timer::at(deadline).fuse(), deadline: Some(deadline) }
    }

    /// Whether the deadline has passed.
    ///
    /// Asks the clock, not only the timer. The timer completes only
    /// when it is polled, and `Connector::connect` polls it only while the
    /// connect attempt is pending: with attempts that fail at once
    /// (ENETUNREACH, EPERM) it was never polled,
    /// `elapsed` stayed false and `Session::start` retried forever without
    /// a pause (the retry delay is capped by the remaining time, zero by then).
    pub fn elapsed(&self) -> bool {
        self.timer.is_terminated() || self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Remaining timeout.
    pub fn timeout(&self) -> Duration {
        match self.deadline.as_ref() {
            None => Duration::MAX,
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let timer = unsafe { self.map_unchecked_mut(|deadline| &mut deadline.timer) };
        timer.poll(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Deadline;

    #[test]
    fn elapsed_once_the_time_passed_although_the_timer_was_never_polled() {
        // `Connector::connect` polls the timer only while a connect attempt
        // is pending: attempts that fail at once never poll it.
        let now = Instant::now();
        assert!(Deadline::until(now).elapsed());
        if let Some(past) = now.checked_sub(Duration::from_secs(1)) {
            assert!(Deadline::until(past).elapsed());
        }
        assert!(!Deadline::until(now + Duration::from_secs(3600)).elapsed());
        assert!(!Deadline::never().elapsed());
    }
}
