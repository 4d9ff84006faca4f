//! Bad input on the command line and in the environment: exit code 2 and
//! one clear line naming the flag, never a panic. Runs the real binary.

use std::process::{Command, Output};

use rstest::rstest;

fn election(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_election"));
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ELECTION_")) {
        cmd.env_remove(k);
    }
    cmd.envs(envs.iter().copied());
    cmd.output().expect("binary runs")
}

/// [`election`] for arguments an old build may accept: a daemon that
/// starts is killed after 10 s (then the exit code is not 2). Its
/// listeners are off, so that parallel runs do not clash.
fn election_bounded(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_election"));
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ELECTION_")) {
        cmd.env_remove(k);
    }
    if args.first() == Some(&"run") {
        cmd.envs([
            ("ELECTION_HTTP_ADDR", "off"),
            ("ELECTION_ADMIN_ADDR", "off"),
        ]);
    }
    cmd.envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("binary output")
}

fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[rstest]
#[case::empty("", "--zk-servers")]
#[case::only_separators(" , ", "empty")]
fn an_empty_server_list_is_refused(#[case] servers: &str, #[case] needle: &str) {
    let out = election(&["run", "--zk-servers", servers], &[]);
    assert_usage_error(&out, needle);
}

#[test]
fn a_missing_server_list_is_refused() {
    let out = election(&["run"], &[]);
    assert_usage_error(&out, "--zk-servers");
}

#[rstest]
fn zero_or_negative_capacity_is_refused(#[values("0", "-3")] bad: &str) {
    let out = election(
        &[
            "run",
            "--zk-servers",
            "127.0.0.1:1",
            "--storage-capacity",
            bad,
        ],
        &[],
    );
    assert_usage_error(&out, "--storage-capacity");
}

#[test]
fn a_duration_without_unit_is_refused() {
    let out = election(
        &[
            "run",
            "--zk-servers",
            "127.0.0.1:1",
            "--leader-timeout",
            "10",
        ],
        &[],
    );
    assert_usage_error(&out, "--leader-timeout");
    assert_usage_error(&out, "no unit");
}

#[test]
fn an_unknown_flag_is_refused() {
    let out = election(
        &[
            "run",
            "--zk-servers",
            "127.0.0.1:1",
            "--leader-timeuot",
            "1s",
        ],
        &[],
    );
    assert_usage_error(&out, "--leader-timeuot");
}

