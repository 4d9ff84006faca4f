# shellcheck shell=bash
# Rollouts on the real control plane: sourced by scripts/e2e-k8s.sh, whose
# helpers it uses (k, log, note, die, start_election, pod_kubeconfig,
# wait_one_leader, leaders, ...). Two parts:
#
# - the rollout hook pod (rollout.strategy=leaderLast), played for real:
#   kwok marks it Running and would never complete it (it completes only Job
#   pods), so `helm upgrade` waits until the harness has run its command,
#   `election rollout` built here, with the pod's env and a token of the
#   hook's ServiceAccount bound to the pod, and reported the outcome in the
#   pod's status (Succeeded only on exit 0). Every `helm upgrade` of the e2e
#   goes through helm_hooked.
# - step 6c: rollouts that change the pod template, counted in leader
#   changes (BecameLeader Events and the Lease mirror's leaseTransitions),
#   with 3 and 5 replicas, twice in a row each: the chart's leaderLast
#   (asserted: exactly one change, every pod on the update revision, one
#   leader), then the StatefulSet controller's RollingUpdate (reported).

ROLLOUT_POD=$RELEASE-rollout

# Runs the rollout hook pod's container as the kubelet would and writes its
# outcome into the pod's status.
run_hook_pod() {
  local dir=$WORK/pods/$ROLLOUT_POD rc=0 phase=Succeeded started finished envs=() argv=()
  rm -rf "$dir"
  mkdir -p "$dir"
  k get pod "$ROLLOUT_POD" -o json >"$dir/pod.json"
  pod_kubeconfig "$ROLLOUT_POD" "$dir/kubeconfig"
  python3 scripts/k8s-pod-process.py --pod-json "$dir/pod.json" --container rollout --entrypoint /usr/local/bin/election \
    --binary "/usr/local/bin/election=$BIN" --kubectl "$KUBECTL --kubeconfig $KCFG" >"$dir/plan.json"
  mapfile -d '' envs < <(python3 -c 'import json,sys; [sys.stdout.write(f"{k}={v}\0") for k,v in json.load(open(sys.argv[1]))["env"].items()]' "$dir/plan.json")
  mapfile -d '' argv < <(python3 -c 'import json,sys; [sys.stdout.write(a+"\0") for a in json.load(open(sys.argv[1]))["argv"]]' "$dir/plan.json")
  log "harness: hook pod $ROLLOUT_POD (image $(k get pod "$ROLLOUT_POD" -o jsonpath='{.spec.containers[0].image}')) -> ${argv[*]}, its env, token of ServiceAccount $(k get pod "$ROLLOUT_POD" -o jsonpath='{.spec.serviceAccountName}') bound to the pod"
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  env -i "${envs[@]}" "KUBECONFIG=$dir/kubeconfig" PATH=/usr/bin:/bin "${argv[@]}" >"$dir/stdout" 2>"$dir/stderr" || rc=$?
  finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  cat "$dir/stdout" "$dir/stderr" >>"$WORK/logs/rollout-hook.log"
  sed 's/^/   rollout | /' "$dir/stdout" >&2
  ((rc == 0)) || { phase=Failed; sed 's/^/   rollout | /' "$dir/stderr" >&2; }
  python3 - "$phase" "$rc" "$started" "$finished" "$(k get pod "$ROLLOUT_POD" -o jsonpath='{.spec.containers[0].image}')" >"$dir/status.json" <<'PY'
import json, sys
phase, rc, started, finished, image = sys.argv[1:]
print(json.dumps({"status": {"phase": phase, "containerStatuses": [{
    "name": "rollout", "image": image, "imageID": "", "ready": False, "restartCount": 0,
    "state": {"terminated": {"exitCode": int(rc), "reason": "Completed" if rc == "0" else "Error",
                             "startedAt": started, "finishedAt": finished}}}]}}))
PY
  k patch pod "$ROLLOUT_POD" --subresource status --type merge --patch-file "$dir/status.json" >/dev/null
  log "harness: hook pod $ROLLOUT_POD -> phase $phase (election rollout exit $rc)"
}

# `helm ARGS...` with its output in OUT, the rollout hook pod played when
# one starts; returns helm's exit code.
helm_hooked() { # out helm-args...
  local out=$1 pid rc=0 seen played=" "
  shift
  "$HELM" "$@" >"$out" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    seen=$(k get pod "$ROLLOUT_POD" -o jsonpath='{.status.phase} {.metadata.uid}' 2>/dev/null || true)
    if [[ "$seen" =~ ^Running\ (.+)$ && "$played" != *" ${BASH_REMATCH[1]} "* ]]; then
      played+="${BASH_REMATCH[1]} "
      run_hook_pod
    fi
    sleep 0.2
  done
  wait "$pid" || rc=$?
  return "$rc"
}

