"""The `helm test` pod's leader check, run for real.

The test pod's image (registry.k8s.io/kubectl) has no shell, so its check is
one `kubectl get ... -o go-template=...` whose template fails unless exactly
one pod is labelled election-state=leader. These tests run that exact command
line, taken from the rendered chart, with a real kubectl against a small
stand-in for the Kubernetes API on loopback that serves a pod list.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import NAMESPACE, find_helms, find_kubectl, render

KUBECTL = find_kubectl()
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (scripts/install-tools.sh)")

ELECTION_LABELS = {
    "app.kubernetes.io/name": "election",
    "app.kubernetes.io/instance": "election",
    "app.kubernetes.io/component": "election",
}


def pod(name: str, state: str, ready: bool = True) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {**ELECTION_LABELS, "election-state": state}},
        "spec": {"containers": [{"name": "election", "image": "election:0.1.0"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class FakeApi(BaseHTTPRequestHandler):
    """Just enough of the API for `kubectl get pods -l ...`: discovery and a list."""

    pods: list[dict] = []
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        FakeApi.requests.append(self.path)
        if url.path == "/api":
            self.reply({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        elif url.path == "/apis":
            self.reply({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif url.path == "/api/v1":
            self.reply(
                {
                    "kind": "APIResourceList",
                    "groupVersion": "v1",
                    "resources": [
                        {
                            "name": "pods",
                            "singularName": "pod",
                            "namespaced": True,
                            "kind": "Pod",
                            "verbs": ["get", "list", "watch"],
                            "shortNames": ["po"],
                        }
                    ],
                }
            )
        elif url.path == f"/api/v1/namespaces/{NAMESPACE}/pods":
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
            items = [p for p in FakeApi.pods if wanted.items() <= p["metadata"]["labels"].items()]
            self.reply({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
        else:
            self.reply({"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"}, 404)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    home = tmp_path_factory.mktemp("kubectl-home")
    kubeconfig = home / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    yield home, kubeconfig
    server.shutdown()


def leader_check_command() -> list[str]:
    """The command and args of the test pod's checking container, as rendered."""
    docs = render(sorted(find_helms())[0])
    (test_pod,) = [d for d in docs if d["kind"] == "Pod" and d["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    (check,) = test_pod["spec"]["containers"]
    assert check["name"] == "exactly-one-leader"
    return check["command"] + check["args"]


def run_check(api, pods: list[dict]) -> subprocess.CompletedProcess:
    home, kubeconfig = api
    FakeApi.pods = pods
    cmd = leader_check_command()
    assert cmd[0] == "kubectl"
    return subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", *cmd[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_leader_check_passes_with_exactly_one_leader(api):
    out = run_check(api, [pod("election-0", "attempter"), pod("election-1", "leader"), pod("election-2", "attempter")])
    assert out.returncode == 0, out.stderr
    assert "leader: election-1" in out.stdout
    assert re.search(r"^PASS: exactly one Ready pod", out.stdout, re.M)
    assert any("election-state%3Dleader" in r or "election-state=leader" in r for r in FakeApi.requests)


def test_leader_check_fails_without_a_leader(api):
    out = run_check(api, [pod("election-0", "attempter"), pod("election-1", "failover")])
    assert out.returncode != 0
    assert "found 0" in out.stdout + out.stderr


def test_leader_check_fails_with_two_leaders(api):
    out = run_check(api, [pod("election-0", "leader"), pod("election-1", "leader"), pod("election-2", "stopping")])
    assert out.returncode != 0
    assert "found 2" in out.stdout + out.stderr
    assert not re.search(r"^PASS", out.stdout, re.M)


def test_a_stale_leader_label_on_a_pod_that_is_not_ready_does_not_fail_the_check(api):
    # A leader killed without a last patch keeps its label until the new
    # leader corrects it; its pod is no longer Ready.
    out = run_check(api, [pod("election-0", "leader", ready=False), pod("election-1", "leader")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ignored (labelled leader, not Ready): election-0" in out.stdout
    assert "leader: election-1" in out.stdout


def test_two_ready_pods_labelled_leader_fail_the_check(api):
    out = run_check(api, [pod("election-0", "leader"), pod("election-1", "leader")])
    assert out.returncode != 0
    assert "found 2" in out.stdout + out.stderr


def test_leader_check_only_counts_this_release(api):
    other = pod("other-0", "leader")
    other["metadata"]["labels"]["app.kubernetes.io/instance"] = "other"
    out = run_check(api, [pod("election-0", "leader"), other])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "other-0" not in out.stdout


def test_kubectl_under_test_is_recent_enough():
    version = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True, check=True)
    minor = int(json.loads(version.stdout)["clientVersion"]["minor"].rstrip("+"))
    assert minor >= 32, "the test pod relies on kubectl >= 1.32 (wait --for=create with a selector)"
    assert Path(KUBECTL).exists()
