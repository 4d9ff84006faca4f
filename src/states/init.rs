//! Init: check every resource before competing.
//!
//! file-dir must exist (it is created) and be writable; ZooKeeper must give
//! a session within zk-connect-timeout; the election path must exist (it is
//! created). Success leads to Attempter, any failure to Failover, a stop
//! request to Stopping.

use tracing::{info, warn};

use crate::files;
use crate::machine::{Cause, Context, Recovery, State, Step};
use crate::zk::ZkSession;

/// Runs Init.
pub async fn run(ctx: &Context, recovery: Recovery) -> Step {
    ctx.board.beat();
    if ctx.cancel.is_cancelled() {
        return Step::stop(ctx, None);
    }
    // Off the runtime thread and bounded: a hung mount must not freeze the
    // daemon (the check goes on in the background; a later Init retries).
    let dir = ctx.cfg.file_dir.clone();
    let checked = tokio::task::spawn_blocking(move || files::ensure_writable_dir(&dir));
    let device = match tokio::time::timeout(ctx.cfg.zk_connect_timeout, checked).await {
        Ok(Ok(Ok(device))) => device,
        Ok(Ok(Err(e))) => {
            warn!(error = %e, "file-dir check failed");
            return Step::failover(None, recovery, Cause::FileDirError.because(e.to_string()));
        }
        Ok(Err(e)) => {
            return Step::failover(None, recovery, Cause::FileDirError.because(e.to_string()));
        }
        Err(_) => {
            warn!(bound = ?ctx.cfg.zk_connect_timeout, "file-dir check timed out");
            return Step::failover(
                None,
                recovery,
                Cause::FileDirError.because("file-dir check timed out"),
            );
        }
    };
    // The device of the first successful check is the one the leader
    // writes to for the life of the process.
    let pinned = *ctx.file_dir_device.get_or_init(|| device);
    if pinned != device {
        let why = format!(
            "file-dir {} is on device {device:#x}, not {pinned:#x} as at start; is its volume mounted?",
            ctx.cfg.file_dir.display()
        );
        warn!(why, "file-dir check failed");
        return Step::failover(None, recovery, Cause::FileDirError.because(why));
    }

    ctx.board.metrics.zk_connect_attempts.inc();
    let cfg = &ctx.cfg;
    let security = cfg.zk_security.security();
    let connect = ZkSession::connect(
        &cfg.zk_servers,
        cfg.zk_session_timeout,
        cfg.zk_connect_timeout,
        &security,
    );
    let session = tokio::select! {
        r = connect => r,
        _ = ctx.cancel.cancelled() => return Step::stop(ctx, None),
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, attempt = recovery.attempt, "cannot reach ZooKeeper");
            return Step::failover(None, recovery, Cause::ZookeeperError.because(e.to_string()));
        }
    };
    info!(session_id = %session.id_hex(), session_timeout = ?session.timeout(), "ZooKeeper session established");
    ctx.board.zk_event("SyncConnected");

    let ensured = tokio::select! {
        r = tokio::time::timeout(cfg.zk_connect_timeout, session.ensure_path(&cfg.zk_root)) => r,
        _ = ctx.cancel.cancelled() => return Step::stop(ctx, Some(session)),
    };
    match ensured {
        Ok(Ok(())) => Step::Next(
            State::Attempter {
                session,
                recovery: recovery.healthy(),
            },
            Cause::Connected.because("resources ready"),
        ),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot create election path");
            Step::failover(
                Some(session),
                recovery,
                Cause::ZookeeperError.because(e.to_string()),
            )
        }
        Err(_) => Step::failover(
            Some(session),
            recovery,
            Cause::ZookeeperError.because("timed out creating election path"),
        ),
    }
}
