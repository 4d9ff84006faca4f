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
#      `helm test` passes, its pod's kubectl commands run by the harness as
#      the test's ServiceAccount (kwok never completes a non-Job pod)
#   3. SIGKILL of the leader's process, NOT restarted: another pod labelled
#      leader (bound: session timeout + 4 s) and exactly one pod labelled
#      leader, the dead one `stale` (bound: session timeout + 6 s); the
#      Events (Candidate, BecameLeader, StaleLabelCorrected) and the Lease
#      mirror (holder, leaseTransitions + 1, renewTime moving); then the
#      harness restarts the process, as a CrashLoopBackOff ends
#   4. preStop path (the pod's own preStop command, `election release`, then
#      SIGTERM): the old leader's pod says `stopping`, another pod leads
#      within 3 s; then `kubectl delete pod` of the leader: the same
#      handover, the StatefulSet recreates the pod, whose new process labels
#      itself, and the token bound to the deleted pod is refused (401)
#   5. the ValidatingAdmissionPolicy with election-0's pod-bound token: 403
#      for a sibling's or its own image, other labels/annotations, a
#      sibling's annotations or label (but leader -> stale), finalizers, a
#      pod in another namespace; 200 for its own label and election/*
#      annotations; the Role's rules exactly (can-i --list), no get/watch/
#      delete/create/update on pods, no secrets
#   6. kubectl scale statefulset to 4: the Role is unchanged, election-3
#      labels itself; still one leader. helm uninstall: no RBAC, admission
#      policy nor object left (except the ZooKeeper volumes that
#      StatefulSets keep by design)
#   7. kubectl apply --server-side -k manifests/ (restricted Pod Security
#      namespace): accepted, pods created and scheduled
#
# Everything it starts is stopped on exit, failure included; E2E_TIMEOUT
# (default 600 s) bounds the run. When the control plane cannot be built or
# started (no Go), it prints SKIPPED and exits 0, or 1 with E2E_REQUIRED=1.
# KEEP=1 keeps the cluster and processes for a look around (then run
# ELECTION_K8S_DIR=<dir> scripts/k8s-down.sh and kill the printed pids).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh
# shellcheck source=scripts/lib-zk.sh
source scripts/lib-zk.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/election-e2e-k8s.XXXXXX")
export ELECTION_K8S_DIR=$WORK/cluster
# shellcheck source=scripts/lib-k8s.sh
source scripts/lib-k8s.sh

NS=election
RELEASE=election
SEL="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=election"
ZK_SEL="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=zookeeper"
E2E_TIMEOUT=${E2E_TIMEOUT:-600}
HELM_MAJOR=${HELM_MAJOR:-4}
BIN=$PWD/target/debug/election
PIDS=$WORK/pids
mkdir -p "$PIDS" "$WORK/logs" "$WORK/pv"
START_ALL=$(now_ms)
NUMBERS=()

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

# --- tools and the cluster
if ! k8s_tools_present; then
  command -v go >/dev/null || skip "Go is not installed: the control plane cannot be built (scripts/build-go-tools.sh)"
  bash scripts/build-go-tools.sh || skip "scripts/build-go-tools.sh failed: no control plane"
fi
[[ -x "$GO_TOOLS/helm$HELM_MAJOR/helm" ]] || bash scripts/build-go-tools.sh "helm$HELM_MAJOR"
HELM=$GO_TOOLS/helm$HELM_MAJOR/helm
if [[ -z "$(zk_classpath)" ]] || ! command -v java >/dev/null; then
  skip "no ZooKeeper/java (scripts/lib-zk.sh ensure_zookeeper installs them)"
fi
cargo build --quiet --bin election
[[ -x "$BIN" ]] || die "no $BIN"

