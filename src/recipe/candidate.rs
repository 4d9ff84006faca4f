//! Candidate znodes: their names, their data, and the queue they form.
//!
//! Every candidate is an ephemeral sequential child of the election path
//! named `c_<session id, 16 hex>_<sequence>`. Putting the session id in the
//! name is what makes the recipe safe to retry: after a lost reply to a
//! create, or when a replica re-enters Attempter on the same session, it
//! finds its own node by name instead of creating a second one that would
//! sit in the queue forever (the orphan-node deadlock of naive recipes).
//! The candidate with the lowest sequence leads; every other one watches only
//! its predecessor, so a failover costs O(1) requests whatever the number
//! of replicas.

use serde::{Deserialize, Serialize};

/// The leadership won in a round: our candidate node, first in the queue.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Our candidate node.
    pub path: String,
    /// zxid that created it.
    pub czxid: i64,
}

/// Data stored in a candidate znode: who this candidate is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateData {
    /// The replica's node id.
    pub node_id: String,
    /// Host name of the replica.
    #[serde(default)]
    pub host: String,
    /// Process id.
    #[serde(default)]
    pub pid: u32,
}

/// The most candidate data read back: what a daemon writes is about 100
/// bytes, a node may hold 1 MB written by anyone (without ACLs).
pub const MAX_CANDIDATE_DATA: usize = 1024;

/// Why a candidate node's data is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCandidateData {
    /// More than any daemon writes.
    #[error("{0} bytes, more than candidate data ({MAX_CANDIDATE_DATA} at most)")]
    TooLarge(usize),
    /// Not the JSON a daemon writes.
    #[error("not candidate data: {0}")]
    NotJson(String),
    /// A node id no daemon accepts (see [`is_valid_node_id`]).
    #[error("not a valid node id")]
    BadNodeId,
}

impl CandidateData {
    /// Reads a candidate node's data. Anyone may have written it, and it
    /// ends up in `/status`, Pod annotations and `election status`: only
    /// data a daemon could have written is accepted (bounded, a node id
    /// that passes `--node-id`'s rules); a host name that would not is
    /// dropped.
    pub fn parse(data: &[u8]) -> Result<CandidateData, BadCandidateData> {
        if data.len() > MAX_CANDIDATE_DATA {
            return Err(BadCandidateData::TooLarge(data.len()));
        }
        let mut d: CandidateData =
            serde_json::from_slice(data).map_err(|e| BadCandidateData::NotJson(e.to_string()))?;
        if !is_valid_node_id(&d.node_id) {
            return Err(BadCandidateData::BadNodeId);
        }
        if !is_valid_node_id(&d.host) {
            d.host.clear();
        }
        Ok(d)
    }
}

/// Whether `s` is a node id: 1 to 253 characters of `A-Z a-z 0-9 - _ .`,
/// safe in logs, file contents, Kubernetes annotations and a terminal.
pub fn is_valid_node_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A candidate znode, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Child name under the election path.
    pub name: String,
    /// Sequence number assigned by ZooKeeper.
    pub seq: i64,
    /// Session that owns it (from the name).
    pub session: i64,
}

/// Prefix of candidate names.
pub const CANDIDATE_PREFIX: &str = "c_";

/// The name prefix for candidates of `session`; ZooKeeper appends the sequence.
pub fn candidate_prefix(session: i64) -> String {
    format!("{CANDIDATE_PREFIX}{:016x}_", session as u64)
}

/// Parses a child name; `None` for anything that is not a candidate.
pub fn parse_candidate(name: &str) -> Option<Candidate> {
    let body = name.strip_prefix(CANDIDATE_PREFIX)?;
    let (session, seq) = body.split_once('_')?;
    if session.len() != 16 || seq.len() < 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let session = u64::from_str_radix(session, 16).ok()? as i64;
    Some(Candidate {
        name: name.to_owned(),
        seq: seq.parse().ok()?,
        session,
    })
}

/// Candidates among `children` in election order (lowest sequence first).
/// Children that are not candidates are ignored.
pub fn order_candidates(children: &[String]) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = children.iter().filter_map(|c| parse_candidate(c)).collect();
    all.sort_by_key(|c| (c.seq, c.session));
    all
}

/// Where `session` stands in an ordered candidate list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No node of ours: create one.
    Absent,
    /// Ours is first: we lead.
    First(Candidate),
    /// Someone is ahead: watch `predecessor`.
    Behind {
        own: Candidate,
        predecessor: Candidate,
    },
}

