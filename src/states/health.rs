//! What Attempter and Leader share: how a session state change is logged,
//! published and folded into the session's [`Liveness`].

use tracing::{info, warn};
use zookeeper_client::SessionState;

use crate::machine::Context;
use crate::zk::session::{Health, Liveness};

/// Logs and counts a state change, and folds it into `l`.
pub fn on_state(ctx: &Context, l: &mut Liveness, state: SessionState) -> Health {
    ctx.published.zk_event(&format!("{state:?}"));
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
