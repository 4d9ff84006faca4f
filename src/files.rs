//! The leader file contract: naming, atomic writes and retention.
//!
//! A leader writes `leader_<token>_<seq>.json` into file-dir, where `token`
//! is the fencing token of its leadership (20 digits) and `seq` counts the
//! files of that leadership from 1 (10 digits). Both are zero padded, so the
//! lexicographic order of names is the order in which leaders wrote them,
//! whatever the wall clock does. The content is one JSON object
//! ([`LeaderRecord`]). Files are written to a hidden temp file, fsynced,
//! renamed into place and the directory fsynced: a reader never sees a
//! partial file. Retention only ever touches names of this pattern, and
//! of those only files whose content is the record its name says
//! ([`crate::readback`]); the same check decides whose token counts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::readback::{self, Refusal};

/// Prefix of every leader file.
pub const PREFIX: &str = "leader_";
/// Suffix of every leader file.
pub const SUFFIX: &str = ".json";
/// Prefix of in-flight temp files (hidden, never counted as leader files).
pub const TEMP_PREFIX: &str = ".leader_";

/// Errors of file-dir operations.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Creating the directory failed.
    #[error("cannot create file-dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The directory is not writable.
    #[error("file-dir {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing the temp file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Renaming the temp file into place failed.
    #[error("cannot rename into {path}: {source}")]
    Rename {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The rename reported an error, and a different file holds the
    /// name: it is taken, and must not be tried again.
    #[error("cannot rename into {path} ({source}): the name is taken by another file")]
    NameTaken {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Listing the directory failed.
    #[error("cannot list file-dir {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Deleting an old file failed.
    #[error("cannot delete {path}: {source}")]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is in place, but fsyncing the directory failed: it may
    /// not survive a crash, and its name is taken.
    #[error("{path} was renamed into place, but syncing the directory failed: {source}")]
    SyncDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// file-dir is not on the device it was on at start (a volume was
    /// unmounted or replaced).
    #[error(
        "file-dir {path} is on device {found:#x}, not {expected:#x} as at start; refusing to write"
    )]
    DeviceChanged {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A file of a newer leadership is already in file-dir.
    #[error("{path} belongs to a newer leadership; file discarded")]
    Superseded { path: PathBuf },
    /// Leadership could not be confirmed right before the commit.
    #[error("leadership not confirmed at commit time; file discarded")]
    NotLeader,
}

impl FileError {
    /// Whether the file became visible despite the error (its name is used).
    pub fn is_committed(&self) -> bool {
        matches!(
            self,
            FileError::SyncDir { .. } | FileError::NameTaken { .. }
        )
    }

    /// Whether the write was refused at the commit point because leadership
    /// could not be vouched for (rather than because the disk failed).
    pub fn is_fenced(&self) -> bool {
        matches!(self, FileError::NotLeader | FileError::Superseded { .. })
    }
}

/// Content of one leader file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// Which replica wrote it.
    pub node_id: String,
    /// Fencing token of the leadership that wrote it (strictly increasing
    /// across successive leaderships).
    pub token: u64,
    /// Number of this file within its leadership, from 1.
    pub seq: u64,
    /// Wall-clock time of the write, RFC 3339 with milliseconds, UTC.
    pub written_at: String,
    /// ZooKeeper session of the leader, hex.
    pub session_id: String,
    /// The leader's candidate znode.
    pub znode: String,
}

/// Identity of a leader file, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    /// Fencing token.
    pub token: u64,
    /// Sequence within the leadership.
    pub seq: u64,
}

impl FileKey {
    /// The file name of this key.
    pub fn file_name(&self) -> String {
        format!("{PREFIX}{:020}_{:010}{SUFFIX}", self.token, self.seq)
    }

