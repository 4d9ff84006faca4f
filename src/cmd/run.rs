//! `election run`: wires signals, listeners and the Pod labeller around the
//! state machine, and turns its outcome into an exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use crate::code_pages;
use crate::config::RunArgs;
use crate::http;
use crate::k8s::PodRef;
use crate::k8s::labeller;
use crate::k8s::tasks::KubeTasks;
use crate::machine::{Context, Outcome, StopRequest};
use crate::state_dir::StateDir;
use crate::states;

/// How long a daemon released through `election release` waits for the
/// SIGTERM that normally follows a preStop hook before exiting on its own.
const RELEASE_LINGER: Duration = Duration::from_secs(30);
/// Bound on publishing the final `stopping` label.
const LABEL_FLUSH: Duration = Duration::from_secs(2);
/// Bound on posting the last Event (`SteppedDown` or `Stopping`) after the label.
const EVENTS_FLUSH: Duration = Duration::from_millis(1000);

/// Runs the daemon until it is stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // The lock first: a second daemon on the same state dir must not
    // start at all (see `state_dir`).
    let state_dir = match &args.state_dir {
        Some(dir) => Some(StateDir::open(dir)?),
        None => None,
    };
    let mut ctx = Context::new(args);
    if let Some(state_dir) = state_dir {
        ctx = ctx.with_state_dir(state_dir);
    }
    let mut signals = Signals::install()?;
    tokio::spawn(code_pages::release_periodically());

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
    let kube_tasks = match (&ctx.cfg.pod_name, &ctx.cfg.pod_namespace, &labeller) {
        (Some(name), Some(namespace), Some(labeller)) => Some(KubeTasks::spawn(
            &ctx,
            PodRef {
                name: name.clone(),
                namespace: namespace.clone(),
                uid: ctx.cfg.pod_uid.clone(),
            },
            labeller.resend(),
        )),
        _ => None,
    };

    // The machine runs until it exits; the first signal asks it to stop
    // (the same path as a release request), a second one exits at once.
    let machine = states::run(ctx.clone());
    tokio::pin!(machine);
    let outcome = loop {
        tokio::select! {
            outcome = &mut machine => break outcome,
            signal = signals.next() => {
                info!(signal, "stop requested; releasing leadership");
                ctx.stop(StopRequest::Signal);
            }
        }
    };

    if let Some(labeller) = labeller {
        labeller.finish(LABEL_FLUSH).await;
    }
    if let Some(kube_tasks) = kube_tasks {
        kube_tasks.finish(EVENTS_FLUSH).await;
    }
    if outcome == Outcome::Released && !signals.seen() {
        // Released by the preStop hook: stay (idle, not leading) until the
        // SIGTERM that follows, so the hook does not see its container die.
        info!(linger = ?RELEASE_LINGER, "released; waiting for SIGTERM");
        // Keep /healthz green meanwhile: a released daemon is not wedged.
        let wait = async {
            let mut beat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = beat.tick() => ctx.published.beat(),
                    signal = signals.next() => {
                        info!(signal, "signal after release; exiting");
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(RELEASE_LINGER, wait).await;
    }
    servers.shutdown(Duration::from_millis(500)).await;
    Ok(match outcome {
        Outcome::Stopped | Outcome::Released => ExitCode::SUCCESS,
        Outcome::GaveUp => ExitCode::FAILURE,
    })
}

/// SIGTERM and SIGINT. The first one is handed to the caller; any further
/// one exits the process at once (130), whatever the daemon is doing.
struct Signals {
    term: Signal,
    int: Signal,
    seen: u32,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            seen: 0,
        })
    }

    /// Whether a signal arrived already.
    fn seen(&self) -> bool {
        self.seen > 0
    }

    /// The next signal's name (the first one only: a second one exits).
    async fn next(&mut self) -> &'static str {
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        self.seen += 1;
        if self.seen > 1 {
            warn!(signal = name, "second signal: exiting at once");
            std::process::exit(130);
        }
        name
    }
}
