//! HTTP listeners: the public one (`--http-addr`: /healthz, /readyz,
//! /metrics, /status, /leader) and the loopback admin one (`--admin-addr`:
//! POST /release for the preStop hook).
//!
//! - `/healthz` (liveness) answers 200 while the daemon can make progress:
//!   its state machine loop keeps beating (every state wakes up at least
//!   once per leader-timeout, attempter-timeout, connect timeout or
//!   backoff), Init's file-dir check does not hang, and file-dir is on the
//!   device it was on at start. Any of these stuck longer than twice the
//!   longest of those waits (plus 5 s) answers 503, so the kubelet restarts
//!   the process ([`liveness`]). Leadership and ZooKeeper are not health
//!   conditions: a restart cannot bring ZooKeeper back.
//! - `/readyz` (readiness) answers 200 in Attempter and Leader, i.e. when the
//!   replica is a healthy candidate with a live session, 503 otherwise.
//! - `/leader` answers 200 with the fencing token only on the leader while
//!   its lease holds, 503 otherwise (for sidecars; see [`leader`]).
//!
//! `[::]` (the default `--http-addr`) is bound dual-stack whatever the
//! host's `net.ipv6.bindv6only`, so probes and scrapes work on IPv4-only,
//! IPv6-only and dual-stack clusters; see [`bind`].

use std::net::{Ipv4Addr, SocketAddr};
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

use crate::machine::{Context, StopRequest};
use crate::metrics;
use crate::names::StateName;

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
        .route("/leader", get(leader))
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

/// Whether the daemon can make progress without a restart: `Err` says
/// what has been stuck longer than `bound`, the state machine loop
/// (`quiet`: since its last beat), Init's file-dir check (`checking`:
/// running for) or file-dir's device (`refused`: on another device than at
/// start for).
pub fn liveness(
    quiet: Duration,
    checking: Option<Duration>,
    refused: Option<Duration>,
    bound: Duration,
) -> Result<(), String> {
    if quiet > bound {
        return Err(format!(
            "state machine silent for {quiet:?} (bound {bound:?})"
        ));
    }
    if let Some(d) = checking.filter(|d| *d > bound) {
        return Err(format!(
            "file-dir check running for {d:?} (bound {bound:?}): a hung mount?"
        ));
    }
    if let Some(d) = refused.filter(|d| *d > bound) {
        return Err(format!(
            "file-dir on another device than at start for {d:?} (bound {bound:?}): a restart pins the volume mounted now"
        ));
    }
    Ok(())
}

async fn healthz(State(ctx): State<Context>) -> Response {
    let verdict = liveness(
        ctx.published.since_heartbeat(),
        ctx.dir_check.running_for(),
        ctx.dir_check.refused_for(),
        liveness_bound(&ctx),
    );
    match verdict {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(ctx): State<Context>) -> Response {
    let status = ctx.published.status();
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

/// 200 with the fencing token (decimal, one line) only while this replica
/// leads with a valid lease ([`crate::published::PublishedStatus::confirmed_token`]): not
/// while it is suspended, nor once the lease of its last confirmation ran
/// out; 503 otherwise. For sidecars that poll (README, "Run your own
/// singleton"): unlike `run -- CMD`, polling cannot stop work in time.
async fn leader(State(ctx): State<Context>) -> Response {
    if let Some(token) = ctx.published.confirmed_token() {
        return (StatusCode::OK, format!("{token}\n")).into_response();
    }
    let s = ctx.published.status();
    let why = match s.state {
        StateName::Leader => "leader, leadership not confirmed now".to_owned(),
        state => state.to_string(),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not leading: {why}\n"),
    )
        .into_response()
}

async fn status(State(ctx): State<Context>) -> Response {
    let s = ctx.published.status();
    let mut value = serde_json::to_value(&s).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("ready".into(), s.is_ready().into());
        obj.insert(
            "confirmed".into(),
            ctx.published.confirmed_token().is_some().into(),
        );
        obj.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    }
    axum::Json(value).into_response()
}

async fn metrics(State(ctx): State<Context>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        render_metrics(&ctx),
    )
        .into_response()
}

/// Renders the Prometheus text exposition (see [`metrics::CONTENT_TYPE`]).
pub fn render_metrics(ctx: &Context) -> String {
    let b = &ctx.published;
    let s = b.status();
    b.metrics.encode(&metrics::Now {
        state: s.state,
        token: s.token,
        since_last_write: b.since_last_write(),
    })
}

#[derive(Debug, Deserialize)]
struct ReleaseQuery {
    timeout_ms: Option<u64>,
}

async fn release(State(ctx): State<Context>, Query(q): Query<ReleaseQuery>) -> Response {
    let bound = Duration::from_millis(q.timeout_ms.unwrap_or(10_000).clamp(100, 120_000));
    info!("release requested through the admin listener");
    let mut rx = ctx.published.subscribe();
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

    #[test]
    fn liveness_fails_only_for_what_is_stuck_longer_than_the_bound() {
        let s = Duration::from_secs;
        let bound = s(25);
        assert!(liveness(s(1), None, None, bound).is_ok());
        // A check or a refusal within the bound is not stuck yet.
        assert!(liveness(s(1), Some(s(25)), Some(s(25)), bound).is_ok());
        let silent = liveness(s(26), None, None, bound).unwrap_err();
        assert!(silent.contains("state machine silent"), "{silent}");
        let hung = liveness(s(1), Some(s(26)), None, bound).unwrap_err();
        assert!(hung.contains("file-dir check running"), "{hung}");
        let moved = liveness(s(1), None, Some(s(26)), bound).unwrap_err();
        assert!(moved.contains("another device"), "{moved}");
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