step "control plane (scripts/k8s-up.sh)"
t0=$(now_ms)
bash scripts/k8s-up.sh >"$WORK/k8s-up.out" || skip "the control plane did not start (see above)"
note "control plane ready in $(($(now_ms) - t0)) ms"
KCFG=$ELECTION_K8S_DIR/admin.kubeconfig
SERVER=$(cat "$ELECTION_K8S_DIR/server")
CA=$ELECTION_K8S_DIR/pki/ca.crt
kc() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }
k() { kc --namespace "$NS" "$@"; }
kc get nodes
kc auth can-i '*' '*' >/dev/null || die "the admin cannot do everything?"

# --- storage: no provisioner here, so PersistentVolumes made beforehand
# (hostPath on this machine; reclaim policy Retain). Claims without a
# storage class bind to them (there is no default StorageClass).
for i in $(seq 0 7); do
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
log "harness: no volume provisioner here: 8 hostPath PersistentVolumes under $WORK/pv stand in"

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
    bg_start "$WORK" "zk-$p" java -Xmx128m -cp "$(zk_classpath)" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
  done
  local deadline=$((SECONDS + 60)) up
  while ((SECONDS < deadline)); do
    up=0
    for p in "${pods[@]}"; do
      zk_4lw 127.0.0.1 "${ZK_ADDR[$p]#*:}" srvr | grep -qE '^Mode: (leader|follower|standalone)' && up=$((up + 1))
    done
    ((up == ${#pods[@]})) && { log "ZooKeeper ensemble of ${#pods[@]} servers up"; return; }
    sleep 0.3
  done
  die "the ZooKeeper ensemble did not form"
}

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
    --map-listen "$http_port=127.0.0.1:$http" --map-listen "$admin_port=127.0.0.1:$admin")
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

# Waits until every pod of a selector exists, is bound to a kwok node and Running.
wait_pods_running() { # selector count timeout
  local sel=$1 count=$2 timeout=$3 deadline out
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    out=$(k get pods -l "$sel" -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase}{"\n"}{end}' 2>/dev/null || true)
    if [[ $(grep -c ' kwok-node-[0-9]* Running$' <<<"$out") -eq $count && $(grep -c . <<<"$out") -eq $count ]]; then
      return 0
    fi
    sleep 0.3
  done
  echo "$out" >&2
  k get pods -l "$sel" -o wide >&2 || true
  k describe pods -l "$sel" 2>&1 | tail -40 >&2 || true
  die "pods $sel: not $count Running on kwok nodes within ${timeout}s"
}

# state of each election pod: "election-0=leader election-1=attempter ..."
states() {
  k get pods -l "$SEL" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.labels.election-state} {end}'
}
leaders() {
  k get pods -l "$SEL,election-state=leader" -o jsonpath='{.items[*].metadata.name}'
}

# Waits until exactly one pod leads and all N others are attempters; prints
# the leader. wait_one_leader N TIMEOUT [NOT_THIS_POD]
wait_one_leader() {
  local n=$1 timeout=$2 not=${3:-} deadline s l
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    s=$(states 2>/dev/null || true)
    l=$(leaders 2>/dev/null || true)
    if [[ -n "$l" && "$l" != *" "* && "$l" != "$not" ]] \
      && [[ $(grep -o '=attempter' <<<"$s" | wc -l) -eq $((n - 1)) ]]; then
      echo "$l"
      return 0
    fi
    sleep 0.1
  done
  die "no single leader with $((n - 1)) attempters within ${timeout}s${not:+ (other than $not)}: $s"
}

# Milliseconds until a pod other than $1 is labelled leader (alone).
time_new_leader() { # old timeout
  local old=$1 timeout=$2 t0 deadline l
  t0=$(now_ms)
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    l=$(leaders 2>/dev/null || true)
    for p in $l; do
      if [[ "$p" != "$old" ]]; then
        echo $(($(now_ms) - t0))
        return 0
      fi
    done
    sleep 0.05
  done
  die "no new leader within ${timeout}s: $(states)"
}

# ======================================================================
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

