//! A real ZooKeeper for tests: one standalone server or an ensemble, each
//! server a JVM process on free loopback ports with its own temporary data
//! directory. Servers can be stopped, killed, wiped and restarted on the
//! same ports; every server is killed when the [`ZkCluster`] is dropped.
//!
//! [`ZkOptions`] adds server-side security: a super identity (JVM flag
//! `zookeeper.DigestAuthenticationProvider.superDigest`) and TLS on a
//! `secureClientPort` (Netty, PKCS12 stores) with certificates generated
//! by `openssl` and `keytool` in the cluster's temporary directory.
//!
//! ZooKeeper is found through `ZOOKEEPER_HOME` (a release tarball) or the
//! Debian package (`apt-get install -y zookeeper`); without either the
//! harness panics and says how to install it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::free_port;

/// How long a server (or an ensemble's quorum) may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a port was taken before a server bound it.
const PORT_ATTEMPTS: usize = 3;

/// A ZooKeeper cluster of real servers (one for [`ZkCluster::standalone`]).
///
/// Servers are indexed from 0; server `i` has `myid` `i + 1`.
pub struct ZkCluster {
    servers: Vec<Server>,
    ensemble: bool,
    options: ZkOptions,
    tls: Option<TlsMaterial>,
    // Last so that the servers are killed before their files are removed.
    dir: tempfile::TempDir,
}

/// One server: its ports, its directory and its process, if running.
struct Server {
    myid: usize,
    client_port: u16,
    /// TLS client port (0 without TLS).
    secure_port: u16,
    peer_port: u16,
    election_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// `maxSessionTimeout` in milliseconds (60000 unless set).
    max_session_timeout: u64,
}

impl Server {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("zoo.cfg")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// True while the process runs (reaps it once it has exited).
    fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Server-side security of a test cluster (all off by default).
#[derive(Debug, Clone, Default)]
pub struct ZkOptions {
    /// `super:<base64(sha1(super:password))>`: a digest identity that
    /// bypasses every ACL, as an operator configures it.
    pub super_digest: Option<String>,
    /// Serve TLS on a `secureClientPort` as well (the plain port stays for
    /// the harness's four-letter words; tests give clients only the
    /// secure one).
    pub tls: bool,
    /// With `tls`: `ssl.clientAuth=need` (clients must show a certificate
    /// signed by the test CA).
    pub tls_client_auth: bool,
    /// `tickTime` (200 ms unless set); `minSessionTimeout` is two ticks.
    pub tick_time: Option<Duration>,
}

/// PEM files generated for a TLS cluster.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA that signed the servers' and the client's certificates.
    pub ca: PathBuf,
    /// A client certificate (SAN 127.0.0.1) and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, which signed nothing the servers use.
    pub wrong_ca: PathBuf,
}

impl ZkCluster {
    /// Starts one standalone server and waits until it serves.
    pub fn standalone() -> ZkCluster {
        ZkCluster::start_new(1, ZkOptions::default())
    }

    /// Starts one standalone server with `options` and waits until it serves.
    pub fn standalone_with(options: ZkOptions) -> ZkCluster {
        ZkCluster::start_new(1, options)
    }

