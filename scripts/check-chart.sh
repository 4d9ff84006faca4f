#!/usr/bin/env bash
# Static checks of the deployment bundle; exits non-zero when any fails.
#
#   scripts/install-tools.sh && scripts/check-chart.sh
#
# Under helm 3 AND helm 4:
#   - helm lint --strict, default values and every charts/election/ci/*.yaml
#   - helm template of the same, each rendered document validated by
#     kubernetes-validate --strict against Kubernetes 1.30 (the ServiceMonitor,
#     not a core kind, is checked by tests/chart instead)
#   - every charts/election/ci/bad/*.yaml must make lint and template FAIL,
#     with the error text its `# expect:` line names (template only for the
#     files marked `# checked-by: template`: helm lint ignores `fail`)
# Once:
#   - checkov (helm framework on the chart, kubernetes framework on the
#     renderings), skips explained in .checkov.yaml and the templates
#   - yamllint on values, ci files, renderings, manifests/, docker-compose.yml
#   - manifests/ is what scripts/render-manifests.sh renders (drift check), and
#     `kubectl kustomize manifests/` builds and validates
#   - charts/election/README.md is what helm-docs generates from
#     README.md.gotmpl and values.yaml (drift check: scripts/helm-docs.sh)
#   - every relative link in README.md and docs/*.md resolves
#   - hadolint Dockerfile, shellcheck scripts/*.sh
#   - pytest tests/chart (what the rendered objects must guarantee)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh

KUBE_VERSION=1.30.0
VENV=.tools/venv/bin
tool() { # name: from .tools/venv, else PATH
  if [[ -x "$VENV/$1" ]]; then echo "$VENV/$1"; else command -v "$1" || echo "missing-$1"; fi
}
PYTHON=$(tool python)
[[ "$PYTHON" == missing-* ]] && PYTHON=python3

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=()
start_all=$SECONDS

# step NAME COMMAND...: runs one check, records its failure, goes on.
step() {
  local name=$1 t0=$SECONDS rc
  shift
  echo "== $name"
  # A subshell outside any `if`, so that `set -e` holds inside the step.
  set +e
  (
    set -e
    "$@"
  ) >"$WORK/step.log" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    echo "   ok ($((SECONDS - t0))s)"
  else
    sed 's/^/   | /' "$WORK/step.log"
    echo "   FAILED ($((SECONDS - t0))s)"
    failures+=("$name")
  fi
}

# Keeps the core kinds of a rendering (drops monitoring.coreos.com objects).
core_kinds() { # file
  "$PYTHON" - "$1" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")], sys.stdout)
PY
}

validate_k8s() { # file
  local out
  out=$(core_kinds "$1" | "$(tool kubernetes-validate)" -k "$KUBE_VERSION" --strict --quiet -) || { echo "$out"; return 1; }
  # An unknown kind is only a warning for kubernetes-validate: not here.
  if [[ -n "$out" ]]; then echo "$out"; return 1; fi
}

