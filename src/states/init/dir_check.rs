//! Init's file-dir check, one at a time, and what `/healthz` reads of it
//! (the daemon's [`crate::machine::Context`] holds it).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::files::{self, FileError};

/// Init's file-dir check: at most one at a time, and what `/healthz`
/// needs to know about it.
#[derive(Debug, Default)]
pub struct DirCheck {
    /// A check still running, left by an Init that stopped waiting for it.
    running: Mutex<Option<JoinHandle<Result<u64, FileError>>>>,
    /// Since when the current check runs.
    started: Mutex<Option<Instant>>,
    /// Since when file-dir is refused for being on another device.
    refused: Mutex<Option<Instant>>,
}

impl DirCheck {
    /// How long the current check has been running, if one is.
    pub fn running_for(&self) -> Option<Duration> {
        lock(&self.started).map(|t| t.elapsed())
    }

    /// How long file-dir has been on another device than at start.
    pub fn refused_for(&self) -> Option<Duration> {
        lock(&self.refused).map(|t| t.elapsed())
    }

    /// The check left running, or a new one.
    pub(super) fn take_or_start(
        &self,
        dir: &std::path::Path,
    ) -> JoinHandle<Result<u64, FileError>> {
        if let Some(running) = lock(&self.running).take() {
            return running;
        }
        *lock(&self.started) = Some(Instant::now());
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || files::ensure_writable_dir(&dir))
    }

    /// Keeps a check that is still running for the next Init.
    pub(super) fn keep(&self, running: JoinHandle<Result<u64, FileError>>) {
        *lock(&self.running) = Some(running);
    }

    /// The check ended; `on_device` says whether file-dir was where it was at start.
    pub(super) fn ended(&self, on_device: Option<bool>) {
        *lock(&self.started) = None;
        match on_device {
            Some(true) => *lock(&self.refused) = None,
            Some(false) => {
                lock(&self.refused).get_or_insert_with(Instant::now);
            }
            None => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
