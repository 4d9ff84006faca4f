#!/usr/bin/env bash
# End-to-end run on kind: brings the chart up (scripts/kind-up.sh), then
#   1. exactly one pod is labelled election-state=leader,
#   2. graceful takeover: deletes the leader pod (preStop `election release`)
#      and times how long until a different pod is labelled leader,
#   3. crash takeover: SIGKILLs the new leader's process from the kind node
#      (no preStop, no clean session close) and times the takeover, which
#      waits for ZooKeeper to expire the session (about 6s),
#   4. shows the leader files: `election verify` inside a replica, and `ls` from
#      a short-lived busybox pod mounting the same claim (the image has no shell),
#   5. `helm test`.
# Cleans up on exit: deletes the cluster when this run created it, else only
# the release and its namespace. KEEP=1 keeps everything for a look around.
#
#   scripts/kind-e2e.sh
#
# Needs docker, kind, kubectl and helm. Settings: see scripts/lib-kind.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh
# shellcheck source=scripts/lib-kind.sh
source scripts/lib-kind.sh

require docker kind kubectl
HELM=$(any_helm)
BUSYBOX_IMAGE=busybox:1.37.0
FILES_POD=election-e2e-files

created_cluster=0
cluster_exists || created_cluster=1

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "FAILED (exit $rc)"
    diagnose
  fi
  if [[ "${KEEP:-0}" == 1 ]]; then
    log "KEEP=1: leaving cluster $KIND_CLUSTER and release $RELEASE in place"
  elif ((created_cluster)); then
    bash scripts/kind-down.sh || true
  else
    k delete pod "$FILES_POD" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    "$HELM" uninstall "$RELEASE" --kube-context "$CONTEXT" --namespace "$NAMESPACE" --wait >/dev/null 2>&1 || true
    kubectl --context "$CONTEXT" delete namespace "$NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

bash scripts/kind-up.sh

# 1. One leader.
leader=$(wait_for_one_leader 120)
log "step 1: exactly one leader: $leader"
k get pods -l "$SELECTOR" -L election-state

# SIGKILLs the daemon of a pod from outside its PID namespace (SIGKILL sent
# from inside, e.g. by an ephemeral debug container, is ignored by PID 1).
# kind nodes are docker containers named after the node.
crash() { # pod
  local pod=$1 node cid pid
  node=$(k get pod "$pod" -o jsonpath='{.spec.nodeName}')
  cid=$(k get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="election")].containerID}')
  pid=$(docker exec "$node" crictl inspect --output go-template --template '{{.info.pid}}' "${cid#*://}")
  log "SIGKILL to pid $pid (container ${cid#*://} of $pod on node $node)"
  docker exec "$node" kill -KILL "$pid"
}

# Takes over from the current leader: takeover STEP HOW (graceful|crash).
takeover() {
  local step=$1 how=$2 old new t0 t1
  old=$(wait_for_one_leader 120)
  log "step $step: $how stop of leader $old"
  if [[ $how == graceful ]]; then
    t0=$(now_ms)
    k delete pod "$old" --wait=false
  else
    crash "$old"
    t0=$(now_ms)
  fi
  new=$(wait_for_one_leader 120 "$old")
  t1=$(now_ms)
  log "step $step: $new took over from $old in $((t1 - t0)) ms ($how)"
  # Let the deleted pod come back before the next step.
  k wait pods -l "$SELECTOR" --for=condition=Ready --timeout=180s
}

# 2. Graceful takeover (preStop hook: election release).
takeover 2 graceful
# 3. Crash takeover: within about one ZooKeeper session timeout (6s).
takeover 3 crash

# 4. The files. First with the binary itself (distroless: no shell, no ls).
leader=$(wait_for_one_leader 60)
file_dir=$(k get pod "$leader" -o jsonpath='{.spec.containers[0].env[?(@.name=="ELECTION_FILE_DIR")].value}')
log "step 4: election verify --file-dir $file_dir in $leader"
k exec "$leader" -- /usr/local/bin/election verify --file-dir "$file_dir"

claim=$(k get pod "$leader" -o jsonpath='{.spec.volumes[?(@.name=="files")].persistentVolumeClaim.claimName}')
if [[ -n "$claim" ]]; then
  log "step 4: ls of claim $claim from a busybox pod"
  k delete pod "$FILES_POD" --ignore-not-found --wait=true >/dev/null
  k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $FILES_POD
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: ls
      image: $BUSYBOX_IMAGE
      command: ["sh", "-c", "ls -l /files && echo && cat \"\$(ls /files/leader_*.json | tail -1)\""]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {memory: 32Mi}
      volumeMounts:
        - {name: files, mountPath: /files, readOnly: true}
  volumes:
    - name: files
      persistentVolumeClaim: {claimName: $claim, readOnly: true}
YAML
  k wait "pod/$FILES_POD" --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s \
    || { k describe "pod/$FILES_POD"; k logs "$FILES_POD" || true; exit 1; }
  k logs "$FILES_POD"
  k delete pod "$FILES_POD" --wait=false
else
  log "step 4: one claim per replica (persistence.mode=perReplica): verified inside $leader only"
fi

# 5. helm test: every pod ready, exactly one labelled leader.
log "step 5: helm test"
"$HELM" test "$RELEASE" --kube-context "$CONTEXT" --namespace "$NAMESPACE" --logs --timeout 5m

log "e2e passed"
