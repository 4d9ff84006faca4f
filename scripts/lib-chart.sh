#!/usr/bin/env bash
# Shared helpers of the chart scripts (render-manifests.sh, check-chart.sh,
# the kind scripts): find helm, render the chart reproducibly.
# Sourced, not run; expects the repository root as working directory.

CHART=charts/election

# Prints the path of a helm of the given major version (3 or 4): the one
# scripts/build-go-tools.sh built under .tools/go/, else `helm` on PATH when
# it has that version. Prints nothing when there is none.
helm_of() { # major
  local major=$1
  if [[ -x ".tools/go/helm$major/helm" ]]; then
    echo ".tools/go/helm$major/helm"
  elif command -v helm >/dev/null && helm version --short 2>/dev/null | grep -q "^v$major\."; then
    command -v helm
  fi
}

# Prints a helm of any version, preferring helm 4.
any_helm() {
  local h
  h=$(helm_of 4)
  [[ -n "$h" ]] || h=$(helm_of 3)
  [[ -n "$h" ]] || { echo "helm not found: run 'cargo xtask tools' or install helm" >&2; return 1; }
  echo "$h"
}

# Drops the blank lines that end YAML documents (helm 4 ends every document
# with one, helm 3 does not), so that both render byte-identical output.
normalize_yaml() {
  awk '/^[[:space:]]*$/ { blank++; next }
       { if ($0 != "---") for (i = 0; i < blank; i++) print ""; blank = 0; print }'
}

# Renders the chart: render_chart HELM [helm template flags...]
render_chart() { # helm [flags...]
  local helm=$1
  shift
  "$helm" template election "$CHART" --namespace election "$@" | normalize_yaml
}
