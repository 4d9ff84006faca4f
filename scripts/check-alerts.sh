#!/usr/bin/env bash
# Checks the chart's alerts with promtool, on the rules the chart ships:
#
#   scripts/check-alerts.sh          (scripts/check-chart.sh runs it)
#
#   1. renders the PrometheusRule (prometheusRule.enabled=true) with the
#      default values and with charts/election/ci/*.yaml, extracts each
#      `.spec` (a Prometheus rule file) and runs `promtool check rules`;
#   2. runs `promtool test rules` on tests/alerts/*.test.yaml (yamllint
#      first) against the default rendering (copied next to them as
#      rules.yaml).
#
# promtool is built from its Go module by scripts/build-promtool.sh (a no-op
# when .tools/go/promtool is current).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh

PYTHON=.tools/venv/bin/python
[[ -x "$PYTHON" ]] || PYTHON=python3
helm=$(any_helm)
bash scripts/build-promtool.sh
PROMTOOL=.tools/go/promtool/promtool

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# rule_file HELM-FLAGS...: the .spec of the rendered PrometheusRule, on stdout.
rule_file() {
  render_chart "$helm" --set prometheusRule.enabled=true "$@" |
    "$PYTHON" -c '
import sys, yaml
rules = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"expected one PrometheusRule, rendered {len(rules)}"
yaml.safe_dump(rules[0]["spec"], sys.stdout, sort_keys=False)
'
}

rule_file >"$WORK/rules.yaml"
"$PROMTOOL" check rules "$WORK/rules.yaml"
for values in "$CHART"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  rule_file --values "$values" >"$WORK/rules-$name.yaml"
  "$PROMTOOL" check rules "$WORK/rules-$name.yaml"
done

if [[ -x .tools/venv/bin/yamllint ]]; then
  .tools/venv/bin/yamllint --strict --config-file .yamllint tests/alerts
fi
cp tests/alerts/*.test.yaml "$WORK/"
"$PROMTOOL" test rules "$WORK"/*.test.yaml
