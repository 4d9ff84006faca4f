#!/usr/bin/env bash
# End-to-end test of the Helm chart on a real Kubernetes control plane
# (scripts/k8s-up.sh: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler built from source, kwok nodes). Containers do not run there,
# so this script plays the kubelet: for every pod the API server holds, it
# starts a real process built from the pod object (ZooKeeper 3.8 from Debian
# for the ZooKeeper pods; target/debug/election for the election pods, with
# the env of the pod spec, downward API resolved from the pod, and a
# TokenRequest token of the pod's ServiceAccount bound to the pod). What
# cannot exist here (images, cluster DNS names, listen ports, volumes) is
# mapped, and every mapping is printed.
#
#   1. helm install: every object accepted with admission on; the StatefulSet
#      controller creates the pods, the scheduler binds them to kwok nodes
#   2. exactly one pod labelled election-state=leader, the others attempter,
#      annotations present (the daemon's own patches, authorized by RBAC);
#      the Lease is the chart's and the leader writes its holder; `helm
#      test` passes, its pod's kubectl commands run by the harness as the
#      test's ServiceAccount (kwok never completes a non-Job pod)
#   3. SIGKILL of the leader's process, NOT restarted: another pod labelled
#      leader (bound: session timeout + 4 s) and exactly one pod labelled
#      leader, the dead one `stale` (bound: session timeout + 6 s); the
#      Events (Candidate, BecameLeader, StaleLabelCorrected) and the Lease
#      mirror (holder, leaseTransitions + 1, renewTime moving); `helm test`
#      passes in that stale window; then the harness restarts the process,
#      as a CrashLoopBackOff ends. 3b: SIGKILL of the leader's process,
#      restarted at once in the same pod and emptyDir (scripts/e2e-restart.sh):
#      another pod labelled leader in under a session timeout
#   4. preStop path (the pod's own preStop command, `election release`, then
#      SIGTERM): the old leader's pod says `stopping` and posted SteppedDown,
#      another pod leads within 3 s; then `kubectl delete pod` of the
#      leader: the same handover, the StatefulSet recreates the pod, whose
#      new process labels itself, and the token bound to the deleted pod is
#      refused (401). 4c: the ZooKeeper processes stopped: the leader's label
#      leaves leader within the daemon's give-up time + 4 s, LostLeadership
#      and Failover Events reach the API, each replica's repeated Failover
#      counted in one Event's series (the recorder's PATCH), not one object
#      per round; ZooKeeper back: one leader again
#   5. the ValidatingAdmissionPolicy with election-0's pod-bound token: 403
#      (with the rule's message) for a sibling's or its own image, other
#      labels/annotations, removing its own election-state label, owner
#      references, finalizers, a sibling's annotations or label (but leader
#      -> stale), a pod of the namespace outside the release, a pod in
#      another namespace, creating a Lease; 200 for its own label and
#      election/* annotations and a sibling's leader -> stale; the Role's
#      rules exactly (can-i --list)
#   6. helm upgrade --reuse-values --set replicaCount=4: the Role unchanged,
#      election-3 labels itself, one leader, the Lease's spec kept; back to
#      3: election-3 stopped through its preStop path. 6b: the same with the
#      admission policy off: the Role names election-3 only while it exists
#   6c. rollouts that change the pod template (scripts/e2e-rollout.sh),
#      3 and 5 replicas, twice each: with the chart's leaderLast (its hook
#      pod's `election rollout` run for real) exactly one leader change
#      (BecameLeader Events, leaseTransitions), every pod on the update
#      revision, one leader; then RollingUpdate's count for comparison
#      6d: upgrades refused at render time (lookup) with the chart's message,
#      revision and StatefulSets unchanged: zookeeper.replicas 3 -> 5 on the
#      running ensemble, persistence.mode shared -> perReplica, ZooKeeper
#      volumes 1Gi -> 2Gi. 6e: the documented resize, a planned stop
#      (election and ZooKeeper scaled to 0, helm upgrade to 5 servers): one
#      leader again, ZooKeeper's data (last zxid) and the fencing token kept.
#      6f: persistence.mode shared -> perReplica by the documented procedure
#      (kubectl delete statefulset, helm upgrade): each pod mounts its own
#      claim, one leader, the fencing token above the one before; the
#      shared claim deleted, its Retain volume Released with the files.
#      Back to shared (refused, then kubectl delete statefulset
#      --cascade=orphan, helm upgrade): the hook replaces the adopted pods,
#      the leader last: exactly one leader change
#   7. helm uninstall: no Lease, RBAC, admission policy nor object left
#      (except the ZooKeeper volumes that StatefulSets keep by design). 7b:
#      helm install with zookeeper.auth.enabled=true and a super digest:
#      one leader, every znode of the election path carries the digest ACL,
#      an anonymous client gets NOAUTH
#   8. kubectl apply --server-side -f manifests/election.yaml (the Namespace
#      first in the file; restricted Pod Security): accepted, pods created
#      and scheduled
#   9. manifests/ under two kustomize overlays that set only `namespace:`
#      (tenant-a, tenant-b; scripts/lib-e2e-overlays.sh): both apply, their
#      cluster-scoped policy objects are the same ones; in each namespace a
#      replica's pod-bound token labels its own pod (200) and is refused a
#      sibling's image (403, the policy's message) and the other tenant's
#      pods (403, RBAC)
#
# Each step is one function, run in the order of the list at the end of this
# file; every wait is `wait_until` (scripts/lib-k8s.sh) on a named check.
# Everything it starts is stopped on exit, failure included; E2E_TIMEOUT
# (default 600 s) bounds the run. Without Go or Java it prints SKIPPED and
# exits 0, or fails with E2E_REQUIRED=1 (`cargo xtask test` and `cargo xtask
# e2e` set it); a control plane that fails to build or start always fails.
# KEEP=1 keeps the cluster and processes for a look around (then run
# ELECTION_K8S_DIR=<dir> scripts/k8s-down.sh and kill the printed pids).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh
# shellcheck source=scripts/lib-zk.sh
source scripts/lib-zk.sh
# shellcheck source=scripts/lib-e2e-overlays.sh
source scripts/lib-e2e-overlays.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/election-e2e-k8s.XXXXXX")
export ELECTION_K8S_DIR=$WORK/cluster
# shellcheck source=scripts/lib-k8s.sh
source scripts/lib-k8s.sh

NS=election
RELEASE=election
SEL="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=election"
ZK_SEL="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=zookeeper"
E2E_TIMEOUT=${E2E_TIMEOUT:-900}
HELM_MAJOR=${HELM_MAJOR:-4}
BIN=$PWD/target/debug/election
PIDS=$WORK/pids
mkdir -p "$PIDS" "$WORK/logs" "$WORK/pv"
START_ALL=$(now_ms)
NUMBERS=()
# The rollout hook's player and step 6c (uses the settings above).
# shellcheck source=scripts/e2e-rollout.sh
source scripts/e2e-rollout.sh
# shellcheck source=scripts/e2e-restart.sh
source scripts/e2e-restart.sh

skip() {
  echo
  echo "=================================================================="
  echo "  e2e-k8s SKIPPED: $*"
  echo "=================================================================="
  # The EXIT trap stops whatever was started and removes $WORK.
  if [[ "${E2E_REQUIRED:-0}" == 1 ]]; then exit 1; fi
  exit 0
}

