//! The counters and gauges served on `/metrics`: one `prometheus-client`
//! [`Registry`] per daemon, built once in [`Metrics::new`], encoded on each
//! scrape by [`Metrics::encode`].
//!
//! Counters are bumped where things happen (`published.metrics.files_written.inc()`).
//! Gauges that describe the present (`election_state`, `election_is_leader`,
//! `election_seconds_since_last_write`, `election_fencing_token`) are set
//! from a [`Now`] just before encoding, so a scrape never shows a state the
//! daemon has already left.
//!
//! Series names, label names and values, HELP texts and TYPEs are an
//! interface: the chart's PrometheusRule and Grafana dashboard query them.
//! The crate appends `_total` to counter names and a `.` to help texts:
//! counters are written here with their full series name and registered
//! through [`counter`], which strips the suffix, so that the names in this
//! file are the names Prometheus sees (the chart's tests read them here).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::names::StateName;

/// The `Content-Type` of what [`Metrics::encode`] writes.
///
/// The Prometheus text format 0.0.4, whatever the scraper's `Accept` header
/// says: every Prometheus version, `promtool` and other scrapers read it,
/// and a Prometheus that prefers OpenMetrics falls back to the format the
/// answer's `Content-Type` names. OpenMetrics would add nothing we use (no
/// exemplars, units or created timestamps), and serving only one format
/// keeps `/metrics` byte-compatible with what it was before.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl EncodeLabelValue for StateName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Buckets of `election_takeover_seconds`: a handover takes milliseconds
/// (the first file is written at once), a takeover after a disk or
/// ZooKeeper hiccup seconds, up to a few write retries.
const TAKEOVER_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
];

/// `{from, to}` of `election_transitions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransitionLabels {
    /// State left.
    pub from: StateName,
    /// State entered.
    pub to: StateName,
}

/// `{state}` of `election_state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: StateName,
}

/// `{state}` of `election_zk_session_events_total`: a ZooKeeper session
/// state as the client names it (`SyncConnected`, `Disconnected`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SessionLabels {
    /// Session state.
    pub state: String,
}

/// `{version}` of `election_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// What the scrape-time gauges show: read from the published status by the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// Current state.
    pub state: StateName,
    /// Fencing token while leading.
    pub token: Option<u64>,
    /// Time since the last successful file write, if any.
    pub since_last_write: Option<Duration>,
}