step "2b. helm test, its pod played for real"
# kwok would leave the test pod Running forever (it completes only Job
# pods): the harness runs its containers in order, as the kubelet would,
# with kubectl built here for the image's kubectl and a token of the test's
# ServiceAccount bound to the pod, then reports the outcome in the pod's
# status, which `helm test` reads.
"$HELM" test "$RELEASE" --kubeconfig "$KCFG" --namespace "$NS" --timeout 2m >"$WORK/helm-test.out" 2>&1 &
helm_test=$!
TEST_POD=$RELEASE-test-leader
deadline=$((SECONDS + 60))
until [[ "$(k get pod "$TEST_POD" -o jsonpath='{.status.phase}' 2>/dev/null)" == Running ]]; do
  ((SECONDS < deadline)) || die "the helm test pod did not start: $(cat "$WORK/helm-test.out")"
  sleep 0.2
done
run_test_pod() {
  local dir=$WORK/pods/$TEST_POD c rc=0 phase=Succeeded statuses=() started finished
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
KUBECTL_VERSION=$("$KUBECTL" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
run_test_pod
rc=0
wait "$helm_test" || rc=$?
grep -E '^(TEST SUITE|Phase)' "$WORK/helm-test.out" | paste - - | sed 's/^/   | /' | sort -u
((rc == 0)) || die "helm test failed (exit $rc)"
grep -q 'Phase:.*Succeeded' "$WORK/helm-test.out" || die "helm test did not report Succeeded"
log "helm test passed: its checks ran against the real API server as the test's ServiceAccount"

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
deadline=$((SECONDS + session_s + 20))
while l=$(leaders 2>/dev/null || true); [[ -z "$l" || "$l" == *" "* || "$l" == "$leader" ]]; do
  ((SECONDS < deadline)) || die "still not exactly one pod labelled leader: $(states)"
  sleep 0.05
done
ms=$(($(now_ms) - t0))
new_leader=$l
note "SIGKILL of the leader, process not restarted -> exactly one pod labelled leader ($new_leader): $ms ms after the kill"
((ms <= (session_s + 6) * 1000)) || die "stale label corrected after $ms ms, bound $(((session_s + 6) * 1000)) ms"
old_state=$(k get pod "$leader" -o jsonpath='{.metadata.labels.election-state}')
[[ "$old_state" == stale ]] || die "the dead leader $leader is labelled '$old_state', not stale"
k get pods -L election-state
log "events of $new_leader and $leader (kubectl get events --field-selector involvedObject.name=...)"
for p in "$new_leader" "$leader"; do
  k get events --field-selector "involvedObject.name=$p" --sort-by=.eventTime \
    -o custom-columns=OBJECT:.involvedObject.name,TYPE:.type,REASON:.reason,FROM:.reportingComponent,MESSAGE:.message | sed 's/^/   /'
done
reasons=$(k get events --field-selector "involvedObject.name=$new_leader" -o jsonpath='{.items[*].reason}')
[[ " $reasons " == *" Candidate "* && " $reasons " == *" BecameLeader "* ]] || die "$new_leader: events $reasons, want Candidate and BecameLeader"
reasons=$(k get events --field-selector "involvedObject.name=$leader" -o jsonpath='{.items[*].reason}')
[[ " $reasons " == *" BecameLeader "* && " $reasons " == *" StaleLabelCorrected "* ]] || die "$leader: events $reasons, want BecameLeader and StaleLabelCorrected"
uid=$(k get pod "$new_leader" -o jsonpath='{.metadata.uid}')
k describe pod "$new_leader" | grep -q BecameLeader || die "kubectl describe pod $new_leader does not show BecameLeader"
log "kubectl describe pod $new_leader shows its Events (involvedObject.uid $uid)"
# The Lease mirror: holder and transitions follow the election.
deadline=$((SECONDS + 15))
until [[ "$(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" == "$new_leader" ]]; do
  ((SECONDS < deadline)) || die "lease $RELEASE: holder $(k get lease "$RELEASE" -o jsonpath='{.spec.holderIdentity}'), not $new_leader"
  sleep 0.2
done
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
  role=$(k get pod "$p" -o jsonpath='{.metadata.labels.election-state}')
  note "RSS of $p ($role, debug build, every Kubernetes helper on): $(awk '/^VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$(cat "$PIDS/$p.pid")/status")"
done
log "harness: restarting the process of $leader (late: a CrashLoopBackOff ends)"
start_election "$leader"
leader=$(wait_one_leader 3 30)
k get pods -L election-state

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
old_state=$(k get pod "$leader" -o jsonpath='{.metadata.labels.election-state}')
[[ "$old_state" == stopping ]] || die "$leader is labelled '$old_state' after its stop, not stopping"
token=$(k get pod "$leader" -o jsonpath='{.metadata.annotations.election/fencing-token}')
[[ -z "$token" ]] || die "$leader still carries election/fencing-token=$token after it stopped leading"
log "$leader says election-state=stopping after it exited, and no longer carries a fencing token"
log "harness: restarting the process of $leader (restartPolicy Always)"
start_election "$leader"
leader=$(wait_one_leader 3 30)
k get pods -L election-state

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
deadline=$((SECONDS + 60))
until [[ "$(k get pod "$leader" -o jsonpath='{.metadata.uid} {.spec.nodeName} {.status.phase}' 2>/dev/null)" =~ ^[0-9a-f-]+\ kwok-node-[0-9]+\ Running$ ]] \
  && [[ "$(k get pod "$leader" -o jsonpath='{.metadata.uid}')" != "$old_uid" ]]; do
  ((SECONDS < deadline)) || die "$leader was not recreated and scheduled within 60 s"
  sleep 0.2
done
log "the StatefulSet controller recreated $leader (uid $old_uid -> $(k get pod "$leader" -o jsonpath='{.metadata.uid}'))"
# The API server caches successful token reviews for 10 s
# (--authentication-token-success-cache-ttl): allow for that.
deadline=$((SECONDS + 20))
while out=$("$KUBECTL" --kubeconfig "$old_kcfg" get pods -l "$SEL" 2>&1); do
  ((SECONDS < deadline)) || die "the token bound to the deleted pod still works after 20 s"
  sleep 0.5
done
grep -q Unauthorized <<<"$out" || die "the old pod's token: not 401: $out"
log "the token bound to the deleted pod is rejected (401 Unauthorized) $(($(now_ms) - t0)) ms after the delete"
start_election "$leader"
leader=$(wait_one_leader 3 30)
k get pods -L election-state

step "5. what the ServiceAccount's token may do"
SA_KCFG=$WORK/pods/election-0/kubeconfig
sa() { "$KUBECTL" --kubeconfig "$SA_KCFG" "$@"; }
kc run outsider --namespace default --image=registry.example/none:1 --restart=Never >/dev/null
SA_TOKEN=$(sed -n 's/.*token: "\(.*\)".*/\1/p' "$SA_KCFG")
# Patches by hand with the token of election-0's process (bound to that
# pod): RBAC lets the account patch any pod of the namespace, and the
# ValidatingAdmissionPolicy decides what may change.
patch_status() { # namespace pod body [content-type]
  curl -sS -o "$WORK/patch.out" -w '%{http_code}' --cacert "$CA" -X PATCH \
    -H "Authorization: Bearer $SA_TOKEN" -H "Content-Type: ${4:-application/merge-patch+json}" \
    --data "$3" "$SERVER/api/v1/namespaces/$1/pods/$2"
}
expect_patch() { # code namespace/pod body [content-type]
  local code
  code=$(patch_status "${2%/*}" "${2#*/}" "$3" "${4:-}")
  [[ $code == "$1" ]] || die "PATCH pod $2 $3 as the ServiceAccount (token of election-0): HTTP $code, expected $1: $(cat "$WORK/patch.out")"
  printf '   PATCH pod %-26s %-78s -> HTTP %s %s\n' "$2" "$3" "$code" \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("message","")[:110])' "$WORK/patch.out" 2>/dev/null || true)"
}
[[ "$(kc get validatingadmissionpolicy "$NS-$RELEASE-pods" "$NS-$RELEASE-lease" -o name 2>/dev/null | wc -l)" -eq 2 ]] \
  || die "no ValidatingAdmissionPolicy $NS-$RELEASE-pods and $NS-$RELEASE-lease: the chart should render them on this API server"
