//! Init: check every resource before competing.
//!
//! file-dir must exist (it is created) and be writable; ZooKeeper must give
//! a session within zk-connect-timeout; the election path must exist (it is
//! created). Success leads to Attempter, any failure to Failover, a stop
//! request to Stopping.

use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::files;
use crate::machine::{Context, Outcome, Recovery, State, Step};
use crate::zk::ZkSession;

/// Runs Init.
pub async fn run(ctx: &Context, recovery: Recovery) -> Step {
    ctx.board.beat();
    if ctx.cancel.is_cancelled() {
        return Step::Next(
            State::Stopping(None, Outcome::Stopped),
            "stop requested".into(),
        );
    }
    let dir = ctx.cfg.file_dir.clone();
    let checked = tokio::task::spawn_blocking(move || files::ensure_writable_dir(&dir)).await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "file-dir check failed");
            return Step::Next(State::Failover(None, recovery.failed()), e.to_string());
        }
        Err(e) => return Step::Next(State::Failover(None, recovery.failed()), e.to_string()),
    }

    ctx.board
        .metrics
        .zk_connect_attempts
        .fetch_add(1, Ordering::Relaxed);
    let cfg = &ctx.cfg;
    let connect = ZkSession::connect(
        &cfg.zk_servers,
        cfg.zk_session_timeout,
        cfg.zk_connect_timeout,
    );
    let session = tokio::select! {
        r = connect => r,
        _ = ctx.cancel.cancelled() => {
            return Step::Next(State::Stopping(None, Outcome::Stopped), "stop requested".into());
        }
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, attempt = recovery.attempt, "cannot reach ZooKeeper");
            return Step::Next(State::Failover(None, recovery.failed()), e.to_string());
        }
    };
    info!(session_id = %session.id_hex(), session_timeout = ?session.timeout(), "ZooKeeper session established");
    ctx.board.zk_event("SyncConnected");

    let ensured = tokio::select! {
        r = tokio::time::timeout(cfg.zk_connect_timeout, session.ensure_path(&cfg.zk_root)) => r,
        _ = ctx.cancel.cancelled() => {
            return Step::Next(State::Stopping(Some(session), Outcome::Stopped), "stop requested".into());
        }
    };
    match ensured {
        Ok(Ok(())) => {
            let id = session.id_hex();
            ctx.board.update(|s| s.session_id = Some(id));
            Step::Next(State::Attempter(session), "resources ready".into())
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot create election path");
            Step::Next(
                State::Failover(Some(session), recovery.failed()),
                e.to_string(),
            )
        }
        Err(_) => Step::Next(
            State::Failover(Some(session), recovery.failed()),
            "timed out creating election path".into(),
        ),
    }
}