    /// The connect string of the servers' TLS ports (panics without TLS).
    pub fn secure_connect_string(&self) -> String {
        assert!(self.options.tls, "the cluster was started without TLS");
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.secure_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The generated certificates (panics without TLS).
    pub fn tls_material(&self) -> &TlsMaterial {
        self.tls
            .as_ref()
            .expect("the cluster was started without TLS")
    }

    /// Starts an ensemble of `n` servers (n >= 2, usually 3) and waits
    /// until every server serves, as one leader and `n - 1` followers.
    pub fn ensemble(n: usize) -> ZkCluster {
        assert!(
            n >= 2,
            "an ensemble needs at least 2 servers; use standalone()"
        );
        ZkCluster::start_new(n, ZkOptions::default())
    }

    /// [`ZkCluster::ensemble`] with `options`.
    pub fn ensemble_with(n: usize, options: ZkOptions) -> ZkCluster {
        assert!(
            n >= 2,
            "an ensemble needs at least 2 servers; use standalone_with()"
        );
        ZkCluster::start_new(n, options)
    }

    fn start_new(n: usize, options: ZkOptions) -> ZkCluster {
        let dir = tempfile::Builder::new()
            .prefix("election-zk-")
            .tempdir()
            .expect("create a temp dir for ZooKeeper");
        let servers = (0..n)
            .map(|i| Server {
                myid: i + 1,
                client_port: 0,
                secure_port: 0,
                peer_port: 0,
                election_port: 0,
                dir: dir.path().join(format!("zk{}", i + 1)),
                child: None,
                max_session_timeout: 60_000,
            })
            .collect();
        let tls = options.tls.then(|| generate_tls(dir.path()));
        let mut cluster = ZkCluster {
            servers,
            ensemble: n > 1,
            options,
            tls,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            cluster.assign_ports();
            for i in 0..n {
                cluster.write_config(i);
                cluster.spawn(i);
            }
            match cluster.wait_all_serving(READY_TIMEOUT) {
                Ok(()) => return cluster,
                Err(e) if e.port_clash && attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "zk harness: port clash ({}), retrying with new ports",
                        e.message
                    );
                    for i in 0..n {
                        cluster.kill(i);
                    }
                }
                Err(e) => panic!("{}", e.message),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn assign_ports(&mut self) {
        let ensemble = self.ensemble;
        let tls = self.options.tls;
        for s in &mut self.servers {
            s.client_port = free_port();
            if tls {
                s.secure_port = free_port();
            }
            if ensemble {
                s.peer_port = free_port();
                s.election_port = free_port();
            }
        }
    }

    /// Writes `zoo.cfg` (and `myid` for an ensemble) for server `i`.
    fn write_config(&self, i: usize) {
        let s = &self.servers[i];
        fs::create_dir_all(s.data_dir()).expect("create the ZooKeeper data dir");
        // tickTime 200 ms (unless set) allows sessions from 2 ticks; the
        // negotiated timeout is clamped to [min, max]SessionTimeout.
        // forceSync=no: no fsync per write (a test machine needs no
        // durability across power loss; a killed JVM loses nothing
        // written). preAllocSize is in KiB: 1 MiB log files, not 64 MiB.
        let tick_ms = self.options.tick_time.map_or(200, |t| t.as_millis() as u64);
        let mut cfg = format!(
            "tickTime={tick}\n\
             initLimit=10\n\
             syncLimit=5\n\
             minSessionTimeout={min_session}\n\
             maxSessionTimeout={max_session}\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             4lw.commands.whitelist=*\n\
             admin.enableServer=false\n\
             preAllocSize=1024\n\
             forceSync=no\n\
             maxClientCnxns=0\n",
            data = s.data_dir().display(),
            port = s.client_port,
            max_session = s.max_session_timeout,
            tick = tick_ms,
            min_session = 2 * tick_ms,
        );
        if self.options.tls {
            let stores = self.dir.path().join("tls");
            cfg.push_str(&format!(
                "secureClientPort={port}\n\
                 secureClientPortAddress=127.0.0.1\n\
                 serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                 ssl.keyStore.location={keystore}\n\
                 ssl.keyStore.password=secret\n\
                 ssl.keyStore.type=PKCS12\n\
                 ssl.trustStore.location={truststore}\n\
                 ssl.trustStore.password=secret\n\
                 ssl.trustStore.type=PKCS12\n\
                 ssl.clientAuth={auth}\n",
                port = s.secure_port,
                keystore = stores.join("server.p12").display(),
                truststore = stores.join("trust.p12").display(),
                auth = if self.options.tls_client_auth {
                    "need"
                } else {
                    "none"
                },
            ));
        }
        if self.ensemble {
            for peer in &self.servers {
                cfg.push_str(&format!(
                    "server.{}=127.0.0.1:{}:{}\n",
                    peer.myid, peer.peer_port, peer.election_port
                ));
            }
            fs::write(s.data_dir().join("myid"), format!("{}\n", s.myid)).expect("write myid");
        }
        fs::write(s.config_path(), cfg).expect("write zoo.cfg");
    }

    /// Starts the JVM of server `i` (its log is appended to).
    fn spawn(&mut self, i: usize) {
        let options = self.options.clone();
        let s = &mut self.servers[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.log_path())
            .expect("open the ZooKeeper log");
        let _ = writeln!(
            log,
            "==== zk harness: starting server {} on port {}",
            s.myid, s.client_port
        );
        let err = log.try_clone().expect("clone the log file handle");
        let install = installation();
        let mut cmd = Command::new(&install.java);
        cmd.args([
            "-Xmx128m",
            "-Xss512k",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.admin.enableServer=false",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
        ]);
        if let Some(digest) = &options.super_digest {
            cmd.arg(format!(
                "-Dzookeeper.DigestAuthenticationProvider.superDigest={digest}"
            ));
        }
        let mut classpath = install.classpath.clone();
        if options.tls {
            // Debian's zookeeper.jar names netty-handler and -transport in
            // its manifest but not what they need for the Netty server.
            for jar in [
                "netty-codec",
                "netty-resolver",
                "netty-transport-native-unix-common",
            ] {
                let path = format!("/usr/share/java/{jar}.jar");
                if Path::new(&path).is_file() {
                    classpath.push(':');
                    classpath.push_str(&path);
                }
            }
        }
        cmd.args(&install.jvm_args)
            .arg("-cp")
            .arg(&classpath)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(s.config_path())
            .current_dir(&s.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", install.java.display()));
        s.child = Some(child);
    }

    /// The connect string of all servers: `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn connect_string(&self) -> String {
        (0..self.servers.len())
            .map(|i| self.server_addr(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client address of server `i`.
    pub fn server_addr(&self, i: usize) -> SocketAddr {
        self.servers[i].addr()
    }

    /// The number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// The process id of server `i`, if it was started and not stopped or
    /// killed through this cluster (it may have exited by itself).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().map(Child::id)
    }

    /// True while the process of server `i` runs (serving or not).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.servers[i].is_running()
    }

    /// Stops server `i` with SIGTERM and waits for it to exit (SIGKILL
    /// after 10 s). Does nothing if it is not running.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.servers[i].child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills server `i` with SIGKILL (a crash) and reaps it. Does nothing
    /// if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on the same ports with the same data dir.
    ///
    /// Waits until it serves when it can: a standalone server always, an
    /// ensemble member when a majority of servers runs with it. Otherwise
    /// (the first server of a stopped ensemble) returns once the process is
    /// started; call [`ZkCluster::wait_quorum`] after starting the others.
    /// Panics if it is already running.
    pub fn start(&mut self, i: usize) {
        assert!(!self.is_running(i), "server {i} is already running");
        self.write_config(i);
        self.spawn(i);
        let running = (0..self.len()).filter(|&j| self.is_running(j)).count();
        if running > self.len() / 2 {
            self.wait_ready(i);
        }
    }

    /// Gives server `i` another `maxSessionTimeout` (the largest session
    /// timeout it grants), from its next start on.
    pub fn set_max_session_timeout(&mut self, i: usize, timeout: Duration) {
        self.servers[i].max_session_timeout = timeout.as_millis() as u64;
    }

    /// Stops every server with SIGTERM (see [`ZkCluster::stop`]).
    pub fn stop_all(&mut self) {
        for i in 0..self.len() {
            self.stop(i);
        }
    }

    /// Starts every server that is not running and waits for the quorum.
    pub fn start_all(&mut self) {
        for i in 0..self.len() {
            if !self.is_running(i) {
                self.write_config(i);
                self.spawn(i);
            }
        }
        self.wait_quorum();
    }

    /// Removes all data of server `i` (snapshots and transaction logs),
    /// keeping `myid`, as if its disk were replaced. The server must be
    /// stopped or killed first.
    pub fn wipe(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "stop or kill server {i} before wiping it"
        );
        let data = self.servers[i].data_dir();
        for entry in fs::read_dir(&data).expect("read the data dir") {
            let path = entry.expect("data dir entry").path();
            if path.file_name().is_some_and(|n| n == "myid") {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
    }

    /// Waits until server `i` serves clients (its `srvr` answers a `Mode:`
    /// line). Panics after 30 s with the tail of its log.
    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + READY_TIMEOUT;
        if let Err(e) = self.wait_serving(i, deadline) {
            panic!("{}", e.message);
        }
    }

    /// Waits until every running server serves and, for an ensemble,
    /// exactly one of them leads. Panics after 30 s with the log tails.
    pub fn wait_quorum(&mut self) {
        if let Err(e) = self.wait_all_serving(READY_TIMEOUT) {
            panic!("{}", e.message);
        }
    }

    fn wait_all_serving(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.is_running(i)).collect();
        for &i in &running {
            self.wait_serving(i, deadline)?;
        }
        if !self.ensemble {
            return Ok(());
        }
        loop {
            let leaders = running
                .iter()
                .filter(|&&i| self.mode(i).as_deref() == Some("leader"))
                .count();
            if leaders == 1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady {
                    port_clash: false,
                    message: format!(
                        "ZooKeeper ensemble has {leaders} leaders after {timeout:?}\n{}",
                        self.log_tails(20)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_serving(&mut self, i: usize, deadline: Instant) -> Result<(), NotReady> {
        loop {
            if self.mode(i).is_some() {
                return Ok(());
            }
            if !self.is_running(i) {
                let log = self.log_tail(i, 30);
                return Err(NotReady {
                    port_clash: log.contains("Address already in use"),
                    message: format!(
                        "ZooKeeper server {i} (port {}) exited while starting; its log:\n{log}",
                        self.servers[i].client_port
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(NotReady {
                    port_clash: false,
                    message: format!(
                        "ZooKeeper server {i} (port {}) not serving after {READY_TIMEOUT:?}; \
                         its log:\n{}",
                        self.servers[i].client_port,
                        self.log_tail(i, 30)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a four-letter word (`srvr`, `mntr`, `ruok`, `stat`, `cons`,
    /// `dump`, ...) to server `i` and returns its answer, or an empty
    /// string if the server does not answer (down, or not accepting).
    pub fn four_letter(&self, i: usize, word: &str) -> String {
        four_letter_at(self.server_addr(i), word).unwrap_or_default()
    }

    /// `srvr` of server `i` (version, latency, counts, `Mode: ...`), or an
    /// empty string. A server without quorum answers "This ZooKeeper
    /// instance is not currently serving requests".
    pub fn srvr(&self, i: usize) -> String {
        self.four_letter(i, "srvr")
    }

    /// The `Mode:` of server `i` (`standalone`, `leader`, `follower`), or
    /// `None` while it does not serve.
    pub fn mode(&self, i: usize) -> Option<String> {
        self.srvr(i)
            .lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_owned())
    }

    /// The index of the server that leads now (0 for a serving standalone).
    pub fn leader(&self) -> Option<usize> {
        (0..self.len()).find(|&i| matches!(self.mode(i).as_deref(), Some("leader" | "standalone")))
    }

    /// `mntr` of server `i` as key -> value, e.g. `zk_packets_received`,
    /// `zk_packets_sent`, `zk_outstanding_requests`, `zk_znode_count`,
    /// `zk_ephemerals_count`, `zk_num_alive_connections`,
    /// `zk_server_state`. Empty if the server does not answer. Note that
    /// each four-letter word counts as received packets too.
    /// ZooKeeper packets server `i` has sent and received so far (`mntr`).
    pub fn packets(&self, i: usize) -> f64 {
        let m = self.mntr(i);
        let get = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        get("zk_packets_received") + get("zk_packets_sent")
    }

    pub fn mntr(&self, i: usize) -> HashMap<String, String> {
        self.four_letter(i, "mntr")
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// True if server `i` serves clients now.
    pub fn is_serving(&self, i: usize) -> bool {
        self.mode(i).is_some()
    }

    /// The path of server `i`'s log (kept across restarts).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.servers[i].log_path()
    }

    /// The last `n` lines of server `i`'s log.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        tail(&self.servers[i].log_path(), n)
    }

    /// The last `n` lines of every server's log, with headers.
    pub fn log_tails(&self, n: usize) -> String {
        (0..self.len())
            .map(|i| format!("--- zookeeper server {i} log ---\n{}", self.log_tail(i, n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The directory of server `i` (holds `zoo.cfg`, `zookeeper.log` and
    /// `data/`).
    pub fn server_dir(&self, i: usize) -> &Path {
        &self.servers[i].dir
    }
}

impl Drop for ZkCluster {
    /// Kills every server (SIGKILL, then reaps it) so that no JVM outlives
    /// a failed test; prints the log tails when the test is panicking.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(15));
        }
        for i in 0..self.len() {
            self.kill(i);
        }
    }
}

/// Why servers are not serving; `port_clash` asks for a retry on new ports.
struct NotReady {
    port_clash: bool,
    message: String,
}

/// How to run ZooKeeper on this machine.
struct Installation {
    java: PathBuf,
    classpath: String,
    jvm_args: Vec<String>,
}

/// Finds Java and ZooKeeper once per process; panics with install advice.
fn installation() -> &'static Installation {
    static FOUND: OnceLock<Installation> = OnceLock::new();
    FOUND.get_or_init(|| {
        const ADVICE: &str = "ZooKeeper is needed by the integration tests: install it with \
             `apt-get install -y zookeeper` (Debian/Ubuntu), or unpack a release and set \
             ZOOKEEPER_HOME to its directory";
        let java = match std::env::var_os("JAVA_HOME") {
            Some(home) if Path::new(&home).join("bin/java").is_file() => {
                Path::new(&home).join("bin/java")
            }
            _ => PathBuf::from("java"),
        };
        if !Command::new(&java)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            panic!("no Java runtime found ({}). {ADVICE}", java.display());
        }
        let (classpath, jvm_args) = zookeeper_classpath()
            .unwrap_or_else(|| panic!("no ZooKeeper found (ZOOKEEPER_HOME unset or empty, no /usr/share/java/zookeeper.jar). {ADVICE}"));
        Installation { java, classpath, jvm_args }
    })
}

/// The classpath (and extra JVM flags) of ZooKeeper from `ZOOKEEPER_HOME`
/// (`*.jar` and `lib/*.jar`) or from Debian's package.
fn zookeeper_classpath() -> Option<(String, Vec<String>)> {
    if let Some(home) = std::env::var_os("ZOOKEEPER_HOME").map(PathBuf::from) {
        let mut jars: Vec<PathBuf> = [home.clone(), home.join("lib")]
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jar"))
            .collect();
        jars.sort();
        if !jars.is_empty() {
            let cp = jars
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            // A release logs through logback; its config lives in conf/.
            let logback = home.join("conf/logback.xml");
            let args = if logback.is_file() {
                vec![format!("-Dlogback.configurationFile={}", logback.display())]
            } else {
                Vec::new()
            };
            return Some((cp, args));
        }
    }
    let debian = Path::new("/usr/share/java/zookeeper.jar");
    if debian.is_file() {
        // The jar's manifest names its dependencies; slf4j-simple makes it
        // log (without a binding it logs nothing).
        let mut cp = debian.display().to_string();
        if Path::new("/usr/share/java/slf4j-simple.jar").is_file() {
            cp.push_str(":/usr/share/java/slf4j-simple.jar");
        }
        return Some((cp, Vec::new()));
    }
    None
}

/// Generates a CA, a server certificate for 127.0.0.1/localhost and a
/// client certificate signed by it, a second unrelated CA, and the
/// server's PKCS12 key and trust stores (password `secret`) in `dir/tls`.
fn generate_tls(dir: &Path) -> TlsMaterial {
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).expect("create the tls dir");
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(&tls)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} (needed for TLS tests): {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "wrong-ca"] {
        let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
        let subject = format!("/CN=election test {ca}");
        args.push(&subject);
        args.extend(ec);
        let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
        args.extend(["-keyout", &key, "-out", &pem]);
        run("openssl", &args);
    }
    fs::write(
        tls.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         basicConstraints=CA:FALSE\n",
    )
    .expect("write leaf.ext");
    for leaf in ["server", "client"] {
        let (key, csr, pem) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.pem"),
        );
        let mut args = vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ];
        args.extend(ec);
        run("openssl", &args);
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                &pem,
            ],
        );
    }
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            "server.pem",
            "-inkey",
            "server.key",
            "-name",
            "server",
            "-out",
            "server.p12",
            "-passout",
            "pass:secret",
        ],
    );
    run(
        "keytool",
        &[
            "-importcert",
            "-noprompt",
            "-alias",
            "ca",
            "-file",
            "ca.pem",
            "-keystore",
            "trust.p12",
            "-storetype",
            "PKCS12",
            "-storepass",
            "secret",
        ],
    );
    TlsMaterial {
        ca: tls.join("ca.pem"),
        client_cert: tls.join("client.pem"),
        client_key: tls.join("client.key"),
        wrong_ca: tls.join("wrong-ca.pem"),
    }
}

/// Sends a four-letter word to `addr` and reads the answer until the server
/// closes the connection.
pub fn four_letter_at(addr: SocketAddr, word: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Sends `sig` to a child that has not been reaped (so its pid is its own).
fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory effects; the child is not yet reaped,
    // so the pid cannot belong to another process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The last `n` lines of a file (empty if it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
