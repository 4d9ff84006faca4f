//! A fake Kubernetes API server for the Pod calls the daemon makes, and a
//! kubeconfig that points `kube::Client::try_default()` at it.
//!
//! [`FakeApi`] listens on `127.0.0.1:0` and speaks plain HTTP/1.1, one std
//! thread per connection. It records every request (method, path, content
//! type, bearer token, JSON body, the mode it met and the status it got)
//! and serves what the daemon calls:
//!
//! - `GET`/`PATCH /api/v1/namespaces/{ns}/pods/{name}`: a Pod whose
//!   metadata carries the labels and annotations merged so far (JSON merge
//!   patch, RFC 7386). Any pod name exists. A patch that carries
//!   `metadata.resourceVersion` is conditional: 409 unless it matches.
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...`: the Pods
//!   stored so far (patched, or seeded with [`FakeApi::put_pod`]) whose
//!   labels match (equality selectors only).
//! - `POST /apis/events.k8s.io/v1/namespaces/{ns}/events` and `PATCH
//!   .../events/{name}` (a merge patch: what kube-runtime's recorder sends
//!   to count a repeat in the Event's series): Events as stored (409 on a
//!   second POST of a name, 404 on a PATCH of an absent one), read back with
//!   [`FakeApi::events`].
//! - `GET`/`PUT /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`
//!   and `POST .../leases`: Leases as stored (404 when absent; seeded with
//!   [`FakeApi::put_lease`]).
//!
//! Its behaviour can be switched at runtime ([`ApiMode`]) to fail the way a
//! real API server or a broken network does, and single calls can be made
//! to fail ([`FakeApi::answer`]). kube with rustls talks plain `http://` when the
//! kubeconfig says so (its connector is built with `https_or_http`).
//!
//! [`http_get`] is the client side the tests use to scrape the daemon's own
//! listeners next to the fake.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the fake answers the requests that arrive from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    /// Serves the Pod API: 200 with the Pod.
    Ok,
    /// 500 Internal Server Error, with a `Status` body.
    Fail500,
    /// 409 Conflict, with a `Status` body.
    Conflict409,
    /// Reads the request and never answers; the connection is dropped once
    /// the mode changes (or the fake stops).
    Hang,
    /// Reads the request and drops the connection without a byte.
    CloseConnection,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it was read completely.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Body parsed as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The mode in force when it arrived, i.e. how it was answered.
    pub mode: ApiMode,
    /// The status answered; `None` while hanging, or dropped unanswered.
    pub status: Option<u16>,
}

impl Recorded {
    /// `metadata.labels["election-state"]` of the body.
    pub fn state_label(&self) -> Option<&str> {
        self.body["metadata"]["labels"]["election-state"].as_str()
    }

    /// `metadata.annotations["election/<key>"]` of the body.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.body["metadata"]["annotations"][format!("election/{key}")].as_str()
    }

    /// True for a request on `/api/v1/namespaces/{namespace}/pods/{pod}`.
    pub fn is_for(&self, namespace: &str, pod: &str) -> bool {
        self.path == pod_path(namespace, pod)
    }
}

/// The API path of a Pod.
pub fn pod_path(namespace: &str, pod: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}")
}

/// What the connection threads share with the test.
struct Shared {
    state: Mutex<State>,
    /// Signalled when the mode changes or the fake stops (wakes `Hang`).
    mode_changed: Condvar,
    stopped: AtomicBool,
}

struct State {
    mode: ApiMode,
    requests: Vec<Recorded>,
    /// The stored Pods by path.
    pods: std::collections::HashMap<String, Value>,
    /// The stored Leases by path.
    leases: std::collections::HashMap<String, Value>,
    /// The stored Events by path.
    events: std::collections::HashMap<String, Value>,
    /// Calls answered with a failure whatever the mode: (method, path, status).
    injected: Vec<(String, String, u16)>,
    /// A handle on every accepted connection, to shut them down on drop.
    connections: Vec<TcpStream>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server; stops (and drops every connection) when
/// dropped.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
}

