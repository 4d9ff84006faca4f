"""What the rendered chart must guarantee, under helm 3 and helm 4.

Each test renders charts/election (default values, or one of charts/election/ci/*.yaml)
and asserts one property that the daemon, Kubernetes or the user relies on.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    BAD_VALUES,
    CHART,
    CI_VALUES,
    NAMESPACE,
    ROOT,
    VAP_API,
    RenderError,
    container,
    duration_ms,
    env_of,
    env_values,
    find_helms,
    render,
    render_notes,
    render_text,
)

CUSTOM = CHART / "ci" / "custom-values.yaml"
BUNDLED = CHART / "ci" / "bundled-values.yaml"
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
ALL_VALUES = [pytest.param((), id="defaults")] + [pytest.param((v,), id=v.stem) for v in CI_VALUES]


def values_of(*files: Path) -> dict:
    """Default values overlaid with the given files (deep merge)."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out

    merged = DEFAULTS
    for f in files:
        merged = merge(merged, yaml.safe_load(f.read_text()) or {})
    return merged


# --- the election replicas ---------------------------------------------------


@pytest.mark.parametrize("values", ALL_VALUES)
def test_prestop_hook_runs_election_release_with_the_configured_timeout(helm, manifests, values):
    v = values_of(*values)
    c = container(manifests(helm, *values).election, "election")
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:2] == ["/usr/local/bin/election", "release"]
    args = dict(zip(cmd[2::2], cmd[3::2]))
    assert args["--timeout"] == v["election"]["releaseTimeout"]
    assert args["--admin-addr"] == env_values(c)["ELECTION_ADMIN_ADDR"]


@pytest.mark.parametrize("values", ALL_VALUES)
def test_grace_period_covers_the_release_timeout_and_a_shutdown(helm, manifests, values):
    m = manifests(helm, *values)
    spec = m.election["spec"]["template"]["spec"]
    cmd = container(m.election, "election")["lifecycle"]["preStop"]["exec"]["command"]
    release_ms = duration_ms(cmd[cmd.index("--timeout") + 1])
    assert spec["terminationGracePeriodSeconds"] * 1000 >= release_ms + 5000


def test_the_chart_refuses_a_grace_period_shorter_than_the_release(helm):
    with pytest.raises(RenderError, match="terminationGracePeriodSeconds"):
        render(helm, sets=("terminationGracePeriodSeconds=30", "election.releaseTimeout=1m"))
    render(helm, sets=("terminationGracePeriodSeconds=65", "election.releaseTimeout=1m"))


