//! The claim of a leadership. Its fencing token is the zxid that created
//! its node, raised above the highest token recorded in ZooKeeper (the
//! `fencing` node) and above any trusted token in file-dir. One multi-op
//! checks our node, records the new floor and creates the ephemeral
//! `writer` node. If another session still holds `writer`, its leader may
//! still be inside a write (its node was deleted by hand, say, rather than
//! released): the new leader waits until that node goes, or until that
//! leader's lease has certainly run out (Chubby's lock-delay,
//! [`lock_delay`]), before the first write. A leader that stopped cleanly
//! (closed session, or deleted `writer` after closing its commit gate)
//! costs its successor no wait.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};
use zookeeper_client::{Acls, CheckWriteError, Client, CreateMode};

use super::candidate::Leadership;
use crate::zk::{ZkSession, child_path};

/// Child of the election path that remembers the highest fencing token
/// issued so far (decimal text), so tokens keep increasing even when
/// file-dir is emptied. Not a candidate name, so elections ignore it.
pub const FENCING_NODE: &str = "fencing";

/// Ephemeral child of the election path held by the leader that may be
/// writing: created atomically with its claim of a fencing token, deleted
/// only after it can no longer commit a file (or with its session). A new
/// leader that finds it owned by another live session waits before its
/// first write (see `states::leader`). Not a candidate name.
pub const WRITER_NODE: &str = "writer";

/// The content of the fencing node is not a token.
#[derive(Debug, thiserror::Error)]
#[error("the fencing node holds {content:?}, not a decimal token; refusing to guess a floor")]
pub struct BadFloor {
    /// What it holds (lossy UTF-8, shortened).
    pub content: String,
}

/// Why claiming a leadership's token failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another session holds the writer node; `lease` is the longest lease
    /// its holder recorded there (`None`: unreadable, or an older version).
    #[error("the writer node is held by session {owner:#x}")]
    WriterHeld { owner: i64, lease: Option<Duration> },
    /// Our candidate node is gone, or the floor changed under us.
    #[error("claim rejected: {0}")]
    Rejected(zookeeper_client::Error),
    /// The request failed.
    #[error("claim failed: {0}")]
    Request(zookeeper_client::Error),
    /// The fencing node holds something else than a token.
    #[error(transparent)]
    BadFloor(#[from] BadFloor),
    /// The token floor could not be read.
    #[error("cannot read the token floor: {0}")]
    FloorUnread(zookeeper_client::Error),
    /// No token above `floor` and `on_disk` fits in a u64.
    #[error("fencing tokens exhausted (u64::MAX reached)")]
    Exhausted { floor: u64, on_disk: Option<u64> },
}

/// One attempt to claim `own`'s leadership: reads the token floor, chooses
/// the token ([`choose_token`], above `on_disk`, the newest trusted token
/// in file-dir) and claims it with the writer node, which records `lease`
/// ([`claim_leadership`]). Each request is bounded by a session timeout.
pub async fn claim(
    session: &ZkSession,
    root: &str,
    own: &Leadership,
    on_disk: Option<u64>,
    lease: Duration,
) -> Result<u64, ClaimError> {
    let (floor, version) = session
        .bounded(read_token_floor(session.client(), root))
        .await
        .map_err(ClaimError::FloorUnread)??;
    let czxid = u64::try_from(own.czxid).unwrap_or(0);
    let token =
        choose_token(czxid, floor, on_disk).ok_or(ClaimError::Exhausted { floor, on_disk })?;
    let claim = claim_leadership(
        session.client(),
        session.acls(),
        root,
        &own.path,
        token,
        lease,
        version,
    );
    tokio::time::timeout(session.timeout(), claim)
        .await
        .unwrap_or(Err(ClaimError::Request(
            zookeeper_client::Error::ConnectionLoss,
        )))?;
    Ok(token)
}

/// Why a lock-delay failed.
#[derive(Debug, thiserror::Error)]
pub enum LockDelayError {
    /// The writer node could not be watched.
    #[error("cannot watch the writer node: {0}")]
    Watch(zookeeper_client::Error),
    /// The stale writer node could not be deleted.
    #[error("cannot clear the stale writer node: {0}")]
    Clear(zookeeper_client::Error),
}

