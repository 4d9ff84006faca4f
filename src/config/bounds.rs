//! Lower bounds of the duration flags: values below them can never work
//! (a round that cannot complete, a leader that only hammers ZooKeeper),
//! so they end with exit 2 at parse time, like any other bad value. Each
//! bound is said in the flag's `--help` ("At least ...") and in the README.

use std::time::Duration;

use crate::flags::{InvalidValue, parse_positive_duration};

/// `--leader-timeout`: each tick may confirm leadership (a `sync` through
/// the ZooKeeper leader and a `stat`) and writes a file with two fsyncs.
pub const MIN_LEADER_TIMEOUT: Bound = Bound {
    min: Duration::from_millis(100),
    why: "each tick writes a file with two fsyncs, under a lease it may first confirm with ZooKeeper",
};

/// `--attempter-timeout`: one round is three ZooKeeper requests (list,
/// create, watch), and the tick is a waiting candidate's heartbeat.
pub const MIN_ATTEMPTER_TIMEOUT: Bound = Bound {
    min: Duration::from_millis(100),
    why: "one election round is three ZooKeeper requests",
};

/// `--zk-session-timeout`: the lease is at most half of it and a confirmation
/// must come back within a quarter; the client pings every third.
/// ZooKeeper itself grants at least two ticks (4 s with tickTime 2000).
pub const MIN_ZK_SESSION_TIMEOUT: Bound = Bound {
    min: Duration::from_secs(1),
    why: "the leader's lease is at most half of it and a confirmation must return within a quarter",
};

/// `--zk-connect-timeout`: a TCP (and TLS) handshake and the session
/// handshake; it also bounds Init's file-dir check.
pub const MIN_ZK_CONNECT_TIMEOUT: Bound = Bound {
    min: Duration::from_millis(100),
    why: "a connection and a session handshake take several round trips",
};

/// `--failover-max-backoff`: the first backoff step is 100 ms; a smaller
/// cap would make every retry come sooner than that.
pub const MIN_FAILOVER_MAX_BACKOFF: Bound = Bound {
    min: Duration::from_millis(100),
    why: "the first backoff step is 100ms",
};

/// `election release --timeout`: the daemon waits at least this long for
/// its release anyway.
pub const MIN_RELEASE_TIMEOUT: Bound = Bound {
    min: Duration::from_millis(100),
    why: "the daemon waits at least this long for its release",
};

/// A lower bound and why it is there.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The least value accepted.
    pub min: Duration,
    /// Why less never works (said in the error).
    pub why: &'static str,
}

impl Bound {
    /// Parses a positive duration (see [`parse_positive_duration`]) of at
    /// least this bound.
    pub fn parse(self, s: &str) -> Result<Duration, InvalidValue> {
        let d = parse_positive_duration(s)?;
        if d < self.min {
            return Err(InvalidValue::TooShort {
                min: humantime::format_duration(self.min).to_string(),
                why: self.why,
            });
        }
        Ok(d)
    }

    /// A clap value parser for this bound.
    pub fn parser(
        self,
    ) -> impl Fn(&str) -> Result<Duration, InvalidValue> + Clone + Send + Sync + 'static {
        move |s: &str| self.parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_accepts_itself_and_refuses_less_saying_why() {
        let b = MIN_ZK_SESSION_TIMEOUT;
        assert_eq!(b.parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(b.parse("1s 1ms").unwrap(), Duration::from_millis(1001));
        let err = b.parse("999ms").unwrap_err();
        assert_eq!(
            err.to_string(),
            "must be at least 1s: the leader's lease is at most half of it and a confirmation must return within a quarter"
        );
        assert!(matches!(b.parse("0s"), Err(InvalidValue::Zero)));
        assert!(matches!(b.parse("5"), Err(InvalidValue::NoUnit(_))));
    }

    #[test]
    fn tiny_values_are_refused_by_every_bound() {
        for b in [
            MIN_LEADER_TIMEOUT,
            MIN_ATTEMPTER_TIMEOUT,
            MIN_ZK_SESSION_TIMEOUT,
            MIN_ZK_CONNECT_TIMEOUT,
            MIN_FAILOVER_MAX_BACKOFF,
            MIN_RELEASE_TIMEOUT,
        ] {
            for tiny in ["1ns", "1us", "99ms"] {
                assert!(
                    matches!(b.parse(tiny), Err(InvalidValue::TooShort { .. })),
                    "{tiny} {b:?}"
                );
            }
            assert!(
                b.parse(&humantime::format_duration(b.min).to_string())
                    .is_ok()
            );
        }
    }
}