def test_pod_name_and_namespace_come_from_the_downward_api(helm, manifests):
    env = env_of(container(manifests(helm).election, "election"))
    assert env["ELECTION_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ELECTION_POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The node id defaults to the host name, i.e. the pod name.
    assert "ELECTION_NODE_ID" not in env


def test_every_flag_of_election_run_is_set_from_values(helm, manifests):
    """Drift check against the daemon: every `env = "ELECTION_..."` of RunArgs is wired."""
    source = (ROOT / "src" / "config.rs").read_text()
    match = re.search(r"pub struct RunArgs \{(.*?)\n\}", source, re.S)
    assert match, "src/config.rs has no `pub struct RunArgs`: update this test"
    daemon_env = set(re.findall(r'env = "(ELECTION_[A-Z_]+)"', match.group(1)))
    assert len(daemon_env) >= 10, daemon_env
    chart_env = set(env_of(container(manifests(helm).election, "election")))
    # The node id is left to default to the pod name (unique per replica).
    assert daemon_env - {"ELECTION_NODE_ID"} <= chart_env, daemon_env - chart_env


def test_log_level_is_the_daemons_quiet_default_unless_set(helm, manifests):
    """No RUST_LOG by default: the daemon's own filter keeps zookeeper_client at warn."""
    assert "RUST_LOG" not in env_of(container(manifests(helm).election, "election"))
    telemetry = (ROOT / "src" / "main.rs").read_text() + (ROOT / "src" / "telemetry.rs").read_text()
    assert "zookeeper_client=warn" in telemetry, "the daemon's default filter moved: update values.yaml"
    env = env_values(container(manifests(helm, sets=("election.logLevel=debug",)).election, "election"))
    assert env["RUST_LOG"] == "debug"


def test_daemon_settings_follow_the_values(helm, manifests):
    env = env_values(container(manifests(helm, CUSTOM).election, "election"))
    assert env["ELECTION_LEADER_TIMEOUT"] == "2s"
    assert env["ELECTION_ATTEMPTER_TIMEOUT"] == "1m30s"
    assert env["ELECTION_STORAGE_CAPACITY"] == "50"
    assert env["ELECTION_ZK_SESSION_TIMEOUT"] == "4s"
    assert env["ELECTION_ZK_ROOT"] == "/teams/payments/election"
    assert env["ELECTION_LOG_FORMAT"] == "text"
    assert env["RUST_LOG"] == "election=debug,info"
    assert env["ELECTION_FAILOVER_GIVE_UP"] == "5m"
    assert env["EXTRA"] == "1"


def test_defaults_are_production_ones(helm, manifests):
    env = env_values(container(manifests(helm).election, "election"))
    assert env["ELECTION_LOG_FORMAT"] == "json"
    assert env["ELECTION_FILE_DIR"] == "/var/lib/election"
    # Dual-stack: the daemon binds [::] with IPV6_V6ONLY off (IPv4 too).
    assert env["ELECTION_HTTP_ADDR"] == "[::]:8080"
    assert env["ELECTION_ADMIN_ADDR"].startswith("127.0.0.1:")
    assert env["ELECTION_FAILOVER_GIVE_UP"] == "0s"


def test_zk_root_defaults_to_election_slash_fullname(helm, manifests):
    env = env_values(container(manifests(helm).election, "election"))
    assert env["ELECTION_ZK_ROOT"] == "/election/election"
    env = env_values(container(manifests(helm, sets=("fullnameOverride=orders",)).election, "election"))
    assert env["ELECTION_ZK_ROOT"] == "/election/orders"


@pytest.mark.parametrize("values", ALL_VALUES)
def test_file_dir_volume_is_mounted_where_election_file_dir_points(helm, manifests, values):
    v = values_of(*values)
    sts = manifests(helm, *values).election
    c = container(sts, "election")
    file_dir = env_values(c)["ELECTION_FILE_DIR"]
    assert file_dir == v["persistence"]["fileDir"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == file_dir]
    assert not mount.get("readOnly")
    assert "subPath" not in mount
    names = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
    names += [
        vol["name"] for vol in sts["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in vol
    ]
    assert mount["name"] in names, "the file-dir must be on a PersistentVolume"


@pytest.mark.parametrize("values", ALL_VALUES)
def test_restart_takeover_keeps_the_session_on_a_private_empty_dir_per_pod(helm, manifests, values):
    """The state dir survives a container restart (emptyDir), is never shared (no claim)."""
    sts = manifests(helm, *values).election
    c = container(sts, "election")
    state_dir = env_values(c)["ELECTION_STATE_DIR"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == state_dir]
    assert not mount.get("readOnly") and "subPath" not in mount
    (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume, volume
    assert state_dir != env_values(c)["ELECTION_FILE_DIR"]


def test_restart_takeover_can_be_turned_off(helm, manifests):
    sts = manifests(helm, sets=("election.restartTakeover=false",)).election
    c = container(sts, "election")
    assert "ELECTION_STATE_DIR" not in env_of(c)
    assert "state" not in [m["name"] for m in c["volumeMounts"]]
    assert "state" not in [v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]]


def test_shared_mode_mounts_one_claim_in_every_replica(helm, manifests):
    m = manifests(helm)
    sts = m.election
    assert "volumeClaimTemplates" not in sts["spec"]
    (vol,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "files"]
    claim = m.one("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Mi"
    assert "storageClassName" not in claim["spec"], "empty storageClass means the cluster default"


def test_per_replica_mode_gives_each_pod_its_own_claim(helm, manifests):
    m = manifests(helm, CUSTOM)
    (tpl,) = m.election["spec"]["volumeClaimTemplates"]
    assert tpl["metadata"]["name"] == "files"
    assert tpl["spec"]["storageClassName"] == "fast-ssd"
    assert tpl["spec"]["accessModes"] == ["ReadWriteOncePod"]
    assert not m.all("PersistentVolumeClaim")


def test_existing_claim_is_used_as_is(helm, manifests):
    m = manifests(helm, BUNDLED)
    (vol,) = [v for v in m.election["spec"]["template"]["spec"]["volumes"] if v["name"] == "files"]
    assert vol["persistentVolumeClaim"]["claimName"] == "shared-rwx-claim"
    assert not m.all("PersistentVolumeClaim")


def test_storage_class_dash_disables_dynamic_provisioning(helm, manifests):
    m = manifests(helm, sets=("persistence.storageClass=-",))
    assert m.one("PersistentVolumeClaim")["spec"]["storageClassName"] == ""


@pytest.mark.parametrize("values", ALL_VALUES)
def test_probes_hit_healthz_and_readyz_on_the_http_port(helm, manifests, values):
    c = container(manifests(helm, *values).election, "election")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (port,) = c["ports"]
    assert port["name"] == "http"
    assert env_values(c)["ELECTION_HTTP_ADDR"] == f"[::]:{port['containerPort']}"


def test_the_admin_listener_is_never_a_container_port(helm, manifests):
    c = container(manifests(helm).election, "election")
    admin_port = int(env_values(c)["ELECTION_ADMIN_ADDR"].rsplit(":", 1)[1])
    assert admin_port not in [p["containerPort"] for p in c["ports"]]


def test_election_statefulset_has_stable_names_and_parallel_pods(helm, manifests):
    m = manifests(helm)
    sts = m.election
    assert sts["metadata"]["name"] == "election"
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = m.one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "election:0.1.0"
    assert sts["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_image_digest_replaces_the_tag(helm, manifests):
    image = container(manifests(helm, CUSTOM).election, "election")["image"]
    assert re.fullmatch(r"registry\.example\.com/election@sha256:[0-9a-f]{64}", image)


# --- RBAC ----------------------------------------------------------------------


def rules_by(role: dict) -> dict:
    """{(apiGroup, resource, verb): resourceNames or None} of a Role."""
    out = {}
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert (g, r, v) not in out, f"{g}/{r} {v} granted twice"
                    out[(g, r, v)] = rule.get("resourceNames")
    return out


@pytest.mark.parametrize("replicas", [1, 3, 7])
def test_without_the_admission_policy_the_role_names_the_release_pods(helm, manifests, replicas):
    m = manifests(helm, sets=(f"replicaCount={replicas}",))
    assert not m.all("ValidatingAdmissionPolicy")
    rules = rules_by(m.one("Role", "election"))
    assert rules[("", "pods", "patch")] == [f"election-{i}" for i in range(replicas)]
    assert ("", "pods", "get") not in rules, "the daemon never reads a pod by name"
    assert m.election["spec"]["replicas"] == replicas


@pytest.mark.parametrize("replicas", [1, 3, 7])
def test_with_the_admission_policy_the_role_is_the_same_for_any_replica_count(helm, manifests, replicas):
    m = manifests(helm, sets=(f"replicaCount={replicas}",), api_versions=(VAP_API,))
    assert rules_by(m.one("Role", "election")) == {
        ("", "pods", "patch"): None,
        ("", "pods", "list"): None,
        ("events.k8s.io", "events", "create"): None,
        ("events.k8s.io", "events", "patch"): None,
        ("coordination.k8s.io", "leases", "get"): ["election"],
        ("coordination.k8s.io", "leases", "update"): ["election"],
        ("coordination.k8s.io", "leases", "patch"): ["election"],
    }


def test_the_admission_policy_binds_to_the_service_account_and_the_namespace(helm, manifests):
    m = manifests(helm, api_versions=(VAP_API,))
    policy = m.one("ValidatingAdmissionPolicy", f"{NAMESPACE}-election-pods")
    binding = m.one("ValidatingAdmissionPolicyBinding", f"{NAMESPACE}-election-pods")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"][0]["operations"] == ["UPDATE"]
    sa = m.election["spec"]["template"]["spec"]["serviceAccountName"]
    (cond,) = spec["matchConditions"]
    # The account of the pod's own namespace, not a rendered one (issue 17,
    # item 1; tests/chart/test_chart_rbac_overlays.py).
    assert cond["expression"] == f"request.userInfo.username == 'system:serviceaccount:' + request.namespace + ':' + '{sa}'"
    exprs = " ".join(v["expression"] for v in spec["validations"])
    assert "object.spec == oldObject.spec" in exprs
    assert "authentication.kubernetes.io/pod-name" in " ".join(v["expression"] for v in spec["variables"])


def test_the_chart_owns_the_lease_mirror_and_the_role_cannot_create_leases(helm, manifests):
    m = manifests(helm, api_versions=(VAP_API,))
    lease = m.one("Lease", "election")
    assert lease["apiVersion"] == "coordination.k8s.io/v1"
    # The release's labels: `helm uninstall` and label selectors find it.
    assert lease["metadata"]["labels"]["app.kubernetes.io/instance"] == "election"
    # No holder: the leader writes the spec, and an upgrade must not reset it.
    assert not lease.get("spec")
    rules = rules_by(m.one("Role", "election"))
    assert [v for (g, r, v) in rules if r == "leases"] == ["get", "update", "patch"]
    # Only the Pod policy: the one that limited Lease creation is gone.
    assert [p["metadata"]["name"] for p in m.all("ValidatingAdmissionPolicy")] == [f"{NAMESPACE}-election-pods"]
    for sets in (("kubernetes.leaseMirror=false",), ("kubernetes.labelPod=false",)):
        assert not manifests(helm, sets=sets, api_versions=(VAP_API,)).all("Lease"), sets


def test_sibling_patches_are_limited_to_the_release_pods(helm, manifests):
    m = manifests(helm, api_versions=(VAP_API,))
    spec = m.one("ValidatingAdmissionPolicy", f"{NAMESPACE}-election-pods")["spec"]
    (release,) = [v["expression"] for v in spec["variables"] if v["name"] == "release"]
    for k, v in m.election["spec"]["selector"]["matchLabels"].items():
        assert f"variables.oldLabels['{k}'] == '{v}'" in release, k
    exprs = [v["expression"] for v in spec["validations"]]
    assert "variables.self || variables.release" in exprs
    (sibling,) = [e for e in exprs if "'stale'" in e]
    assert "['stale', '']" not in sibling, "a sibling's label may only become stale, never vanish"


def test_the_admission_policy_can_be_turned_off(helm, manifests):
    m = manifests(helm, sets=("kubernetes.admissionPolicy.enabled=false",), api_versions=(VAP_API,))
    assert not m.all("ValidatingAdmissionPolicy")
    assert rules_by(m.one("Role", "election"))[("", "pods", "patch")] == ["election-0", "election-1", "election-2"]


def test_events_lease_and_stale_labels_get_their_env_and_can_be_turned_off(helm, manifests):
    env = env_of(container(manifests(helm).election, "election"))
    assert env["ELECTION_POD_UID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert env["ELECTION_LEASE_NAME"]["value"] == "election"
    assert env["ELECTION_POD_EVENTS"]["value"] == "true"
    selector = dict(kv.split("=") for kv in env["ELECTION_POD_SELECTOR"]["value"].split(","))
    assert selector == manifests(helm).election["spec"]["selector"]["matchLabels"]
    m = manifests(helm, sets=("kubernetes.leaseMirror=false", "kubernetes.correctStaleLabels=false"))
    env = env_of(container(m.election, "election"))
    assert "ELECTION_LEASE_NAME" not in env and "ELECTION_POD_SELECTOR" not in env
    # Events are posted at every transition, stale-label correction or not.
    # `patch`: the Events recorder counts a repeated reason in the first
    # Event's series.
    assert set(rules_by(m.one("Role", "election"))) == {
        ("", "pods", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    }
    m = manifests(helm, sets=("kubernetes.events=false",))
    assert env_of(container(m.election, "election"))["ELECTION_POD_EVENTS"]["value"] == "false"
    assert not {r for r in rules_by(m.one("Role", "election")) if r[0] == "events.k8s.io"}


def test_role_binding_grants_the_role_to_the_pods_service_account(helm, manifests):
    m = manifests(helm)
    binding = m.one("RoleBinding", "election")
    spec = m.election["spec"]["template"]["spec"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "election"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": NAMESPACE}
    ]
    m.one("ServiceAccount", spec["serviceAccountName"])
    assert spec["automountServiceAccountToken"] is True


def test_labelling_off_removes_pod_identity_rbac_and_token(helm, manifests):
    m = manifests(helm, CUSTOM)
    spec = m.election["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    assert "ELECTION_POD_NAME" not in env and "ELECTION_POD_NAMESPACE" not in env
    assert spec["automountServiceAccountToken"] is False
    assert not [d for d in m.non_hooks() if d["kind"] in ("Role", "RoleBinding", "ClusterRole")]
    assert not [d for d in m.all("Service") if d["metadata"]["name"].endswith("-leader")]
    assert not manifests(helm, CUSTOM, api_versions=(VAP_API,)).all("ValidatingAdmissionPolicy")


def test_no_cluster_wide_rbac_is_ever_created(helm, manifests):
    for values in [(), (CUSTOM,), (BUNDLED,)]:
        kinds = {d["kind"] for d in manifests(helm, *values).docs}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


def test_leader_service_selects_the_pod_labelled_leader(helm, manifests):
    svc = manifests(helm).one("Service", "election-leader")
    assert svc["spec"]["selector"]["election-state"] == "leader"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "election"


# --- security ----------------------------------------------------------------------


@pytest.mark.parametrize("values", ALL_VALUES)
def test_every_container_is_hardened(helm, manifests, values):
    m = manifests(helm, *values)
    for name, spec in m.pod_specs():
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert "hostNetwork" not in spec and "hostPID" not in spec, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not sc.get("privileged"), where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) > 0, where


def test_election_runs_as_distroless_nonroot(helm, manifests):
    spec = manifests(helm).election["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["fsGroup"] == 65532


def test_only_pods_that_need_the_api_get_a_token(helm, manifests):
    m = manifests(helm)
    assert m.zookeeper["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    for sa in m.all("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


@pytest.mark.parametrize("values", ALL_VALUES)
def test_every_container_has_requests_and_a_memory_limit(helm, manifests, values):
    for name, spec in manifests(helm, *values).pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), f"{name}/{c['name']}"
            assert "memory" in res["limits"], f"{name}/{c['name']}"


# --- ZooKeeper ------------------------------------------------------------------------


@pytest.mark.parametrize("servers", [1, 3, 5])
def test_zookeeper_server_list_matches_its_replica_count(helm, manifests, servers):
    m = manifests(helm, sets=(f"zookeeper.replicas={servers}",))
    zk = m.zookeeper
    assert zk["spec"]["replicas"] == servers
    name, headless = zk["metadata"]["name"], zk["spec"]["serviceName"]
    zoo_servers = env_values(container(zk, "zookeeper"))["ZOO_SERVERS"].split()
    assert zoo_servers == [f"server.{i + 1}={name}-{i}.{headless}:2888:3888;2181" for i in range(servers)]
    election_servers = env_values(container(m.election, "election"))["ELECTION_ZK_SERVERS"].split(",")
    assert election_servers == [f"{name}-{i}.{headless}:2181" for i in range(servers)]


def test_zookeeper_peers_find_each_other_before_they_are_ready(helm, manifests):
    m = manifests(helm)
    zk = m.zookeeper
    headless = m.one("Service", zk["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} == {2181, 2888, 3888}
    assert headless["spec"]["selector"] == zk["spec"]["selector"]["matchLabels"]
    assert zk["spec"]["podManagementPolicy"] == "Parallel"
    client = m.one("Service", zk["metadata"]["name"])
    assert [p["port"] for p in client["spec"]["ports"]] == [2181]


@pytest.mark.parametrize("ordinal", [0, 1, 4])
def test_zookeeper_myid_is_the_pod_ordinal_plus_one(helm, manifests, ordinal):
    zk = manifests(helm).zookeeper
    c = container(zk, "zookeeper")
    assert c["command"][:2] == ["/bin/bash", "-ec"]
    script = c["command"][2]
    assert "exec /docker-entrypoint.sh zkServer.sh start-foreground" in script
    # Run the script's own myid line, with the exec replaced by a print.
    probe = script.replace("exec /docker-entrypoint.sh zkServer.sh start-foreground", 'echo "$ZOO_MY_ID"')
    out = subprocess.run(
        ["bash", "-ec", probe],
        env={"HOSTNAME": f"{zk['metadata']['name']}-{ordinal}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(ordinal + 1)


def test_zookeeper_probes_ask_ruok_which_the_whitelist_allows(helm, manifests):
    c = container(manifests(helm).zookeeper, "zookeeper")
    whitelist = env_values(c)["ZOO_4LW_COMMANDS_WHITELIST"].split(",")
    assert {"ruok", "srvr", "mntr"} <= set(whitelist)
    for probe in ("livenessProbe", "readinessProbe"):
        script = " ".join(c[probe]["exec"]["command"])
        assert "printf ruok" in script and "imok" in script, probe
    assert "srvr" in " ".join(c["readinessProbe"]["exec"]["command"])


def test_zookeeper_keeps_data_and_transaction_logs_on_its_volume(helm, manifests):
    zk = manifests(helm).zookeeper
    c = container(zk, "zookeeper")
    env = env_values(c)
    (tpl,) = zk["spec"]["volumeClaimTemplates"]
    (data,) = [m for m in c["volumeMounts"] if m["name"] == tpl["metadata"]["name"]]
    assert env["ZOO_DATA_DIR"] == data["mountPath"]
    assert env["ZOO_DATA_LOG_DIR"].startswith(data["mountPath"] + "/")
    assert tpl["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_zookeeper_persistence_can_be_turned_off(helm, manifests):
    zk = manifests(helm, BUNDLED).zookeeper
    assert "volumeClaimTemplates" not in zk["spec"]
    (data,) = [v for v in zk["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert "emptyDir" in data


def test_zookeeper_writable_paths_are_volumes(helm, manifests):
    """The root filesystem is read-only: everything the image writes is mounted."""
    zk = manifests(helm).zookeeper
    mounts = {m["mountPath"] for m in container(zk, "zookeeper")["volumeMounts"]}
    assert {"/data", "/conf", "/logs", "/tmp"} <= mounts
    (init,) = zk["spec"]["template"]["spec"]["initContainers"]
    assert "/conf" in " ".join(init["command"])


def test_zookeeper_is_spread_and_protected_from_drains(helm, manifests):
    m = manifests(helm)
    zk = m.zookeeper
    selector = zk["spec"]["selector"]["matchLabels"]
    (term,) = zk["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    pdb = m.by_component("PodDisruptionBudget", "zookeeper")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_hard_anti_affinity_is_required_scheduling(helm, manifests):
    zk = manifests(helm, BUNDLED).zookeeper
    anti = zk["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in anti


def test_zookeeper_image_is_the_pinned_official_one(helm, manifests):
    zk = manifests(helm).zookeeper
    for c in zk["spec"]["template"]["spec"]["initContainers"] + zk["spec"]["template"]["spec"]["containers"]:
        assert re.fullmatch(r"zookeeper:\d+\.\d+\.\d+", c["image"]), c["image"]


@pytest.mark.parametrize("values", [pytest.param((), id="defaults"), pytest.param((BUNDLED,), id="bundled-values")])
def test_zookeeper_sync_limit_is_shorter_than_the_session_timeout(helm, manifests, values):
    """The lease logic assumes syncLimit x tickTime < the session timeout (README, assumptions)."""
    m = manifests(helm, *values)
    zk = env_values(container(m.zookeeper, "zookeeper"))
    session_ms = duration_ms(env_values(container(m.election, "election"))["ELECTION_ZK_SESSION_TIMEOUT"])
    tick = int(zk["ZOO_TICK_TIME"])
    granted = min(max(session_ms, 2 * tick), 20 * tick)
    assert int(zk["ZOO_SYNC_LIMIT"]) * tick < granted
    assert int(zk["ZOO_INIT_LIMIT"]) >= int(zk["ZOO_SYNC_LIMIT"])


@pytest.mark.parametrize(
    ("sets", "ok"),
    [
        (("zookeeper.tickTime=2000",), False),  # 10s >= 6s
        (("election.zkSessionTimeout=5000ms",), False),  # 5s >= 5s
        (("election.zkSessionTimeout=5001ms",), True),
        (("election.zkSessionTimeout=1m",), True),  # granted 20 ticks = 20s > 5s
        (("zookeeper.syncLimit=20", "election.zkSessionTimeout=1m"), False),  # granted 20s, not above 20s
        (("zookeeper.tickTime=2000", "election.zkSessionTimeout=11s"), True),
        (("zookeeper.tickTime=2000", "election.zkSessionTimeout=1m30s"), True),
        (("zookeeper.enabled=false", "zookeeper.servers={zk:2181}", "zookeeper.tickTime=2000"), True),
    ],
)
def test_the_chart_refuses_a_sync_limit_not_below_the_session_timeout(helm, sets, ok):
    if ok:
        render(helm, sets=sets)
    else:
        with pytest.raises(RenderError, match=r"zookeeper.syncLimit x zookeeper.tickTime .* must be shorter"):
            render(helm, sets=sets)


def test_external_zookeeper_renders_no_ensemble(helm, manifests):
    m = manifests(helm, CUSTOM)
    assert not [d for d in m.docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "zookeeper"]
    env = env_values(container(m.election, "election"))
    assert env["ELECTION_ZK_SERVERS"] == ",".join(values_of(CUSTOM)["zookeeper"]["servers"])


# --- optional objects ------------------------------------------------------------------


def test_service_monitor_scrapes_each_replica_once(helm, manifests):
    m = manifests(helm, CUSTOM)
    sm = m.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    want = sm["spec"]["selector"]["matchLabels"]
    selected = [s for s in m.all("Service") if want.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 1, [s["metadata"]["name"] for s in selected]
    assert selected[0]["spec"]["publishNotReadyAddresses"] is True
    assert "http" in [p["name"] for p in selected[0]["spec"]["ports"]]


def test_monitoring_objects_are_off_by_default_and_network_policies_on(helm, manifests):
    m = manifests(helm)
    kinds = {d["kind"] for d in m.docs}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in m.all("NetworkPolicy")} == {
        "election",
        "zookeeper",
    }
    kinds = {d["kind"] for d in manifests(helm, sets=("networkPolicy.enabled=false",)).docs}
    assert "NetworkPolicy" not in kinds


@pytest.mark.parametrize("values", [pytest.param((), id="defaults"), pytest.param((BUNDLED,), id="bundled-values")])
def test_network_policy_lets_only_election_pods_reach_zookeeper(helm, manifests, values):
    m = manifests(helm, *values)
    zk_labels = m.zookeeper["spec"]["selector"]["matchLabels"]
    election_labels = m.election["spec"]["selector"]["matchLabels"]
    policy = m.by_component("NetworkPolicy", "zookeeper")
    assert policy["spec"]["podSelector"]["matchLabels"] == zk_labels
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    allowed: dict[str, list[dict]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            allowed.setdefault(port["port"], []).extend(p["podSelector"]["matchLabels"] for p in rule["from"])
    assert sorted(allowed) == ["client", "election", "follower"]
    assert sorted(allowed["client"], key=str) == sorted([election_labels, zk_labels], key=str)
    assert allowed["follower"] == [zk_labels]
    assert allowed["election"] == [zk_labels]
    # The named ports exist on the ZooKeeper container.
    ports = {p["name"]: p["containerPort"] for p in container(m.zookeeper, "zookeeper")["ports"]}
    assert ports == {"client": 2181, "follower": 2888, "election": 3888}


def test_network_policy_opens_only_the_http_port_of_election_pods(helm, manifests):
    m = manifests(helm, CUSTOM)
    policy = m.by_component("NetworkPolicy", "election")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == values_of(CUSTOM)["networkPolicy"]["httpFrom"]


def test_election_disruption_budget(helm, manifests):
    m = manifests(helm)
    pdb = m.by_component("PodDisruptionBudget", "election")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == m.election["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("component", ["election", "zookeeper"])
def test_drains_may_always_evict_pods_that_are_not_ready(helm, manifests, component):
    """Without ZooKeeper quorum no pod is ready; IfHealthyBudget would block every drain."""
    pdb = manifests(helm).by_component("PodDisruptionBudget", component)
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# --- helm test --------------------------------------------------------------------------


def test_helm_test_checks_for_exactly_one_leader_with_a_read_only_role(helm, manifests):
    m = manifests(helm)
    # (the rollout hook, post-upgrade: tests/chart/test_chart_rollout.py)
    hooks = [d for d in m.hooks() if d["metadata"]["annotations"]["helm.sh/hook"] != "post-upgrade,post-rollback"]
    assert {d["metadata"]["annotations"]["helm.sh/hook"] for d in hooks} == {"test"}
    (pod,) = [d for d in hooks if d["kind"] == "Pod"]
    (role,) = [d for d in hooks if d["kind"] == "Role"]
    (binding,) = [d for d in hooks if d["kind"] == "RoleBinding"]
    (rule,) = role["rules"]
    assert rule["resources"] == ["pods"] and sorted(rule["verbs"]) == ["get", "list", "watch"]
    assert binding["subjects"][0]["name"] == pod["spec"]["serviceAccountName"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert pod["spec"]["restartPolicy"] == "Never"
    # Hook RBAC exists before the pod: lower weight.
    weight = lambda d: int(d["metadata"]["annotations"]["helm.sh/hook-weight"])  # noqa: E731
    assert weight(role) < weight(pod) and weight(binding) < weight(pod)
    images = {c["image"] for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]}
    (image,) = images
    assert re.fullmatch(r"registry\.k8s\.io/kubectl:v1\.(3[2-9]|[4-9]\d)\.\d+", image), image
    (check,) = pod["spec"]["containers"]
    assert any("election-state=leader" in a for a in check["args"])
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["wait-ready", "wait-for-leader"]


def test_helm_test_without_labels_only_waits_for_ready_pods(helm, manifests):
    (pod,) = [d for d in manifests(helm, CUSTOM).hooks() if d["kind"] == "Pod"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["wait-ready"]
    assert not any("election-state" in " ".join(c["args"]) for c in pod["spec"]["containers"])


# --- names, labels, schema, NOTES ---------------------------------------------------------


@pytest.mark.parametrize("values", ALL_VALUES)
def test_every_resource_has_the_standard_labels(helm, manifests, values):
    for d in manifests(helm, *values).docs:
        labels = d["metadata"]["labels"]
        where = f"{d['kind']}/{d['metadata']['name']}"
        assert labels["app.kubernetes.io/name"] == "election", where
        assert labels["app.kubernetes.io/instance"] == "election", where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["app.kubernetes.io/component"] in {"election", "zookeeper", "test", "rollout"}, where
        assert re.fullmatch(r"election-\d+\.\d+\.\d+", labels["helm.sh/chart"]), where
        assert len(d["metadata"]["name"]) <= 63, where
        if d["kind"] not in ("Namespace",):
            assert d["metadata"]["namespace"] == NAMESPACE, where


def test_release_names_too_long_for_a_statefulset_are_refused(helm):
    long_release = "r" * 53
    out = subprocess.run(
        [find_helms()[helm], "template", long_release, str(CHART), "--set", "fullnameOverride="],
        capture_output=True,
        text=True,
        check=False,
    )
    # 53 + "-election" = 62 characters fit in 63 but not in the 42 a
    # StatefulSet leaves: the chart says so instead of breaking later.
    assert out.returncode != 0 and "fullnameOverride" in out.stderr


@pytest.mark.parametrize("bad", BAD_VALUES, ids=[b.stem for b in BAD_VALUES])
def test_the_schema_rejects_bad_values(helm, bad):
    expect = re.search(r"^# expect: (.+)$", bad.read_text(), re.M)
    assert expect, f"{bad.name} lacks an '# expect: <text of the error>' line"
    with pytest.raises(RenderError) as err:
        render_text(helm, bad)
    assert expect.group(1) in str(err.value)


def test_helm3_and_helm4_render_the_same_objects():
    helms = find_helms()
    if len(helms) < 2:
        pytest.skip("needs both helm 3 and helm 4")
    for values in [(), (CUSTOM,), (BUNDLED,)]:
        assert render("helm3", *values) == render("helm4", *values)


def test_values_file_documents_every_value():
    """helm-docs style: every leaf value (or its parent map) carries a `# --` comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    path: list[tuple[int, str]] = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        path = [(i, k) for i, k in path if i < indent] + [(indent, key)]
        is_leaf = rest != ""
        if not is_leaf:
            continue
        # The doc comment sits above the key, above its parent map, or (for a
        # wrapped comment) anywhere in the comment block right above.
        documented = False
        for depth in range(len(path)):
            target_indent, target_key = path[-1 - depth]
            j = next(
                k for k in range(n, -1, -1) if re.match(rf"^\s{{{target_indent}}}{re.escape(target_key)}:", lines[k])
            )
            k = j - 1
            while k >= 0 and lines[k].strip().startswith("#"):
                if lines[k].strip().startswith("# --"):
                    documented = True
                    break
                k -= 1
            if documented:
                break
        if not documented:
            undocumented.append(".".join(k for _, k in path))
    assert not undocumented, undocumented


def test_chart_readme_lists_every_documented_value():
    readme = (CHART / "README.md").read_text()
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    path: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        path = [(d, k) for d, k in path if d < indent] + [(indent, key)]
        block = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        if any(b.startswith("# --") for b in block):
            name = ".".join(k for _, k in path)
            if f"`{name}`" not in readme:
                missing.append(name)
    assert not missing, f"charts/election/README.md lacks rows for {missing}"


def test_chart_lists_the_images_it_deploys_by_default():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    listed = {i["name"]: i["image"] for i in yaml.safe_load(chart["annotations"]["artifacthub.io/images"])}
    assert listed == {
        "election": f"{DEFAULTS['image']['repository']}:{chart['appVersion']}",
        "zookeeper": f"{DEFAULTS['zookeeper']['image']['repository']}:{DEFAULTS['zookeeper']['image']['tag']}",
        "kubectl": f"{DEFAULTS['test']['image']['repository']}:{DEFAULTS['test']['image']['tag']}",
    }


def test_notes_tell_how_to_see_the_leader_and_the_files():
    helm = find_helms().get("helm4")
    if not helm:
        pytest.skip("helm 3 needs a cluster for `install --dry-run`")
    out = subprocess.run(
        [helm, "install", "election", str(CHART), "--namespace", NAMESPACE, "--dry-run=client"],
        capture_output=True,
        text=True,
        check=True,
        env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "get pods -l app.kubernetes.io/instance=election,app.kubernetes.io/component=election -L election-state" in notes
    assert "/usr/local/bin/election verify --file-dir /var/lib/election" in notes
    assert "election-files" in notes
    assert "helm test election" in notes


notes = render_notes


def test_notes_say_an_image_without_a_registry_needs_kind_up_or_a_push():
    assert "has no registry part" in notes()
    assert "scripts/kind-up.sh" in notes()
    assert "has no registry part" in notes("image.repository=library/election")
    for repo in ("ghcr.io/example/election", "localhost:5000/election", "localhost/election"):
        assert "has no registry part" not in notes(f"image.repository={repo}"), repo


def test_the_lease_is_sized_for_the_bundled_zookeepers_tick_time(helm, manifests):
    """docs/design.md, "The margin of the lease": the daemon needs the servers' tickTime."""
    env = env_values(container(manifests(helm, sets=("zookeeper.tickTime=500",)).election, "election"))
    assert env["ELECTION_ZK_TICK_TIME"] == "500ms"
    external = manifests(helm, sets=("zookeeper.enabled=false", "zookeeper.servers={zk:2181}"))
    # An external ensemble's tickTime is not known: the daemon assumes half the session.
    assert "ELECTION_ZK_TICK_TIME" not in env_of(container(external.election, "election"))
