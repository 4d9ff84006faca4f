//! Flag values shared by the subcommands: the log format and the value
//! parsers that more than `election run` uses (durations, file-dir), with
//! their error. Below `config` and `cmd`, which both
//! import it.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Why a flag's value is refused (clap prints it after the flag's name).
/// Never repeats a secret: credentials have their own parser.
#[derive(Debug, thiserror::Error)]
pub enum InvalidValue {
    #[error("`{0}` has no unit; write e.g. `{0}s` or `{0}ms`")]
    NoUnit(String),
    #[error("`{value}` is not a duration like `250ms` or `10s`: {source}")]
    Duration {
        value: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("must be greater than zero")]
    Zero,
    #[error("must be at most 24h")]
    TooLong,
    #[error("must be at least {min}: {why}")]
    TooShort { min: String, why: &'static str },
    #[error("`{0}` is not a whole number")]
    NotANumber(String),
    #[error("must be at least 1, got {0}")]
    BelowOne(i64),
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("the server list is empty; give e.g. `zk-0:2181,zk-1:2181`")]
    NoServers,
    #[error("`{0}` has no port; write `{0}:2181`")]
    NoPort(String),
    #[error("`{0}` has no valid host")]
    BadHost(String),
    #[error("`{server}` has an invalid port `{port}`")]
    BadPort { server: String, port: String },
    #[error("`{0}` is not an absolute ZooKeeper path like `/election/my-group`")]
    BadZkRoot(String),
    #[error("`{0}` must be 1-253 characters of letters, digits, `-`, `_` or `.`")]
    BadNodeId(String),
    #[error("the path is empty")]
    EmptyPath,
    #[error("`{0}` exists and is not a directory")]
    NotADirectory(String),
    #[error("cannot read `{path}`: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` holds no PEM block (`-----BEGIN ...`)")]
    NoPem(String),
    #[error("`{0}` is not an address like `0.0.0.0:8080` (or `off`)")]
    BadAddr(String),
    #[error(
        "`{0}` is not a loopback address; the release endpoint must not be reachable from other hosts"
    )]
    NotLoopback(String),
}

/// A duration in humantime form (`250ms`, `10s`, `1m30s`); a bare number is refused.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidValue> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && s != "0" {
        return Err(InvalidValue::NoUnit(s.to_owned()));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|source| InvalidValue::Duration {
        value: s.to_owned(),
        source,
    })
}

/// A duration that must be greater than zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, InvalidValue> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(InvalidValue::Zero);
    }
    if d > Duration::from_secs(24 * 3600) {
        return Err(InvalidValue::TooLong);
    }
    Ok(d)
}

/// A directory path; refused when it exists and is not a directory.
pub fn parse_file_dir(s: &str) -> Result<PathBuf, InvalidValue> {
    if s.trim().is_empty() {
        return Err(InvalidValue::EmptyPath);
    }
    let path = PathBuf::from(s);
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_dir() => Err(InvalidValue::NotADirectory(s.to_owned())),
        _ => Ok(path),
    }
}
