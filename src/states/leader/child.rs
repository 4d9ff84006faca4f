//! Leader's command (`election run -- CMD`), run instead of the file
//! writer: started after the first confirmation, its watchdog's deadline
//! moved after each one (to the end of that confirmation's lease, less a
//! margin), and stopped before Leader gives up anything. A command that
//! ends on its own ends the leadership (`child-exited`). Why:
//! docs/design.md, "Running a command".

use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Exit, Leader};
use crate::job::{Ended, Job};
use crate::machine::Cause;

/// Part of the lease kept between the watchdog's SIGKILL and the end of
/// the lease (100 ms of a 1 s lease): time for the kill to land.
const KILL_MARGIN_DIVISOR: u32 = 10;

/// Confirmations per lease while a command runs, so that one or two slow
/// or lost confirmations do not let the watchdog's deadline pass.
const CONFIRMS_PER_LEASE: u32 = 4;

/// How long past the watchdog's own SIGKILL the daemon waits for its
/// report before killing the watchdog and the command's group itself.
const REPORT_SLACK: Duration = Duration::from_millis(500);

/// The end of the command's run; pending without one.
pub(super) async fn ended(job: &mut Option<Job>) -> Ended {
    match job {
        Some(job) => job.ended().await,
        None => std::future::pending().await,
    }
}

impl Leader<'_> {
    /// Time between two confirmations: leader-timeout for the file writer;
    /// with a command, often enough to keep its watchdog's deadline ahead.
    pub(super) fn tick_interval(&self) -> Duration {
        match self.ctx.cfg.job() {
            None => self.ctx.cfg.leader_timeout,
            Some(_) => self
                .ctx
                .cfg
                .leader_timeout
                .min(self.lease.bound() / CONFIRMS_PER_LEASE)
                .max(Duration::from_millis(1)),
        }
    }

    /// After a confirmation: starts the command, or moves its deadline.
    pub(super) fn run_child(&mut self) -> Option<Exit> {
        let margin = self.lease.bound() / KILL_MARGIN_DIVISOR;
        let left = self.lease.remaining().saturating_sub(margin);
        if left.is_zero() {
            // This confirmation came too late to be of use.
            return None;
        }
        let deadline = Instant::now() + left;
        if let Some(job) = &self.job {
            if job.renew(left) {
                self.job_deadline = Some(deadline);
            } else {
                warn!("cannot move the command's deadline: its watchdog does not read");
            }
            self.ctx.published.child_pid(job.pid());
            return None;
        }
        let command = self.ctx.cfg.job()?;
        let stop = self.ctx.cfg.child_stop_timeout;
        match Job::start(command, self.token, &self.ctx.node_id, left, stop) {
            Ok(job) => {
                info!(token = self.token, command = %command[0], kill_in = ?left, "command started");
                self.ctx.published.child_started(None);
                self.job = Some(job);
                self.job_deadline = Some(deadline);
                None
            }
            Err(e) => {
                let ended = Ended {
                    status: format!("cannot start its watchdog: {e}"),
                    by: "start-failed".into(),
                    stop_time: Duration::ZERO,
                };
                error!(error = %e, "cannot start the command's watchdog");
                self.ctx.published.child_ended(&ended);
                Some(Exit::Failover(
                    Cause::ChildExited.because(format!("the command did not run: {ended}")),
                ))
            }
        }
    }

    /// The command ended on its own (or its watchdog killed it): this
    /// leadership is over; Failover backs off before the next round, so a
    /// crashing command moves to another replica.
    pub(super) fn on_child_end(&mut self, ended: Ended) -> Exit {
        self.job = None;
        self.job_deadline = None;
        self.ctx.published.child_ended(&ended);
        warn!(status = %ended.status, ended_by = %ended.by, "the command ended; giving up leadership");
        Exit::Failover(Cause::ChildExited.because(format!("the command ended: {ended}")))
    }

    /// Stops the command and waits until it has exited: bounded by the
    /// stop timeout and by its deadline (the watchdog kills it then).
    pub(super) async fn stop_child(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        let left = self.job_deadline.take().map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let bound = left.min(self.ctx.cfg.child_stop_timeout) + REPORT_SLACK;
        let pid = job.pid();
        info!(pid, kill_within = ?left.min(self.ctx.cfg.child_stop_timeout), "stopping the command");
        match job.stop(bound).await {
            Some(ended) => {
                info!(pid, status = %ended.status, ended_by = %ended.by, stop_time = ?ended.stop_time, "command stopped");
                self.ctx.published.child_ended(&ended);
            }
            None => {
                error!(pid, waited = ?bound,
                    "the command's watchdog did not report its end; killed it and the command's process group");
                self.ctx.published.child_ended(&Ended {
                    status: "unknown".into(),
                    by: "watchdog-lost".into(),
                    stop_time: bound,
                });
            }
        }
    }
}
