//! Init: check every resource before competing.
//!
//! file-dir must exist (it is created) and be writable; ZooKeeper must give
//! a session within zk-connect-timeout; the election path must exist (it is
//! created). Success leads to Attempter, any failure to Failover, a stop
//! request to Stopping.
//!
//! The file-dir check runs on a blocking thread and is never abandoned: a
//! check that hangs (a hung mount) is waited for again by the next Init
//! instead of starting another, so retries never use up the blocking pool.
//! A check running too long, or file-dir found on another device than at
//! start, is what [`dir_check::DirCheck`] reports to `/healthz` (see
//! docs/design.md).

use tokio::time::Instant;
use tracing::{info, warn};

pub mod dir_check;

use crate::machine::{Cause, Context, Recovery, State, Step};
use crate::zk::{self, Closed, Origin, ZkSession};

/// Checks file-dir (bounded by zk-connect-timeout, never starting a
/// second check while one hangs); its device, or the step to take.
async fn check_dir(ctx: &Context, recovery: Recovery) -> Result<u64, Step> {
    let check = &ctx.dir_check;
    let mut running = check.take_or_start(&ctx.cfg.file_dir);
    let bound = ctx.cfg.zk_connect_timeout;
    let joined = tokio::select! {
        joined = tokio::time::timeout(bound, &mut running) => joined,
        _ = ctx.cancel.cancelled() => return Err(Step::stop(ctx, None)),
    };
    let fail = |why: String| Step::failover(None, recovery, Cause::FileDirError.because(why));
    let device = match joined {
        Err(_) => {
            let running_for = check.running_for().unwrap_or_default();
            check.keep(running);
            warn!(
                ?running_for,
                "file-dir check still running (a hung mount?); waiting for it, not starting another"
            );
            return Err(fail(format!(
                "file-dir check still running after {running_for:?}"
            )));
        }
        Ok(Err(e)) => {
            check.ended(None);
            return Err(fail(e.to_string()));
        }
        Ok(Ok(Err(e))) => {
            check.ended(None);
            warn!(error = %e, "file-dir check failed");
            return Err(fail(e.to_string()));
        }
        Ok(Ok(Ok(device))) => device,
    };
    // The device of the first successful check is the one the leader
    // writes to for the life of the process.
    let pinned = *ctx.file_dir_device.get_or_init(|| device);
    check.ended(Some(pinned == device));
    if pinned != device {
        let why = format!(
            "file-dir {} is on device {device:#x}, not {pinned:#x} as at start; is its volume mounted?",
            ctx.cfg.file_dir.display()
        );
        warn!(why, "file-dir check failed");
        return Err(fail(why));
    }
    Ok(device)
}

/// Runs Init.
pub async fn run(ctx: &Context, recovery: Recovery) -> Step {
    ctx.published.beat();
    if ctx.cancel.is_cancelled() {
        return Step::stop(ctx, None);
    }
    // With a command to run (`election run -- CMD`), file-dir is not used.
    if ctx.cfg.job().is_none()
        && let Err(step) = check_dir(ctx, recovery).await
    {
        return step;
    }

    close_earlier(ctx).await;

    ctx.published.metrics.zk_connect_attempts.inc();
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
    ctx.published.zk_event("SyncConnected");
    save_session(ctx, &session).await;

    let ensured = tokio::select! {
        r = tokio::time::timeout(cfg.zk_connect_timeout, crate::recipe::ensure_election_path(&session, &cfg.zk_root)) => r,
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

/// Closes the session a crashed earlier process of this replica left in
/// the state dir (once, before the first session of this process): its
/// candidate and writer nodes go at once, and the next candidate takes
/// over in restart time. Holding the state dir's lock proves that process
/// has exited, so no file of its leadership can land any more (see
/// docs/design.md, "Restart takeover"). A close no server answers leaves
/// the session abandoned, as one of this process: Attempter deletes its
/// node, the leader clears its writer node, Stopping tries again.
async fn close_earlier(ctx: &Context) {
    let Some(saved) = ctx.state_dir.as_ref().and_then(|d| d.take_earlier()) else {
        return;
    };
    let session_id = format!("{:#x}", saved.session_id as u64);
    let cfg = &ctx.cfg;
    if saved.servers != cfg.zk_servers {
        warn!(session_id, saved_servers = %saved.servers,
            "the saved session is of other zk-servers; leaving it to expire");
        return;
    }
    let Some(info) = saved.info() else {
        warn!(
            session_id,
            "the saved session's password is not hex; leaving it to expire"
        );
        return;
    };
    let origin = Origin {
        servers: cfg.zk_servers.clone(),
        session_timeout: cfg.zk_session_timeout,
        security: cfg.zk_security.security(),
    };
    let started = Instant::now();
    let closed = tokio::select! {
        c = zk::settle(&origin, info.clone(), cfg.zk_connect_timeout) => c,
        _ = ctx.cancel.cancelled() => Closed::Unknown,
    };
    let took = started.elapsed();
    match closed {
        Closed::Acknowledged => {
            info!(
                session_id,
                ?took,
                "closed the session of this replica's earlier process: its nodes are gone"
            )
        }
        Closed::Expired => {
            info!(
                session_id,
                ?took,
                "the session of this replica's earlier process had expired"
            )
        }
        Closed::Unknown => {
            warn!(
                session_id,
                ?took,
                "cannot close the session of this replica's earlier process; it expires on its own"
            );
            ctx.abandoned(info, origin);
        }
    }
}

/// Records `session` in the state dir, for the next process of this
/// replica. A failure costs only that shortcut (logged).
async fn save_session(ctx: &Context, session: &ZkSession) {
    let Some(dir) = ctx.state_dir.clone() else {
        return;
    };
    let saved = dir.record(&session.info(), &ctx.cfg.zk_servers);
    let saving = tokio::task::spawn_blocking(move || dir.save(&saved));
    match tokio::time::timeout(ctx.cfg.zk_connect_timeout, saving).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "cannot save the session in the state dir"),
        Ok(Err(e)) => warn!(error = %e, "cannot save the session in the state dir"),
        Err(_) => warn!("saving the session in the state dir takes too long (a hung disk?)"),
    }
}