other=$(states | tr ' ' '\n' | grep -v '^election-0=' | grep -v '=leader$' | head -1)
other=${other%%=*}
[[ -n "$other" ]] || die "no non-leader sibling of election-0: $(states)"
own_state=$(k get pod election-0 -o jsonpath='{.metadata.labels.election-state}')
image='{"spec":{"containers":[{"name":"election","image":"registry.example/evil:1"}]}}'
smp=application/strategic-merge-patch+json
log "the ValidatingAdmissionPolicy, on the real API server (sibling: $other)"
expect_patch 403 "$NS/$other" "$image" "$smp"
expect_patch 403 "$NS/election-0" "$image" "$smp"
expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"app.kubernetes.io/component":"x"}}}'
expect_patch 403 "$NS/election-0" '{"metadata":{"labels":{"app.kubernetes.io/component":"x"}}}'
expect_patch 403 "$NS/election-0" '{"metadata":{"labels":{"e2e-probe":"1"}}}'
expect_patch 403 "$NS/election-0" '{"metadata":{"annotations":{"e2e/probe":"1"}}}'
expect_patch 403 "$NS/$other" '{"metadata":{"annotations":{"election/leader":"forged"}}}'
expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"election-state":"stale"}}}'
expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"election-state":"leader"}}}'
expect_patch 403 "$NS/election-zookeeper-0" '{"metadata":{"labels":{"election-state":"leader"}}}'
expect_patch 403 "$NS/election-0" '{"metadata":{"finalizers":["e2e/block"]}}'
expect_patch 403 default/outsider '{"metadata":{"labels":{"election-state":"leader"}}}'
expect_patch 200 "$NS/election-0" '{"metadata":{"annotations":{"election/e2e-probe":"1"}}}'
expect_patch 200 "$NS/election-0" '{"metadata":{"labels":{"election-state":"e2e-probe"}}}'
expect_patch 200 "$NS/election-0" "{\"metadata\":{\"labels\":{\"election-state\":\"$own_state\"}}}"
# A stale sibling's label: only leader -> stale. Fake one on $other (as the
# admin), let election-0's token correct it, then restore it.
kc label pod -n "$NS" "$other" election-state=leader --overwrite >/dev/null
expect_patch 403 "$NS/$other" '{"metadata":{"labels":{"election-state":"attempter"}}}'
expect_patch 200 "$NS/$other" '{"metadata":{"labels":{"election-state":"stale"}}}'
kc label pod -n "$NS" "$other" election-state=attempter --overwrite >/dev/null
# Leases: RBAC allows create (it cannot name the Lease); the policy allows
# only the mirror's name.
code=$(curl -sS -o "$WORK/lease.out" -w '%{http_code}' --cacert "$CA" -X POST \
  -H "Authorization: Bearer $SA_TOKEN" -H 'Content-Type: application/json' \
  --data '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"someone-elses-leader"},"spec":{"holderIdentity":"x"}}' \
  "$SERVER/apis/coordination.k8s.io/v1/namespaces/$NS/leases")
