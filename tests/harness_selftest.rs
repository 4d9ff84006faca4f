//! Self-tests of the test harness in `tests/common`: the ZooKeeper it
//! starts is real and serves clients, an ensemble elects and survives a
//! lost server, data survives restarts, the fault proxy breaks and heals a
//! real client session, and replicas capture output and take signals.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::observe::{Metrics, Status};
use common::proxy::{FaultProxy, Mode};
use common::replica::Replica;
use common::zk::ZkCluster;
use common::{close_client, wait_until, zk_client, zk_client_with_timeout};
use zookeeper_client::{Acls, Client, CreateMode, SessionState};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

async fn create(client: &Client, path: &str, data: &[u8]) {
    client
        .create(
            path,
            data,
            &CreateMode::Persistent.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

/// Waits up to `timeout` for the client's session to reach `want`;
/// returns how long it took.
async fn wait_state(client: &Client, want: SessionState, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut watcher = client.state_watcher();
    let reached = async {
        loop {
            if watcher.peek_state() == want {
                return;
            }
            watcher.changed().await;
        }
    };
    tokio::time::timeout(timeout, reached)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// The scheduler state letter of a process (`S` sleeping, `T` stopped...).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

#[test]
fn standalone_server_serves_srvr_and_a_real_client() {
    // Given a standalone server
    let started = Instant::now();
    let zk = ZkCluster::standalone();
    eprintln!("standalone ready in {:?}", started.elapsed());
    // When asked with srvr
    let srvr = zk.srvr(0);
    // Then it answers as standalone
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    assert_eq!(zk.mode(0).as_deref(), Some("standalone"));
    assert_eq!(zk.connect_string(), zk.server_addr(0).to_string());
    let nodes_before: u64 = zk.mntr(0)["zk_znode_count"].parse().unwrap();
    // and a zookeeper-client can create and read a node
    let rt = runtime();
    rt.block_on(async {
        let client = zk_client(&zk.connect_string()).await;
        create(&client, "/harness", b"hello").await;
        let (data, _) = client.get_data("/harness").await.unwrap();
        assert_eq!(data, b"hello");
        close_client(client).await;
    });
    let mntr = zk.mntr(0);
    assert_eq!(
        mntr["zk_znode_count"].parse::<u64>().unwrap(),
        nodes_before + 1
    );
    assert_eq!(mntr["zk_server_state"], "standalone");
}

#[test]
fn ensemble_elects_one_leader_and_survives_losing_its_leader() {
    // Given a 3-node ensemble
    let started = Instant::now();
    let mut zk = ZkCluster::ensemble(3);
    eprintln!("ensemble ready in {:?}", started.elapsed());
    // Then it has one leader and two followers
    let mut modes: Vec<String> = (0..3).map(|i| zk.mode(i).unwrap()).collect();
    modes.sort();
    assert_eq!(modes, ["follower", "follower", "leader"]);
    assert_eq!(zk.connect_string().split(',').count(), 3);
    let rt = runtime();
    rt.block_on(async {
        let client = zk_client(&zk.connect_string()).await;
        create(&client, "/before", b"1").await;
        close_client(client).await;
    });
    // When the leader is killed
    let leader = zk.leader().unwrap();
    zk.kill(leader);
    assert!(!zk.is_running(leader));
    assert_eq!(zk.srvr(leader), "", "a killed server does not answer");
    let killed = Instant::now();
    zk.wait_quorum();
    eprintln!("new leader elected in {:?}", killed.elapsed());
    // Then the two others elect a new leader and a client write succeeds
    let new_leader = zk.leader().unwrap();
    assert_ne!(new_leader, leader);
    rt.block_on(async {
        let client = zk_client(&zk.connect_string()).await;
        create(&client, "/after", b"2").await;
        assert_eq!(client.get_data("/before").await.unwrap().0, b"1");
        close_client(client).await;
    });
    // and the old leader rejoins as a follower with the new data
    zk.start(leader);
    assert_eq!(zk.mode(leader).as_deref(), Some("follower"));
    let server = zk.server_addr(leader).to_string();
    rt.block_on(async {
        let client = zk_client(&server).await;
        client.sync("/").await.unwrap();
        assert_eq!(client.get_data("/after").await.unwrap().0, b"2");
        close_client(client).await;
    });
}

#[test]
fn restart_keeps_the_data_and_wipe_removes_it() {
    // Given a standalone server holding a node
    let mut zk = ZkCluster::standalone();
    let rt = runtime();
    let connect = zk.connect_string();
    rt.block_on(async {
        let client = zk_client(&connect).await;
        create(&client, "/kept", b"data").await;
        close_client(client).await;
    });
    let pid = zk.pid(0).unwrap();
    // When it is stopped and started again
    zk.stop(0);
    assert!(!zk.is_serving(0));
    assert!(zk.mntr(0).is_empty());
    zk.start(0);
    // Then it runs as a new process on the same port and still has the node
    assert_ne!(zk.pid(0).unwrap(), pid);
    assert_eq!(zk.connect_string(), connect);
    let exists = |zk: &ZkCluster| {
        rt.block_on(async {
            let client = zk_client(&zk.connect_string()).await;
            let stat = client.check_stat("/kept").await.unwrap();
            close_client(client).await;
            stat.is_some()
        })
    };
    assert!(exists(&zk), "node survives a restart");
    // When it is killed, wiped and started
    zk.kill(0);
    zk.wipe(0);
    zk.start(0);
    // Then the node is gone
    assert!(!exists(&zk), "wipe removes the data");
}

#[test]
fn proxy_passes_a_session_blackhole_disconnects_it_and_pass_reconnects_it() {
    // Given a client whose only way to the server is a proxy in Pass mode
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    assert_eq!(proxy.mode(), Mode::Pass);
    let rt = runtime();
    rt.block_on(async {
        let session_timeout = Duration::from_secs(4);
        let client = zk_client_with_timeout(&proxy.addr().to_string(), session_timeout).await;
        create(&client, "/through-proxy", b"x").await;
        let session = client.session_id();
        assert_eq!(proxy.accepted(), 1);
        // When the proxy swallows everything
        proxy.set_mode(Mode::Blackhole);
        // Then the client reports Disconnected after its connection timeout
        // (2/5 of the session timeout: 1.6 s)
        let took = wait_state(&client, SessionState::Disconnected, Duration::from_secs(5)).await;
        let took = took.expect("Disconnected in Blackhole");
        eprintln!("Disconnected {took:?} after Blackhole");
        assert!(
            took >= Duration::from_millis(1000),
            "not before the connection timeout: {took:?}"
        );
        // and a request waits (the client queues it until it reconnects
        // or gives the session up)
        let read = client.get_data("/through-proxy");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), read)
                .await
                .is_err()
        );
        // When the proxy passes again
        let accepted = proxy.accepted();
        proxy.set_mode(Mode::Pass);
        // Then the client reconnects the same session on a new connection
        let took = wait_state(&client, SessionState::SyncConnected, Duration::from_secs(5)).await;
        eprintln!("SyncConnected {:?} after Pass", took.expect("reconnected"));
        assert_eq!(client.session_id(), session);
        assert!(proxy.accepted() > accepted);
        assert_eq!(client.get_data("/through-proxy").await.unwrap().0, b"x");
        close_client(client).await;
    });
}

