"""Day 2 of a release, as far as `helm template` can see it: what an upgrade
changes in the pods, what the chart refuses before Kubernetes does.

What needs the live objects (`lookup`: a resize of the ensemble, a change of
the claim templates) is tested on the real control plane by
scripts/e2e-k8s.sh (step 6c).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import CHART, NAMESPACE, RELEASE, find_helms

# Values that reach every pod-template path the chart has: both workloads,
# credentials, TLS, monitoring, user labels and annotations.
WIDE = (
    "zookeeper.auth.enabled=true",
    "zookeeper.auth.existingSecret=zk-credentials",
    "zookeeper.tls.enabled=true",
    "zookeeper.tls.secretName=zk-tls",
    "serviceMonitor.enabled=true",
    "commonLabels.team=payments",
    "podLabels.tier=backend",
    "podAnnotations.note=kept",
)


def chart_with(tmp: Path, **chart_fields: str) -> Path:
    """A copy of the chart whose Chart.yaml has these fields changed."""
    copy = tmp / "election"
    shutil.copytree(CHART, copy)
    meta = yaml.safe_load((copy / "Chart.yaml").read_text())
    meta.update(chart_fields)
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return copy


def template(helm: str, chart: Path, *sets: str) -> list[dict]:
    cmd = [find_helms()[helm], "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_templates(docs: list[dict]) -> dict[str, str]:
    """Each StatefulSet's pod template, as YAML text (byte comparison)."""
    return {
        d["metadata"]["name"]: yaml.safe_dump(d["spec"]["template"], sort_keys=True)
        for d in docs
        if d["kind"] == "StatefulSet"
    }


@pytest.mark.parametrize("sets", [(), WIDE], ids=["defaults", "wide"])
def test_a_chart_version_bump_leaves_both_pod_templates_byte_identical(helm, tmp_path, sets):
    # Given the chart as it is and the same chart with only `version:`
    # bumped (a documentation-only release of the chart),
    old = template(helm, chart_with(tmp_path / "old", version="0.1.0"), *sets)
    new = template(helm, chart_with(tmp_path / "new", version="9.8.7"), *sets)
    # then the top-level objects say which chart made them,
    assert {d["metadata"]["labels"]["helm.sh/chart"] for d in new} == {"election-9.8.7"}
    # but neither pod template changes: no restart of a ZooKeeper server
    # (a leader election each) nor of an election replica.
    before, after = pod_templates(old), pod_templates(new)
    assert set(before) == {"election", "election-zookeeper"}
    for name in before:
        assert before[name] == after[name], f"{name}: the pod template depends on the chart version"


def test_an_app_version_bump_changes_only_the_election_image(helm, tmp_path):
    # appVersion is the default tag of the election image: a new image is a
    # real change of the election pods, and of nothing else in them.
    old = pod_templates(template(helm, chart_with(tmp_path / "old", appVersion="0.1.0")))
    new = pod_templates(template(helm, chart_with(tmp_path / "new", appVersion="0.2.0")))
    assert old["election-zookeeper"] == new["election-zookeeper"]
    assert old["election"] != new["election"]
    assert old["election"].replace("election:0.1.0", "election:0.2.0") == new["election"]


def test_pod_templates_carry_the_selector_labels_and_the_users_labels_only(helm):
    docs = template(helm, CHART, *WIDE)
    for d in docs:
        if d["kind"] != "StatefulSet":
            continue
        selector = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        user = {"team": "payments"} | ({"tier": "backend"} if d["metadata"]["name"] == "election" else {})
        assert labels == selector | user, d["metadata"]["name"]


# --- ZooKeeper credentials without a cluster (GitOps) -------------------------


