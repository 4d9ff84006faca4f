#!/usr/bin/env bash
# Brings election up on a local kind cluster, idempotently:
#   1. creates the kind cluster (reuses it when it exists),
#   2. builds the image and loads it into the cluster (`docker save` of the
#      nodes' platform, then `kind load image-archive`: lib-kind.sh load_image),
#   3. `helm upgrade --install --wait` of charts/election,
#   4. waits until exactly one pod is labelled election-state=leader.
#
#   scripts/kind-up.sh          # then: kubectl -n election get pods -L election-state
#   scripts/kind-down.sh        # deletes the cluster
#
# Needs docker, kind, kubectl and helm (3 or 4). Settings: see scripts/lib-kind.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh
# shellcheck source=scripts/lib-kind.sh
source scripts/lib-kind.sh

require docker kind kubectl
HELM=$(any_helm)

if cluster_exists; then
  log "reusing kind cluster $KIND_CLUSTER"
else
  log "creating kind cluster $KIND_CLUSTER"
  kind create cluster --name "$KIND_CLUSTER" --wait 180s
fi

log "building the election image"
docker build --tag election:build .
# Tag by content: an unchanged image keeps its tag (helm upgrade is a no-op),
# a rebuilt one gets a new tag and rolls the pods.
IMAGE_TAG=${IMAGE_TAG:-dev-$(docker image inspect --format '{{.Id}}' election:build | sed 's/^sha256://' | cut -c1-12)}
docker tag election:build "election:$IMAGE_TAG"
log "loading election:$IMAGE_TAG into $KIND_CLUSTER"
load_image "election:$IMAGE_TAG"

log "installing the chart (release $RELEASE, namespace $NAMESPACE)"
"$HELM" upgrade --install "$RELEASE" "$CHART" \
  --kube-context "$CONTEXT" --namespace "$NAMESPACE" --create-namespace \
  --set image.repository=election --set image.tag="$IMAGE_TAG" \
  --wait --timeout 10m \
  || { diagnose; exit 1; }

k rollout status "statefulset/$(k get statefulset -l "$SELECTOR" -o jsonpath='{.items[0].metadata.name}')" --timeout=300s \
  || { diagnose; exit 1; }
leader=$(wait_for_one_leader 120) || { diagnose; exit 1; }
log "leader: $leader"
k get pods -L election-state