#[test]
fn a_file_dir_that_is_a_regular_file_is_refused() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = election(
        &[
            "run",
            "--zk-servers",
            "127.0.0.1:1",
            "--file-dir",
            file.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_usage_error(&out, "not a directory");
}

#[rstest]
#[case::capacity("ELECTION_STORAGE_CAPACITY", "0", "--storage-capacity")]
#[case::duration_without_unit("ELECTION_ATTEMPTER_TIMEOUT", "5", "no unit")]
#[case::pod_events_not_a_bool("ELECTION_POD_EVENTS", "maybe", "--pod-events")]
fn bad_values_from_the_environment_are_refused_the_same_way(
    #[case] name: &str,
    #[case] value: &str,
    #[case] needle: &str,
) {
    let out = election(
        &["run"],
        &[("ELECTION_ZK_SERVERS", "zk:2181"), (name, value)],
    );
    assert_usage_error(&out, needle);
}

#[test]
fn a_flag_wins_over_the_environment() {
    // The env value is invalid, the flag valid: the flag is used, so parsing
    // succeeds and the daemon only fails later. `verify` shows it quickly.
    let dir = tempfile::tempdir().unwrap();
    let out = election(
        &["verify", "--file-dir", dir.path().to_str().unwrap()],
        &[("ELECTION_FILE_DIR", "/nonexistent/election/dir")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(dir.path().to_str().unwrap()));
}

#[test]
fn help_documents_every_flag_with_its_env_name_and_default() {
    let out = election(&["run", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--zk-servers", "ELECTION_ZK_SERVERS"),
        ("--leader-timeout", "ELECTION_LEADER_TIMEOUT"),
        ("--attempter-timeout", "ELECTION_ATTEMPTER_TIMEOUT"),
        ("--file-dir", "ELECTION_FILE_DIR"),
        ("--storage-capacity", "ELECTION_STORAGE_CAPACITY"),
        ("--zk-session-timeout", "ELECTION_ZK_SESSION_TIMEOUT"),
        ("--zk-tick-time", "ELECTION_ZK_TICK_TIME"),
        ("--zk-root", "ELECTION_ZK_ROOT"),
        ("--node-id", "ELECTION_NODE_ID"),
        ("--log-format", "ELECTION_LOG_FORMAT"),
        ("--http-addr", "ELECTION_HTTP_ADDR"),
        ("--admin-addr", "ELECTION_ADMIN_ADDR"),
        ("--pod-name", "ELECTION_POD_NAME"),
        ("--pod-events", "ELECTION_POD_EVENTS"),
    ] {
        assert!(
            help.contains(flag) && help.contains(&format!("env: {env}")),
            "{flag} / {env} in:\n{help}"
        );
    }
    assert!(help.contains("[default: 10s]"));
    // What the Events switch needs from RBAC.
    assert!(
        help.contains("`create` on `events.k8s.io` events"),
        "{help}"
    );
}

#[test]
fn version_is_printed() {
    let out = election(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("election "));
}

#[test]
fn verify_reports_a_broken_file_dir_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let name = election::files::FileKey { token: 1, seq: 1 }.file_name();
    std::fs::write(dir.path().join(name), "{\"node_id\":").unwrap();
    let out = election(&["verify", "--file-dir", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad_content"));
}

#[test]
fn status_against_an_unreachable_zookeeper_fails_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let servers = format!("127.0.0.1:{port}");
    let out = election(
        &[
            "status",
            "--zk-servers",
            &servers,
            "--zk-connect-timeout",
            "1s",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error:") && stderr.contains(&servers),
        "{stderr}"
    );
}

#[rstest]
#[case::leader_timeout("--leader-timeout", "1ns", "at least 100ms")]
#[case::attempter_timeout("--attempter-timeout", "1ns", "at least 100ms")]
#[case::session_timeout("--zk-session-timeout", "500ms", "at least 1s")]
#[case::connect_timeout("--zk-connect-timeout", "10ms", "at least 100ms")]
#[case::max_backoff("--failover-max-backoff", "1us", "at least 100ms")]
fn durations_below_their_documented_lower_bound_are_refused(
    #[case] flag: &str,
    #[case] value: &str,
    #[case] needle: &str,
) {
    let out = election_bounded(&["run", "--zk-servers", "127.0.0.1:1", flag, value], &[]);
    assert_usage_error(&out, flag);
    assert_usage_error(&out, needle);
    // The same from the environment, and the bound is in --help.
    let env = format!(
        "ELECTION_{}",
        flag.trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase()
    );
    let out = election_bounded(
        &["run"],
        &[("ELECTION_ZK_SERVERS", "zk:2181"), (&env, value)],
    );
    assert_usage_error(&out, needle);
    let help = election(&["run", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    let bound = needle.trim_start_matches("at least ");
    let documented = help
        .split("  --")
        .find(|entry| entry.starts_with(flag.trim_start_matches("--")))
        .is_some_and(|entry| entry.contains(&format!("At least {bound}")));
    assert!(
        documented,
        "{flag}: `At least {bound}` not in its --help entry:\n{help}"
    );
}

#[rstest]
#[case::release_timeout(&["release", "--timeout", "1ms"], "--timeout")]
#[case::status_connect_timeout(&["status", "--zk-servers", "zk:2181", "--zk-connect-timeout", "1ms"], "--zk-connect-timeout")]
fn the_other_commands_refuse_durations_that_can_never_work(
    #[case] args: &[&str],
    #[case] flag: &str,
) {
    let out = election_bounded(args, &[]);
    assert_usage_error(&out, flag);
    assert_usage_error(&out, "at least 100ms");
}

/// Runs `election verify` on `dir`, killed after `within` (then `None`: it
/// hung), with its heap limited to 64 MiB.
fn verify_within(dir: &std::path::Path, within: std::time::Duration) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_election"));
    cmd.args(["verify", "--file-dir", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // 64 MiB of heap at most: reading a whole 100 MB file cannot fit.
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 << 20,
                rlim_max: 64 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("binary runs");
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn leader_file(dir: &std::path::Path, token: u64, seq: u64, at: &str) {
    let record = election::files::LeaderRecord {
        node_id: "n".into(),
        token,
        seq,
        written_at: at.into(),
        session_id: "0x1".into(),
        znode: "/e/c".into(),
    };
    let name = election::files::FileKey { token, seq }.file_name();
    std::fs::write(dir.join(name), serde_json::to_vec(&record).unwrap()).unwrap();
}

#[test]
fn verify_accepts_the_largest_token_without_a_false_overlap() {
    let dir = tempfile::tempdir().unwrap();
    leader_file(dir.path(), 7, 1, "2026-01-01T00:00:00.000Z");
    leader_file(dir.path(), u64::MAX, 1, "2026-01-01T00:00:01.000Z");
    leader_file(dir.path(), u64::MAX, 2, "2026-01-01T00:00:02.000Z");
    let out = verify_within(dir.path(), std::time::Duration::from_secs(30)).expect("no hang");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("3 leader files, 2 leaderships"), "{stdout}");
}

#[rstest]
#[case::huge_sparse_file("larger than")]
#[case::fifo("not a regular file")]
fn verify_refuses_what_is_not_a_small_regular_file_with_exit_1(#[case] needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    leader_file(dir.path(), 3, 1, "2026-01-01T00:00:00.000Z");
    let name = election::files::FileKey { token: 4, seq: 1 }.file_name();
    let path = dir.path().join(&name);
    if needle == "larger than" {
        // 100 MB, sparse: no disk, but all of it if read whole.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(100_000_000)
            .unwrap();
    } else {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    let out = verify_within(dir.path(), std::time::Duration::from_secs(30))
        .expect("verify must not hang");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("bad_content") && stdout.contains(&name) && stdout.contains(needle),
        "{stdout}"
    );
}
