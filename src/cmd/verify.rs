//! The invariant checker behind `election verify`.
//!
//! Reads a file-dir and reports what would break the promise to users:
//! leader files that are unreadable, partial, not regular files or larger
//! than a record (read as [`crate::readback`] does: bounded, never blocking
//! on a FIFO), a name that disagrees with its content, fencing tokens going backwards in time, overlapping
//! leaderships (a file of an older token written after the first file of a
//! newer token), and gaps between files longer than a bound. Times compared
//! are the `written_at` wall-clock stamps, so a stepped system clock can show
//! up as an overlap: check NTP before blaming the election.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::files::{self, FileKey};
use crate::readback::{self, Refusal};

/// Flags of `election verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Directory to check.
    #[arg(long, env = "ELECTION_FILE_DIR", default_value = "/tmp/election", value_parser = crate::flags::parse_file_dir)]
    pub file_dir: PathBuf,

    /// Report gaps between consecutive files longer than this (e.g. `30s`).
    #[arg(long, value_parser = crate::flags::parse_positive_duration)]
    pub max_gap: Option<Duration>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// The file cannot be read or is not a complete leader record.
    BadContent { file: String, error: String },
    /// The name says one token/seq, the content another.
    NameMismatch { file: String },
    /// A file of `older` token was written after the first file of `newer`.
    Overlap {
        older: u64,
        newer: u64,
        older_file: String,
        newer_first_file: String,
    },
    /// Within one leadership, a later file carries an earlier time: the
    /// wall clock stepped back. Reported as a warning: file order comes
    /// from the name, not the clock, so nothing breaks.
    ClockStep { file: String },
    /// No file for longer than the bound.
    Gap {
        after: String,
        before: String,
        gap_ms: i64,
    },
}

/// Result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Leader files read.
    pub files: usize,
    /// Distinct leaderships (tokens) seen.
    pub leaderships: usize,
    /// Temp files of interrupted writes (harmless, never visible as leader files).
    pub temp_files: usize,
    /// Problems.
    pub violations: Vec<Violation>,
    /// Things worth knowing that break no promise (clock steps).
    pub warnings: Vec<Violation>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Errors of the checker itself.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory cannot be listed.
    #[error(transparent)]
    List(#[from] files::FileError),
}

struct Seen {
    key: FileKey,
    name: String,
    at_ms: i64,
}

/// Checks `dir`.
pub fn check(dir: &Path, max_gap: Option<Duration>) -> Result<Report, VerifyError> {
    let keys = files::list(dir)?;
    let temp_files = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(files::TEMP_PREFIX)
                })
                .count()
        })
        .unwrap_or(0);
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: Vec<Seen> = Vec::new();
    for key in &keys {
        let name = key.file_name();
        let record = readback::read(dir, *key).and_then(|r| {
            parse_time_ms(&r.written_at)
                .map_err(|e| Refusal::NotRecord(format!("bad written_at: {e}")))
        });
        match record {
            Err(Refusal::NameMismatch { .. }) => {
                violations.push(Violation::NameMismatch { file: name })
            }
            Err(e) => violations.push(Violation::BadContent {
                file: name,
                error: e.to_string(),
            }),
            Ok(at_ms) => seen.push(Seen {
                key: *key,
                name,
                at_ms,
            }),
        }
    }
    // `seen` is in name order = (token, seq) order.
    let mut first_of: BTreeMap<u64, &Seen> = BTreeMap::new();
    for s in &seen {
        first_of.entry(s.key.token).or_insert(s);
    }
    for s in &seen {
        // Any newer leadership whose first file predates this one: overlap.
        // (Excluded, not `token + 1..`: the token may be u64::MAX.)
        let newer = (Bound::Excluded(s.key.token), Bound::Unbounded);
        if let Some((newer, first)) = first_of.range(newer).find(|(_, f)| f.at_ms < s.at_ms) {
            violations.push(Violation::Overlap {
                older: s.key.token,
                newer: *newer,
                older_file: s.name.clone(),
                newer_first_file: first.name.clone(),
            });
        }
    }
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.key.token == b.key.token && b.at_ms < a.at_ms {
            warnings.push(Violation::ClockStep {
                file: b.name.clone(),
            });
        }
        if let Some(bound) = max_gap {
            let gap = b.at_ms.saturating_sub(a.at_ms);
            if i128::from(gap) > bound.as_millis() as i128 {
                violations.push(Violation::Gap {
                    after: a.name.clone(),
                    before: b.name.clone(),
                    gap_ms: gap,
                });
            }
        }
    }
    Ok(Report {
        files: keys.len(),
        leaderships: first_of.len(),
        temp_files,
        violations,
        warnings,
    })
}

