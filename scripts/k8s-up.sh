#!/usr/bin/env bash
# Starts a local Kubernetes control plane built from source, idempotently:
# a real etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
# with kwok simulating $K8S_NODES nodes (kwok-node-0..N-1). Containers do NOT
# run: kwok marks scheduled pods Running and Ready. Everything listens on
# 127.0.0.1 only (free ports) and all state lives in $ELECTION_K8S_DIR.
#
#   scripts/k8s-up.sh                      # prints: export KUBECONFIG=...
#   eval "$(scripts/k8s-up.sh)"; kubectl get nodes
#   scripts/k8s-down.sh                    # stops it and deletes the state
#
# The API server runs with TLS, Node and RBAC authorization, the admission
# plugins of a kind cluster (the default-on set plus NodeRestriction;
# ValidatingAdmissionPolicy is among them), and issues service-account
# tokens (TokenRequest). The controller manager runs every default controller
# with per-controller service-account credentials (StatefulSets, the token
# controller, PersistentVolume binding: with no provisioner, claims bind only
# to PersistentVolumes created beforehand).
#
# When the cluster in $ELECTION_K8S_DIR is already up and healthy, only prints
# the KUBECONFIG; a half-dead one is stopped and started afresh. The binaries
# come from scripts/build-go-tools.sh (run here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-k8s.sh
source scripts/lib-k8s.sh

D=$ELECTION_K8S_DIR
SERVICE_CIDR=10.96.0.0/16
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
t0=$(now_ms)

k8s_tools_present || bash scripts/build-go-tools.sh kubernetes etcd kwok >&2

all_alive() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$D/pids/$c.pid" || return 1; done
}

if [[ -f "$D/admin.kubeconfig" ]] && all_alive \
  && "$KUBECTL" --kubeconfig "$D/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  log "control plane in $D is already up"
  echo "export KUBECONFIG=$D/admin.kubeconfig"
  exit 0
fi
if [[ -d "$D" ]]; then
  log "stopping the leftovers of a previous control plane in $D"
  bash scripts/k8s-down.sh >&2
fi
mkdir -p "$D"/{pki,logs,pids,etcd}
chmod 700 "$D"

# Dumps the logs of the components when something does not come up.
explain() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$D/logs/$c.log" ]] || continue
    log "last lines of $D/logs/$c.log:"
    tail -n 25 "$D/logs/$c.log" >&2
  done
}
# Stops what this run started (the logs stay in $D; k8s-down.sh deletes it).
fail() {
  local c
  log "FAILED: $*"
  explain
  for c in "${COMPONENTS[@]}"; do stop_pid "$D/pids/$c.pid" 5; done
  exit 1
}

# wait_or_fail SECONDS WHAT COMMAND...: wait_until (lib-k8s.sh) COMMAND
# succeeds, polling every 0.2 s with its output dropped, or fail.
wait_or_fail() {
  local timeout=$1 what=$2
  shift 2
  wait_until "$timeout" 0.2 silently "$@" || fail "$what not within ${timeout}s"
}
silently() { "$@" >/dev/null 2>&1; }

# --- certificates (EC P-256: quick to generate) and the service-account key
pki=$D/pki
openssl ecparam -genkey -name prime256v1 -noout -out "$pki/ca.key" 2>/dev/null
openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=election-k8s-ca" -days 3650 -out "$pki/ca.crt" 2>/dev/null
# cert NAME SUBJECT EXTENSIONS
cert() {
  openssl ecparam -genkey -name prime256v1 -noout -out "$pki/$1.key" 2>/dev/null
  openssl req -new -key "$pki/$1.key" -subj "$2" 2>/dev/null \
    | openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 365 \
      -extfile <(printf '%s\n' "$3") -out "$pki/$1.crt" 2>/dev/null
}
cert apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
client_ext="extendedKeyUsage=clientAuth"
cert admin "/O=system:masters/CN=kubernetes-admin" "$client_ext"
cert controller-manager "/CN=system:kube-controller-manager" "$client_ext"
cert scheduler "/CN=system:kube-scheduler" "$client_ext"
# kwok writes the status of nodes and pods and the node leases: it plays
# every kubelet at once, so it gets an admin identity.
cert kwok "/O=system:masters/CN=kwok" "$client_ext"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

# Ports are picked free (start_NAME below) but bound only once a component
# runs: another process may take one meanwhile (the machine is shared), so
# start_retrying starts a component again on fresh ports when it died of a
# taken port.
ETCD_PORT='' ETCD_PEER_PORT='' API_PORT='' KCM_PORT='' SCHED_PORT='' SERVER=''

