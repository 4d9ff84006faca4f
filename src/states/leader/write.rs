//! Leader's file writes: the write in flight on a blocking thread, how it
//! ended, retention, and the newest trusted token in file-dir (read before
//! the claim). Whether a file may be committed is decided by the commit
//! gate ([`crate::files::CommitGate`]); whether a failure ends the
//! leadership by [`Leader::failed`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};
use zookeeper_client::SessionState;

use super::{Exit, Leader};
use crate::files::{self, FileError, FileKey, LeaderRecord};
use crate::machine::Cause;

/// A write running on a blocking thread.
pub(super) struct InFlight {
    handle: JoinHandle<Result<PathBuf, FileError>>,
    key: FileKey,
    /// When it must have finished (end of the lease it started under).
    deadline: Instant,
    /// When it started: one session timeout later a write still running
    /// ends the leadership ([`WriteEnd::Hung`]).
    started: Instant,
    /// Already counted as a failure for overrunning its deadline.
    pub(super) overdue: bool,
}

/// How a write in flight ended.
pub(super) enum WriteEnd {
    Done(Result<Result<PathBuf, FileError>, tokio::task::JoinError>),
    Overdue,
    /// Still running one session timeout after it started: the disk hangs.
    Hung,
}

impl Leader<'_> {
    /// The newest trusted token in file-dir, read off the runtime thread and
    /// bounded. Temp files of interrupted writes are removed first (once per
    /// claim, before any write of this leadership; removing the temp file of
    /// a write still in flight elsewhere only makes that write fail).
    pub(super) async fn newest_on_disk(&self) -> Result<Option<u64>, Exit> {
        if self.ctx.cfg.job().is_some() {
            // No files with a command: the token floor in ZooKeeper rules.
            return Ok(None);
        }
        let dir = self.ctx.cfg.file_dir.clone();
        let published = self.ctx.published.clone();
        let read = tokio::task::spawn_blocking(move || {
            let removed = files::remove_stale_temp_files(&dir);
            if removed > 0 {
                info!(removed, "removed temp files of interrupted writes");
            }
            match files::newest_trusted_token(&dir) {
                Err(FileError::List { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
                Ok((newest, refused)) => {
                    report_refused(&published, &refused);
                    Ok(newest)
                }
            }
        });
        match tokio::time::timeout(self.session.timeout(), read).await {
            Ok(Ok(Ok(newest))) => Ok(newest),
            Ok(Ok(Err(e))) => Err(Exit::Failover(
                Cause::FileDirError.because(format!("cannot read file-dir: {e}")),
            )),
            Ok(Err(e)) => Err(Exit::Failover(
                Cause::FileDirError.because(format!("cannot read file-dir: {e}")),
            )),
            Err(_) => Err(Exit::Failover(
                Cause::FileDirError.because("reading file-dir timed out"),
            )),
        }
    }

    pub(super) fn start_write(&mut self) {
        let ctx = self.ctx;
        let key = FileKey {
            token: self.token,
            seq: self.seq + 1,
        };
        let record = LeaderRecord {
            node_id: ctx.node_id.clone(),
            token: key.token,
            seq: key.seq,
            written_at: files::now_rfc3339(),
            session_id: self.session.id_hex(),
            znode: self.leadership.path.clone(),
        };
        let dir = ctx.cfg.file_dir.clone();
        let device = self.device;
        let gate = self.gate.clone();
        let lease = self.lease.clone();
        let states = self.session.watcher();
        let node_gone = self.node_gone.clone();
        let still_leader = move || {
            lease.is_valid()
                && states.peek_state() == SessionState::SyncConnected
                && !node_gone.load(Ordering::SeqCst)
        };
        let handle = tokio::task::spawn_blocking(move || {
            files::write_atomic(&dir, device, key, &record, &gate, still_leader)
        });
        self.writing = Some(InFlight {
            handle,
            key,
            deadline: Instant::now() + self.lease.remaining(),
            started: Instant::now(),
            overdue: false,
        });
    }

    pub(super) fn on_write_end(&mut self, end: WriteEnd) -> Option<Exit> {
        let w = self.writing.as_mut()?;
        let key = w.key;
        let late = w.overdue;
        let result = match end {
            WriteEnd::Overdue => {
                w.overdue = true;
                self.ctx.published.metrics.write_errors.inc();
                return self.failed("the write did not finish within the lease");
            }
            WriteEnd::Hung => {
                // Whatever leader-timeout and max-write-failures say: this
                // leadership cannot write, a replica with a working disk can.
                let why = format!(
                    "a write hangs for {:?} (one session timeout): the disk is stuck",
                    self.session.timeout()
                );
                error!(why, "write failed");
                return Some(Exit::Failover(Cause::WriteFailures.because(why)));
            }
            WriteEnd::Done(r) => {
                self.writing = None;
                r.unwrap_or_else(|e| {
                    Err(FileError::Write {
                        path: PathBuf::new(),
                        source: std::io::Error::other(e),
                    })
                })
            }
        };
        let committed = result.as_ref().map_or_else(|e| e.is_committed(), |_| true);
        if committed {
            // Never reuse a name once a rename happened.
            self.seq = key.seq;
        }
        match result {
            Ok(path) if late => {
                warn!(file = %path.display(), "a write that overran its lease still committed in time");
                None
            }
            Ok(path) => {
                self.failures = 0;
                self.ctx.published.wrote_file();
                info!(file = %path.display(), token = key.token, seq = key.seq, "file written");
                self.prune();
                None
            }
            Err(_) if late => None,
            Err(e) if e.is_fenced() => {
                self.ctx.published.metrics.writes_fenced.inc();
                self.failed(&format!("write discarded at the commit point: {e}"))
            }
            Err(e) => {
                self.ctx.published.metrics.write_errors.inc();
                self.failed(&e.to_string())
            }
        }
    }

    /// Applies retention in the background, one pass at a time.
    fn prune(&self) {
        if self.pruning.swap(true, Ordering::SeqCst) {
            return;
        }
        let dir = self.ctx.cfg.file_dir.clone();
        let capacity = self.ctx.cfg.storage_capacity;
        let token = self.token;
        let published = self.ctx.published.clone();
        let pruning = self.pruning.clone();
        tokio::task::spawn_blocking(move || {
            let pruned = files::prune(&dir, capacity, token);
            published.metrics.files_pruned.inc_by(pruned.deleted as u64);
            report_refused(&published, &pruned.refused);
            if let Some(e) = pruned.error {
                published.metrics.prune_errors.inc();
                warn!(error = %e, "retention failed");
            }
            pruning.store(false, Ordering::SeqCst);
        });
    }
}

/// Waits for the write in flight to end, overrun its lease, or hang for
/// `hang_after` since it started; pending without one.
pub(super) async fn wait_write(writing: &mut Option<InFlight>, hang_after: Duration) -> WriteEnd {
    let Some(w) = writing.as_mut() else {
        return std::future::pending().await;
    };
    let overdue = w.overdue;
    let deadline = w.deadline;
    let hung = w.started + hang_after;
    tokio::select! {
        r = &mut w.handle => WriteEnd::Done(r),
        _ = tokio::time::sleep_until(deadline), if !overdue => WriteEnd::Overdue,
        _ = tokio::time::sleep_until(hung), if overdue => WriteEnd::Hung,
    }
}

/// Logs each refused file once and lists it in `/status`.
fn report_refused(published: &crate::published::PublishedStatus, refused: &[files::Refused]) {
    for r in refused {
        let file = r.key.file_name();
        if published.refused_file(&file, &r.why.to_string()) {
            warn!(file, reason = %r.why,
                "refusing a file named like a leader file: its token does not count, and it is left alone");
        }
    }
}
