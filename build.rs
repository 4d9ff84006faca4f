//! Link options for the `election` binary (Linux, glibc).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
}
