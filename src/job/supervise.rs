//! `election supervise`: the watchdog between the daemon and its command.
//!
//! The daemon starts it (re-executing its own binary) with one end of a
//! Unix socket as stdin. It starts the command in a process group of its
//! own, then kills that group (SIGKILL) when the deadline the daemon keeps
//! renewing (the end of the leader's lease, less a margin) passes. A stop
//! (asked by the daemon, or the daemon gone: the socket closed) sends the
//! group SIGTERM, then SIGKILL at the stop timeout or the deadline,
//! whichever comes first. It is one thread looping on poll(2), with no
//! async runtime, no locks and no ZooKeeper: a frozen or killed daemon
//! cannot hold it. Why: docs/design.md, "Running a command".
//!
//! One line per message. Daemon to supervisor: `deadline <ns>` (an instant
//! of `CLOCK_BOOTTIME`), `stop`. Supervisor to daemon: `started <pid>`,
//! `failed <reason>`, `exited <status> by=<who> stop_ms=<n>`.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Flags of the hidden `election supervise`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// Kill the command at this `CLOCK_BOOTTIME` instant (ns) unless renewed.
    #[arg(long)]
    pub deadline_ns: u64,
    /// Time between SIGTERM and SIGKILL on a stop, in milliseconds.
    #[arg(long)]
    pub stop_timeout_ms: u64,
    /// The command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Longest sleep of the loop: a suspended machine's deadline (counted on
/// `CLOCK_BOOTTIME`, which poll's timeout is not) is seen this late at most.
const MAX_POLL: Duration = Duration::from_millis(50);

/// `CLOCK_BOOTTIME` in nanoseconds.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Who ended the command.
#[derive(Clone, Copy)]
enum By {
    /// It exited on its own.
    Itself,
    /// A stop the daemon asked for.
    Stop,
    /// The daemon is gone (socket closed).
    DaemonGone,
    /// The deadline passed without renewal.
    Deadline,
}

impl By {
    fn as_str(self) -> &'static str {
        match self {
            By::Itself => "self",
            By::Stop => "stop",
            By::DaemonGone => "daemon-gone",
            By::Deadline => "deadline",
        }
    }
}

/// Runs the supervisor; always exits 0 once the command is gone (its
/// status is reported on the socket).
pub fn run(args: SuperviseArgs) -> ExitCode {
    // SAFETY: the daemon hands us the socket as stdin, and nothing else
    // in this process owns fd 0.
    let sock = unsafe { UnixStream::from_raw_fd(0) };
    let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
    let mut out = &sock;
    // Orphans of the command's tree become our children, so we reap them
    // (the daemon may be PID 1 of a container).
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let me = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .process_group(0)
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // If we die, the command dies (its group is killed by us otherwise).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != me {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "failed cannot start {:?}: {e}", args.command[0]);
            return ExitCode::SUCCESS;
        }
    };
    let pid = child.id() as libc::pid_t;
    let _ = writeln!(out, "started {pid}");
    let stop_timeout = args.stop_timeout_ms.saturating_mul(1_000_000);
    let (status, by, stop_ns) = watch(&sock, pid, args.deadline_ns, stop_timeout);
    // The group's stragglers, then whatever else of the tree is left.
    // SAFETY: plain kill; the command's zombie still holds its pgid.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    // SAFETY: reaps the command (its status was read with WNOWAIT).
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    reap_orphans(me);
    let _ = writeln!(
        out,
        "exited {status} by={} stop_ms={}",
        by.as_str(),
        stop_ns / 1_000_000
    );
    ExitCode::SUCCESS
}

/// Loops until the command exits; its status (not reaped yet), who ended
/// it, and how long a stop took.
fn watch(sock: &UnixStream, pid: libc::pid_t, first: u64, stop_timeout: u64) -> (String, By, u64) {
    let mut deadline = first;
    // When a stop began, and when SIGKILL is due.
    let mut stop: Option<(u64, u64, By)> = None;
    let mut killed: Option<By> = None;
    let mut open = true;
    let mut pending = Vec::new();
    // SAFETY: pidfd_open on our own child; -1 (old kernel) is handled.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    loop {
        if let Some(status) = exited(pid) {
            // SAFETY: closing the fd we opened.
            if pidfd >= 0 {
                unsafe { libc::close(pidfd) };
            }
            let now = boottime_ns();
            let (by, stop_ns) = match (stop, killed) {
                (Some((since, _, by)), _) => (by, now.saturating_sub(since)),
                (None, Some(by)) => (by, 0),
                (None, None) => (By::Itself, 0),
            };
            return (status, by, stop_ns);
        }
        let now = boottime_ns();
        let kill_at = stop.map_or(deadline, |(_, at, _)| at.min(deadline));
        if killed.is_none() && now >= kill_at {
            // SAFETY: plain kill of the command's group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            killed = Some(if now >= deadline {
                By::Deadline
            } else {
                By::Stop
            });
        }
        let wait = match killed {
            Some(_) => MAX_POLL,
            None => Duration::from_nanos(kill_at - now).min(MAX_POLL),
        };
        let mut fds = [
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if open { sock.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = (wait.as_micros().div_ceil(1000) as libc::c_int).max(1);
        let ms = if pidfd < 0 { ms.min(10) } else { ms };
        // SAFETY: two valid pollfd entries (negative fds are ignored).
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if fds[1].revents == 0 {
            continue;
        }
        let mut buf = [0u8; 256];
        let n = match (&*sock).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {
                continue;
            }
            Err(_) => 0,
        };
        let now = boottime_ns();
        if n == 0 {
            open = false;
            begin_stop(&mut stop, pid, now, stop_timeout, By::DaemonGone);
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let mut words = line.split_whitespace();
            match (
                words.next(),
                words.next().and_then(|w| w.parse::<u64>().ok()),
            ) {
                (Some("deadline"), Some(ns)) => deadline = ns,
                (Some("stop"), _) => begin_stop(&mut stop, pid, now, stop_timeout, By::Stop),
                _ => {}
            }
        }
    }
}

/// SIGTERM to the group, SIGKILL due `timeout` later (once).
fn begin_stop(stop: &mut Option<(u64, u64, By)>, pid: libc::pid_t, now: u64, timeout: u64, by: By) {
    if stop.is_none() {
        // SAFETY: plain kill of the command's group.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        *stop = Some((now, now.saturating_add(timeout), by));
    }
}

/// The command's exit status if it has exited, without reaping it (its
/// zombie keeps the group id from being reused while we kill the group).
fn exited(pid: libc::pid_t) -> Option<String> {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child, WNOWAIT leaves it unreaped.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: filled in by waitid when it found a child.
    let (found, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
    if r != 0 || found == 0 {
        return None;
    }
    Some(if code == libc::CLD_EXITED {
        format!("code={status}")
    } else {
        format!("signal={status}")
    })
}

/// Kills and reaps what is left of the command's tree (processes that left
/// its group and were re-parented to us), for at most a second.
fn reap_orphans(me: libc::pid_t) {
    let children = format!("/proc/self/task/{me}/children");
    for _ in 0..100 {
        if let Ok(list) = std::fs::read_to_string(&children) {
            for p in list
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: plain kill of our own child.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        // SAFETY: reaps any child of ours without blocking.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r < 0 {
            return; // ECHILD: none left
        }
        if r == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
