//! Reading leader files back, for the leader's fencing floor and for
//! `election verify`.
//!
//! Anything can sit in file-dir under a leader file's name: an empty file
//! someone touched, a copy, a FIFO, a huge file. A file is *trusted* only
//! when it is a regular file of at most [`MAX_RECORD_BYTES`] whose content
//! is a leader record with the token and sequence its name says. Reads
//! never follow a symlink, never block on a FIFO or device (opened
//! non-blocking, checked with `fstat` before any read) and never read more
//! than the bound. See docs/design.md#fencing-tokens.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::files::name::{FileKey, LeaderRecord};

/// The largest leader file read back. A record is about 250 bytes; its
/// fields are bounded by the daemon (node id, znode path).
pub const MAX_RECORD_BYTES: u64 = 4096;

/// Why a file named like a leader file is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It cannot be opened or read.
    #[error("cannot read: {0}")]
    Unreadable(String),
    /// A symlink, FIFO, socket, device or directory.
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// Bigger than any leader record.
    #[error("{0} bytes, larger than a leader record ({MAX_RECORD_BYTES} bytes at most)")]
    TooLarge(u64),
    /// Not a complete leader record (empty, partial, other JSON).
    #[error("not a leader record: {0}")]
    NotRecord(String),
    /// A record, but of another file.
    #[error("content says token {token} seq {seq}, the name another")]
    NameMismatch {
        /// The token in the content.
        token: u64,
        /// The sequence in the content.
        seq: u64,
    },
}

/// Reads and checks the leader file of `key` in `dir`.
pub fn read(dir: &Path, key: FileKey) -> Result<LeaderRecord, Refusal> {
    let bytes = read_if_present(&dir.join(key.file_name()))
        .unwrap_or_else(|| Err(Refusal::Unreadable("no such file".into())))?;
    parse(&bytes, key)
}

/// Checks the content of the file named after `key`.
pub fn parse(bytes: &[u8], key: FileKey) -> Result<LeaderRecord, Refusal> {
    let record: LeaderRecord =
        serde_json::from_slice(bytes).map_err(|e| Refusal::NotRecord(e.to_string()))?;
    if record.token != key.token || record.seq != key.seq {
        return Err(Refusal::NameMismatch {
            token: record.token,
            seq: record.seq,
        });
    }
    Ok(record)
}

/// The content of a regular file of at most [`MAX_RECORD_BYTES`]; `None`
/// when nothing has the name.
pub fn read_if_present(path: &Path) -> Option<Result<Vec<u8>, Refusal>> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        // Non-blocking: opening a FIFO without a writer returns at once.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match opened {
        Ok(file) => Some(read_bounded(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Some(Err(Refusal::NotRegular("symlink")))
        }
        Err(e) => Some(Err(Refusal::Unreadable(e.to_string()))),
    }
}

fn read_bounded(mut file: fs::File) -> Result<Vec<u8>, Refusal> {
    let unreadable = |e: std::io::Error| Refusal::Unreadable(e.to_string());
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular(kind(&meta.file_type())));
    }
    if meta.len() > MAX_RECORD_BYTES {
        return Err(Refusal::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed tells a file that grew since the fstat.
    (&mut file)
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(Refusal::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

fn kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::files::name::fixtures::{key, record};

    fn put(dir: &Path, key: FileKey, body: &[u8]) -> std::path::PathBuf {
        let path = dir.join(key.file_name());
        fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn a_record_matching_its_name_is_trusted() {
        let d = tempfile::tempdir().unwrap();
        put(
            d.path(),
            key(9, 2),
            &serde_json::to_vec(&record(9, 2)).unwrap(),
        );
        assert_eq!(read(d.path(), key(9, 2)), Ok(record(9, 2)));
    }

    #[test]
    fn empty_partial_foreign_or_mismatched_content_is_refused() {
        let k = key(u64::MAX, 1);
        assert!(matches!(parse(b"", k), Err(Refusal::NotRecord(_))));
        assert!(matches!(
            parse(b"{\"node_id\":", k),
            Err(Refusal::NotRecord(_))
        ));
        assert!(matches!(parse(b"[1,2]", k), Err(Refusal::NotRecord(_))));
        let other = serde_json::to_vec(&record(5, 1)).unwrap();
        assert_eq!(
            parse(&other, k),
            Err(Refusal::NameMismatch { token: 5, seq: 1 })
        );
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        let big = put(d.path(), key(1, 1), b"");
        fs::File::options()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(MAX_RECORD_BYTES + 1)
            .unwrap();
        assert_eq!(
            read(d.path(), key(1, 1)),
            Err(Refusal::TooLarge(MAX_RECORD_BYTES + 1))
        );
        let fifo = std::ffi::CString::new(
            d.path()
                .join(key(2, 1).file_name())
                .to_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert_eq!(read(d.path(), key(2, 1)), Err(Refusal::NotRegular("FIFO")));
        fs::create_dir(d.path().join(key(3, 1).file_name())).unwrap();
        assert_eq!(
            read(d.path(), key(3, 1)),
            Err(Refusal::NotRegular("directory"))
        );
        let target = put(
            d.path(),
            key(4, 1),
            &serde_json::to_vec(&record(5, 1)).unwrap(),
        );
        std::os::unix::fs::symlink(&target, d.path().join(key(5, 1).file_name())).unwrap();
        assert_eq!(
            read(d.path(), key(5, 1)),
            Err(Refusal::NotRegular("symlink"))
        );
        assert!(matches!(
            read(d.path(), key(6, 1)),
            Err(Refusal::Unreadable(_))
        ));
    }
}
