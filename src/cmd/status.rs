//! `election status`: who is in an election and who leads it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::config::StatusArgs;
use crate::recipe::{CandidateData, is_live_candidate, order_candidates};
use crate::zk::{ZkSession, child_path};

#[derive(Debug, Serialize)]
struct Row {
    position: usize,
    znode: String,
    session_id: String,
    node_id: Option<String>,
    leader: bool,
}

/// Runs `election status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let session = ZkSession::connect(
        &args.zk_servers,
        Duration::from_secs(4),
        args.zk_connect_timeout,
        &args.zk_security.security(),
    )
    .await?;
    let rows = read(&session, &args.zk_root).await;
    let _ = session.close(Duration::from_secs(1)).await;
    let rows = rows?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("{}: no candidates (no leader)", args.zk_root);
    } else {
        println!(
            "{:<4} {:<8} {:<20} {:<20} ZNODE",
            "POS", "ROLE", "NODE_ID", "SESSION"
        );
        for r in &rows {
            println!(
                "{:<4} {:<8} {:<20} {:<20} {}",
                r.position,
                if r.leader { "leader" } else { "waiting" },
                // `?`: unreadable, or not data a daemon writes.
                r.node_id.as_deref().unwrap_or("?"),
                r.session_id,
                r.znode
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn read(session: &ZkSession, root: &str) -> anyhow::Result<Vec<Row>> {
    let client = session.client();
    let children = match client.list_children(root).await {
        Ok(c) => c,
        Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {root}")),
    };
    let mut rows = Vec::new();
    for c in order_candidates(&children) {
        let path = child_path(root, &c.name);
        // The daemons ignore nodes that only look like candidates (not
        // ephemeral, or owned by another session than the name says): so
        // does this listing.
        let node_id = match client.get_data(&path).await {
            // Written by anyone without ACLs: only a sane node id is shown.
            Ok((data, stat)) if is_live_candidate(stat.ephemeral_owner, c.session) => {
                CandidateData::parse(&data).ok().map(|d| d.node_id)
            }
            Ok(_) | Err(zookeeper_client::Error::NoNode) => continue,
            Err(_) => None,
        };
        rows.push(Row {
            position: rows.len(),
            znode: path,
            session_id: format!("{:#x}", c.session as u64),
            node_id,
            leader: rows.is_empty(),
        });
    }
    Ok(rows)
}
