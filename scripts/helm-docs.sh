#!/usr/bin/env bash
# Generates charts/election/README.md with helm-docs, from the chart's
# README.md.gotmpl (the prose) and the `# --` / `# @section` comments of its
# values.yaml (the values table). helm-docs is built from its Go module
# (hack/tools/helm-docs/go.mod) by scripts/build-go-tools.sh: a no-op when
# current.
#
#   scripts/helm-docs.sh            rewrite charts/election/README.md
#   scripts/helm-docs.sh DIR        generate into DIR/README.md (a copy of the
#                                   chart), leaving the work tree alone:
#                                   scripts/check-chart.sh diffs the result
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=charts/election
bash scripts/build-go-tools.sh helm-docs >/dev/null 2>&1 || bash scripts/build-go-tools.sh helm-docs
HELM_DOCS=$PWD/.tools/go/helm-docs/helm-docs

target=${1:-$CHART}
if [[ $target != "$CHART" ]]; then
  mkdir -p "$target"
  cp -R "$CHART/." "$target/"
fi
"$HELM_DOCS" --log-level warning --chart-search-root "$target" \
  --template-files README.md.gotmpl --output-file README.md \
  --sort-values-order file
