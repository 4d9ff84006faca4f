#!/usr/bin/env bash
# Shared helpers for the local scripts: find or install ZooKeeper, start a
# standalone server in a directory, wait until it answers. `cargo xtask
# tools` installs ZooKeeper through ensure_zookeeper too.
# Sourced, not run.

# Prints the Java classpath of a ZooKeeper install, or nothing.
zk_classpath() {
  if [[ -n "${ZOOKEEPER_HOME:-}" ]]; then
    local cp
    cp=$(find "$ZOOKEEPER_HOME" "$ZOOKEEPER_HOME/lib" -maxdepth 1 -name '*.jar' 2>/dev/null | tr '\n' ':')
    [[ -n "$cp" ]] && { echo "$cp"; return; }
  fi
  if [[ -f /usr/share/java/zookeeper.jar ]]; then
    echo "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
  fi
}

# Installs Debian's zookeeper package when no ZooKeeper is found.
ensure_zookeeper() {
  if [[ -n "$(zk_classpath)" ]] && command -v java >/dev/null; then
    return
  fi
  echo ">> ZooKeeper not found: installing Debian's zookeeper package" >&2
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq zookeeper >/dev/null
}

# Asks a four-letter word; prints the answer.
zk_4lw() { # host port word
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2; printf '%s' '$3' >&3; cat <&3" 2>/dev/null || true
}

# Starts a standalone server: zk_start DIR PORT; writes DIR/zk.pid.
zk_start() {
  local dir=$1 port=$2
  mkdir -p "$dir/data"
  cat >"$dir/zoo.cfg" <<CFG
tickTime=500
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxSessionTimeout=60000
4lw.commands.whitelist=*
admin.enableServer=false
CFG
  java -Xmx128m -cp "$(zk_classpath)" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >"$dir/zookeeper.log" 2>&1 &
  echo $! >"$dir/zk.pid"
  for _ in $(seq 1 100); do
    if zk_4lw 127.0.0.1 "$port" srvr | grep -q '^Mode:'; then return 0; fi
    sleep 0.2
  done
  echo "ZooKeeper did not start; its log:" >&2
  tail -20 "$dir/zookeeper.log" >&2
  return 1
}
