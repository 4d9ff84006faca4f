//! One module per state; each exposes `run(ctx, data) -> Step`.

pub mod attempter;
pub mod failover;
pub mod init;
pub mod leader;
pub mod stopping;