# --- the kubelet's part while pods come and go (background)

# "name uid deleting phase node" of each election pod, `-` for empty.
election_pods() {
  k get pods -l "$SEL" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    m = p["metadata"]
    print(m["name"], m["uid"], "yes" if m.get("deletionTimestamp") else "-", p.get("status", {}).get("phase") or "-", p["spec"].get("nodeName") or "-")'
}

# The pod's preStop command, then SIGTERM; waits for the process to exit.
stop_election() { # pod
  local pod=$1 pid prestop=()
  mapfile -d '' prestop <"$WORK/pods/$pod/prestop"
  "${prestop[@]}" >/dev/null 2>&1 || log "harness: $pod: its preStop command failed"
  pid=$(cat "$PIDS/$pod.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && log "harness: $pod's process still runs 10 s after preStop and SIGTERM"
  stop_pid "$PIDS/$pod.pid" 1
}

# Until STOP exists: a process whose pod is being deleted, gone or replaced
# (another uid) is stopped through its preStop path; a pod Running on a kwok
# node without a process gets one. Pods in list order, one at a time.
kubelet_loop() { # stop-file
  local stop=$1 name uid deleting phase node f own listed
  while [[ ! -f "$stop" ]]; do
    listed=$(election_pods 2>/dev/null) || { sleep 0.3; continue; }
    for f in "$PIDS"/"$RELEASE"-[0-9]*.pid; do
      [[ -f "$f" ]] || continue
      name=$(basename "$f" .pid)
      own=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["uid"])' "$WORK/pods/$name/pod.json")
      if ! grep -q "^$name $own - " <<<"$listed"; then
        log "harness: pod $name (uid $own) is being deleted or was replaced: preStop, SIGTERM"
        (stop_election "$name") || true
      fi
    done
    while read -r name uid deleting phase node; do
      [[ -n "$name" && "$deleting" == - && "$phase" == Running && "$node" == kwok-node-* ]] || continue
      pid_alive "$PIDS/$name.pid" && continue
      log "harness: pod $name (uid $uid) scheduled on $node: starting its process"
      (start_election "$name") || log "harness: could not start $name"
    done <<<"$listed"
    sleep 0.3
  done
}

KUBELET_STOP=$WORK/kubelet-loop.stop
kubelet_loop_start() {
  rm -f "$KUBELET_STOP"
  kubelet_loop "$KUBELET_STOP" &
  # First in the pid files' order: the cleanup stops it before the processes it starts.
  echo $! >"$PIDS/0-kubelet-loop.pid"
}
kubelet_loop_stop() {
  touch "$KUBELET_STOP"
  wait "$(cat "$PIDS/0-kubelet-loop.pid")" 2>/dev/null || true
  rm -f "$PIDS/0-kubelet-loop.pid"
}

# --- counting leader changes

# BecameLeader Events of the release's pods, each object counted with its
# series (the recorder folds a repeat within 6 minutes into one object).
became_leader_total() {
  k get events.events.k8s.io -o json | python3 -c '
import json, sys
rel = sys.argv[1] + "-"
n = 0
for e in json.load(sys.stdin)["items"]:
    if e.get("reason") == "BecameLeader" and e["regarding"]["name"].startswith(rel):
        n += (e.get("series") or {}).get("count", 1)
print(n)' "$RELEASE"
}
lease_transitions() { k get lease "$RELEASE" -o jsonpath='{.spec.leaseTransitions}'; }

# Every election pod carries the StatefulSet's update revision.
all_on_update_revision() {
  local update revisions
  update=$(k get statefulset "$RELEASE" -o jsonpath='{.status.updateRevision}')
  [[ -n "$update" ]] || return 1
  revisions=$(k get pods -l "$SEL" -o jsonpath='{range .items[*]}{.metadata.labels.controller-revision-hash}{"\n"}{end}')
  ! grep -qvx "$update" <<<"$revisions"
}

