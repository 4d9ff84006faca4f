"""Turning TLS on in a running release with the bundled ensemble (zookeeper.tls.migration).

The render tests say what each step changes; the two runs play the
releases of a path on three real ZooKeeper servers and three `election
run` replicas (tests/chart/zk_rollout.py says how), and print the timings
(`pytest -s` shows them):

- the three-step path keeps one leader throughout: no two leaders at one
  instant, leadership changes only when the leader's pod is restarted,
  every restarted pod becomes Ready, the ensemble ends with a quorum, and
  `election verify` finds the files clean;
- the one-step switch (`zookeeper.tls.enabled=true` on a plain-text
  release, what the chart rendered before the migration existed) stalls:
  the first restarted server speaks TLS to plain-text peers and never
  reports a Mode.
"""

from __future__ import annotations

import pytest

from conftest import Manifests, RenderError, container, env_values, find_helms, render, render_notes, render_text
from zk_local import missing
from zk_rollout import ELECTION_BIN, migrate

PLAIN = ("zookeeper.replicas=3",)
TLS = PLAIN + (
    "zookeeper.tls.enabled=true",
    "zookeeper.tls.secretName=zk-tls",
    "zookeeper.tls.clientCertificate=true",
)
MIGRATION = [("plain", PLAIN)] + [(f"step {k}", TLS + (f"zookeeper.tls.migration={k}",)) for k in (1, 2, 3)]
ONE_STEP = [("plain", PLAIN), ("tls in one step", TLS)]

real = pytest.mark.skipif(
    missing() is not None or not ELECTION_BIN.is_file(),
    reason=missing() or f"no election binary at {ELECTION_BIN} (cargo build first)",
)


def zk_extra(m: Manifests) -> list[str]:
    return env_values(container(m.zookeeper, "zookeeper"))["ZOO_CFG_EXTRA"].split()


def admitted(m: Manifests) -> list[str]:
    """Ports of the servers that the NetworkPolicy opens to the replicas."""
    policy = m.one("NetworkPolicy", m.zookeeper["metadata"]["name"])
    replicas = m.election["spec"]["selector"]["matchLabels"]
    return sorted(
        p["port"]
        for rule in policy["spec"]["ingress"]
        if any(f.get("podSelector", {}).get("matchLabels") == replicas for f in rule["from"])
        for p in rule["ports"]
    )


def test_each_step_renders_what_the_previous_step_understands(helm):
    steps = {name: Manifests(render(helm, sets=sets)) for name, sets in MIGRATION}
    plain, s1, s2, s3 = steps.values()
    # Step 1: servers add the TLS port and accept TLS from peers; the replicas do not restart.
    assert s1.election["spec"]["template"] == plain.election["spec"]["template"]
    assert {"secureClientPort=2281", "sslQuorum=false", "portUnification=true"} <= set(zk_extra(s1))
    assert admitted(s1) == ["client", "client-tls"]
    # Step 2: servers dial TLS, still accept plain text; the replicas move to 2281.
    assert {"sslQuorum=true", "portUnification=true"} <= set(zk_extra(s2))
    zk_servers = env_values(container(s2.election, "election"))["ELECTION_ZK_SERVERS"]
    assert zk_servers.count(":2281") == 3, zk_servers
    assert admitted(s2) == ["client", "client-tls"]
    for step in (s1, s2):
        zoo_servers = env_values(container(step.zookeeper, "zookeeper"))["ZOO_SERVERS"]
        assert "127.0.0.1:2181" not in zoo_servers, "the plain port stays open during the switch"
    # Step 3: TLS only, the same as a new release with TLS.
    assert "portUnification=true" not in zk_extra(s3)
    assert admitted(s3) == ["client-tls"]
    assert render_text(helm, sets=MIGRATION[3][1]) == render_text(helm, sets=TLS)


def test_a_migration_without_tls_or_with_an_external_ensemble_is_refused(helm):
    needs = "zookeeper.tls.migration .* needs zookeeper.enabled and zookeeper.tls.enabled"
    with pytest.raises(RenderError, match=needs):
        render(helm, sets=PLAIN + ("zookeeper.tls.migration=1",))
    external = ("zookeeper.enabled=false", "zookeeper.servers={zk:2281}") + TLS[1:]
    with pytest.raises(RenderError, match="needs zookeeper.enabled"):
        render(helm, sets=external + ("zookeeper.tls.migration=2",))
    with pytest.raises(RenderError, match="migration"):
        render(helm, sets=TLS + ("zookeeper.tls.migration=4",))


@real
def test_tls_is_turned_on_in_three_steps_with_one_leader_throughout(tmp_path):
    out = migrate(sorted(find_helms())[-1], tmp_path, MIGRATION)
    print("\n== TLS on in three steps\n" + out.report())
    why = out.report() + "\n" + out.logs
    assert not out.stalls, why
    assert not out.overlaps, why
    assert not out.lost_without_restart, why
    assert len(out.final_leaders) == 1, why
    assert sorted(map(str, out.final_modes)) == ["follower", "follower", "leader"], why
    assert out.verify_rc == 0, why
    assert [name for name, _ in out.steps] == [name for name, _ in MIGRATION], why
    # Plain text closed at the end: 2181 answers on loopback only (the probes).
    assert out.plain_open_at_end == [False, False, False], why


@real
def test_tls_on_in_one_step_stalls_at_the_first_restarted_server(tmp_path):
    out = migrate(sorted(find_helms())[-1], tmp_path, ONE_STEP, stall_s=45)
    print("\n== TLS on in one step (the path before zookeeper.tls.migration)\n" + out.report())
    stalled = [s for s in out.stalls if s.startswith("zk2 ")]
    assert stalled and "reports no Mode" in stalled[0], out.report() + "\n" + out.logs


def test_the_notes_of_a_migration_step_name_the_next_command():
    notes = render_notes(*MIGRATION[1][1])
    assert "TLS migration step 1 of 3" in notes
    assert "--reuse-values --wait --set zookeeper.tls.migration=2" in notes
    assert "TLS migration" not in render_notes(*MIGRATION[3][1])
