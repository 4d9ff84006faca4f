"""Rollouts (rollout.strategy): an OnDelete StatefulSet and the post-upgrade
hook that runs `election rollout`, or the controller's RollingUpdate.

The behaviour (one leader change per rollout) is proven on the real control
plane by scripts/e2e-k8s.sh (step 9); these check what the chart renders.
"""

from __future__ import annotations

from conftest import env_of, env_values

HOOK_ANNOTATION = "post-upgrade,post-rollback"


def rollout_objects(m) -> dict[str, dict]:
    """The hook's objects by kind."""
    found = {d["kind"]: d for d in m.hooks() if d["metadata"]["name"] == "election-rollout"}
    return found


def test_leader_last_is_the_default_an_on_delete_set_and_a_post_upgrade_hook(helm, manifests):
    m = manifests(helm)
    assert m.election["spec"]["updateStrategy"] == {"type": "OnDelete"}
    hook = rollout_objects(m)
    assert set(hook) == {"ServiceAccount", "Role", "RoleBinding", "Pod"}
    for kind, obj in hook.items():
        ann = obj["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == HOOK_ANNOTATION, kind
        assert set(ann["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}, kind
    pod = hook["Pod"]
    # RBAC first, the pod after it.
    assert int(pod["metadata"]["annotations"]["helm.sh/hook-weight"]) > int(hook["Role"]["metadata"]["annotations"]["helm.sh/hook-weight"])
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "election-rollout"
    (c,) = spec["containers"]
    assert c["image"] == m.election["spec"]["template"]["spec"]["containers"][0]["image"]
    assert c["args"] == ["rollout"]
    env = env_values(c)
    assert env["ELECTION_ROLLOUT_STATEFULSET"] == "election"
    assert env_of(c)["ELECTION_ROLLOUT_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["ELECTION_ROLLOUT_STEP_TIMEOUT"] == "5m" and env["ELECTION_ROLLOUT_LEADER_WAIT"] == "30s"
    # Not one of the StatefulSet's pods, and not the leader Service's.
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "rollout"


def test_the_hook_may_get_its_statefulset_list_pods_and_delete_only_its_pods(helm, manifests):
    m = manifests(helm, sets=("replicaCount=5",))
    hook = rollout_objects(m)
    assert hook["Role"]["rules"] == [
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"], "resourceNames": ["election"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"], "resourceNames": [f"election-{i}" for i in range(5)]},
    ]
    binding = hook["RoleBinding"]
    assert binding["roleRef"]["name"] == "election-rollout"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "election-rollout", "namespace": "election"}]
    assert hook["ServiceAccount"]["automountServiceAccountToken"] is False


def test_rolling_update_renders_the_controllers_order_and_no_hook(helm, manifests):
    for sets in (("rollout.strategy=RollingUpdate",), ("kubernetes.labelPod=false",)):
        m = manifests(helm, sets=sets)
        assert m.election["spec"]["updateStrategy"] == {"type": "RollingUpdate"}, sets
        assert rollout_objects(m) == {}, sets


def test_the_hook_pod_is_as_hardened_as_the_replicas(helm, manifests):
    m = manifests(helm)
    pod = rollout_objects(m)["Pod"]
    election = m.election["spec"]["template"]["spec"]
    assert pod["spec"]["securityContext"] == election["securityContext"]
    assert pod["spec"]["containers"][0]["securityContext"] == election["containers"][0]["securityContext"]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
