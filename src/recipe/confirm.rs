//! The confirmation of leadership before each write: a `sync` (which a
//! server cut off from the quorum cannot answer) and a stat of our node,
//! pipelined, and what the answer proves. Also the watch on our node.

use std::time::Duration;

use zookeeper_client::WatchedEvent;

use super::candidate::is_live_candidate;
use crate::lease::Stamp;
use crate::zk::ZkSession;

/// What confirming leadership found.
#[derive(Debug)]
pub enum Confirm {
    /// Confirmed: the lease may be extended from when it was sent.
    Held,
    /// Our node is gone or not ours: leadership is lost.
    Lost(String),
    /// No trustworthy answer: not allowed to write now.
    Unknown(String),
}

/// The next event on our node.
pub type NodeWatch = std::pin::Pin<Box<dyn std::future::Future<Output = WatchedEvent> + Send>>;

/// Confirms through a quorum-synced read that `path` is still ours;
/// returns what it found and when the request was sent (the lease counts
/// from there).
pub async fn confirm(session: &ZkSession, path: &str, max_rtt: Duration) -> (Confirm, Stamp) {
    let client = session.client();
    let sent = Stamp::now();
    // Pipelined: the stat is answered only after the sync went through the
    // ZooKeeper leader, so a server cut off from the quorum cannot vouch for us.
    let sync = client.sync(path);
    let stat = client.check_stat(path);
    let answer = tokio::time::timeout(max_rtt, async { (sync.await, stat.await) }).await;
    let Ok((synced, stat)) = answer else {
        return (
            Confirm::Unknown(format!("no answer within {max_rtt:?}")),
            sent,
        );
    };
    let owner = stat.map(|s| s.map(|s| s.ephemeral_owner));
    let found = match classify(synced, owner, sent.elapsed(), max_rtt, session.id()) {
        Confirm::Lost(why) => Confirm::Lost(format!("{why}: {path}")),
        other => other,
    };
    (found, sent)
}

/// Watches our node `path` (bounded); `None` when it is gone or not ours.
pub async fn watch_node(
    session: &ZkSession,
    path: &str,
) -> Result<Option<NodeWatch>, zookeeper_client::Error> {
    let watched = session
        .bounded(session.client().check_and_watch_stat(path))
        .await?;
    Ok(match watched {
        (Some(stat), w) if is_live_candidate(stat.ephemeral_owner, session.id()) => {
            Some(Box::pin(w.changed()))
        }
        _ => None,
    })
}

/// What an answer to a confirmation (`sync`, then the owner of our node
/// from a `stat`: `None` when it does not exist) proves, given how long the
/// round trip took. Only a good answer within `max_rtt` holds leadership;
/// a node that is gone or not ours is lost however late we hear it (a
/// deleted node never comes back); anything else is unknown, in particular
/// a stat that says "ours" after a failed sync (the server may be cut off
/// from the quorum).
pub fn classify(
    synced: Result<(), zookeeper_client::Error>,
    owner: Result<Option<i64>, zookeeper_client::Error>,
    elapsed: Duration,
    max_rtt: Duration,
    sid: i64,
) -> Confirm {
    use zookeeper_client::Error::NoNode;
    match (synced, owner) {
        (Err(NoNode), _) | (_, Ok(None)) => Confirm::Lost("leader node lost".into()),
        (_, Ok(Some(owner))) if !is_live_candidate(owner, sid) => {
            Confirm::Lost("leader node is not ours".into())
        }
        (Err(e), _) => Confirm::Unknown(format!("sync failed: {e}")),
        (Ok(()), Err(e)) => Confirm::Unknown(format!("stat failed: {e}")),
        (Ok(()), Ok(Some(_))) if elapsed > max_rtt => Confirm::Unknown(format!(
            "the answer took {elapsed:?}, longer than {max_rtt:?}"
        )),
        (Ok(()), Ok(Some(_))) => Confirm::Held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: i64 = 0x1234;
    const RTT: Duration = Duration::from_millis(500);
    const FAST: Duration = Duration::from_millis(20);

    fn failed() -> zookeeper_client::Error {
        zookeeper_client::Error::ConnectionLoss
    }

    #[test]
    fn a_quick_good_answer_holds_leadership() {
        let c = classify(Ok(()), Ok(Some(SID)), FAST, RTT, SID);
        assert!(matches!(c, Confirm::Held), "{c:?}");
    }

    #[test]
    fn a_good_answer_slower_than_max_round_trip_proves_nothing() {
        let c = classify(Ok(()), Ok(Some(SID)), RTT + FAST, RTT, SID);
        assert!(matches!(c, Confirm::Unknown(_)), "{c:?}");
        let c = classify(Ok(()), Ok(Some(SID)), RTT, RTT, SID);
        assert!(
            matches!(c, Confirm::Held),
            "the bound itself still counts: {c:?}"
        );
    }

    #[test]
    fn a_failed_sync_is_unknown_even_when_the_stat_says_ours() {
        let c = classify(Err(failed()), Ok(Some(SID)), FAST, RTT, SID);
        assert!(matches!(c, Confirm::Unknown(_)), "{c:?}");
    }

    #[test]
    fn a_failed_stat_is_unknown() {
        let c = classify(Ok(()), Err(failed()), FAST, RTT, SID);
        assert!(matches!(c, Confirm::Unknown(_)), "{c:?}");
        let c = classify(Err(failed()), Err(failed()), FAST, RTT, SID);
        assert!(matches!(c, Confirm::Unknown(_)), "{c:?}");
    }

    #[test]
    fn a_node_gone_is_lost_however_late_the_answer() {
        for elapsed in [FAST, RTT * 3] {
            let c = classify(Ok(()), Ok(None), elapsed, RTT, SID);
            assert!(matches!(c, Confirm::Lost(_)), "{c:?}");
            let c = classify(
                Err(zookeeper_client::Error::NoNode),
                Err(failed()),
                elapsed,
                RTT,
                SID,
            );
            assert!(matches!(c, Confirm::Lost(_)), "{c:?}");
            let c = classify(Err(failed()), Ok(None), elapsed, RTT, SID);
            assert!(matches!(c, Confirm::Lost(_)), "{c:?}");
        }
    }

    #[test]
    fn a_node_owned_by_another_session_or_none_is_lost() {
        for owner in [SID + 1, 0] {
            let c = classify(Ok(()), Ok(Some(owner)), FAST, RTT, SID);
            assert!(matches!(c, Confirm::Lost(_)), "{owner}: {c:?}");
        }
        let c = classify(Err(failed()), Ok(Some(SID + 1)), FAST, RTT, SID);
        assert!(matches!(c, Confirm::Lost(_)), "{c:?}");
    }
}
