#!/usr/bin/env bash
# Measures which code the daemon runs and rewrites link/hot-text.order, the
# order build.rs hands the linker so that code sits together (see build.rs).
# Rerun after dependency upgrades or large changes, then compare
# `SCALE_SIZES=none cargo bench --bench scale` before and after.
#
# Runs the memory part of benches/scale.rs (a local ZooKeeper, the fake API
# server) with every replica under valgrind's callgrind. Needs valgrind,
# python3 and what the benchmark needs (Java, ZooKeeper).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
work=$(realpath -m "$target/text-order")
rm -rf "$work"
mkdir -p "$work/profiles"

ELECTION_LINK_MAP="$work/link.map" cargo build --release --locked --bin election
# A copy: building the benchmark relinks target/release/election (with the
# dev-dependencies' features), and the map describes this build only.
binary="$work/election"
cp "$target/release/election" "$binary"
bench=$(cargo bench --locked --bench scale --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "scale" and m.get("executable"):
        print(m["executable"])')

cat > "$work/callgrind.sh" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \\
  --callgrind-out-file="$work/profiles/%p.out" --log-file="$work/profiles/%p.log" "$binary" "\$@"
WRAP
chmod +x "$work/callgrind.sh"

ELECTION_TEST_BIN="$work/callgrind.sh" SCALE_SIZES=none SCALE_REST=4 "$bench" --bench
python3 scripts/text-order.py "$work/link.map" "$binary" link/hot-text.order "$work"/profiles/*.out
