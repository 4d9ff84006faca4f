//! A daemon replica as a real process: spawned from the built `election`
//! binary, its stdout and stderr captured line by line (in memory, and in a
//! log file), signalled like an operator or a kubelet would, and asked
//! over its HTTP listener what it is doing ([`Replica::status`],
//! [`Replica::metric`], [`Replica::wait_status`]). Dropping it kills and
//! reaps the process.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::observe::{self, Metrics, Status};

/// A running (or exited) process with captured output.
pub struct Replica {
    pid: u32,
    /// The child and, once reaped, its exit status. Holding the lock while
    /// signalling makes sure the pid still names our process.
    child: Mutex<(Child, Option<ExitStatus>)>,
    output: Arc<Output>,
    log_path: PathBuf,
    /// Where its public HTTP listener answers (from `--http-addr`).
    http: Option<SocketAddr>,
    // Last: removed after the process is killed.
    dir: Option<tempfile::TempDir>,
}

/// The lines captured so far, shared with the reader threads.
struct Output {
    state: Mutex<OutputState>,
    grew: Condvar,
}

struct OutputState {
    lines: Vec<String>,
    log: Option<File>,
    /// Streams (stdout, stderr) not yet at end of file.
    open_streams: usize,
}

/// What [`Replica::wait_for_line`] looks for: a substring (`&str`) or a
/// predicate on the line (`|l: &str| ...`).
pub trait LineMatch {
    /// True if `line` matches.
    fn matches(&self, line: &str) -> bool;
}

impl LineMatch for &str {
    fn matches(&self, line: &str) -> bool {
        line.contains(*self)
    }
}

impl<F: Fn(&str) -> bool> LineMatch for F {
    fn matches(&self, line: &str) -> bool {
        self(line)
    }
}

impl Replica {
    /// Spawns the daemon (`election`, built by cargo for this test, or the
    /// binary `ELECTION_TEST_BIN` names, to show a test failing on an older
    /// build) with `args` and extra `envs`; see [`Replica::spawn_program`].
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Replica {
        let program = std::env::var_os("ELECTION_TEST_BIN")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_election").into());
        Replica::spawn_program(program, args, envs)
    }

    /// Spawns `program` with `args`. The environment is inherited, plus
    /// `RUST_LOG=info` and `NO_COLOR=1` (plain log lines to match on)
    /// unless `envs` sets them, plus `envs`. Stdin is closed; stdout and
    /// stderr are captured.
    pub fn spawn_program(
        program: impl AsRef<OsStr>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Replica {
        let program = program.as_ref();
        let http = http_addr_of(args, envs);
        let dir = tempfile::Builder::new()
            .prefix("election-replica-")
            .tempdir()
            .expect("create a temp dir for the replica log");
        let log_path = dir.path().join("output.log");
        let log = File::create(&log_path).expect("create the replica log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", Path::new(program).display()));
        let output = Arc::new(Output {
            state: Mutex::new(OutputState {
                lines: Vec::new(),
                log: Some(log),
                open_streams: 2,
            }),
            grew: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let pid = child.id();
        for (name, stream) in [
            ("stdout", Box::new(stdout) as Box<dyn Read + Send>),
            ("stderr", Box::new(stderr)),
        ] {
            let output = output.clone();
            std::thread::Builder::new()
                .name(format!("replica-{pid}-{name}"))
                .spawn(move || capture(stream, &output))
                .expect("spawn an output reader");
        }
        Replica {
            pid,
            child: Mutex::new((child, None)),
            output,
            log_path,
            http,
            dir: Some(dir),
        }
    }

    /// Where the replica's HTTP listener answers: the `--http-addr` it was
    /// given, an unspecified address (`[::]`) asked on loopback. Panics if
    /// its listener is off.
    #[track_caller]
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .unwrap_or_else(|| panic!("replica {} runs without --http-addr", self.pid))
    }

    /// Its `/status` now, if the listener answers.
    #[track_caller]
    pub fn status(&self) -> Option<Status> {
        observe::status(self.http_addr())
    }

    /// Its `/metrics` now, if the listener answers.
    #[track_caller]
    pub fn metrics(&self) -> Option<Metrics> {
        observe::metrics(self.http_addr())
    }

    /// The sum of the series of metric `name` whose labels include
    /// `labels` (see [`Metrics::sum`]; 0 when none), if the listener answers.
    #[track_caller]
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics().map(|m| m.sum(name, labels))
    }

    /// Waits up to `timeout` until `/status` satisfies `condition`;
    /// returns that status. Panics at the timeout with the last status
    /// seen and the replica's output.
    #[track_caller]
    pub fn wait_status(&self, condition: impl Fn(&Status) -> bool, timeout: Duration) -> Status {
        let http = self.http_addr();
        let mut last = None;
        let ok = super::wait_until(timeout, Duration::from_millis(20), || {
            last = observe::status(http);
            last.as_ref().is_some_and(&condition)
        });
        match (ok, last) {
            (true, Some(status)) => status,
            (_, last) => panic!(
                "replica {} ({http}): /status not as expected within {timeout:?}; last: {last:#?}\n{}",
                self.pid,
                self.output()
            ),
        }
    }

