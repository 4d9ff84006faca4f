//! A fault-injecting TCP proxy to put between one client (a daemon, a
//! test's ZooKeeper client) and one ZooKeeper server: it passes bytes,
//! delays them, swallows them like a network partition, refuses
//! connections, or lets only one direction through. The mode applies to
//! existing connections at once.
//!
//! Each proxy runs its own tokio runtime on a background thread, so tests
//! that are not async can use it; dropping the proxy stops it and closes
//! its connections.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::zk::ZkCluster;

/// What the proxy does with connections and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything (the initial mode).
    Pass,
    /// Forwards everything, each chunk after this delay, in both
    /// directions (order is kept; throughput is not limited).
    Delay(Duration),
    /// A partition: accepts connections and keeps them open, but forwards
    /// nothing and silently drops the bytes (and a closing side's FIN) in
    /// both directions. A connection that lost bytes is reset when the mode
    /// goes back to `Pass` or `Delay`, since its byte stream is broken; the
    /// client then reconnects.
    Blackhole,
    /// Resets existing connections and every new one (as if the server
    /// refused).
    Refuse,
    /// Resets existing connections and closes the listening port, so a
    /// connect is refused by the kernel (as when the server's process is
    /// gone); the port is listened on again when the mode changes.
    Closed,
    /// Forwards client -> server, drops server -> client (the server hears
    /// the client, the client hears nothing). Like `Blackhole`, a connection
    /// that lost bytes is reset when forwarding resumes.
    HalfOpen,
    /// A server whose port is open but whose process does not answer yet
    /// (a JVM starting on a loaded machine): resets existing connections,
    /// then accepts new ones without connecting upstream, reads them and
    /// answers nothing, so each client gives up on its own
    /// ([`FaultProxy::sessions_given_up`]). A held connection is reset when
    /// the mode changes.
    Mute,
}

impl Mode {
    fn delay(self) -> Duration {
        match self {
            Mode::Delay(d) => d,
            _ => Duration::ZERO,
        }
    }
}

/// A running proxy from `addr()` (on 127.0.0.1) to one upstream address.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// The armed one-shot cut, taken by the connection that makes it.
    cut: Mutex<Option<Cut>>,
    cuts: AtomicUsize,
    /// Requests forwarded, by opcode.
    requests: Mutex<std::collections::HashMap<i32, usize>>,
    /// The session of [`FaultProxy::forget_session`] (0: none).
    forgotten: AtomicI64,
    new_sessions: AtomicUsize,
    /// The sessions whose client gave up on a [`Mode::Mute`] connection.
    given_up: Mutex<std::collections::HashSet<i64>>,
}

/// A one-shot fault: the connection is cut at the client's next request
/// of this ZooKeeper opcode (14 is a multi-op).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub opcode: i32,
    /// `true`: the request reaches the server and its reply is swallowed
    /// (it landed, the client cannot know); `false`: it never leaves.
    pub landed: bool,
}

/// ZooKeeper's opcode of a multi-op.
pub const MULTI: i32 = 14;
/// ZooKeeper's opcode of a `sync` (the leader's confirmation starts with one).
pub const SYNC: i32 = 9;
/// ZooKeeper's opcode of a session's close.
pub const CLOSE_SESSION: i32 = -11;

