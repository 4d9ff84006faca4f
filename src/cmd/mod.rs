//! The subcommands: `run` (the daemon), `status` (the election queue as
//! ZooKeeper sees it), `verify` (check a file-dir), `release` (ask a running
//! daemon to step down, the preStop hook), `rollout` (restart an election
//! StatefulSet with one leader change).

pub mod release;
pub mod rollout;
pub mod run;
pub mod status;
pub mod verify;