/// Chubby's lock-delay: waits until the writer node of session `owner`
/// goes, or until any lease its leader could hold (`holder_lease`, as it
/// recorded it; `own_bound` is ours, `tick` the servers' tickTime) has run
/// out, then clears it.
pub async fn lock_delay(
    session: &ZkSession,
    root: &str,
    owner: i64,
    holder_lease: Option<Duration>,
    own_bound: Duration,
    tick: Duration,
) -> Result<(), LockDelayError> {
    let bound = crate::lease::lock_delay(own_bound, holder_lease, tick);
    warn!(owner = %format!("{owner:#x}"), holder_lease = ?holder_lease, wait_at_most = ?bound,
        "the previous leader did not release the writer node; waiting before the first write");
    let path = child_path(root, WRITER_NODE);
    let started = Instant::now();
    let watched = session
        .bounded(session.client().check_and_watch_stat(&path))
        .await;
    let gone = match watched {
        Ok((None, _)) => return Ok(()),
        Ok((Some(_), watcher)) => async move { watcher.changed().await },
        Err(e) => return Err(LockDelayError::Watch(e)),
    };
    tokio::select! {
        _ = gone => {
            info!(waited = ?started.elapsed(), "the previous leader released the writer node");
            return Ok(());
        }
        _ = tokio::time::sleep(bound) => {}
    }
    warn!(waited = ?started.elapsed(), "the previous leader's lease is over; clearing its writer node");
    session
        .bounded(delete_writer_of(session.client(), root, owner))
        .await
        .map_err(LockDelayError::Clear)
}

/// max(czxid, floor + 1, newest on disk + 1); `None` when that would not
/// fit (fail closed: a saturated token would be shared by two leaderships).
pub fn choose_token(czxid: u64, floor: u64, newest_on_disk: Option<u64>) -> Option<u64> {
    let above_floor = floor.checked_add(1)?;
    let above_disk = match newest_on_disk {
        Some(t) => t.checked_add(1)?,
        None => 0,
    };
    Some(czxid.max(above_floor).max(above_disk))
}

/// Bound used by tests to wait out a lock-delay: the longest a successor
/// waits for a writer node that was not released.
pub fn lock_delay_bound(session_timeout: Duration, tick_time: Option<Duration>) -> Duration {
    let tick = crate::lease::assumed_tick_time(session_timeout, tick_time);
    let lease = crate::lease::Lease::new(session_timeout, tick);
    crate::lease::lock_delay(lease.bound(), Some(lease.bound()), tick)
}

/// Reads the token floor and the node's version (`None`: no node yet).
pub async fn read_token_floor(
    client: &Client,
    root: &str,
) -> Result<Result<(u64, Option<i32>), BadFloor>, zookeeper_client::Error> {
    match client.get_data(&child_path(root, FENCING_NODE)).await {
        Ok((data, stat)) => Ok(parse_token_floor(&data).map(|t| (t, Some(stat.version)))),
        Err(zookeeper_client::Error::NoNode) => Ok(Ok((0, None))),
        Err(e) => Err(e),
    }
}

/// Parses the content of the fencing node. Anything but a decimal token
/// is an error: reading garbage as 0 could let tokens go backwards.
pub fn parse_token_floor(data: &[u8]) -> Result<u64, BadFloor> {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| BadFloor {
            content: String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned(),
        })
}

/// What the writer node holds: the leadership's token and its lease
/// bound, which a successor that finds the node waits out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterData {
    /// The leadership's fencing token.
    pub token: u64,
    /// The holder's lease bound, in milliseconds.
    pub lease_ms: u64,
}

impl WriterData {
    /// The writer node's content for `token` and `lease`.
    pub fn encode(token: u64, lease: Duration) -> Vec<u8> {
        let data = WriterData {
            token,
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        };
        serde_json::to_vec(&data).unwrap_or_default()
    }

    /// The holder's lease bound, from the writer node's content; `None`
    /// for anything else (an older version wrote only the token).
    pub fn lease_of(data: &[u8]) -> Option<Duration> {
        serde_json::from_slice::<WriterData>(data)
            .ok()
            .map(|d| Duration::from_millis(d.lease_ms))
    }
}