cleanup() {
  local rc=$? f
  trap - EXIT INT TERM
  # Best effort from here on: one failing step must not skip the others.
  set +e
  [[ -n "${WATCHDOG:-}" ]] && kill "$WATCHDOG" 2>/dev/null
  if ((rc != 0)); then
    log "FAILED (exit $rc): diagnostics"
    if [[ -f "$ELECTION_K8S_DIR/admin.kubeconfig" ]]; then
      kc get pods -A -o wide -L election-state || true
      kc get events -n "$NS" --sort-by=.lastTimestamp 2>/dev/null | tail -30 || true
    fi
    for f in "$WORK"/logs/*.log; do
      [[ -f "$f" ]] || continue
      log "last lines of $f"
      tail -n 15 "$f" >&2
    done
  fi
  if [[ "${KEEP:-0}" == 1 ]]; then
    log "KEEP=1: leaving everything in $WORK (pids in $PIDS)"
    exit "$rc"
  fi
  for f in "$PIDS"/*.pid; do
    [[ -f "$f" ]] && stop_pid "$f" 5
  done
  bash scripts/k8s-down.sh >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# Bounds the whole run: the watchdog TERMs this script, whose trap cleans up.
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$E2E_TIMEOUT" &
  sleeper=$!
  wait "$sleeper"
  log "e2e-k8s: timeout after ${E2E_TIMEOUT}s"
  kill -TERM $$
) &
WATCHDOG=$!

step() { echo; echo "== $*"; }
note() { NUMBERS+=("$1"); log "$1"; }
die() { log "FAILED: $*"; exit 1; }
# kubectl as the admin (KCFG: from start_control_plane); k: in the release's namespace
kc() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }
k() { kc --namespace "$NS" "$@"; }

# The Go tools, helm, ZooKeeper and the daemon: SKIPPED without Go or Java.
build_tools() {
  if ! k8s_tools_present; then
    command -v go >/dev/null || skip "Go is not installed: the control plane cannot be built (scripts/build-go-tools.sh)"
    bash scripts/build-go-tools.sh || die "scripts/build-go-tools.sh failed: no control plane"
  fi
  [[ -x "$GO_TOOLS/helm$HELM_MAJOR/helm" ]] || bash scripts/build-go-tools.sh "helm$HELM_MAJOR"
  HELM=$GO_TOOLS/helm$HELM_MAJOR/helm
  if [[ -z "$(zk_classpath)" ]] || ! command -v java >/dev/null; then
    skip "no ZooKeeper/java (scripts/lib-zk.sh ensure_zookeeper installs them)"
  fi
  cargo build --quiet --bin election
  [[ -x "$BIN" ]] || die "no $BIN"
}

start_control_plane() {
  step "control plane (scripts/k8s-up.sh)"
  t0=$(now_ms)
  bash scripts/k8s-up.sh >"$WORK/k8s-up.out" || die "the control plane did not start (see above)"
  note "control plane ready in $(($(now_ms) - t0)) ms"
  KCFG=$ELECTION_K8S_DIR/admin.kubeconfig
  SERVER=$(cat "$ELECTION_K8S_DIR/server")
  CA=$ELECTION_K8S_DIR/pki/ca.crt
  kc get nodes
  kc auth can-i '*' '*' >/dev/null || die "the admin cannot do everything?"
}

# --- storage: no provisioner here, so PersistentVolumes made beforehand
# (hostPath on this machine; reclaim policy Retain). Claims without a
# storage class bind to them (there is no default StorageClass).
make_volumes() {
  for i in $(seq 0 15); do
    mkdir -p "$WORK/pv/pv-$i"
    cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: e2e-pv-$i
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $WORK/pv/pv-$i, type: DirectoryOrCreate}
EOF
  done | kc apply -f - >/dev/null
  log "harness: no volume provisioner here: 16 hostPath PersistentVolumes under $WORK/pv stand in"
}

# --- the kubelet part: pods -> processes

# The local directory behind a pod's volume mounted at PATH (claim -> PV hostPath).
volume_dir() { # pod mountPath
  local vol claim pv
  vol=$(k get pod "$1" -o json | python3 -c '
import json, sys
pod = json.load(sys.stdin)
c = pod["spec"]["containers"][0]
(mount,) = [m for m in c.get("volumeMounts", []) if m["mountPath"] == sys.argv[1]]
(v,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
print(v.get("persistentVolumeClaim", {}).get("claimName", ""))' "$2")
  [[ -n "$vol" ]] || die "pod $1: $2 is not a persistentVolumeClaim"
  claim=$vol
  pv=$(k get pvc "$claim" -o jsonpath='{.spec.volumeName}')
  [[ -n "$pv" ]] || die "claim $claim is not bound"
  kc get pv "$pv" -o jsonpath='{.spec.hostPath.path}'
}

declare -A ZK_ADDR=()

# Starts one real ZooKeeper server per ZooKeeper pod, as a local ensemble.
start_zookeepers() {
  local pods=() p i id cfg
  read -r -a pods <<<"$(k get pods -l "$ZK_SEL" -o jsonpath='{.items[*].metadata.name}')"
  ((${#pods[@]})) || die "no ZooKeeper pods"
  local -A client=() peer=() elect=()
  for p in "${pods[@]}"; do
    client[$p]=$(free_port)
    peer[$p]=$(free_port)
    elect[$p]=$(free_port)
    ZK_ADDR[$p]=127.0.0.1:${client[$p]}
  done
  for p in "${pods[@]}"; do
    # myid = ordinal + 1, as the pod's command computes it from HOSTNAME.
    id=$((${p##*-} + 1))
    mkdir -p "$WORK/zk/$p/data"
    echo "$id" >"$WORK/zk/$p/data/myid"
    cfg=$WORK/zk/$p/zoo.cfg
    {
      echo "tickTime=200"
      echo "initLimit=50"
      echo "syncLimit=25"
      echo "maxSessionTimeout=40000"
      echo "dataDir=$WORK/zk/$p/data"
      echo "clientPort=${client[$p]}"
      echo "clientPortAddress=127.0.0.1"
      echo "4lw.commands.whitelist=*"
      echo "admin.enableServer=false"
      for i in "${pods[@]}"; do
        echo "server.$((${i##*-} + 1))=127.0.0.1:${peer[$i]}:${elect[$i]}"
      done
    } >"$cfg"
    log "harness: pod $p (image $(k get pod "$p" -o jsonpath='{.spec.containers[0].image}') cannot run here)" \
      "-> ZooKeeper from Debian, myid $id, client port ${ZK_ADDR[$p]}, tickTime 200 ms (chart: 2000), data in $WORK/zk/$p"
  done
  ZK_PODS=("${pods[@]}")
  resume_zookeepers
}

# (Re)starts the ZooKeeper process of each ZooKeeper pod on its zoo.cfg and
# data, and waits for the ensemble.
resume_zookeepers() {
  local p
  for p in "${ZK_PODS[@]}"; do
    bg_start "$WORK" "zk-$p" java -Xmx128m -cp "$(zk_classpath)" "${ZK_JVMFLAGS[@]}" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zk/$p/zoo.cfg"
  done
  wait_until 60 0.3 ensemble_up || die "the ZooKeeper ensemble did not form"
  log "ZooKeeper ensemble of ${#ZK_PODS[@]} servers up"
}
# Does every ZooKeeper server serve as leader, follower or standalone?
ensemble_up() {
  local p up=0
  for p in "${ZK_PODS[@]}"; do
    zk_4lw 127.0.0.1 "${ZK_ADDR[$p]#*:}" srvr | grep -qE '^Mode: (leader|follower|standalone)' && up=$((up + 1))
  done
  ((up == ${#ZK_PODS[@]}))
}
ZK_PODS=()
ZK_JVMFLAGS=()

# A kubeconfig for a pod's process: a TokenRequest token of the pod's
# ServiceAccount, bound to the pod (as the kubelet's projected token).
pod_kubeconfig() { # pod out
  local sa uid token
  sa=$(k get pod "$1" -o jsonpath='{.spec.serviceAccountName}')
  uid=$(k get pod "$1" -o jsonpath='{.metadata.uid}')
  token=$(k create token "$sa" --duration 1h --bound-object-kind Pod --bound-object-name "$1" --bound-object-uid "$uid")
  cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "$SERVER", certificate-authority: "$CA"}
users:
  - name: $sa
    user: {token: "$token"}
contexts:
  - name: $sa
    context: {cluster: e2e, user: $sa, namespace: $NS}
current-context: $sa
EOF
  log "harness: pod $1 authenticates as ServiceAccount $NS/$sa (TokenRequest token bound to pod uid $uid): KUBECONFIG=$2"
}

# Starts (or restarts) the process of one election pod.
start_election() { # pod
  local pod=$1 dir http admin file_dir mount
  dir=$WORK/pods/$pod
  mkdir -p "$dir"
  k get pod "$pod" -o json >"$dir/pod.json"
  mount=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(next(e["value"] for e in p["spec"]["containers"][0]["env"] if e["name"]=="ELECTION_FILE_DIR"))' "$dir/pod.json")
  file_dir=$(volume_dir "$pod" "$mount")
  http=$(free_port)
  admin=$(free_port)
  # The container's listeners: the http containerPort, and the admin port of
  # ELECTION_ADMIN_ADDR (never a containerPort).
  local http_port admin_port
  http_port=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["spec"]["containers"][0]; print(next(p["containerPort"] for p in c["ports"] if p["name"]=="http"))' "$dir/pod.json")
  admin_port=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["spec"]["containers"][0]; print(next(e["value"] for e in c["env"] if e["name"]=="ELECTION_ADMIN_ADDR").rpartition(":")[2])' "$dir/pod.json")
  local args=(--pod-json "$dir/pod.json" --container election --entrypoint /usr/local/bin/election
    --binary "/usr/local/bin/election=$BIN" --kubectl "$KUBECTL --kubeconfig $KCFG"
    --map-dir "$mount=$file_dir"
    --map-listen "$http_port=127.0.0.1:$http" --map-listen "$admin_port=127.0.0.1:$admin"
    --secrets-dir "$dir/secrets" --empty-dirs "$WORK/empty-dirs")
  local p
  for p in "${!ZK_ADDR[@]}"; do args+=(--map-host "$p=${ZK_ADDR[$p]}"); done
  python3 scripts/k8s-pod-process.py "${args[@]}" >"$dir/plan.json"
  pod_kubeconfig "$pod" "$dir/kubeconfig"
  python3 - "$dir/plan.json" "$dir" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
d = sys.argv[2]
for m in plan["mappings"]:
    print(">> harness:", m, file=sys.stderr)
with open(d + "/env", "wb") as f:
    for k, v in plan["env"].items():
        f.write(f"{k}={v}".encode() + b"\0")
open(d + "/argv", "wb").write(b"".join(a.encode() + b"\0" for a in plan["argv"]))
open(d + "/prestop", "wb").write(b"".join(a.encode() + b"\0" for a in plan["prestop"]))
PY
  local envs=() argv=()
  mapfile -d '' envs <"$dir/env"
  mapfile -d '' argv <"$dir/argv"
  envs+=("KUBECONFIG=$dir/kubeconfig" "PATH=/usr/bin:/bin")
  echo "$http" >"$dir/http-port"
  bg_start "$WORK" "$pod" env -i "${envs[@]}" "${argv[@]}"
  log "harness: pod $pod -> pid $(cat "$PIDS/$pod.pid"): ${argv[*]} (log $WORK/logs/$pod.log)"
}

# Are exactly COUNT pods of SELECTOR there, each bound to a kwok node and
# Running? (What it saw in PODS_SEEN.)
pods_running() { # selector count
  PODS_SEEN=$(k get pods -l "$1" -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase}{"\n"}{end}' 2>/dev/null || true)
  [[ $(grep -c ' kwok-node-[0-9]* Running$' <<<"$PODS_SEEN") -eq $2 && $(grep -c . <<<"$PODS_SEEN") -eq $2 ]]
}
wait_pods_running() { # selector count timeout
  wait_until "$3" 0.3 pods_running "$1" "$2" && return
  echo "$PODS_SEEN" >&2
  k get pods -l "$1" -o wide >&2 || true
  k describe pods -l "$1" 2>&1 | tail -40 >&2 || true
  die "pods $1: not $2 Running on kwok nodes within ${3}s"
}
no_pods() { [[ -z "$(k get pods -l "$1" -o name)" ]]; } # selector

# state of each election pod: "election-0=leader election-1=attempter ..."
states() {
  k get pods -l "$SEL" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.labels.election-state} {end}'
}
leaders() {
  k get pods -l "$SEL,election-state=leader" -o jsonpath='{.items[*].metadata.name}'
}
state_of() { k get pod "$1" -o jsonpath='{.metadata.labels.election-state}'; } # pod
not_leader() { [[ "$(state_of "$1")" != leader ]]; } # pod

# Is exactly one pod labelled leader, and not OLD? (It is in LEADER_SEEN.)
sole_leader_other_than() { # old
  LEADER_SEEN=$(leaders 2>/dev/null || true)
  [[ -n "$LEADER_SEEN" && "$LEADER_SEEN" != *" "* && "$LEADER_SEEN" != "$1" ]]
}
# ... and are the N-1 others attempters?
one_leader() { # n [not_this_pod]
  STATES_SEEN=$(states 2>/dev/null || true)
  sole_leader_other_than "${2:-}" && [[ $(grep -o '=attempter' <<<"$STATES_SEEN" | wc -l) -eq $(($1 - 1)) ]]
}
# Waits until exactly one pod leads and all N others are attempters; prints
# the leader. wait_one_leader N TIMEOUT [NOT_THIS_POD]
wait_one_leader() {
  local n=$1 timeout=$2 not=${3:-}
  wait_until "$timeout" 0.1 one_leader "$n" "$not" \
    || die "no single leader with $((n - 1)) attempters within ${timeout}s${not:+ (other than $not)}: $STATES_SEEN"
  echo "$LEADER_SEEN"
}

# Starts the process of pod $1 again, waits until one of the 3 pods is
# labelled leader (sets $leader) and shows the pods.
restart_and_wait_one_leader() { # pod
  start_election "$1"
  leader=$(wait_one_leader 3 30)
  k get pods -L election-state
}

# Is a pod other than OLD labelled leader (among others, maybe)?
new_leader_other_than() { # old
  local p
  for p in $(leaders 2>/dev/null || true); do [[ "$p" == "$1" ]] || return 0; done
  return 1
}
# Milliseconds until a pod other than $1 is labelled leader.
time_new_leader() { # old timeout
  local t0
  t0=$(now_ms)
  wait_until "$2" 0.05 new_leader_other_than "$1" || die "no new leader within ${2}s: $(states)"
  echo $(($(now_ms) - t0))
}

lease_holder() { k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
lease_names() { [[ "$(lease_holder)" == "$1" ]]; } # pod
event_reasons() { k get events --field-selector "involvedObject.name=$1" -o jsonpath='{.items[*].reason}'; } # pod
has_event() { [[ " $(event_reasons "$1") " == *" $2 "* ]]; } # pod reason
# Is POD a new pod (uid not OLD_UID), bound to a kwok node and Running?
recreated() { # pod old_uid
  [[ "$(k get pod "$1" -o jsonpath='{.metadata.uid} {.spec.nodeName} {.status.phase}' 2>/dev/null)" =~ ^[0-9a-f-]+\ kwok-node-[0-9]+\ Running$ ]] \
    && [[ "$(k get pod "$1" -o jsonpath='{.metadata.uid}')" != "$2" ]]
}
# Does the API server refuse the kubeconfig's token? (Its answer in REFUSAL.)
refused() { ! REFUSAL=$("$KUBECTL" --kubeconfig "$1" get pods -l "$SEL" 2>&1); } # kubeconfig

# ======================================================================
install_release() {
  step "1. helm install ($("$HELM" version --short)) on the real API server"
  t_install=$(now_ms)
  "$HELM" install "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --create-namespace --wait --timeout 3m \
    >"$WORK/helm-install.out" || die "helm install failed: $(cat "$WORK/helm-install.out")"
  sed -n '/^STATUS:/p; /has no registry part/,/^$/p' "$WORK/helm-install.out" | sed 's/^/   | /'
  note "helm install --wait (objects accepted, pods scheduled, kwok reports Ready): $(($(now_ms) - t_install)) ms"
  k get all,serviceaccount,role,rolebinding,pdb,pvc -o name | sed 's/^/   /'
  wait_pods_running "$ZK_SEL" 3 60
  wait_pods_running "$SEL" 3 60
  k get pods -o wide
}

start_processes() {
  step "2. real processes play the pods; one leader"
  t_zk=$(now_ms)
  start_zookeepers
  t_procs=$(now_ms)
  for pod in $(k get pods -l "$SEL" -o jsonpath='{.items[*].metadata.name}'); do start_election "$pod"; done
  leader=$(wait_one_leader 3 60)
  now=$(now_ms)
  note "helm install -> exactly one pod labelled leader, 2 attempter: $((now - t_install)) ms (of which ZooKeeper ensemble start $((t_procs - t_zk)) ms; election processes started -> labels $((now - t_procs)) ms)"
  k get pods -L election-state
  # The daemon's annotations, on every pod (the fencing token on the leader only).
  k get pods -l "$SEL" -o json | python3 -c '
import json, sys
leader = sys.argv[1]
for pod in json.load(sys.stdin)["items"]:
    name, ann = pod["metadata"]["name"], pod["metadata"].get("annotations", {})
    want = ["election/state-since", "election/node-id", "election/leader", "election/cause"]
    if name == leader:
        want.append("election/fencing-token")
    missing = [a for a in want if not ann.get(a)]
    if missing:
        sys.exit(f"{name}: annotations missing: {missing}")
    if ann["election/leader"] != leader or ann["election/node-id"] != name:
        seen, me = ann["election/leader"], ann["election/node-id"]
        sys.exit(f"{name}: election/leader={seen} election/node-id={me}")
    print("  ", name, " ".join(f"{a}={ann[a]}" for a in want))
  ' "$leader" || die "annotations"

  # The Lease mirror is the chart's object (the release's labels, so that
  # `helm uninstall` deletes it); the leader fills in its spec.
  [[ "$(k get lease "$RELEASE" -o jsonpath='{.metadata.labels.app\.kubernetes\.io/instance}')" == "$RELEASE" ]] \
    || die "lease $RELEASE does not carry the release's labels: $(k get lease "$RELEASE" -o yaml)"
  wait_until 15 0.2 lease_names "$leader" || die "lease $RELEASE: holder '$(lease_holder)', not $leader"
  log "lease $RELEASE: created by the chart (labels of the release), holder $leader written by the leader"
}

# helm test: kwok would leave the test pod Running forever (it completes only Job
# pods): the harness runs its containers in order, as the kubelet would,
# with kubectl built here for the image's kubectl and a token of the test's
# ServiceAccount bound to the pod, then reports the outcome in the pod's
# status, which `helm test` reads.
TEST_POD=$RELEASE-test-leader
run_test_pod() {
  local dir=$WORK/pods/$TEST_POD c rc=0 phase=Succeeded statuses=() started finished
  rm -rf "$dir"
  mkdir -p "$dir/tmp"
  k get pod "$TEST_POD" -o json >"$dir/pod.json"
  pod_kubeconfig "$TEST_POD" "$dir/kubeconfig"
  for c in $(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["spec"]; print(" ".join(c["name"] for c in p.get("initContainers",[])+p["containers"]))' "$dir/pod.json"); do
    python3 scripts/k8s-pod-process.py --pod-json "$dir/pod.json" --container "$c" \
      --binary "kubectl=$KUBECTL" --kubectl "$KUBECTL --kubeconfig $KCFG" --map-dir "/tmp=$dir/tmp" >"$dir/$c.plan.json"
    local envs=() argv=()
    mapfile -d '' envs < <(python3 -c 'import json,sys; [sys.stdout.write(f"{k}={v}\0") for k,v in json.load(open(sys.argv[1]))["env"].items()]' "$dir/$c.plan.json")
    mapfile -d '' argv < <(python3 -c 'import json,sys; [sys.stdout.write(a+"\0") for a in json.load(open(sys.argv[1]))["argv"]]' "$dir/$c.plan.json")
    log "harness: test pod container $c (image $(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["spec"]; print(next(x["image"] for x in p.get("initContainers",[])+p["containers"] if x["name"]==sys.argv[2]))' "$dir/pod.json" "$c")) -> $(basename "${argv[0]}") $KUBECTL_VERSION built here, HOME /tmp -> $dir/tmp, in-cluster token -> KUBECONFIG"
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    rc=0
    env -i "${envs[@]}" "KUBECONFIG=$dir/kubeconfig" PATH=/usr/bin:/bin "${argv[@]}" >"$dir/$c.log" 2>&1 || rc=$?
    finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    sed "s/^/   $c | /" "$dir/$c.log"
    statuses+=("$c $rc $started $finished")
    if ((rc != 0)); then phase=Failed; break; fi
  done
  # The kubelet's report: phase and each container's termination.
  python3 - "$dir/pod.json" "$phase" "${statuses[@]}" >"$dir/status.json" <<'PY'
import json, sys
pod = json.load(open(sys.argv[1]))
phase, runs = sys.argv[2], [r.split() for r in sys.argv[3:]]
done = {name: (int(rc), s, f) for name, rc, s, f in runs}
def status(c):
    st = {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0}
    if c["name"] in done:
        rc, s, f = done[c["name"]]
        st["state"] = {"terminated": {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error", "startedAt": s, "finishedAt": f}}
    else:
        st["state"] = {"waiting": {"reason": "PodInitializing"}}
    return st
spec = pod["spec"]
print(json.dumps({"status": {
    "phase": phase,
    "initContainerStatuses": [status(c) for c in spec.get("initContainers", [])],
    "containerStatuses": [status(c) for c in spec["containers"]],
}}))
PY
  k patch pod "$TEST_POD" --subresource status --type merge --patch-file "$dir/status.json" >/dev/null
  log "harness: test pod $TEST_POD -> phase $phase"
}
# Is the helm test pod Running, a new one (not of uid OLD)?
test_pod_running() { # old
  [[ "$(k get pod "$TEST_POD" -o jsonpath='{.status.phase} {.metadata.uid}' 2>/dev/null)" =~ ^Running\ (.*)$ && "${BASH_REMATCH[1]}" != "$1" ]]
}
# helm test, with the harness playing its pod; fails the run unless it passes.
helm_test() {
  local helm_test rc=0 uid
  uid=$(k get pod "$TEST_POD" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
  "$HELM" test "$RELEASE" --kubeconfig "$KCFG" --namespace "$NS" --timeout 2m >"$WORK/helm-test.out" 2>&1 &
  helm_test=$!
  wait_until 60 0.2 test_pod_running "$uid" || die "the helm test pod did not start: $(cat "$WORK/helm-test.out")"
  run_test_pod
  wait "$helm_test" || rc=$?
  grep -E '^(TEST SUITE|Phase)' "$WORK/helm-test.out" | paste - - | sed 's/^/   | /' | sort -u
  ((rc == 0)) || die "helm test failed (exit $rc): $(cat "$WORK/helm-test.out")"
  grep -q 'Phase:.*Succeeded' "$WORK/helm-test.out" || die "helm test did not report Succeeded"
}
run_helm_test() {
  step "2b. helm test, its pod played for real"
  KUBECTL_VERSION=$("$KUBECTL" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
  helm_test
  log "helm test passed: its checks ran against the real API server as the test's ServiceAccount"
}

kill_leader_not_restarted() {
  step "3. SIGKILL of the leader's process ($leader), NOT restarted: the stale label"
  session=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(next(e["value"] for e in p["spec"]["containers"][0]["env"] if e["name"]=="ELECTION_ZK_SESSION_TIMEOUT"))' "$WORK/pods/$leader/pod.json")
  session_s=${session%s}
  [[ "$session_s" =~ ^[0-9]+$ ]] || die "session timeout $session is not whole seconds"
  lease0=$(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity} {.spec.leaseTransitions}' 2>/dev/null || true)
  kill -KILL "$(cat "$PIDS/$leader.pid")"
  rm -f "$PIDS/$leader.pid"
  t0=$(now_ms)
  ms=$(time_new_leader "$leader" $((session_s + 10)))
  note "SIGKILL of the leader -> another pod labelled leader: $ms ms (session timeout ${session})"
  ((ms <= (session_s + 4) * 1000)) || die "label flip took $ms ms, bound $(((session_s + 4) * 1000)) ms"
  # The dead leader made no last patch: until the new leader corrects it, two
  # pods say leader. Time until exactly one does (the harness does not
  # restart the killed process: a lost node, a CrashLoopBackOff).
  wait_until $((session_s + 20)) 0.05 sole_leader_other_than "$leader" || die "still not exactly one pod labelled leader: $(states)"
  ms=$(($(now_ms) - t0))
  new_leader=$LEADER_SEEN
  note "SIGKILL of the leader, process not restarted -> exactly one pod labelled leader ($new_leader): $ms ms after the kill"
  ((ms <= (session_s + 6) * 1000)) || die "stale label corrected after $ms ms, bound $(((session_s + 6) * 1000)) ms"
  old_state=$(state_of "$leader")
  [[ "$old_state" == stale ]] || die "the dead leader $leader is labelled '$old_state', not stale"
  k get pods -L election-state
  log "events of $new_leader and $leader (kubectl get events --field-selector involvedObject.name=...)"
  for p in "$new_leader" "$leader"; do
    k get events --field-selector "involvedObject.name=$p" --sort-by=.eventTime \
      -o custom-columns=OBJECT:.involvedObject.name,TYPE:.type,REASON:.reason,FROM:.reportingComponent,MESSAGE:.message | sed 's/^/   /'
  done
  reasons=$(event_reasons "$new_leader")
  [[ " $reasons " == *" Candidate "* && " $reasons " == *" BecameLeader "* ]] || die "$new_leader: events $reasons, want Candidate and BecameLeader"
  reasons=$(event_reasons "$leader")
  [[ " $reasons " == *" BecameLeader "* && " $reasons " == *" StaleLabelCorrected "* ]] || die "$leader: events $reasons, want BecameLeader and StaleLabelCorrected"
  uid=$(k get pod "$new_leader" -o jsonpath='{.metadata.uid}')
  k describe pod "$new_leader" | grep -q BecameLeader || die "kubectl describe pod $new_leader does not show BecameLeader"
  log "kubectl describe pod $new_leader shows its Events (involvedObject.uid $uid)"
  # The Lease mirror: holder and transitions follow the election.
  wait_until 15 0.2 lease_names "$new_leader" || die "lease $RELEASE: holder $(lease_holder), not $new_leader"
  k get lease "$RELEASE" -o custom-columns=NAME:.metadata.name,HOLDER:.spec.holderIdentity,TRANSITIONS:.spec.leaseTransitions,RENEW:.spec.renewTime,DURATION:.spec.leaseDurationSeconds | sed 's/^/   /'
  lease1=$(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity} {.spec.leaseTransitions}')
  [[ "${lease0%% *}" == "$leader" && "${lease1#* }" -eq $((${lease0#* } + 1)) ]] || die "lease before $lease0, after $lease1: want holder $leader then one more transition"
  r1=$(k get lease "$RELEASE" -o jsonpath='{.spec.renewTime}')
  sleep 6
  r2=$(k get lease "$RELEASE" -o jsonpath='{.spec.renewTime}')
  [[ "$r1" != "$r2" ]] || die "lease renewTime did not move in 6 s ($r1)"
  log "lease $RELEASE: holder $leader -> $new_leader, leaseTransitions ${lease0#* } -> ${lease1#* }, renewTime $r1 -> $r2"
  # Memory of the running replicas (debug build; labeller, Events, stale-label
  # search and Lease mirror on, talking to this API server).
  for p in $(k get pods -l "$SEL" -o jsonpath='{.items[*].metadata.name}'); do
    [[ -f "$PIDS/$p.pid" ]] || continue
    role=$(state_of "$p")
    note "RSS of $p ($role, debug build, every Kubernetes helper on): $(awk '/^VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$(cat "$PIDS/$p.pid")/status")"
  done
  log "helm test while $leader is dead, still Ready for the API (kwok) and labelled stale:"
  helm_test
  log "helm test passed in the stale window: it counts exactly one Ready pod labelled leader ($new_leader)"
  log "harness: restarting the process of $leader (late: a CrashLoopBackOff ends)"
  restart_and_wait_one_leader "$leader"
}

restart_takeover() {
  step "3b. SIGKILL of the leader's process ($leader), restarted at once: restart takeover (scripts/e2e-restart.sh)"
  restart_takeover_step "$session_s"
}

prestop_handover() {
  step "4. preStop path of $leader: its own preStop command, then SIGTERM"
  mapfile -d '' prestop <"$WORK/pods/$leader/prestop"
  log "harness: preStop: ${prestop[*]}"
  t0=$(now_ms)
  "${prestop[@]}" || die "preStop command failed"
  kill -TERM "$(cat "$PIDS/$leader.pid")"
  ms=$(time_new_leader "$leader" 10)
  note "preStop (election release) + SIGTERM -> another pod labelled leader: $ms ms"
  ((ms <= 3000)) || die "handover took $ms ms, bound 3000 ms"
  stop_pid "$PIDS/$leader.pid" 10
  old_state=$(state_of "$leader")
  [[ "$old_state" == stopping ]] || die "$leader is labelled '$old_state' after its stop, not stopping"
  token=$(k get pod "$leader" -o jsonpath='{.metadata.annotations.election/fencing-token}')
  [[ -z "$token" ]] || die "$leader still carries election/fencing-token=$token after it stopped leading"
  log "$leader says election-state=stopping after it exited, and no longer carries a fencing token"
  wait_until 10 0.2 has_event "$leader" SteppedDown || die "$leader: no SteppedDown Event after its preStop path: $(event_reasons "$leader")"
  log "$leader posted SteppedDown (kubectl get events --field-selector involvedObject.name=$leader)"
  log "harness: restarting the process of $leader (restartPolicy Always)"
  restart_and_wait_one_leader "$leader"
}

delete_leader_pod() {
  step "4b. kubectl delete pod $leader (the path of a rolling update or a drain)"
  # The harness plays the kubelet's part as soon as the API server accepted
  # the deletion: preStop, SIGTERM. kwok removes the pod object, the
  # StatefulSet controller recreates it (new uid), and its process starts
  # with a token bound to the new pod.
  old_uid=$(k get pod "$leader" -o jsonpath='{.metadata.uid}')
  old_kcfg=$WORK/pods/$leader/kubeconfig.old
  cp "$WORK/pods/$leader/kubeconfig" "$old_kcfg"
  mapfile -d '' prestop <"$WORK/pods/$leader/prestop"
  t0=$(now_ms)
  k delete pod "$leader" --wait=false >/dev/null
  "${prestop[@]}" >/dev/null || die "preStop command failed"
  kill -TERM "$(cat "$PIDS/$leader.pid")"
  ms=$(time_new_leader "$leader" 10)
  note "kubectl delete pod of the leader (preStop, SIGTERM) -> another pod labelled leader: $ms ms"
  ((ms <= 3000)) || die "handover took $ms ms, bound 3000 ms"
  stop_pid "$PIDS/$leader.pid" 10
  wait_until 60 0.2 recreated "$leader" "$old_uid" || die "$leader was not recreated and scheduled within 60 s"
  log "the StatefulSet controller recreated $leader (uid $old_uid -> $(k get pod "$leader" -o jsonpath='{.metadata.uid}'))"
  # The API server caches successful token reviews for 10 s
  # (--authentication-token-success-cache-ttl): allow for that.
  wait_until 20 0.5 refused "$old_kcfg" || die "the token bound to the deleted pod still works after 20 s"
  grep -q Unauthorized <<<"$REFUSAL" || die "the old pod's token: not 401: $REFUSAL"
  log "the token bound to the deleted pod is rejected (401 Unauthorized) $(($(now_ms) - t0)) ms after the delete"
  restart_and_wait_one_leader "$leader"
}

zookeeper_down() {
  step "4c. ZooKeeper stopped for a while: the leader steps down, the API server hears it"
  # Event objects of the election pods, "pod=reason name series-count" per
  # line: a new object adds a line, a repeat the recorder counted in an
  # object's series (PATCH) changes its line.
  event_list() {
    k get events.events.k8s.io -o jsonpath='{range .items[*]}{.regarding.name}={.reason} {.metadata.name} {.series.count}{"\n"}{end}' | grep -E "^$RELEASE-[0-9]+=" || true
  }
  events_before=$(event_list)
  # (diff exits 1 when it finds a change: not a failure here)
  changed_events() { diff <(sort <<<"$events_before") <(event_list | sort) | sed -n 's/^> //p' || true; }
  new_events() { changed_events | cut -d' ' -f1; }
  lost_leadership_and_failover() { grep -qx "$leader=LostLeadership" <<<"$(new_events)" && grep -q '=Failover$' <<<"$(new_events)"; }
  failover_repeated() { changed_events | awk '$1 ~ /=Failover$/ && $3 >= 2 {f = 1} END {exit !f}'; }
  t0=$(now_ms)
  for p in "${ZK_PODS[@]}"; do stop_pid "$PIDS/zk-$p.pid" 5; done
  log "harness: ZooKeeper processes of ${ZK_PODS[*]} stopped (SIGTERM; their pods stay Running for the API)"
  # A disconnected leader is suspended (no writes) but keeps its state until
  # the session is confirmed again, the server expires it, or the daemon gives
  # it up: after several session timeouts (its log says how long: give_up_in;
  # src/zk/session.rs GIVE_UP_FACTOR). With every server down, nothing can
  # expire the session, so the give-up time bounds the label.
  wait_until $((10 * session_s + 10)) 0.1 not_leader "$leader" \
    || die "$leader still labelled leader $((10 * session_s + 10)) s after ZooKeeper stopped"
  ms=$(($(now_ms) - t0))
  give_up=$(grep -o '"give_up_in":"[0-9]*s"' "$WORK/logs/$leader.log" | tail -1 | tr -dc 0-9)
  [[ -n "$give_up" ]] || give_up=$((8 * session_s))
  note "ZooKeeper stopped -> the leader's label leaves leader ($(state_of "$leader")): $ms ms (session timeout $session; the daemon gives a disconnected session up after ${give_up} s)"
  ((ms <= (give_up + 4) * 1000)) || die "the leader kept its label for $ms ms, bound $(((give_up + 4) * 1000)) ms (give-up time + 4 s)"
  wait_until 20 0.2 lost_leadership_and_failover \
    || die "no LostLeadership on $leader and Failover Events on the API server: new events $(new_events | tr '\n' ' ')"
  # Each replica went Failover -> Reconnecting -> Failover ... while
  # ZooKeeper was down: the recorder counts the repeats of a reason in one
  # Event object's series (within its 6-minute window), so each pod and
  # reason got one new object at most, and some Failover counts two or more.
  wait_until 20 0.2 failover_repeated || die "no Failover Event counts a repeat in its series: $(changed_events | tr '\n' ',')"
  created=$(comm -13 <(cut -d' ' -f1,2 <<<"$events_before" | sort) <(event_list | cut -d' ' -f1,2 | sort))
  twice=$(cut -d' ' -f1 <<<"$created" | sort | uniq -d)
  [[ -z "$twice" ]] || die "more than one new Event object for one pod and reason (repeats not aggregated): $twice; new objects: $(tr '\n' ',' <<<"$created")"
  log "Event objects new or counted again while ZooKeeper is down (series count): $(changed_events | sort | awk '{printf "%s x%s, ", $1, ($3 == "" ? 1 : $3)}')"
  log "new Event objects: $(wc -l <<<"$created"), for $(cut -d' ' -f1 <<<"$created" | sort -u | wc -l) pod/reason pairs"
  log "the election pods now: $(states)"
  t1=$(now_ms)
  log "harness: ZooKeeper down for $((t1 - t0)) ms; restarting its processes (same data and ports)"
  resume_zookeepers
  leader=$(wait_one_leader 3 90)
  note "ZooKeeper back after $((t1 - t0)) ms down -> exactly one pod labelled leader ($leader): $(($(now_ms) - t1)) ms after the restart"
  k get pods -L election-state
}

service_account_rights() {
  step "5. what the ServiceAccount's token may do"
  SA_KCFG=$WORK/pods/election-0/kubeconfig
  sa() { "$KUBECTL" --kubeconfig "$SA_KCFG" "$@"; }
  kc run outsider --namespace default --image=registry.example/none:1 --restart=Never >/dev/null
  # A pod of the release namespace that is not one of the release's: the same
  # name and component labels, another instance, and it claims to lead.
  k run outsider --image=registry.example/none:1 --restart=Never \
    --labels "app.kubernetes.io/name=election,app.kubernetes.io/component=election,app.kubernetes.io/instance=other,election-state=leader" >/dev/null
  # PATCH requests as the ServiceAccount, with the token of election-0's
  # process (bound to that pod): RBAC lets the account patch any pod of the
  # namespace, and the ValidatingAdmissionPolicy decides what may change.
  # With curl, not `kubectl patch`: kubectl GETs the object before patching,
  # and the account may not get pods (it never needs to).
  # api_patch TOKEN NAMESPACE/POD BODY [merge|strategic|json]: prints the HTTP
  # status, the response in $WORK/patch.out.
  api_patch() {
    local type
    case ${4:-merge} in
      merge) type=application/merge-patch+json ;;
      strategic) type=application/strategic-merge-patch+json ;;
      json) type=application/json-patch+json ;;
    esac
    curl -sS -o "$WORK/patch.out" -w '%{http_code}' --cacert "$CA" -X PATCH \
      -H "Authorization: Bearer $1" -H "Content-Type: $type" \
      --data "$3" "$SERVER/api/v1/namespaces/${2%/*}/pods/${2#*/}"
  }
  SA_TOKEN=$(sed -n 's/.*token: "\(.*\)".*/\1/p' "$SA_KCFG")
  # expect_patch 200|403 NAMESPACE/POD BODY [TYPE [MESSAGE]]: MESSAGE, the
  # policy rule that must have refused it.
  expect_patch() {
    local want=$1 target=$2 body=$3 type=${4:-merge} msg=${5:-} code
    code=$(api_patch "$SA_TOKEN" "$target" "$body" "$type")
    [[ $code == "$want" ]] || die "PATCH ($type) pod $target $body as the ServiceAccount: HTTP $code, expected $want: $(cat "$WORK/patch.out")"
    [[ -z "$msg" ]] || grep -qF -- "$msg" "$WORK/patch.out" || die "PATCH pod $target $body: 403, but not with '$msg': $(cat "$WORK/patch.out")"
    printf '   PATCH (%s) pod %-24s %-72s -> %s %s\n' "$type" "$target" "$body" "$code" \
      "$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])).get("message",""); print(m.split("denied request: ")[-1][:100])' "$WORK/patch.out" 2>/dev/null || true)"
  }
  [[ "$(kc get validatingadmissionpolicy "$NS-$RELEASE-pods" -o name 2>/dev/null | wc -l)" -eq 1 ]] \
    || die "no ValidatingAdmissionPolicy $NS-$RELEASE-pods: the chart should render it on this API server"
  ! kc get validatingadmissionpolicy -o name | grep -qv "/$NS-$RELEASE-pods$" \
    || die "more admission policies than the pods' one: $(kc get validatingadmissionpolicy -o name)"
  other=$(states | tr ' ' '\n' | grep -v '^election-0=' | grep -v '=leader$' | head -1)
  other=${other%%=*}
  [[ -n "$other" ]] || die "no non-leader sibling of election-0: $(states)"
  own_state=$(state_of election-0)
  image='{"spec":{"containers":[{"name":"election","image":"registry.example/evil:1"}]}}'
  owner='{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"e2e","uid":"00000000-0000-0000-0000-000000000001"}]}}'
  log "the ValidatingAdmissionPolicy, on the real API server (sibling: $other)"
  expect_patch 403 "$NS/$other" "$image" strategic "may not change a pod's spec"
  expect_patch 403 "$NS/election-0" "$image" strategic "may not change a pod's spec"
  expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"app.kubernetes.io/component":"x"}}}'
  expect_patch 403 "$NS/election-0" '{"metadata":{"labels":{"app.kubernetes.io/component":"x"}}}'
  expect_patch 403 "$NS/election-0" '{"metadata":{"labels":{"e2e-probe":"1"}}}'
  expect_patch 403 "$NS/election-0" '{"metadata":{"labels":{"election-state":null}}}' merge "may not remove its own pod's election-state label"
  expect_patch 403 "$NS/election-0" '{"metadata":{"annotations":{"e2e/probe":"1"}}}'
  expect_patch 403 "$NS/election-0" "$owner" merge "may not change owner references or finalizers"
  expect_patch 403 "$NS/election-0" '{"metadata":{"finalizers":["e2e/block"]}}' merge "may not change owner references or finalizers"
  expect_patch 403 "$NS/$other" '{"metadata":{"annotations":{"election/leader":"forged"}}}'
  expect_patch 403 "$NS/$other" '{"metadata":{"annotations":{"election/leader":null}}}' merge "only election/* annotations, and only on its own pod"
  expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"election-state":"stale"}}}'
  expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"election-state":"leader"}}}'
  expect_patch 403 "$NS/election-zookeeper-0" '{"metadata":{"labels":{"election-state":"leader"}}}'
  expect_patch 403 "$NS/outsider" '{"metadata":{"labels":{"election-state":"stale"}}}' merge "may not change a pod outside its release"
  expect_patch 403 default/outsider '{"metadata":{"labels":{"election-state":"leader"}}}' merge 'cannot patch resource \"pods\"'
  expect_patch 200 "$NS/election-0" '{"metadata":{"annotations":{"election/e2e-probe":"1"}}}'
  expect_patch 200 "$NS/election-0" '{"metadata":{"annotations":{"election/e2e-probe":null}}}'
  expect_patch 200 "$NS/election-0" '{"metadata":{"labels":{"election-state":"e2e-probe"}}}'
  expect_patch 200 "$NS/election-0" "{\"metadata\":{\"labels\":{\"election-state\":\"$own_state\"}}}"
  # A stale sibling's label: only leader -> stale, in the daemon's shape (a
  # merge patch of the label with the resourceVersion read). Fake a leader
  # label on $other (as the admin), let election-0's token try, restore it.
  # The fake claim is dated in the future, so the real leader leaves it alone
  # (it corrects only claims older than its own) and the resourceVersions hold.
  since=$(k get pod "$other" -o jsonpath='{.metadata.annotations.election/state-since}')
  fake_leader() {
    kc annotate pod -n "$NS" "$other" election/state-since=2099-01-01T00:00:00Z --overwrite >/dev/null
    kc label pod -n "$NS" "$other" election-state=leader --overwrite >/dev/null
  }
  sibling_patch() { # pod state|null
    local rv value
    rv=$(k get pod "$1" -o jsonpath='{.metadata.resourceVersion}')
    [[ $2 == null ]] && value=null || value="\"$2\""
    echo "{\"metadata\":{\"labels\":{\"election-state\":$value},\"resourceVersion\":\"$rv\"}}"
  }
  fake_leader
  expect_patch 403 "$NS/$other" "$(sibling_patch "$other" attempter)" merge "may only change election-state from leader to stale"
  expect_patch 403 "$NS/$other" "$(sibling_patch "$other" null)" merge "may only change election-state from leader to stale"
  expect_patch 200 "$NS/$other" "$(sibling_patch "$other" stale)"
  kc label pod -n "$NS" "$other" election-state=attempter --overwrite >/dev/null
  kc annotate pod -n "$NS" "$other" "election/state-since=$since" --overwrite >/dev/null
  expect_patch 403 "$NS/outsider" "$(sibling_patch outsider stale)" merge "may not change a pod outside its release"
  [[ "$(k get pod outsider -o jsonpath='{.metadata.labels.election-state}')" == leader ]] || die "the outsider's label changed"
  k delete pod outsider --wait=false >/dev/null
  # Leases: no create at all (the chart creates the mirror).
  out=$(printf '%s' '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"someone-elses-leader"},"spec":{"holderIdentity":"x"}}' | sa create -f - 2>&1) \
    && die "the ServiceAccount created a Lease: $out"
  grep -q 'Error from server (Forbidden)' <<<"$out" || die "creating a Lease as the ServiceAccount: not 403: $out"
  echo "   kubectl create lease someone-elses-leader as the ServiceAccount -> Forbidden (RBAC: no create on leases)"
  expect_can() { # yes|no verb resource [namespace]
    local got
    got=$(sa auth can-i "$2" "$3" --namespace "${4:-$NS}" 2>/dev/null || true)
    [[ "$got" == "$1" ]] || die "can-i $2 $3 in ${4:-$NS}: $got, expected $1"
    printf '   can-i %-7s %-28s %-9s %s\n' "$2" "$3" "${4:-$NS}" "$got"
  }
  # Everything the account may do beyond what any account in the namespace
  # may (self reviews, discovery): exactly the README's rule, nothing else.
  sa auth can-i --list --namespace "$NS" >"$WORK/can-sa.txt"
  kc auth can-i --list --namespace "$NS" --as "system:serviceaccount:$NS:default" >"$WORK/can-default.txt"
  extra=$(python3 - "$WORK/can-sa.txt" "$WORK/can-default.txt" <<'PY'
import sys
def rules(path):
    return {" ".join(l.split()) for l in open(path).read().splitlines()[1:] if l and not l[0].isspace()}
print("\n".join(sorted(rules(sys.argv[1]) - rules(sys.argv[2]))))
PY
  )
  while read -r line; do echo "   beyond any account's rights: $line"; done <<<"$extra"
  want=$(printf '%s\n' 'events.events.k8s.io [] [] [create patch]' \
    "leases.coordination.k8s.io [] [$RELEASE] [get update patch]" 'pods [] [] [patch list]')
  [[ "$extra" == "$want" ]] || die "the ServiceAccount's rights differ from the README's rules: $extra"
  expect_can yes patch pods/election-2
  expect_can yes list pods
  expect_can yes create events.events.k8s.io
  expect_can yes patch events.events.k8s.io
  expect_can yes update leases.coordination.k8s.io/$RELEASE
  expect_can no update leases.coordination.k8s.io/other
  expect_can no create leases.coordination.k8s.io
  expect_can no get pods/election-0
  expect_can no patch pods/election-0 default
  expect_can no update pods/election-0
  expect_can no delete pods/election-0
  expect_can no watch pods
  expect_can no create pods
  # (pods/status would read as the pod named "status": ask for the subresource)
  got=$(sa auth can-i patch pods --subresource=status --namespace "$NS" 2>/dev/null || true)
  [[ "$got" == no ]] || die "can-i patch pods --subresource=status: $got, expected no"
  printf '   can-i %-7s %-28s %-9s %s\n' patch "pods (subresource status)" "$NS" "$got"
  expect_can no create events
  expect_can no get secrets
  expect_can no list configmaps
  expect_can no create pods/exec
  expect_can no get nodes
  expect_can no patch statefulsets/election
}

