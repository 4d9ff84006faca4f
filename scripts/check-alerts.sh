#!/usr/bin/env bash
# Checks the chart's alerts with promtool, on the rules the chart ships:
#
#   scripts/check-alerts.sh          (scripts/check-chart.sh runs it)
#
#   1. renders the PrometheusRule (prometheusRule.enabled=true) with the
#      default values and with charts/election/ci/*.yaml, extracts each
#      `.spec` (a Prometheus rule file) and runs `promtool check rules`;
#   2. turns every query of the Grafana dashboard into a recording rule and
#      runs `promtool check rules` on them (PromQL syntax);
#   3. runs `promtool test rules` on tests/alerts/*.test.yaml (yamllint
#      first) against the default rendering (copied next to them as
#      rules.yaml) and the dashboard rules (dashboard-rules.yaml).
#
# promtool is built from its Go module by scripts/build-go-tools.sh (a no-op
# when .tools/go/promtool is current).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-chart.sh
source scripts/lib-chart.sh

PYTHON=.tools/venv/bin/python
[[ -x "$PYTHON" ]] || PYTHON=python3
helm=$(any_helm)
bash scripts/build-go-tools.sh promtool
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
"$PROMTOOL" check rules --lint-fatal "$WORK/rules.yaml"
for values in "$CHART"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  rule_file --values "$values" >"$WORK/rules-$name.yaml"
  "$PROMTOOL" check rules --lint-fatal "$WORK/rules-$name.yaml"
done

# The dashboard's queries, as recording rules named after their panels
# (election_dashboard:<panel>:<refId>), with Grafana's variables filled in:
# `promtool check rules` parses every one, and tests/alerts/dashboard.test.yaml
# evaluates some of them.
"$PYTHON" - "$CHART/dashboards/election.json" >"$WORK/dashboard-rules.yaml" <<'PY'
import json, re, sys, yaml
board = json.load(open(sys.argv[1]))
fill = {"$namespace": "election", "$job": "election-headless", "$pod": ".+",
        "$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
rules = []
for panel in board["panels"]:
    slug = re.sub(r"[^a-z0-9]+", "_", panel["title"].lower()).strip("_")
    for target in panel.get("targets", []):
        expr = target["expr"]
        for var in sorted(fill, key=len, reverse=True):
            expr = expr.replace(var, fill[var])
        assert "$" not in expr, f"unknown variable in {panel['title']}: {expr}"
        rules.append({"record": f"election_dashboard:{slug}:{target['refId'].lower()}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout, sort_keys=False)
PY
"$PROMTOOL" check rules --lint-fatal "$WORK/dashboard-rules.yaml"

if [[ -x .tools/venv/bin/yamllint ]]; then
  .tools/venv/bin/yamllint --strict --config-file .yamllint tests/alerts
fi
cp tests/alerts/*.test.yaml "$WORK/"
"$PROMTOOL" test rules "$WORK"/*.test.yaml
