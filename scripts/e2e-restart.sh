# shellcheck shell=bash
# Restart takeover on the real control plane: sourced by scripts/e2e-k8s.sh,
# whose helpers and variables it uses (k, log, note, die, now_ms,
# start_election, time_new_leader, wait_one_leader, PIDS, WORK, leader).
#
# Step 3b: the leader's process SIGKILLed and started again at once, as the
# kubelet restarts a crashed container: same pod, same emptyDir (the
# chart's ELECTION_STATE_DIR, mapped to a directory per pod UID by
# scripts/k8s-pod-process.py). The restarted process closes its
# predecessor's ZooKeeper session, so another pod is labelled leader in
# restart time instead of a session timeout (docs/design.md, "Restart
# takeover"). Bound: under one session timeout.

restart_takeover_step() { # session timeout in seconds
  local session_s=$1 old=$leader pid t0 ms
  grep -q '"ELECTION_STATE_DIR"' "$WORK/pods/$old/pod.json" || die "pod $old has no ELECTION_STATE_DIR"
  pid=$(cat "$PIDS/$old.pid")
  t0=$(now_ms)
  kill -KILL "$pid"
  # Gone, not only signalled: the restarted process must find the lock free.
  while [[ -e "/proc/$pid" && "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; do
    sleep 0.01
  done
  rm -f "$PIDS/$old.pid"
  log "harness: restarting the process of $old at once (same pod, same emptyDir), as the kubelet would"
  start_election "$old"
  time_new_leader "$old" $((session_s + 10)) >/dev/null
  ms=$(($(now_ms) - t0))
  note "SIGKILL of the leader, restarted at once (same pod and emptyDir) -> another pod labelled leader: $ms ms (session timeout ${session_s}s)"
  ((ms < session_s * 1000)) || die "label flip took $ms ms after a kill and restart: not under the session timeout"
  grep -q "closed the session of this replica's earlier process" "$WORK/logs/$old.log" \
    || die "the restarted $old did not close its earlier session: $(tail -5 "$WORK/logs/$old.log")"
  leader=$(wait_one_leader 3 30)
  k get pods -L election-state
}