# helm upgrade --reuse-values --wait with more --set; prints its duration (ms).
helm_upgrade() {
  local t0
  t0=$(now_ms)
  helm_hooked "$WORK/helm-upgrade.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values "$@" --wait --timeout 3m \
    || die "helm upgrade --reuse-values $* failed: $(cat "$WORK/helm-upgrade.out")"
  echo $(($(now_ms) - t0))
}
# Is the pod being deleted, or gone?
deleting() { [[ -n "$(k get pod "$1" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null)" ]] || ! k get pod "$1" >/dev/null 2>&1; }
exited() { ! kill -0 "$1" 2>/dev/null; } # pid
# The kubelet's part when a pod is deleted (here by the StatefulSet
# controller): the pod's preStop command, then SIGTERM; the process must
# exit on its own within 10 s.
stop_like_kubelet() { # pod
  local pod=$1 pid prestop=()
  wait_until 90 0.1 deleting "$pod" || die "$pod was not deleted within 90 s"
  mapfile -d '' prestop <"$WORK/pods/$pod/prestop"
  "${prestop[@]}" >/dev/null || die "$pod: its preStop command failed"
  pid=$(cat "$PIDS/$pod.pid")
  kill -TERM "$pid"
  wait_until 10 0.1 exited "$pid" || die "$pod's process still runs 10 s after its preStop command and SIGTERM"
  rm -f "$PIDS/$pod.pid"
  log "harness: $pod deleted by the StatefulSet controller: preStop (election release) and SIGTERM; its process exited"
}
# Scales the release down to 3 with helm upgrade, playing election-3's stop.
helm_downscale() {
  local up rc=0 t0
  t0=$(now_ms)
  helm_hooked "$WORK/helm-upgrade.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values --set replicaCount=3 \
    --wait --timeout 3m &
  up=$!
  stop_like_kubelet election-3
  wait "$up" || rc=$?
  ((rc == 0)) || die "helm upgrade --set replicaCount=3 failed: $(cat "$WORK/helm-upgrade.out")"
  echo $(($(now_ms) - t0))
}
role_pods() { k get role "$RELEASE" -o jsonpath='{range .rules[?(@.resources[0]=="pods")]}{.verbs} {.resourceNames}{"\n"}{end}'; }

