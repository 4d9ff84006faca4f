//! The leader's command (`election run -- CMD`), seen from the daemon.
//!
//! A [`Job`] is one run of the command under its watchdog,
//! [`supervise`] (this binary re-executed as `election supervise`), with a
//! Unix socket between the two. The leader renews the watchdog's deadline
//! after each confirmation ([`Job::renew`], never blocking: a message that
//! does not fit is dropped, and the watchdog kills at the old deadline),
//! learns of the command's end from [`Job::ended`], and stops it with
//! [`Job::stop`] before it gives up anything. Dropping a `Job` closes the
//! socket, which the watchdog takes as a stop. Why a separate process:
//! docs/design.md, "Running a command".

pub mod supervise;

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::time::Instant;

pub use supervise::boottime_ns;

/// How a run of the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// `code=N`, `signal=N`, or why it never ran or is unknown.
    pub status: String,
    /// Who ended it: `self`, `stop`, `deadline`, `daemon-gone`, or
    /// `start-failed` / `watchdog-lost`.
    pub by: String,
    /// From the stop's SIGTERM to the command's exit.
    pub stop_time: Duration,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (ended by {}, stop took {:?})",
            self.status, self.by, self.stop_time
        )
    }
}

/// One run of the command under its watchdog.
pub struct Job {
    sock: UnixStream,
    watchdog: Option<Child>,
    /// The command's pid (and process group), once the watchdog said.
    pid: Option<u32>,
    pending: Vec<u8>,
    ended: Option<Ended>,
}

impl Job {
    /// Starts `command` with the fencing token and node id in its
    /// environment; the watchdog kills it `deadline` from now unless
    /// renewed, and gives it `stop_timeout` between SIGTERM and SIGKILL.
    pub fn start(
        command: &[String],
        token: u64,
        node_id: &str,
        deadline: Duration,
        stop_timeout: Duration,
    ) -> std::io::Result<Job> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("supervise")
            .arg("--deadline-ns")
            .arg(at(deadline).to_string())
            .arg("--stop-timeout-ms")
            .arg(stop_timeout.as_millis().to_string())
            .arg("--")
            .args(command)
            .env("ELECTION_FENCING_TOKEN", token.to_string())
            .env("ELECTION_NODE_ID", node_id)
            // Its own group: a signal to the daemon's group (a terminal's
            // Ctrl-Z) does not freeze the watchdog with the daemon.
            .process_group(0)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        use std::os::unix::process::CommandExt as _;
        let watchdog = cmd.spawn()?;
        ours.set_nonblocking(true)?;
        Ok(Job {
            sock: UnixStream::from_std(ours)?,
            watchdog: Some(watchdog),
            pid: None,
            pending: Vec::new(),
            ended: None,
        })
    }

    /// The command's pid, once it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Moves the watchdog's deadline to `left` from now. Never blocks.
    pub fn renew(&self, left: Duration) -> bool {
        let line = format!("deadline {}\n", at(left));
        matches!(self.sock.try_write(line.as_bytes()), Ok(n) if n == line.len())
    }

    /// Waits until the command has ended (cancel safe). Every later call
    /// returns the same answer at once.
    pub async fn ended(&mut self) -> Ended {
        loop {
            if let Some(e) = &self.ended {
                return e.clone();
            }
            let mut buf = [0u8; 256];
            let n = match self.sock.read(&mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                self.ended = Some(Ended {
                    status: "unknown".into(),
                    by: "watchdog-lost".into(),
                    stop_time: Duration::ZERO,
                });
                continue;
            }
            self.pending.extend_from_slice(&buf[..n]);
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.on_line(String::from_utf8_lossy(&line).trim());
            }
        }
    }

    fn on_line(&mut self, line: &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "started" => self.pid = rest.parse().ok(),
            "failed" => {
                self.ended.get_or_insert(Ended {
                    status: rest.to_owned(),
                    by: "start-failed".into(),
                    stop_time: Duration::ZERO,
                });
            }
            "exited" => {
                let mut status = String::new();
                let mut by = String::new();
                let mut stop_ms = 0;
                for w in rest.split_whitespace() {
                    if let Some(b) = w.strip_prefix("by=") {
                        b.clone_into(&mut by);
                    } else if let Some(ms) = w.strip_prefix("stop_ms=") {
                        stop_ms = ms.parse().unwrap_or(0);
                    } else {
                        w.clone_into(&mut status);
                    }
                }
                self.ended.get_or_insert(Ended {
                    status,
                    by,
                    stop_time: Duration::from_millis(stop_ms),
                });
            }
            _ => {}
        }
    }

    /// Stops the command (SIGTERM to its group, SIGKILL at the stop timeout
    /// or at the deadline) and waits until it has exited, at most `bound`.
    /// Past that the watchdog itself is killed, and the command's group
    /// with it; `None` then (the command's end is not known).
    pub async fn stop(mut self, bound: Duration) -> Option<Ended> {
        if self.ended.is_none() {
            let _ = self.sock.try_write(b"stop\n");
        }
        let ended = tokio::time::timeout(bound, self.ended()).await.ok();
        if ended.is_none() {
            self.kill();
        }
        self.reap(Instant::now() + Duration::from_secs(1)).await;
        ended
    }

    /// Kills the watchdog and the command's group at once.
    fn kill(&mut self) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: plain kill; the watchdog has not reaped the
            // command (it has not reported its end), so the group id
            // still names it.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        if let Some(w) = self.watchdog.as_mut() {
            let _ = w.kill();
        }
    }

    /// Reaps the watchdog (it exits right after reporting), waiting until
    /// `until`; a thread waits for it past that.
    async fn reap(&mut self, until: Instant) {
        let Some(mut w) = self.watchdog.take() else {
            return;
        };
        while Instant::now() < until {
            if !matches!(w.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        std::thread::spawn(move || w.wait());
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The socket closes with us: the watchdog stops the command. Its
        // process is reaped off this thread.
        if let Some(mut w) = self.watchdog.take() {
            std::thread::spawn(move || w.wait());
        }
    }
}

/// The `CLOCK_BOOTTIME` instant `left` from now, in nanoseconds.
fn at(left: Duration) -> u64 {
    boottime_ns().saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
}
