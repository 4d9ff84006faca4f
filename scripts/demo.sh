#!/usr/bin/env bash
# Runs election for real on this machine: a local ZooKeeper and three
# replicas sharing one file-dir. Shows who leads, stops the leader, shows
# the takeover, then keeps running until Ctrl-C.
#
#   scripts/demo.sh            # uses 127.0.0.1:2181 (override: ZK_PORT=...)
#
# Needs: Rust (cargo), Java; installs Debian's zookeeper package if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-zk.sh
source scripts/lib-zk.sh

ZK_PORT=${ZK_PORT:-2181}
WORK=${WORK:-$(mktemp -d /tmp/election-demo.XXXXXX)}
FILES="$WORK/files"
pids=()

cleanup() {
  echo ">> stopping replicas and ZooKeeper"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -f "$WORK/zk/zk.pid" ]]; then
    kill "$(cat "$WORK/zk/zk.pid")" 2>/dev/null || true
  fi
  echo ">> logs and files kept in $WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

ensure_zookeeper
echo ">> building"
cargo build --release --quiet
BIN=target/release/election

if zk_4lw 127.0.0.1 "$ZK_PORT" srvr | grep -q '^Mode:'; then
  echo ">> using the ZooKeeper already on 127.0.0.1:$ZK_PORT"
else
  echo ">> starting ZooKeeper on 127.0.0.1:$ZK_PORT"
  zk_start "$WORK/zk" "$ZK_PORT"
fi

for i in 0 1 2; do
  "$BIN" run --zk-servers "127.0.0.1:$ZK_PORT" --zk-root /election/demo \
    --file-dir "$FILES" --leader-timeout 1s --storage-capacity 10 \
    --node-id "replica-$i" --http-addr "127.0.0.1:$((18080 + i))" \
    --admin-addr "127.0.0.1:$((18090 + i))" 2>"$WORK/replica-$i.log" &
  pids+=($!)
done

sleep 3
echo ">> who leads (election status):"
"$BIN" status --zk-servers "127.0.0.1:$ZK_PORT" --zk-root /election/demo
echo ">> files so far:"
ls "$FILES"

leader=$(curl -fsS "127.0.0.1:18080/status" "127.0.0.1:18081/status" "127.0.0.1:18082/status" 2>/dev/null \
  | grep -o '"leader":"[^"]*"' | head -1 | cut -d'"' -f4 || true)
if [[ "$leader" =~ ^replica-([0-2])$ ]]; then
  idx=${BASH_REMATCH[1]}
  echo ">> stopping the leader $leader with SIGTERM"
  kill -TERM "${pids[$idx]}"
  sleep 2
  "$BIN" status --zk-servers "127.0.0.1:$ZK_PORT" --zk-root /election/demo
fi
echo ">> newest files:"
find "$FILES" -maxdepth 1 -name 'leader_*.json' -printf '%f\n' | sort | tail -3
"$BIN" verify --file-dir "$FILES" || true
echo ">> running; logs in $WORK/replica-*.log; Ctrl-C to stop"
wait