impl FaultProxy {
    /// Starts a proxy in `Mode::Pass` on a free port of 127.0.0.1 that
    /// forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = oneshot::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept_loop(listener, upstream, mode_rx, thread_stats) => {}
                    }
                });
                // Dropping the runtime drops every connection task and
                // closes its sockets.
            })
            .expect("spawn the proxy thread");
        FaultProxy {
            addr,
            upstream,
            mode,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// One proxy per server of `zk`, in server order.
    pub fn for_each_server(zk: &ZkCluster) -> Vec<FaultProxy> {
        (0..zk.len())
            .map(|i| FaultProxy::start(zk.server_addr(i)))
            .collect()
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the mode for new and existing connections.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Arms a one-shot cut: the next request of `cut.opcode` on any
    /// connection resets that connection (both sides), as a server dying
    /// mid-request does; the client reconnects as usual.
    pub fn cut_at_next(&self, cut: Cut) {
        *self.stats.cut.lock().unwrap() = Some(cut);
    }

    /// Makes the server behind look as if it forgot `session` the way
    /// ClickHouse Keeper does: every forwarded connect request that resumes
    /// it asks for a new session instead (session id 0), so the server
    /// answers with a fresh session id, where ZooKeeper would answer id 0
    /// (expired). The session itself lives on in the server until it
    /// expires; the test deletes its ephemeral nodes.
    pub fn forget_session(&self, session: i64) {
        self.stats.forgotten.store(session, Ordering::SeqCst);
    }

    /// How many connect requests were turned into new sessions.
    pub fn new_sessions(&self) -> usize {
        self.stats.new_sessions.load(Ordering::SeqCst)
    }

    /// How many requests of `opcode` clients sent through the proxy (e.g.
    /// [`SYNC`]), whatever became of them.
    pub fn requests(&self, opcode: i32) -> usize {
        self.stats
            .requests
            .lock()
            .unwrap()
            .get(&opcode)
            .copied()
            .unwrap_or(0)
    }

    /// How many sessions' clients gave up on a connection that
    /// [`Mode::Mute`] held unanswered (closed it themselves); a client
    /// asking for a new session does not count.
    pub fn sessions_given_up(&self) -> usize {
        self.stats.given_up.lock().unwrap().len()
    }

    /// How many armed cuts were made.
    pub fn cuts(&self) -> usize {
        self.stats.cuts.load(Ordering::SeqCst)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// How many connections the proxy has accepted since it started
    /// (including refused ones): a client reconnecting shows here.
    pub fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The connect string of several proxies (e.g. one per ensemble server).
pub fn connect_string(proxies: &[FaultProxy]) -> String {
    proxies
        .iter()
        .map(|p| p.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
) {
    let addr = listener.local_addr().expect("proxy address");
    let mut listener = Some(listener);
    loop {
        if *mode.borrow_and_update() == Mode::Closed {
            listener = None;
        } else if listener.is_none() {
            listener = Some(rebind(addr).await);
        }
        let Some(open) = listener.as_ref() else {
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        };
        let accepted = tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            accepted = open.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            // Out of file descriptors or similar: back off and go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        if matches!(*mode.borrow(), Mode::Refuse | Mode::Closed) {
            reset(client);
            continue;
        }
        let mode = mode.clone();
        let stats = stats.clone();
        if *mode.borrow() == Mode::Mute {
            tokio::spawn(hold_unanswered(client, mode, stats));
            continue;
        }
        tokio::spawn(async move {
            stats.open.fetch_add(1, Ordering::SeqCst);
            proxy_connection(client, upstream, mode, stats.clone()).await;
            stats.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Listens on `addr` again after [`Mode::Closed`] (retrying while the
/// kernel still holds the port).
async fn rebind(addr: SocketAddr) -> TcpListener {
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Closes a connection with RST rather than FIN, like a refusing peer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Holds a connection of [`Mode::Mute`] until its client gives up (noting
/// the session its connect request resumes) or the mode changes (reset).
async fn hold_unanswered(
    mut client: TcpStream,
    mut mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
) {
    let mut connect = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if *mode.borrow_and_update() != Mode::Mute {
            return reset(client);
        }
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return reset(client);
                }
            }
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => connect.extend_from_slice(&buf[..n.min(64)]),
            }
        }
    }
    if let Some(session) = resumed_session(&connect) {
        stats.given_up.lock().unwrap().insert(session);
    }
}

/// Where a connect request (a connection's first frame) holds the session
/// id: length (4 bytes), protocol version (4), last zxid (8), timeout (4),
/// session id (8), password; the client sends it in one write.
const SESSION_ID: std::ops::Range<usize> = 4 + 16..4 + 24;

/// The session a connect request resumes (none for a new session).
fn resumed_session(connect: &[u8]) -> Option<i64> {
    let id = i64::from_be_bytes(connect.get(SESSION_ID)?.try_into().ok()?);
    (id != 0).then_some(id)
}

/// What travels through a direction's queue.
enum Item {
    Data(Vec<u8>),
    /// The sending side closed: half-close the receiving side.
    Eof,
}

/// Forwards one connection until both sides are closed, or resets both.
async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
) {
    let server =
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await {
            Ok(Ok(server)) => server,
            _ => return reset(client),
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut conn = Connection {
        client,
        server,
        mode,
        stats,
        requests: Framer::default(),
    };
    if conn.run().await.is_err() {
        reset(conn.client);
        reset(conn.server);
    }
}

struct Connection {
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
    /// The client's bytes cut into ZooKeeper frames, for [`Cut`].
    requests: Framer,
}

/// Cuts a byte stream into ZooKeeper's length-prefixed frames.
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    /// Frames seen; the first one of a connection is the connect request,
    /// which has no request header.
    frames: usize,
}

/// A request frame: where it starts and ends in the chunk just fed, its
/// xid and opcode.
struct Frame {
    start: usize,
    end: usize,
    xid: i32,
    opcode: i32,
}

impl Framer {
    /// Feeds a chunk; returns the requests it completes (offsets clamped
    /// to the chunk: a frame begun in an earlier chunk starts at 0).
    fn feed(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let before = self.buf.len();
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len = i32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            if self.buf.len() - at < 4 + len {
                break;
            }
            let body = &self.buf[at + 4..at + 4 + len];
            if self.frames > 0 && body.len() >= 8 {
                frames.push(Frame {
                    start: at.saturating_sub(before),
                    end: at + 4 + len - before,
                    xid: i32::from_be_bytes(body[0..4].try_into().unwrap()),
                    opcode: i32::from_be_bytes(body[4..8].try_into().unwrap()),
                });
            }
            self.frames += 1;
            at += 4 + len;
        }
        self.buf.drain(..at);
        frames
    }
}

/// The connection must be reset.
struct Broken;

impl Connection {
    /// One loop over both directions: reads are queued with their due
    /// time, writes happen when due, and a mode change is handled first.
    async fn run(&mut self) -> Result<(), Broken> {
        let mut to_server: VecDeque<(Instant, Item)> = VecDeque::new();
        let mut to_client: VecDeque<(Instant, Item)> = VecDeque::new();
        let (mut client_open, mut server_open) = (true, true);
        // Bytes or a FIN were dropped: the streams no longer line up.
        let mut lost = false;
        let mut client_buf = vec![0u8; 16 * 1024];
        let mut server_buf = vec![0u8; 16 * 1024];
        if matches!(
            *self.mode.borrow_and_update(),
            Mode::Refuse | Mode::Closed | Mode::Mute
        ) {
            return Err(Broken);
        }
        loop {
            if !client_open && !server_open && to_server.is_empty() && to_client.is_empty() {
                return Ok(());
            }
            let mode = *self.mode.borrow();
            // Counted from when a chunk is read, not from the top of the
            // loop: after an idle wait the delay would shrink to nothing.
            let due = || Instant::now() + mode.delay();
            let server_due = to_server.front().map(|(t, _)| *t);
            let client_due = to_client.front().map(|(t, _)| *t);
            tokio::select! {
                biased;
                changed = self.mode.changed() => {
                    if changed.is_err() {
                        return Err(Broken);
                    }
                    match *self.mode.borrow_and_update() {
                        Mode::Refuse | Mode::Closed | Mode::Mute => return Err(Broken),
                        Mode::Pass | Mode::Delay(_) if lost => return Err(Broken),
                        _ => {}
                    }
                }
                () = sleep_until(server_due) => {
                    write(&mut self.server, to_server.pop_front()).await?;
                }
                () = sleep_until(client_due) => {
                    write(&mut self.client, to_client.pop_front()).await?;
                }
                r = self.client.read(&mut client_buf), if client_open => {
                    let item = match r.map_err(|_| Broken)? {
                        0 => {
                            client_open = false;
                            Item::Eof
                        }
                        n => Item::Data(client_buf[..n].to_vec()),
                    };
                    let item = match item {
                        Item::Data(bytes) if matches!(mode, Mode::Pass | Mode::Delay(_)) => {
                            Item::Data(self.maybe_new_session(bytes))
                        }
                        item => item,
                    };
                    if let Item::Data(bytes) = &item
                        && let Some((frame, cut)) = self.armed_cut(bytes)
                    {
                        return self.cut(to_server, bytes, frame, cut).await;
                    }
                    match mode {
                        Mode::Blackhole => lost = true,
                        _ => to_server.push_back((due(), item)),
                    }
                }
                r = self.server.read(&mut server_buf), if server_open => {
                    let item = match r.map_err(|_| Broken)? {
                        0 => {
                            server_open = false;
                            Item::Eof
                        }
                        n => Item::Data(server_buf[..n].to_vec()),
                    };
                    match mode {
                        Mode::Blackhole | Mode::HalfOpen => lost = true,
                        _ => to_client.push_back((due(), item)),
                    }
                }
            }
        }
    }
}

impl Connection {
    /// A connect request (the connection's first frame) that resumes the
    /// session of [`FaultProxy::forget_session`] asks for a new session:
    /// its session id becomes 0 ([`SESSION_ID`]).
    fn maybe_new_session(&self, mut chunk: Vec<u8>) -> Vec<u8> {
        let first = self.requests.frames == 0 && self.requests.buf.is_empty();
        let forgotten = self.stats.forgotten.load(Ordering::SeqCst);
        if first && forgotten != 0 && resumed_session(&chunk) == Some(forgotten) {
            chunk[SESSION_ID].fill(0);
            self.stats.new_sessions.fetch_add(1, Ordering::SeqCst);
        }
        chunk
    }

    /// The requests `chunk` completes, counted by opcode
    /// ([`FaultProxy::requests`]).
    fn requests_in(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let frames = self.requests.feed(chunk);
        let mut seen = self.stats.requests.lock().unwrap();
        for f in &frames {
            *seen.entry(f.opcode).or_default() += 1;
        }
        frames
    }

    /// The request of `chunk` an armed cut applies to, taking the cut.
    fn armed_cut(&mut self, chunk: &[u8]) -> Option<(Frame, Cut)> {
        let frames = self.requests_in(chunk);
        let mut armed = self.stats.cut.lock().unwrap();
        let cut = (*armed)?;
        let frame = frames.into_iter().find(|f| f.opcode == cut.opcode)?;
        *armed = None;
        self.stats.cuts.fetch_add(1, Ordering::SeqCst);
        Some((frame, cut))
    }

    /// Makes the cut: what came before the request goes through; the
    /// request too if it is to land, and then its reply is awaited (at
    /// most 2 s) and swallowed. Both sides are then reset.
    async fn cut(
        &mut self,
        queued: VecDeque<(Instant, Item)>,
        chunk: &[u8],
        frame: Frame,
        cut: Cut,
    ) -> Result<(), Broken> {
        for (_, item) in queued {
            write(&mut self.server, Some((Instant::now(), item))).await?;
        }
        let upto = if cut.landed { frame.end } else { frame.start };
        self.server
            .write_all(&chunk[..upto])
            .await
            .map_err(|_| Broken)?;
        if cut.landed {
            let mut replies = Framer {
                frames: 1,
                ..Framer::default()
            };
            let mut buf = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(n @ 1..) = self.server.read(&mut buf).await {
                    if replies.feed(&buf[..n]).iter().any(|r| r.xid == frame.xid) {
                        break;
                    }
                }
            })
            .await;
        }
        Err(Broken)
    }
}

/// Sleeps until `due`, or forever if there is nothing to write.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

async fn write(to: &mut TcpStream, item: Option<(Instant, Item)>) -> Result<(), Broken> {
    match item {
        Some((_, Item::Data(bytes))) => to.write_all(&bytes).await.map_err(|_| Broken),
        Some((_, Item::Eof)) => {
            let _ = to.shutdown().await;
            Ok(())
        }
        None => Ok(()),
    }
}