def test_helm_template_never_invents_a_zookeeper_password(helm):
    # Given credentials on and no Secret of the user's, when the chart is
    # rendered without a cluster (helm template, Argo CD) twice,
    runs = [
        subprocess.run(
            [find_helms()[helm], "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            + ["--set", "zookeeper.auth.enabled=true"],
            capture_output=True,
            text=True,
            check=False,
        )
        for _ in range(2)
    ]
    # then no render carries a password that the next one would change: the
    # chart refuses and says to give zookeeper.auth.existingSecret.
    for run in runs:
        assert run.returncode != 0, "rendered a generated password without a cluster to keep it"
        assert "zookeeper.auth.existingSecret=election-zk-auth" in run.stderr, run.stderr
        assert "kubectl create secret generic election-zk-auth" in run.stderr, run.stderr


def test_helm_template_with_credentials_renders_the_same_output_twice(helm):
    sets = ("zookeeper.auth.enabled=true", "zookeeper.auth.existingSecret=election-zk-auth")
    first, second = (
        subprocess.run(
            [find_helms()[helm], "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            + [a for s in sets for a in ("--set", s)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(2)
    )
    assert first == second


# --- the ensemble's size, heap and session bounds ---------------------------


def render_or_error(helm: str, *sets: str) -> subprocess.CompletedProcess:
    cmd = [find_helms()[helm], "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("servers", "ok"), [(1, True), (2, False), (3, True), (4, False), (5, True), (6, False)])
def test_only_odd_ensembles_render(helm, servers, ok):
    out = render_or_error(helm, f"zookeeper.replicas={servers}")
    assert (out.returncode == 0) == ok, out.stderr
    if not ok:
        assert f"zookeeper.replicas is {servers}: an even ensemble" in out.stderr


@pytest.mark.parametrize(
    ("heap", "limit", "ok"),
    [
        (256, "512Mi", True),  # the defaults: 256 + 64 + 96 = 416
        (332, "512Mi", True),  # 332 + 83 + 96 = 511
        (336, "512Mi", False),  # 336 + 84 + 96 = 516
        (512, "1Gi", True),
        (1024, "1Gi", False),
        (700, "1G", False),  # 1G = 953 MiB: 700 + 175 + 96 = 971
        (600, "1G", True),
        (256, "536870912", True),  # bytes: 512 MiB
    ],
)
def test_the_heap_must_leave_the_jvm_room_below_the_memory_limit(helm, heap, limit, ok):
    out = render_or_error(helm, f"zookeeper.heapMb={heap}", f"zookeeper.resources.limits.memory={limit}")
    assert (out.returncode == 0) == ok, out.stderr
    if not ok:
        assert f"zookeeper.heapMb ({heap} MiB) does not fit zookeeper.resources.limits.memory ({limit}" in out.stderr


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        # The servers clamp the replicas' 6s to [min, max]: 5s sync needs more.
        ("maxSessionTimeout=5000", False),
        ("maxSessionTimeout=5001", True),
        ("maxSessionTimeout=40000", True),
        # A minimum above the request raises the granted timeout.
        ("minSessionTimeout=8000", True),
    ],
)
def test_session_bounds_in_extra_config_enter_the_sync_limit_check(helm, extra, ok):
    out = render_or_error(helm, f"zookeeper.extraConfig[0]={extra}")
    assert (out.returncode == 0) == ok, out.stderr
    # With syncLimit 7 (7s), only a minimum above 7s lets the 6s session pass.
    out = render_or_error(helm, "zookeeper.syncLimit=7", f"zookeeper.extraConfig[0]={extra}")
    assert (out.returncode == 0) == (extra == "minSessionTimeout=8000"), out.stderr


# --- ZooKeeper's own metrics ------------------------------------------------


def test_zookeeper_metrics_are_served_and_scraped_with_the_service_monitor(helm):
    docs = template(helm, CHART, "serviceMonitor.enabled=true")
    (zk,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "election-zookeeper"]
    c = zk["spec"]["template"]["spec"]["containers"][0]
    extra = next(e["value"] for e in c["env"] if e["name"] == "ZOO_CFG_EXTRA").split()
    assert "metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider" in extra
    assert "metricsProvider.httpPort=7000" in extra
    assert {"name": "metrics", "containerPort": 7000, "protocol": "TCP"} in c["ports"]
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"election", "election-zookeeper"}
    zk_monitor = monitors["election-zookeeper"]["spec"]
    assert zk_monitor["endpoints"][0]["port"] == "metrics"
    headless = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "election-zookeeper-headless")
    assert all(headless["metadata"]["labels"][k] == v for k, v in zk_monitor["selector"]["matchLabels"].items())
    assert {"name": "metrics", "port": 7000, "targetPort": "metrics", "protocol": "TCP"} in headless["spec"]["ports"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "election-zookeeper")
    assert any(r["ports"] == [{"port": "metrics", "protocol": "TCP"}] for r in policy["spec"]["ingress"])


@pytest.mark.parametrize("sets", [(), ("serviceMonitor.enabled=true", "zookeeper.metrics.enabled=false")])
def test_zookeeper_metrics_are_off_without_a_service_monitor_or_when_turned_off(helm, sets):
    docs = template(helm, CHART, *sets)
    (zk,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "election-zookeeper"]
    c = zk["spec"]["template"]["spec"]["containers"][0]
    assert "metricsProvider" not in next(e["value"] for e in c["env"] if e["name"] == "ZOO_CFG_EXTRA")
    assert all(p["name"] != "metrics" for p in c["ports"])
    assert all(d["metadata"]["name"] != "election-zookeeper" for d in docs if d["kind"] == "ServiceMonitor")
