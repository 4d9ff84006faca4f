//! One round of the queue: list the election path once, clean up what
//! this session left (nodes of abandoned sessions, extra nodes of ours),
//! create our candidate node if it has none, and say whether we are first
//! or which predecessor to watch.
//!
//! Nodes that only look like candidates are not trusted blindly: a
//! predecessor (or a second node "of ours") whose `ephemeralOwner` is not
//! the session its name claims, for example a persistent node someone
//! created by hand, is ignored for the rest of the session instead of
//! blocking the queue forever. It costs one stat, and only in that case.

use std::collections::HashSet;

use tracing::{debug, info, warn};
use zookeeper_client::{CreateMode, Error as ZkErr};

use super::candidate::{
    CandidateData, Leadership, Standing, candidate_prefix, is_live_candidate, order_candidates,
    standing,
};
use super::claim::FENCING_NODE;
use crate::published::PublishedStatus;
use crate::zk::{self, ZkError, ZkSession, child_path};

/// What one round found.
pub enum Round {
    /// We are first.
    Lead(Leadership),
    /// Wait for this predecessor's node to change.
    Wait(zookeeper_client::OneshotWatcher, String),
    /// Something changed under us: look again at once.
    Again,
}

/// Who is running for leadership, and what it knows from earlier rounds.
pub struct Candidacy<'a> {
    /// The election path.
    pub root: &'a str,
    /// This replica's node id, written into its candidate node.
    pub node_id: &'a str,
    /// Sessions of this process given up without the server's word: their
    /// nodes are deleted.
    pub abandoned: &'a [i64],
    /// Nodes that only look like candidates (see the module doc), kept
    /// for the rest of the session.
    pub impostors: &'a mut HashSet<String>,
}