# Each election pod has a live process started for its current uid.
processes_current() {
  local name uid deleting phase node
  while read -r name uid deleting phase node; do
    [[ "$deleting" == - ]] && pid_alive "$PIDS/$name.pid" || return 1
    [[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["uid"])' "$WORK/pods/$name/pod.json")" == "$uid" ]] || return 1
  done < <(election_pods)
}

# Are the N election pods all on the update revision, each with its process?
settled() { # n
  all_on_update_revision && [[ $(k get pods -l "$SEL" -o name | wc -l) -eq $1 ]] && processes_current
}

# One helm upgrade that changes the pod template; prints
# "<leader changes> <leaseTransitions delta> <ms> <leader before> <leader after>".
rollout_once() { # replicas helm-set-args...
  local n=$1 t0 ev0 lt0 l0 l1 ms serial
  shift
  # (run in $(...): a counter would not survive the call; the clock does)
  serial=$(now_ms)
  l0=$(wait_one_leader "$n" 60)
  ev0=$(became_leader_total)
  lt0=$(lease_transitions)
  t0=$(now_ms)
  helm_hooked "$WORK/helm-rollout.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values \
    --set-string "podAnnotations.e2e-rollout=$serial" "$@" --wait --timeout 5m \
    || die "helm upgrade (rollout $serial, $*) failed: $(cat "$WORK/helm-rollout.out")"
  # RollingUpdate returns as soon as kwok says the pods are Ready: wait for
  # the processes too.
  wait_until 120 0.3 settled "$n" || die "rollout $serial: pods not all on the update revision after 120 s"
  l1=$(wait_one_leader "$n" 90)
  ms=$(($(now_ms) - t0))
  # The new leader writes the Lease at once; its Event goes out alongside.
  wait_until 15 0.2 lease_names "$l1" || die "rollout $serial: the Lease does not name $l1"
  sleep 3
  all_on_update_revision || die "rollout $serial: a pod left the update revision"
  [[ "$(leaders)" == "$l1" ]] || die "rollout $serial: leaders now '$(leaders)', not $l1 alone"
  echo "$(($(became_leader_total) - ev0)) $(($(lease_transitions) - lt0)) $ms $l0 $l1"
}

# Step 6c: rollouts, 3 then 5 replicas; back at 3 replicas, leaderLast, at the end.
rollout_step() {
  local n i out changes lease ms l0 l1 label
  kubelet_loop_start
  for n in 3 5; do
    if ((n != $(k get pods -l "$SEL" -o name | wc -l))); then
      helm_hooked "$WORK/helm-rollout.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values \
        --set "replicaCount=$n" --wait --timeout 3m || die "helm upgrade --set replicaCount=$n failed: $(cat "$WORK/helm-rollout.out")"
      wait_one_leader "$n" 60 >/dev/null
    fi
    # The chart's default (leaderLast): asserted. Twice: after the first
    # rollout the queue's order is another one.
    local first_leaders=()
    for i in 1 2; do
      out=$(rollout_once "$n")
      read -r changes lease ms l0 l1 <<<"$out"
      label="rollout (chart default, $n replicas, #$i, helm $HELM_MAJOR): helm upgrade changing the pod template"
      note "AFTER $label -> leader changes: $changes (BecameLeader Events), leaseTransitions +$lease, leader $l0 -> $l1, $ms ms"
      ((changes == 1 && lease == 1)) || die "$label: $changes leader changes (Events), leaseTransitions +$lease: want exactly 1"
      first_leaders+=("$l0")
    done
    # ... because the hook restarted the followers, then the leader.
    for l0 in "${first_leaders[@]}"; do
      grep -q "restarted: .*; the leader's pod last ($l0)" "$WORK/logs/rollout-hook.log" \
        || die "the rollout hook did not restart the leader's pod $l0 last: $(tail -3 "$WORK/logs/rollout-hook.log" 2>/dev/null)"
    done
    # The StatefulSet controller's order, for comparison: reported.
    for i in 1 2; do
      out=$(rollout_once "$n" --set rollout.strategy=RollingUpdate)
      read -r changes lease ms l0 l1 <<<"$out"
      note "BEFORE rollout (rollout.strategy=RollingUpdate, $n replicas, #$i): leader changes: $changes (BecameLeader Events), leaseTransitions +$lease, leader $l0 -> $l1, $ms ms"
    done
    helm_hooked "$WORK/helm-rollout.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values \
      --set rollout.strategy=leaderLast --wait --timeout 3m || die "back to leaderLast: $(cat "$WORK/helm-rollout.out")"
  done
  helm_hooked "$WORK/helm-rollout.out" upgrade "$RELEASE" "$CHART" --kubeconfig "$KCFG" --namespace "$NS" --reuse-values \
    --set replicaCount=3 --wait --timeout 3m || die "helm upgrade --set replicaCount=3 failed: $(cat "$WORK/helm-rollout.out")"
  # (the harness's current leader, for the steps that follow)
  # shellcheck disable=SC2034
  leader=$(wait_one_leader 3 60)
  kubelet_loop_stop
  k get pods -L election-state
}
