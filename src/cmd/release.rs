//! `election release`: the preStop hook's client.
//!
//! Sends `POST /release` to the daemon's loopback admin listener and waits
//! for its answer, which comes once the daemon has left the election and
//! closed its ZooKeeper session (or when its own bound passes).

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ReleaseArgs;

/// Runs `election release`.
pub async fn run(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let answer = tokio::time::timeout(args.timeout, post_release(&args))
        .await
        .with_context(|| format!("the daemon did not release within {:?}", args.timeout))??;
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}

async fn post_release(args: &ReleaseArgs) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(args.admin_addr).await.with_context(|| {
        format!(
            "cannot reach the daemon's admin listener at {}",
            args.admin_addr
        )
    })?;
    let request = format!(
        "POST /release?timeout_ms={} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        args.timeout.as_millis(),
        args.admin_addr
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status_line = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    if !status_line.contains(" 200 ") {
        bail!("the daemon answered `{status_line}`: {body}");
    }
    Ok(body)
}