/// Parses an RFC 3339 time to unix milliseconds.
pub fn parse_time_ms(s: &str) -> Result<i64, time::error::Parse> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Renders a report for people.
pub fn render_text(dir: &Path, r: &Report) -> String {
    let mut out = format!(
        "{}: {} leader files, {} leaderships, {} temp files, {} violations\n",
        dir.display(),
        r.files,
        r.leaderships,
        r.temp_files,
        r.violations.len()
    );
    for w in &r.warnings {
        out.push_str(&format!(
            "  warning: {}\n",
            serde_json::to_string(w).unwrap_or_default()
        ));
    }
    for v in &r.violations {
        out.push_str(&format!(
            "  violation: {}\n",
            serde_json::to_string(v).unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::LeaderRecord;

    fn put(dir: &Path, token: u64, seq: u64, at: &str) {
        let r = LeaderRecord {
            node_id: "n".into(),
            token,
            seq,
            written_at: at.into(),
            session_id: "0x1".into(),
            znode: "/e/c".into(),
        };
        let key = FileKey { token, seq };
        std::fs::write(dir.join(key.file_name()), serde_json::to_vec(&r).unwrap()).unwrap();
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), 10, 1, "2026-01-01T00:00:00.000Z");
        put(d.path(), 10, 2, "2026-01-01T00:00:01.000Z");
        put(d.path(), 12, 1, "2026-01-01T00:00:02.500Z");
        std::fs::write(d.path().join("foreign.txt"), "x").unwrap();
        let r = check(d.path(), Some(Duration::from_secs(2))).unwrap();
        assert!(r.is_clean(), "{:?}", r.violations);
        assert_eq!((r.files, r.leaderships), (3, 2));
    }

    #[test]
    fn an_old_leader_writing_after_the_new_one_started_is_an_overlap() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), 10, 1, "2026-01-01T00:00:00.000Z");
        put(d.path(), 12, 1, "2026-01-01T00:00:01.000Z");
        put(d.path(), 10, 2, "2026-01-01T00:00:02.000Z");
        let r = check(d.path(), None).unwrap();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(matches!(
            r.violations[0],
            Violation::Overlap {
                older: 10,
                newer: 12,
                ..
            }
        ));
    }

    #[test]
    fn partial_and_mismatched_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(FileKey { token: 1, seq: 1 }.file_name()),
            b"{\"node_id\":",
        )
        .unwrap();
        put(d.path(), 2, 1, "2026-01-01T00:00:00.000Z");
        std::fs::rename(
            d.path().join(FileKey { token: 2, seq: 1 }.file_name()),
            d.path().join(FileKey { token: 3, seq: 1 }.file_name()),
        )
        .unwrap();
        let r = check(d.path(), None).unwrap();
        let kinds: Vec<_> = r.violations.iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 2);
        assert!(matches!(r.violations[0], Violation::BadContent { .. }));
        assert!(matches!(r.violations[1], Violation::NameMismatch { .. }));
    }

    #[test]
    fn a_clock_stepping_back_is_a_warning_not_a_violation() {
        // The wall clock jumped back 1 h between two files of one leader.
        let d = tempfile::tempdir().unwrap();
        put(d.path(), 4, 1, "2026-01-01T01:00:00.000Z");
        put(d.path(), 4, 2, "2026-01-01T00:00:00.200Z");
        let r = check(d.path(), None).unwrap();
        assert!(r.is_clean());
        assert!(matches!(r.warnings[..], [Violation::ClockStep { .. }]));
        // Order and retention follow the names, not the clock.
        let keys = files::list(d.path()).unwrap();
        assert_eq!(keys.iter().map(|k| k.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(files::retention_victims(&keys, 1, 4), vec![keys[0]]);
    }

    #[test]
    fn gaps_longer_than_the_bound_are_reported() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), 1, 1, "2026-01-01T00:00:00.000Z");
        put(d.path(), 1, 2, "2026-01-01T00:00:09.000Z");
        let r = check(d.path(), Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(
            r.violations[..],
            [Violation::Gap { gap_ms: 9000, .. }]
        ));
    }
}
