//! The bounded names the daemon publishes: state names and transition
//! causes, each written once here with its string (log fields, metric
//! labels, `/status`, Pod labels and annotations, Event reasons). Low in
//! the module graph so that the machine, the published status and the metrics import
//! them downward.

use serde::Serialize;

/// An enum of unit variants, each with its published string: derives
/// `ALL` (declaration order), `as_str`, `Display` and `Serialize` from the
/// one list, so no copy has to be kept equal by hand.
macro_rules! names {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),*].len()] = [$($name::$variant),*];

            /// The published string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

names! {
    /// Name of a state, as used in logs, labels and metrics (the value of
    /// the `election-state` label).
    pub enum StateName {
        /// Checking resources and connecting.
        Init = "init",
        /// Competing for leadership.
        Attempter = "attempter",
        /// Leading and writing files.
        Leader = "leader",
        /// Repairing after a failure.
        Failover = "failover",
        /// Shutting down.
        Stopping = "stopping",
    }
}

names! {
    /// Why a transition happened. A bounded set, so that it can be a metric
    /// label, a Pod annotation and an Event reason; the free-text detail goes
    /// with it in [`Reason`]. Served in kebab-case.
    pub enum Cause {
        /// The daemon started (the status before the first transition).
        Start = "start",
        /// Init: file-dir, the ZooKeeper session and the election path are ready.
        Connected = "connected",
        /// Attempter: our node is first in the election queue.
        FirstInQueue = "first-in-queue",
        /// Leader: our node is gone or not ours any more, or the claim was refused.
        LeadershipLost = "leadership-lost",
        /// The ZooKeeper session expired, closed, failed authentication or stayed
        /// disconnected past the safety net.
        SessionLost = "session-lost",
        /// A ZooKeeper request failed or timed out.
        ZookeeperError = "zookeeper-error",
        /// file-dir cannot be checked, read or is not where it was at start.
        FileDirError = "file-dir-error",
        /// The leader reached max-write-failures.
        WriteFailures = "write-failures",
        /// The fencing token cannot be chosen (a garbage floor, tokens exhausted).
        FencingError = "fencing-error",
        /// The leader's command (`election run -- CMD`) ended or could not start.
        ChildExited = "child-exited",
        /// Failover: the backoff pause is over; Init retries.
        BackoffDone = "backoff-done",
        /// Failover: failover-give-up reached.
        GaveUp = "gave-up",
        /// SIGTERM or SIGINT.
        StopRequested = "stop-requested",
        /// `election release`.
        Released = "released",
    }
}

impl Cause {
    /// This cause, with what happened in words.
    pub fn because(self, detail: impl Into<String>) -> Reason {
        Reason {
            cause: self,
            detail: detail.into(),
        }
    }
}

/// A [`Cause`] and its detail (for logs, `/status` and Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The kind of cause.
    pub cause: Cause,
    /// What happened, in words.
    pub detail: String,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.cause, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_served_as_written_once() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        for c in Cause::ALL {
            assert_eq!(json(serde_json::to_value(c).unwrap()), c.as_str());
            assert_eq!(c.to_string(), c.as_str());
        }
        for s in StateName::ALL {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
        }
        assert_eq!(Cause::ALL.len(), 14);
        assert_eq!(
            StateName::ALL.map(StateName::as_str),
            ["init", "attempter", "leader", "failover", "stopping"]
        );
    }
}
