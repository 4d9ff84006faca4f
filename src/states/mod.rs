//! One module per state; each exposes `run(ctx, data) -> Step`, and
//! [`run`], the loop that runs them from Init until the daemon exits. The
//! states' shared types (`State`, `Step`, `Context`) are in
//! [`crate::machine`].

use tracing::{Instrument, info, info_span};

use crate::machine::{Context, Outcome, Recovery, State, Step};

pub mod attempter;
pub mod failover;
mod health;
pub mod init;
pub mod leader;
pub mod stopping;

/// Runs the machine from Init until it exits.
pub async fn run(ctx: Context) -> Outcome {
    let mut state = State::Init {
        recovery: Recovery::default(),
    };
    // The ZooKeeper user name, never the password.
    let security = ctx.cfg.zk_security.security();
    let zk_user = security.credentials.as_ref().map_or("-", |c| c.user());
    info!(node_id = %ctx.node_id, zk_servers = %ctx.cfg.zk_servers, zk_root = %ctx.cfg.zk_root,
        file_dir = %ctx.cfg.file_dir.display(), zk_user, zk_tls = security.tls.is_some(), "starting");
    loop {
        let from = state.name();
        let span = info_span!("state", state = %from);
        let step = async {
            match state {
                State::Init { recovery } => init::run(&ctx, recovery).await,
                State::Attempter { session, recovery } => {
                    attempter::run(&ctx, session, recovery).await
                }
                State::Leader {
                    session,
                    leadership,
                    recovery,
                } => leader::run(&ctx, session, leadership, recovery).await,
                State::Failover { session, recovery } => {
                    failover::run(&ctx, session, recovery).await
                }
                State::Stopping { session, outcome } => stopping::run(&ctx, session, outcome).await,
            }
        }
        .instrument(span)
        .await;
        match step {
            Step::Next(next, why) => {
                let to = next.name();
                info!(state = %to, from = %from, to = %to, cause = %why.cause, detail = %why.detail, "transition");
                ctx.published.transition(from, next.entered(), why);
                state = next;
            }
            Step::Exit(outcome) => {
                info!(state = %from, ?outcome, "stopped");
                return outcome;
            }
        }
    }
}