    /// Waits up to `timeout` until metric `name` (summed over the series
    /// with `labels`) satisfies `condition`; returns its value. Panics at
    /// the timeout with the last value seen and the replica's output.
    #[track_caller]
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        condition: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let http = self.http_addr();
        let mut last = None;
        let ok = super::wait_until(timeout, Duration::from_millis(20), || {
            last = observe::metrics(http).map(|m| m.sum(name, labels));
            last.is_some_and(&condition)
        });
        match (ok, last) {
            (true, Some(value)) => value,
            (_, last) => panic!(
                "replica {} ({http}): {name}{labels:?} not as expected within {timeout:?}; last: {last:?}\n{}",
                self.pid,
                self.output()
            ),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`, `SIGKILL`, `SIGSTOP`, `SIGCONT`).
    /// Returns false, sending nothing, if the process has already exited.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        let mut child = self.lock_child();
        if poll_exit(&mut child).is_some() {
            return false;
        }
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory effects; the child is not reaped
        // (we hold the only handle that reaps it), so the pid is ours.
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        poll_exit(&mut self.lock_child())
    }

    /// True while the process has not exited (a stopped process runs).
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit; returns its status,
    /// or `None` if it still runs.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                // The readers may not have drained the pipes yet: a caller
                // that looks at the output right after the exit must see it.
                self.wait_output_closed(Duration::from_secs(5));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (SIGCONT first, in case it is stopped, then
    /// SIGKILL) and reaps it. Returns its exit status.
    pub fn kill(&self) -> ExitStatus {
        let mut child = self.lock_child();
        if let Some(status) = poll_exit(&mut child) {
            return status;
        }
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
        }
        let _ = child.0.kill();
        let status = child.0.wait().expect("reap the replica");
        child.1 = Some(status);
        status
    }

    /// All lines captured so far (stdout and stderr interleaved as read),
    /// each ending with a newline. ANSI color codes are removed.
    /// Waits (at most `timeout`) until stdout and stderr reached their end.
    fn wait_output_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.output.lock();
        while state.open_streams > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .output
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn output(&self) -> String {
        let state = self.output.lock();
        let mut text = String::new();
        for line in &state.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().lines.clone()
    }

    /// How many lines have been captured: pass it to
    /// [`Replica::wait_for_new_line`] to look only at later lines.
    pub fn line_count(&self) -> usize {
        self.output.lock().lines.len()
    }

    /// Waits up to `timeout` for a line (among all lines so far and later)
    /// that matches `pattern`, a substring or a predicate; returns it.
    /// Returns `None` at the timeout, or as soon as the output has ended
    /// without a match.
    pub fn wait_for_line(&self, pattern: impl LineMatch, timeout: Duration) -> Option<String> {
        self.wait_for_new_line(0, pattern, timeout)
    }

    /// Like [`Replica::wait_for_line`], looking only at lines from index
    /// `since` on (see [`Replica::line_count`]).
    pub fn wait_for_new_line(
        &self,
        since: usize,
        pattern: impl LineMatch,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.output.lock();
        let mut next = since;
        loop {
            if let Some(line) = state.lines.iter().skip(next).find(|l| pattern.matches(l)) {
                return Some(line.clone());
            }
            next = next.max(state.lines.len());
            let now = Instant::now();
            if state.open_streams == 0 || now >= deadline {
                return None;
            }
            state = self
                .output
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The file that receives every captured line.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn lock_child(&self) -> MutexGuard<'_, (Child, Option<ExitStatus>)> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Replica {
    /// Kills and reaps the process. When the test is panicking, keeps the
    /// log file and prints where it is.
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            return;
        }
        if let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!(
                "replica pid {} output kept in {}",
                self.pid,
                kept.join("output.log").display()
            );
        }
    }
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The address to ask the HTTP listener of a daemon started with `args`
/// and `envs` on: `--http-addr` (or `ELECTION_HTTP_ADDR`) unless `off`,
/// with an unspecified IP replaced by loopback of the same family.
fn http_addr_of(args: &[&str], envs: &[(&str, &str)]) -> Option<SocketAddr> {
    let from_args = args.iter().enumerate().rev().find_map(|(i, a)| {
        if *a == "--http-addr" {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix("--http-addr=")
        }
    });
    let from_env = envs
        .iter()
        .rev()
        .find(|(k, _)| *k == "ELECTION_HTTP_ADDR")
        .map(|(_, v)| *v);
    let mut addr: SocketAddr = from_args.or(from_env)?.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}

/// Reaps the child if it has exited; remembers and returns the status.
fn poll_exit(child: &mut (Child, Option<ExitStatus>)) -> Option<ExitStatus> {
    if child.1.is_none() {
        child.1 = child.0.try_wait().ok().flatten();
    }
    child.1
}

/// Reads `stream` line by line into `output` until end of file.
fn capture(stream: Box<dyn Read + Send>, output: &Output) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = strip_ansi(String::from_utf8_lossy(&raw).trim_end_matches(['\n', '\r']));
                let mut state = output.lock();
                if let Some(log) = state.log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                state.lines.push(line);
                output.grew.notify_all();
            }
        }
    }
    let mut state = output.lock();
    state.open_streams -= 1;
    output.grew.notify_all();
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
