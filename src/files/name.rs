//! The names of leader files and the record they hold.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::FileError;

/// Prefix of every leader file.
pub const PREFIX: &str = "leader_";
/// Suffix of every leader file.
pub const SUFFIX: &str = ".json";
/// Prefix of in-flight temp files (hidden, never counted as leader files).
pub const TEMP_PREFIX: &str = ".leader_";

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

/// Names and records for the unit tests of the modules that read and
/// write leader files.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{FileKey, LeaderRecord};

    pub fn key(token: u64, seq: u64) -> FileKey {
        FileKey { token, seq }
    }

    pub fn record(token: u64, seq: u64) -> LeaderRecord {
        LeaderRecord {
            node_id: "n1".into(),
            token,
            seq,
            written_at: "2026-01-01T00:00:00.000Z".into(),
            session_id: "0x1".into(),
            znode: "/election/c".into(),
        }
    }
}