    /// Parses a leader file name; `None` for anything else (foreign files).
    pub fn parse(name: &str) -> Option<FileKey> {
        let body = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let (token, seq) = body.split_once('_')?;
        if token.len() != 20 || seq.len() != 10 {
            return None;
        }
        if !token.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(FileKey {
            token: token.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Creates `dir` if needed and proves it is writable with a probe file.
/// Returns the device the directory lives on, which [`write_atomic`]
/// insists on afterwards.
pub fn ensure_writable_dir(dir: &Path) -> Result<u64, FileError> {
    fs::create_dir_all(dir).map_err(|source| FileError::CreateDir {
        path: dir.into(),
        source,
    })?;
    let probe = dir.join(format!(
        ".election-probe-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result =
        create_new(&probe).and_then(|mut f| f.write_all(b"probe").and_then(|_| f.sync_all()));
    let _ = fs::remove_file(&probe);
    result.map_err(|source| FileError::NotWritable {
        path: dir.into(),
        source,
    })?;
    device_of(dir).map_err(|source| FileError::NotWritable {
        path: dir.into(),
        source,
    })
}

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

/// Lists the leader files in `dir`, in write order (oldest first).
pub fn list(dir: &Path) -> Result<Vec<FileKey>, FileError> {
    let entries = fs::read_dir(dir).map_err(|source| FileError::List {
        path: dir.into(),
        source,
    })?;
    let mut keys: Vec<FileKey> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(FileKey::parse))
        .collect();
    keys.sort();
    Ok(keys)
}

/// A file named like a leader file that is not trusted (see
/// [`crate::readback`]): its token never counts, and it is never deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its name.
    pub key: FileKey,
    /// Why.
    pub why: Refusal,
}

/// The highest fencing token of a trusted leader file in `dir`, if any,
/// and the files above it that were refused (newest first).
pub fn newest_trusted_token(dir: &Path) -> Result<(Option<u64>, Vec<Refused>), FileError> {
    let mut refused = Vec::new();
    for key in list(dir)?.into_iter().rev() {
        match readback::read(dir, key) {
            Ok(_) => return Ok((Some(key.token), refused)),
            Err(why) => refused.push(Refused { key, why }),
        }
    }
    Ok((None, refused))
}

/// Which files retention deletes: all but the newest `capacity`, and never
/// one whose token is newer than `own_token` (a newer leader's file).
pub fn retention_victims(files: &[FileKey], capacity: usize, own_token: u64) -> Vec<FileKey> {
    let mut sorted = files.to_vec();
    sorted.sort();
    let excess = sorted.len().saturating_sub(capacity);
    sorted
        .into_iter()
        .take(excess)
        .filter(|k| k.token <= own_token)
        .collect()
}

/// What one retention pass did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Files deleted.
    pub deleted: usize,
    /// The first error met (deletion goes on past errors).
    pub error: Option<FileError>,
    /// Files left alone because they are not trusted leader files: victims
    /// of retention, and any file with a token above ours.
    pub refused: Vec<Refused>,
}

/// Deletes what [`retention_victims`] chooses, but only trusted leader
/// files: a foreign file named like one is never deleted. Files with a
/// token above `own_token` are checked too (a foreign one planted during a
/// leadership is reported, and takes no place); a refused file below it
/// that is not a victim is not read and takes a place.
pub fn prune(dir: &Path, capacity: usize, own_token: u64) -> Pruned {
    let mut pruned = Pruned::default();
    let files = match list(dir) {
        Ok(files) => files,
        Err(e) => {
            pruned.error = Some(e);
            return pruned;
        }
    };
    // Refused files above our token take no place of `capacity` (else an
    // empty file with the last token would cost us our newest file).
    let (mut counted, mut above): (Vec<FileKey>, Vec<FileKey>) =
        files.into_iter().partition(|k| k.token <= own_token);
    above.retain(|&key| match readback::read(dir, key) {
        Ok(_) => true,
        Err(why) => {
            pruned.refused.push(Refused { key, why });
            false
        }
    });
    counted.extend(above);
    for key in retention_victims(&counted, capacity, own_token) {
        if let Err(why) = readback::read(dir, key) {
            pruned.refused.push(Refused { key, why });
            continue;
        }
        let path = dir.join(key.file_name());
        match fs::remove_file(&path) {
            Ok(()) => pruned.deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                pruned
                    .error
                    .get_or_insert(FileError::Delete { path, source });
            }
        }
    }
    if pruned.deleted > 0 {
        let _ = sync_dir(dir);
    }
    pruned
}

/// Removes temp files left behind by an interrupted write of this process
/// or an earlier one. Returns how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX) && n.ends_with(".tmp"))
        })
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
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
    fn commit<T>(&self, commit: impl FnOnce() -> Result<T, FileError>) -> Result<T, FileError> {
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
    crate::readback::read_if_present(path).map(Result::unwrap_or_default)
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
fn create_new(path: &Path) -> std::io::Result<fs::File> {
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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Current wall-clock time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(token: u64, seq: u64) -> FileKey {
        FileKey { token, seq }
    }

    fn record(token: u64, seq: u64) -> LeaderRecord {
        LeaderRecord {
            node_id: "n1".into(),
            token,
            seq,
            written_at: now_rfc3339(),
            session_id: "0x1".into(),
            znode: "/election/c".into(),
        }
    }

    #[test]
    fn names_round_trip_and_sort_in_write_order() {
        let keys = [key(5, 10), key(5, 9), key(12, 1), key(7, 100)];
        for k in keys {
            assert_eq!(FileKey::parse(&k.file_name()), Some(k));
        }
        let mut names: Vec<String> = keys.iter().map(|k| k.file_name()).collect();
        names.sort();
        let parsed: Vec<FileKey> = names.iter().map(|n| FileKey::parse(n).unwrap()).collect();
        assert_eq!(parsed, vec![key(5, 9), key(5, 10), key(7, 100), key(12, 1)]);
    }

    #[test]
    fn foreign_names_are_not_leader_files() {
        for name in [
            "notes.txt",
            "leader_.json",
            "leader_1_2.json",
            "leader_0000000000000000000a_0000000001.json",
            ".leader_00000000000000000001_0000000001.1.tmp",
            "leader_00000000000000000001_0000000001.json.bak",
        ] {
            assert_eq!(FileKey::parse(name), None, "{name}");
        }
    }

    #[test]
    fn retention_keeps_the_newest_capacity_files() {
        let files: Vec<FileKey> = (1..=5).map(|s| key(3, s)).collect();
        assert_eq!(retention_victims(&files, 3, 3), vec![key(3, 1), key(3, 2)]);
        assert!(retention_victims(&files, 5, 3).is_empty());
        assert!(retention_victims(&files, 10, 3).is_empty());
    }

    #[test]
    fn retention_never_deletes_a_newer_leaders_file() {
        let files = vec![key(9, 1), key(9, 2), key(3, 1), key(3, 2)];
        // We are the stale leader with token 3: the token-9 files are newer.
        assert_eq!(retention_victims(&files, 1, 3), vec![key(3, 1), key(3, 2)]);
        assert_eq!(
            retention_victims(&files, 1, 9),
            vec![key(3, 1), key(3, 2), key(9, 1)]
        );
    }

    #[test]
    fn write_is_atomic_and_prune_spares_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("foreign.txt"), "keep me").unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        for seq in 1..=4 {
            write_atomic(dir.path(), dev, key(7, seq), &record(7, seq), &gate, || {
                true
            })
            .unwrap();
        }
        let pruned = prune(dir.path(), 2, 7);
        assert!(pruned.error.is_none());
        assert_eq!(pruned.deleted, 2);
        assert_eq!(list(dir.path()).unwrap(), vec![key(7, 3), key(7, 4)]);
        assert!(dir.path().join("foreign.txt").exists());
        let text = std::fs::read_to_string(dir.path().join(key(7, 4).file_name())).unwrap();
        let back: LeaderRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.seq, 4);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_failed_rename_is_judged_by_what_the_final_name_holds() {
        let ours = b"{\"seq\":3}\n".to_vec();
        assert_eq!(
            after_failed_rename(Some(ours.clone()), &ours),
            RenameAftermath::Published
        );
        assert_eq!(
            after_failed_rename(Some(b"{\"seq\":3} other\n".to_vec()), &ours),
            RenameAftermath::NameTaken
        );
        assert_eq!(
            after_failed_rename(Some(Vec::new()), &ours),
            RenameAftermath::NameTaken
        );
        assert_eq!(after_failed_rename(None, &ours), RenameAftermath::NotDone);
    }

    #[test]
    fn a_name_taken_by_a_foreign_file_is_an_error_that_uses_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        let taken = dir.path().join(key(1, 1).file_name());
        std::fs::write(&taken, b"not ours").unwrap();
        let err =
            write_atomic(dir.path(), dev, key(1, 1), &record(1, 1), &gate, || true).unwrap_err();
        assert!(matches!(err, FileError::NameTaken { .. }), "{err}");
        assert!(err.is_committed(), "the next write must use the next seq");
        assert_eq!(std::fs::read(&taken).unwrap(), b"not ours");
    }

    #[test]
    fn a_write_that_loses_leadership_before_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        let err =
            write_atomic(dir.path(), dev, key(1, 1), &record(1, 1), &gate, || false).unwrap_err();
        assert!(matches!(err, FileError::NotLeader));
        assert!(err.is_fenced() && !err.is_committed());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_closed_gate_refuses_every_later_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        write_atomic(dir.path(), dev, key(1, 1), &record(1, 1), &gate, || true).unwrap();
        gate.close();
        assert!(gate.is_closed());
        let err =
            write_atomic(dir.path(), dev, key(1, 2), &record(1, 2), &gate, || true).unwrap_err();
        assert!(matches!(err, FileError::NotLeader), "{err}");
        assert_eq!(list(dir.path()).unwrap(), vec![key(1, 1)]);
    }

    #[test]
    fn closing_never_blocks_and_the_gate_is_busy_while_a_commit_runs() {
        let gate = std::sync::Arc::new(CommitGate::new());
        assert!(gate.is_idle());
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let commit = std::thread::spawn(move || {
            g.commit(|| {
                entered.send(()).unwrap();
                released.recv().unwrap();
                Ok(())
            })
        });
        wait_entered.recv().unwrap();
        // A hung commit: closing returns at once, the gate stays busy.
        gate.close();
        assert!(gate.is_closed() && !gate.is_idle());
        release.send(()).unwrap();
        commit.join().unwrap().unwrap();
        assert!(gate.is_idle());
        assert!(matches!(gate.commit(|| Ok(())), Err(FileError::NotLeader)));
    }

    #[test]
    fn a_published_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        let path = write_atomic(dir.path(), dev, key(4, 1), &record(4, 1), &gate, || true).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let other = LeaderRecord {
            node_id: "n2".into(),
            ..record(4, 1)
        };
        let err = write_atomic(dir.path(), dev, key(4, 1), &other, &gate, || true).unwrap_err();
        assert!(
            matches!(&err, FileError::NameTaken { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn an_old_leader_cannot_commit_after_a_newer_token_landed() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        write_atomic(dir.path(), dev, key(9, 1), &record(9, 1), &gate, || true).unwrap();
        let err =
            write_atomic(dir.path(), dev, key(3, 7), &record(3, 7), &gate, || true).unwrap_err();
        assert!(matches!(err, FileError::Superseded { .. }), "{err}");
        assert!(err.is_fenced());
        assert_eq!(list(dir.path()).unwrap(), vec![key(9, 1)]);
    }

    #[test]
    fn foreign_files_named_like_leader_files_neither_count_nor_go() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure_writable_dir(dir.path()).unwrap();
        let gate = CommitGate::new();
        for seq in 1..=3 {
            write_atomic(dir.path(), dev, key(7, seq), &record(7, seq), &gate, || {
                true
            })
            .unwrap();
        }
        let put = |k: FileKey, body: &[u8]| std::fs::write(dir.path().join(k.file_name()), body);
        // An empty file with the last token, a copy under another name, and
        // an old-looking one that retention would pick first.
        put(key(u64::MAX, 1), b"").unwrap();
        let copy = serde_json::to_vec(&record(7, 1)).unwrap();
        put(key(100, 1), &copy).unwrap();
        put(key(1, 1), b"x").unwrap();
        let (newest, refused) = newest_trusted_token(dir.path()).unwrap();
        assert_eq!(newest, Some(7));
        let names: Vec<FileKey> = refused.iter().map(|r| r.key).collect();
        assert_eq!(names, vec![key(u64::MAX, 1), key(100, 1)]);
        assert!(matches!(refused[1].why, Refusal::NameMismatch { .. }));
        // They supersede nobody: the leader of token 7 still commits.
        write_atomic(dir.path(), dev, key(7, 4), &record(7, 4), &gate, || true).unwrap();
        // Retention spares them and reports them.
        let pruned = prune(dir.path(), 2, 7);
        assert!(pruned.error.is_none());
        let mut refused: Vec<FileKey> = pruned.refused.iter().map(|r| r.key).collect();
        refused.sort();
        assert_eq!(refused, vec![key(1, 1), key(100, 1), key(u64::MAX, 1)]);
        assert_eq!(
            list(dir.path()).unwrap(),
            vec![
                key(1, 1),
                key(7, 3),
                key(7, 4),
                key(100, 1),
                key(u64::MAX, 1)
            ]
        );
        assert_eq!(pruned.deleted, 2);
        assert_eq!(
            std::fs::read(dir.path().join(key(u64::MAX, 1).file_name())).unwrap(),
            b""
        );
    }

    #[test]
    fn a_missing_dir_is_recreated_only_on_its_own_device() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("files");
        let dev = ensure_writable_dir(&sub).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        // The parent is on the same device: recreated.
        prepare_dir(&sub, dev).unwrap();
        assert!(sub.is_dir());
        // A directory that is on another device than recorded: refused.
        let err = prepare_dir(&sub, dev ^ 1).unwrap_err();
        assert!(matches!(err, FileError::DeviceChanged { .. }), "{err}");
        std::fs::remove_dir(&sub).unwrap();
        let err = prepare_dir(&sub, dev ^ 1).unwrap_err();
        assert!(matches!(err, FileError::DeviceChanged { .. }), "{err}");
        assert!(!sub.exists(), "nothing is created on the wrong device");
    }

    #[test]
    fn temp_files_are_never_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let err = create_new(&dir.path().join("link")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(!target.exists());
    }

    #[test]
    fn stale_temp_files_are_removed_but_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path()
                .join(".leader_00000000000000000001_0000000001.9.tmp"),
            "x",
        )
        .unwrap();
        std::fs::write(dir.path().join("other.tmp"), "x").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()), 1);
        assert!(dir.path().join("other.tmp").exists());
    }

    #[test]
    fn rfc3339_has_milliseconds() {
        let s = now_rfc3339();
        assert_eq!(s.len(), "2026-01-01T00:00:00.000Z".len(), "{s}");
        assert!(s.ends_with('Z'));
    }

    #[test]
    fn ensure_writable_dir_creates_and_refuses_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        ensure_writable_dir(&sub).unwrap();
        assert!(sub.is_dir());
        assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
    }
}
