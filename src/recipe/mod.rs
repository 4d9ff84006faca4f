//! The ZooKeeper election recipe, read in one place: candidate naming,
//! the queue round (create, order, watch the predecessor), the claim of a
//! fencing token with the writer node, the lock-delay, and the confirmation
//! of leadership. States call it and decide; it returns ZooKeeper-level
//! facts, never a transition. See `docs/design.md` for the why.

pub mod candidate;
pub mod claim;
pub mod confirm;
pub mod round;

pub use candidate::{
    BadCandidateData, CANDIDATE_PREFIX, Candidate, CandidateData, Leadership, MAX_CANDIDATE_DATA,
    Standing, candidate_prefix, is_live_candidate, is_valid_node_id, order_candidates,
    parse_candidate, standing,
};
pub use claim::{
    BadFloor, ClaimError, FENCING_NODE, LockDelayError, WRITER_NODE, WriterData, choose_token,
    claim, claim_leadership, delete_writer_of, lock_delay, lock_delay_bound, parse_token_floor,
    read_token_floor,
};
pub use confirm::{Confirm, NodeWatch, confirm, watch_node};
pub use round::{Candidacy, Round, ensure_election_path, round};
