#!/usr/bin/env bash
# Shared settings and helpers of scripts/k8s-*.sh and scripts/e2e-k8s.sh
# (the local control plane built from source). Sourced, not run; expects the
# repository root as working directory.
#
# Settings (environment):
#   ELECTION_K8S_DIR  state of the cluster: certificates, kubeconfigs, etcd
#                     data, logs, pids (default: ${TMPDIR:-/tmp}/election-k8s)
#   K8S_NODES         number of kwok nodes (default: 3)

ELECTION_K8S_DIR=${ELECTION_K8S_DIR:-${TMPDIR:-/tmp}/election-k8s}
K8S_NODES=${K8S_NODES:-3}
GO_TOOLS=$PWD/.tools/go
# shellcheck disable=SC2034 # used by the scripts that source this file
KUBECTL=$GO_TOOLS/kubernetes/kubectl

log() { echo ">> $*" >&2; }

# The binaries the cluster needs, all from scripts/build-go-tools.sh.
k8s_tools_present() {
  local b
  for b in kubernetes/kube-apiserver kubernetes/kube-controller-manager kubernetes/kube-scheduler \
    kubernetes/kubectl etcd/etcd kwok/kwok kwok/stages.yaml; do
    [[ -e "$GO_TOOLS/$b" ]] || return 1
  done
}

# Prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Milliseconds since the epoch.
now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
}

# Is the process of pid file $1 alive?
pid_alive() { # pidfile
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Stops the process of a pid file (SIGTERM, then SIGKILL after $2 seconds)
# and removes the file. Only ever the pid this project's scripts recorded.
stop_pid() { # pidfile [grace seconds]
  local file=$1 grace=${2:-10} pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# Starts a long-running process detached from this shell, logging to
# $dir/logs/$name.log, its pid in $dir/pids/$name.pid: bg_start DIR NAME CMD...
bg_start() {
  local dir=$1 name=$2
  shift 2
  mkdir -p "$dir/logs" "$dir/pids"
  setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
  # Not a job of this shell: no "Killed" line when a test kills it.
  disown $!
}

# Runs COMMAND every INTERVAL seconds until it succeeds (0) or TIMEOUT
# seconds have passed (1: the caller dies, saying what did not happen and
# what it sees then). wait_until TIMEOUT INTERVAL COMMAND...
wait_until() {
  local deadline=$((SECONDS + $1)) interval=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep "$interval"
  done
}
