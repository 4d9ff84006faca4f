//! Command line and environment configuration.
//!
//! One clap derive tree: `election run|release|status|verify|rollout`. Every flag of
//! `run` can also come from `ELECTION_<FLAG_IN_UPPER_SNAKE>`; a flag given on
//! the command line wins over the environment. Values are checked while they
//! are parsed, so bad input ends with clap's exit code 2 and a one-line
//! message that names the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod bounds;
pub use bounds::{
    Bound, MIN_ATTEMPTER_TIMEOUT, MIN_FAILOVER_MAX_BACKOFF, MIN_LEADER_TIMEOUT,
    MIN_RELEASE_TIMEOUT, MIN_ZK_CONNECT_TIMEOUT, MIN_ZK_SESSION_TIMEOUT,
};

pub use crate::flags::{
    InvalidValue, LogFormat, parse_duration, parse_file_dir, parse_positive_duration,
};
mod zk_security;
pub use zk_security::{CredentialsParser, ZkSecurityArgs, parse_auth_file, parse_pem_file};

/// Leader election on Apache ZooKeeper: several replicas run, exactly one
/// leads and writes files into a shared directory, another takes over as
/// soon as it stops, pauses or loses ZooKeeper.
#[derive(Debug, Parser)]
#[command(name = "election", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the election daemon (Init -> Attempter -> Leader, Failover on
    /// trouble, Stopping on SIGTERM/SIGINT or `election release`).
    Run(Box<RunArgs>),
    /// Ask the daemon on this host to give up leadership and stop (the
    /// Kubernetes preStop hook). Returns once its ZooKeeper node is released.
    Release(ReleaseArgs),
    /// Print the candidates of an election and who leads it.
    Status(StatusArgs),
    /// Check the leader files of a file-dir: partial or unreadable files,
    /// fencing tokens going backwards, overlapping leaderships, long gaps.
    /// Exit 0 when clean, 1 on a violation or an unreadable directory.
    Verify(crate::cmd::verify::VerifyArgs),
    /// Restart the Pods of an `OnDelete` election StatefulSet onto its new
    /// revision with one leader change: followers first, one at a time,
    /// each waited for until Ready and back in the election, the leader
    /// last (the chart's post-upgrade hook).
    Rollout(crate::cmd::rollout::RolloutArgs),
    /// Internal: the watchdog between `election run` and its command
    /// (started by the daemon itself, never by hand).
    #[command(hide = true)]
    Supervise(crate::job::supervise::SuperviseArgs),
}