lint_and_validate() { # helm label
  local helm=$1 label=$2 values name
  "$helm" lint --strict "$CHART"
  render_chart "$helm" >"$WORK/$label-default.yaml"
  validate_k8s "$WORK/$label-default.yaml"
  for values in "$CHART"/ci/*.yaml; do
    name=$(basename "$values" .yaml)
    "$helm" lint --strict "$CHART" --values "$values"
    render_chart "$helm" --values "$values" >"$WORK/$label-$name.yaml"
    validate_k8s "$WORK/$label-$name.yaml"
  done
}

bad_values_fail() { # helm
  local helm=$1 bad expect out cmd rc=0
  local -a cmds
  for bad in "$CHART"/ci/bad/*.yaml; do
    expect=$(sed -n 's/^# expect: //p' "$bad")
    [[ -n "$expect" ]] || { echo "$bad: no '# expect:' line"; rc=1; continue; }
    cmds=(lint template)
    # `helm lint` turns the templates' `fail` into a log line: a file checked
    # by a template rule (not by the schema) says so and must fail template only.
    grep -q '^# checked-by: template' "$bad" && cmds=(template)
    for cmd in "${cmds[@]}"; do
      if [[ $cmd == lint ]]; then
        out=$("$helm" lint --strict "$CHART" --values "$bad" 2>&1) && { echo "$bad: helm lint passed"; rc=1; continue; }
      else
        out=$("$helm" template election "$CHART" --values "$bad" 2>&1) && { echo "$bad: helm template passed"; rc=1; continue; }
      fi
      grep -qF -- "$expect" <<<"$out" || { echo "$bad: helm $cmd failed without '$expect':"; echo "$out"; rc=1; }
    done
    echo "rejected: $(basename "$bad")"
  done
  return $rc
}

checkov_chart() {
  local helm_dir
  helm_dir=$(dirname "$(any_helm)")
  # checkov's helm framework renders the chart with the `helm` on PATH.
  PATH="$PWD/$helm_dir:$PATH" "$(tool checkov)" --config-file .checkov.yaml --framework helm -d "$CHART"
  mkdir -p "$WORK/checkov"
  cp "$WORK"/helm4-*.yaml "$WORK/checkov/" 2>/dev/null || cp "$WORK"/helm3-*.yaml "$WORK/checkov/"
  "$(tool checkov)" --config-file .checkov.yaml --framework kubernetes -d "$WORK/checkov"
}

yamllint_all() {
  "$(tool yamllint)" --strict --config-file .yamllint \
    "$CHART/values.yaml" "$CHART/Chart.yaml" "$CHART/ci" \
    manifests docker-compose.yml .checkov.yaml .yamllint \
    "$WORK"/helm*-*.yaml
}

manifests_in_sync() {
  bash scripts/render-manifests.sh "$WORK/manifests" 2>/dev/null
  diff -ru manifests "$WORK/manifests" || {
    echo "manifests/ differs from the chart: run scripts/render-manifests.sh and commit the result"
    return 1
  }
}

chart_readme_in_sync() {
  bash scripts/helm-docs.sh "$WORK/helm-docs"
  diff -u "$CHART/README.md" "$WORK/helm-docs/README.md" || {
    echo "$CHART/README.md differs from what helm-docs generates from README.md.gotmpl and values.yaml:"
    echo "edit those (not README.md), run scripts/helm-docs.sh and commit the result"
    return 1
  }
}

kustomize_builds() {
  local kubectl candidate
  kubectl=$(command -v kubectl || true)
  candidate=.tools/go/kubernetes/kubectl
  [[ -x "$candidate" ]] && kubectl=$candidate
  [[ -n "$kubectl" ]] || { echo "kubectl not found (scripts/install-tools.sh)"; return 1; }
  "$kubectl" kustomize manifests/ >"$WORK/kustomized.yaml"
  validate_k8s "$WORK/kustomized.yaml"
  "$(tool yamllint)" --strict --config-file .yamllint "$WORK/kustomized.yaml"
}

pytest_chart() {
  # -p no:cacheprovider: leave no .pytest_cache in the work tree.
  "$(tool pytest)" -p no:cacheprovider -q tests/chart
}

for major in 3 4; do
  helm=$(helm_of "$major")
  if [[ -z "$helm" ]]; then
    echo "== helm $major: not found (run scripts/install-tools.sh)"
    failures+=("helm $major missing")
    continue
  fi
  step "helm $major ($("$helm" version --short)): lint --strict and kubernetes-validate $KUBE_VERSION --strict" \
    lint_and_validate "$helm" "helm$major"
  step "helm $major: ci/bad/*.yaml are rejected" bad_values_fail "$helm"
done
step "checkov (chart and renderings)" checkov_chart
step "yamllint" yamllint_all
step "manifests/ matches the chart" manifests_in_sync
step "kubectl kustomize manifests/" kustomize_builds
step "chart README matches helm-docs (scripts/helm-docs.sh)" chart_readme_in_sync
step "relative links in README.md and docs/*.md resolve" "$PYTHON" scripts/check-links.py
step "alerts: promtool check rules and test rules (scripts/check-alerts.sh)" bash scripts/check-alerts.sh
step "hadolint Dockerfile" "$(tool hadolint)" Dockerfile
step "shellcheck scripts/*.sh" shellcheck -x scripts/*.sh
# pytest prints its own summary line, which CI reads: show it in full.
echo "== pytest tests/chart"
if ! pytest_chart; then failures+=("pytest tests/chart"); fi

echo
if ((${#failures[@]})); then
  echo "chart checks FAILED after $((SECONDS - start_all))s: ${failures[*]}"
  exit 1
fi
echo "chart checks passed in $((SECONDS - start_all))s"
