"""NOTES warnings and the documented OpenShift override (charts/election/README.md).

Kept apart from test_chart.py so that both files can change independently.
"""

from __future__ import annotations

from pathlib import Path

from conftest import render_notes as notes_of


def test_notes_warn_when_the_zookeeper_image_is_not_the_official_one():
    assert "not the official zookeeper image" not in notes_of()
    assert "not the official zookeeper image" not in notes_of("zookeeper.image.repository=mirror.example/library/zookeeper")
    notes = notes_of("zookeeper.image.repository=registry.example.com/acme/zk")
    assert "registry.example.com/acme/zk, not the official zookeeper image" in notes
    assert "its own zoo.cfg" in notes and "syncLimit x tickTime" in notes


def test_notes_warn_while_zookeeper_credentials_are_off():
    notes = notes_of()
    assert "ZooKeeper credentials are off" in notes and "--set zookeeper.auth.enabled=true" in notes
    assert "NetworkPolicy admits only this" in notes
    assert "NetworkPolicy" not in notes_of("networkPolicy.enabled=false").split("ZooKeeper credentials are off")[1].split("NOTE:")[0]
    # (A client-only dry run has no cluster to keep a generated password in.)
    assert "ZooKeeper credentials are off" not in notes_of(
        "zookeeper.auth.enabled=true", "zookeeper.auth.existingSecret=zk-credentials"
    )


def test_notes_warn_when_alerts_select_series_nobody_scrapes():
    assert "serviceMonitor.enabled is false" in notes_of("prometheusRule.enabled=true")
    assert "serviceMonitor.enabled is false" not in notes_of("prometheusRule.enabled=true", "serviceMonitor.enabled=true")
    assert "serviceMonitor.enabled is false" not in notes_of("prometheusRule.enabled=true", 'prometheusRule.selector=job="x"')


def test_openshift_override_leaves_uids_to_the_platform(helm, manifests):
    """README, OpenShift: null removes every fixed UID/GID; the rest of the hardening stays."""
    m = manifests(helm, Path(__file__).parent / "openshift-values.yaml")
    for name, spec in m.pod_specs():
        pod_sc = spec["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod_sc), name
        assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert not {"runAsUser", "runAsGroup"} & set(sc), f"{name}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
