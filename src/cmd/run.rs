//! `election run`: wires signals, listeners and the Pod labeller around the
//! state machine, and turns its outcome into an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RunArgs;
use crate::http;
use crate::k8s::{labeller, ops};
use crate::machine::{self, Context, Outcome};

/// How long a daemon released through `election release` waits for the
/// SIGTERM that normally follows a preStop hook before exiting on its own.
const RELEASE_LINGER: Duration = Duration::from_secs(30);
/// Bound on publishing the final `stopping` label.
const LABEL_FLUSH: Duration = Duration::from_secs(2);
/// Bound on posting the last Event (`SteppedDown` or `Stopping`) after the label.
const EVENTS_FLUSH: Duration = Duration::from_millis(1000);

/// Runs the daemon until it is stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let ctx = Context::new(args, cancel.clone());
    let signalled = Arc::new(Notify::new());
    spawn_signal_handler(cancel.clone(), signalled.clone())?;

    let servers = http::start(&ctx)
        .await
        .context("cannot start HTTP listeners")?;
    let labeller = match (&ctx.cfg.pod_name, &ctx.cfg.pod_namespace) {
        (Some(name), Some(namespace)) => Some(labeller::Labeller::spawn(
            &ctx,
            name.clone(),
            namespace.clone(),
        )),
        _ => None,
    };

    // Events, stale-label correction, Lease mirror.
    let helpers = match (&ctx.cfg.pod_name, &ctx.cfg.pod_namespace) {
        (Some(name), Some(namespace)) => Some(ops::Helpers::spawn(
            &ctx,
            ops::PodRef {
                name: name.clone(),
                namespace: namespace.clone(),
                uid: ctx.cfg.pod_uid.clone(),
            },
        )),
        _ => None,
    };

    let outcome = machine::run(ctx.clone()).await;

    if let Some(labeller) = labeller {
        labeller.finish(LABEL_FLUSH).await;
    }
    if let Some(helpers) = helpers {
        helpers.finish(EVENTS_FLUSH).await;
    }
    if ctx
        .released_by_request
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // Released by the preStop hook: stay (idle, not leading) until the
        // SIGTERM that follows, so the hook does not see its container die.
        info!(linger = ?RELEASE_LINGER, "released; waiting for SIGTERM");
        // Keep /healthz green meanwhile: a released daemon is not wedged.
        let wait = async {
            let mut beat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = beat.tick() => ctx.board.beat(),
                    _ = signalled.notified() => return,
                }
            }
        };
        let _ = tokio::time::timeout(RELEASE_LINGER, wait).await;
    }
    servers.shutdown(Duration::from_millis(500)).await;
    Ok(match outcome {
        Outcome::Stopped => ExitCode::SUCCESS,
        Outcome::GaveUp => ExitCode::FAILURE,
    })
}

/// First SIGTERM/SIGINT cancels `cancel`; a second one exits at once (130).
fn spawn_signal_handler(cancel: CancellationToken, signalled: Arc<Notify>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::spawn(async move {
        let mut seen = 0u32;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen == 1 {
                info!(signal = name, "stop requested; releasing leadership");
                cancel.cancel();
                signalled.notify_one();
            } else {
                warn!(signal = name, "second signal: exiting at once");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
