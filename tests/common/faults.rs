//! Fault helpers beyond the network: strace's syscall fault injection
//! into a running daemon, and a watcher of the order in which leader files
//! appear (a file that lands late keeps its early `written_at`, so only
//! arrival order shows it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use election::files::FileKey;

use super::wait_until;

/// Slows one syscall of a running process (all its threads) until dropped.
pub struct Strace(Child);

impl Strace {
    /// Delays every `syscall` of `pid` by `delay` (before it runs).
    pub fn delay(pid: u32, syscall: &str, delay: Duration) -> Strace {
        Strace::inject(
            pid,
            syscall,
            &format!("delay_enter={}", delay.as_micros()),
            None,
        )
    }

    /// Tampers with `syscall` of `pid` as strace's `-e inject=` `action`
    /// says (`error=EIO:when=1`, say; `when` counts per thread), only for
    /// calls on `path` (a file descriptor of it included) if given.
    pub fn inject(pid: u32, syscall: &str, action: &str, path: Option<&Path>) -> Strace {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string()]);
        if let Some(path) = path {
            cmd.arg("-P").arg(path);
        }
        let child = cmd
            .args([
                "-e",
                &format!("trace={syscall}"),
                "-e",
                &format!("inject={syscall}:{action}"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("run strace (apt-get install strace)");
        let attached = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("TracerPid:") && l.trim() != "TracerPid:\t0")
            })
        });
        assert!(attached, "strace did not attach to {pid}");
        Strace(child)
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // SIGTERM: strace detaches cleanly and the tracee runs on. A strace
        // whose tracee died inside a delayed syscall does not always end
        // on it (it was seen to wait for minutes): SIGKILL after 2 s.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let ended = wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
            self.0.try_wait().is_ok_and(|s| s.is_some())
        });
        if !ended {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Whether the main thread of process `pid` has exited (it is a zombie, or
/// gone). A process that called `exit` while another of its threads is
/// stuck in a system call stays a zombie until that call returns or is
/// aborted: this is what "it exited" can mean then.
pub fn main_thread_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Records the order in which leader files appear in a directory.
pub struct Arrivals {
    seen: Arc<Mutex<Vec<FileKey>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Arrivals {
    pub fn watch(dir: std::path::PathBuf) -> Arrivals {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut known = BTreeSet::new();
            while !st.load(Ordering::SeqCst) {
                if let Ok(keys) = election::files::list(&dir) {
                    for k in keys {
                        if known.insert(k) {
                            s.lock().unwrap().push(k);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Arrivals {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The files seen so far, in order of appearance.
    pub fn so_far(&self) -> Vec<FileKey> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops watching; the files in order of appearance.
    pub fn finish(mut self) -> Vec<FileKey> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Files of an older token that appeared after the first file of a newer
/// token: each as (late file, the newer file it came after).
pub fn late_arrivals(order: &[FileKey]) -> Vec<(FileKey, FileKey)> {
    let mut newest: Option<FileKey> = None;
    let mut late = Vec::new();
    for &k in order {
        match newest {
            Some(n) if k.token < n.token => late.push((k, n)),
            Some(n) if k.token == n.token => {}
            _ => newest = Some(k),
        }
    }
    late
}