impl FakeApi {
    /// Starts on 127.0.0.1 with a free port, in [`ApiMode::Ok`].
    pub fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        let addr = listener.local_addr().expect("fake API address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: ApiMode::Ok,
                requests: Vec::new(),
                pods: Default::default(),
                leases: Default::default(),
                events: Default::default(),
                injected: Vec::new(),
                connections: Vec::new(),
            }),
            mode_changed: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accepting.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(handle) = stream.try_clone() {
                        accepting.lock().connections.push(handle);
                    }
                    let shared = accepting.clone();
                    std::thread::spawn(move || serve(stream, &shared));
                }
            })
            .expect("spawn the fake API acceptor");
        let dir = tempfile::Builder::new()
            .prefix("election-kubeconfig-")
            .tempdir()
            .expect("temp dir for the kubeconfig");
        FakeApi { addr, shared, dir }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how requests arriving from now on are answered; requests
    /// hanging in [`ApiMode::Hang`] are dropped.
    pub fn set_mode(&self, mode: ApiMode) {
        self.shared.lock().mode = mode;
        self.shared.mode_changed.notify_all();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests on Pod `namespace/pod`.
    pub fn requests_for(&self, namespace: &str, pod: &str) -> Vec<Recorded> {
        let mut requests = self.requests();
        requests.retain(|r| r.is_for(namespace, pod));
        requests
    }

    /// The `election-state` labels of the patches of `namespace/pod` that
    /// were answered 200, in order, consecutive repeats merged (a patch
    /// that only changes an annotation repeats the label).
    pub fn labels_of(&self, namespace: &str, pod: &str) -> Vec<String> {
        let mut labels: Vec<String> = self
            .requests_for(namespace, pod)
            .iter()
            .filter(|r| r.method == "PATCH" && r.status == Some(200))
            .filter_map(|r| r.state_label().map(str::to_owned))
            .collect();
        labels.dedup();
        labels
    }

    /// The last `election-state` label patched onto `namespace/pod`.
    pub fn last_label(&self, namespace: &str, pod: &str) -> Option<String> {
        self.labels_of(namespace, pod).pop()
    }

    /// The Pod as stored (merged from every successful patch), if it was
    /// ever touched.
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<Value> {
        self.shared
            .lock()
            .pods
            .get(&pod_path(namespace, pod))
            .cloned()
    }

    /// Stores Pod `namespace/pod` (as if it existed before the daemon
    /// started) with `metadata` merged into it; it is listed from now on.
    pub fn put_pod(&self, namespace: &str, pod: &str, metadata: Value) {
        let mut state = self.shared.lock();
        let stored = state
            .pods
            .entry(pod_path(namespace, pod))
            .or_insert_with(|| new_pod(namespace, pod));
        merge_patch(&mut stored["metadata"], &metadata);
        bump(stored);
    }

    /// Stores Lease `namespace/name` (metadata `name`, `namespace` and
    /// `resourceVersion` filled in).
    pub fn put_lease(&self, namespace: &str, name: &str, mut lease: Value) {
        lease["metadata"]["name"] = json!(name);
        lease["metadata"]["namespace"] = json!(namespace);
        lease["metadata"]["resourceVersion"] = json!("1");
        self.shared
            .lock()
            .leases
            .insert(lease_path(namespace, name), lease);
    }

    /// The Events of `namespace` as stored (series patches merged), oldest
    /// first.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let prefix = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/");
        let shared = self.shared.lock();
        let mut events: Vec<Value> = shared
            .events
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .map(|(_, e)| e.clone())
            .collect();
        events.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
        events
    }

    /// The Lease `name` as stored, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .leases
            .get(&lease_path(namespace, name))
            .cloned()
    }

    /// From now on, answers `method path` (path without the query) with
    /// `status` and a `Status` body, in [`ApiMode::Ok`].
    pub fn answer(&self, method: &str, path: &str, status: u16) {
        self.shared
            .lock()
            .injected
            .push((method.to_owned(), path.to_owned(), status));
    }

    /// Writes a kubeconfig for this server (a token user, the context
    /// current) into a temp dir owned by the fake; returns its path, for
    /// `KUBECONFIG`.
    pub fn kubeconfig(&self, namespace: &str) -> PathBuf {
        write_kubeconfig(self.dir.path(), &self.url(), namespace)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.mode_changed.notify_all();
        for connection in self.shared.lock().connections.drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
        // Wake the acceptor so that it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Writes `dir/kubeconfig`: cluster `server` (e.g. `http://127.0.0.1:port`),
/// a user with a bearer token `test-token`, a context with `namespace`,
/// made current. Returns its path.
pub fn write_kubeconfig(dir: &Path, server: &str, namespace: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: {namespace}
current-context: fake
users:
- name: fake
  user:
    token: test-token
"
    );
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

/// A request as read off the wire.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one connection (keep-alive) until the peer closes it, the mode
/// says to drop it, or the fake stops.
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while let Some(request) = read_request(&mut reader) {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let (path, query) = match request.target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (request.target.clone(), None),
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let (mode, index) = {
            let mut state = shared.lock();
            let mode = state.mode;
            state.requests.push(Recorded {
                at: Instant::now(),
                method: request.method.clone(),
                path: path.clone(),
                query,
                content_type: request.header("content-type").map(str::to_owned),
                authorization: request.header("authorization").map(str::to_owned),
                body: body.clone(),
                mode,
                status: None,
            });
            (mode, state.requests.len() - 1)
        };
        let (status, answer) = match mode {
            ApiMode::CloseConnection => return,
            ApiMode::Hang => {
                let mut state = shared.lock();
                while state.mode == ApiMode::Hang && !shared.stopped.load(Ordering::SeqCst) {
                    state = shared
                        .mode_changed
                        .wait_timeout(state, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                return;
            }
            ApiMode::Fail500 => (500, status_body(500, "InternalError", "injected failure")),
            ApiMode::Conflict409 => (409, status_body(409, "Conflict", "injected conflict")),
            ApiMode::Ok => answer(&request, &path, &body, shared),
        };
        shared.lock().requests[index].status = Some(status);
        let text = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            reason(status),
            text.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one request (headers, and a body by `Content-Length` or chunked);
/// `None` at end of stream or on garbage.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = request.header("content-length") {
        let mut body = vec![0u8; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        request.body = body;
    }
    Some(request)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        _ => "Internal Server Error",
    }
}

/// A `metav1.Status` failure body, as the API server sends with errors.
fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn not_found() -> (u16, Value) {
    (
        404,
        status_body(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}

fn not_allowed() -> (u16, Value) {
    (
        405,
        status_body(405, "MethodNotAllowed", "method not allowed"),
    )
}

/// A fresh Pod `namespace/name`, without labels or annotations.
fn new_pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "1",
            "labels": {},
            "annotations": {},
        },
    })
}