#[test]
fn proxy_delay_slows_each_round_trip_and_refuse_cuts_the_connection() {
    // Given a client through a proxy
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let rt = runtime();
    rt.block_on(async {
        let client = zk_client(&proxy.addr().to_string()).await;
        create(&client, "/slow", b"").await;
        // When each chunk is delayed by 200 ms
        proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
        let start = Instant::now();
        client.get_data("/slow").await.unwrap();
        // Then a round trip takes both delays
        let rtt = start.elapsed();
        assert!(rtt >= Duration::from_millis(400), "{rtt:?}");
        assert!(rtt < Duration::from_secs(3), "{rtt:?}");
        // When the proxy refuses
        proxy.set_mode(Mode::Refuse);
        // Then the connection is cut at once, well before a timeout
        let took = wait_state(&client, SessionState::Disconnected, Duration::from_secs(2)).await;
        eprintln!("Disconnected {took:?} after Refuse");
        assert!(took.is_some(), "Disconnected after Refuse");
        assert!(all_connections_closed(&proxy).await);
        // and comes back once the proxy passes again
        proxy.set_mode(Mode::Pass);
        let took = wait_state(&client, SessionState::SyncConnected, Duration::from_secs(5)).await;
        assert!(took.is_some(), "reconnected after Refuse");
        close_client(client).await;
    });
}

