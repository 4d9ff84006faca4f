//! `election` command line: parse, set up logging, run, map the outcome to
//! an exit code (0 after a requested stop, 1 on failure, 2 on bad input).

use std::process::ExitCode;

use clap::Parser;
use election::cmd::{release, rollout, run, status, verify};
use election::config::{Cli, Command, LogFormat};
use election::telemetry;

/// Threads of the blocking pool (started on demand). Its users, each
/// holding at most one thread even when it hangs: Init's file-dir check (a
/// hung one is waited for again, never started twice), the leader's write
/// (no new one while one hangs), retention (one pass at a time) and the
/// claim's read of file-dir. Twice that leaves room for what outlives its
/// state: a write abandoned in a hung rename, a claim's read that timed out.
const BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The command's watchdog: no logging, no runtime, one thread.
    let cli = match cli.command {
        Command::Supervise(args) => return election::job::supervise::run(args),
        command => Cli { command },
    };
    let format = match &cli.command {
        Command::Run(args) => args.log_format,
        Command::Rollout(args) => args.log_format,
        _ => LogFormat::Text,
    };
    // The client library logs every connection at info; keep it for warnings.
    let default_filter = match &cli.command {
        Command::Run(_) => "info,zookeeper_client=warn",
        // Each step of a rollout is a line of its hook's log.
        Command::Rollout(_) => "info",
        _ => "warn",
    };
    // Kept to the end of main: dropping it flushes the queued log lines.
    let _log = telemetry::init(format, default_filter);
    // One thread runs the whole daemon: every task is I/O bound, and file
    // writes go to the blocking pool. It keeps the idle footprint small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Release(args) => release::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Verify(args) => verify_cmd(args),
            Command::Rollout(args) => rollout::run(args).await,
            // Handled above, before the runtime starts.
            Command::Supervise(_) => Ok(ExitCode::FAILURE),
        }
    });
    // A blocking thread stuck in a hung file system call (a leader's
    // abandoned write, see states::leader) must not hold the exit: dropping
    // the runtime would wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn verify_cmd(args: verify::VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify::check(&args.file_dir, args.max_gap)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", verify::render_text(&args.file_dir, &report));
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