scale_with_policy() {
  step "6. helm upgrade --reuse-values --set replicaCount=4, then back to 3 (admission policy on)"
  role0=$(k get role "$RELEASE" -o jsonpath='{.metadata.resourceVersion} {.rules}')
  lease0=$(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity} {.spec.leaseTransitions}')
  [[ "${lease0%% *}" == "$leader" ]] || die "lease $RELEASE: holder ${lease0%% *}, not $leader"
  ms=$(helm_upgrade --set replicaCount=4)
  note "helm upgrade replicaCount 3 -> 4 --wait (helm $HELM_MAJOR): $ms ms"
  lease1=$(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity} {.spec.leaseTransitions}')
  [[ "$lease1" == "$lease0" ]] || die "lease $RELEASE before the upgrade '$lease0', right after '$lease1': the upgrade reset the leader's spec"
  [[ "$(k get role "$RELEASE" -o jsonpath='{.metadata.resourceVersion} {.rules}')" == "$role0" ]] || die "the Role changed with the replica count"
  wait_pods_running "$SEL" 4 60
  t0=$(now_ms)
  start_election election-3
  leader=$(wait_one_leader 4 30)
  [[ "$(k get pod election-3 -o jsonpath='{.metadata.annotations.election/node-id}')" == election-3 ]] || die "election-3 did not annotate itself"
  note "after helm upgrade to 4 replicas (Role unchanged): election-3 scheduled, its process started -> labelled $(state_of election-3) in $(($(now_ms) - t0)) ms; one leader ($leader), 3 attempters"
  k get pods -L election-state
  # A renewal later (every 5 s), a reset by the upgrade would show as one more
  # leaseTransitions (holder none -> the leader).
  sleep 6
  lease2=$(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity} {.spec.leaseTransitions}')
  [[ "$lease2" == "$lease0" || "${lease2%% *}" != "${lease0%% *}" ]] || die "lease $RELEASE: '$lease0' before the upgrade, '$lease2' a renewal after it"
  log "lease $RELEASE kept holder and leaseTransitions across helm $HELM_MAJOR upgrade: $lease0 -> $lease2"
  ms=$(helm_downscale)
  leader=$(wait_one_leader 3 30)
  note "helm upgrade replicaCount 4 -> 3 --wait: $ms ms; election-3 stopped through its preStop path; one leader ($leader)"
  [[ "$(k get role "$RELEASE" -o jsonpath='{.metadata.resourceVersion} {.rules}')" == "$role0" ]] || die "the Role changed with the replica count"
  k get pods -L election-state
}

