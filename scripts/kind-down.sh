#!/usr/bin/env bash
# Deletes the kind cluster of scripts/kind-up.sh (nothing to do when it is gone).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh
# shellcheck source=scripts/lib-kind.sh
source scripts/lib-kind.sh

require kind
if cluster_exists; then
  log "deleting kind cluster $KIND_CLUSTER"
  kind delete cluster --name "$KIND_CLUSTER"
else
  log "no kind cluster $KIND_CLUSTER: nothing to do"
fi