# start_retrying NAME TIMEOUT: runs start_NAME (which picks its ports and
# starts NAME) until ready_NAME succeeds; when NAME exits with "address
# already in use" in its log, again on new ports (3 attempts).
start_retrying() {
  local name=$1 timeout=$2 attempt deadline
  for attempt in 1 2 3; do
    "start_$name"
    deadline=$((SECONDS + timeout))
    until "ready_$name" >/dev/null 2>&1; do
      if ! pid_alive "$D/pids/$name.pid"; then
        if grep -qi 'address already in use' "$D/logs/$name.log"; then
          log "$name: a port was taken meanwhile (attempt $attempt of 3): again on new ports"
          cp "$D/logs/$name.log" "$D/logs/$name.attempt-$attempt.log"
          continue 2
        fi
        fail "$name exited"
      fi
      ((SECONDS < deadline)) || fail "$name not ready within ${timeout}s"
      sleep 0.2
    done
    return 0
  done
  fail "$name: ports taken at each of 3 attempts"
}

kubeconfig() { # name
  cat >"$D/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: election-k8s
    cluster:
      server: $SERVER
      certificate-authority: $pki/ca.crt
users:
  - name: $1
    user:
      client-certificate: $pki/$1.crt
      client-key: $pki/$1.key
contexts:
  - name: $1@election-k8s
    context:
      cluster: election-k8s
      user: $1
current-context: $1@election-k8s
EOF
}

# --- etcd
start_etcd() {
  ETCD_PORT=$(free_port)
  ETCD_PEER_PORT=$(free_port)
  rm -rf "$D/etcd" && mkdir -p "$D/etcd"
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  bg_start "$D" etcd "$GO_TOOLS/etcd/etcd" --name default --data-dir "$D/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
}
ready_etcd() { curl -fsS "http://127.0.0.1:$ETCD_PORT/health"; }
start_retrying etcd 30

# --- kube-apiserver
K=("$KUBECTL" --kubeconfig "$D/admin.kubeconfig")
start_kube-apiserver() {
  local name
  API_PORT=$(free_port)
  SERVER=https://127.0.0.1:$API_PORT
  echo "$SERVER" >"$D/server"
  for name in admin controller-manager scheduler kwok; do kubeconfig "$name"; done
  log "starting kube-apiserver on $SERVER"
  bg_start "$D" kube-apiserver "$GO_TOOLS/kubernetes/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,ValidatingAdmissionPolicy \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --endpoint-reconciler-type none \
    --allow-privileged=true --profiling=false
}
ready_kube-apiserver() { "${K[@]}" get --raw /readyz; }
start_retrying kube-apiserver 60

# --- kube-controller-manager and kube-scheduler
start_kube-controller-manager() {
  KCM_PORT=$(free_port)
  log "starting kube-controller-manager (health on 127.0.0.1:$KCM_PORT)"
  bg_start "$D" kube-controller-manager "$GO_TOOLS/kubernetes/kube-controller-manager" \
    --kubeconfig "$D/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --controllers '*' --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
}
ready_kube-controller-manager() { curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"; }
start_kube-scheduler() {
  SCHED_PORT=$(free_port)
  log "starting kube-scheduler (health on 127.0.0.1:$SCHED_PORT)"
  bg_start "$D" kube-scheduler "$GO_TOOLS/kubernetes/kube-scheduler" \
    --kubeconfig "$D/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --profiling=false
}
ready_kube-scheduler() { curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"; }

# --- kwok and its nodes
log "starting kwok with $K8S_NODES fake nodes"
bg_start "$D" kwok "$GO_TOOLS/kwok/kwok" \
  --kubeconfig "$D/kwok.kubeconfig" --config "$GO_TOOLS/kwok/stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.244.0.0/16 --node-ip 127.0.0.1 \
  --node-lease-duration-seconds 40
for i in $(seq 0 $((K8S_NODES - 1))); do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
EOF
done | "${K[@]}" apply -f - >/dev/null

start_retrying kube-controller-manager 60
start_retrying kube-scheduler 60
# The service-account controller has created the default namespace's account.
wait_or_fail 60 "ServiceAccount default/default (controller manager at work)" \
  "${K[@]}" get serviceaccount default --namespace default
"${K[@]}" wait --for=condition=Ready node --all --timeout=60s >/dev/null \
  || fail "kwok nodes not Ready: $("${K[@]}" get nodes 2>&1)"

log "control plane up in $(($(now_ms) - t0)) ms (state in $D)"
"${K[@]}" get nodes >&2
echo "export KUBECONFIG=$D/admin.kubeconfig"
