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