/// Flags of `election run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// ZooKeeper servers, comma separated `host:port` list.
    #[arg(long, env = "ELECTION_ZK_SERVERS", value_parser = parse_zk_servers)]
    pub zk_servers: String,

    /// Interval between two files written by the leader. At least 100ms:
    /// each tick writes a file under a lease ZooKeeper confirmed at most
    /// half a lease before (the tick confirms first when it is older).
    #[arg(long, env = "ELECTION_LEADER_TIMEOUT", default_value = "10s", value_parser = MIN_LEADER_TIMEOUT.parser())]
    pub leader_timeout: Duration,

    /// Upper bound of one election round of a candidate (list the queue,
    /// create its node, watch its predecessor; capped by the session
    /// timeout); a slower round counts as failed and is retried. Candidates
    /// do not poll: takeover is driven by ZooKeeper watches. At least 100ms.
    #[arg(long, env = "ELECTION_ATTEMPTER_TIMEOUT", default_value = "10s", value_parser = MIN_ATTEMPTER_TIMEOUT.parser())]
    pub attempter_timeout: Duration,

    /// Directory the leader writes its files into (a PersistentVolume in Kubernetes).
    #[arg(long, env = "ELECTION_FILE_DIR", default_value = "/tmp/election", value_parser = parse_file_dir)]
    pub file_dir: PathBuf,

    /// Private directory of this replica (an emptyDir in Kubernetes: it
    /// survives container restarts) where the daemon keeps its current
    /// ZooKeeper session, under a lock held for its whole life. A restarted
    /// daemon closes its predecessor's session at once, so a crashed
    /// leader's successor takes over in restart time instead of a session
    /// timeout. A directory another live daemon holds is refused (exit 1).
    /// Must be local (not NFS) and never shared [default: none, no restart
    /// shortcut]
    #[arg(long, env = "ELECTION_STATE_DIR", value_parser = parse_file_dir)]
    pub state_dir: Option<PathBuf>,

    /// Number of leader files kept in file-dir; older ones are deleted.
    #[arg(long, env = "ELECTION_STORAGE_CAPACITY", default_value = "10", value_parser = parse_capacity, allow_negative_numbers = true)]
    pub storage_capacity: usize,

    /// ZooKeeper session timeout asked for (the server may clamp it). A leader
    /// that cannot reach ZooKeeper stops writing long before it ends. At
    /// least 1s: the leader's lease is at most half of it.
    #[arg(long, env = "ELECTION_ZK_SESSION_TIMEOUT", default_value = "6s", value_parser = MIN_ZK_SESSION_TIMEOUT.parser())]
    pub zk_session_timeout: Duration,

    /// tickTime of the ZooKeeper servers (the largest in the ensemble). A
    /// follower passes a session's activity on to the ZooKeeper leader
    /// every half tick, so the leader's lease is sized to end before the
    /// earliest expiry that allows (docs/design.md) [default: half the
    /// negotiated session timeout, the largest tickTime of a server with
    /// the default minSessionTimeout of 2 ticks]
    #[arg(long, env = "ELECTION_ZK_TICK_TIME", value_parser = parse_positive_duration)]
    pub zk_tick_time: Option<Duration>,

    /// Upper bound for establishing a ZooKeeper session in Init (and for
    /// one wait on its file-dir check). At least 100ms.
    #[arg(long, env = "ELECTION_ZK_CONNECT_TIMEOUT", default_value = "5s", value_parser = MIN_ZK_CONNECT_TIMEOUT.parser())]
    pub zk_connect_timeout: Duration,

    /// ZooKeeper path of this election group; several groups can share one ensemble.
    #[arg(long, env = "ELECTION_ZK_ROOT", default_value = "/election", value_parser = parse_zk_root)]
    pub zk_root: String,

    /// Name of this replica in ZooKeeper, logs and files [default: the host name,
    /// which is the pod name in Kubernetes].
    #[arg(long, env = "ELECTION_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Log format; the filter comes from RUST_LOG, `level` or
    /// `target=level` items joined by commas (default `info`).
    #[arg(long, env = "ELECTION_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Give up and exit 1 after this long in Failover without recovering
    /// (so an orchestrator restarts the process); `0s` never gives up.
    #[arg(long, env = "ELECTION_FAILOVER_GIVE_UP", default_value = "0s", value_parser = parse_duration)]
    pub failover_give_up: Duration,

    /// Longest pause between two reconnection attempts in Failover. At
    /// least 100ms, the first backoff step.
    #[arg(long, env = "ELECTION_FAILOVER_MAX_BACKOFF", default_value = "5s", value_parser = MIN_FAILOVER_MAX_BACKOFF.parser())]
    pub failover_max_backoff: Duration,

    /// Consecutive failed file writes after which a leader gives up
    /// leadership (Failover) so that a replica with a working disk can lead.
    /// Errors, writes that overrun their lease, writes refused at the commit
    /// point and ticks without a confirmation while connected all count.
    #[arg(long, env = "ELECTION_MAX_WRITE_FAILURES", default_value = "3", value_parser = parse_capacity, allow_negative_numbers = true)]
    pub max_write_failures: usize,

    /// Address of the HTTP listener for /healthz, /readyz, /metrics and
    /// /status; `off` disables it. `[::]` listens dual-stack (IPv4 too).
    #[arg(long, env = "ELECTION_HTTP_ADDR", default_value = "[::]:8080", value_parser = parse_optional_addr)]
    pub http_addr: OptionalAddr,

    /// Loopback address for `election release` (POST /release). Must be a
    /// loopback address so that no other pod can stop this one; `off` disables it.
    #[arg(long, env = "ELECTION_ADMIN_ADDR", default_value = "127.0.0.1:8081", value_parser = parse_admin_addr)]
    pub admin_addr: OptionalAddr,

    /// Name of this Pod; with --pod-namespace, the daemon labels its own Pod
    /// with `election-state=<state>` (needs get/patch on it).
    #[arg(long, env = "ELECTION_POD_NAME", requires = "pod_namespace")]
    pub pod_name: Option<String>,

    /// Namespace of this Pod (see --pod-name).
    #[arg(long, env = "ELECTION_POD_NAMESPACE", requires = "pod_name")]
    pub pod_namespace: Option<String>,

    // Events, stale-label correction and the Lease mirror:
    /// UID of this Pod (downward API `metadata.uid`): the Events about the
    /// Pod name it by UID too, so they follow this Pod and not a later one
    /// of the same name.
    #[arg(long, env = "ELECTION_POD_UID", requires = "pod_name")]
    pub pod_uid: Option<String>,

    /// Post each transition as an `events.k8s.io/v1` Event on the Pod (and
    /// `StaleLabelCorrected` on a relabelled sibling): needs `create` on
    /// `events.k8s.io` events, and `patch` (a repeat is counted in the
    /// first Event's series). `false` posts none.
    #[arg(long, env = "ELECTION_POD_EVENTS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pod_events: bool,

    /// Label selector of the election's Pods: while leading, the daemon
    /// relabels a sibling still labelled leader from before its own
    /// leadership to `election-state=stale` (needs `list` on pods).
    #[arg(long, env = "ELECTION_POD_SELECTOR", requires = "pod_name")]
    pub pod_selector: Option<String>,

    /// Name of a coordination.k8s.io/v1 Lease the leader keeps as a
    /// read-only mirror of the election (the election never reads it).
    #[arg(long, env = "ELECTION_LEASE_NAME", requires = "pod_name")]
    pub lease_name: Option<String>,

    /// On a stop (SIGTERM, `election release`, a lost leadership), how long
    /// the command's process group has between SIGTERM and SIGKILL. Capped
    /// by the leader's lease: the command is always killed before the
    /// lease can end, whatever this says.
    #[arg(long, env = "ELECTION_CHILD_STOP_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub child_stop_timeout: Duration,

    #[command(flatten)]
    pub zk_security: ZkSecurityArgs,

    /// The command to run while this replica leads (after `--`), in its own
    /// process group, with `ELECTION_FENCING_TOKEN` and `ELECTION_NODE_ID`
    /// added to the environment. Without one, the leader writes files into
    /// file-dir; with one, it writes none and file-dir is not used.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The command to run while leading, if any (else the file writer).
    pub fn job(&self) -> Option<&[String]> {
        (!self.command.is_empty()).then_some(self.command.as_slice())
    }
}

