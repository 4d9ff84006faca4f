"""The chart with `election.command`: the leader runs the user's command
(`election run -- <command>`) instead of writing files (README, "Run your
own singleton"; chart README, "Run your own command")."""

from __future__ import annotations

import pytest
from conftest import RenderError, container, duration_ms, env_of, env_values, render, render_notes

COMMAND = ("election.command={/usr/local/bin/my-job,--once}",)


def test_the_container_runs_election_run_dash_dash_the_command(helm, manifests):
    c = container(manifests(helm, sets=COMMAND).election, "election")
    assert c["args"] == ["run", "--", "/usr/local/bin/my-job", "--once"]
    # Without a command: the file writer, as before.
    assert container(manifests(helm).election, "election")["args"] == ["run"]


def test_child_stop_timeout_is_passed_to_the_daemon(helm, manifests):
    env = env_values(container(manifests(helm, sets=COMMAND).election, "election"))
    assert env["ELECTION_CHILD_STOP_TIMEOUT"] == "10s"
    sets = COMMAND + ("election.childStopTimeout=3s",)
    env = env_values(container(manifests(helm, sets=sets).election, "election"))
    assert env["ELECTION_CHILD_STOP_TIMEOUT"] == "3s"


@pytest.mark.parametrize("mode", ["shared", "perReplica"])
def test_with_a_command_no_file_dir_claim_or_volume_is_rendered(helm, manifests, mode):
    m = manifests(helm, sets=COMMAND + (f"persistence.mode={mode}",))
    sts = m.election
    c = container(sts, "election")
    assert not m.all("PersistentVolumeClaim")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = [v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]]
    assert "files" not in volumes
    assert [mt["name"] for mt in c["volumeMounts"]] == ["tmp", "state"]  # state: the restart takeover's emptyDir
    assert "ELECTION_FILE_DIR" not in env_of(c)
    # The read-only root file system still has a writable /tmp.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_with_a_command_the_grace_period_covers_the_child_stop_and_the_release(helm):
    # 10s + 10s + 5s: 25 fits, 24 does not.
    render(helm, sets=COMMAND + ("terminationGracePeriodSeconds=25",))
    with pytest.raises(RenderError, match="election.childStopTimeout"):
        render(helm, sets=COMMAND + ("terminationGracePeriodSeconds=24",))
    with pytest.raises(RenderError, match="election.childStopTimeout"):
        render(helm, sets=COMMAND + ("election.childStopTimeout=1m",))
    render(helm, sets=COMMAND + ("election.childStopTimeout=1m", "terminationGracePeriodSeconds=75"))
    # The file writer stops no command: only the release counts.
    render(helm, sets=("terminationGracePeriodSeconds=15", "election.childStopTimeout=1m"))


def test_the_rendered_grace_period_covers_the_child_stop_and_the_release(helm, manifests):
    sts = manifests(helm, sets=COMMAND).election
    env = env_values(container(sts, "election"))
    need = duration_ms(env["ELECTION_CHILD_STOP_TIMEOUT"]) + duration_ms(env["ELECTION_RELEASE_TIMEOUT"]) + 5000
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] * 1000 >= need


def test_an_existing_claim_is_refused_with_a_command(helm):
    with pytest.raises(RenderError, match="existingClaim"):
        render(helm, sets=COMMAND + ("persistence.existingClaim=mine",))


def test_no_leader_not_writing_alert_with_a_command(helm, manifests):
    def alerts(*sets: str) -> list[str]:
        (rule,) = manifests(helm, sets=("prometheusRule.enabled=true", *sets)).all("PrometheusRule")
        return [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]

    assert "ElectionLeaderNotWriting" in alerts()
    with_command = alerts(*COMMAND)
    assert "ElectionLeaderNotWriting" not in with_command
    assert "ElectionNoLeader" in with_command and "ElectionMultipleLeaders" in with_command


def test_notes_name_the_command_instead_of_the_files():
    notes = render_notes(*COMMAND)
    assert "The leader runs /usr/local/bin/my-job --once" in notes
    assert "election verify" not in notes
    assert "shared claim is ReadWriteOnce" not in notes
    assert "election verify" in render_notes()
