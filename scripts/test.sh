#!/usr/bin/env bash
# The project's test command lives in the xtask (`cargo xtask help`): this
# is the same command for those who type the script's name.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask test "$@"
