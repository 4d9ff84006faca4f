//! HTTP listeners: the public one (`--http-addr`: /healthz, /readyz,
//! /metrics, /status) and the loopback admin one (`--admin-addr`:
//! POST /release for the preStop hook).
//!
//! - `/healthz` (liveness) answers 200 while the state machine loop keeps
//!   beating: every state wakes up at least once per leader-timeout,
//!   attempter-timeout, connect timeout or backoff. A loop stuck longer than
//!   twice the longest of these (plus 5 s) answers 503, so the kubelet
//!   restarts a wedged process. Leadership is not a health condition.
//! - `/readyz` (readiness) answers 200 in Attempter and Leader, i.e. when the
//!   replica is a healthy candidate with a live session, 503 otherwise.
//!
//! `[::]` (the default `--http-addr`) is bound dual-stack whatever the
//! host's `net.ipv6.bindv6only`, so probes and scrapes work on IPv4-only,
//! IPv6-only and dual-stack clusters; see [`bind`].

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::board::StateName;
use crate::machine::{Context, StopRequest};

/// Running listeners.
pub struct Servers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Stops accepting and waits (bounded) for in-flight answers.
    pub async fn shutdown(self, bound: Duration) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(bound, task).await;
        }
    }
}

/// Binds and serves the configured listeners.
pub async fn start(ctx: &Context) -> std::io::Result<Servers> {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    if let Some(addr) = ctx.cfg.http_addr.0 {
        let listener = bind(addr)?;
        info!(addr = %listener.local_addr()?, "serving /healthz /readyz /metrics /status");
        tasks.push(serve(listener, public_router(ctx.clone()), stop.clone()));
    }
    if let Some(addr) = ctx.cfg.admin_addr.0 {
        let listener = bind(addr)?;
        info!(addr = %listener.local_addr()?, "serving POST /release on loopback");
        tasks.push(serve(listener, admin_router(ctx.clone()), stop.clone()));
    }
    Ok(Servers { stop, tasks })
}

/// Binds a TCP listener on `addr` (inside a tokio runtime). The IPv6 any
/// address `[::]` gets `IPV6_V6ONLY` off explicitly, so it also accepts
/// IPv4 (as mapped addresses) even where the system default is v6-only; on a
/// host without IPv6 it falls back to `0.0.0.0` on the same port.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual_stack = addr.is_ipv6() && addr.ip().is_unspecified();
    let socket = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
        Err(e) if dual_stack && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            warn!(error = %e, addr = %v4, "no IPv6 on this host; listening on IPv4 only");
            return bind(v4);
        }
        other => other?,
    };
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // As tokio's own bind: a restarted daemon can rebind at once.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            warn!(error = %e, "HTTP listener failed");
        }
    })
}

/// Routes of the public listener.
pub fn public_router(ctx: Context) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(ctx)
}

/// Routes of the loopback admin listener.
pub fn admin_router(ctx: Context) -> Router {
    Router::new()
        .route("/release", post(release))
        .with_state(ctx)
}

/// The longest a healthy state machine goes without a heartbeat.
pub fn liveness_bound(ctx: &Context) -> Duration {
    let c = &ctx.cfg;
    let longest = [
        c.leader_timeout,
        c.attempter_timeout,
        c.zk_connect_timeout,
        c.failover_max_backoff,
        c.zk_session_timeout,
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    longest * 2 + Duration::from_secs(5)
}

async fn healthz(State(ctx): State<Context>) -> Response {
    let quiet = ctx.board.since_heartbeat();
    let bound = liveness_bound(&ctx);
    if quiet <= bound {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state machine silent for {quiet:?} (bound {bound:?})\n"),
        )
            .into_response()
    }
}

async fn readyz(State(ctx): State<Context>) -> Response {
    let status = ctx.board.status();
    if status.is_ready() {
        (StatusCode::OK, format!("ready: {}\n", status.state)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {} ({})\n", status.state, status.cause),
        )
            .into_response()
    }
}

async fn status(State(ctx): State<Context>) -> Response {
    let s = ctx.board.status();
    let mut value = serde_json::to_value(&s).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("ready".into(), s.is_ready().into());
        obj.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    }
    axum::Json(value).into_response()
}

async fn metrics(State(ctx): State<Context>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&ctx),
    )
        .into_response()
}

/// Prometheus text exposition writer: one `# HELP`/`# TYPE` per family.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.0, "{name}{labels} {value}");
        self
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        value: &std::sync::atomic::AtomicU64,
    ) -> &mut Self {
        self.family(name, "counter", help)
            .sample(name, "", value.load(Ordering::Relaxed))
    }
}

