#!/usr/bin/env bash
# Builds promtool (github.com/prometheus/prometheus/cmd/promtool) from the Go
# module pinned in hack/tools/promtool/go.mod into .tools/go/promtool/promtool
# (gitignored). Used by scripts/check-alerts.sh.
#
# Same layout and caches as scripts/build-go-tools.sh (one module per tool
# group under hack/tools/<group>/, output in .tools/go/<group>-<key>/ with
# .tools/go/<group> a symlink to the current build, GOMODCACHE and GOCACHE
# under ${XDG_CACHE_HOME:-~/.cache}/election-go), so that once both are
# merged `scripts/build-go-tools.sh promtool` builds the very same thing and
# this script can go.
#
# Measured on the 2-core development machine (charts/election/README.md,
# "Development"): cold 817 s, warm (Go caches filled) 6 s, up to date 0.02 s.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOTOOLCHAIN=go1.27.3
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/election-go
export GOMODCACHE=${GOMODCACHE:-$CACHE_ROOT/mod}
export GOCACHE=${GOCACHE:-$CACHE_ROOT/build}
export GOFLAGS=-mod=readonly
export CGO_ENABLED=0

group=promtool
TOOLS=$PWD/.tools/go
# No version stamps: build-go-tools.sh's default for a group without its own.
ldflags="-s -w"
# The same key as build-go-tools.sh's key_of: go.mod, go.sum, toolchain, ldflags.
key=$(cat "hack/tools/$group/go.mod" "hack/tools/$group/go.sum" <(echo "$GOTOOLCHAIN $ldflags") | sha256sum | cut -c1-12)
dest="$TOOLS/$group-$key"
mkdir -p "$TOOLS"
if [[ ! -f "$dest/.built" ]]; then
  t0=$SECONDS
  echo ">> building promtool into .tools/go/$group-$key" >&2
  mkdir -p "$dest"
  (cd "hack/tools/$group" && go build -trimpath -ldflags="$ldflags" -o "$dest/" github.com/prometheus/prometheus/cmd/promtool)
  touch "$dest/.built"
  echo ">> built promtool in $((SECONDS - t0))s" >&2
fi
ln -sfn "$group-$key" "$TOOLS/$group"
# promtool's --version is empty without release ldflags: name the pinned module instead.
echo ">> promtool: $(awk '$1 == "github.com/prometheus/prometheus" { print $2 }' "hack/tools/$group/go.mod") in .tools/go/$group" >&2
