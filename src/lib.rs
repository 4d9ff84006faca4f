//! election: a leader-election daemon on Apache ZooKeeper.
//!
//! The binary parses flags ([`config`]) and calls [`app`]; the state machine
//! lives in [`machine`] with one module per state in [`states`]. Leader
//! files follow the contract in [`files`]; [`verify`] checks a file-dir.

pub mod app;
pub mod config;
pub mod files;
pub mod http;
pub mod kube;
pub mod kube_ops;
pub mod lease;
pub mod machine;
pub mod release;
pub mod states;
pub mod status;
pub mod status_cmd;
pub mod telemetry;
pub mod verify;
pub mod zk;
pub mod zk_access;
