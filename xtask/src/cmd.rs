//! Running the project's commands: from the repository root, each echoed
//! before it runs, a failure reported with the command that failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The Go toolchain every Go build of the project uses: the one line of
/// hack/tools/GOTOOLCHAIN, which build-go-tools.sh exports too; set here as
/// well so that no script the xtask starts can build with another.
pub fn gotoolchain() -> &'static str {
    include_str!("../../hack/tools/GOTOOLCHAIN").trim()
}

/// The repository root (the parent of xtask/).
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask/ has a parent")
            .to_path_buf()
    })
}

/// `cargo`, the one that runs this xtask, in the repository root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// `bash scripts/<name>` in the repository root.
pub fn script(name: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(format!("scripts/{name}"))
        .current_dir(root())
        .env("GOTOOLCHAIN", gotoolchain());
    cmd
}

/// Runs a command to completion; an error when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Does the command succeed? Its output is discarded: a probe, not a step.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One stage of a task, framed by a header and its duration.
pub fn stage(name: &str, body: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n== xtask: {name}");
    let t0 = Instant::now();
    body().with_context(|| format!("stage `{name}`"))?;
    eprintln!("== xtask: {name}: ok in {}s", t0.elapsed().as_secs());
    Ok(())
}

/// Is `program` an executable file on PATH?
pub fn have(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Are we root? (The fault-injection tests and apt need it.)
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn show(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter(|(k, _)| *k != "GOTOOLCHAIN")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)));
    // `cargo`, not the toolchain path of $CARGO; paths in the repository
    // relative to its root.
    let program = Path::new(cmd.get_program());
    let program = if std::env::var_os("CARGO").is_some_and(|c| c == program) {
        "cargo".into()
    } else {
        program
            .strip_prefix(root())
            .unwrap_or(program)
            .to_string_lossy()
    };
    let args = cmd.get_args().map(|a| a.to_string_lossy());
    envs.chain(std::iter::once(program).chain(args).map(|w| w.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
