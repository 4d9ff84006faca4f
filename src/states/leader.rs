//! Leader: write a file every leader-timeout, and never without leadership.
//!
//! Before each write the leader confirms with ZooKeeper that its node still
//! exists and is owned by its session: a `sync` (which a server cut off
//! from the quorum cannot answer) followed by a stat, pipelined. The answer
//! grants a [`Lease`] counted from when the request was sent; the file is
//! committed (renamed into place) only while the lease is valid and the
//! session is connected. A disconnection revokes the lease at once
//! (suspended); the same session reconnecting resumes; a session lost or
//! disconnected past its timeout leads to Failover. The fencing token of a
//! leadership is the zxid that created its node, raised above the highest
//! token recorded in ZooKeeper (the `fencing` node) and above any token in
//! file-dir, so tokens keep increasing when file-dir is emptied and when an
//! ensemble is wiped and zxids start again (not both at once). The new
//! floor is recorded in ZooKeeper atomically with a check of our node.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};
use zookeeper_client::{EventType, SessionState, StateWatcher};

use super::session::{Health, Liveness, on_state, until_deadline};
use crate::files::{self, FileError, FileKey, LeaderRecord};
use crate::lease::Lease;
use crate::machine::{Context, Outcome, Recovery, State, Step};
use crate::zk::ZkSession;

/// The leadership won in Attempter.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Our candidate node.
    pub path: String,
    /// zxid that created it.
    pub czxid: i64,
}

/// Why confirming leadership did not succeed.
enum Confirm {
    /// Confirmed; the lease is extended.
    Held,
    /// Our node is gone or not ours: leadership is lost.
    Lost(String),
    /// No answer (yet): not allowed to write now.
    Unknown(String),
}

