#!/usr/bin/env bash
# Rebuilds vendor/zookeeper-client from the pristine crate and the patches
# in this directory, checks that the result is identical to the vendored
# tree, then runs the tests of change 1 against the vendored crate.
#
#   vendor/zookeeper-client-patches/check.sh [PRISTINE_CRATE_DIR]
#
# PRISTINE_CRATE_DIR defaults to cargo's unpacked copy of
# zookeeper-client 0.11.2 (~/.cargo/registry/src/*/zookeeper-client-0.11.2,
# there after any `cargo build` of the upstream crate; fetched from
# crates.io with `cargo fetch` when missing). TESTED_CRATE=dir
# runs the tests against another copy of the crate (e.g. the pristine one,
# to see them fail). SKIP_TESTS=1 only checks the patches.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
vendor=$(cd "$here/../zookeeper-client" && pwd)
lock=$(cd "$here/../.." && pwd)/Cargo.lock
find_pristine() {
    ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zookeeper-client-0.11.2 2>/dev/null | head -1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pristine=${1:-$(find_pristine)}
if [[ -z "${1:-}" && -z "$pristine" ]]; then
    # The daemon's build never downloads the crate (it is patched in):
    # fetch it from crates.io, the only network this script uses.
    mkdir -p "$work/fetch/src"
    printf '[package]\nname = "fetch-pristine"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nzookeeper-client = "=0.11.2"\n[workspace]\n' \
        > "$work/fetch/Cargo.toml"
    touch "$work/fetch/src/lib.rs"
    (cd "$work/fetch" && cargo fetch --quiet)
    pristine=$(find_pristine)
fi
if [[ -z "$pristine" || ! -f "$pristine/src/lib.rs" ]]; then
    echo "no pristine zookeeper-client 0.11.2: pass its directory" >&2
    exit 2
fi

# 1. The patches apply in order to the pristine crate, without fuzz.
cp -r "$pristine" "$work/crate"
cd "$work/crate"
for p in "$here"/0*.patch "$here/vendor-trim.patch"; do
    git apply "$p"
    echo "applied $(basename "$p")"
done
# The vendored copy keeps only these (see PATCHES.md).
find . -mindepth 1 -maxdepth 1 ! -name src ! -name Cargo.toml ! -name LICENSE ! -name README.md \
    -exec rm -rf {} +
if ! diff -r -x PATCHES.md "$work/crate" "$vendor"; then
    echo "FAIL: pristine + patches differs from $vendor" >&2
    exit 1
fi
echo "ok: pristine + patches is identical to vendor/zookeeper-client"

[[ "${SKIP_TESTS:-0}" == 1 ]] && exit 0

# 2. Tests of change 1. The crate's own test suite cannot run here: its
# unit tests need dev-dependencies that are not vendored (one of them a
# git-only fork of testcontainers, and Docker). So a throwaway crate
# compiles `deadline.rs` alone, with its unit test, and uses the whole
# crate from outside for the reconnect loop. Offline, with the versions
# of the daemon's Cargo.lock.
tested=${TESTED_CRATE:-$vendor}
mkdir -p "$work/harness/src" "$work/harness/tests"
cp "$lock" "$work/harness/Cargo.lock"
cat > "$work/harness/Cargo.toml" <<EOF
[package]
name = "zookeeper-client-harness"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
async-io = "2.3.2"
futures = "0.3.30"

[dev-dependencies]
zookeeper-client = { path = "$tested", features = ["tokio"] }
tokio = { version = "1", features = ["rt", "time", "net"] }

[workspace]
EOF
cat > "$work/harness/src/lib.rs" <<EOF
#![allow(dead_code)]
#[path = "$tested/src/deadline.rs"]
mod deadline;
EOF
cat > "$work/harness/tests/reconnect.rs" <<'EOF'
use std::time::Duration;

/// Connecting to an address where every attempt fails at once must end
/// when the session timeout has passed. TCP to a multicast address fails
/// in connect(2) with ENETUNREACH, as after a route vanished, without
/// root. Without change 1 the deadline's timer is never polled, the loop
/// never sees it pass, and the runtime's only thread spins forever. (A
/// refused port on loopback is pending once, which polls the timer.)
#[test]
fn connecting_to_an_unreachable_address_times_out_instead_of_spinning() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let connect = zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_millis(300))
            .connect("224.0.0.1:2181");
        let _ = tx.send(runtime.block_on(connect).map(|_| ()));
    });
    // Generous: the bound is 300 ms; a spinning loop never ends.
    let result = rx.recv_timeout(Duration::from_secs(20)).expect("still connecting after 20 s: the loop spins");
    assert_eq!(result, Err(zookeeper_client::Error::Timeout));
}
EOF
cd "$work/harness"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$work/target} cargo test --offline --quiet
echo "ok: tests of change 1 pass against $tested"
