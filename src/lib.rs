//! election: a leader-election daemon on Apache ZooKeeper.
//!
//! The binary parses flags ([`config`]) and runs a subcommand from [`cmd`];
//! the state machine lives in [`machine`] with one module per state in
//! [`states`]. [`published`] holds what the daemon publishes (the status
//! snapshot, the [`metrics`], heartbeat); [`http`] and [`k8s`] serve it.
//! [`names`] holds the published state names and causes, [`flags`] the flag
//! values the subcommands share, [`code_pages`] gives back the code pages only
//! startup needed.
//! Leader files follow the contract in [`files`] and are read back,
//! bounded and checked, by [`readback`]; [`zk`] holds the ZooKeeper sessions
//! and [`recipe`] the election recipe built on them.

pub mod cmd;
pub mod code_pages;
pub mod config;
pub mod files;
pub mod flags;
pub mod http;
pub mod job;
pub mod k8s;
pub mod lease;
pub mod machine;
pub mod metrics;
pub mod names;
pub mod published;
pub mod readback;
pub mod recipe;
pub mod state_dir;
pub mod states;
pub mod telemetry;
pub mod zk;
