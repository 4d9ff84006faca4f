//! Writing a leader file: the commit gate, the atomic write and what a
//! failed rename left behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::FileError;
use super::name::{FileKey, LeaderRecord, TEMP_PREFIX, list};
use crate::readback;

/// The device (`st_dev`) a path lives on.
pub fn device_of(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)?.dev())
}

/// Makes sure `dir` exists on `device` before a write. A missing directory
/// is recreated only when its parent is on that device: a volume that was
/// unmounted leaves an empty mount point on another device, and writing
/// there would silently hide files from every reader of the volume.
pub fn prepare_dir(dir: &Path, device: u64) -> Result<(), FileError> {
    let changed = |found| FileError::DeviceChanged {
        path: dir.into(),
        expected: device,
        found,
    };
    match device_of(dir) {
        Ok(d) if d == device => Ok(()),
        Ok(d) => Err(changed(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            match device_of(parent) {
                Ok(d) if d == device => {}
                Ok(d) => return Err(changed(d)),
                Err(source) => {
                    return Err(FileError::CreateDir {
                        path: dir.into(),
                        source,
                    });
                }
            }
            fs::create_dir(dir).map_err(|source| FileError::CreateDir {
                path: dir.into(),
                source,
            })
        }
        Err(source) => Err(FileError::List {
            path: dir.into(),
            source,
        }),
    }
}

/// The commit point of one leadership, shared by the leader and its
/// blocking writers. A commit (the final checks and the rename) runs while
/// holding the gate. [`CommitGate::close`] makes every later commit fail at
/// once; [`CommitGate::is_idle`] then tells whether a commit that started
/// before is still running. A leader closes its gate and waits until it is
/// idle before it gives up its session or its writer node, so no write of
/// its leadership can land after a successor could have started. The wait
/// is the leader's to bound: a commit can hang (a rename on a hung mount),
/// and closing never blocks.
#[derive(Debug, Default)]
pub struct CommitGate {
    closed: std::sync::atomic::AtomicBool,
    held: std::sync::Mutex<()>,
}

impl CommitGate {
    /// An open gate.
    pub fn new() -> CommitGate {
        CommitGate::default()
    }

    /// Runs `commit` unless the gate is closed, holding the gate meanwhile.
    pub(super) fn commit<T>(
        &self,
        commit: impl FnOnce() -> Result<T, FileError>,
    ) -> Result<T, FileError> {
        let _held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read while holding: a close that found the gate idle happened
        // before we took it, so we see it.
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(FileError::NotLeader);
        }
        commit()
    }

    /// Closes the gate: no commit starts after this returns. Does not wait
    /// for a commit in flight (see [`CommitGate::is_idle`]).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether no commit is running now. Once the gate is closed and idle,
    /// no file of its leadership can land any more.
    pub fn is_idle(&self) -> bool {
        !matches!(
            self.held.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
    }

    /// Whether the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Writes `record` atomically under the name of `key`, into `dir` on
/// `device` (see [`prepare_dir`]).
///
/// The temp file is created exclusively (never through a symlink, with a
/// random suffix), written and fsynced. Then, holding `gate`, the commit
/// point: no file of a newer token may exist, `still_leader` must answer
/// true (asked last, right before the rename), and the rename must not
/// replace an existing file. A temp file that is not committed is
/// removed. After the rename the directory is fsynced; if that fails the
/// file is visible all the same ([`FileError::is_committed`]), so its name
/// must not be used again.
pub fn write_atomic(
    dir: &Path,
    device: u64,
    key: FileKey,
    record: &LeaderRecord,
    gate: &CommitGate,
    still_leader: impl FnOnce() -> bool,
) -> Result<PathBuf, FileError> {
    prepare_dir(dir, device)?;
    let final_path = dir.join(key.file_name());
    let temp_path = dir.join(format!(
        "{TEMP_PREFIX}{:020}_{:010}.{}.{:016x}.tmp",
        key.token,
        key.seq,
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut body = serde_json::to_vec(record).expect("a record always serializes");
    body.push(b'\n');
    let written = create_new(&temp_path).and_then(|mut f| {
        f.write_all(&body)?;
        f.sync_all()
    });
    if let Err(source) = written {
        let _ = fs::remove_file(&temp_path);
        return Err(FileError::Write {
            path: temp_path,
            source,
        });
    }
    let committed = gate.commit(|| {
        if let Some(newer) = newest_token_above(dir, key.token)? {
            return Err(FileError::Superseded {
                path: dir.join(newer.file_name()),
            });
        }
        // Last, right before the rename: a directory listing that hung
        // must not be followed by a rename under a lease that ran out.
        if !still_leader() {
            return Err(FileError::NotLeader);
        }
        match rename_no_replace(&temp_path, &final_path) {
            Ok(()) => Ok(()),
            Err(source) => match after_failed_rename(final_content(&final_path), &body) {
                RenameAftermath::Published => {
                    tracing::warn!(file = %final_path.display(), error = %source,
                        "the rename reported an error but took effect: the file is published");
                    Ok(())
                }
                RenameAftermath::NameTaken => Err(FileError::NameTaken {
                    path: final_path.clone(),
                    source,
                }),
                RenameAftermath::NotDone => Err(FileError::Rename {
                    path: final_path.clone(),
                    source,
                }),
            },
        }
    });
    if let Err(e) = committed {
        let _ = fs::remove_file(&temp_path);
        return Err(e);
    }
    sync_dir(dir).map_err(|source| FileError::SyncDir {
        path: final_path.clone(),
        source,
    })?;
    Ok(final_path)
}

/// What a rename that reported an error left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameAftermath {
    /// The final name holds our content: the rename took effect (an NFS
    /// client retransmits a rename whose answer was lost, and the server
    /// answers the retransmit `ENOENT`, the source being gone).
    Published,
    /// Another file holds the final name: it is taken.
    NameTaken,
    /// Nothing under the final name: the rename did not happen.
    NotDone,
}

/// Decides what a failed rename did from what the final name holds now
/// (`None`: nothing) and the content we meant to publish. Our content is
/// unique to this write (it carries the token, the seq and the time).
pub fn after_failed_rename(found: Option<Vec<u8>>, ours: &[u8]) -> RenameAftermath {
    match found {
        Some(found) if found == ours => RenameAftermath::Published,
        Some(_) => RenameAftermath::NameTaken,
        None => RenameAftermath::NotDone,
    }
}

/// What the final name holds (never through a symlink, at most a leader
/// record's size); `None` when nothing. Anything unreadable or not a
/// regular file counts as present: its name is taken.
fn final_content(path: &Path) -> Option<Vec<u8>> {
    readback::read_if_present(path).map(Result::unwrap_or_default)
}

/// The newest trusted leader file whose token is above `token`, if any
/// (a foreign file named like one does not supersede anybody).
fn newest_token_above(dir: &Path, token: u64) -> Result<Option<FileKey>, FileError> {
    Ok(list(dir)?
        .into_iter()
        .rev()
        .take_while(|k| k.token > token)
        .find(|k| readback::read(dir, *k).is_ok()))
}

/// Creates a new file: exclusively, never through a symlink, mode 0644.
pub(super) fn create_new(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing a file:
/// `renameat2(RENAME_NOREPLACE)`, or where the file system lacks it, a hard
/// link (which also refuses to replace) and an unlink of the temp name.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them
    // like rename(2) does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            let _ = fs::remove_file(from);
            Ok(())
        }
        _ => Err(err),
    }
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