/// Flags of `election release`.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// Loopback address of the daemon's admin listener.
    #[arg(long, env = "ELECTION_ADMIN_ADDR", default_value = "127.0.0.1:8081")]
    pub admin_addr: SocketAddr,

    /// How long to wait for the daemon to release its ZooKeeper node. At
    /// least 100ms.
    #[arg(long, env = "ELECTION_RELEASE_TIMEOUT", default_value = "10s", value_parser = MIN_RELEASE_TIMEOUT.parser())]
    pub timeout: Duration,
}

/// Flags of `election status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// ZooKeeper servers, comma separated `host:port` list.
    #[arg(long, env = "ELECTION_ZK_SERVERS", value_parser = parse_zk_servers)]
    pub zk_servers: String,

    /// ZooKeeper path of the election group.
    #[arg(long, env = "ELECTION_ZK_ROOT", default_value = "/election", value_parser = parse_zk_root)]
    pub zk_root: String,

    /// Upper bound for reaching ZooKeeper. At least 100ms.
    #[arg(long, env = "ELECTION_ZK_CONNECT_TIMEOUT", default_value = "5s", value_parser = MIN_ZK_CONNECT_TIMEOUT.parser())]
    pub zk_connect_timeout: Duration,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub zk_security: ZkSecurityArgs,
}

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl RunArgs {
    /// The node id, falling back to the host name.
    pub fn resolved_node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| parse_node_id(h).is_ok())
            .unwrap_or_else(|| format!("pid-{}", std::process::id()))
    }
}

