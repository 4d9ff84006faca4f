#!/usr/bin/env bash
# Installs what the tests and chart checks need: `cargo xtask tools` does it
# (xtask/src/tools.rs); this name stays for the messages that point here.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask tools "$@"
