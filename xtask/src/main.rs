//! The project's task menu: `cargo xtask <task>` (the alias is in
//! .cargo/config.toml). Each task is a thin entry over the project's
//! commands; the big ones stay shell scripts under scripts/, which users and
//! the tasks both run. `cargo xtask help` lists the tasks.

mod cmd;
mod tools;

use std::process::{Command, ExitCode};

use anyhow::{Result, bail};

use crate::cmd::{cargo, have, is_root, run, script, stage, succeeds};

const HELP: &str = "\
cargo xtask <task>: the project's tasks

  test               the test command (what CI runs after `lint`): tools, chart,
                     rust-tests, then e2e under helm 4 and helm 3
  tools              install what the tests need when missing: Debian packages
                     (ZooKeeper, shellcheck, openssl, curl; as root strace,
                     nftables, iproute2), the Go tools built from hack/tools/
                     (scripts/build-go-tools.sh), the Python linters
                     (hack/tools/python/requirements.txt) into .tools/venv
  chart              static checks of the chart, manifests/, the chart README,
                     links, Dockerfile and scripts (scripts/check-chart.sh,
                     after `tools`)
  alerts             promtool checks and unit tests of the chart's alerts and
                     dashboard (scripts/check-alerts.sh; `chart` runs it too)
  manifests          re-render manifests/ from the chart
                     (scripts/render-manifests.sh); commit the result
  helm-docs          regenerate charts/election/README.md from its
                     README.md.gotmpl and values.yaml (scripts/helm-docs.sh);
                     commit the result
  links              check the relative links of README.md, docs/ and the chart
                     README (scripts/check-links.py; `chart` runs it too)
  rust-tests         unit and integration tests on real ZooKeeper servers
                     (cargo nextest when installed, else cargo test); as root
                     also the #[ignore]d fault-injection tests
  e2e [--helm 3|4]   the chart on a local Kubernetes control plane
                     (scripts/e2e-k8s.sh; default: helm 4, then helm 3);
                     required: a missing Go or Java fails it, as in `test`
  bench [NAME]       cargo bench (NAME: failover or scale), ZooKeeper ensured
  lint               cargo fmt --check, clippy -D warnings on the workspace, and
                     vendor/zookeeper-client-patches/check.sh (vendored client =
                     pristine crate + patches; the patches' tests)
  help               this list

Scripts users run (scripts/):
  demo.sh                       a local ZooKeeper and 3 replicas, a takeover
  kind-up.sh, kind-down.sh      the chart on a local kind cluster
  kind-e2e.sh                   the end-to-end test on kind
  k8s-up.sh, k8s-down.sh        the local control plane of `e2e`, for a look around
  test.sh                       = cargo xtask test
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let no_args = || match rest {
        [] => Ok(()),
        _ => bail!("`{task}` takes no arguments: `cargo xtask help`"),
    };
    match task {
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        "test" => no_args().and_then(|()| test()),
        "tools" => no_args().and_then(|()| tools::all()),
        "chart" => no_args().and_then(|()| chart()),
        "alerts" => no_args().and_then(|()| alerts()),
        "manifests" => no_args().and_then(|()| manifests()),
        "helm-docs" => no_args().and_then(|()| helm_docs()),
        "links" => no_args().and_then(|()| links()),
        "rust-tests" => no_args().and_then(|()| rust_tests()),
        "e2e" => e2e(&helm_majors(rest)?),
        "bench" => bench(rest),
        "lint" => no_args().and_then(|()| lint()),
        _ => bail!("unknown task `{task}`: `cargo xtask help` lists the tasks"),
    }
}

/// The project's test command. Stops at the first failing stage.
fn test() -> Result<()> {
    stage("tools", tools::all)?;
    stage("rust-tests", rust_tests)?;
    // After the Rust tests: the chart's TLS test runs the election binary
    // they built (target/debug/election) against the rendered ZooKeeper.
    stage("chart (scripts/check-chart.sh)", || {
        run(&mut script("check-chart.sh"))
    })?;
    for major in ["4", "3"] {
        stage(&format!("e2e, helm {major} (scripts/e2e-k8s.sh)"), || {
            e2e_once(major)
        })?;
    }
    eprintln!("\nxtask: test passed");
    Ok(())
}

