//! Stopping: leave the election so a successor takes over at once.
//!
//! Entered from any state on SIGTERM, SIGINT or `election release`. No file
//! is written any more (only Leader writes). Closing the session makes
//! ZooKeeper delete our candidate node immediately, which fires the watch
//! of the next candidate; we wait (bounded) for the close to be
//! acknowledged, because a close that never leaves the process would leave
//! the node, and the leadership, in place for a whole session timeout.

use std::time::Duration;

use tracing::{info, warn};

use crate::machine::{Context, Outcome, Step};
use crate::zk::{self, ZkSession};

/// Bound on closing the session.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// Runs Stopping.
pub async fn run(ctx: &Context, session: Option<ZkSession>, outcome: Outcome) -> Step {
    ctx.published.beat();
    let mut released = true;
    if let Some(session) = session {
        let id = session.id_hex();
        let closed = session.close(CLOSE_BOUND).await;
        if closed.is_settled() {
            info!(session_id = %id, ?closed, "ZooKeeper session closed; candidate node released");
        } else {
            released = false;
            warn!(session_id = %id, bound = ?CLOSE_BOUND,
                "session close not acknowledged; the node expires with the session");
        }
    }
    // Sessions given up earlier without the server's word may still hold
    // nodes: close them for real, or say so.
    for (info, origin) in ctx.take_abandoned() {
        let id = format!("{:#x}", info.id().0 as u64);
        let closed = zk::settle(&origin, info, CLOSE_BOUND).await;
        if closed.is_settled() {
            info!(session_id = %id, ?closed, "an abandoned session is closed");
        } else {
            released = false;
            warn!(session_id = %id, "an abandoned session may still hold our node until the server expires it");
        }
    }
    // Nothing left for a next process of this replica to close.
    if released
        && let Some(dir) = &ctx.state_dir
        && let Err(e) = dir.clear()
    {
        warn!(error = %e, "cannot remove the saved session");
    }
    // `election release` answers "released" only when every session of
    // ours is known closed or expired.
    ctx.published.stopped(released);
    Step::Exit(outcome)
}