/// Waits up to 2 s until the proxy holds no connection.
async fn all_connections_closed(proxy: &FaultProxy) -> bool {
    common::wait_until_async(Duration::from_secs(2), Duration::from_millis(10), || {
        proxy.open_connections() == 0
    })
    .await
}

#[test]
fn a_closed_proxy_refuses_connects_at_the_port_and_listens_again_after() {
    // Given a client through a proxy
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let rt = runtime();
    rt.block_on(async {
        let client = zk_client(&proxy.addr().to_string()).await;
        // When the proxy closes its port
        proxy.set_mode(Mode::Closed);
        // Then the connection is cut and a connect is refused by the kernel
        let took = wait_state(&client, SessionState::Disconnected, Duration::from_secs(2)).await;
        assert!(took.is_some(), "Disconnected after Closed");
        let refused =
            common::wait_until_async(Duration::from_secs(2), Duration::from_millis(10), || {
                matches!(
                    std::net::TcpStream::connect(proxy.addr()),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
                )
            })
            .await;
        assert!(refused, "connects are refused at the closed port");
        // and once it passes again, the client reconnects the same session
        let session = client.session_id();
        proxy.set_mode(Mode::Pass);
        let took = wait_state(&client, SessionState::SyncConnected, Duration::from_secs(5)).await;
        assert!(took.is_some(), "reconnected after Closed");
        assert_eq!(client.session_id(), session);
        close_client(client).await;
    });
}

#[test]
fn a_mute_proxy_holds_connections_unanswered_until_the_client_gives_up() {
    // Given a client through a proxy
    let zk = ZkCluster::standalone();
    let proxy = FaultProxy::start(zk.server_addr(0));
    let rt = runtime();
    rt.block_on(async {
        let client = zk_client(&proxy.addr().to_string()).await;
        let session = client.session_id();
        assert_eq!(proxy.sessions_given_up(), 0);
        // When the proxy goes mute
        proxy.set_mode(Mode::Mute);
        // Then the connection is cut, a reconnection is taken and never
        // answered, and the client gives up on it with its session
        let took = wait_state(&client, SessionState::Disconnected, Duration::from_secs(2)).await;
        assert!(took.is_some(), "Disconnected after Mute");
        let gave_up =
            common::wait_until_async(Duration::from_secs(10), Duration::from_millis(10), || {
                proxy.sessions_given_up() == 1
            })
            .await;
        assert!(gave_up, "the client gives up on an unanswered connection");
        assert_eq!(client.state(), SessionState::Disconnected);
        // and once the proxy passes again, the same session reconnects
        proxy.set_mode(Mode::Pass);
        let took = wait_state(
            &client,
            SessionState::SyncConnected,
            Duration::from_secs(10),
        )
        .await;
        assert!(took.is_some(), "reconnected after Mute");
        assert_eq!(client.session_id(), session);
        assert_eq!(proxy.sessions_given_up(), 1);
        close_client(client).await;
    });
}

#[test]
fn proxies_for_an_ensemble_build_a_working_connect_string() {
    // Given an ensemble with one proxy per server
    let zk = ZkCluster::ensemble(3);
    let proxies = FaultProxy::for_each_server(&zk);
    let connect = common::proxy::connect_string(&proxies);
    assert_eq!(connect.split(',').count(), 3);
    for (i, p) in proxies.iter().enumerate() {
        assert_eq!(p.upstream(), zk.server_addr(i));
    }
    // When two of the three proxies refuse
    proxies[0].set_mode(Mode::Refuse);
    proxies[1].set_mode(Mode::Refuse);
    // Then a client still reaches the ensemble through the third
    let rt = runtime();
    rt.block_on(async {
        let client = zk_client(&connect).await;
        create(&client, "/via-proxy", b"").await;
        close_client(client).await;
    });
    assert!(proxies[2].accepted() >= 1);
}

