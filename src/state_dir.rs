//! The state directory (`--state-dir`): the ZooKeeper session of this
//! process, kept so that a restarted daemon can close it at once.
//!
//! The daemon holds an exclusive `flock` on `<state-dir>/lock` for its
//! whole life and keeps its current session's id and password in
//! `<state-dir>/session.json` (mode 0600, replaced atomically), removed on
//! a clean stop. A new incarnation that takes the lock knows the earlier
//! one has exited (the kernel drops the lock only then), so closing its
//! session cannot take a leadership away from a live process. A session is
//! touched only by a process that locked the very file (device and inode)
//! its writer held: a lock file deleted and created again proves nothing.
//! Why this keeps a single writer: `docs/design.md`, "Restart takeover".

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use zookeeper_client::{SessionId, SessionInfo};

/// Name of the lock file.
pub const LOCK_FILE: &str = "lock";
/// Name of the session file.
pub const SESSION_FILE: &str = "session.json";
/// The most a session file may hold (what the daemon writes is ~200 bytes).
const MAX_SESSION_FILE: u64 = 4096;

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// The directory or its lock file cannot be created or opened.
    #[error("state dir {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another live process holds the lock.
    #[error(
        "state dir {path} is locked by another election process{holder}: \
         each daemon needs a state dir of its own (a restarted daemon takes it \
         over once the earlier process has exited)"
    )]
    Locked { path: PathBuf, holder: String },
    /// The session file cannot be written or removed.
    #[error("session file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A session saved by a daemon, and the lock file it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// Session id.
    pub session_id: i64,
    /// Session password, hex.
    pub password: String,
    /// The connect string it was established with.
    pub servers: String,
    /// Device of the lock file its writer held.
    pub lock_dev: u64,
    /// Inode of the lock file its writer held.
    pub lock_ino: u64,
}

impl SavedSession {
    /// The session, to connect it again; `None` for a password that is not hex.
    pub fn info(&self) -> Option<SessionInfo> {
        let password = decode_hex(&self.password)?;
        Some(SessionInfo::from_parts(
            SessionId(self.session_id),
            password,
        ))
    }
}

/// An open, locked state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// Held open (and locked) until the process exits.
    _lock: fs::File,
    /// Device and inode of the lock file.
    lock_id: (u64, u64),
    /// A session of an earlier incarnation, until Init takes it.
    earlier: Mutex<Option<SavedSession>>,
}

