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
//! Names and the record are in [`name`], the commit gate and the atomic
//! write in `commit`; this module prepares the directory and prunes it.

use std::fs;
use std::io::Write;
use std::path::Path;

mod commit;
mod error;
pub mod name;

pub use commit::{
    CommitGate, RenameAftermath, after_failed_rename, device_of, prepare_dir, write_atomic,
};
pub use error::FileError;
pub use name::{FileKey, LeaderRecord, PREFIX, SUFFIX, TEMP_PREFIX, list};

use crate::readback::{self, Refusal};
use commit::{create_new, sync_dir};

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

    use crate::files::name::fixtures::{key, record};

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
