"""Least privilege on the days after install: the admission policy under a
namespace overlay, clusters without ValidatingAdmissionPolicy, the RBAC
edges, and manifests/ as `kubectl apply` and kustomize see it.

The end-to-end proof on a real API server is scripts/e2e-k8s.sh (step 9,
scripts/lib-e2e-overlays.sh); these tests pin what the chart and the
committed manifests/ render.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import CHART, ROOT, VAP_API, container, env_of, find_helms, find_kubectl, render, render_notes

MANIFESTS = ROOT / "manifests"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def render_in(helm: str, namespace: str, *sets: str, api_versions: tuple[str, ...] = (VAP_API,)) -> list[dict]:
    """The chart rendered as release `election` in NAMESPACE (without the `helm test` hooks)."""
    cmd = [find_helms()[helm], "template", "election", str(CHART), "--namespace", namespace, "--skip-tests"]
    for a in api_versions:
        cmd += ["--api-versions", a]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (d,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return d


def pod_patch_names(role: dict):
    (rule,) = [r for r in role["rules"] if r["resources"] == ["pods"] and "patch" in r["verbs"]]
    return rule.get("resourceNames")


def committed_manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all((MANIFESTS / "election.yaml").read_text()) if d]


# --- item 1: the policy follows the namespace it is applied to --------------


def test_the_admission_policy_matches_the_service_account_of_the_pods_namespace(helm):
    docs = render_in(helm, "team-a")
    policy = one(docs, "ValidatingAdmissionPolicy")
    (cond,) = policy["spec"]["matchConditions"]
    sa = one(docs, "StatefulSet", "election")["spec"]["template"]["spec"]["serviceAccountName"]
    # The account is the one of the namespace the request is in: a kustomize
    # `namespace:` overlay of the rendered objects moves it with the pods.
    assert cond["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:' + request.namespace + ':' + '{sa}'"
    )
    assert "team-a" not in yaml.safe_dump(policy["spec"])
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "team-a"
    }
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == "team-a-election-pods"


def test_cluster_scoped_names_are_unique_per_namespace_and_release(helm):
    names = {
        (ns, release): {d["metadata"]["name"] for d in docs if d["kind"] in POLICY_KINDS}
        for ns in ("team-a", "team-b")
        for release, docs in [(release, render_in(helm, ns, f"fullnameOverride={release}")) for release in ("a", "b")]
    }
    assert all(len(v) == 1 for v in names.values()), names
    assert len({n for v in names.values() for n in v}) == 4, names


def test_any_namespace_renders_the_same_policy_objects_for_every_namespace(helm):
    a, b = (
        [d for d in render_in(helm, ns, "kubernetes.admissionPolicy.anyNamespace=true") if d["kind"] in POLICY_KINDS]
        for ns in ("team-a", "team-b")
    )
    assert a == b, "two namespace overlays must apply the very same cluster-scoped objects"
    assert {d["metadata"]["name"] for d in a} == {"election-pods"}
    binding = one(a, "ValidatingAdmissionPolicyBinding")
    assert "matchResources" not in binding["spec"], "bound in every namespace: the policy's condition picks the account"
    assert "team-a" not in yaml.safe_dump(a)


# --- item 2: without the policy, the Role names the pods -------------------


def test_pod_names_in_role_keeps_resource_names_next_to_the_policy(helm):
    docs = render_in(helm, "team-a", "kubernetes.admissionPolicy.podNamesInRole=true", "replicaCount=4")
    assert pod_patch_names(one(docs, "Role", "election")) == [f"election-{i}" for i in range(4)]
    one(docs, "ValidatingAdmissionPolicy")
    # The chart's default with the policy: no names (kubectl scale works).
    assert pod_patch_names(one(render_in(helm, "team-a"), "Role", "election")) is None


def test_an_api_server_without_the_policy_kind_gets_a_role_naming_the_pods(helm):
    # .Capabilities without admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy
    # (Kubernetes 1.25-1.29): no policy, and the Role falls back to the names.
    docs = render_in(helm, "team-a", api_versions=("admissionregistration.k8s.io/v1",))
    assert not [d for d in docs if d["kind"] in POLICY_KINDS]
    assert pod_patch_names(one(docs, "Role", "election")) == ["election-0", "election-1", "election-2"]


def test_notes_say_the_policy_needs_kubernetes_1_30_and_what_the_role_allows_instead():
    # `helm install --dry-run=client` announces no ValidatingAdmissionPolicy.
    notes = " ".join(render_notes().split())
    assert "needs Kubernetes >= 1.30" in notes
    assert "names the pods election-0..2" in notes
    assert "kubectl scale" in notes
    assert "needs Kubernetes >= 1.30" not in " ".join(render_notes("kubernetes.labelPod=false").split())


# --- item 3: RBAC edges ----------------------------------------------------


def test_an_existing_service_account_is_bound_by_its_name(helm):
    docs = render_in(helm, "team-a", "serviceAccount.create=false", "serviceAccount.name=election-sa")
    # The replicas' account is not created; the rollout hook's own account
    # (a hook object, deleted when the hook succeeds) is not theirs.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"] == ["election-rollout"]
    assert one(docs, "RoleBinding", "election")["subjects"] == [{"kind": "ServiceAccount", "name": "election-sa", "namespace": "team-a"}]
    (cond,) = one(docs, "ValidatingAdmissionPolicy")["spec"]["matchConditions"]
    assert cond["expression"].endswith("+ 'election-sa'")


def test_the_events_rule_is_what_the_kube_runtime_recorder_uses(helm):
    # kube-runtime 5's events::Recorder::publish: `create` for a new Event,
    # a merge `patch` of the series for a repeat; never get, list, watch,
    # update or delete. Names are generated (<pod>.<nanoseconds in hex>), so
    # resourceNames cannot narrow either verb.
    role = one(render_in(helm, "team-a"), "Role", "election")
    (rule,) = [r for r in role["rules"] if r["apiGroups"] == ["events.k8s.io"]]
    assert rule == {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
    assert not [r for r in role["rules"] if r["apiGroups"] == [""] and "events" in r["resources"]]
    env = env_of(container(one(render_in(helm, "team-a"), "StatefulSet", "election"), "election"))
    assert env["ELECTION_POD_EVENTS"]["value"] == "true"


# --- items 1, 2, 12: the committed manifests/ --------------------------------


def test_manifests_role_names_the_pods_so_a_cluster_without_the_policy_stays_safe():
    docs = committed_manifests()
    assert pod_patch_names(one(docs, "Role", "election")) == ["election-0", "election-1", "election-2"]
    assert {d["kind"] for d in docs} >= set(POLICY_KINDS)


def test_manifests_apply_with_f_in_file_order_and_say_minus_k():
    docs = committed_manifests()
    # kubectl apply -f applies in file order: the Namespace must come first.
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "election"
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert sorted(p.name for p in MANIFESTS.iterdir()) == ["election.yaml", "kustomization.yaml"]
    kustomization = (MANIFESTS / "kustomization.yaml").read_text()
    assert yaml.safe_load(kustomization)["resources"] == ["election.yaml"]
    comment = " ".join(line.lstrip("# ") for line in kustomization.splitlines() if line.startswith("#"))
    assert "-k, not -f manifests/" in comment
    assert "kubectl apply -f manifests/election.yaml" in comment
    assert "Kubernetes >= 1.30" in comment


def test_manifests_are_not_labelled_as_managed_by_helm():
    for path in MANIFESTS.iterdir():
        assert "managed-by: Helm" not in path.read_text(), path.name
    for d in committed_manifests():
        assert "app.kubernetes.io/managed-by" not in d["metadata"].get("labels", {}), d["metadata"]["name"]


@pytest.fixture
def kustomize_overlay(tmp_path: Path):
    kubectl = find_kubectl()
    if not kubectl:
        pytest.skip("kubectl not found")

    def build(namespace: str) -> list[dict]:
        overlay = tmp_path / namespace
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            # kustomize takes a base only by a relative path.
            yaml.safe_dump({"resources": [os.path.relpath(MANIFESTS, overlay)], "namespace": namespace})
        )
        out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True)
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return build


def test_a_namespace_only_overlay_of_manifests_moves_everything_the_policy_needs(kustomize_overlay):
    a, b = kustomize_overlay("tenant-a"), kustomize_overlay("tenant-b")
    namespaces = [d["metadata"]["name"] for d in a if d["kind"] == "Namespace"]
    assert namespaces == ["tenant-a"]
    for d in a:
        if d["kind"] not in ("Namespace", *POLICY_KINDS):
            assert d["metadata"]["namespace"] == "tenant-a", f"{d['kind']}/{d['metadata']['name']}"
    assert one(a, "RoleBinding")["subjects"][0]["namespace"] == "tenant-a"
    policy = one(a, "ValidatingAdmissionPolicy")
    (cond,) = policy["spec"]["matchConditions"]
    assert "request.namespace" in cond["expression"] and "serviceaccount:election:" not in cond["expression"]
    assert "matchResources" not in one(a, "ValidatingAdmissionPolicyBinding")["spec"]
    # Two overlays apply the same cluster-scoped objects: no collision.
    strip = lambda docs: [  # noqa: E731
        {**d, "metadata": {k: v for k, v in d["metadata"].items() if k != "namespace"}}
        for d in docs
        if d["kind"] in POLICY_KINDS
    ]
    assert strip(a) == strip(b)