/// The API path of a Lease.
pub fn lease_path(namespace: &str, name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
}

/// Increments `metadata.resourceVersion`.
fn bump(object: &mut Value) {
    let version = object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    object["metadata"]["resourceVersion"] = json!((version + 1).to_string());
}

/// The 409 a write with a stale `metadata.resourceVersion` gets.
fn outdated(stored: &Value, body: &Value) -> Option<(u16, Value)> {
    let wanted = body["metadata"]["resourceVersion"].as_str()?;
    (stored["metadata"]["resourceVersion"].as_str() != Some(wanted)).then(|| {
        (
            409,
            status_body(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
        )
    })
}

/// `%XX` decoding of a query value (`+` is a space).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `labels` match the equality selector `k=v,k2=v2` (empty: all).
fn selected(labels: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or((term, ""));
        labels[k.trim()].as_str() == Some(v.trim())
    })
}

/// Answers a request in [`ApiMode::Ok`].
fn answer(request: &Request, path: &str, body: &Value, shared: &Shared) -> (u16, Value) {
    let mut state = shared.lock();
    if let Some((.., status)) = state
        .injected
        .iter()
        .find(|(m, p, _)| *m == request.method && p == path)
    {
        let status = *status;
        let reason = match status {
            403 => "Forbidden",
            409 => "Conflict",
            _ => "InternalError",
        };
        return (status, status_body(status, reason, "injected failure"));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), &segments[..]) {
        ("GET", ["api", "v1", "namespaces", namespace, "pods"]) => {
            let selector = request
                .target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector="))
                .map(percent_decode)
                .unwrap_or_default();
            let prefix = format!("/api/v1/namespaces/{namespace}/pods/");
            let mut items: Vec<(&String, &Value)> = state
                .pods
                .iter()
                .filter(|(p, pod)| {
                    p.starts_with(&prefix) && selected(&pod["metadata"]["labels"], &selector)
                })
                .collect();
            items.sort_by_key(|(p, _)| p.as_str());
            let items: Vec<Value> = items.into_iter().map(|(_, pod)| pod.clone()).collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        (method, ["api", "v1", "namespaces", namespace, "pods", name]) => {
            let pod = state
                .pods
                .entry(path.to_owned())
                .or_insert_with(|| new_pod(namespace, name));
            match method {
                "GET" => {}
                "PATCH" => {
                    // A merge patch or a strategic merge patch: on labels and
                    // annotations (string maps) both mean the RFC 7386 merge.
                    let kind = request.header("content-type").unwrap_or("");
                    if !kind.starts_with("application/merge-patch+json")
                        && !kind.starts_with("application/strategic-merge-patch+json")
                    {
                        return (
                            415,
                            status_body(415, "UnsupportedMediaType", "unsupported patch type"),
                        );
                    }
                    if !body.is_object() {
                        return (
                            415,
                            status_body(415, "BadRequest", "the patch is not a JSON object"),
                        );
                    }
                    if let Some(conflict) = outdated(pod, body) {
                        return conflict;
                    }
                    merge_patch(pod, body);
                    bump(pod);
                }
                _ => return not_allowed(),
            }
            (200, pod.clone())
        }
        (
            "POST",
            [
                "apis",
                "events.k8s.io",
                "v1",
                "namespaces",
                namespace,
                "events",
            ],
        ) => {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            let key = format!("{path}/{name}");
            if name.is_empty() || state.events.contains_key(&key) {
                return (
                    409,
                    status_body(409, "AlreadyExists", "events already exists"),
                );
            }
            let mut event = body.clone();
            event["metadata"]["namespace"] = json!(namespace);
            event["metadata"]["resourceVersion"] = json!("1");
            state.events.insert(key, event.clone());
            (201, event)
        }
        ("PATCH", ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => {
            let kind = request.header("content-type").unwrap_or("");
            if !kind.starts_with("application/merge-patch+json") {
                return (
                    415,
                    status_body(415, "UnsupportedMediaType", "unsupported patch type"),
                );
            }
            let Some(event) = state.events.get_mut(path) else {
                return not_found();
            };
            merge_patch(event, body);
            bump(event);
            (200, event.clone())
        }
        (
            "POST",
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                namespace,
                "leases",
            ],
        ) => {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            let key = lease_path(namespace, name);
            if state.leases.contains_key(&key) {
                return (
                    409,
                    status_body(409, "AlreadyExists", "leases already exists"),
                );
            }
            let mut lease = body.clone();
            lease["metadata"]["resourceVersion"] = json!("1");
            state.leases.insert(key, lease.clone());
            (201, lease)
        }
        (
            method,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                _,
                "leases",
                _,
            ],
        ) => {
            let Some(stored) = state.leases.get_mut(path) else {
                return not_found();
            };
            match method {
                "GET" => (200, stored.clone()),
                "PUT" => {
                    if let Some(conflict) = outdated(stored, body) {
                        return conflict;
                    }
                    *stored = body.clone();
                    let version = body["metadata"]["resourceVersion"].clone();
                    stored["metadata"]["resourceVersion"] = version;
                    bump(stored);
                    (200, stored.clone())
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

/// JSON merge patch (RFC 7386): objects merge recursively, `null` removes
/// a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// An answer of the daemon's HTTP listeners.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// Body (chunked encoding undone).
    pub body: String,
}

impl HttpAnswer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET over a real socket (`Connection: close`); `None`
/// when nothing answers a well-formed response within 5 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<HttpAnswer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some(HttpAnswer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}
