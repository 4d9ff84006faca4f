//! Logging setup: one place, `RUST_LOG` filter (default `info`, with the ZooKeeper client library at `warn`), text or JSON.
//!
//! The filter is a [`Targets`] list, `level` or `target=level` items joined
//! by commas (`election=debug,info`): the part of the `RUST_LOG` syntax
//! that names targets. Span and field directives (`target[span]=level`) are
//! not supported; `EnvFilter`, which parses them, carries regex code that
//! the daemon would keep resident for nothing.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Installs the global subscriber. Logs go to stderr.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