impl StateDir {
    /// Creates `dir` if needed (0700), takes the lock or fails with
    /// [`StateDirError::Locked`], and reads a session an earlier
    /// incarnation left. An unreadable or foreign session file is
    /// ignored (logged): it only costs the restart shortcut.
    pub fn open(dir: &Path) -> Result<StateDir, StateDirError> {
        let failed = |source| StateDirError::Open {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(failed)?;
        // SAFETY: flock(2) on a file descriptor we own; no memory effects.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = (&lock).take(64).read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.chars().all(|c| c.is_ascii_digit()) && !holder.is_empty() {
                    format!(" (pid {holder} in its namespace)")
                } else {
                    String::new()
                };
                return Err(StateDirError::Locked {
                    path: dir.to_owned(),
                    holder,
                });
            }
            return Err(failed(err));
        }
        let meta = lock.metadata().map_err(failed)?;
        let lock_id = (meta.dev(), meta.ino());
        // Our pid, for the message of a process that finds the lock taken.
        let _ = lock.set_len(0);
        let _ = lock.write_all(std::process::id().to_string().as_bytes());
        let earlier = match read_saved(&dir.join(SESSION_FILE)) {
            Ok(Some(s)) if (s.lock_dev, s.lock_ino) == lock_id => Some(s),
            Ok(Some(s)) => {
                tracing::warn!(session_id = %format!("{:#x}", s.session_id as u64),
                    "the saved session was written under another lock file; leaving it to expire");
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the saved session; leaving it to expire");
                None
            }
        };
        Ok(StateDir {
            dir: dir.to_owned(),
            _lock: lock,
            lock_id,
            earlier: Mutex::new(earlier),
        })
    }

    /// The session an earlier incarnation left, once.
    pub fn take_earlier(&self) -> Option<SavedSession> {
        self.earlier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// What [`StateDir::save`] would record for `info` on `servers`.
    pub fn record(&self, info: &SessionInfo, servers: &str) -> SavedSession {
        SavedSession {
            session_id: info.id().0,
            password: encode_hex(info.password()),
            servers: servers.to_owned(),
            lock_dev: self.lock_id.0,
            lock_ino: self.lock_id.1,
        }
    }

    /// Replaces the session file by `saved` (a 0600 temp file, fsynced,
    /// renamed over it, the directory fsynced).
    pub fn save(&self, saved: &SavedSession) -> Result<(), StateDirError> {
        let path = self.dir.join(SESSION_FILE);
        let temp = self.dir.join(format!("{SESSION_FILE}.tmp"));
        let failed = |source| StateDirError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec(saved).expect("a saved session always serializes");
        match fs::remove_file(&temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(&body)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&temp, &path))
            .and_then(|()| fs::File::open(&self.dir)?.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(failed(e));
        }
        Ok(())
    }

    /// Removes the session file (a clean stop: nothing left to close).
    pub fn clear(&self) -> Result<(), StateDirError> {
        let path = self.dir.join(SESSION_FILE);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StateDirError::Write { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Reads a session file: `None` when there is none; an error for anything
/// that is not a small regular file holding a saved session.
fn read_saved(path: &Path) -> Result<Option<SavedSession>, String> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut body = Vec::new();
    file.take(MAX_SESSION_FILE + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if body.len() as u64 > MAX_SESSION_FILE {
        return Err(format!("{} is larger than a session file", path.display()));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("{}: not a saved session: {e}", path.display()))
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &StateDir) -> SavedSession {
        let info = SessionInfo::from_parts(SessionId(0x1234), vec![1, 2, 0xfe, 0xff]);
        dir.record(&info, "127.0.0.1:2181")
    }

    #[test]
    fn a_saved_session_is_found_by_the_next_holder_of_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let first = StateDir::open(&path).unwrap();
        let s = saved(&first);
        first.save(&s).unwrap();
        let mode = fs::metadata(path.join(SESSION_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(first);
        let second = StateDir::open(&path).unwrap();
        let found = second.take_earlier().unwrap();
        assert_eq!(found, s);
        let info = found.info().unwrap();
        assert_eq!(
            (info.id().0, info.password()),
            (0x1234, &[1, 2, 0xfe, 0xff][..])
        );
        assert_eq!(second.take_earlier(), None, "taken once");
    }

    #[test]
    fn a_second_process_on_a_locked_dir_is_refused_and_reads_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        first.save(&saved(&first)).unwrap();
        // flock locks belong to an open file description: a second open
        // in this process conflicts like another process would.
        match StateDir::open(tmp.path()) {
            Err(StateDirError::Locked { holder, .. }) => {
                assert!(holder.contains(&std::process::id().to_string()), "{holder}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_session_saved_under_another_lock_file_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        first.save(&saved(&first)).unwrap();
        // The lock file deleted while its holder runs: a new one is
        // another inode, and proves nothing about the holder.
        fs::remove_file(tmp.path().join(LOCK_FILE)).unwrap();
        let second = StateDir::open(tmp.path()).unwrap();
        assert_eq!(second.take_earlier(), None);
        drop(first);
    }

    #[test]
    fn a_clean_stop_leaves_nothing_and_garbage_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        first.save(&saved(&first)).unwrap();
        first.clear().unwrap();
        first.clear().unwrap();
        drop(first);
        assert_eq!(StateDir::open(tmp.path()).unwrap().take_earlier(), None);
        fs::write(tmp.path().join(SESSION_FILE), b"\x00garbage").unwrap();
        assert_eq!(StateDir::open(tmp.path()).unwrap().take_earlier(), None);
    }

    #[test]
    fn hex_round_trips_and_garbage_is_refused() {
        assert_eq!(
            decode_hex(&encode_hex(&[0, 0x7f, 0xff])).unwrap(),
            vec![0, 0x7f, 0xff]
        );
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é0"), None);
    }
}
