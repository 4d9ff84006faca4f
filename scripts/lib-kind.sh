#!/usr/bin/env bash
# Shared settings and helpers of scripts/kind-*.sh. Sourced, not run; expects
# the repository root as working directory and scripts/lib-chart.sh sourced.
#
# Settings (environment):
#   KIND_CLUSTER  kind cluster name            (default: election)
#   NAMESPACE     namespace of the release     (default: election)
#   RELEASE       helm release name            (default: election)
#   IMAGE_TAG     tag of the election image    (default: dev-<image id>, so a
#                 rebuilt image rolls the pods and an unchanged one does not)

KIND_CLUSTER=${KIND_CLUSTER:-election}
NAMESPACE=${NAMESPACE:-election}
RELEASE=${RELEASE:-election}
CONTEXT="kind-$KIND_CLUSTER"
# The election pods of this release (the chart's selector labels).
SELECTOR="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=election"

log() { echo ">> $*" >&2; }

require() { # commands...
  local missing=()
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  if ((${#missing[@]})); then
    log "missing: ${missing[*]} (needs docker, kind, kubectl and helm; helm also from 'cargo xtask tools')"
    exit 1
  fi
}

# kubectl against the kind cluster, in the release namespace.
k() { kubectl --context "$CONTEXT" --namespace "$NAMESPACE" "$@"; }

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; }

# Loads a local image into every node of the kind cluster through an image
# archive: `docker save` of the nodes' platform, then `kind load
# image-archive`. `kind load docker-image` fails with Docker Engine 29+ and
# its containerd image store ("ctr: content digest ... not found"): it saves
# the image for every platform of its index, and the blobs of the platforms
# that were never pulled or built are not there. A docker without `save
# --platform` (before 28) has the classic store, one platform per image.
load_image() { # image
  local image=$1 platform archive
  platform=$(kubectl --context "$CONTEXT" get nodes \
    -o jsonpath='{.items[0].status.nodeInfo.operatingSystem}/{.items[0].status.nodeInfo.architecture}')
  [[ "$platform" == */?* ]] || { log "cannot read the platform of the nodes of $KIND_CLUSTER: '$platform'"; return 1; }
  archive=$(mktemp "${TMPDIR:-/tmp}/election-image.XXXXXX.tar")
  if docker image save --help 2>/dev/null | grep -q -- '--platform'; then
    log "docker save $image for $platform -> $archive"
    docker image save --platform "$platform" --output "$archive" "$image" || { rm -f "$archive"; return 1; }
  else
    log "docker save $image -> $archive (this docker has no save --platform: one platform per image)"
    docker image save --output "$archive" "$image" || { rm -f "$archive"; return 1; }
  fi
  kind load image-archive "$archive" --name "$KIND_CLUSTER" || { rm -f "$archive"; return 1; }
  rm -f "$archive"
}

# Milliseconds since the epoch (bash 5's EPOCHREALTIME, else whole seconds).
now_ms() {
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}

# Names of the pods labelled election-state=leader, space separated.
leaders() {
  k get pods -l "$SELECTOR,election-state=leader" -o jsonpath='{.items[*].metadata.name}'
}

# Waits until exactly one pod is labelled leader and prints its name:
# wait_for_one_leader TIMEOUT_SECONDS [NOT_THIS_POD]
wait_for_one_leader() {
  local timeout=$1 not=${2:-} deadline names
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    names=$(leaders 2>/dev/null || true)
    if [[ -n "$names" && "$names" != *" "* && "$names" != "$not" ]]; then
      echo "$names"
      return 0
    fi
    sleep 0.2
  done
  log "no single leader${not:+ other than $not} after ${timeout}s (labelled leader: '${names:-}')"
  return 1
}

# Prints what explains a failure: pods, their description, logs, events.
diagnose() {
  log "diagnostics for release $RELEASE in namespace $NAMESPACE"
  k get pods -o wide -L election-state || true
  k describe pods -l "app.kubernetes.io/instance=$RELEASE" || true
  k logs -l "app.kubernetes.io/instance=$RELEASE" --all-containers --prefix --tail=80 || true
  k get events --sort-by=.lastTimestamp | tail -40 || true
}
