#!/usr/bin/env bash
# Builds the Go test tools from source, from the modules pinned under
# hack/tools/<group>/go.mod, into .tools/go/<group>-<key>/ (gitignored):
#
#   kubernetes  kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#   etcd        etcd (go.etcd.io/etcd/server/v3)
#   kwok        kwok (simulated nodes)
#   helm3       helm 3
#   helm4       helm 4
#   promtool    promtool (scripts/check-alerts.sh builds it alone:
#               `scripts/build-go-tools.sh promtool`)
#   helm-docs   helm-docs (charts/election/README.md from values.yaml and
#               README.md.gotmpl: scripts/helm-docs.sh)
#
# Each group is its own module so that each tool builds with the k8s.io/*
# versions its release was tested with (one module would unify them by MVS).
# <key> hashes the group's go.mod, go.sum and the Go toolchain, so a pin change
# builds into a new folder; .tools/go/<group> is a symlink to the current one.
#
# Caches: GOMODCACHE and GOCACHE live under ${XDG_CACHE_HOME:-~/.cache}/election-go
# (override with GOMODCACHE/GOCACHE), so another clone on the same machine
# reuses them. A second run with nothing changed only checks the stamps.
#
#   scripts/build-go-tools.sh [group...]     (default: all groups)
#
# Measured on the 2-core development machine: see docs/testing.md ("The Go
# tools" and the table above it).
set -euo pipefail
cd "$(dirname "$0")/.."

# The one approved way to a newer Go than the machine's: the go command
# fetches this toolchain from the module proxy (into GOMODCACHE). The pin lives
# in hack/tools/GOTOOLCHAIN alone; `cargo xtask` reads the same file.
GOTOOLCHAIN=$(<hack/tools/GOTOOLCHAIN)
export GOTOOLCHAIN
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/election-go
export GOMODCACHE=${GOMODCACHE:-$CACHE_ROOT/mod}
export GOCACHE=${GOCACHE:-$CACHE_ROOT/build}
export GOFLAGS=-mod=readonly
export CGO_ENABLED=0

TOOLS=$PWD/.tools/go
ALL_GROUPS=(kubernetes etcd kwok helm3 helm4 promtool helm-docs)

log() { echo ">> $*" >&2; }

# Version of a module in a group's build list.
mod_version() { # group module
  (cd "hack/tools/$1" && go list -m -f '{{.Version}}' "$2")
}

# The version stamps each project's own release build sets (its Makefile or
# hack/lib/version.sh); without them `kubectl version` says v0.0.0-master and
# helm 3 renders for Kubernetes 1.20.
ldflags_of() { # group
  local v k8s major minor pkg flags="-s -w"
  case $1 in
    kubernetes)
      v=$(mod_version kubernetes k8s.io/kubernetes)
      major=${v#v}; major=${major%%.*}
      minor=${v#v*.}; minor=${minor%%.*}
      for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
      done
      ;;
    helm3 | helm4)
      local m=helm.sh/helm/v${1#helm}
      v=$(mod_version "$1" "$m")
      flags+=" -X $m/internal/version.version=$v -X $m/internal/version.gitTreeState=clean"
      if [[ $1 == helm3 ]]; then
        # helm 3's default Kubernetes version (helm template, lint) is that of
        # its client-go: v0.X.Y -> 1.X.
        k8s=$(mod_version helm3 k8s.io/client-go)
        minor=${k8s#v0.}; minor=${minor%%.*}
        for pkg in $m/pkg/lint/rules $m/pkg/chartutil; do
          flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
        done
      fi
      ;;
    helm-docs)
      # goreleaser's stamp; `helm-docs --version` and the README footer read it.
      v=$(mod_version helm-docs github.com/norwoodj/helm-docs)
      flags+=" -X main.version=${v#v}"
      ;;
  esac
  echo "$flags"
}

key_of() { # group
  cat "hack/tools/$1/go.mod" "hack/tools/$1/go.sum" <(echo "$GOTOOLCHAIN $(ldflags_of "$1")") | sha256sum | cut -c1-12
}

# kwok has no built-in stages: ship its own "fast" node and pod stages (nodes
# Ready with lease heartbeats; pods Running and Ready at once, deleted at once).
kwok_stages() { # dest
  local src f
  src=$(cd hack/tools/kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$src/kustomize/stage/$f.yaml"
  done >"$1/stages.yaml"
}

build_group() { # group
  local group=$1 key dest t0=$SECONDS
  key=$(key_of "$group")
  dest="$TOOLS/$group-$key"
  if [[ -f "$dest/.built" ]]; then
    ln -sfn "$group-$key" "$TOOLS/$group"
    [[ $group != kwok || -f "$dest/stages.yaml" ]] || kwok_stages "$dest"
    return
  fi
  # The group's main packages: the `tool` lines of its go.mod.
  local -a pkgs
  read -r -a pkgs <<<"$(awk '/^tool \(/{t=1;next} t&&/^\)/{t=0} t{print $1} /^tool [^(]/{print $2}' "hack/tools/$group/go.mod" | tr '\n' ' ')"
  log "building $group (${pkgs[*]}) into .tools/go/$group-$key"
  local ldflags
  ldflags=$(ldflags_of "$group")
  mkdir -p "$dest"
  (cd "hack/tools/$group" && go build -trimpath -ldflags="$ldflags" -o "$dest/" "${pkgs[@]}")
  # etcd's main package is its module root, go.etcd.io/etcd/server/v3:
  # go names that binary `server`.
  if [[ -f "$dest/server" ]]; then mv "$dest/server" "$dest/etcd"; fi
  [[ $group != kwok ]] || kwok_stages "$dest"
  touch "$dest/.built"
  ln -sfn "$group-$key" "$TOOLS/$group"
  # Older builds of the group (other pins) only take disk space.
  find "$TOOLS" -mindepth 1 -maxdepth 1 -type d -name "$group-*" ! -name "$group-$key" -exec rm -rf {} +
  log "built $group in $((SECONDS - t0))s"
}

groups=("$@")
((${#groups[@]})) || groups=("${ALL_GROUPS[@]}")
mkdir -p "$TOOLS"
start=$SECONDS
for group in "${groups[@]}"; do
  [[ -f "hack/tools/$group/go.mod" ]] || { log "unknown group $group (hack/tools/$group/go.mod)"; exit 2; }
  build_group "$group"
done
log "go tools ready in $((SECONDS - start))s: $(cd "$TOOLS" && for g in "${groups[@]}"; do printf '%s ' "$g/"*; done)"