[[ $code == 403 ]] || die "creating Lease someone-elses-leader as the ServiceAccount: HTTP $code, expected 403: $(cat "$WORK/lease.out")"
echo "   POST lease someone-elses-leader as the ServiceAccount -> HTTP $code (only the Lease $RELEASE may be created)"
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
want=$(printf '%s\n' 'events.events.k8s.io [] [] [create]' 'leases.coordination.k8s.io [] [] [create]' \
  "leases.coordination.k8s.io [] [$RELEASE] [get update]" 'pods [] [] [patch list]')
[[ "$extra" == "$want" ]] || die "the ServiceAccount's rights differ from the README's rules: $extra"
expect_can yes patch pods/election-2
expect_can yes list pods
expect_can yes create events.events.k8s.io
expect_can yes update leases.coordination.k8s.io/$RELEASE
expect_can no update leases.coordination.k8s.io/other
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

step "6. kubectl scale statefulset to 4 (no Role change), then helm uninstall"
role0=$(k get role "$RELEASE" -o jsonpath='{.metadata.resourceVersion} {.rules}')
k scale statefulset "$RELEASE" --replicas 4 >/dev/null
wait_pods_running "$SEL" 4 60
start_election election-3
leader=$(wait_one_leader 4 30)
[[ "$(k get role "$RELEASE" -o jsonpath='{.metadata.resourceVersion} {.rules}')" == "$role0" ]] || die "the Role changed"
[[ "$(k get pod election-3 -o jsonpath='{.metadata.annotations.election/node-id}')" == election-3 ]] || die "election-3 did not annotate itself"
note "after kubectl scale to 4 replicas (Role unchanged): one leader ($leader), 3 attempters; election-3 labelled itself"
k get pods -L election-state
"$HELM" uninstall "$RELEASE" --kubeconfig "$KCFG" --namespace "$NS" --wait --timeout 2m || die "helm uninstall failed"
# The pods are going: their processes stop as the kubelet would stop them.
for f in "$PIDS"/election-*.pid; do [[ -f "$f" ]] && stop_pid "$f" 10; done
deadline=$((SECONDS + 60))
while [[ -n "$(k get pods -l "app.kubernetes.io/instance=$RELEASE" -o name)" ]]; do
  ((SECONDS < deadline)) || die "pods left 60 s after helm uninstall: $(k get pods -o name)"
  sleep 0.3