/// One look at the election.
/// Publishes who leads and where we queue on `published`.
pub async fn round(
    session: &ZkSession,
    me: Candidacy<'_>,
    published: &PublishedStatus,
) -> Result<Round, ZkError> {
    let Candidacy {
        root,
        node_id,
        abandoned,
        impostors,
    } = me;
    let client = session.client();
    let sid = session.id();
    let children = match client.list_children(root).await {
        Ok(c) => c,
        Err(ZkErr::NoNode) => {
            // The election path vanished (a wiped ensemble, an operator): recreate it.
            warn!(path = root, "election path missing; recreating it");
            ensure_election_path(session, root).await?;
            return Ok(Round::Again);
        }
        Err(e) => return Err(ZkError::request("list", root, e)),
    };
    let mut ordered = order_candidates(&children);
    ordered.retain(|c| !impostors.contains(&c.name));
    // Nodes of sessions this process gave up without an acknowledged close
    // would sit in the queue until the server expires them: remove them.
    if let Some(stale) = ordered.iter().find(|c| abandoned.contains(&c.session)) {
        let path = child_path(root, &stale.name);
        let stat = zk::stat(client, &path).await?;
        match stat {
            Some(stat) if is_live_candidate(stat.ephemeral_owner, stale.session) => {
                info!(node = %stale.name, "deleting the candidate node of a session this replica abandoned");
                match client.delete(&path, Some(stat.version)).await {
                    Ok(()) | Err(ZkErr::NoNode) => {}
                    Err(e) => return Err(ZkError::request("delete", &path, e)),
                }
            }
            Some(_) => {
                impostors.insert(stale.name.clone());
            }
            None => {}
        }
        return Ok(Round::Again);
    }
    let (standing, extra) = standing(&ordered, sid);
    if !extra.is_empty() {
        // Several nodes carry our session's name. Only those really owned by
        // this session count: an impostor that sorts first must not make
        // us delete our real node.
        let own = match &standing {
            Standing::First(c) | Standing::Behind { own: c, .. } => c.clone(),
            Standing::Absent => unreachable!("extra nodes imply one of ours"),
        };
        let mut real = Vec::new();
        for node in std::iter::once(own).chain(extra) {
            let path = child_path(root, &node.name);
            let stat = zk::stat(client, &path).await?;
            match stat {
                Some(stat) if is_live_candidate(stat.ephemeral_owner, sid) => real.push(node),
                Some(stat) => {
                    warn!(node = %node.name, owner = stat.ephemeral_owner, "ignoring a node that imitates this session");
                    impostors.insert(node.name);
                }
                None => {}
            }
        }
        // Keep the oldest real one; delete the rest (a create whose reply
        // was lost, an earlier round).
        for orphan in real.iter().skip(1) {
            warn!(node = %orphan.name, "deleting an extra candidate node of this session");
            let path = child_path(root, &orphan.name);
            match client.delete(&path, None).await {
                Ok(()) | Err(ZkErr::NoNode) => {}
                Err(e) => return Err(ZkError::request("delete", &path, e)),
            }
        }
        return Ok(Round::Again);
    }
    if let Some(first) = ordered.first() {
        let leader_id = if first.session == sid {
            Some(node_id.to_owned())
        } else {
            match client.get_data(&child_path(root, &first.name)).await {
                Ok((data, _)) => CandidateData::parse(&data).ok().map(|d| d.node_id),
                Err(_) => None,
            }
        };
        published.saw_leader(leader_id);
    }
    match standing {
        Standing::Absent => {
            let data = CandidateData {
                node_id: node_id.to_owned(),
                host: hostname(),
                pid: std::process::id(),
            };
            let body = serde_json::to_vec(&data).expect("candidate data serializes");
            let prefix = child_path(root, &candidate_prefix(sid));
            let options = CreateMode::EphemeralSequential.with_acls(session.acls());
            match client.create(&prefix, &body, &options).await {
                // The only place the session id the server uses shows: the
                // client keeps reporting the id it had before a reconnection
                // the server answered with a new one (see docs/design.md).
                Ok((stat, seq)) if stat.ephemeral_owner != sid => Err(ZkError::SessionReplaced {
                    path: format!("{prefix}{seq}"),
                    owner: stat.ephemeral_owner,
                    ours: sid,
                }),
                Ok((_, seq)) => {
                    info!(node = %format!("{prefix}{seq}"), "candidate node created");
                    Ok(Round::Again)
                }
                // The create may have landed: the next round finds it by name.
                Err(ZkErr::ConnectionLoss) => Ok(Round::Again),
                Err(e) => Err(ZkError::request("create", &prefix, e)),
            }
        }
        Standing::First(own) => {
            let path = child_path(root, &own.name);
            let stat = zk::stat(client, &path).await?;
            match stat {
                Some(stat) if is_live_candidate(stat.ephemeral_owner, sid) => {
                    Ok(Round::Lead(Leadership {
                        path,
                        czxid: stat.czxid,
                    }))
                }
                Some(stat) => {
                    // Named after our session but not ours: ignore it, and
                    // the next round creates a real node.
                    warn!(path = %path, owner = stat.ephemeral_owner, "ignoring a node that imitates this session");
                    impostors.insert(own.name);
                    Ok(Round::Again)
                }
                None => Ok(Round::Again),
            }
        }
        Standing::Behind { own, predecessor } => {
            let own_path = child_path(root, &own.name);
            published.queued(&own_path);
            let pred_path = child_path(root, &predecessor.name);
            let watched = client
                .check_and_watch_stat(&pred_path)
                .await
                .map_err(|e| ZkError::request("watch", &pred_path, e))?;
            match watched {
                (Some(stat), _)
                    if !is_live_candidate(stat.ephemeral_owner, predecessor.session) =>
                {
                    warn!(node = %pred_path, owner = stat.ephemeral_owner,
                        "ignoring a node that is not a live candidate of the session it names");
                    impostors.insert(predecessor.name);
                    Ok(Round::Again)
                }
                (Some(_), watcher) => {
                    debug!(predecessor = %pred_path, "waiting for predecessor");
                    Ok(Round::Wait(watcher, pred_path))
                }
                (None, _) => Ok(Round::Again),
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Makes sure the election path `root` exists; with credentials, it and
/// the fencing node are restricted to our ACL if found open to the world
/// (see [`ZkSession::ensure_path`]).
pub async fn ensure_election_path(session: &ZkSession, root: &str) -> Result<(), ZkError> {
    session.ensure_path(root, &[FENCING_NODE]).await
}