/// Runs Leader.
pub async fn run(ctx: &Context, mut session: ZkSession, leadership: Leadership) -> Step {
    let dir = ctx.cfg.file_dir.clone();
    let token = match fencing_token(ctx, &session, &leadership).await {
        Ok(token) => token,
        Err(why) => {
            return Step::Next(
                State::Failover(Some(session), Recovery::default().failed()),
                format!("cannot choose a fencing token: {why}"),
            );
        }
    };
    let sid = session.id_hex();
    info!(token, znode = %leadership.path, session_id = %sid, "leadership acquired");
    ctx.board.update(|s| {
        s.token = Some(token);
        s.leader = Some(ctx.node_id.clone());
        s.znode = Some(leadership.path.clone());
    });

    let mut live = Liveness::new(session.timeout(), session.state());
    let mut lease = Lease::new(session.timeout());
    let watch = session
        .bounded(session.client().check_and_watch_stat(&leadership.path))
        .await;
    let mut node_gone = match watch {
        Ok((Some(stat), w)) if stat.ephemeral_owner == session.id() => Box::pin(w.changed()),
        Ok(_) => {
            return Step::Next(
                State::Attempter(session),
                "leader node vanished before the first write".into(),
            );
        }
        Err(e) => {
            return Step::Next(
                State::Failover(Some(session), Recovery::default().failed()),
                format!("cannot watch leader node: {e}"),
            );
        }
    };

    let mut tick = tokio::time::interval(ctx.cfg.leader_timeout);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut write_failures = 0usize;
    let mut stale_temp_cleaned = false;
    loop {
        ctx.board.beat();
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                return Step::Next(State::Stopping(Some(session), Outcome::Stopped), "stop requested".into());
            }
            state = session.state_changed() => match on_state(ctx, &mut live, state) {
                Health::Connected => {
                    // Same session back in time: make sure the node survived.
                    match confirm(&session, &leadership, &mut lease).await {
                        Confirm::Lost(why) => return Step::Next(State::Attempter(session), why),
                        Confirm::Held => {
                            info!("leadership confirmed after reconnection; resuming");
                            // Write at once (the tick confirms again first).
                            tick.reset_immediately();
                        }
                        Confirm::Unknown(why) => warn!(why, "cannot confirm leadership yet"),
                    }
                }
                Health::Suspended => {
                    lease.revoke();
                    warn!("suspended: no writes until the session is confirmed again");
                }
                Health::Lost(why) => {
                    lease.revoke();
                    return Step::Next(State::Failover(Some(session), Recovery::default().failed()), why);
                }
            },
            _ = until_deadline(&live) => {
                lease.revoke();
                return Step::Next(
                    State::Failover(Some(session), Recovery::default().failed()),
                    super::session::GIVE_UP_CAUSE.into(),
                );
            }
            ev = &mut node_gone => {
                if ev.event_type == EventType::NodeDeleted {
                    lease.revoke();
                    return Step::Next(State::Attempter(session), "leader node deleted".into());
                }
                // A data change or a session event: look again.
                match session.bounded(session.client().check_and_watch_stat(&leadership.path)).await {
                    Ok((Some(stat), w)) if stat.ephemeral_owner == session.id() => node_gone = Box::pin(w.changed()),
                    Ok(_) => return Step::Next(State::Attempter(session), "leader node lost".into()),
                    Err(e) => {
                        return Step::Next(
                            State::Failover(Some(session), Recovery::default().failed()),
                            format!("cannot watch leader node: {e}"),
                        );
                    }
                }
            }
            _ = tick.tick() => {
                if !live.is_connected() {
                    ctx.board.metrics.writes_fenced.fetch_add(1, Ordering::Relaxed);
                    warn!("skipping write: suspended");
                    continue;
                }
                match confirm(&session, &leadership, &mut lease).await {
                    Confirm::Held => {}
                    Confirm::Lost(why) => {
                        lease.revoke();
                        return Step::Next(State::Attempter(session), why);
                    }
                    Confirm::Unknown(why) => {
                        ctx.board.metrics.writes_fenced.fetch_add(1, Ordering::Relaxed);
                        warn!(why, "skipping write: leadership not confirmed");
                        continue;
                    }
                }
                if !stale_temp_cleaned {
                    let d = dir.clone();
                    let removed = tokio::task::spawn_blocking(move || files::remove_stale_temp_files(&d))
                        .await
                        .unwrap_or(0);
                    if removed > 0 {
                        info!(removed, "removed temp files of interrupted writes");
                    }
                    stale_temp_cleaned = true;
                }
                seq += 1;
                let key = FileKey { token, seq };
                match write(ctx, &dir, key, &sid, &leadership, &lease, session.watcher()).await {
                    Ok(path) => {
                        write_failures = 0;
                        ctx.board.wrote_file();
                        info!(file = %path.display(), token, seq, "file written");
                        prune(ctx, &dir, token).await;
                    }
                    Err(FileError::NotLeader) => {
                        seq -= 1;
                        ctx.board.metrics.writes_fenced.fetch_add(1, Ordering::Relaxed);
                        warn!("write discarded: lease ended before commit");
                    }
                    Err(e) => {
                        seq -= 1;
                        write_failures += 1;
                        ctx.board.metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                        error!(error = %e, failures = write_failures, "file write failed");
                        if write_failures >= ctx.cfg.max_write_failures {
                            return Step::Next(
                                State::Failover(Some(session), Recovery::default().failed()),
                                format!("{write_failures} consecutive write failures: {e}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Confirms through a quorum-synced read that our node is still ours.
async fn confirm(session: &ZkSession, leadership: &Leadership, lease: &mut Lease) -> Confirm {
    let client = session.client();
    let sent_at = Instant::now();
    // Pipelined: the stat is answered only after the sync went through the
    // ZooKeeper leader, so a server cut off from the quorum cannot vouch for us.
    let sync = client.sync(&leadership.path);
    let stat = client.check_stat(&leadership.path);
    let answer = tokio::time::timeout(lease.bound(), async { (sync.await, stat.await) }).await;
    match answer {
        Ok((Ok(()), Ok(Some(stat)))) if stat.ephemeral_owner == session.id() => {
            lease.confirm(sent_at);
            Confirm::Held
        }
        Ok((_, Ok(Some(_))))
        | Ok((Err(zookeeper_client::Error::NoNode), _))
        | Ok((_, Ok(None))) => Confirm::Lost(format!("leader node {} lost", leadership.path)),
        Ok((Err(e), _)) | Ok((_, Err(e))) => Confirm::Unknown(e.to_string()),
        Err(_) => Confirm::Unknown(format!("no answer within {:?}", lease.bound())),
    }
}

/// Writes one file on a blocking thread; committed only under a valid lease
/// and a connected session.
async fn write(
    ctx: &Context,
    dir: &std::path::Path,
    key: FileKey,
    sid: &str,
    leadership: &Leadership,
    lease: &Lease,
    states: StateWatcher,
) -> Result<PathBuf, FileError> {
    let record = LeaderRecord {
        node_id: ctx.node_id.clone(),
        token: key.token,
        seq: key.seq,
        written_at: files::now_rfc3339(),
        session_id: sid.to_owned(),
        znode: leadership.path.clone(),
    };
    let dir = dir.to_owned();
    if !dir.exists() {
        warn!(dir = %dir.display(), "file-dir is missing; recreating it");
        if let Err(source) = std::fs::create_dir_all(&dir) {
            return Err(FileError::CreateDir { path: dir, source });
        }
    }
    let lease = lease.clone();
    let still_leader =
        move || lease.is_valid() && states.peek_state() == SessionState::SyncConnected;
    tokio::task::spawn_blocking(move || files::write_atomic(&dir, key, &record, still_leader))
        .await
        .unwrap_or_else(|e| {
            Err(FileError::Write {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })
        })
}

/// Applies retention after a write.
async fn prune(ctx: &Context, dir: &std::path::Path, token: u64) {
    let d = dir.to_owned();
    let capacity = ctx.cfg.storage_capacity;
    let result = tokio::task::spawn_blocking(move || files::prune(&d, capacity, token)).await;
    match result {
        Ok((deleted, err)) => {
            ctx.board
                .metrics
                .files_pruned
                .fetch_add(deleted as u64, Ordering::Relaxed);
            if let Some(e) = err {
                ctx.board
                    .metrics
                    .prune_errors
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "retention failed");
            }
        }
        Err(e) => {
            ctx.board
                .metrics
                .prune_errors
                .fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "retention task failed");
        }
    }
}

/// The token of a leadership: max(node zxid, ZooKeeper floor + 1, newest
/// token in file-dir + 1), then recorded as the new floor.
async fn fencing_token(
    ctx: &Context,
    session: &ZkSession,
    leadership: &Leadership,
) -> Result<u64, String> {
    let d = ctx.cfg.file_dir.clone();
    let on_disk = tokio::task::spawn_blocking(move || match files::max_token(&d) {
        Err(FileError::List { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        other => other,
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let root = ctx.cfg.zk_root.as_str();
    let (floor, version) = session
        .bounded(crate::zk::read_token_floor(session.client(), root))
        .await
        .map_err(|e| format!("cannot read the token floor: {e}"))?;
    let token = choose_token(u64::try_from(leadership.czxid).unwrap_or(0), floor, on_disk);
    let raise =
        crate::zk::raise_token_floor(session.client(), root, &leadership.path, token, version);
    match tokio::time::timeout(session.timeout(), raise).await {
        Ok(Ok(())) => Ok(token),
        Ok(Err(e)) => Err(format!("cannot record the token floor: {e}")),
        Err(_) => Err("timed out recording the token floor".into()),
    }
}

/// max(czxid, floor + 1, newest on disk + 1).
pub fn choose_token(czxid: u64, floor: u64, newest_on_disk: Option<u64>) -> u64 {
    let above = |t: u64| t.saturating_add(1);
    czxid.max(above(floor)).max(newest_on_disk.map_or(0, above))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_zxid_and_never_go_back() {
        assert_eq!(choose_token(500, 0, None), 500);
        assert_eq!(choose_token(500, 400, Some(100)), 500);
        // Ensemble wiped: zxids and the floor restarted below what is on disk.
        assert_eq!(choose_token(7, 0, Some(500)), 501);
        assert_eq!(choose_token(500, 0, Some(500)), 501);
        // file-dir emptied after earlier disk-derived tokens: the floor remembers.
        assert_eq!(choose_token(300, 501, None), 502);
    }
}