/// Claims a leadership in one multi-op: checks that our candidate node
/// `own` still exists, raises the token floor to `token` (only if nobody
/// changed it since we read `version`) and creates the writer node, which
/// records `lease`, our lease bound.
pub async fn claim_leadership(
    client: &Client,
    acls: Acls<'_>,
    root: &str,
    own: &str,
    token: u64,
    lease: Duration,
    version: Option<i32>,
) -> Result<(), ClaimError> {
    let path = child_path(root, FENCING_NODE);
    let writer_path = child_path(root, WRITER_NODE);
    let data = token.to_string();
    let mut writer = client
        .new_check_writer(own, Some(0))
        .map_err(ClaimError::Request)?;
    match version {
        Some(v) => writer.add_set_data(&path, data.as_bytes(), Some(v)),
        None => writer.add_create(
            &path,
            data.as_bytes(),
            &CreateMode::Persistent.with_acls(acls),
        ),
    }
    .map_err(ClaimError::Request)?;
    writer
        .add_create(
            &writer_path,
            &WriterData::encode(token, lease),
            &CreateMode::Ephemeral.with_acls(acls),
        )
        .map_err(ClaimError::Request)?;
    match writer.commit().await {
        Ok(_) => Ok(()),
        Err(CheckWriteError::OperationFailed {
            index: 1,
            source: zookeeper_client::Error::NodeExists,
        }) => match client.get_data(&writer_path).await {
            Ok((data, stat)) => Err(ClaimError::WriterHeld {
                owner: stat.ephemeral_owner,
                lease: WriterData::lease_of(&data),
            }),
            // Gone in between: the caller tries again.
            Err(zookeeper_client::Error::NoNode) => Err(ClaimError::WriterHeld {
                owner: 0,
                lease: None,
            }),
            Err(e) => Err(ClaimError::Request(e)),
        },
        Err(CheckWriteError::RequestFailed { source }) => Err(ClaimError::Request(source)),
        Err(CheckWriteError::CheckFailed { source })
        | Err(CheckWriteError::OperationFailed { source, .. }) => Err(ClaimError::Rejected(source)),
    }
}

/// Deletes the writer node if session `owner` holds it: our own when a
/// leader steps down but keeps its session, or another session's whose
/// leadership is over (the caller waited out its lease). `Ok` also when
/// there is none, or when it changed hands meanwhile.
pub async fn delete_writer_of(
    client: &Client,
    root: &str,
    owner: i64,
) -> Result<(), zookeeper_client::Error> {
    let path = child_path(root, WRITER_NODE);
    match client.check_stat(&path).await? {
        Some(stat) if stat.ephemeral_owner == owner => {
            match client.delete(&path, Some(stat.version)).await {
                Ok(())
                | Err(zookeeper_client::Error::NoNode)
                | Err(zookeeper_client::Error::BadVersion) => Ok(()),
                Err(e) => Err(e),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::candidate::parse_candidate;

    #[test]
    fn the_fencing_node_is_not_a_candidate_and_garbage_is_refused() {
        assert_eq!(parse_candidate(FENCING_NODE), None);
        assert_eq!(parse_candidate(WRITER_NODE), None);
        assert_eq!(parse_token_floor(b"4294967321").unwrap(), 4294967321);
        assert!(parse_token_floor(b"\x00garbage").is_err());
        assert!(parse_token_floor(b"").is_err());
        assert!(parse_token_floor(b"-1").is_err());
    }

    #[test]
    fn the_writer_node_records_the_lease_and_older_contents_say_nothing() {
        let data = WriterData::encode(42, Duration::from_millis(2900));
        assert_eq!(
            WriterData::lease_of(&data),
            Some(Duration::from_millis(2900))
        );
        // What versions before the lease was recorded wrote: the token.
        assert_eq!(WriterData::lease_of(b"42"), None);
        assert_eq!(WriterData::lease_of(b"\x00garbage"), None);
    }

    #[test]
    fn tokens_follow_the_zxid_and_never_go_back() {
        assert_eq!(choose_token(500, 0, None), Some(500));
        assert_eq!(choose_token(500, 400, Some(100)), Some(500));
        // Ensemble wiped: zxids and the floor restarted below what is on disk.
        assert_eq!(choose_token(7, 0, Some(500)), Some(501));
        assert_eq!(choose_token(500, 0, Some(500)), Some(501));
        // file-dir emptied after earlier disk-derived tokens: the floor remembers.
        assert_eq!(choose_token(300, 501, None), Some(502));
    }

    #[test]
    fn exhausted_tokens_fail_closed() {
        assert_eq!(choose_token(5, u64::MAX, None), None);
        assert_eq!(choose_token(5, 0, Some(u64::MAX)), None);
        assert_eq!(choose_token(u64::MAX, 0, None), Some(u64::MAX));
    }

    #[test]
    fn the_lock_delay_outlasts_any_lease_of_the_previous_leader() {
        let s = Duration::from_secs(2);
        let tick = Duration::from_millis(200);
        assert!(lock_delay_bound(s, Some(tick)) > crate::lease::Lease::new(s, tick).bound());
        assert!(lock_delay_bound(s, Some(tick)) < s);
    }
}