#[test]
fn replica_captures_output_and_takes_signals() {
    // Given a process that prints to stdout and stderr, then sleeps
    let script = "echo ready; echo \"log=$RUST_LOG color=$NO_COLOR\"; \
                  printf '\\033[1mbold\\033[0m\\n'; echo oops >&2; exec sleep 30";
    let r = Replica::spawn_program("sh", &["-c", script], &[]);
    // Then its lines are captured, with default env and without colors
    assert_eq!(
        r.wait_for_line("ready", Duration::from_secs(5)).as_deref(),
        Some("ready")
    );
    assert!(
        r.wait_for_line(|l: &str| l == "oops", Duration::from_secs(5))
            .is_some()
    );
    assert!(r.wait_for_line("bold", Duration::from_secs(5)).is_some());
    let output = r.output();
    assert!(output.contains("log=info color=1\n"), "{output}");
    assert!(
        output.contains("\nbold\n"),
        "ANSI codes removed: {output:?}"
    );
    assert_eq!(r.line_count(), 4);
    assert!(
        r.wait_for_new_line(4, "ready", Duration::from_millis(100))
            .is_none()
    );
    assert!(r.is_running());
    // When stopped and continued
    assert!(r.signal(libc::SIGSTOP));
    assert!(wait_until(
        Duration::from_secs(2),
        Duration::from_millis(10),
        || process_state(r.pid()) == 'T'
    ));
    assert!(r.signal(libc::SIGCONT));
    assert!(wait_until(
        Duration::from_secs(2),
        Duration::from_millis(10),
        || process_state(r.pid()) != 'T'
    ));
    // When terminated
    assert!(r.signal(libc::SIGTERM));
    // Then it exits by that signal, and no more signals are sent
    let status = r
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(!r.signal(libc::SIGKILL));
    assert!(
        r.wait_for_line("never printed", Duration::from_secs(5))
            .is_none()
    );
    // and the log file holds the same lines
    let log = std::fs::read_to_string(r.log_path()).unwrap();
    assert_eq!(log, output);
}

#[test]
fn replica_env_overrides_defaults_and_drop_kills_a_stopped_process() {
    // Given a process with RUST_LOG set by the test, then stopped
    let r = Replica::spawn_program(
        "sh",
        &["-c", "echo \"log=$RUST_LOG extra=$EXTRA\"; exec sleep 30"],
        &[("RUST_LOG", "debug"), ("EXTRA", "yes")],
    );
    assert!(
        r.wait_for_line("log=debug extra=yes", Duration::from_secs(5))
            .is_some(),
        "{}",
        r.output()
    );
    let pid = r.pid();
    r.signal(libc::SIGSTOP);
    // When the replica is dropped
    drop(r);
    // Then the process is gone (killed and reaped, not a zombie)
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn metrics_are_read_whatever_the_label_order_and_summed_over_matching_series() {
    // Given an exposition with labelled and plain series, a timestamp, an
    // escaped label value and OpenMetrics' end marker
    let m = Metrics::parse(
        "# HELP t Transitions.\n\
         # TYPE t counter\n\
         t{from=\"leader\",to=\"failover\"} 2\n\
         t{to=\"failover\",from=\"attempter\"} 1.0\n\
         t{from=\"init\",to=\"attempter\"} 3\n\
         plain 7 1700000000\n\
         odd{v=\"a\\\"b,c}\"} 4\n\
         # EOF\n",
    );
    // Then series are summed over the labels asked for, absent ones are 0
    assert_eq!(m.sum("t", &[("to", "failover")]), 3.0);
    assert_eq!(m.sum("t", &[("from", "leader"), ("to", "failover")]), 2.0);
    assert_eq!(m.sum("t", &[]), 6.0);
    assert_eq!(m.sum("t", &[("to", "leader")]), 0.0);
    assert_eq!(m.sum("plain", &[]), 7.0);
    assert_eq!(m.sum("odd", &[("v", "a\"b,c}")]), 4.0);
    assert_eq!(m.sum("absent", &[]), 0.0);
}

#[test]
fn a_status_is_read_with_its_cause_code_and_detail_and_unknown_fields() {
    let s: Status = serde_json::from_str(
        "{\"node_id\":\"r0\",\"state\":\"attempter\",\"since_ms\":1,\"leader\":null,\
         \"token\":null,\"session_id\":null,\"znode\":null,\"last_write_ms\":null,\
         \"cause\":\"leadership-lost\",\"cause_detail\":\"leader node deleted\",\"new\":1}",
    )
    .unwrap();
    assert_eq!(
        (s.cause.as_str(), s.cause_detail.as_str()),
        ("leadership-lost", "leader node deleted")
    );
}
