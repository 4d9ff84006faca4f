"""ZooKeeper credentials and TLS as the chart wires them (zookeeper.auth, zookeeper.tls).

Kept apart from test_chart.py so that both files can change independently.
"""

from __future__ import annotations

import re

import pytest
from conftest import CHART, ROOT, RenderError, container, env_of, env_values, render

CUSTOM = CHART / "ci" / "custom-values.yaml"
BUNDLED = CHART / "ci" / "bundled-values.yaml"
AUTH = ("zookeeper.auth.enabled=true",)


def volume(workload: dict, name: str) -> dict:
    (found,) = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def mount(c: dict, name: str) -> dict:
    (found,) = [m for m in c["volumeMounts"] if m["name"] == name]
    return found


def test_by_default_no_credentials_and_no_tls_are_wired(helm, manifests):
    m = manifests(helm)
    env = env_of(container(m.election, "election"))
    assert not [n for n in env if n.startswith(("ELECTION_ZK_AUTH", "ELECTION_ZK_TLS"))]
    assert not [s for s in m.all("Secret") if s["metadata"]["name"].endswith("-zk-auth")]
    assert "SERVER_JVMFLAGS" not in env_of(container(m.zookeeper, "zookeeper"))


def test_auth_mounts_the_credentials_as_a_private_file(helm, manifests):
    # (The Secret the chart generates at `helm install` exists only with a
    # cluster: scripts/e2e-k8s.sh, step 7b, checks it and its keep policy.)
    m = manifests(helm, sets=(*AUTH, "zookeeper.auth.existingSecret=election-zk-auth"))
    assert not m.all("Secret")
    c = container(m.election, "election")
    env = env_of(c)
    path = env["ELECTION_ZK_AUTH_FILE"]["value"]
    # The password is never in the pod spec or the environment.
    assert "ELECTION_ZK_AUTH" not in env
    assert path.startswith(mount(c, "zk-auth")["mountPath"] + "/")
    assert mount(c, "zk-auth")["readOnly"] is True
    source = volume(m.election, "zk-auth")["secret"]
    assert source["secretName"] == "election-zk-auth"
    assert source["items"] == [{"key": "credentials", "path": path.rsplit("/", 1)[1]}]
    # The daemon refuses a credentials file that other users can read.
    assert source["defaultMode"] & 0o007 == 0


def test_the_pods_mount_the_configured_key(helm, manifests):
    m = manifests(
        helm, sets=(*AUTH, "zookeeper.auth.existingSecret=zk", "zookeeper.auth.existingSecretKey=user-password")
    )
    source = volume(m.election, "zk-auth")["secret"]
    assert source["secretName"] == "zk"
    assert [i["key"] for i in source["items"]] == ["user-password"]


def test_an_existing_secret_is_used_as_is(helm, manifests):
    m = manifests(helm, CUSTOM)
    assert not [s for s in m.all("Secret") if s["metadata"]["name"].endswith("-zk-auth")]
    source = volume(m.election, "zk-auth")["secret"]
    assert source["secretName"] == "payments-zk-credentials"
    assert source["items"][0]["key"] == "election"


def test_tls_mounts_the_ca_and_the_client_certificate_from_the_secret(helm, manifests):
    m = manifests(helm, CUSTOM)
    c = container(m.election, "election")
    env = env_values(c)
    base = mount(c, "zk-tls")["mountPath"]
    assert env["ELECTION_ZK_TLS_CA_FILE"] == f"{base}/ca.crt"
    assert env["ELECTION_ZK_TLS_CERT_FILE"] == f"{base}/tls.crt"
    assert env["ELECTION_ZK_TLS_KEY_FILE"] == f"{base}/tls.key"
    source = volume(m.election, "zk-tls")["secret"]
    assert source["secretName"] == "payments-zk-client-tls"
    assert {i["key"] for i in source["items"]} == {"ca.crt", "tls.crt", "tls.key"}
    assert source["defaultMode"] & 0o007 == 0
    # Without a client certificate only the CA is mounted and named.
    m = manifests(helm, CUSTOM, sets=("zookeeper.tls.clientCertificate=false",))
    c = container(m.election, "election")
    assert "ELECTION_ZK_TLS_CERT_FILE" not in env_of(c)
    assert [i["key"] for i in volume(m.election, "zk-tls")["secret"]["items"]] == ["ca.crt"]


def test_tls_is_refused_without_a_secret(helm):
    with pytest.raises(RenderError, match="secretName"):
        render(helm, sets=("zookeeper.tls.enabled=true",))
    with pytest.raises(RenderError, match="secretName"):
        render(helm, CUSTOM, sets=("zookeeper.tls.secretName=",))


def test_the_bundled_ensemble_gets_the_super_digest_from_its_secret(helm, manifests):
    env = env_of(container(manifests(helm, BUNDLED).zookeeper, "zookeeper"))
    names = list(env)
    assert env["ZK_SUPER_DIGEST"]["valueFrom"] == {"secretKeyRef": {"name": "zk-super", "key": "superDigest"}}
    # $(ZK_SUPER_DIGEST) is expanded only if it is defined earlier in the list.
    assert names.index("ZK_SUPER_DIGEST") < names.index("SERVER_JVMFLAGS")
    assert env["SERVER_JVMFLAGS"]["value"] == (
        "-Dzookeeper.DigestAuthenticationProvider.superDigest=$(ZK_SUPER_DIGEST)"
    )


def test_every_zookeeper_security_flag_is_wired_by_some_values(helm, manifests):
    """Drift check against the daemon: every `env = "ELECTION_..."` of ZkSecurityArgs."""
    source = (ROOT / "src" / "config" / "zk_security.rs").read_text()
    match = re.search(r"pub struct ZkSecurityArgs \{(.*?)\n\}", source, re.S)
    assert match, "src/config/zk_security.rs has no `pub struct ZkSecurityArgs`: update this test"
    daemon_env = set(re.findall(r'env = "(ELECTION_[A-Z_]+)"', match.group(1)))
    chart_env = set(env_of(container(manifests(helm, CUSTOM).election, "election")))
    # ELECTION_ZK_AUTH (the password in a variable) is deliberately not used.
    assert daemon_env - {"ELECTION_ZK_AUTH"} <= chart_env, daemon_env - chart_env