/// A count of at least one.
pub fn parse_capacity(s: &str) -> Result<usize, InvalidValue> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| InvalidValue::NotANumber(s.to_owned()))?;
    if n < 1 {
        return Err(InvalidValue::BelowOne(n));
    }
    usize::try_from(n).map_err(|_| InvalidValue::TooLarge(s.to_owned()))
}

/// A non-empty comma-separated list of `host:port`.
pub fn parse_zk_servers(s: &str) -> Result<String, InvalidValue> {
    let servers: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if servers.is_empty() {
        return Err(InvalidValue::NoServers);
    }
    for server in &servers {
        let (host, port) = server
            .rsplit_once(':')
            .ok_or_else(|| InvalidValue::NoPort((*server).to_owned()))?;
        if host.is_empty() || host.contains('/') {
            return Err(InvalidValue::BadHost((*server).to_owned()));
        }
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| InvalidValue::BadPort {
                server: (*server).to_owned(),
                port: port.to_owned(),
            })?;
    }
    Ok(servers.join(","))
}

/// An absolute ZooKeeper path, not the root, without trailing slash.
pub fn parse_zk_root(s: &str) -> Result<String, InvalidValue> {
    let valid = s.starts_with('/')
        && s.len() > 1
        && !s.ends_with('/')
        && !s.contains("//")
        && s.split('/')
            .skip(1)
            .all(|seg| seg != "." && seg != ".." && seg != "zookeeper")
        && !s.chars().any(|c| c.is_control());
    if valid {
        Ok(s.to_owned())
    } else {
        Err(InvalidValue::BadZkRoot(s.to_owned()))
    }
}

/// A node id usable in logs, file contents and Kubernetes annotations.
pub fn parse_node_id(s: &str) -> Result<String, InvalidValue> {
    if crate::recipe::is_valid_node_id(s) {
        Ok(s.to_owned())
    } else {
        Err(InvalidValue::BadNodeId(s.to_owned()))
    }
}

/// A socket address, or `off`.
pub fn parse_optional_addr(s: &str) -> Result<OptionalAddr, InvalidValue> {
    if s.eq_ignore_ascii_case("off") || s.is_empty() {
        return Ok(OptionalAddr(None));
    }
    s.parse::<SocketAddr>()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|_| InvalidValue::BadAddr(s.to_owned()))
}