fn chart() -> Result<()> {
    tools::all()?;
    run(&mut script("check-chart.sh"))
}

fn alerts() -> Result<()> {
    // helm renders the rules, PyYAML extracts them; the script builds promtool.
    tools::go(&["helm4"])?;
    tools::python()?;
    run(&mut script("check-alerts.sh"))
}

fn manifests() -> Result<()> {
    tools::go(&["helm4"])?;
    run(&mut script("render-manifests.sh"))
}

fn helm_docs() -> Result<()> {
    tools::go(&["helm-docs"])?;
    run(&mut script("helm-docs.sh"))
}

fn links() -> Result<()> {
    let mut cmd = Command::new("python3");
    cmd.arg("scripts/check-links.py").current_dir(cmd::root());
    run(&mut cmd)
}

/// The Rust tests. Those that need root (strace fault injection, tmpfs
/// mounts, network namespaces) are #[ignore]d: as root they run too;
/// otherwise the runner reports them as ignored (skipped), never as passed.
fn rust_tests() -> Result<()> {
    tools::zookeeper()?;
    let with_ignored = is_root() && have("strace");
    if !with_ignored {
        eprintln!(">> not root (or no strace): the fault-injection tests are reported as ignored");
    }
    if succeeds(cargo().args(["nextest", "--version"])) {
        let mut cmd = cargo();
        cmd.args(["nextest", "run", "--no-fail-fast"]);
        if with_ignored {
            cmd.args(["--run-ignored", "all"]);
        }
        run(&mut cmd)
    } else {
        let mut cmd = cargo();
        cmd.args(["test", "--no-fail-fast"]);
        if with_ignored {
            cmd.args(["--", "--include-ignored"]);
        }
        run(&mut cmd)
    }
}

/// `--helm 3`, `--helm 4` (repeatable); none: helm 4, then helm 3.
fn helm_majors(args: &[String]) -> Result<Vec<&str>> {
    let mut majors = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(String::as_str)) {
            ("--helm", Some(major @ ("3" | "4"))) => majors.push(major),
            _ => bail!("usage: cargo xtask e2e [--helm 3|4]..."),
        }
    }
    if majors.is_empty() {
        majors = vec!["4", "3"];
    }
    Ok(majors)
}

fn e2e(majors: &[&str]) -> Result<()> {
    majors.iter().try_for_each(|major| e2e_once(major))
}

/// One run of scripts/e2e-k8s.sh, which builds what it lacks. Run alone,
/// the script says SKIPPED (exit 0) when the machine has no Go or no Java;
/// here it runs with E2E_REQUIRED=1, so that a machine (CI) that cannot run
/// the e2e fails instead of passing without it. A control plane that does
/// not start fails the script in any case.
fn e2e_once(major: &str) -> Result<()> {
    run(script("e2e-k8s.sh")
        .env("HELM_MAJOR", major)
        .env("E2E_REQUIRED", "1"))
}

fn bench(args: &[String]) -> Result<()> {
    tools::zookeeper()?;
    let mut cmd = cargo();
    cmd.arg("bench");
    match args {
        [] => {}
        [name] => {
            cmd.args(["--bench", name]);
        }
        _ => bail!("usage: cargo xtask bench [failover|scale]"),
    }
    run(&mut cmd)
}

/// What CI checks before the tests: formatting, clippy on every target
/// of the workspace (the xtask included) with warnings as errors, and that
/// the vendored zookeeper-client is the pristine crate plus its patches
/// (with the tests of the patches).
fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(Command::new("bash")
        .arg("vendor/zookeeper-client-patches/check.sh")
        .current_dir(cmd::root()))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))
}