/// Counters and gauges exposed on `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// One scrape at a time sets the gauges and encodes.
    scrape: Mutex<()>,
    state: Family<StateLabels, Gauge>,
    is_leader: Gauge,
    seconds_since_last_write: Gauge<f64, AtomicU64>,
    fencing_token: Gauge<u64, AtomicU64>,
    /// Starts of the leader's command (`election run -- CMD`).
    pub child_starts: Counter,
    /// Ends of the leader's command, whatever ended it.
    pub child_exits: Counter,
    /// How long the last stop of the command took (SIGTERM to exit).
    pub child_last_stop_seconds: Gauge<f64, AtomicU64>,
    /// Transitions by (from, to).
    pub transitions: Family<TransitionLabels, Counter>,
    /// Times this replica became leader.
    pub leadership_acquisitions: Counter,
    /// Leader files written.
    pub files_written: Counter,
    /// Failed leader file writes.
    pub write_errors: Counter,
    /// Writes skipped because leadership could not be confirmed.
    pub writes_fenced: Counter,
    /// Leader files deleted by retention.
    pub files_pruned: Counter,
    /// Failed retention deletions or listings.
    pub prune_errors: Counter,
    /// Connection attempts made in Init.
    pub zk_connect_attempts: Counter,
    /// Successful Pod patches.
    pub kube_patches: Counter,
    /// Failed Pod patches.
    pub kube_patch_errors: Counter,
    /// Kubernetes Events posted.
    pub kube_events: Counter,
    /// Kubernetes Events that could not be posted.
    pub kube_event_errors: Counter,
    /// Stale sibling leader labels corrected.
    pub kube_stale_corrected: Counter,
    /// Lease mirror writes.
    pub kube_lease_writes: Counter,
    /// Failed Lease mirror writes.
    pub kube_lease_errors: Counter,
    /// Own Pod labels sent again because the Pod was not labelled leader.
    pub kube_label_resends: Counter,
    /// From entering Leader to the first committed file, seconds.
    pub takeover_seconds: Histogram,
    /// ZooKeeper session state changes seen, by state.
    pub zk_session_events: Family<SessionLabels, Counter>,
    /// Log lines dropped because stderr stalled: caught up at each scrape
    /// with the log writer's own count ([`crate::telemetry::dropped_lines`]).
    log_lines_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered, all at zero; the build info set.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            state: Family::default(),
            is_leader: Gauge::default(),
            seconds_since_last_write: Gauge::default(),
            fencing_token: Gauge::default(),
            child_starts: Counter::default(),
            child_exits: Counter::default(),
            child_last_stop_seconds: Gauge::default(),
            transitions: Family::default(),
            leadership_acquisitions: Counter::default(),
            files_written: Counter::default(),
            write_errors: Counter::default(),
            writes_fenced: Counter::default(),
            files_pruned: Counter::default(),
            prune_errors: Counter::default(),
            zk_connect_attempts: Counter::default(),
            kube_patches: Counter::default(),
            kube_patch_errors: Counter::default(),
            kube_events: Counter::default(),
            kube_event_errors: Counter::default(),
            kube_stale_corrected: Counter::default(),
            kube_lease_writes: Counter::default(),
            kube_lease_errors: Counter::default(),
            kube_label_resends: Counter::default(),
            takeover_seconds: Histogram::new(TAKEOVER_BUCKETS),
            zk_session_events: Family::default(),
            log_lines_dropped: Counter::default(),
        };
        m.register()
    }

    /// Registers every family, in the order they are served.
    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("election_build_info", "Build information", build_info);
        r.register(
            "election_state",
            "Current state of this replica (1 for the current state)",
            self.state.clone(),
        );
        r.register(
            "election_is_leader",
            "1 while this replica leads",
            self.is_leader.clone(),
        );
        counter(
            r,
            "election_transitions_total",
            "State transitions by source and target state",
            self.transitions.clone(),
        );
        for (name, help, c) in [
            (
                "election_leadership_acquisitions_total",
                "Times this replica became leader",
                &self.leadership_acquisitions,
            ),
            (
                "election_files_written_total",
                "Leader files written",
                &self.files_written,
            ),
            (
                "election_write_errors_total",
                "Failed leader file writes",
                &self.write_errors,
            ),
            (
                "election_writes_fenced_total",
                "Writes skipped because leadership was not confirmed",
                &self.writes_fenced,
            ),
            (
                "election_files_pruned_total",
                "Leader files deleted by retention",
                &self.files_pruned,
            ),
            (
                "election_prune_errors_total",
                "Failed retention runs",
                &self.prune_errors,
            ),
            (
                "election_zk_connect_attempts_total",
                "ZooKeeper session establishment attempts",
                &self.zk_connect_attempts,
            ),
            (
                "election_kube_patches_total",
                "Successful patches of this Pod",
                &self.kube_patches,
            ),
            (
                "election_kube_patch_errors_total",
                "Failed patches of this Pod",
                &self.kube_patch_errors,
            ),
            (
                "election_kube_events_total",
                "Kubernetes Events posted",
                &self.kube_events,
            ),
            (
                "election_kube_event_errors_total",
                "Kubernetes Events that could not be posted",
                &self.kube_event_errors,
            ),
            (
                "election_kube_stale_labels_corrected_total",
                "Stale sibling leader labels relabelled stale",
                &self.kube_stale_corrected,
            ),
            (
                "election_kube_lease_writes_total",
                "Writes of the Lease mirror",
                &self.kube_lease_writes,
            ),
            (
                "election_kube_lease_errors_total",
                "Failed writes of the Lease mirror",
                &self.kube_lease_errors,
            ),
            (
                "election_kube_label_resends_total",
                "Own Pod labels sent again while leading because the Pod was not labelled leader",
                &self.kube_label_resends,
            ),
            (
                "election_child_starts_total",
                "Starts of the command run while leading",
                &self.child_starts,
            ),
            (
                "election_child_exits_total",
                "Ends of the command run while leading (exited, stopped or killed)",
                &self.child_exits,
            ),
            (
                "election_log_lines_dropped_total",
                "Log lines dropped because stderr did not take them (the daemon never waits for its log)",
                &self.log_lines_dropped,
            ),
        ] {
            counter(r, name, help, c.clone());
        }
        counter(
            r,
            "election_zk_session_events_total",
            "ZooKeeper session state changes by state",
            self.zk_session_events.clone(),
        );
        r.register(
            "election_takeover_seconds",
            "From this replica entering Leader to its first committed file, in seconds",
            self.takeover_seconds.clone(),
        );
        r.register(
            "election_seconds_since_last_write",
            "Seconds since this replica last wrote a file (NaN if never)",
            self.seconds_since_last_write.clone(),
        );
        r.register(
            "election_child_last_stop_seconds",
            "Seconds the last stop of the command took, from SIGTERM to its exit",
            self.child_last_stop_seconds.clone(),
        );
        r.register(
            "election_fencing_token",
            "Fencing token of the current leadership (0 when not leading)",
            self.fencing_token.clone(),
        );
        self
    }

    /// Counts a transition, and a leadership when it enters Leader.
    pub fn transition(&self, from: StateName, to: StateName) {
        self.transitions
            .get_or_create(&TransitionLabels { from, to })
            .inc();
        if to == StateName::Leader {
            self.leadership_acquisitions.inc();
        }
    }

    /// Counts a ZooKeeper session state change.
    pub fn zk_event(&self, state: &str) {
        self.zk_session_events
            .get_or_create(&SessionLabels {
                state: state.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition (see [`CONTENT_TYPE`]), with the
    /// scrape-time gauges set from `now`.
    pub fn encode(&self, now: &Now) -> String {
        // Concurrent scrapes must not mix their gauges (two states at 1).
        let _one_scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        for state in StateName::ALL {
            self.state
                .get_or_create(&StateLabels { state })
                .set(i64::from(now.state == state));
        }
        self.is_leader
            .set(i64::from(now.state == StateName::Leader));
        self.seconds_since_last_write.set(
            now.since_last_write
                .map_or(f64::NAN, |d| d.as_millis() as f64 / 1000.0),
        );
        self.fencing_token.set(now.token.unwrap_or(0));
        catch_up(&self.log_lines_dropped, crate::telemetry::dropped_lines());
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Raises `counter` to `total`, a count kept elsewhere (never lowers it).
fn catch_up(counter: &Counter, total: u64) {
    let behind = total.saturating_sub(counter.get());
    if behind > 0 {
        counter.inc_by(behind);
    }
}

/// Registers counter (or counter family) `name`, given with its `_total`
/// suffix, which the crate adds back when it encodes.
fn counter(
    r: &mut Registry,
    name: &'static str,
    help: &'static str,
    metric: impl prometheus_client::registry::Metric,
) {
    let family = name
        .strip_suffix("_total")
        .expect("counter names end in _total");
    r.register(family, help, metric);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Now {
        Now {
            state: StateName::Attempter,
            token: None,
            since_last_write: None,
        }
    }

    #[test]
    fn counters_keep_their_total_suffix_and_help_texts_their_single_period() {
        let text = Metrics::new().encode(&idle());
        for line in [
            "# HELP election_files_written_total Leader files written.\n",
            "# TYPE election_files_written_total counter\n",
            "election_files_written_total 0\n",
            "# HELP election_build_info Build information.\n",
            "# TYPE election_build_info gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains(".."), "{text}");
    }

    #[test]
    fn a_count_kept_elsewhere_is_caught_up_and_never_lowered() {
        let c = Counter::default();
        catch_up(&c, 3);
        assert_eq!(c.get(), 3);
        catch_up(&c, 3);
        assert_eq!(c.get(), 3);
        catch_up(&c, 1);
        assert_eq!(c.get(), 3);
        catch_up(&c, 10);
        assert_eq!(c.get(), 10);
    }

    #[test]
    fn labelled_samples_read_as_before() {
        let m = Metrics::new();
        m.transition(StateName::Init, StateName::Attempter);
        m.transition(StateName::Attempter, StateName::Leader);
        m.zk_event("SyncConnected");
        let text = m.encode(&Now {
            state: StateName::Leader,
            token: Some(42),
            since_last_write: Some(Duration::from_millis(1500)),
        });
        for line in [
            "# TYPE election_transitions_total counter\n",
            "election_transitions_total{from=\"init\",to=\"attempter\"} 1\n",
            "election_transitions_total{from=\"attempter\",to=\"leader\"} 1\n",
            "election_leadership_acquisitions_total 1\n",
            "# TYPE election_zk_session_events_total counter\n",
            "election_zk_session_events_total{state=\"SyncConnected\"} 1\n",
            &format!(
                "election_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            ),
            "election_state{state=\"leader\"} 1\n",
            "election_state{state=\"init\"} 0\n",
            "election_is_leader 1\n",
            "election_fencing_token 42\n",
            "election_seconds_since_last_write 1.5\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }

    #[test]
    fn the_takeover_histogram_serves_buckets_sum_and_count() {
        let m = Metrics::new();
        m.takeover_seconds.observe(0.012);
        let text = m.encode(&idle());
        for line in [
            "# HELP election_takeover_seconds From this replica entering Leader to its first committed file, in seconds.\n",
            "# TYPE election_takeover_seconds histogram\n",
            "election_takeover_seconds_bucket{le=\"0.005\"} 0\n",
            "election_takeover_seconds_bucket{le=\"0.025\"} 1\n",
            "election_takeover_seconds_bucket{le=\"30\"} 1\n",
            "election_takeover_seconds_bucket{le=\"+Inf\"} 1\n",
            "election_takeover_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        // The series the dashboard queries.
        for series in [
            "election_takeover_seconds_bucket",
            "election_takeover_seconds_sum",
            "election_takeover_seconds_count",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }

    #[test]
    fn gauges_follow_the_latest_scrape() {
        let m = Metrics::new();
        m.encode(&Now {
            state: StateName::Leader,
            token: Some(7),
            since_last_write: Some(Duration::ZERO),
        });
        let text = m.encode(&idle());
        for line in [
            "election_state{state=\"leader\"} 0\n",
            "election_state{state=\"attempter\"} 1\n",
            "election_is_leader 0\n",
            "election_fencing_token 0\n",
            "election_seconds_since_last_write NaN\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }
}