/// A loopback socket address, or `off`.
pub fn parse_admin_addr(s: &str) -> Result<OptionalAddr, InvalidValue> {
    let addr = parse_optional_addr(s)?;
    match addr.0 {
        Some(a) if !a.ip().is_loopback() => Err(InvalidValue::NotLoopback(s.to_owned())),
        _ => Ok(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("election").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        match parse(&full)?.command {
            Command::Run(r) => Ok(*r),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_go_service() {
        let a = run_args(&["--zk-servers", "zk:2181"]).unwrap();
        assert_eq!(a.leader_timeout, Duration::from_secs(10));
        assert_eq!(a.attempter_timeout, Duration::from_secs(10));
        assert_eq!(a.file_dir, PathBuf::from("/tmp/election"));
        assert_eq!(a.storage_capacity, 10);
        assert_eq!(a.zk_root, "/election");
        assert_eq!(a.failover_give_up, Duration::ZERO);
    }

    #[test]
    fn durations_need_a_unit() {
        let err = run_args(&["--zk-servers", "zk:2181", "--leader-timeout", "10"]).unwrap_err();
        assert!(err.to_string().contains("no unit"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let ok = run_args(&["--zk-servers", "zk:2181", "--leader-timeout", "250ms"]).unwrap();
        assert_eq!(ok.leader_timeout, Duration::from_millis(250));
    }

    #[test]
    fn zero_or_negative_capacity_is_refused() {
        for bad in ["0", "-1", "ten"] {
            let err =
                run_args(&["--zk-servers", "zk:2181", "--storage-capacity", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
            assert!(err.to_string().contains("storage-capacity"), "{err}");
        }
    }

    #[test]
    fn server_lists_are_checked() {
        assert_eq!(parse_zk_servers(" a:1 , b:2 ").unwrap(), "a:1,b:2");
        assert!(parse_zk_servers("").is_err());
        assert!(parse_zk_servers(" , ").is_err());
        assert!(matches!(parse_zk_servers("zk"), Err(InvalidValue::NoPort(s)) if s == "zk"));
        assert!(parse_zk_servers("zk:0").is_err());
        assert!(parse_zk_servers("zk:99999").is_err());
        assert!(parse_zk_servers("[::1]:2181").is_ok());
    }

    #[test]
    fn zk_root_must_be_an_absolute_path() {
        assert!(parse_zk_root("/election/a").is_ok());
        for bad in ["", "/", "election", "/a/", "/a//b", "/zookeeper", "/a/../b"] {
            assert!(parse_zk_root(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_addr_must_be_loopback() {
        assert!(parse_admin_addr("127.0.0.1:8081").is_ok());
        assert!(parse_admin_addr("[::1]:8081").is_ok());
        assert_eq!(parse_admin_addr("off").unwrap(), OptionalAddr(None));
        assert!(parse_admin_addr("0.0.0.0:8081").is_err());
    }

    #[test]
    fn file_dir_that_is_a_regular_file_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = parse_file_dir(file.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(err, InvalidValue::NotADirectory(_)), "{err}");
        assert!(err.to_string().contains("not a directory"));
    }

    #[test]
    fn pod_events_default_to_on_and_take_true_or_false() {
        let on = run_args(&["--zk-servers", "zk:2181"]).unwrap();
        assert!(on.pod_events);
        let off = run_args(&["--zk-servers", "zk:2181", "--pod-events", "false"]).unwrap();
        assert!(!off.pod_events);
        let err = run_args(&["--zk-servers", "zk:2181", "--pod-events", "no"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn pod_name_requires_namespace() {
        let err = run_args(&["--zk-servers", "zk:2181", "--pod-name", "p"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn zk_credentials_come_from_a_file_or_the_environment_never_both() {
        use std::os::unix::fs::PermissionsExt as _;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "election:pw\n").unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.path().to_str().unwrap();
        let a = run_args(&["--zk-servers", "zk:2181", "--zk-auth-file", path]).unwrap();
        let creds = a.zk_security.security().credentials.unwrap();
        assert_eq!(creds.user(), "election");
        assert!(!format!("{a:?}").contains(":pw"), "{a:?}");
        let err = run_args(&[
            "--zk-servers",
            "zk:2181",
            "--zk-auth-file",
            path,
            "--zk-auth",
            "a:b",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = run_args(&["--zk-servers", "zk:2181", "--zk-auth", "secretword"]).unwrap_err();
        assert!(err.to_string().contains("zk-auth"), "{err}");
        assert!(!err.to_string().contains("secretword"), "{err}");
    }

    #[test]
    fn a_tls_client_certificate_needs_its_key_and_a_ca() {
        let pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pem.path(), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let p = pem.path().to_str().unwrap();
        let err = run_args(&["--zk-servers", "zk:2181", "--zk-tls-cert-file", p]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let ok = run_args(&["--zk-servers", "zk:2181", "--zk-tls-ca-file", p]).unwrap();
        assert!(ok.zk_security.security().tls.unwrap().identity.is_none());
        let err = run_args(&[
            "--zk-servers",
            "zk:2181",
            "--zk-tls-ca-file",
            "/nonexistent",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("zk-tls-ca-file"), "{err}");
    }

    #[test]
    fn node_ids_are_restricted() {
        assert!(parse_node_id("election-0").is_ok());
        assert!(parse_node_id("a b").is_err());
        assert!(parse_node_id("").is_err());
    }
}
