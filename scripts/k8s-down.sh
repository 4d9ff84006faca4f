#!/usr/bin/env bash
# Stops the control plane of scripts/k8s-up.sh (only the processes it
# recorded in $ELECTION_K8S_DIR/pids) and deletes its state directory.
# Nothing to do when it is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-k8s.sh
source scripts/lib-k8s.sh

D=$ELECTION_K8S_DIR
if [[ ! -d "$D" ]]; then
  log "no control plane in $D: nothing to do"
  exit 0
fi
# Clients first, etcd last.
for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_pid "$D/pids/$c.pid" 10
done
rm -rf "$D"
log "control plane in $D stopped and deleted"
