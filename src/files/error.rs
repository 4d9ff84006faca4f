//! Errors of file-dir operations.

use std::path::PathBuf;

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
