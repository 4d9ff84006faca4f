//! Installing what the tests and checks need, when it is missing: the one
//! owner of tool installation (CI starts from a machine with only cargo, Go
//! and Python). Idempotent: with everything there, a run only checks.
//!
//! - Debian packages (apt, as root or through sudo): ZooKeeper (through
//!   scripts/lib-zk.sh, which scripts/demo.sh shares), shellcheck, openssl
//!   and curl; as root also strace, nftables and iproute2 for the
//!   fault-injection tests.
//! - The Go tools (helm 3 and 4, kubectl, the control plane, etcd, kwok,
//!   promtool, helm-docs), built from the modules pinned under hack/tools/ by
//!   scripts/build-go-tools.sh into .tools/go/.
//! - The Python tools of the chart checks, pinned in
//!   hack/tools/python/requirements.txt, into .tools/venv/.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd::{gotoolchain, have, is_root, root, run, script, succeeds};

const PYTHON_REQUIREMENTS: &str = "hack/tools/python/requirements.txt";

/// Debian packages: (command it provides, package, needed only as root).
const PACKAGES: &[(&str, &str, bool)] = &[
    // scripts/check-chart.sh
    ("shellcheck", "shellcheck", false),
    // scripts/k8s-up.sh: certificates, health checks
    ("openssl", "openssl", false),
    ("curl", "curl", false),
    // the fault-injection tests: syscall delays, firewall rules, network
    // namespaces (not root: those tests are reported as ignored)
    ("strace", "strace", true),
    ("nft", "nftables", true),
    ("ip", "iproute2", true),
];

/// Everything: Debian packages, Go tools, Python tools.
pub fn all() -> Result<()> {
    system()?;
    go(&[])?;
    python()?;
    let helm = |major: u8| {
        let out = Command::new(root().join(format!(".tools/go/helm{major}/helm")))
            .args(["version", "--short"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    eprintln!(
        ">> tools ready: helm {} and {}, .tools/venv ({PYTHON_REQUIREMENTS})",
        helm(3),
        helm(4)
    );
    Ok(())
}

/// ZooKeeper (and Java), from Debian's package when none is found.
pub fn zookeeper() -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "source scripts/lib-zk.sh && ensure_zookeeper"])
        .current_dir(root());
    run(&mut cmd)
}

/// The Debian packages the tests and checks use, ZooKeeper included.
pub fn system() -> Result<()> {
    zookeeper()?;
    let root_user = is_root();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, _, root_only)| root_user || !root_only)
        .filter(|(command, _, _)| !have(command) && !have_sbin(command))
        .map(|(_, package, _)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!(">> installing {} from Debian's packages", missing.join(" "));
        apt_install(&missing)?;
    }
    Ok(())
}

/// The Go tools: the given groups of scripts/build-go-tools.sh, or all.
pub fn go(groups: &[&str]) -> Result<()> {
    if !have("go") {
        bail!(
            "Go is missing: install Go >= 1.21 (its toolchain switch fetches the pinned \
             {}); helm, kubectl and the control plane are built from source",
            gotoolchain()
        );
    }
    run(script("build-go-tools.sh").args(groups))
}

/// The pinned Python tools in .tools/venv; a stamp of the requirements file
/// makes a second run a no-op.
pub fn python() -> Result<()> {
    let requirements = root().join(PYTHON_REQUIREMENTS);
    let want = fs::read_to_string(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let venv = root().join(".tools/venv");
    let stamp = venv.join(".requirements");
    if venv.join("bin/python").exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    eprintln!(">> installing {PYTHON_REQUIREMENTS} into .tools/venv");
    fs::create_dir_all(root().join(".tools"))?;
    if !succeeds(Command::new("python3").arg("-m").arg("venv").arg(&venv)) {
        // Debian's python3 ships venv without ensurepip.
        let _ = fs::remove_dir_all(&venv);
        apt_install(&["python3-venv"])?;
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    fs::write(&stamp, want)?;
    Ok(())
}

/// nft and ip live in /usr/sbin, which a non-root PATH may lack.
fn have_sbin(command: &str) -> bool {
    ["/usr/sbin", "/sbin"]
        .iter()
        .any(|dir| fs::metadata(format!("{dir}/{command}")).is_ok())
}

/// apt-get install, running `apt-get update` only when the install fails
/// without it (a fresh machine has empty package lists).
fn apt_install(packages: &[&str]) -> Result<()> {
    // `env`: sudo would drop DEBIAN_FRONTEND from the environment.
    let apt = || {
        let mut cmd = Command::new(if is_root() { "env" } else { "sudo" });
        if !is_root() {
            cmd.arg("env");
        }
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        cmd
    };
    let install = || {
        let mut cmd = apt();
        cmd.args(["install", "-y", "-qq"]).args(packages);
        cmd
    };
    if succeeds(&mut install()) {
        return Ok(());
    }
    run(apt().args(["update", "-qq"]))?;
    run(&mut install())
}
