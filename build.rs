//! Link options for the `election` binary (Linux, glibc).

use std::process::Command;

/// Symbols of the functions plain idle candidates run, then of those that
/// replicas with the listeners and the Pod labeller on (leader and
/// candidate) run besides, as measured by `scripts/text-order.sh`.
const TEXT_ORDER: &str = "link/hot-text.order";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={TEXT_ORDER}");
    println!("cargo:rerun-if-env-changed=ELECTION_LINK_MAP");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" {
        return;
    }
    // Relative relocations packed as DT_RELR: a few KiB instead of
    // ~360 KiB of `.rela.dyn` that the dynamic loader reads, and keeps
    // resident, at every start. Needs glibc 2.36 (Debian 12, the
    // distroless cc image) and binutils 2.38 or lld.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // The code the daemon runs, placed together at the start of `.text`.
    // Page faults on the binary map it 64 KiB at a time (the kernel's
    // fault-around), so code scattered over the 5 MiB of `.text` kept most
    // of it resident although an idle candidate runs ~0.7 MiB of it.
    // lld only (rust-lld is the default linker of x86_64-unknown-linux-gnu
    // from Rust 1.90); symbols the order names but the build lacks (the
    // code changed since it was measured) are skipped: a stale order costs
    // memory, never correctness.
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if release && target == "x86_64-unknown-linux-gnu" && rustc_minor() >= Some(90) {
        let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TEXT_ORDER);
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // For `scripts/text-order.sh`: a link map to name the code it measured.
    if let Ok(map) = std::env::var("ELECTION_LINK_MAP") {
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
    }
}

/// The minor version of the compiler (`rustc 1.95.0 ...` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