done
left=$(k get all,serviceaccount,role,rolebinding,pdb,pvc,networkpolicy,configmap,secret -l "app.kubernetes.io/instance=$RELEASE" -o name)
unexpected=$(grep -v '^persistentvolumeclaim/data-election-zookeeper-[0-9]*$' <<<"$left" || true)
[[ -z "$unexpected" ]] || die "left after helm uninstall: $unexpected"
log "left after helm uninstall: $(tr '\n' ' ' <<<"$left")(the ZooKeeper StatefulSet's claims, kept by its default retention policy)"
kc get role,rolebinding -n "$NS" -o name | grep -q . && die "RBAC left in $NS: $(kc get role,rolebinding -n "$NS" -o name)"
kc get validatingadmissionpolicy,validatingadmissionpolicybinding -o name | grep -q . \
  && die "admission policy left: $(kc get validatingadmissionpolicy,validatingadmissionpolicybinding -o name)"
got=$(kc auth can-i patch pods/election-0 --namespace "$NS" --as "system:serviceaccount:$NS:election" 2>/dev/null || true)
[[ "$got" == no ]] || die "the ServiceAccount may still patch pods after uninstall: $got"
log "no Role, RoleBinding, ServiceAccount or pod left; the account may no longer patch pods"

step "7. kubectl apply --server-side -k manifests/"
for f in "$PIDS"/zk-*.pid; do [[ -f "$f" ]] && stop_pid "$f" 5; done
kc apply --server-side -k manifests/ | sed 's/^/   /'
wait_pods_running "$SEL" 3 60
wait_pods_running "$ZK_SEL" 3 60
k get pods -o wide
kc get namespace "$NS" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}' | grep -qx restricted \
  || die "namespace $NS is not Pod Security restricted"
log "manifests/ accepted under Pod Security 'restricted'; pods created and scheduled"

step "numbers"
for n in "${NUMBERS[@]}"; do echo "   $n"; done
echo
echo "e2e-k8s passed in $((($(now_ms) - START_ALL) / 1000)) s"