scale_without_policy() {
  step "6b. the same without the admission policy: the Role names each pod"
  ms=$(helm_upgrade --set kubernetes.admissionPolicy.enabled=false)
  log "helm upgrade --set kubernetes.admissionPolicy.enabled=false: $ms ms"
  [[ -z "$(kc get validatingadmissionpolicy,validatingadmissionpolicybinding -o name)" ]] || die "the admission policy is still there"
  [[ "$(role_pods)" == '["patch"] ["election-0","election-1","election-2"]'* ]] || die "Role rules on pods: $(role_pods)"
  log "Role $RELEASE, pods: $(role_pods | tr '\n' ' ')"
  ms=$(helm_upgrade --set replicaCount=4)
  [[ "$(role_pods)" == '["patch"] ["election-0","election-1","election-2","election-3"]'* ]] || die "Role rules on pods after the upgrade to 4: $(role_pods)"
  wait_pods_running "$SEL" 4 60
  start_election election-3
  leader=$(wait_one_leader 4 30)
  E3_TOKEN=$(sed -n 's/.*token: "\(.*\)".*/\1/p' "$WORK/pods/election-3/kubeconfig")
  code=$(api_patch "$E3_TOKEN" "$NS/election-3" '{"metadata":{"annotations":{"election/e2e-probe":"1"}}}')
  [[ $code == 200 ]] || die "election-3's token cannot patch its own pod after the upgrade to 4: HTTP $code $(cat "$WORK/patch.out")"
  note "helm upgrade to 4 without the policy: $ms ms; the Role names election-3, whose token patches its own pod: HTTP $code"
  ms=$(helm_downscale)
  leader=$(wait_one_leader 3 30)
  [[ "$(role_pods)" == '["patch"] ["election-0","election-1","election-2"]'* ]] || die "Role rules on pods after the downgrade: $(role_pods)"
  # The token bound to election-3's pod died with the pod (401); a token of
  # the ServiceAccount itself now meets the Role's names: 403.
  sa_token=$(k create token "$RELEASE" --duration 10m)
  code=$(api_patch "$sa_token" "$NS/election-3" '{"metadata":{"labels":{"election-state":"leader"}}}')
  if [[ $code != 403 ]] || ! grep -q 'cannot patch resource \\"pods\\"' "$WORK/patch.out"; then
    die "patch election-3 after the downgrade: HTTP $code, expected 403 from RBAC: $(cat "$WORK/patch.out")"
  fi
  note "helm upgrade back to 3 without the policy: $ms ms; election-3 stopped through its preStop path, one leader ($leader); patching election-3 as the ServiceAccount: HTTP $code ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["message"])' "$WORK/patch.out"))"
  ms=$(helm_upgrade --set kubernetes.admissionPolicy.enabled=true)
  [[ "$(kc get validatingadmissionpolicy -o name)" == "validatingadmissionpolicy.admissionregistration.k8s.io/$NS-$RELEASE-pods" ]] \
    || die "the admission policy did not come back"
  leader=$(wait_one_leader 3 30)
  log "helm upgrade --set kubernetes.admissionPolicy.enabled=true: $ms ms; policy back, one leader ($leader)"
}

