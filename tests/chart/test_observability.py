"""The optional monitoring objects: the PrometheusRule and the Grafana dashboard.

What promtool cannot see is checked here: the rules and the dashboard query
only metrics the daemon exports (src/metrics.rs), the alerts the issue asks for
exist, and the dashboard ConfigMap is what the Grafana sidecar loads.
scripts/check-alerts.sh checks the rules' PromQL and unit-tests them.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from conftest import CHART, ROOT, find_helms

CUSTOM = CHART / "ci" / "custom-values.yaml"
DASHBOARD = CHART / "dashboards" / "election.json"


def exported_metrics() -> set[str]:
    """Series names src/metrics.rs registers (counters with their `_total`)."""
    source = (ROOT / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'"(election_[a-z_]+)"', source))
    assert {"election_is_leader", "election_state", "election_transitions_total"} <= names, names
    return names


def metrics_in(promql: str) -> set[str]:
    return set(re.findall(r"\b(election_[a-z_]+)\b", promql))


def rules_of(m) -> dict[str, dict]:
    (rule,) = m.all("PrometheusRule")
    (group,) = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_prometheus_rule_has_the_alerts_the_issue_asks_for(helm, manifests):
    rules = rules_of(manifests(helm, sets=("prometheusRule.enabled=true",)))
    assert set(rules) == {
        "ElectionNoLeader",
        "ElectionMultipleLeaders",
        "ElectionLeaderNotWriting",
        "ElectionReplicaStuckInFailover",
        "ElectionPodLabelPatchErrors",
        "ElectionZooKeeperQuorumLost",
        "ElectionLeadershipFlapping",
    }
    for name, r in rules.items():
        assert r["labels"]["severity"] in {"critical", "warning"}, name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
        assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", r["for"]), name


def test_alerts_query_only_exported_metrics_of_this_release(helm, manifests):
    rules = rules_of(manifests(helm, sets=("prometheusRule.enabled=true",)))
    exported = exported_metrics()
    for name, r in rules.items():
        used = metrics_in(r["expr"])
        assert used and used <= exported, (name, used - exported)
        # Every selector names the release's namespace and job.
        for selector in re.findall(r"election_[a-z_]+(\{[^}]*\})?", r["expr"]):
            assert 'namespace="election",job="election-headless"' in selector, (name, r["expr"])


def test_alert_bounds_and_selector_follow_the_values(helm, manifests):
    m = manifests(helm, CUSTOM)
    (rule,) = m.all("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules = rules_of(m)
    assert rules["ElectionNoLeader"]["for"] == "2m"
    assert rules["ElectionReplicaStuckInFailover"]["for"] == "10m"
    assert "> 30\n" in rules["ElectionLeaderNotWriting"]["expr"]
    for r in rules.values():
        assert r["labels"]["team"] == "payments"
        assert 'namespace="election",service="election-custom-headless"' in r["expr"]


@pytest.mark.parametrize(("leader_timeout", "bound"), [("10s", 60), ("2s", 36), ("1m", 210)])
def test_leader_not_writing_defaults_to_three_leader_timeouts_and_a_margin(helm, manifests, leader_timeout, bound):
    m = manifests(helm, sets=("prometheusRule.enabled=true", f"election.leaderTimeout={leader_timeout}"))
    expr = rules_of(m)["ElectionLeaderNotWriting"]["expr"]
    assert f"> {bound}\n" in expr, expr


def test_flapping_is_more_acquisitions_than_a_rollout_and_a_crash_within_the_window(helm, manifests):
    m = manifests(helm, sets=("prometheusRule.enabled=true",))
    expr = rules_of(m)["ElectionLeadershipFlapping"]["expr"]
    assert "increase(election_leadership_acquisitions_total{" in expr and "[30m]" in expr and expr.endswith("> 2.5"), expr
    m = manifests(
        helm, sets=("prometheusRule.enabled=true", "prometheusRule.flappingAcquisitions=4", "prometheusRule.flappingWindow=1h")
    )
    expr = rules_of(m)["ElectionLeadershipFlapping"]["expr"]
    assert "[1h]" in expr and expr.endswith("> 4.5"), expr


def test_the_rule_is_a_monitoring_coreos_com_object_in_the_release_namespace(helm, manifests):
    (rule,) = manifests(helm, sets=("prometheusRule.enabled=true",)).all("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "election"


# --- Grafana dashboard ---------------------------------------------------------------


def dashboard_targets(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_dashboard_file_is_valid_json_querying_only_exported_metrics():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "election" and board["title"]
    exprs = dashboard_targets(board)
    exported = exported_metrics()
    for e in exprs:
        assert metrics_in(e) <= exported, (e, metrics_in(e) - exported)
        assert 'namespace="$namespace"' in e, e
    # Panels ids are unique (Grafana keys panel state on them).
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    # A data source variable: the dashboard works with any Prometheus.
    assert any(v["type"] == "datasource" for v in board["templating"]["list"])


def test_dashboard_shows_states_transitions_writes_fencing_and_handovers():
    board = json.loads(DASHBOARD.read_text())
    used = set().union(*(metrics_in(e) for e in dashboard_targets(board)))
    assert {
        "election_state",
        "election_is_leader",
        "election_transitions_total",
        "election_files_written_total",
        "election_fencing_token",
        "election_seconds_since_last_write",
        "election_leadership_acquisitions_total",
    } <= used
    (timeline,) = [p for p in board["panels"] if p["type"] == "state-timeline"]
    mapped = {o["text"] for m in timeline["fieldConfig"]["defaults"]["mappings"] for o in m["options"].values()}
    assert mapped == {"init", "attempter", "leader", "failover", "stopping"}


def test_dashboard_config_map_carries_the_sidecar_label_and_the_file(helm, manifests):
    (cm,) = manifests(helm, sets=("grafanaDashboard.enabled=true",)).all("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = cm["data"]
    assert name.endswith(".json")
    shipped = json.loads(cm["data"][name])
    # The file, but for the release's own uid and title.
    assert {k: v for k, v in shipped.items() if k not in ("uid", "title")} == {
        k: v for k, v in json.loads(DASHBOARD.read_text()).items() if k not in ("uid", "title")
    }
    assert shipped["title"] == "Election election/election"


def dashboard_uid(helm: str, release: str, namespace: str) -> str:
    out = subprocess.run(
        [find_helms()[helm], "template", release, str(CHART), "--namespace", namespace]
        + ["--set", "grafanaDashboard.enabled=true", "--show-only", "templates/grafana-dashboard.yaml"],
        capture_output=True,
        text=True,
        check=True,
    )
    (cm,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    return json.loads(cm["data"]["election.json"])["uid"]


def test_each_release_gets_its_own_dashboard_uid(helm):
    # Grafana keys dashboards by uid: one fixed uid would let the second
    # release's ConfigMap overwrite the first one's dashboard.
    uids = {
        (release, namespace): dashboard_uid(helm, release, namespace)
        for release, namespace in [
            ("election", "election"),
            ("election", "payments"),
            ("orders", "election"),
            ("a-b", "c"),
            ("b", "c-a"),
            ("r" * 30, "n" * 60),
        ]
    }
    assert len(set(uids.values())) == len(uids), uids
    for key, uid in uids.items():
        assert re.fullmatch(r"[a-z0-9-]{1,40}", uid), (key, uid)
    assert dashboard_uid(helm, "election", "election") == uids[("election", "election")]


def test_dashboard_labels_and_annotations_follow_the_values(helm, manifests):
    (cm,) = manifests(helm, CUSTOM).all("ConfigMap")
    assert cm["metadata"]["labels"]["team"] == "payments"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Election"}
    (cm,) = manifests(helm, sets=("grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring")).all(
        "ConfigMap"
    )
    assert cm["metadata"]["namespace"] == "monitoring"
