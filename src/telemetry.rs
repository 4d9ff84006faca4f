//! Logging setup: one place, `RUST_LOG` filter (default `info`, with the ZooKeeper client library at `warn`), text or JSON.
//!
//! Logging never blocks the daemon: lines go through a bounded queue
//! ([`QUEUED_LINES`]) to a writer thread of their own, which writes them to
//! stderr. When stderr stalls (a full pipe nobody reads, a log shipper
//! stuck, Docker's blocking log mode) the queue fills and further lines are
//! dropped and counted ([`dropped_lines`], served as
//! `election_log_lines_dropped_total`) instead of stopping the state
//! machine, `/healthz` and the signal handler. See docs/design.md.
//!
//! The filter is a [`Targets`] list, `level` or `target=level` items joined
//! by commas (`election=debug,info`): the part of the `RUST_LOG` syntax
//! that names targets. Span and field directives (`target[span]=level`) are
//! not supported; `EnvFilter`, which parses them, carries regex code that
//! the daemon would keep resident for nothing.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::flags::LogFormat;

/// Lines waiting for the writer thread at most; more are dropped. Far
/// more than the daemon logs in a burst (a transition logs a few), and
/// about 100 KB at worst.
pub const QUEUED_LINES: usize = 256;

/// Counts the lines dropped because the queue was full.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The writer thread of the log: keep it until the process exits.
/// Dropping it writes what is still queued, bounded (about 1.1 s at most,
/// the crate's own bound, when stderr does not take it).
#[must_use = "dropping it stops logging"]
pub struct Guard(#[allow(dead_code)] WorkerGuard);

/// Installs the global subscriber. Logs go to stderr, never blocking the
/// caller (see the module doc).
pub fn init(format: LogFormat, default_filter: &str) -> Guard {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        // Colours only for people: never into a pipe or a log collector.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.with_target(false).finish().with(filter).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(filter)
            .try_init(),
    };
    Guard(guard)
}

/// Log lines dropped so far because stderr did not take them in time.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}

/// The filter `RUST_LOG` asks for, or `default_filter` when it is unset,
/// empty or not a list of `target=level` items (said on stderr: logging is
/// not up yet).
fn filter(rust_log: Option<&str>, default_filter: &str) -> Targets {
    let default = || default_filter.parse().unwrap_or_default();
    match rust_log.map(str::trim) {
        None | Some("") => default(),
        Some(value) => {
            // Stray commas (`info,`) are no directive: skip them.
            let directives: Vec<&str> = (value.split(','))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect();
            directives.join(",").parse().unwrap_or_else(|e| {
                eprintln!("warning: ignoring RUST_LOG={value:?} ({e}); using {default_filter:?}");
                default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::filter;

    const DEFAULT: &str = "info,zookeeper_client=warn";

    #[test]
    fn unset_or_empty_rust_log_gives_the_default() {
        for value in [None, Some(""), Some("  ")] {
            let f = filter(value, DEFAULT);
            assert!(f.would_enable("election::machine", &Level::INFO));
            assert!(!f.would_enable("zookeeper_client::session", &Level::INFO));
            assert!(f.would_enable("zookeeper_client::session", &Level::WARN));
        }
    }

    #[test]
    fn rust_log_targets_and_levels_are_honoured() {
        let f = filter(Some("election=debug,warn"), DEFAULT);
        assert!(f.would_enable("election::states::leader", &Level::DEBUG));
        assert!(!f.would_enable("kube_client::client", &Level::INFO));
        assert!(f.would_enable("kube_client::client", &Level::WARN));
    }

    #[test]
    fn an_unparsable_rust_log_falls_back_to_the_default() {
        let f = filter(Some("election[span{x=1}]=debug"), DEFAULT);
        assert!(f.would_enable("election::machine", &Level::INFO));
        assert!(!f.would_enable("election::machine", &Level::DEBUG));
    }
}