rollouts() {
  step "6c. rollouts changing the pod template: leader changes with the chart's leaderLast, and with RollingUpdate"
  rollout_step
}

# ======================================================================
# 6d-6f. Day 2 (issue 17, items 4 and 9): upgrades the chart refuses on a live
# release, at render time (lookup), and the documented resize of ZooKeeper.
helm_revision() { "$HELM" list --kubeconfig "$KCFG" --namespace "$NS" --filter "^$RELEASE\$" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["revision"])'; }
# generation (bumped by every spec change) and replicas of both StatefulSets
statefulsets() { k get statefulset -o jsonpath='{range .items[*]}{.metadata.name}:{.metadata.generation}:{.spec.replicas} {end}'; }
# expect_refused_upgrade WHAT MESSAGE HELM-FLAGS...: helm upgrade must fail
# with MESSAGE (the chart's, not the API server's) and change nothing.
expect_refused_upgrade() {
  local what=$1 msg=$2 rev0 sts0 t0 ms
  shift 2
  rev0=$(helm_revision)
  sts0=$(statefulsets)
  t0=$(now_ms)
  if "$HELM" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values "$@" --wait --timeout 1m \
    >"$WORK/helm-refused.out" 2>&1; then
    die "helm upgrade $* ($what) was accepted on the live release: statefulsets $sts0 -> $(statefulsets)"
  fi
  ms=$(($(now_ms) - t0))
  grep -qF -- "$msg" "$WORK/helm-refused.out" || die "helm upgrade $* ($what) failed, but not with the chart's '$msg': $(cat "$WORK/helm-refused.out")"
  [[ "$(helm_revision)" == "$rev0" ]] || die "helm upgrade $* was refused, yet the release moved from revision $rev0 to $(helm_revision)"
  [[ "$(statefulsets)" == "$sts0" ]] || die "helm upgrade $* was refused, yet the StatefulSets changed: $sts0 -> $(statefulsets)"
  sed 's/^/   | /' "$WORK/helm-refused.out" | fold -w 160 | head -8
  note "helm upgrade $* ($what): refused at render time in $ms ms; revision $rev0 kept, StatefulSets unchanged ($sts0)"
}

day2_refused_upgrades() {
  step "6d. upgrades refused on the live release: resizing the running ensemble, changing claim templates"
  expect_refused_upgrade "3 running ZooKeeper servers -> 5" \
    "zookeeper.replicas: the running ensemble $RELEASE-zookeeper has 3 servers and this upgrade asks for 5" \
    --set zookeeper.replicas=5
  expect_refused_upgrade "persistence.mode shared -> perReplica" \
    "the live StatefulSet $RELEASE has the volume claim templates [none] and this upgrade renders [files: ReadWriteOnce, 100 MiB" \
    --set persistence.mode=perReplica
  grep -qF "kubectl delete statefulset $RELEASE --namespace $NS: each replica hands over in its preStop hook" "$WORK/helm-refused.out" \
    || die "the refusal of shared -> perReplica does not say to stop the pods with their StatefulSet: $(cat "$WORK/helm-refused.out")"
  expect_refused_upgrade "ZooKeeper volumes 1Gi -> 2Gi" \
    "the live StatefulSet $RELEASE-zookeeper has the volume claim templates [data: ReadWriteOnce, 1024 MiB, class cluster default, annotations []] and this upgrade renders [data: ReadWriteOnce, 2048 MiB" \
    --set zookeeper.persistence.size=2Gi
  k get pods -L election-state
}