/// Renders the Prometheus text exposition.
pub fn render_metrics(ctx: &Context) -> String {
    let b = &ctx.board;
    let m = &b.metrics;
    let s = b.status();
    let mut e = Exposition(String::new());
    e.family("election_build_info", "gauge", "Build information.")
        .sample(
            "election_build_info",
            &format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            1,
        );
    e.family(
        "election_state",
        "gauge",
        "Current state of this replica (1 for the current state).",
    );
    for st in StateName::ALL {
        e.sample(
            "election_state",
            &format!("{{state=\"{st}\"}}"),
            u8::from(s.state == st),
        );
    }
    e.family("election_is_leader", "gauge", "1 while this replica leads.")
        .sample(
            "election_is_leader",
            "",
            u8::from(s.state == StateName::Leader),
        );
    e.family(
        "election_transitions_total",
        "counter",
        "State transitions by source and target state.",
    );
    for ((from, to), n) in m.transitions.lock().unwrap().iter() {
        e.sample(
            "election_transitions_total",
            &format!("{{from=\"{from}\",to=\"{to}\"}}"),
            n,
        );
    }
    e.counter(
        "election_leadership_acquisitions_total",
        "Times this replica became leader.",
        &m.leadership_acquisitions,
    )
    .counter(
        "election_files_written_total",
        "Leader files written.",
        &m.files_written,
    )
    .counter(
        "election_write_errors_total",
        "Failed leader file writes.",
        &m.write_errors,
    )
    .counter(
        "election_writes_fenced_total",
        "Writes skipped because leadership was not confirmed.",
        &m.writes_fenced,
    )
    .counter(
        "election_files_pruned_total",
        "Leader files deleted by retention.",
        &m.files_pruned,
    )
    .counter(
        "election_prune_errors_total",
        "Failed retention runs.",
        &m.prune_errors,
    )
    .counter(
        "election_zk_connect_attempts_total",
        "ZooKeeper session establishment attempts.",
        &m.zk_connect_attempts,
    )
    .counter(
        "election_kube_patches_total",
        "Successful patches of this Pod.",
        &m.kube_patches,
    )
    .counter(
        "election_kube_patch_errors_total",
        "Failed patches of this Pod.",
        &m.kube_patch_errors,
    )
    .counter(
        "election_kube_events_total",
        "Kubernetes Events posted.",
        &m.kube_events,
    )
    .counter(
        "election_kube_event_errors_total",
        "Kubernetes Events that could not be posted.",
        &m.kube_event_errors,
    )
    .counter(
        "election_kube_stale_labels_corrected_total",
        "Stale sibling leader labels relabelled stale.",
        &m.kube_stale_corrected,
    )
    .counter(
        "election_kube_lease_writes_total",
        "Writes of the Lease mirror.",
        &m.kube_lease_writes,
    )
    .counter(
        "election_kube_lease_errors_total",
        "Failed writes of the Lease mirror.",
        &m.kube_lease_errors,
    );
    e.family(
        "election_zk_session_events_total",
        "counter",
        "ZooKeeper session state changes by state.",
    );
    for (state, n) in m.zk_session_events.lock().unwrap().iter() {
        e.sample(
            "election_zk_session_events_total",
            &format!("{{state=\"{state}\"}}"),
            n,
        );
    }
    let since = b
        .since_last_write()
        .map(|d| format!("{:.3}", d.as_secs_f64()));
    e.family(
        "election_seconds_since_last_write",
        "gauge",
        "Seconds since this replica last wrote a file (NaN if never).",
    )
    .sample(
        "election_seconds_since_last_write",
        "",
        since.as_deref().unwrap_or("NaN"),
    );
    e.family(
        "election_fencing_token",
        "gauge",
        "Fencing token of the current leadership (0 when not leading).",
    )
    .sample("election_fencing_token", "", s.token.unwrap_or(0));
    e.0
}

#[derive(Debug, Deserialize)]
struct ReleaseQuery {
    timeout_ms: Option<u64>,
}

async fn release(State(ctx): State<Context>, Query(q): Query<ReleaseQuery>) -> Response {
    let bound = Duration::from_millis(q.timeout_ms.unwrap_or(10_000).clamp(100, 120_000));
    info!("release requested through the admin listener");
    let mut rx = ctx.board.subscribe();
    ctx.stop(StopRequest::Release);
    let done = tokio::time::timeout(bound, rx.wait_for(|s| s.release_done)).await;
    let released = done
        .as_ref()
        .is_ok_and(|r| r.as_ref().is_ok_and(|s| s.released));
    match done {
        Ok(Ok(_)) if released => (StatusCode::OK, "released\n").into_response(),
        Ok(Ok(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "left the election, but ZooKeeper did not acknowledge the session close: \
             the node stays until the session expires\n",
        )
            .into_response(),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("not released within {bound:?}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ipv6_any_address_is_bound_dual_stack_whatever_the_host_default() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_unspecified(), "{addr}");
        if addr.is_ipv6() {
            assert!(!socket2::SockRef::from(&listener).only_v6().unwrap());
        }
    }

    #[tokio::test]
    async fn an_ipv4_address_is_bound_as_given() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().ip(),
            std::net::Ipv4Addr::LOCALHOST
        );
    }
}