/// Our standing, and any extra nodes of ours (to delete; only the oldest is kept).
/// `ordered` must already exclude impostors (nodes whose owner is not the
/// session their name claims).
pub fn standing(ordered: &[Candidate], session: i64) -> (Standing, Vec<Candidate>) {
    let mut ours = ordered
        .iter()
        .enumerate()
        .filter(|(_, c)| c.session == session);
    let Some((index, own)) = ours.next() else {
        return (Standing::Absent, Vec::new());
    };
    let extra = ours.map(|(_, c)| c.clone()).collect();
    let standing = if index == 0 {
        Standing::First(own.clone())
    } else {
        Standing::Behind {
            own: own.clone(),
            predecessor: ordered[index - 1].clone(),
        }
    };
    (standing, extra)
}

/// Whether a node that names `session` as its owner really is a live
/// candidate of it: ephemeral (a persistent node has owner 0, which is
/// never a session) and owned by that session.
pub fn is_live_candidate(ephemeral_owner: i64, session: i64) -> bool {
    ephemeral_owner != 0 && ephemeral_owner == session
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(session: i64, seq: i64) -> String {
        format!("{}{:010}", candidate_prefix(session), seq)
    }

    #[test]
    fn candidate_names_round_trip() {
        let name = cand(0x1234, 42);
        assert_eq!(name, "c_0000000000001234_0000000042");
        let c = parse_candidate(&name).unwrap();
        assert_eq!((c.session, c.seq), (0x1234, 42));
        let neg = cand(-5, 1);
        assert_eq!(parse_candidate(&neg).unwrap().session, -5);
    }

    #[test]
    fn garbage_children_are_ignored_when_ordering() {
        let children = vec![
            cand(2, 7),
            "garbage".to_owned(),
            "c_zz_0000000001".to_owned(),
            cand(1, 3),
            "_c_curator-lock-0000000000".to_owned(),
        ];
        let ordered = order_candidates(&children);
        assert_eq!(
            ordered.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![3, 7]
        );
    }

    #[test]
    fn the_lowest_sequence_leads_and_others_watch_their_predecessor() {
        let ordered = order_candidates(&[cand(1, 1), cand(2, 2), cand(3, 3)]);
        assert!(matches!(standing(&ordered, 1).0, Standing::First(_)));
        match standing(&ordered, 3).0 {
            Standing::Behind { predecessor, .. } => assert_eq!(predecessor.session, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(standing(&ordered, 9).0, Standing::Absent);
    }

    #[test]
    fn candidate_data_is_believed_only_when_a_daemon_could_have_written_it() {
        let good = br#"{"node_id":"election-1","host":"election-1","pid":7}"#;
        let d = CandidateData::parse(good).unwrap();
        assert_eq!(
            (d.node_id.as_str(), d.host.as_str(), d.pid),
            ("election-1", "election-1", 7)
        );
        let odd_host = br#"{"node_id":"n","host":"a\u001b[31mb"}"#;
        assert_eq!(CandidateData::parse(odd_host).unwrap().host, "");
        let huge = format!(r#"{{"node_id":"{}"}}"#, "x".repeat(1_000_000));
        assert_eq!(
            CandidateData::parse(huge.as_bytes()),
            Err(BadCandidateData::TooLarge(huge.len()))
        );
        for bad in [
            r#"{"node_id":"a\nb"}"#.to_string(),
            r#"{"node_id":"\u001b[2J"}"#.into(),
            r#"{"node_id":"a b"}"#.into(),
            r#"{"node_id":""}"#.into(),
            format!(r#"{{"node_id":"{}"}}"#, "x".repeat(254)),
        ] {
            assert_eq!(
                CandidateData::parse(bad.as_bytes()),
                Err(BadCandidateData::BadNodeId),
                "{bad}"
            );
        }
        for garbage in [&b""[..], b"\xff\xfe", b"[1]", b"{\"host\":\"h\"}"] {
            assert!(
                matches!(
                    CandidateData::parse(garbage),
                    Err(BadCandidateData::NotJson(_))
                ),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn persistent_nodes_are_never_live_candidates() {
        // A persistent node named after "session 0" has owner 0.
        assert!(!is_live_candidate(0, 0));
        assert!(is_live_candidate(0x77, 0x77));
        assert!(!is_live_candidate(0x77, 0x78));
    }

    #[test]
    fn a_second_node_of_the_same_session_is_reported_for_deletion() {
        // An orphan from an earlier Attempter round of the same session must
        // not sit in the queue: the oldest is kept, the rest deleted.
        let ordered = order_candidates(&[cand(1, 1), cand(2, 2), cand(1, 5)]);
        let (s, extra) = standing(&ordered, 1);
        assert!(matches!(s, Standing::First(c) if c.seq == 1));
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].seq, 5);
    }
}