# The highest Zxid the running ZooKeeper servers report (decimal).
max_zxid() {
  local p max=0 z
  for p in "${ZK_PODS[@]}"; do
    z=$(zk_4lw 127.0.0.1 "${ZK_ADDR[$p]#*:}" srvr | sed -n 's/^Zxid: 0x//p')
    [[ -n "$z" ]] && ((16#$z > max)) && max=$((16#$z))
  done
  ((max > 0)) || die "no ZooKeeper server reports a Zxid"
  echo "$max"
}
# The documented resize (docs/kubernetes.md, "Upgrading and operating"): a
# planned stop. The election replicas stop (preStop path), then the servers;
# helm upgrade starts 5 servers with one server list; the 3 old ones keep
# their data, so the election path and the fencing floor survive.
day2_resize_with_a_planned_stop() {
  local token0 token1 t0 t_stop p zxid0 zxid1 pods=()
  step "6e. ZooKeeper 3 -> 5 servers by the documented planned stop"
  token0=$(k get pod "$leader" -o jsonpath='{.metadata.annotations.election/fencing-token}')
  [[ "$token0" =~ ^[0-9]+$ ]] || die "$leader has no fencing token: '$token0'"
  # The ensemble's last transaction id (epoch << 32 | counter): a new, empty
  # ensemble would start again at epoch 1.
  zxid0=$(max_zxid)
  # (the pods before the scale: kwok deletes them at once)
  read -r -a pods <<<"$(k get pods -l "$SEL" -o jsonpath='{.items[*].metadata.name}')"
  t0=$(now_ms)
  k scale statefulset "$RELEASE" --replicas=0 >/dev/null
  for p in "${pods[@]}"; do stop_like_kubelet "$p"; done
  wait_until 60 0.2 no_pods "$SEL" || die "election pods left 60 s after kubectl scale --replicas=0: $(k get pods -l "$SEL" -o name)"
  k scale statefulset "$RELEASE-zookeeper" --replicas=0 >/dev/null
  for p in "${ZK_PODS[@]}"; do stop_pid "$PIDS/zk-$p.pid" 10; done
  wait_until 60 0.2 no_pods "$ZK_SEL" || die "ZooKeeper pods left 60 s after kubectl scale --replicas=0"
  t_stop=$(now_ms)
  log "planned stop: election and ZooKeeper StatefulSets at 0 replicas, every process stopped, $((t_stop - t0)) ms"
  # No zookeeper.allowResize: the ensemble is stopped, so the check lets it pass.
  ms=$(helm_upgrade --set zookeeper.replicas=5)
  note "helm upgrade --set zookeeper.replicas=5 on the stopped ensemble: accepted, $ms ms (revision $(helm_revision))"
  wait_pods_running "$ZK_SEL" 5 60
  wait_pods_running "$SEL" 3 60
  start_zookeepers
  for p in $(k get pods -l "$SEL" -o jsonpath='{.items[*].metadata.name}'); do start_election "$p"; done
  leader=$(wait_one_leader 3 90)
  zxid1=$(max_zxid)
  ((zxid1 > zxid0)) || die "ZooKeeper's last zxid after the resize ($(printf 0x%x "$zxid1")) is not above the one before ($(printf 0x%x "$zxid0")): a new, empty ensemble"
  token1=$(k get pod "$leader" -o jsonpath='{.metadata.annotations.election/fencing-token}')
  [[ "$token1" =~ ^[0-9]+$ ]] || die "$leader has no fencing token after the resize: '$token1'"
  ((token1 > token0)) || die "fencing token after the resize ($token1) is not above the one before ($token0): the floor was lost"
  [[ "$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(next(e["value"] for e in p["spec"]["containers"][0]["env"] if e["name"]=="ELECTION_ZK_SERVERS").count(","))' "$WORK/pods/$leader/pod.json")" == 4 ]] \
    || die "the election pods do not list 5 ZooKeeper servers"
  note "ZooKeeper resized 3 -> 5 by a planned stop: no leader for $(($(now_ms) - t0)) ms (stop $((t_stop - t0)) ms); one leader ($leader) on the 5-server ensemble, ZooKeeper's data kept (last zxid $(printf 0x%x "$zxid0") -> $(printf 0x%x "$zxid1")), fencing token $token0 -> $token1"
  k get pods -L election-state
}
# The two documented ways to change claim templates (docs/kubernetes.md,
# "Volume changes"), with the kubelet played by the background loop of
# scripts/e2e-rollout.sh:
# - shared -> perReplica adds a template the running pods have no claim of:
#   an adopting StatefulSet would have to change their volumes (forbidden),
#   so the pods stop with their StatefulSet and helm upgrade starts them on
#   their own claims;
# - perReplica -> shared: delete the StatefulSet but not its pods, then
#   helm upgrade; the new StatefulSet (OnDelete, rollout.strategy
#   leaderLast) adopts them and the post-upgrade hook's `election rollout`
#   replaces them, followers first, the leader last: one leader change.
# Waits until every election pod is on the update revision with a live
# process, then for one leader, which it prints.
settle_election_pods() { # what
  wait_until 120 0.3 settled 3 || die "$1: pods not all on the StatefulSet's update revision with a process 120 s after helm upgrade"
  wait_one_leader 3 60
}
# Leader changes since EV0/LT0 once the Lease names LEADER: "<Events> <leaseTransitions>".
leader_changes_since() { # ev0 lt0 leader
  wait_until 15 0.2 lease_names "$3" || die "the Lease does not name $3"
  echo "$(($(became_leader_total) - $1)) $(($(lease_transitions) - $2))"
}
claim_gone() { ! k get pvc "$1" >/dev/null 2>&1; }
day2_switch_persistence_mode() {
  local t0 ms p ev0 lt0 l0 pv shared_dir files changes lease hook0 token0 token1 out
  step "6f. persistence.mode shared -> perReplica (the StatefulSet deleted with its pods), then back (--cascade=orphan, the hook replaces the pods)"
  pv=$(k get pvc "$RELEASE-files" -o jsonpath='{.spec.volumeName}')
  shared_dir=$(kc get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
  [[ -n "$(find "$shared_dir" -type f)" ]] || die "the shared claim $RELEASE-files holds no files"
  l0=$(wait_one_leader 3 60)
  token0=$(k get pod "$l0" -o jsonpath='{.metadata.annotations.election/fencing-token}')
  [[ "$token0" =~ ^[0-9]+$ ]] || die "$l0 has no fencing token: '$token0'"
  ev0=$(became_leader_total)
  lt0=$(lease_transitions)
  kubelet_loop_start
  t0=$(now_ms)
  k delete statefulset "$RELEASE" --wait=false >/dev/null
  wait_until 60 0.2 no_pods "$SEL" || die "election pods left 60 s after kubectl delete statefulset: $(k get pods -l "$SEL" -o name)"
  helm_hooked "$WORK/helm-upgrade.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values \
    --set persistence.mode=perReplica --wait --timeout 5m \
    || die "helm upgrade --set persistence.mode=perReplica after kubectl delete statefulset failed: $(cat "$WORK/helm-upgrade.out")"
  leader=$(settle_election_pods "persistence.mode shared -> perReplica")
  ms=$(($(now_ms) - t0))
  for p in "$RELEASE-0" "$RELEASE-1" "$RELEASE-2"; do
    [[ "$(k get pod "$p" -o jsonpath='{.spec.volumes[?(@.name=="files")].persistentVolumeClaim.claimName}')" == "files-$p" ]] \
      || die "$p does not mount its own claim files-$p"
  done
  token1=$(k get pod "$leader" -o jsonpath='{.metadata.annotations.election/fencing-token}')
  if [[ ! "$token1" =~ ^[0-9]+$ ]] || ((token1 <= token0)); then
    die "fencing token after the switch '$token1', before $token0: the floor was lost"
  fi
  # Helm deleted the shared claim; its volume (reclaim policy Retain here)
  # still holds the files. With Delete (most provisioners) they are gone.
  wait_until 60 0.3 claim_gone "$RELEASE-files" || die "the shared claim $RELEASE-files is still there 60 s after the switch"
  files=$(find "$shared_dir" -type f | wc -l)
  [[ "$(kc get pv "$pv" -o jsonpath='{.status.phase}')" == Released ]] || die "PersistentVolume $pv of the deleted shared claim: $(kc get pv "$pv" -o jsonpath='{.status.phase}'), not Released"
  ((files > 0)) || die "PersistentVolume $pv of the deleted shared claim holds no files"
  out=$(leader_changes_since "$ev0" "$lt0" "$leader")
  read -r changes lease <<<"$out"
  note "persistence.mode shared -> perReplica (kubectl delete statefulset, helm upgrade): no leader for about $ms ms; leader changes: $changes (BecameLeader Events), leaseTransitions +$lease, leader $l0 -> $leader, fencing token $token0 -> $token1; each pod mounts files-<pod>; the shared claim deleted, its Retain volume $pv Released with its $files files"
  k get pods -L election-state

  # Back to shared: the claim names of the running pods stay valid.
  expect_refused_upgrade "persistence.mode perReplica -> shared" \
    "the live StatefulSet $RELEASE has the volume claim templates [files: ReadWriteOnce, 100 MiB" --set persistence.mode=shared
  grep -qF -- "--cascade=orphan) and run this upgrade again" "$WORK/helm-refused.out" || die "the refusal of perReplica -> shared does not say --cascade=orphan: $(cat "$WORK/helm-refused.out")"
  l0=$(wait_one_leader 3 60)
  ev0=$(became_leader_total)
  lt0=$(lease_transitions)
  hook0=$(wc -l <"$WORK/logs/rollout-hook.log")
  t0=$(now_ms)
  k delete statefulset "$RELEASE" --cascade=orphan >/dev/null
  [[ $(k get pods -l "$SEL" -o name | wc -l) -eq 3 ]] || die "election pods gone with the orphaning delete: $(k get pods -l "$SEL" -o name)"
  helm_hooked "$WORK/helm-upgrade.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values \
    --set persistence.mode=shared --wait --timeout 5m \
    || die "helm upgrade --set persistence.mode=shared after the orphaning delete failed: $(cat "$WORK/helm-upgrade.out")"
  leader=$(settle_election_pods "persistence.mode perReplica -> shared")
  ms=$(($(now_ms) - t0))
  kubelet_loop_stop
  tail -n +$((hook0 + 1)) "$WORK/logs/rollout-hook.log" | grep -q "restarted: .*; the leader's pod last ($l0)" \
    || die "the rollout hook did not replace the leader's pod $l0 last: $(tail -n +$((hook0 + 1)) "$WORK/logs/rollout-hook.log" | tail -3)"
  for p in "$RELEASE-0" "$RELEASE-1" "$RELEASE-2"; do
    [[ "$(k get pod "$p" -o jsonpath='{.spec.volumes[?(@.name=="files")].persistentVolumeClaim.claimName}')" == "$RELEASE-files" ]] \
      || die "$p does not mount the shared claim $RELEASE-files"
  done
  out=$(leader_changes_since "$ev0" "$lt0" "$leader")
  read -r changes lease <<<"$out"
  note "persistence.mode perReplica -> shared (kubectl delete statefulset --cascade=orphan, helm upgrade, the hook replaced the 3 adopted pods, the leader last): $ms ms; leader changes: $changes (BecameLeader Events), leaseTransitions +$lease, leader $l0 -> $leader; each pod mounts $RELEASE-files"
  ((changes == 1 && lease == 1)) || die "persistence.mode perReplica -> shared: $changes leader changes (Events), leaseTransitions +$lease: want exactly 1"
  k get pods -L election-state
}

uninstall_release() {
  step "7. helm uninstall"
  "$HELM" uninstall "$RELEASE" --kubeconfig "$KCFG" --namespace "$NS" --wait --timeout 2m || die "helm uninstall failed"
  # The pods are going: their processes stop as the kubelet would stop them.
  for f in "$PIDS"/election-*.pid; do [[ -f "$f" ]] && stop_pid "$f" 10; done
  wait_until 60 0.3 no_pods "app.kubernetes.io/instance=$RELEASE" || die "pods left 60 s after helm uninstall: $(k get pods -o name)"
  left=$(k get all,serviceaccount,role,rolebinding,pdb,pvc,networkpolicy,configmap,secret,lease -l "app.kubernetes.io/instance=$RELEASE" -o name)
  unexpected=$(grep -Ev '^persistentvolumeclaim/(data-election-zookeeper|files-election)-[0-9]*$' <<<"$left" || true)
  [[ -z "$unexpected" ]] || die "left after helm uninstall: $unexpected"
  log "left after helm uninstall: $(tr '\n' ' ' <<<"$left")(the StatefulSets' claims, kept by their default retention policy)"
  kc get role,rolebinding -n "$NS" -o name | grep -q . && die "RBAC left in $NS: $(kc get role,rolebinding -n "$NS" -o name)"
  kc get validatingadmissionpolicy,validatingadmissionpolicybinding -o name | grep -q . \
    && die "admission policy left: $(kc get validatingadmissionpolicy,validatingadmissionpolicybinding -o name)"
  got=$(kc auth can-i patch pods/election-0 --namespace "$NS" --as "system:serviceaccount:$NS:election" 2>/dev/null || true)
  [[ "$got" == no ]] || die "the ServiceAccount may still patch pods after uninstall: $got"
  [[ -z "$(k get lease -o name)" ]] || die "Leases left in $NS after helm uninstall: $(k get lease -o name)"
  log "no Lease, Role, RoleBinding, ServiceAccount, admission policy or pod left; the account may no longer patch pods"
}

install_with_zookeeper_auth() {
  step "7b. helm install with zookeeper.auth.enabled=true: digest credentials, ACLs, a super identity"
  # A fresh ensemble: the first one's election path was created open.
  for f in "$PIDS"/zk-*.pid; do [[ -f "$f" ]] && stop_pid "$f" 5; done
  rm -rf "$WORK/zk"
  # An operator's super identity, as the chart's zookeeper.auth.superDigestSecret takes it.
  super_pw=e2esuper$RANDOM$RANDOM
  super_digest=$(java -cp "$(zk_classpath)" org.apache.zookeeper.server.auth.DigestAuthenticationProvider "super:$super_pw" 2>/dev/null | sed -n 's/^.*->//p')
  [[ "$super_digest" == super:* ]] || die "no super digest from DigestAuthenticationProvider: '$super_digest'"
  k create secret generic zk-super --from-literal "superDigest=$super_digest" >/dev/null
  "$HELM" install "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --wait --timeout 3m \
    --set zookeeper.auth.enabled=true --set zookeeper.auth.superDigestSecret=zk-super \
    >"$WORK/helm-install-auth.out" || die "helm install with auth failed: $(cat "$WORK/helm-install-auth.out")"
  wait_pods_running "$ZK_SEL" 3 60
  wait_pods_running "$SEL" 3 60
  # What the chart gives the ZooKeeper containers: SERVER_JVMFLAGS with the
  # super digest from the Secret ($(ZK_SUPER_DIGEST) expanded as the kubelet
  # does); zkServer.sh would pass it to java, the harness does.
  k get pod "$RELEASE-zookeeper-0" -o json >"$WORK/zk-pod.json"
  flags=$(python3 scripts/k8s-pod-process.py --pod-json "$WORK/zk-pod.json" --container zookeeper --binary x=x \
    --kubectl "$KUBECTL --kubeconfig $KCFG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["env"].get("SERVER_JVMFLAGS", ""))')
  [[ "$flags" == *"-Dzookeeper.DigestAuthenticationProvider.superDigest=$super_digest"* ]] \
    || die "the ZooKeeper pods' SERVER_JVMFLAGS do not carry the super digest: '$flags'"
  read -r -a ZK_JVMFLAGS <<<"$flags"
  log "harness: the ZooKeeper pods' SERVER_JVMFLAGS (superDigest from Secret zk-super) -> the java command line of each server"
  start_zookeepers
  t0=$(now_ms)
  for pod in $(k get pods -l "$SEL" -o jsonpath='{.items[*].metadata.name}'); do start_election "$pod"; done
  leader=$(wait_one_leader 3 60)
  note "with zookeeper.auth.enabled=true: processes started -> exactly one pod labelled leader ($leader), 2 attempter: $(($(now_ms) - t0)) ms"
  k get pods -L election-state
  # The credentials the replicas got (the generated Secret, mounted 0440) and
  # the ACL they must have put on their znodes: digest:<user>:<base64(sha1)>.
  credentials=$(k get secret "$RELEASE-zk-auth" -o jsonpath='{.data.credentials}' | base64 -d)
  [[ "$credentials" =~ ^election:.{32}$ ]] || die "the generated credentials are not election:<32 characters>"
  cmp -s <(printf '%s' "$credentials") "$WORK/pods/$leader/secrets/zk-auth/credentials" || die "$leader's credentials file differs from the Secret"
  digest_id=$(python3 -c 'import base64,hashlib,sys; u,_,p=sys.argv[1].partition(":"); print(u+":"+base64.b64encode(hashlib.sha1(sys.argv[1].encode()).digest()).decode())' "$credentials")
  root=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(next(e["value"] for e in p["spec"]["containers"][0]["env"] if e["name"]=="ELECTION_ZK_ROOT"))' "$WORK/pods/$leader/pod.json")
  java -cp "$(zk_classpath)" scripts/ZkAclProbe.java "${ZK_ADDR[$RELEASE-zookeeper-0]}" "$root" "$super_pw" 2>"$WORK/acl-probe.err" >"$WORK/acl-probe.out" \
    || die "the ACL probe failed: $(tail -5 "$WORK/acl-probe.err")"
  sed 's/^/   zk | /' "$WORK/acl-probe.out"
  want_acl="digest:$digest_id=cdrwa world:anyone=r"
  grep -q "^acl $root/c_" "$WORK/acl-probe.out" || die "no candidates under $root"
  # The super identity reads the ACLs: also proof that the chart's super digest reached the servers.
  bad=$(grep '^acl ' "$WORK/acl-probe.out" | grep -vF " $want_acl" || true)
  [[ -z "$bad" ]] || die "znodes without the ACL '$want_acl': $bad"
  for want in "anonymous delete $root/c_.* NOAUTH" "anonymous create $root/.* NOAUTH" "super create $root/.* ok" "super delete $root/.* ok" \
    "anonymous create ${root%/*}/e2e-other-release ok" "anonymous delete $root NOAUTH"; do
    grep -qE "^$want$" "$WORK/acl-probe.out" || die "ACL probe: no line '$want'"
  done
  if grep -q '^anonymous setData' "$WORK/acl-probe.out"; then
    grep -qE '^anonymous setData .* NOAUTH$' "$WORK/acl-probe.out" || die "an anonymous client changed the fencing floor"
  fi
  note "auth on: the election path and all $(grep -c "^acl $root/c_" "$WORK/acl-probe.out") candidates carry digest:${digest_id%%:*}:<sha1>=cdrwa + world:anyone=r; anonymous delete/create under it: NOAUTH; anonymous create beside it (another release's path): ok, delete of it: NOAUTH; the chart's super digest reached the servers (super create: ok)"
  "$HELM" uninstall "$RELEASE" --kubeconfig "$KCFG" --namespace "$NS" --wait --timeout 2m >/dev/null || die "helm uninstall (auth) failed"
  for f in "$PIDS"/election-*.pid; do [[ -f "$f" ]] && stop_pid "$f" 10; done
  [[ -n "$(k get secret "$RELEASE-zk-auth" -o name 2>/dev/null)" ]] || die "the generated credentials Secret did not survive helm uninstall (helm.sh/resource-policy: keep)"
  k delete secret "$RELEASE-zk-auth" zk-super >/dev/null
  log "helm uninstall kept $RELEASE-zk-auth (resource-policy keep: the ZooKeeper ACLs name it); deleted by the harness"
}

apply_manifests() {
  step "8. kubectl apply --server-side -f manifests/election.yaml"
  for f in "$PIDS"/zk-*.pid; do [[ -f "$f" ]] && stop_pid "$f" 5; done
  kc apply --server-side -f manifests/election.yaml | sed 's/^/   /'
  wait_pods_running "$SEL" 3 60
  wait_pods_running "$ZK_SEL" 3 60
  k get pods -o wide
  kc get namespace "$NS" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}' | grep -qx restricted \
    || die "namespace $NS is not Pod Security restricted"
  log "manifests/ accepted under Pod Security 'restricted'; pods created and scheduled"
}

namespace_overlays() {
  step "9. manifests/ under kustomize overlays with only namespace: tenant-a, tenant-b"
  e2e_namespace_overlays "$PWD/manifests"
}

print_numbers() {
  step "numbers"
  for n in "${NUMBERS[@]}"; do echo "   $n"; done
  echo
  echo "e2e-k8s passed in $((($(now_ms) - START_ALL) / 1000)) s"
}

# ======================================================================
# The run: the steps in order (numbered as in the header); each starts from
# the cluster the one before left.
build_tools
start_control_plane
make_volumes
install_release
start_processes
run_helm_test
kill_leader_not_restarted
restart_takeover
prestop_handover
delete_leader_pod
zookeeper_down
service_account_rights
scale_with_policy
scale_without_policy
rollouts
day2_refused_upgrades
day2_resize_with_a_planned_stop
day2_switch_persistence_mode
uninstall_release
install_with_zookeeper_auth
apply_manifests
namespace_overlays
print_numbers
